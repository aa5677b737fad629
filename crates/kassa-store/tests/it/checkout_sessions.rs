use kassa_store::charges::create_charge;
use kassa_store::checkout_sessions::upsert_checkout_session;
use kassa_store::{
    CheckoutPurpose, CheckoutSessionRecord, NewCharge, OffsetDateTime, Store, StoreError,
};

use crate::test_db::TestDb;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// Records the back-office charge a re-checkout session is for; returns its id.
async fn a_charge(store: &Store) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let (charge, _) = create_charge(
        &mut tx,
        &NewCharge {
            reference: "ref-1".to_owned(),
            customer_id: "cus_1".to_owned(),
            payment_method_id: None,
            amount: 1000,
            currency: "jpy".to_owned(),
            description: None,
            metadata: serde_json::json!({}),
            livemode: false,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    charge.id
}

fn open_session(charge_id: i64) -> CheckoutSessionRecord {
    CheckoutSessionRecord {
        id: "cs_test_1".to_owned(),
        mode: "setup".to_owned(),
        status: "open".to_owned(),
        livemode: false,
        customer_id: Some("cus_1".to_owned()),
        purpose: CheckoutPurpose::Recheckout,
        charge_id: Some(charge_id),
        setup_intent_id: Some("seti_1".to_owned()),
        payment_intent_id: None,
        payment_method_id: None,
        url: Some("https://checkout.stripe.com/c/pay/cs_test_1".to_owned()),
        expires_at: Some(at(1_900_086_400)),
        completed_at: None,
    }
}

fn completed_session(charge_id: i64) -> CheckoutSessionRecord {
    CheckoutSessionRecord {
        status: "complete".to_owned(),
        payment_method_id: Some("pm_1".to_owned()),
        url: None,
        completed_at: Some(at(1_900_003_600)),
        ..open_session(charge_id)
    }
}

#[tokio::test]
async fn a_session_round_trips() {
    let db = TestDb::new().await;
    let charge_id = a_charge(&db.store).await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &open_session(charge_id))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.store.checkout_session("cs_test_1").await.unwrap(),
        Some(open_session(charge_id))
    );
    assert_eq!(db.store.checkout_session("cs_unknown").await.unwrap(), None);
}

#[tokio::test]
async fn a_completed_session_stays_complete_when_an_older_state_arrives() {
    let db = TestDb::new().await;
    let charge_id = a_charge(&db.store).await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &open_session(charge_id))
        .await
        .unwrap();
    upsert_checkout_session(&mut tx, &completed_session(charge_id))
        .await
        .unwrap();
    // checkout.session.expired cannot follow completion, and a late "open" must not reopen it.
    upsert_checkout_session(
        &mut tx,
        &CheckoutSessionRecord {
            charge_id: None,
            ..open_session(charge_id)
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let stored = db
        .store
        .checkout_session("cs_test_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "complete");
    assert_eq!(stored.completed_at, Some(at(1_900_003_600)));
    assert_eq!(stored.payment_method_id.as_deref(), Some("pm_1"));
    assert_eq!(stored.charge_id, Some(charge_id), "a known charge is kept");
    assert_eq!(
        stored.url,
        open_session(charge_id).url,
        "the URL is kept once known"
    );
}

#[tokio::test]
async fn the_first_completion_time_is_kept() {
    let db = TestDb::new().await;
    let charge_id = a_charge(&db.store).await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &completed_session(charge_id))
        .await
        .unwrap();
    let later = CheckoutSessionRecord {
        completed_at: Some(at(1_900_007_200)),
        ..completed_session(charge_id)
    };
    upsert_checkout_session(&mut tx, &later).await.unwrap();
    tx.commit().await.unwrap();
    let stored = db
        .store
        .checkout_session("cs_test_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.completed_at, Some(at(1_900_003_600)));
}

#[tokio::test]
async fn a_session_references_its_charge_until_the_charge_is_deleted() {
    let db = TestDb::new().await;
    let charge_id = a_charge(&db.store).await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &open_session(charge_id))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The foreign key holds for writes that bypass the upsert.
    let error = sqlx::query("UPDATE checkout_sessions SET charge_id = $1 WHERE id = 'cs_test_1'")
        .bind(i64::MAX)
        .execute(db.store.pool())
        .await
        .map_err(StoreError::from)
        .expect_err("no such charge");
    assert!(!error.is_transient(), "{error:?}");
    assert_eq!(error.sqlstate().as_deref(), Some("23503"), "{error:?}");

    sqlx::query("DELETE FROM charges WHERE id = $1")
        .bind(charge_id)
        .execute(db.store.pool())
        .await
        .unwrap();
    let stored = db
        .store
        .checkout_session("cs_test_1")
        .await
        .unwrap()
        .expect("the session outlives its charge");
    assert_eq!(stored.charge_id, None);
}

#[tokio::test]
async fn a_session_naming_an_unknown_charge_is_recorded_without_it() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &open_session(4242))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let stored = db
        .store
        .checkout_session("cs_test_1")
        .await
        .unwrap()
        .expect("the card's session is recorded all the same");
    assert_eq!(stored.charge_id, None);
    assert_eq!(stored.purpose, CheckoutPurpose::Recheckout);
}
