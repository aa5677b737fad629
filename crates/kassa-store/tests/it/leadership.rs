//! One leader per job across processes: the session-level advisory lock, and failover when the
//! leader's connection dies.

use std::time::Duration;

use kassa_store::Store;

use crate::test_db::{database_url, TestDb};

#[tokio::test]
async fn one_process_leads_and_another_takes_over_when_the_leaders_session_ends() {
    let db = TestDb::new().await;
    // A second process of the same deployment: its own pool on the same database.
    let other = Store::connect(&database_url(&db.name), 4).await.unwrap();

    let mut leader = db
        .store
        .try_lead("events-poller")
        .await
        .unwrap()
        .expect("the first to try leads");
    assert!(
        other.try_lead("events-poller").await.unwrap().is_none(),
        "a second process does not lead while the first holds the lock"
    );
    assert!(
        other.try_lead("another-job").await.unwrap().is_some(),
        "other jobs have leaders of their own"
    );
    assert!(leader.still_held().await);

    // The leader's connection is cut (its process died, or the network dropped it).
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(leader.backend_pid())
        .fetch_one(other.pool())
        .await
        .unwrap();
    assert!(terminated);
    assert!(!leader.still_held().await, "the old leader notices");
    // The server releases the lock once it has ended the session, a moment after the signal.
    let mut successor = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(taken) = other.try_lead("events-poller").await.unwrap() {
                return taken;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("another process takes over within 10 s");
    assert!(successor.still_held().await);
    assert!(
        db.store.try_lead("events-poller").await.unwrap().is_none(),
        "and the old leader cannot take it back while the successor holds it"
    );

    // Releasing hands it on at once.
    successor.release().await;
    assert!(db.store.try_lead("events-poller").await.unwrap().is_some());
}
