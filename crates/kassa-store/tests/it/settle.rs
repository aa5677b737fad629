//! `Store::settle_without_effects`: an event that needs no Stripe call is marked processed in one
//! round trip, exactly once, and never alongside another handling of the same event; and
//! `Store::settle_many_without_effects`, the same for many events in one transaction, which never
//! waits for another handler's locks (such an event is busy) and gives up whole rather than wait
//! long.

use std::time::Duration;

use kassa_store::{own_writes, EventClaim, EventToSettle, Settled};

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

/// An event for `settle_many_without_effects`.
fn to_settle(id: &str, kind: &str, own_write: Option<(&str, &str)>) -> EventToSettle {
    EventToSettle {
        id: id.to_owned(),
        kind: kind.to_owned(),
        livemode: false,
        own_write: own_write.map(|(key, object)| (key.to_owned(), object.to_owned())),
    }
}

/// Whether the inbox says `id` was processed.
async fn is_processed(db: &TestDb, id: &str) -> bool {
    db.store
        .event(id)
        .await
        .unwrap()
        .is_some_and(|e| e.processed_at.is_some())
}

#[tokio::test]
async fn a_batch_settles_each_event_as_a_single_settle_would() {
    let db = TestDb::new().await;
    let mut tx = db.store.begin().await.unwrap();
    own_writes::record_own_write(&mut tx, KEY, "cus_1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before = db
        .store
        .settle_without_effects("evt_before", "setup_intent.succeeded", false, None)
        .await
        .unwrap();
    assert_eq!(before, Settled::Settled);

    let outcomes = db
        .store
        .settle_many_without_effects(&[
            to_settle("evt_si", "setup_intent.succeeded", None),
            to_settle("evt_echo", ECHO, Some((KEY, "cus_1"))),
            to_settle("evt_before", "setup_intent.succeeded", None),
            to_settle("evt_other", ECHO, Some((KEY, "cus_2"))),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            Settled::Settled,
            Settled::Settled,
            Settled::Duplicate,
            Settled::NotRecorded
        ]
    );
    assert!(is_processed(&db, "evt_si").await);
    assert!(is_processed(&db, "evt_echo").await);
    let other = db.store.event("evt_other").await.unwrap().expect("noted");
    assert_eq!(other.processed_at, None, "an unrecorded echo is not marked");
    // The usual path takes the unrecorded echo over; the settled ones are done.
    let EventClaim::Claimed(tx) = db
        .store
        .claim_event("evt_other", ECHO, false)
        .await
        .unwrap()
    else {
        panic!("an unrecorded echo is claimed the usual way");
    };
    tx.abandon().await.unwrap();
    let claim = db.store.claim_event("evt_echo", ECHO, false).await.unwrap();
    assert!(matches!(claim, EventClaim::AlreadyProcessed), "{claim:?}");
    let stored = db.store.event("evt_before").await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1, "a duplicate is not counted again");
    assert!(db
        .store
        .settle_many_without_effects(&[])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_batch_with_two_copies_of_an_event_settles_it_once() {
    let db = TestDb::new().await;
    let outcomes = db
        .store
        .settle_many_without_effects(&[
            to_settle("evt_twice", "setup_intent.succeeded", None),
            to_settle("evt_unrecorded", ECHO, Some((KEY, "cus_1"))),
            to_settle("evt_twice", "setup_intent.succeeded", None),
            to_settle("evt_unrecorded", ECHO, Some((KEY, "cus_1"))),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            Settled::Settled,
            Settled::NotRecorded,
            Settled::Duplicate,
            Settled::NotRecorded
        ]
    );
    let stored = db.store.event("evt_twice").await.unwrap().unwrap();
    assert!(stored.processed_at.is_some());
    assert_eq!(stored.attempts, 1, "processed once");
    assert!(!is_processed(&db, "evt_unrecorded").await);
}

#[tokio::test]
async fn a_batch_does_not_wait_for_the_transaction_of_a_write_and_leaves_its_echo_busy() {
    let db = TestDb::new().await;
    // The writer holds its key from before the write until its record commits.
    let mut writer = db.store.begin().await.unwrap();
    own_writes::lock_own_key(&mut writer, KEY).await.unwrap();
    own_writes::record_own_write(&mut writer, KEY, "cus_1")
        .await
        .unwrap();
    let outcomes = tokio::time::timeout(
        Duration::from_secs(10),
        db.store.settle_many_without_effects(&[
            to_settle("evt_echo", ECHO, Some((KEY, "cus_1"))),
            to_settle("evt_si", "setup_intent.succeeded", None),
        ]),
    )
    .await
    .expect("the batch answers while the writer still holds its key")
    .unwrap();
    assert_eq!(outcomes, [Settled::Busy, Settled::Settled]);
    assert!(
        !is_processed(&db, "evt_echo").await,
        "a busy event is not marked"
    );
    assert!(is_processed(&db, "evt_si").await);

    // On its own, the echo waits for the writer and then sees its note.
    let store = db.store.clone();
    let alone = tokio::spawn(async move {
        store
            .settle_without_effects("evt_echo", ECHO, false, Some((KEY, "cus_1")))
            .await
            .unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the single settle waits for the writer",
        || someone_waits_for_a_lock(&db.store),
    )
    .await;
    writer.commit().await.unwrap();
    assert_eq!(alone.await.unwrap(), Settled::Settled);
}

#[tokio::test]
async fn a_batch_does_not_wait_for_a_claim_of_one_of_its_events_and_leaves_it_busy() {
    let db = TestDb::new().await;
    // Noted in the inbox before (e.g. a settle that found no note), then claimed the usual way.
    let unrecorded = db
        .store
        .settle_without_effects("evt_claimed", ECHO, false, Some((KEY, "cus_1")))
        .await
        .unwrap();
    assert_eq!(unrecorded, Settled::NotRecorded);
    let EventClaim::Claimed(claimed) = db
        .store
        .claim_event("evt_claimed", ECHO, false)
        .await
        .unwrap()
    else {
        panic!("the usual path claims the event");
    };
    let outcomes = tokio::time::timeout(
        Duration::from_secs(10),
        db.store.settle_many_without_effects(&[
            to_settle("evt_claimed", ECHO, None),
            to_settle("evt_si", "setup_intent.succeeded", None),
        ]),
    )
    .await
    .expect("the batch answers while the claim holds the inbox row")
    .unwrap();
    assert_eq!(outcomes, [Settled::Busy, Settled::Settled]);
    assert!(is_processed(&db, "evt_si").await);
    claimed.complete().await.unwrap();
    let stored = db.store.event("evt_claimed").await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1, "processed once, by the claim");
    // The handler of the busy copy settles it on its own: already processed.
    let alone = db
        .store
        .settle_without_effects("evt_claimed", ECHO, false, None)
        .await
        .unwrap();
    assert_eq!(alone, Settled::Duplicate);
}

#[tokio::test]
async fn a_batch_that_meets_an_uncommitted_new_event_gives_up_whole_and_marks_nothing() {
    let db = TestDb::new().await;
    // A claim of a new event inserts its inbox row and holds it uncommitted: inserting the same
    // id waits for that transaction, and the batch gives up after its short lock timeout.
    let EventClaim::Claimed(claimed) = db.store.claim_event("evt_new", ECHO, false).await.unwrap()
    else {
        panic!("a new event is claimed");
    };
    let failed = tokio::time::timeout(
        Duration::from_secs(10),
        db.store.settle_many_without_effects(&[
            to_settle("evt_si", "setup_intent.succeeded", None),
            to_settle("evt_new", ECHO, None),
        ]),
    )
    .await
    .expect("the batch gives up within its lock timeout");
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        db.store.event("evt_si").await.unwrap(),
        None,
        "the whole batch rolled back"
    );
    claimed.abandon().await.unwrap();
    // One by one, as the worker then does.
    let si = db
        .store
        .settle_without_effects("evt_si", "setup_intent.succeeded", false, None)
        .await
        .unwrap();
    assert_eq!(si, Settled::Settled);
}
