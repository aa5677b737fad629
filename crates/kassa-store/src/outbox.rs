//! The outbox (`outbox`): messages for RabbitMQ written in the same transaction as the state
//! change that causes them, so a message exists if and only if its cause committed.
//!
//! A relay takes a batch with [`Store::unpublished_outbox`], publishes each with confirms, then
//! [`Store::mark_outbox_published`]. Taking a batch leases it to the taker for a while, so two
//! relays do not publish the same message in normal operation; if a relay dies, its lease runs
//! out and another takes the messages again. Delivery is therefore at least once: consumers
//! deduplicate on the AMQP `message_id`, which is unique here too.
//!
//! A message the broker refuses is not given back at once: [`Store::outbox_publish_failed`]
//! counts the attempt, keeps the error and sets when to try again, and
//! [`Store::unpublished_outbox`] leaves it alone until then. So one message that can never be
//! published (an exchange that does not exist) delays nothing but itself; operators see it with
//! [`Store::pending_outbox`] and retry or drop it ([`Store::retry_outbox`], [`Store::drop_outbox`]).
//! Published messages are kept for a while (their `message_id` keeps a repeated enqueue a no-op)
//! and then deleted in small batches ([`Store::delete_published_outbox`]).

use std::time::Duration;

use sqlx::PgConnection;

use crate::{OffsetDateTime, Store, StoreError};

/// A message to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    /// The exchange to publish to, e.g. `kassa.alerts`.
    pub exchange: String,
    /// The routing key, e.g. `customer.repay_requested`.
    pub routing_key: String,
    /// The AMQP `message_id`, derived from the cause so a retry produces the same one.
    pub message_id: String,
    /// The AMQP `type` property.
    pub message_type: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// AMQP headers, a JSON object (`{}` for none).
    pub headers: serde_json::Value,
}

/// A message taken from the outbox for publishing.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// The row id, to pass to [`Store::mark_outbox_published`].
    pub id: i64,
    /// When the message was enqueued.
    pub created_at: OffsetDateTime,
    /// Failed publishes so far.
    pub attempts: i32,
    /// The message itself.
    pub message: OutboxMessage,
}

/// A message not published yet, as operators see it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingOutboxEntry {
    /// The row id (`kassa outbox retry|drop ID`).
    pub id: i64,
    /// The AMQP `message_id`.
    pub message_id: String,
    /// The exchange it goes to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// When it was enqueued.
    pub created_at: OffsetDateTime,
    /// Failed publishes so far.
    pub attempts: i32,
    /// Not tried again before this (`None`: as soon as a relay gets to it).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Why the last publish failed.
    pub last_error: Option<String>,
}

/// Adds `message` to the outbox inside the caller's transaction. Returns false (and changes
/// nothing) if a message with the same `message_id` was enqueued before.
pub async fn enqueue(conn: &mut PgConnection, message: &OutboxMessage) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO outbox (exchange, routing_key, message_id, message_type, body, headers)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (message_id) DO NOTHING",
        message.exchange,
        message.routing_key,
        message.message_id,
        message.message_type,
        message.body,
        message.headers,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

impl Store {
    /// Takes up to `limit` unpublished messages, oldest first, that no other relay holds and
    /// that are not waiting for a retry, and leases them to the caller for `lease` (publish and
    /// mark them within it).
    pub async fn unpublished_outbox(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // SKIP LOCKED passes over rows another relay is taking right now; the lease keeps them
        // away from it after that relay's statement commits.
        let rows = sqlx::query!(
            "UPDATE outbox SET claimed_until = now() + make_interval(secs => $2)
             WHERE id IN (
                 SELECT id FROM outbox
                 WHERE published_at IS NULL
                   AND (claimed_until IS NULL OR claimed_until <= now())
                   AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                 ORDER BY id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, exchange, routing_key, message_id, message_type, body, headers,
                       created_at, attempts",
            i64::from(limit),
            lease.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await?;
        let mut entries: Vec<OutboxEntry> = rows
            .into_iter()
            .map(|row| OutboxEntry {
                id: row.id,
                created_at: row.created_at,
                attempts: row.attempts,
                message: OutboxMessage {
                    exchange: row.exchange,
                    routing_key: row.routing_key,
                    message_id: row.message_id,
                    message_type: row.message_type,
                    body: row.body,
                    headers: row.headers,
                },
            })
            .collect();
        // RETURNING follows no ORDER BY.
        entries.sort_by_key(|entry| entry.id);
        Ok(entries)
    }

    /// Marks the messages `ids` published; they are never taken again. Returns how many were
    /// not marked before.
    pub async fn mark_outbox_published(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "UPDATE outbox SET published_at = now(), claimed_until = NULL
             WHERE id = ANY($1) AND published_at IS NULL",
            ids,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives back messages taken but not published (e.g. the broker refused them), so the next
    /// [`Store::unpublished_outbox`] takes them without waiting for the lease to run out.
    pub async fn release_outbox(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1) AND published_at IS NULL",
            ids,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records a failed publish of message `id`: one more attempt, `error` kept, not taken
    /// again before `retry_in` has passed. Returns the attempts so far (`None` if the message
    /// was published or dropped meanwhile).
    pub async fn outbox_publish_failed(
        &self,
        id: i64,
        error: &str,
        retry_in: Duration,
    ) -> Result<Option<i32>, StoreError> {
        let attempts = sqlx::query_scalar!(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                 next_attempt_at = now() + make_interval(secs => $3), claimed_until = NULL
             WHERE id = $1 AND published_at IS NULL
             RETURNING attempts",
            id,
            error,
            retry_in.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(attempts)
    }

    /// Unpublished messages, those that failed most often first, then oldest first.
    pub async fn pending_outbox(&self, limit: u32) -> Result<Vec<PendingOutboxEntry>, StoreError> {
        let rows = sqlx::query_as!(
            PendingOutboxEntry,
            "SELECT id, message_id, exchange, routing_key, created_at, attempts, next_attempt_at,
                    last_error
             FROM outbox WHERE published_at IS NULL
             ORDER BY attempts DESC, id
             LIMIT $1",
            i64::from(limit),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// How many unpublished messages have failed at least `attempts` times.
    pub async fn failing_outbox_count(&self, attempts: i32) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM outbox
               WHERE published_at IS NULL AND attempts >= $1"#,
            attempts,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// Makes unpublished message `id` (every one with `None`) due now, keeping its attempts.
    /// Returns how many were changed.
    pub async fn retry_outbox(&self, id: Option<i64>) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "UPDATE outbox SET next_attempt_at = NULL, claimed_until = NULL
             WHERE published_at IS NULL AND ($1::bigint IS NULL OR id = $1)",
            id,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes unpublished message `id`, which will then never be published, and returns what
    /// it was (`None`: no such unpublished message).
    pub async fn drop_outbox(&self, id: i64) -> Result<Option<PendingOutboxEntry>, StoreError> {
        let dropped = sqlx::query_as!(
            PendingOutboxEntry,
            "DELETE FROM outbox WHERE id = $1 AND published_at IS NULL
             RETURNING id, message_id, exchange, routing_key, created_at, attempts,
                       next_attempt_at, last_error",
            id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(dropped)
    }

    /// Deletes up to `batch` messages published more than `older_than` ago; returns how many.
    /// Small batches keep each delete short; call again until it returns less than `batch`.
    pub async fn delete_published_outbox(
        &self,
        older_than: Duration,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox
                 WHERE published_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            older_than.as_secs_f64(),
            i64::from(batch),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
