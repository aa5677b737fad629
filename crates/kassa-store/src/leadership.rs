//! One process of a deployment does a job at a time (the events poller): whoever holds a
//! session-level PostgreSQL advisory lock on a connection of its own leads.
//!
//! PostgreSQL releases a session's advisory locks when the session ends, so a leader that dies,
//! or whose connection is cut, lets another process take the lock on its next try: failover
//! needs no lease or clock. The lock lives in the two-key space of advisory locks
//! (`pg_try_advisory_lock(int4, int4)`), apart from the one-key locks on Stripe objects
//! ([`crate::events::lock_stripe_object`]), so a job's name never collides with an object id.

use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::{Store, StoreError};

/// The first key of every leadership lock ("kass" in ASCII), keeping them apart from other
/// two-key advisory locks on the same database.
const LEADERSHIP_CLASS: i32 = 0x6b61_7373;

/// The lock of one job, held on a connection outside the pool. Dropping it closes the
/// connection, which releases the lock.
#[derive(Debug)]
pub struct Leadership {
    conn: PgConnection,
    job: String,
    pid: i32,
}

impl Store {
    /// Takes the leadership of `job` if no other session holds it; `None` when another does.
    /// Opens a connection of its own for it (outside the pool), closed again when not leading.
    pub async fn try_lead(&self, job: &str) -> Result<Option<Leadership>, StoreError> {
        let mut conn = self.pool.connect_options().connect().await?;
        let row: (bool, i32) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2)), pg_backend_pid()")
                .bind(LEADERSHIP_CLASS)
                .bind(job)
                .fetch_one(&mut conn)
                .await?;
        match row {
            (true, pid) => Ok(Some(Leadership {
                conn,
                job: job.to_owned(),
                pid,
            })),
            (false, _) => {
                // Closing is a courtesy; a failure here changes nothing.
                let _ = conn.close().await;
                Ok(None)
            }
        }
    }
}

impl Leadership {
    /// The job led.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The PostgreSQL backend holding the lock (`pg_stat_activity.pid`).
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    /// Whether the lock is still held: its session still answers (a session-level lock lasts
    /// until the session ends or unlocks it).
    pub async fn still_held(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    /// Gives the leadership up at once (closing the connection releases the lock).
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
