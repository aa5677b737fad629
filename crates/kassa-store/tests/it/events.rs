use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kassa_store::{customers, outbox, CustomerRecord, EventClaim, OutboxMessage, Store};
use serde_json::json;
use tokio::sync::{oneshot, Barrier};

use crate::test_db::{count_rows, someone_waits_for_a_lock, wait_until, TestDb};

const KIND: &str = "checkout.session.completed";

fn customer(id: &str) -> CustomerRecord {
    CustomerRecord {
        id: id.to_owned(),
        email: Some("jenny@example.com".to_owned()),
        name: Some("Jenny Rosen".to_owned()),
        default_payment_method: None,
        deleted: false,
        livemode: false,
    }
}

/// The effect a handler commits with its event: one outbox message per handler run, with an id
/// unique to the run so that a second run would show as a second row.
fn effect(run: &str) -> OutboxMessage {
    OutboxMessage {
        exchange: "kassa.alerts".to_owned(),
        routing_key: "customer.card_saved".to_owned(),
        message_id: format!("effect:{run}"),
        message_type: "customer.card_saved".to_owned(),
        body: json!({ "run": run }),
        headers: json!({}),
    }
}

#[tokio::test]
async fn a_completed_event_is_already_processed_on_the_next_claim() {
    let db = TestDb::new().await;
    let EventClaim::Claimed(mut tx) = db.store.claim_event("evt_1", KIND, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    assert_eq!(tx.event_id(), "evt_1");
    assert_eq!(tx.previous_attempts(), 0);
    customers::upsert_customer(tx.conn(), &customer("cus_1"))
        .await
        .unwrap();
    tx.complete().await.unwrap();

    let again = db.store.claim_event("evt_1", KIND, false).await.unwrap();
    assert!(matches!(again, EventClaim::AlreadyProcessed), "{again:?}");

    let stored = db
        .store
        .event("evt_1")
        .await
        .unwrap()
        .expect("the inbox has the event");
    assert_eq!(stored.kind, KIND);
    assert!(!stored.livemode);
    assert!(stored.processed_at.is_some());
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_error, None);
    assert!(db.store.customer("cus_1").await.unwrap().is_some());
}

/// What a worker does with one delivery: claim, act (count and write), hold the claim until
/// told, complete. Returns whether it acted.
async fn handle_delivery(
    store: Store,
    event_id: &str,
    run: &str,
    acted: Arc<AtomicUsize>,
    claimed: Option<oneshot::Sender<()>>,
    release: Option<oneshot::Receiver<()>>,
) -> bool {
    match store
        .claim_event(event_id, KIND, false)
        .await
        .expect("claim")
    {
        EventClaim::AlreadyProcessed => false,
        EventClaim::Claimed(mut tx) => {
            acted.fetch_add(1, Ordering::SeqCst);
            outbox::enqueue(&mut tx, &effect(run))
                .await
                .expect("enqueue");
            if let Some(claimed) = claimed {
                let _ = claimed.send(());
            }
            if let Some(release) = release {
                let _ = release.await;
            }
            tx.complete().await.expect("complete");
            true
        }
    }
}

