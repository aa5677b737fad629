use kassa_store::{Store, StoreError, MIGRATOR};

use crate::test_db::{database_exists, database_url, unique_database_name, DropDatabase};

async fn applied_migrations(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(store.pool())
        .await
        .expect("read _sqlx_migrations")
}

#[tokio::test]
async fn connect_creates_a_missing_database_and_migrating_again_is_a_no_op() {
    let name = unique_database_name();
    let _drop = DropDatabase(name.clone());
    assert!(!database_exists(&name).await);

    let store = Store::connect(&database_url(&name), 2)
        .await
        .expect("first connect");
    assert!(database_exists(&name).await);
    let expected = MIGRATOR.iter().count() as i64;
    assert_eq!(applied_migrations(&store).await, expected);
    store.ping().await.expect("ping");
    store.close().await;

    let again = Store::connect(&database_url(&name), 2)
        .await
        .expect("second connect");
    assert_eq!(applied_migrations(&again).await, expected);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(again.pool())
        .await
        .expect("the inbox table exists");
    assert_eq!(events, 0);
    again.close().await;
}

#[tokio::test]
async fn concurrent_connects_to_a_missing_database_both_succeed() {
    let name = unique_database_name();
    let _drop = DropDatabase(name.clone());
    let url = database_url(&name);
    let (a, b) = tokio::join!(Store::connect(&url, 2), Store::connect(&url, 2));
    let (a, b) = (a.expect("first connect"), b.expect("second connect"));
    assert_eq!(applied_migrations(&a).await, MIGRATOR.iter().count() as i64);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    // Nothing listens on port 1.
    let error = Store::connect("postgres://postgres@127.0.0.1:1/kassa", 2)
        .await
        .expect_err("nothing listens on port 1");
    assert!(error.is_transient(), "{error:?}");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn a_malformed_url_is_a_permanent_error() {
    let error = Store::connect("postgres://postgres@127.0.0.1:notaport/kassa", 2)
        .await
        .expect_err("the port is not a number");
    assert!(!error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let db = crate::test_db::TestDb::new().await;
    db.store.close().await;
    let error = db.store.ping().await.expect_err("the pool is closed");
    assert!(error.is_transient(), "{error:?}");
}
