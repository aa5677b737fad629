//! The outbox relay: messages written to the `outbox` table in the same transaction as the state
//! change they announce are published to RabbitMQ with confirms, then marked published.
//!
//! A message is published at least once: a crash between the confirm and the mark publishes it
//! again, with the same `message_id`, which consumers deduplicate on.

use kassa_broker::{Broker, OutgoingMessage};
use kassa_store::{OutboxEntry, Store};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often the relay looks for new messages when the outbox was empty.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a batch stays leased to this relay before another may take it.
pub const LEASE: Duration = Duration::from_secs(30);
const BATCH: u32 = 100;

/// Publishes the outbox until `shutdown`.
pub async fn run_outbox_relay(store: Store, broker: Broker, shutdown: CancellationToken) {
    let publisher = broker.publisher();
    let notifications = broker.topology().notifications_exchange();
    loop {
        let published = match store.unpublished_outbox(BATCH, LEASE).await {
            Ok(entries) if entries.is_empty() => 0,
            Ok(entries) => {
                let mut done = Vec::with_capacity(entries.len());
                let mut refused = Vec::new();
                for entry in &entries {
                    match publish(&publisher, entry).await {
                        Ok(()) => done.push(entry.id),
                        // `kassa.notifications` is for merchants' own consumers: with none bound
                        // for this key, a topic exchange drops the message by design, and retrying
                        // would never end.
                        Err(kassa_broker::PublishError::Unroutable(_))
                            if entry.message.exchange == notifications =>
                        {
                            debug!(message_id = %entry.message.message_id, "no consumer bound for this notification; dropped");
                            done.push(entry.id);
                        }
                        Err(error) => {
                            warn!(message_id = %entry.message.message_id, %error, "outbox message not published; will retry");
                            refused.push(entry.id);
                        }
                    }
                }
                if let Err(error) = store.mark_outbox_published(&done).await {
                    warn!(%error, "could not mark outbox messages published; they will be published again");
                }
                if !refused.is_empty() {
                    let _ = store.release_outbox(&refused).await;
                }
                metrics::counter!("kassa_outbox_published_total").increment(done.len() as u64);
                done.len()
            }
            Err(error) => {
                warn!(%error, "reading the outbox failed");
                0
            }
        };
        if published > 0 {
            debug!(published, "outbox relayed");
            continue; // more may be waiting
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

async fn publish(
    publisher: &kassa_broker::ConfirmedPublisher,
    entry: &OutboxEntry,
) -> Result<(), kassa_broker::PublishError> {
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
