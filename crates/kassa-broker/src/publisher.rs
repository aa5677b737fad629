//! Publishing with publisher confirms: `Ok` means the broker has the message (persistent, routed
//! to at least one queue); anything else is an error the caller must act on.
//!
//! A failed publish is a fault of its channel, not of the connection: RabbitMQ answers a publish
//! to an exchange that does not exist by closing that one channel (`404 NOT_FOUND`), and the
//! connection and the other channels keep working. The publisher then opens a replacement
//! channel on the same connection; only when the connection itself is gone does it ask the
//! supervisor to reconnect. So one bad message (a wrong exchange name in the outbox) costs one
//! channel, never the broker connection every other publish and consumer depends on.

use crate::connection::Broker;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage<'a> {
    /// Exchange name (already prefixed), `""` for the default exchange.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// The body, sent as is.
    pub body: &'a [u8],
    /// AMQP `message_id` (the Stripe event id, or a job id).
    pub message_id: &'a str,
    /// AMQP `type` (the event type).
    pub kind: &'a str,
    /// Extra headers (attempt counts, failure reasons).
    pub headers: Option<FieldTable>,
}

/// Why a publish was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No live connection right now: failed fast, nothing was sent.
    #[error("RabbitMQ is not connected")]
    Unavailable,
    /// The broker refused the message (nack), e.g. a queue at its limit.
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    /// No queue is bound for this routing key (mandatory publish returned).
    #[error("no queue is bound for routing key {0:?} (message returned)")]
    Unroutable(String),
    /// No confirm within the time-out; the message may or may not be stored.
    #[error("RabbitMQ did not confirm within {0:?}")]
    Timeout(Duration),
    /// The channel or connection failed while publishing.
    #[error("RabbitMQ publish failed: {0}")]
    Amqp(#[source] lapin::Error),
}

impl PublishError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Unavailable => "unavailable",
            PublishError::Nacked => "nacked",
            PublishError::Unroutable(_) => "unroutable",
            PublishError::Timeout(_) => "timeout",
            PublishError::Amqp(_) => "amqp_error",
        }
    }
}

/// Publishes persistent, mandatory messages and waits for the broker's confirm.
#[derive(Clone, Debug)]
pub struct ConfirmedPublisher {
    broker: Broker,
}

impl Broker {
    /// A publisher over this connection's confirm-mode channels.
    pub fn publisher(&self) -> ConfirmedPublisher {
        ConfirmedPublisher {
            broker: self.clone(),
        }
    }
}

impl ConfirmedPublisher {
    /// Publishes `message` and returns only after the broker's ack (or the first failure).
    pub async fn publish(&self, message: OutgoingMessage<'_>) -> Result<(), PublishError> {
        let live = self.broker.live().ok_or(PublishError::Unavailable)?;
        let timeout = self.broker.config().confirm_timeout;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(message.message_id.into())
            .with_type(message.kind.into())
            .with_timestamp(timestamp);
        if let Some(headers) = message.headers {
            properties = properties.with_headers(headers);
        }
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let started = Instant::now();
        let (index, channel) = live.channels.next();
        let confirmed = tokio::time::timeout(timeout, async {
            channel
                .basic_publish(
                    message.exchange.into(),
                    message.routing_key.into(),
                    options,
                    message.body,
                    properties,
                )
                .await?
                .await
        })
        .await;
        let result = match confirmed {
            Err(_) => Err(PublishError::Timeout(timeout)),
            Ok(Err(error)) => {
                // A closed channel never reopens by itself: replace it (or, if the connection
                // is gone, have the supervisor reconnect).
                live.channel_failed(index, &error).await;
                Err(PublishError::Amqp(error))
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) | Ok(Ok(Confirmation::Nack(Some(_)))) => {
                Err(PublishError::Unroutable(message.routing_key.to_owned()))
            }
            Ok(Ok(Confirmation::Nack(None))) => {
                live.channel_refused(index, &channel).await;
                Err(PublishError::Nacked)
            }
            // confirm_select is set on every publishing channel, so this means a channel
            // without confirms slipped in: treat it as unconfirmed.
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
        };
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(error) => error.reason(),
        };
        metrics::histogram!("kassa_publish_confirm_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }
}
