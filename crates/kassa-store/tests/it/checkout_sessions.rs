use kassa_store::checkout_sessions::upsert_checkout_session;
use kassa_store::{CheckoutPurpose, CheckoutSessionRecord, OffsetDateTime};

use crate::test_db::TestDb;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn open_session() -> CheckoutSessionRecord {
    CheckoutSessionRecord {
        id: "cs_test_1".to_owned(),
        mode: "setup".to_owned(),
        status: "open".to_owned(),
        livemode: false,
        customer_id: Some("cus_1".to_owned()),
        purpose: CheckoutPurpose::Recheckout,
        charge_id: Some(42),
        setup_intent_id: Some("seti_1".to_owned()),
        payment_intent_id: None,
        payment_method_id: None,
        url: Some("https://checkout.stripe.com/c/pay/cs_test_1".to_owned()),
        expires_at: Some(at(1_900_086_400)),
        completed_at: None,
    }
}

fn completed_session() -> CheckoutSessionRecord {
    CheckoutSessionRecord {
        status: "complete".to_owned(),
        payment_method_id: Some("pm_1".to_owned()),
        url: None,
        completed_at: Some(at(1_900_003_600)),
        ..open_session()
    }
}

#[tokio::test]
async fn a_session_round_trips() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &open_session())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.store.checkout_session("cs_test_1").await.unwrap(),
        Some(open_session())
    );
    assert_eq!(db.store.checkout_session("cs_unknown").await.unwrap(), None);
}

#[tokio::test]
async fn a_completed_session_stays_complete_when_an_older_state_arrives() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &open_session())
        .await
        .unwrap();
    upsert_checkout_session(&mut tx, &completed_session())
        .await
        .unwrap();
    // checkout.session.expired cannot follow completion, and a late "open" must not reopen it.
    upsert_checkout_session(
        &mut tx,
        &CheckoutSessionRecord {
            charge_id: None,
            ..open_session()
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
    assert_eq!(stored.charge_id, Some(42), "a known charge is kept");
    assert_eq!(stored.url, open_session().url, "the URL is kept once known");
}

#[tokio::test]
async fn the_first_completion_time_is_kept() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    upsert_checkout_session(&mut tx, &completed_session())
        .await
        .unwrap();
    let later = CheckoutSessionRecord {
        completed_at: Some(at(1_900_007_200)),
        ..completed_session()
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
