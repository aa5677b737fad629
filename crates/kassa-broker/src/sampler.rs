//! Queue metrics that RabbitMQ knows and Kassa's alerts need: how many messages wait in each
//! queue (and in the dead-letter queue), and how old a message is when a worker receives it.
//!
//! - [`run_queue_sampler`] passive-declares every queue of the topology every `every` (15 s in
//!   `kassa worker`) and sets `kassa_queue_messages{queue}`, `kassa_queue_consumers{queue}` and
//!   `kassa_dead_letter_messages`. A passive declare only reads: it never creates a queue.
//! - [`record_message_age`] observes `kassa_message_age_seconds{queue}` at delivery, from the
//!   AMQP `timestamp` the publisher sets (whole seconds): how long the message waited in its work
//!   queue. Only first deliveries count (a redelivery after a crash included): a message back from
//!   the retry ladder was republished after a deliberate delay, which is not a backlog.

use crate::topology::WorkQueue;
use crate::Broker;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Gauge: messages ready in a queue (label `queue`: the full queue name).
pub const QUEUE_MESSAGES: &str = "kassa_queue_messages";
/// Gauge: consumers of a queue (label `queue`).
pub const QUEUE_CONSUMERS: &str = "kassa_queue_consumers";
/// Gauge: messages in `kassa.dead.letters`.
pub const DEAD_LETTER_MESSAGES: &str = "kassa_dead_letter_messages";
/// Histogram: seconds between a message's publish and its delivery to a worker (label `queue`:
/// `events`, `charges` or `alert_emails`).
pub const MESSAGE_AGE: &str = "kassa_message_age_seconds";

/// Samples every queue's depth every `every` until `shutdown`. Survives broker outages: a round
/// that fails is logged and the next one opens a fresh channel.
pub async fn run_queue_sampler(broker: Broker, every: Duration, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        // Sample as soon as the broker is (back) up, then every `every`.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ready = broker.wait_ready(Duration::from_secs(3600)) => if ready.is_err() { continue },
        }
        match sample_once(&broker).await {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                failing = true;
                warn!(%error, "could not sample queue depths; retrying every round");
            }
            Err(error) => debug!(%error, "queue depth sample failed again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One round: a passive declare of each queue on one fresh channel.
pub async fn sample_once(broker: &Broker) -> Result<(), crate::BrokerError> {
    let channel = broker.open_channel().await?;
    let topology = broker.topology();
    let dead_letters = topology.dead_letters_queue();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let mut result = Ok(());
    for queue in topology.queues() {
        match channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(declared) => {
                let messages = f64::from(declared.message_count());
                metrics::gauge!(QUEUE_MESSAGES, "queue" => queue.clone()).set(messages);
                metrics::gauge!(QUEUE_CONSUMERS, "queue" => queue.clone())
                    .set(f64::from(declared.consumer_count()));
                if queue == dead_letters {
                    metrics::gauge!(DEAD_LETTER_MESSAGES).set(messages);
                }
            }
            Err(error) => {
                // A missing queue closes the channel: stop this round.
                result = Err(crate::BrokerError::amqp("queue.declare")(error));
                break;
            }
        }
    }
    let _ = channel.close(200, "queues sampled".into()).await;
    result
}

/// Observes the age of a delivered message from its AMQP timestamp; messages from the retry
/// ladder (`attempt` > 0) and messages without a timestamp are not observed.
pub fn record_message_age(work: WorkQueue, properties: &BasicProperties, attempt: u32) {
    if attempt > 0 {
        return;
    }
    let Some(published) = *properties.timestamp() else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // Clocks of publisher and worker may differ a little: never a negative age.
    let age = now.saturating_sub(published);
    metrics::histogram!(MESSAGE_AGE, "queue" => work.label()).record(age as f64);
}
