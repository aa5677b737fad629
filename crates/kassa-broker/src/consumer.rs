//! Competing consumers with manual ack, bounded prefetch and bounded concurrency, a retry ladder
//! and dead letters.
//!
//! A handler returns what to do with a message; the consumer does it and only then acks:
//! - [`Outcome::Done`] → ack;
//! - [`Outcome::Retry`] → republish (confirmed) to the next rung's delay queue, which
//!   dead-letters it back to the work queue after its TTL; past the last rung → dead letter;
//! - [`Outcome::DeadLetter`] → publish (confirmed) to `kassa.dead` with the reason in headers.
//!
//! If that publish fails the original is nacked with requeue, so nothing is ever dropped: the
//! worst case is a redelivery, which the handlers' inbox makes harmless.
//!
//! A message is acked once its outcome is durable, in one frame with the others done by then when
//! no earlier delivery is still being handled (`acks`): up to `prefetch − concurrency` done
//! messages wait for a slower one below them. A handler that panics has its message retried later,
//! up the ladder, like a transient failure.

use crate::acks::Acks;
use crate::publisher::{OutgoingMessage, PublishError};
use crate::topology::WorkQueue;
use crate::Broker;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Header with the number of retries a message has been through.
pub const ATTEMPT_HEADER: &str = "x-kassa-attempt";
/// Header with the last failure (retry) or the reason (dead letter).
pub const REASON_HEADER: &str = "x-kassa-reason";
/// Header naming the queue a dead letter came from.
pub const SOURCE_QUEUE_HEADER: &str = "x-kassa-source-queue";
/// Header with the Unix time a message was dead-lettered.
pub const DEAD_AT_HEADER: &str = "x-kassa-dead-lettered-at";

/// A message as a handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// AMQP `message_id` (the Stripe event id, or a job id); empty when missing.
    pub message_id: String,
    /// AMQP `type`; empty when missing.
    pub kind: String,
    /// The body.
    pub body: Vec<u8>,
    /// Retries already done (0 on the first delivery from the ladder's point of view).
    pub attempt: u32,
    /// The broker's redelivered flag: a previous delivery was not acked (e.g. a crash).
    pub redelivered: bool,
}

/// What to do with a handled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (or a duplicate): ack.
    Done,
    /// A transient failure: try again later, up the ladder.
    Retry(String),
    /// A permanent failure: straight to the dead-letter queue.
    DeadLetter(String),
}

/// Handles one message; must be idempotent (deliveries are at least once).
pub trait MessageHandler: Send + Sync + 'static {
    /// Decides the message's fate.
    fn handle(&self, message: Incoming) -> impl Future<Output = Outcome> + Send;
}

/// How a consumer reads its queue.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Which work queue (and ladder).
    pub work: WorkQueue,
    /// Unacked messages the broker sends ahead (`basic.qos`). What it allows beyond
    /// `concurrency` is how many done messages may wait for a slower one to share its ack frame.
    pub prefetch: u16,
    /// Messages handled at once by this process.
    pub concurrency: usize,
    /// Consumer tag prefix, shown in the management UI.
    pub tag: String,
}

/// Consumes `config.work` until `shutdown`, then waits for in-flight handlers to finish.
/// Survives connection loss: when the broker comes back, consuming resumes.
pub async fn run_consumer<H: MessageHandler>(
    broker: Broker,
    config: ConsumerConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let queue = broker.topology().work_queue(config.work);
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ready = broker.wait_ready(Duration::from_secs(3600)) => if ready.is_err() { continue },
        }
        if let Err(error) =
            consume_once(&broker, &config, &queue, &handler, &slots, &shutdown).await
        {
            warn!(%queue, %error, "consumer interrupted; resuming when RabbitMQ is back");
            if is_not_found(&error) {
                // The queue is gone (deleted by hand?): declare the topology again rather than
                // retrying a consume that cannot succeed.
                match broker.declare_topology().await {
                    Ok(()) => info!(%queue, "topology declared again"),
                    Err(error) => warn!(%queue, %error, "could not declare the topology again"),
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Wait for every in-flight handler: each holds a slot until its ack or nack is sent.
    let all = u32::try_from(config.concurrency.max(1)).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    info!(%queue, "consumer stopped");
}

async fn consume_once<H: MessageHandler>(
    broker: &Broker,
    config: &ConsumerConfig,
    queue: &str,
    handler: &Arc<H>,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Result<(), lapin::Error> {
    let (channel, connection_lost) = match broker.open_watched_channel().await {
        Ok(opened) => opened,
        Err(crate::BrokerError::Amqp { source, .. }) => return Err(source),
        Err(_) => return Ok(()),
    };
    channel
        .basic_qos(config.prefetch.max(1), BasicQosOptions::default())
        .await?;
    let tag = format!("{}-{}", config.tag, uuid_like());
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(%queue, prefetch = config.prefetch, concurrency = config.concurrency, "consuming");
    let slack = usize::from(config.prefetch).saturating_sub(config.concurrency.max(1));
    let acks = Arc::new(Acks::new(slack));
    let result = loop {
        // Biased: a stop that comes with its connection's close is a stop, not a lost connection.
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = connection_lost.cancelled() => {
                lost(queue);
                break Ok(());
            }
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break Ok(()),
            },
        };
        let delivery = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = connection_lost.cancelled() => {
                lost(queue);
                break Ok(());
            }
            delivery = deliveries.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        };
        acks.received(delivery.delivery_tag).await;
        let (broker, handler, work) = (broker.clone(), handler.clone(), config.work);
        let acks = acks.clone();
        tokio::spawn(async move {
            settle(&broker, work, &*handler, &acks, delivery).await;
            drop(permit);
        });
    };
    // Stop taking new deliveries, then keep this channel (and its consumer) open until every
    // in-flight handler has acked or nacked on it: closing it earlier would lose those acks and
    // redeliver work that is already done. Prefetched, unstarted deliveries go back to the
    // queue when the channel closes.
    // On a lost connection neither frame can be answered: each waits a bounded time.
    let _ = tokio::time::timeout(
        CHANNEL_CLOSE_TIMEOUT,
        channel.basic_cancel(tag.as_str().into(), Default::default()),
    )
    .await;
    let all = u32::try_from(config.concurrency.max(1)).unwrap_or(u32::MAX);
    drop(slots.acquire_many(all).await);
    drop(deliveries);
    let _ = tokio::time::timeout(
        CHANNEL_CLOSE_TIMEOUT,
        channel.close(200, "consumer stopped".into()),
    )
    .await;
    let tally = acks.tally();
    if tally.messages > 0 {
        info!(%queue, messages = tally.messages, frames = tally.frames, "acks sent on this channel");
    }
    result
}

