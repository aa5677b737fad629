//! `Store::settle_without_effects`: an event that needs no Stripe call is marked processed in one
//! round trip, exactly once, and never alongside another handling of the same event.

use std::time::Duration;

use kassa_store::{own_writes, EventClaim, Settled};

use crate::test_db::{someone_waits_for_a_lock, wait_until, TestDb};

const ECHO: &str = "customer.updated";
const KEY: &str = "kassa:inst:evt_session:set_default_payment_method";

#[tokio::test]
async fn an_event_with_nothing_to_read_is_processed_once() {
    let db = TestDb::new().await;
    let first = db
        .store
        .settle_without_effects("evt_si", "setup_intent.succeeded", false, None)
        .await
        .unwrap();
    assert_eq!(first, Settled::Settled);
    let again = db
        .store
        .settle_without_effects("evt_si", "setup_intent.succeeded", false, None)
        .await
        .unwrap();
    assert_eq!(again, Settled::Duplicate);
    let claim = db
        .store
        .claim_event("evt_si", "setup_intent.succeeded", false)
        .await
        .unwrap();
    assert!(matches!(claim, EventClaim::AlreadyProcessed), "{claim:?}");
    let stored = db
        .store
        .event("evt_si")
        .await
        .unwrap()
        .expect("in the inbox");
    assert!(stored.processed_at.is_some());
    assert_eq!(stored.attempts, 1);
}

#[tokio::test]
async fn an_echo_is_settled_only_when_its_write_is_recorded() {
    let db = TestDb::new().await;
    let unrecorded = db
        .store
        .settle_without_effects("evt_echo", ECHO, false, Some((KEY, "cus_1")))
        .await
        .unwrap();
    assert_eq!(unrecorded, Settled::NotRecorded);
    let stored = db.store.event("evt_echo").await.unwrap().expect("noted");
    assert_eq!(stored.processed_at, None, "nothing marked");
    // The usual path takes it over.
    let EventClaim::Claimed(tx) = db.store.claim_event("evt_echo", ECHO, false).await.unwrap()
    else {
        panic!("an unrecorded echo is claimed the usual way");
    };
    tx.abandon().await.unwrap();

    let mut tx = db.store.begin().await.unwrap();
    own_writes::record_own_write(&mut tx, KEY, "cus_1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let other_object = db
        .store
        .settle_without_effects("evt_echo", ECHO, false, Some((KEY, "cus_2")))
        .await
        .unwrap();
    assert_eq!(other_object, Settled::NotRecorded, "the note names cus_1");
    let recorded = db
        .store
        .settle_without_effects("evt_echo", ECHO, false, Some((KEY, "cus_1")))
        .await
        .unwrap();
    assert_eq!(recorded, Settled::Settled);
    let stored = db.store.event("evt_echo").await.unwrap().unwrap();
    assert!(stored.processed_at.is_some());
}

#[tokio::test]
async fn an_echo_waits_for_the_transaction_of_its_write() {
    let db = TestDb::new().await;
    // The writer holds its key from before the write until its record commits.
    let mut writer = db.store.begin().await.unwrap();
    own_writes::lock_own_key(&mut writer, KEY).await.unwrap();
    let store = db.store.clone();
    let echo = tokio::spawn(async move {
        store
            .settle_without_effects("evt_wait", ECHO, false, Some((KEY, "cus_1")))
            .await
            .unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the echo waits for the writer",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    assert!(!echo.is_finished());
    own_writes::record_own_write(&mut writer, KEY, "cus_1")
        .await
        .unwrap();
    writer.commit().await.unwrap();
    assert_eq!(
        echo.await.unwrap(),
        Settled::Settled,
        "the committed note is seen"
    );
}

#[tokio::test]
async fn a_settle_waits_for_a_claim_of_the_same_event_and_then_finds_it_processed() {
    let db = TestDb::new().await;
    let EventClaim::Claimed(claimed) = db.store.claim_event("evt_both", ECHO, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    let store = db.store.clone();
    let settle = tokio::spawn(async move {
        store
            .settle_without_effects("evt_both", ECHO, false, None)
            .await
            .unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the settle waits for the claim",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    assert!(!settle.is_finished());
    claimed.complete().await.unwrap();
    assert_eq!(settle.await.unwrap(), Settled::Duplicate);
    let stored = db.store.event("evt_both").await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1, "processed once");
}

#[tokio::test]
async fn an_echo_whose_write_rolls_back_is_left_to_the_usual_path_unmarked() {
    let db = TestDb::new().await;
    // The write was sent under its key, but its transaction rolls back after the echo arrived:
    // Kassa's records never took its answer, so the echo must be re-fetched, not marked.
    let mut writer = db.store.begin().await.unwrap();
    own_writes::lock_own_key(&mut writer, KEY).await.unwrap();
    own_writes::record_own_write(&mut writer, KEY, "cus_1")
        .await
        .unwrap();
    let store = db.store.clone();
    let echo = tokio::spawn(async move {
        store
            .settle_without_effects("evt_rolled_back", ECHO, false, Some((KEY, "cus_1")))
            .await
            .unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the echo waits for the writer",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    assert!(!echo.is_finished());
    writer.rollback().await.unwrap();
    assert_eq!(
        echo.await.unwrap(),
        Settled::NotRecorded,
        "a rolled-back note is never seen"
    );
    let stored = db
        .store
        .event("evt_rolled_back")
        .await
        .unwrap()
        .expect("noted in the inbox");
    assert_eq!(stored.processed_at, None, "nothing marked");
    let EventClaim::Claimed(tx) = db
        .store
        .claim_event("evt_rolled_back", ECHO, false)
        .await
        .unwrap()
    else {
        panic!("the usual path claims the event");
    };
    tx.abandon().await.unwrap();
}
