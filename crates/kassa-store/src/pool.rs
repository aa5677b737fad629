//! [`Store`]: the connection pool, created with its database and migrated at start.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use crate::{StoreError, MIGRATOR};

/// The database URL the `kassa` binary uses when `KASSA_DATABASE_URL` is not set: the local
/// server over loopback, without TLS (`sslmode=disable`). On loopback TLS protects nothing and
/// costs CPU on both ends of every round trip; a server on another host should be reached with
/// `sslmode=verify-full` in `KASSA_DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/kassa?sslmode=disable";

/// How long a duplicate of an event being handled waits for the first claim before giving up
/// with a transient error (the message then goes to the retry ladder).
pub const DEFAULT_CLAIM_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on opening one connection (TCP, TLS, authentication) outside the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on waiting for a pooled connection, including opening a new one.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server keeps the database we connect to when ours does not exist yet.
const MAINTENANCE_DATABASE: &str = "postgres";

/// A handle on Kassa's database: a bounded connection pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: PgPool,
    pub(crate) claim_lock_timeout: Duration,
    /// The installation id, read once at connect.
    pub(crate) installation: std::sync::Arc<str>,
}

impl Store {
    /// Connects to `url`, creating the database if it does not exist, applies the migrations and
    /// reads the installation id ([`Store::installation_id`]).
    ///
    /// Safe to call from several processes at once: a concurrent creator's "already exists" is
    /// tolerated and the migrator serialises on an advisory lock.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        if max_connections == 0 {
            return Err(StoreError::Permanent(sqlx::Error::Configuration(
                "max_connections must be at least 1".into(),
            )));
        }
        let options: PgConnectOptions = url.parse()?;
        ensure_database_exists(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let installation = crate::installation::read_installation_id(&pool).await?;
        Ok(Store {
            pool,
            claim_lock_timeout: DEFAULT_CLAIM_LOCK_TIMEOUT,
            installation: installation.into(),
        })
    }

    /// Connects to an existing, migrated database at `url` without creating or migrating
    /// anything (for inspection, e.g. `kassa status`): a database that is missing or not
    /// migrated yet is an error.
    pub async fn connect_existing(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        let installation = match crate::installation::read_installation_id(&pool).await {
            Ok(id) => id,
            Err(error) => {
                pool.close().await;
                return Err(error);
            }
        };
        Ok(Store {
            pool,
            claim_lock_timeout: DEFAULT_CLAIM_LOCK_TIMEOUT,
            installation: installation.into(),
        })
    }

    /// Opens and closes one connection to the server at `url`: `Err(StoreError::Unavailable)`
    /// while it cannot be reached (refused, reset, starting up, too many connections). A
    /// database that does not exist yet is an error of another kind, which [`Store::connect`]
    /// then handles by creating it.
    pub async fn probe(url: &str) -> Result<(), StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let conn = connect_once(&options).await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Sets how long [`Store::claim_event`] waits for a concurrent claim of the same event.
    pub fn with_claim_lock_timeout(mut self, timeout: Duration) -> Store {
        self.claim_lock_timeout = timeout;
        self
    }

    /// The underlying pool, for queries this crate does not offer.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a transaction outside any event, e.g. for back-office writes.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// The database's clock now, read in a statement of its own: the observation time of a
    /// Stripe read made after it without the object's lock (the customer import and sync), so
    /// that no connection is held across the read
    /// ([`crate::customers::upsert_customer_read_without_lock`]).
    pub async fn observation_time(&self) -> Result<crate::OffsetDateTime, StoreError> {
        // A runtime query: nothing for the compile-time check to see.
        let now = sqlx::query_scalar("SELECT statement_timestamp()")
            .fetch_one(&self.pool)
            .await?;
        Ok(now)
    }

    /// Checks that a connection can be had and answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    /// Closes the pool, waiting for checked-out connections to come back (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the database named in `options` if connecting to it says it does not exist.
async fn ensure_database_exists(options: &PgConnectOptions) -> Result<(), StoreError> {
    match connect_once(options).await {
        Ok(conn) => {
            // Closing politely only saves the server a log line; a failure here changes nothing.
            let _ = conn.close().await;
            return Ok(());
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(INVALID_CATALOG_NAME) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(name) = options.get_database() else {
        // No database in the URL means the server's default (the user's name), which exists or
        // the error above would have said so differently; nothing we should create.
        return Err(StoreError::Permanent(sqlx::Error::Configuration(
            "the database URL names no database".into(),
        )));
    };
    let mut admin = connect_once(&options.clone().database(MAINTENANCE_DATABASE)).await?;
    // CREATE DATABASE takes no bind parameters; the name is quoted as an identifier instead.
    let create = format!("CREATE DATABASE {}", quote_identifier(name));
    let created = sqlx::raw_sql(&create).execute(&mut admin).await;
    let _ = admin.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = name, "created the database");
            Ok(())
        }
        // Another process created it between our two connections: duplicate_database, or a
        // unique violation on pg_database when both CREATEs ran at the same moment.
        Err(sqlx::Error::Database(e))
            if matches!(
                e.code().as_deref(),
                Some(DUPLICATE_DATABASE | UNIQUE_VIOLATION)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

const INVALID_CATALOG_NAME: &str = "3D000";
const DUPLICATE_DATABASE: &str = "42P04";
const UNIQUE_VIOLATION: &str = "23505";

async fn connect_once(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to PostgreSQL took longer than {CONNECT_TIMEOUT:?}"),
        ))),
    }
}

/// Quotes a PostgreSQL identifier: wrapped in double quotes, inner double quotes doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_identifier;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("kassa"), "\"kassa\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
