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

#[tokio::test]
async fn a_refused_message_waits_for_its_retry_while_later_messages_are_taken() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    for id in ["poison", "m1"] {
        enqueue(&mut tx, &message(id)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let taken = db.store.unpublished_outbox(10, LEASE).await.unwrap();
    assert_eq!(taken[0].message.message_id, "poison");
    assert_eq!(taken[0].attempts, 0);

    // The broker refused "poison": it waits a minute; "m1" was published.
    let attempts = db
        .store
        .outbox_publish_failed(
            taken[0].id,
            "NOT_FOUND - no exchange",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(attempts, Some(1));
    db.store
        .mark_outbox_published(&[taken[1].id])
        .await
        .unwrap();
    let mut tx = db.store.begin().await.unwrap();
    enqueue(&mut tx, &message("m2")).await.unwrap();
    tx.commit().await.unwrap();
    let next: Vec<String> = db
        .store
        .unpublished_outbox(10, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message.message_id)
        .collect();
    assert_eq!(
        next,
        ["m2"],
        "the refused message waits; the newer one goes"
    );

    // Operators see it, with its error, first.
    let pending = db.store.pending_outbox(10).await.unwrap();
    assert_eq!(pending[0].message_id, "poison");
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(
        pending[0].last_error.as_deref(),
        Some("NOT_FOUND - no exchange")
    );
    assert!(pending[0].next_attempt_at.is_some());
    assert_eq!(db.store.failing_outbox_count(1).await.unwrap(), 1);
    assert_eq!(db.store.failing_outbox_count(2).await.unwrap(), 0);

    // `kassa outbox retry` makes it due now, attempts kept.
    assert_eq!(db.store.retry_outbox(Some(taken[0].id)).await.unwrap(), 1);
    let again = db.store.unpublished_outbox(10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (taken[0].id, 1));
    let attempts = db
        .store
        .outbox_publish_failed(again[0].id, "still no exchange", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(attempts, Some(2));

    // `kassa outbox drop` deletes it for good; a published message cannot be dropped.
    let dropped = db.store.drop_outbox(taken[0].id).await.unwrap().unwrap();
    assert_eq!(
        (dropped.message_id.as_str(), dropped.attempts),
        ("poison", 2)
    );
    assert!(db.store.drop_outbox(taken[0].id).await.unwrap().is_none());
    assert!(db.store.drop_outbox(taken[1].id).await.unwrap().is_none());
    assert_eq!(count_rows(&db.store, "outbox").await, 2);
}

#[tokio::test]
async fn published_messages_past_the_retention_are_deleted_in_batches() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    for i in 0..7 {
        enqueue(&mut tx, &message(&format!("m{i}"))).await.unwrap();
    }
    tx.commit().await.unwrap();
    let taken = db.store.unpublished_outbox(10, LEASE).await.unwrap();
    let ids: Vec<i64> = taken.iter().map(|e| e.id).collect();
    // m0..m4 published 40 days ago, m5 an hour ago, m6 never.
    db.store.mark_outbox_published(&ids[..6]).await.unwrap();
    sqlx::query("UPDATE outbox SET published_at = now() - interval '40 days' WHERE id = ANY($1)")
        .bind(&ids[..5])
        .execute(db.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET published_at = now() - interval '1 hour' WHERE id = $1")
        .bind(ids[5])
        .execute(db.store.pool())
        .await
        .unwrap();
    let thirty_days = Duration::from_secs(30 * 86_400);
    assert_eq!(
        db.store
            .delete_published_outbox(thirty_days, 3)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        db.store
            .delete_published_outbox(thirty_days, 3)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.store
            .delete_published_outbox(thirty_days, 3)
            .await
            .unwrap(),
        0
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox ORDER BY id")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert_eq!(left, ["m5", "m6"], "recent and unpublished messages stay");
}
