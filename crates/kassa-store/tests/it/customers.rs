use kassa_store::customers::{
    mark_customer_deleted, mark_payment_method_detached, upsert_customer, upsert_payment_method,
};
use kassa_store::{CustomerRecord, PaymentMethodRecord, Store};

use crate::test_db::TestDb;

fn customer(email: &str) -> CustomerRecord {
    CustomerRecord {
        id: "cus_1".to_owned(),
        email: Some(email.to_owned()),
        name: Some("Jenny Rosen".to_owned()),
        default_payment_method: Some("pm_1".to_owned()),
        deleted: false,
        livemode: false,
    }
}

fn card(id: &str, attached: bool) -> PaymentMethodRecord {
    PaymentMethodRecord {
        id: id.to_owned(),
        customer_id: attached.then(|| "cus_1".to_owned()),
        brand: Some("visa".to_owned()),
        last4: Some("4242".to_owned()),
        exp_month: Some(12),
        exp_year: Some(2034),
        attached,
        livemode: Some(false),
    }
}

/// Writes `f`'s changes in a committed transaction, as a handler would.
async fn write<F>(store: &Store, f: F)
where
    F: AsyncFnOnce(&mut sqlx::PgConnection),
{
    let mut tx = store.begin().await.unwrap();
    f(&mut tx).await;
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_last_customer_write_wins() {
    let db = TestDb::new().await;
    write(&db.store, async |c| {
        let inserted = upsert_customer(c, &customer("old@example.com"))
            .await
            .unwrap();
        assert!(inserted, "the first write inserts");
    })
    .await;
    write(&db.store, async |c| {
        let inserted = upsert_customer(c, &customer("new@example.com"))
            .await
            .unwrap();
        assert!(!inserted, "the second updates");
    })
    .await;
    let stored = db.store.customer("cus_1").await.unwrap().unwrap();
    assert_eq!(stored, customer("new@example.com"));
    assert_eq!(db.store.customer("cus_unknown").await.unwrap(), None);
}

#[tokio::test]
async fn a_deleted_customer_stays_deleted_whatever_arrives_later() {
    let db = TestDb::new().await;
    let deleted_stub = CustomerRecord {
        email: None,
        name: None,
        default_payment_method: None,
        deleted: true,
        ..customer("x")
    };
    write(&db.store, async |c| {
        upsert_customer(c, &customer("jenny@example.com"))
            .await
            .unwrap();
        // Stripe's deleted customer carries only its id: the rest is kept.
        upsert_customer(c, &deleted_stub).await.unwrap();
        // An older state arriving late does not undelete.
        upsert_customer(c, &customer("older@example.com"))
            .await
            .unwrap();
    })
    .await;
    let stored = db.store.customer("cus_1").await.unwrap().unwrap();
    assert!(stored.deleted);
    assert_eq!(stored.email.as_deref(), Some("older@example.com"));

    let mut conn = db.store.pool().acquire().await.unwrap();
    assert!(!mark_customer_deleted(&mut conn, "cus_unknown")
        .await
        .unwrap());
}

#[tokio::test]
async fn a_deletion_recorded_first_survives_the_older_creation() {
    let db = TestDb::new().await;
    write(&db.store, async |c| {
        upsert_customer(
            c,
            &CustomerRecord {
                deleted: true,
                ..customer("a@example.com")
            },
        )
        .await
        .unwrap();
        upsert_customer(c, &customer("a@example.com"))
            .await
            .unwrap();
        assert!(mark_customer_deleted(c, "cus_1").await.unwrap());
    })
    .await;
    assert!(db.store.customer("cus_1").await.unwrap().unwrap().deleted);
}

#[tokio::test]
async fn the_default_card_comes_with_the_customer() {
    let db = TestDb::new().await;
    write(&db.store, async |c| {
        upsert_customer(
            c,
            &CustomerRecord {
                default_payment_method: None,
                ..customer("a@x.io")
            },
        )
        .await
        .unwrap();
        upsert_payment_method(c, &card("pm_1", true)).await.unwrap();
        upsert_payment_method(c, &card("pm_2", true)).await.unwrap();
    })
    .await;
    let (_, none) = db
        .store
        .customer_with_default_card("cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(none, None, "no default yet");

    write(&db.store, async |c| {
        upsert_customer(
            c,
            &CustomerRecord {
                default_payment_method: Some("pm_2".to_owned()),
                ..customer("a@x.io")
            },
        )
        .await
        .unwrap();
    })
    .await;
    let (customer, default) = db
        .store
        .customer_with_default_card("cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(customer.default_payment_method.as_deref(), Some("pm_2"));
    assert_eq!(default, Some(card("pm_2", true)));
    let ids: Vec<_> = db
        .store
        .payment_methods_of("cus_1")
        .await
        .unwrap()
        .into_iter()
        .map(|pm| pm.id)
        .collect();
    assert_eq!(ids, ["pm_1", "pm_2"]);
    assert_eq!(
        db.store
            .customer_with_default_card("cus_unknown")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_detached_card_stays_detached_whatever_arrives_later() {
    let db = TestDb::new().await;
    write(&db.store, async |c| {
        upsert_customer(c, &customer("a@x.io")).await.unwrap();
        upsert_payment_method(c, &card("pm_1", true)).await.unwrap();
        mark_payment_method_detached(c, "pm_1").await.unwrap();
        // The attach event's older state arrives after the detach.
        upsert_payment_method(c, &card("pm_1", true)).await.unwrap();
    })
    .await;
    let stored = db.store.payment_method("pm_1").await.unwrap().unwrap();
    assert!(!stored.attached);
    assert_eq!(
        stored.customer_id.as_deref(),
        Some("cus_1"),
        "the customer is kept"
    );
    assert!(db
        .store
        .payment_methods_of("cus_1")
        .await
        .unwrap()
        .is_empty());
    let (customer, default) = db
        .store
        .customer_with_default_card("cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(customer.default_payment_method.as_deref(), Some("pm_1"));
    assert_eq!(default, None, "a detached default is no card to charge");
}

#[tokio::test]
async fn a_detach_seen_before_the_card_survives_the_older_attach() {
    let db = TestDb::new().await;
    write(&db.store, async |c| {
        mark_payment_method_detached(c, "pm_9").await.unwrap();
        upsert_payment_method(c, &card("pm_9", true)).await.unwrap();
    })
    .await;
    let stored = db.store.payment_method("pm_9").await.unwrap().unwrap();
    assert!(!stored.attached);
    assert_eq!(
        stored.last4.as_deref(),
        Some("4242"),
        "details still fill in"
    );
}

#[tokio::test]
async fn an_older_unattached_state_does_not_unattach_a_card() {
    let db = TestDb::new().await;
    write(&db.store, async |c| {
        upsert_payment_method(c, &card("pm_1", true)).await.unwrap();
        // The SetupIntent's payment method, fetched before the attach, arrives late.
        upsert_payment_method(
            c,
            &PaymentMethodRecord {
                exp_year: Some(2035),
                ..card("pm_1", false)
            },
        )
        .await
        .unwrap();
    })
    .await;
    let stored = db.store.payment_method("pm_1").await.unwrap().unwrap();
    assert!(stored.attached);
    assert_eq!(stored.customer_id.as_deref(), Some("cus_1"));
    assert_eq!(
        stored.exp_year,
        Some(2035),
        "card details: the last write wins"
    );
}
