//! The outbox relay: messages written to the `outbox` table in the same transaction as the state
//! change they announce are published to RabbitMQ with confirms, then marked published.
//!
//! A message is published at least once: a crash between the confirm and the mark publishes it
//! again, with the same `message_id`, which consumers deduplicate on.
//!
//! A message the broker refuses (its exchange does not exist, no queue is bound for it, no
//! confirm) is retried on its own schedule — 1 s, 2 s, 4 s, … at most 5 min apart — while the
//! messages after it go out as usual: one bad row never holds up charge jobs or e-mails. A row
//! that failed [`FAILING_AFTER`] times is logged as an error and counted in
//! `kassa_outbox_failing_messages`; `kassa outbox list|retry|drop` shows and handles it. When
//! RabbitMQ is down nothing is counted against the messages: the relay waits for it.
//!
//! Published rows are deleted once older than the retention (`KASSA_OUTBOX_RETENTION`), in
//! small batches, and so are processed inbox rows (`KASSA_INBOX_RETENTION`).

use kassa_broker::{Broker, OutgoingMessage, PublishError};
use kassa_store::{OutboxEntry, Store};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How often the relay looks for new messages when the outbox was empty.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a batch stays leased to this relay before another may take it.
pub const LEASE: Duration = Duration::from_secs(30);
const BATCH: u32 = 100;
/// Delay before the first retry of a refused message; each next one doubles.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest delay between two attempts of one message.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Attempts after which a message counts as failing (logged as an error, in the gauge).
pub const FAILING_AFTER: i32 = 5;
/// How often the relay samples `kassa_outbox_failing_messages`.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(15);
/// How often the relay deletes published messages past the retention.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Published messages deleted per statement.
const SWEEP_BATCH: u32 = 1000;

/// What the relay does besides publishing.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Delete published messages older than this (`None`: keep them).
    pub retention: Option<Duration>,
    /// Delete processed inbox rows older than this (`KASSA_INBOX_RETENTION`; `None`: keep them).
    pub inbox_retention: Option<Duration>,
}