#[tokio::test]
async fn a_duplicate_delivered_while_the_first_is_handled_waits_and_is_skipped() {
    let db = TestDb::new().await;
    let acted = Arc::new(AtomicUsize::new(0));
    let (claimed_tx, claimed_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();

    let first = tokio::spawn(handle_delivery(
        db.store.clone(),
        "evt_dup",
        "first",
        acted.clone(),
        Some(claimed_tx),
        Some(release_rx),
    ));
    claimed_rx
        .await
        .expect("the first delivery claims the event");
    let second = tokio::spawn(handle_delivery(
        db.store.clone(),
        "evt_dup",
        "second",
        acted.clone(),
        None,
        None,
    ));
    // The duplicate must be blocked on the first's row lock, not done already.
    wait_until(
        Duration::from_secs(10),
        "the duplicate waits for the lock",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    assert!(!second.is_finished());
    release_tx.send(()).expect("the first is still holding");

    assert!(first.await.unwrap(), "the first delivery acts");
    assert!(
        !second.await.unwrap(),
        "the duplicate sees AlreadyProcessed"
    );
    assert_eq!(acted.load(Ordering::SeqCst), 1);
    assert_eq!(count_rows(&db.store, "outbox").await, 1);
    let stored = db.store.event("evt_dup").await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deliveries_of_one_event_act_exactly_once() {
    let db = TestDb::new().await;
    let rounds = 10;
    for round in 0..rounds {
        let event_id = format!("evt_race_{round}");
        let acted = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(2));
        let racers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|racer| {
                let (store, event_id, acted, start) = (
                    db.store.clone(),
                    event_id.clone(),
                    acted.clone(),
                    start.clone(),
                );
                tokio::spawn(async move {
                    start.wait().await;
                    let run = format!("{event_id}:{racer}");
                    handle_delivery(store, &event_id, &run, acted, None, None).await
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
        assert_eq!(acted.load(Ordering::SeqCst), 1, "round {round}");
    }
    assert_eq!(count_rows(&db.store, "outbox").await, rounds);
}

#[tokio::test]
async fn a_claim_dropped_without_completing_rolls_back_and_is_claimed_again() {
    let db = TestDb::new().await;
    let EventClaim::Claimed(mut tx) = db
        .store
        .claim_event("evt_crash", KIND, false)
        .await
        .unwrap()
    else {
        panic!("a new event is claimed");
    };
    customers::upsert_customer(&mut tx, &customer("cus_crash"))
        .await
        .unwrap();
    drop(tx); // the worker crashed mid-handler

    assert_eq!(db.store.customer("cus_crash").await.unwrap(), None);
    assert_eq!(db.store.event("evt_crash").await.unwrap(), None);
    let again = db
        .store
        .claim_event("evt_crash", KIND, false)
        .await
        .unwrap();
    let EventClaim::Claimed(tx) = again else {
        panic!("the redelivery claims the event again: {again:?}");
    };
    tx.complete().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_waiting_on_a_claim_that_crashes_takes_over() {
    let db = TestDb::new().await;
    let EventClaim::Claimed(first) = db
        .store
        .claim_event("evt_takeover", KIND, false)
        .await
        .unwrap()
    else {
        panic!("a new event is claimed");
    };
    let store = db.store.clone();
    let second = tokio::spawn(async move { store.claim_event("evt_takeover", KIND, false).await });
    wait_until(
        Duration::from_secs(10),
        "the duplicate waits for the lock",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    first.abandon().await.unwrap();

    let EventClaim::Claimed(tx) = second.await.unwrap().unwrap() else {
        panic!("the duplicate claims the event the first gave up");
    };
    tx.complete().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_waits_no_longer_than_the_lock_timeout() {
    let db = TestDb::new().await;
    let store = db
        .store
        .clone()
        .with_claim_lock_timeout(Duration::from_millis(200));
    let EventClaim::Claimed(holder) = store.claim_event("evt_slow", KIND, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    let error = store
        .claim_event("evt_slow", KIND, false)
        .await
        .expect_err("the duplicate gives up");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.sqlstate().as_deref(), Some("55P03"), "{error:?}");
    holder.complete().await.unwrap();
}

#[tokio::test]
async fn failures_are_recorded_dead_lettered_and_cleared_by_a_successful_replay() {
    let db = TestDb::new().await;

    let EventClaim::Claimed(tx) = db.store.claim_event("evt_fail", KIND, true).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    tx.fail("stripe: 500 api_error", false).await.unwrap();
    let stored = db.store.event("evt_fail").await.unwrap().expect("recorded");
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.last_error.as_deref(), Some("stripe: 500 api_error"));
    assert!(stored.livemode);
    assert_eq!(stored.processed_at, None);
    assert_eq!(stored.dead_lettered_at, None);
    assert!(db
        .store
        .list_dead_lettered_events(10)
        .await
        .unwrap()
        .is_empty());

    let EventClaim::Claimed(tx) = db.store.claim_event("evt_fail", KIND, true).await.unwrap()
    else {
        panic!("a failed event is claimed again");
    };
    assert_eq!(tx.previous_attempts(), 1);
    tx.fail("stripe: 400 resource_missing", true).await.unwrap();
    let stored = db.store.event("evt_fail").await.unwrap().unwrap();
    assert_eq!(stored.attempts, 2);
    assert!(stored.dead_lettered_at.is_some());
    let dead = db.store.list_dead_lettered_events(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "evt_fail");
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("stripe: 400 resource_missing")
    );

    // `kassa dlq replay`: the event comes back and this time succeeds.
    let EventClaim::Claimed(tx) = db.store.claim_event("evt_fail", KIND, true).await.unwrap()
    else {
        panic!("a dead-lettered event can be replayed");
    };
    tx.complete().await.unwrap();
    let stored = db.store.event("evt_fail").await.unwrap().unwrap();
    assert_eq!(stored.attempts, 3);
    assert!(stored.processed_at.is_some());
    assert!(db
        .store
        .list_dead_lettered_events(10)
        .await
        .unwrap()
        .is_empty());

    // A failure reported late for an event that did get processed changes nothing.
    db.store
        .record_event_failure("evt_fail", KIND, true, "late", true)
        .await
        .unwrap();
    assert_eq!(db.store.event("evt_fail").await.unwrap().unwrap(), stored);
}

#[tokio::test]
async fn a_failure_of_an_event_never_claimed_is_recorded() {
    let db = TestDb::new().await;
    let long_error = "é".repeat(10_000);
    db.store
        .record_event_failure("evt_bad", "customer.updated", false, &long_error, true)
        .await
        .unwrap();
    let stored = db.store.event("evt_bad").await.unwrap().expect("recorded");
    assert_eq!(stored.kind, "customer.updated");
    assert_eq!(stored.attempts, 1);
    let kept = stored.last_error.expect("the error is kept");
    assert!(
        kept.len() <= 4096 && kept.starts_with("éé"),
        "{}",
        kept.len()
    );
    assert_eq!(
        db.store.list_dead_lettered_events(10).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn processed_events_past_the_retention_are_deleted_and_the_rest_stay() {
    let db = TestDb::new().await;
    for id in [
        "evt_old_1",
        "evt_old_2",
        "evt_old_3",
        "evt_recent",
        "evt_failing",
    ] {
        match db
            .store
            .claim_event(id, "customer.updated", false)
            .await
            .unwrap()
        {
            EventClaim::Claimed(claim) if id == "evt_failing" => {
                claim.fail("boom", false).await.unwrap();
            }
            EventClaim::Claimed(claim) => claim.complete().await.unwrap(),
            EventClaim::AlreadyProcessed => panic!("{id} is new"),
        }
    }
    sqlx::query(
        "UPDATE stripe_events SET received_at = now() - interval '40 days',
                processed_at = CASE WHEN processed_at IS NOT NULL
                                    THEN now() - interval '40 days' END
         WHERE id LIKE 'evt_old_%' OR id = 'evt_failing'",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    let mut conn = db.store.pool().acquire().await.unwrap();
    kassa_store::own_writes::record_own_write(&mut conn, "kassa:k:old", "cus_1")
        .await
        .unwrap();
    kassa_store::own_writes::record_own_write(&mut conn, "kassa:k:new", "cus_1")
        .await
        .unwrap();
    sqlx::query(
        "UPDATE stripe_own_writes SET recorded_at = now() - interval '40 days'
         WHERE idempotency_key = 'kassa:k:old'",
    )
    .execute(db.store.pool())
    .await
    .unwrap();

    let retention = Duration::from_secs(35 * 86_400);
    assert_eq!(
        db.store
            .delete_processed_events(retention, 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.store
            .delete_processed_events(retention, 2)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.store
            .delete_processed_events(retention, 2)
            .await
            .unwrap(),
        0
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events ORDER BY id")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        left,
        ["evt_failing", "evt_recent"],
        "recent and unprocessed events stay"
    );
    assert!(
        !kassa_store::own_writes::own_write_recorded(&mut conn, "kassa:k:old", "cus_1")
            .await
            .unwrap()
    );
    assert!(
        kassa_store::own_writes::own_write_recorded(&mut conn, "kassa:k:new", "cus_1")
            .await
            .unwrap()
    );
}
