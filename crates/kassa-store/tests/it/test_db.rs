//! A fresh database per test, named by a UUID, created through `Store::connect` (so every test
//! also exercises database creation and migration) and dropped when the test ends, pass or fail.

use std::future::Future;
use std::time::Duration;

use kassa_store::Store;
use sqlx::{Connection, PgConnection};
use url::Url;

/// The server tests run against: `KASSA_DATABASE_URL` with its database part replaced, or the
/// local default.
pub fn server_url() -> Url {
    let configured = std::env::var("KASSA_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/".to_owned());
    let mut url = Url::parse(&configured).expect("KASSA_DATABASE_URL is a URL");
    url.set_path("/");
    url
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let mut url = server_url();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A database name no other test uses.
pub fn unique_database_name() -> String {
    format!("kassa_test_{}", uuid::Uuid::new_v4().simple())
}

/// A migrated database for one test, dropped (`WITH (FORCE)`) when this value is dropped.
pub struct TestDb {
    pub store: Store,
    pub name: String,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> TestDb {
        let name = unique_database_name();
        let guard = DropDatabase(name.clone());
        let store = Store::connect(&database_url(&name), 8)
            .await
            .expect("connect to a fresh test database");
        std::mem::forget(guard);
        TestDb { store, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop(DropDatabase(self.name.clone()));
    }
}

/// Drops the named database when dropped, from a thread of its own so that it works from inside
/// a runtime and during a panic.
pub struct DropDatabase(pub String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&database_url("postgres")).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.0);
        }
    }
}

/// Whether database `name` exists on the test server.
pub async fn database_exists(name: &str) -> bool {
    let mut admin = PgConnection::connect(&database_url("postgres"))
        .await
        .expect("connect to the maintenance database");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query pg_database")
}

/// Polls `condition` until it holds, failing the test after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = tokio::time::timeout(deadline, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "timed out after {deadline:?} waiting until {what}"
    );
}

/// Whether a session on this test's database is waiting for a lock.
pub async fn someone_waits_for_a_lock(store: &Store) -> bool {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(store.pool())
    .await
    .expect("query pg_stat_activity");
    waiting > 0
}

/// Counts the rows of `table` (a fixed name from the test, not input).
pub async fn count_rows(store: &Store, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .expect("count rows")
}

/// How many sessions on this test's database wait for a lock.
pub async fn lock_waiters(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(store.pool())
    .await
    .expect("query pg_stat_activity")
}