/// The delay before attempt `attempts + 1` of a message that failed `attempts` times.
pub fn retry_delay(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// Publishes the outbox until `shutdown`.
pub async fn run_outbox_relay(
    store: Store,
    broker: Broker,
    config: RelayConfig,
    shutdown: CancellationToken,
) {
    let mut next_sample = Instant::now();
    let mut next_sweep = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + SAMPLE_INTERVAL;
            match store.failing_outbox_count(FAILING_AFTER).await {
                Ok(count) => {
                    metrics::gauge!("kassa_outbox_failing_messages").set(count as f64);
                }
                Err(error) => warn!(%error, "counting failing outbox messages failed"),
            }
        }
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + SWEEP_INTERVAL;
            if let Some(retention) = config.retention {
                sweep(&store, retention, &shutdown).await;
            }
            if let Some(retention) = config.inbox_retention {
                sweep_inbox(&store, retention, &shutdown).await;
            }
        }
        let published = relay_batch(&store, &broker).await;
        if published > 0 {
            continue; // more may be waiting
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// Publishes one batch; returns how many messages went out.
async fn relay_batch(store: &Store, broker: &Broker) -> usize {
    let entries = match store.unpublished_outbox(BATCH, LEASE).await {
        Ok(entries) => entries,
        Err(error) => {
            warn!(%error, "reading the outbox failed");
            return 0;
        }
    };
    if entries.is_empty() {
        return 0;
    }
    let publisher = broker.publisher();
    let notifications = broker.topology().notifications_exchange();
    let mut done = Vec::with_capacity(entries.len());
    let mut not_tried = Vec::new();
    for (at, entry) in entries.iter().enumerate() {
        match publish(&publisher, entry).await {
            Ok(()) => done.push(entry.id),
            // `kassa.notifications` is for merchants' own consumers: with none bound for this
            // key, a topic exchange drops the message by design, and retrying would never end.
            Err(PublishError::Unroutable(_)) if entry.message.exchange == notifications => {
                debug!(message_id = %entry.message.message_id, "no consumer bound for this notification; dropped");
                done.push(entry.id);
            }
            // RabbitMQ is not there: no fault of these messages. Give them back untouched and
            // wait for the broker (the next batch finds them again).
            Err(PublishError::Unavailable) => {
                not_tried.extend(entries[at..].iter().map(|e| e.id));
                break;
            }
            Err(error) => failed(store, entry, &error).await,
        }
    }
    if let Err(error) = store.mark_outbox_published(&done).await {
        warn!(%error, "could not mark outbox messages published; they will be published again");
    }
    if !not_tried.is_empty() {
        let _ = store.release_outbox(&not_tried).await;
        let _ = broker.wait_ready(POLL_INTERVAL * 10).await;
    }
    metrics::counter!("kassa_outbox_published_total").increment(done.len() as u64);
    if !done.is_empty() {
        debug!(published = done.len(), "outbox relayed");
    }
    done.len()
}

/// Records a refused publish on the message's row and schedules its next attempt.
async fn failed(store: &Store, entry: &OutboxEntry, error: &PublishError) {
    metrics::counter!("kassa_outbox_publish_failures_total", "reason" => error.reason())
        .increment(1);
    let message = &entry.message;
    let retry_in = retry_delay(entry.attempts + 1);
    let attempts = match store
        .outbox_publish_failed(entry.id, &error.to_string(), retry_in)
        .await
    {
        Ok(Some(attempts)) => attempts,
        Ok(None) => return, // published or dropped meanwhile
        Err(store_error) => {
            // The lease runs out and the message is taken again: nothing is lost.
            warn!(outbox_id = entry.id, message_id = %message.message_id, %error, %store_error, "outbox message not published, and its failure not recorded");
            return;
        }
    };
    if attempts == FAILING_AFTER {
        error!(
            outbox_id = entry.id,
            message_id = %message.message_id,
            exchange = %message.exchange,
            routing_key = %message.routing_key,
            attempts,
            %error,
            "outbox message keeps failing; see `kassa outbox list`, then retry or drop it"
        );
    } else {
        warn!(
            outbox_id = entry.id,
            message_id = %message.message_id,
            exchange = %message.exchange,
            attempts,
            retry_in = ?retry_in,
            %error,
            "outbox message not published; later messages go on, this one is retried"
        );
    }
}

/// Deletes published messages older than `retention`, a batch at a time.
async fn sweep(store: &Store, retention: Duration, shutdown: &CancellationToken) {
    sweep_batches("published outbox messages", retention, shutdown, || {
        store.delete_published_outbox(retention, SWEEP_BATCH)
    })
    .await;
}

/// Deletes processed inbox rows older than `retention`, a batch at a time.
async fn sweep_inbox(store: &Store, retention: Duration, shutdown: &CancellationToken) {
    sweep_batches("processed inbox rows", retention, shutdown, || {
        store.delete_processed_events(retention, SWEEP_BATCH)
    })
    .await;
}

/// Runs `delete_batch` (which deletes at most [`SWEEP_BATCH`] rows of `what`) until a batch comes
/// back short, a deletion fails (tried again at the next sweep) or shutdown.
async fn sweep_batches<F, Fut>(
    what: &str,
    retention: Duration,
    shutdown: &CancellationToken,
    mut delete_batch: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, kassa_store::StoreError>>,
{
    let mut deleted = 0;
    while !shutdown.is_cancelled() {
        match delete_batch().await {
            Ok(n) => {
                deleted += n;
                if n < u64::from(SWEEP_BATCH) {
                    break;
                }
            }
            Err(error) => {
                warn!(%error, "deleting old {what} failed; trying again later");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if deleted > 0 {
        info!(deleted, retention = ?retention, "deleted {what} past the retention");
    }
}

async fn publish(
    publisher: &kassa_broker::ConfirmedPublisher,
    entry: &OutboxEntry,
) -> Result<(), PublishError> {
    let message = &entry.message;
    let body = serde_json::to_vec(&message.body).unwrap_or_default();
    publisher
        .publish(OutgoingMessage {
            exchange: &message.exchange,
            routing_key: &message.routing_key,
            body: &body,
            message_id: &message.message_id,
            kind: &message.message_type,
            headers: Some(headers(&message.headers)),
        })
        .await
}

/// JSON object → AMQP headers (strings, integers and booleans; other values as JSON text).
fn headers(json: &serde_json::Value) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(object) = json.as_object() {
        for (key, value) in object {
            let value = match value {
                serde_json::Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
                serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
                serde_json::Value::Number(n) if n.is_i64() => {
                    AMQPValue::LongLongInt(n.as_i64().unwrap_or_default())
                }
                other => AMQPValue::LongString(LongString::from(other.to_string().as_str())),
            };
            table.insert(key.as_str().into(), value);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300],
            "doubling from 1 s, capped at 5 min"
        );
        assert_eq!(retry_delay(0), FIRST_RETRY);
        assert_eq!(retry_delay(i32::MAX), MAX_RETRY);
    }
}
