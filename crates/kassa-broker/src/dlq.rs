//! The dead-letter queue as people see it: list what failed and why, show one message, replay
//! after a fix. Reading is non-destructive: messages are fetched unacknowledged and go back to
//! the queue when the inspection channel closes; a replayed message is acked only after its
//! copy is confirmed on its original queue.

use crate::consumer::{ATTEMPT_HEADER, DEAD_AT_HEADER, REASON_HEADER, SOURCE_QUEUE_HEADER};
use crate::publisher::{OutgoingMessage, PublishError};
use crate::{Broker, BrokerError};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};

/// One dead letter, decoded.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// AMQP `message_id` (event id or job id).
    pub message_id: String,
    /// AMQP `type`.
    pub kind: String,
    /// The queue it failed on.
    pub source_queue: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Retries it went through.
    pub attempts: u32,
    /// Unix time it was dead-lettered, when known.
    pub dead_lettered_at: Option<i64>,
    /// The untouched body.
    pub body: Vec<u8>,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The ones with this message id.
    Id(String),
    /// All of them.
    All,
}

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The broker is not reachable.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Reading the queue failed.
    #[error("reading the dead-letter queue: {0}")]
    Read(#[from] lapin::Error),
    /// Putting a message back failed; it stays in the dead-letter queue.
    #[error("replaying {message_id}: {source}")]
    Replay {
        /// The message that stays dead.
        message_id: String,
        /// Why.
        #[source]
        source: PublishError,
    },
    /// A dead letter without a source queue cannot be replayed.
    #[error("{0} does not say which queue it came from")]
    NoSource(String),
}

/// Lists up to `limit` dead letters without removing them.
pub async fn list(broker: &Broker, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
    let channel = broker.open_channel().await?;
    let queue = broker.topology().dead_letters_queue();
    let mut letters = Vec::new();
    while letters.len() < limit {
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(message) => letters.push(decode(&message)),
            None => break,
        }
    }
    // Closing the channel returns every unacknowledged message to the queue.
    let _ = channel.close(200, "dlq inspected".into()).await;
    Ok(letters)
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Ids put back on their queue.
    pub replayed: Vec<String>,
    /// Ids left in the dead-letter queue because they do not say where they came from.
    pub skipped: Vec<String>,
}

/// Puts the selected dead letters back on the queue they failed on, with their retry count
/// reset. A message that fails again while the replay runs comes back to the dead-letter queue
/// with the same id: it is left there, not replayed a second time, so the replay always ends.
pub async fn replay(broker: &Broker, selection: &Selection) -> Result<Replayed, DlqError> {
    let channel = broker.open_channel().await?;
    let queue = broker.topology().dead_letters_queue();
    let publisher = broker.publisher();
    let mut done = Replayed::default();
    let mut replayed_ids = std::collections::HashSet::new();
    let mut outcome = Ok(());
    // Every message fetched and not acked stays with this channel until it closes, so each is
    // seen once and the loop ends when the queue has nothing new.
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let letter = decode(&message);
        let chosen = match selection {
            Selection::All => true,
            Selection::Id(id) => &letter.message_id == id,
        };
        if !chosen || replayed_ids.contains(&letter.message_id) {
            continue;
        }
        if letter.source_queue.is_empty() {
            done.skipped.push(letter.message_id);
            continue;
        }
        let mut headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        strip_failure_headers(&mut headers);
        let published = publisher
            .publish(OutgoingMessage {
                exchange: "",
                routing_key: &letter.source_queue,
                body: &letter.body,
                message_id: &letter.message_id,
                kind: &letter.kind,
                headers: Some(headers),
            })
            .await;
        if let Err(source) = published {
            outcome = Err(DlqError::Replay {
                message_id: letter.message_id,
                source,
            });
            break;
        }
        message.delivery.ack(BasicAckOptions::default()).await?;
        replayed_ids.insert(letter.message_id.clone());
        done.replayed.push(letter.message_id);
    }
    // Closing the channel returns every message looked at but not replayed.
    let _ = channel.close(200, "dlq replayed".into()).await;
    outcome.map(|()| done)
}

/// Headers that describe a failure, ours and RabbitMQ's; a replayed message starts without them.
const FAILURE_HEADERS: [&str; 11] = [
    ATTEMPT_HEADER,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
    DEAD_AT_HEADER,
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
];

fn strip_failure_headers(headers: &mut FieldTable) {
    let kept: Vec<_> = headers
        .inner()
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !FAILURE_HEADERS.contains(&k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut fresh = FieldTable::default();
    for (k, v) in kept {
        fresh.insert(k, v);
    }
    *headers = fresh;
}

fn decode(message: &BasicGetMessage) -> DeadLetter {
    let properties = &message.delivery.properties;
    let headers = properties.headers().clone().unwrap_or_default();
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    let number = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongUInt(n)) => Some(i64::from(*n)),
        Some(AMQPValue::LongLongInt(n)) => Some(*n),
        Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
        _ => None,
    };
    // Kassa's own dead letters say where from and why; those RabbitMQ dead-lettered itself (a
    // message over the queue's delivery limit) only carry `x-first-death-*`.
    let or_broker = |ours: String, theirs: &str| if ours.is_empty() { text(theirs) } else { ours };
    let mut reason = or_broker(text(REASON_HEADER), "x-first-death-reason");
    if reason == "delivery_limit" {
        reason = "redelivered too often (RabbitMQ delivery limit): a worker crashed or stopped on it each time".into();
    }
    DeadLetter {
        message_id: properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        kind: properties
            .kind()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        source_queue: or_broker(text(SOURCE_QUEUE_HEADER), "x-first-death-queue"),
        reason,
        attempts: number(ATTEMPT_HEADER)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        dead_lettered_at: number(DEAD_AT_HEADER),
        body: message.delivery.data.clone(),
    }
}