/// How long the consumer waits for RabbitMQ to answer the cancel and close of its channel.
const CHANNEL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Logs that the consumer's connection was lost; its deliveries not acked yet come back.
fn lost(queue: &str) {
    warn!(%queue, "the consumer's connection was lost; consuming again on the next one (deliveries not acked are redelivered)");
}

/// Runs the handler on one delivery and acts on its outcome.
async fn settle<H: MessageHandler>(
    broker: &Broker,
    work: WorkQueue,
    handler: &H,
    acks: &Acks,
    delivery: Delivery,
) {
    let incoming = Incoming {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        kind: delivery
            .properties
            .kind()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        body: delivery.data.clone(),
        attempt: header_u32(&delivery, ATTEMPT_HEADER),
        redelivered: delivery.redelivered,
    };
    let (message_id, attempt) = (incoming.message_id.clone(), incoming.attempt);
    crate::sampler::record_message_age(work, &delivery.properties, attempt);
    // A panic must neither lose the message nor leave its delivery unsettled, which would hold
    // back every later ack of the channel: it is retried later, like a transient failure.
    let outcome = match AssertUnwindSafe(handler.handle(incoming))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => {
            error!(%message_id, "the handler panicked; the message will be retried later");
            Outcome::Retry("the handler panicked".into())
        }
    };
    let forwarded = match &outcome {
        Outcome::Done => Ok(()),
        Outcome::Retry(reason) => {
            let topology = broker.topology();
            let next = topology
                .retry_ladder()
                .get(attempt as usize)
                .and_then(|rung| Some((rung.delay, topology.retry_queue(work, rung)?)));
            match next {
                Some((delay, queue)) => {
                    info!(%message_id, attempt = attempt + 1, ?delay, %reason, "retrying later");
                    metrics::counter!("kassa_messages_retried_total", "queue" => work_label(work))
                        .increment(1);
                    republish(broker, &delivery, "", &queue, attempt + 1, reason, None).await
                }
                None => {
                    let reason = format!("retries exhausted after {attempt} attempts: {reason}");
                    dead_letter(broker, work, &delivery, attempt, &reason).await
                }
            }
        }
        Outcome::DeadLetter(reason) => dead_letter(broker, work, &delivery, attempt, reason).await,
    };
    let (tag, acker) = (delivery.delivery_tag, delivery.acker.clone());
    match forwarded {
        Ok(()) => {
            acks.count_message();
            acks.ack(tag, acker, &message_id).await;
        }
        Err(error) => {
            error!(%message_id, %error, "could not forward the message; requeueing it");
            acks.requeue(tag, acker, &message_id).await;
        }
    }
}

async fn dead_letter(
    broker: &Broker,
    work: WorkQueue,
    delivery: &Delivery,
    attempt: u32,
    reason: &str,
) -> Result<(), PublishError> {
    let source = broker.topology().work_queue(work);
    warn!(message_id = ?delivery.properties.message_id(), %reason, "dead-lettering");
    metrics::counter!("kassa_messages_dead_lettered_total", "queue" => work_label(work))
        .increment(1);
    let exchange = broker.topology().dead_exchange();
    republish(
        broker,
        delivery,
        &exchange,
        "",
        attempt,
        reason,
        Some(&source),
    )
    .await
}

async fn republish(
    broker: &Broker,
    delivery: &Delivery,
    exchange: &str,
    routing_key: &str,
    attempt: u32,
    reason: &str,
    source_queue: Option<&str>,
) -> Result<(), PublishError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    headers.insert(REASON_HEADER.into(), long_string(truncate(reason, 4000)));
    if let Some(source) = source_queue {
        headers.insert(SOURCE_QUEUE_HEADER.into(), long_string(source));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        headers.insert(DEAD_AT_HEADER.into(), AMQPValue::LongLongInt(now as i64));
    }
    let message_id = property(delivery.properties.message_id());
    let kind = property(delivery.properties.kind());
    broker
        .publisher()
        .publish(OutgoingMessage {
            exchange,
            routing_key,
            body: &delivery.data,
            message_id: &message_id,
            kind: &kind,
            headers: Some(headers),
        })
        .await
}

/// Whether RabbitMQ answered `404 NOT_FOUND` (no such queue or exchange).
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(e)
            if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

fn property(value: &Option<ShortString>) -> String {
    value.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

fn header_u32(delivery: &Delivery, name: &str) -> u32 {
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned());
    match value {
        Some(AMQPValue::LongUInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(n),
        Some(AMQPValue::ShortShortUInt(n)) => u32::from(n),
        _ => 0,
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn work_label(work: WorkQueue) -> &'static str {
    work.label()
}

fn uuid_like() -> String {
    format!("{:016x}", rand::random::<u64>())
}
