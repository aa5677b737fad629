use std::collections::HashSet;
use std::time::Duration;

use kassa_store::outbox::enqueue;
use kassa_store::OutboxMessage;
use serde_json::json;

use crate::test_db::{count_rows, TestDb};

const LEASE: Duration = Duration::from_secs(60);

fn message(id: &str) -> OutboxMessage {
    OutboxMessage {
        exchange: "kassa.alerts".to_owned(),
        routing_key: "customer.repay_requested".to_owned(),
        message_id: id.to_owned(),
        message_type: "customer.repay_requested".to_owned(),
        body: json!({ "customer": "cus_1", "url": "https://checkout.stripe.com/c/pay/cs_1" }),
        headers: json!({ "x-kassa-event": "evt_1" }),
    }
}

#[tokio::test]
async fn a_message_enqueued_in_a_rolled_back_transaction_never_exists() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    assert!(enqueue(&mut tx, &message("m1")).await.unwrap());
    tx.rollback().await.unwrap();
    assert!(db
        .store
        .unpublished_outbox(10, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(count_rows(&db.store, "outbox").await, 0);
}

#[tokio::test]
async fn a_committed_message_is_taken_published_and_then_gone() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    assert!(enqueue(&mut tx, &message("m1")).await.unwrap());
    assert!(enqueue(&mut tx, &message("m2")).await.unwrap());
    tx.commit().await.unwrap();

    let taken = db.store.unpublished_outbox(10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert_eq!(taken[0].message, message("m1"));
    assert_eq!(taken[1].message.message_id, "m2");
    assert!(taken[0].id < taken[1].id, "oldest first");

    assert_eq!(
        db.store
            .mark_outbox_published(&[taken[0].id])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.store
            .mark_outbox_published(&[taken[0].id])
            .await
            .unwrap(),
        0
    );
    // m2 is still leased to the first taker; given back, it is taken again, m1 never.
    assert!(db
        .store
        .unpublished_outbox(10, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.store.release_outbox(&[taken[1].id]).await.unwrap(), 1);
    let again = db.store.unpublished_outbox(10, LEASE).await.unwrap();
    assert_eq!(
        again.iter().map(|e| e.id).collect::<Vec<_>>(),
        [taken[1].id]
    );
}

#[tokio::test]
async fn a_duplicate_message_id_is_a_no_op() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    assert!(enqueue(&mut tx, &message("m1")).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = db.store.begin().await.unwrap();
    let changed = OutboxMessage {
        body: json!({ "other": true }),
        ..message("m1")
    };
    assert!(!enqueue(&mut tx, &changed).await.unwrap());
    tx.commit().await.unwrap();

    let taken = db.store.unpublished_outbox(10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].message, message("m1"), "the first message stands");
}

#[tokio::test]
async fn an_expired_lease_lets_another_relay_take_the_message() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    enqueue(&mut tx, &message("m1")).await.unwrap();
    tx.commit().await.unwrap();
    // A relay that took it with no lease to speak of and died: the next one takes it.
    assert_eq!(
        db.store
            .unpublished_outbox(10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        db.store.unpublished_outbox(10, LEASE).await.unwrap().len(),
        1
    );
    assert!(db
        .store
        .unpublished_outbox(10, LEASE)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_relays_take_disjoint_batches() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    for i in 0..40 {
        enqueue(&mut tx, &message(&format!("m{i}"))).await.unwrap();
    }
    tx.commit().await.unwrap();

    let relays: Vec<_> = (0..4)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.unpublished_outbox(3, LEASE).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|entry| entry.message.message_id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for relay in relays {
        for id in relay.await.unwrap() {
            total += 1;
            assert!(seen.insert(id.clone()), "{id} was taken twice");
        }
    }
    assert_eq!(total, 40);
}
