//! The outbox (`outbox`): messages for RabbitMQ written in the same transaction as the state
//! change that causes them, so a message exists if and only if its cause committed.
//!
//! A relay takes a batch with [`Store::unpublished_outbox`], publishes each with confirms, then
//! [`Store::mark_outbox_published`]. Taking a batch leases it to the taker for a while, so two
//! relays do not publish the same message in normal operation; if a relay dies, its lease runs
//! out and another takes the messages again. Delivery is therefore at least once: consumers
//! deduplicate on the AMQP `message_id`, which is unique here too.

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
    /// The message itself.
    pub message: OutboxMessage,
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
    /// Takes up to `limit` unpublished messages, oldest first, that no other relay holds, and
    /// leases them to the caller for `lease` (publish and mark them within it).
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
                 WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until <= now())
                 ORDER BY id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, exchange, routing_key, message_id, message_type, body, headers,
                       created_at",
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
}
