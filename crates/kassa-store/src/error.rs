//! [`StoreError`]: what went wrong talking to PostgreSQL, sorted by what the caller should do about it.

use std::borrow::Cow;

use sqlx::migrate::MigrateError;

/// An error from the store, classified so a caller can decide between "retry later" and "give up".
///
/// The worker maps [`StoreError::is_transient`] to the retry ladder and everything else to the
/// dead-letter queue; `/readyz` reports [`StoreError::Unavailable`] as not ready.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL cannot be reached or is not accepting work: connection refused or reset, pool
    /// acquire timeout, server shutting down or starting up, too many connections.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),

    /// PostgreSQL answered but the work collided with other work and may succeed if retried:
    /// serialization failure, deadlock, lock timeout (e.g. a duplicate event still being handled),
    /// statement timeout.
    #[error("the database asked us to retry")]
    Transient(#[source] sqlx::Error),

    /// Anything a retry will not fix: a bad URL, a constraint violation, a query or data bug.
    #[error("database error")]
    Permanent(#[source] sqlx::Error),

    /// The migrations in `/migrations` could not be applied (or conflict with what was applied).
    #[error("database migration failed")]
    Migration(#[source] MigrateError),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (`Unavailable` or `Transient`).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Transient(_))
    }

    /// The PostgreSQL SQLSTATE code behind this error, if the server returned one.
    pub fn sqlstate(&self) -> Option<Cow<'_, str>> {
        let inner = match self {
            StoreError::Unavailable(e) | StoreError::Transient(e) | StoreError::Permanent(e) => e,
            StoreError::Migration(MigrateError::Execute(e))
            | StoreError::Migration(MigrateError::ExecuteMigration(e, _)) => e,
            StoreError::Migration(_) => return None,
        };
        match inner {
            sqlx::Error::Database(db) => db.code(),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match classify(&error) {
            Class::Unavailable => StoreError::Unavailable(error),
            Class::Transient => StoreError::Transient(error),
            Class::Permanent => StoreError::Permanent(error),
        }
    }
}

impl From<MigrateError> for StoreError {
    fn from(error: MigrateError) -> Self {
        match error {
            // Losing the connection mid-migration is worth a retry: each migration runs in its own
            // transaction and the migrator holds an advisory lock, so a rerun resumes cleanly.
            MigrateError::Execute(inner) if !matches!(classify(&inner), Class::Permanent) => {
                StoreError::from(inner)
            }
            other => StoreError::Migration(other),
        }
    }
}

enum Class {
    Unavailable,
    Transient,
    Permanent,
}

fn classify(error: &sqlx::Error) -> Class {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Unavailable,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => classify_sqlstate(&code),
            None => Class::Permanent,
        },
        _ => Class::Permanent,
    }
}

/// Sorts a SQLSTATE (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn classify_sqlstate(code: &str) -> Class {
    match code {
        // serialization_failure, deadlock_detected, statement_completion_unknown
        "40001" | "40P01" | "40003" => Class::Transient,
        // lock_not_available (lock_timeout), query_canceled (statement_timeout),
        // idle_in_transaction_session_timeout
        "55P03" | "57014" | "25P03" => Class::Transient,
        // admin_shutdown, crash_shutdown, cannot_connect_now
        "57P01" | "57P02" | "57P03" => Class::Unavailable,
        // class 08: connection exceptions; class 53: insufficient resources (too many
        // connections, out of memory, disk full); class 58: system errors (I/O)
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => {
            Class::Unavailable
        }
        _ => Class::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_errors_are_unavailable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            StoreError::from(sqlx::Error::Io(refused)),
            StoreError::Unavailable(_)
        ));
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_transient());
    }

    #[test]
    fn row_not_found_and_configuration_are_permanent() {
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_transient());
        let bad_url = sqlx::Error::Configuration("bad url".into());
        assert!(!StoreError::from(bad_url).is_transient());
    }

    #[test]
    fn sqlstates_are_sorted() {
        assert!(matches!(classify_sqlstate("40001"), Class::Transient));
        assert!(matches!(classify_sqlstate("55P03"), Class::Transient));
        assert!(matches!(classify_sqlstate("08006"), Class::Unavailable));
        assert!(matches!(classify_sqlstate("53300"), Class::Unavailable));
        assert!(matches!(classify_sqlstate("23505"), Class::Permanent));
        assert!(matches!(classify_sqlstate("42P01"), Class::Permanent));
    }
}
