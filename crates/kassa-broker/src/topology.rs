//! The RabbitMQ topology of DESIGN.md, with an optional name prefix so that tests and
//! benchmarks never share a queue. Every declaration is idempotent: running it against a broker
//! that already has the topology changes nothing.

use crate::BrokerError;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
use std::time::Duration;
use tracing::info;

/// The default delays of the retry ladder, shortest first, with the suffix each delay queue carries.
pub const RETRY_LADDER: [(&str, Duration); 5] = [
    ("5s", Duration::from_secs(5)),
    ("30s", Duration::from_secs(30)),
    ("5m", Duration::from_secs(5 * 60)),
    ("30m", Duration::from_secs(30 * 60)),
    ("2h", Duration::from_secs(2 * 60 * 60)),
];

/// Routing key of charge messages on the `kassa.charges` direct exchange.
pub const CHARGE_ROUTING_KEY: &str = "charge.execute";

/// Replicas of each quorum queue when it is created: a cluster of three keeps every queue on
/// every node. RabbitMQ caps it at the number of cluster nodes ("the effective value used will
/// be equal to the total number of cluster nodes"), so a single node gets one replica.
pub const DEFAULT_QUORUM_GROUP_SIZE: u32 = 3;

/// The queue argument that sets a quorum queue's initial replica count.
pub const QUORUM_GROUP_SIZE_ARGUMENT: &str = "x-quorum-initial-group-size";

/// Quorum queues redeliver a message at most this many times before dead-lettering it, so a
/// message that crashes every worker ends in `kassa.dead.letters` instead of looping for ever.
pub const DELIVERY_LIMIT: i64 = 20;

/// One rung of a retry ladder: the delay queue's name suffix and how long a message waits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRung {
    /// Suffix of the queue name, e.g. `5s` in `kassa.events.retry.5s`.
    pub suffix: String,
    /// The queue's `x-message-ttl`.
    pub delay: Duration,
}

/// The two work queues that have a retry ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkQueue {
    /// `kassa.events.fulfillment`, retried through `kassa.events.retry.*`.
    Events,
    /// `kassa.charges.execute`, retried through `kassa.charges.retry.*`.
    Charges,
    /// `kassa.alerts.email`, Kassa's own mailer; no retry ladder (failures are dead-lettered).
    AlertEmails,
}

impl WorkQueue {
    /// The `queue` label of this work's metrics: `events`, `charges` or `alert_emails`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Charges => "charges",
            Self::AlertEmails => "alert_emails",
        }
    }
}

/// Names of every exchange and queue, each with the same prefix, and the retry ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    ladder: Vec<RetryRung>,
    quorum_group_size: u32,
}

/// Everything [`Topology::declare`] declares, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definitions {
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeDefinition>,
    /// Durable queues.
    pub queues: Vec<QueueDefinition>,
    /// Queue bindings.
    pub bindings: Vec<BindingDefinition>,
}

/// The type of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// Routes by routing-key pattern.
    Topic,
    /// Routes by exact routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
}

impl ExchangeType {
    /// The type's name in AMQP and in RabbitMQ's definitions files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Direct => "direct",
            Self::Fanout => "fanout",
        }
    }
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeDefinition {
    /// Its name (prefix included).
    pub name: String,
    /// Its type.
    pub kind: ExchangeType,
}

/// A durable queue and its `x-` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDefinition {
    /// Its name (prefix included).
    pub name: String,
    /// Its arguments, in declaration order.
    pub arguments: Vec<(&'static str, QueueArgument)>,
}

/// The value of a queue argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueArgument {
    /// A string, e.g. `quorum`.
    String(String),
    /// An integer, e.g. a TTL in milliseconds.
    Integer(i64),
}

impl From<&str> for QueueArgument {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingDefinition {
    /// The exchange (source).
    pub exchange: String,
    /// The queue (destination).
    pub queue: String,
    /// The routing key or pattern.
    pub routing_key: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new("")
    }
}

impl Topology {
    /// A topology whose names all start with `prefix` (empty in production, e.g. `t3f9a.` in tests).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ladder: RETRY_LADDER
                .iter()
                .map(|(suffix, delay)| RetryRung {
                    suffix: (*suffix).to_owned(),
                    delay: *delay,
                })
                .collect(),
            quorum_group_size: DEFAULT_QUORUM_GROUP_SIZE,
        }
    }

    /// Replaces the initial replica count of the quorum queues (`x-quorum-initial-group-size`,
    /// at least 1). It applies when a queue is created; existing queues keep their replicas.
    pub fn with_quorum_group_size(mut self, size: u32) -> Self {
        self.quorum_group_size = size.max(1);
        self
    }

    /// The initial replica count of the quorum queues.
    pub fn quorum_group_size(&self) -> u32 {
        self.quorum_group_size
    }

    /// Replaces the retry ladder (tests use seconds instead of hours). Each rung's suffix names
    /// its queue; a queue's TTL cannot change once declared, so a new ladder needs new suffixes.
    pub fn with_retry_ladder(mut self, ladder: Vec<RetryRung>) -> Self {
        self.ladder = ladder;
        self
    }

    /// The retry ladder, shortest delay first.
    pub fn retry_ladder(&self) -> &[RetryRung] {
        &self.ladder
    }

    /// A topology with a fresh random prefix, for tests and benchmarks.
    pub fn unique() -> Self {
        Self::new(format!("t{:08x}.", rand::random::<u32>()))
    }

    /// The prefix in force.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// Topic exchange the ingress publishes Stripe events to (routing key = event type).
    pub fn events_exchange(&self) -> String {
        self.name("kassa.events")
    }
    /// The worker's quorum queue of events.
    pub fn fulfillment_queue(&self) -> String {
        self.name("kassa.events.fulfillment")
    }
    /// The event retry delay queue for one rung of [`RETRY_LADDER`].
    pub fn events_retry_queue(&self, suffix: &str) -> String {
        self.name(&format!("kassa.events.retry.{suffix}"))
    }
    /// Direct exchange of charges to execute.
    pub fn charges_exchange(&self) -> String {
        self.name("kassa.charges")
    }
    /// Where a charge job is published: the `kassa.charges` exchange and [`CHARGE_ROUTING_KEY`],
    /// the binding of [`Self::charges_queue`].
    pub fn charge_job_route(&self) -> (String, &'static str) {
        (self.charges_exchange(), CHARGE_ROUTING_KEY)
    }
    /// The charge executor's queue.
    pub fn charges_queue(&self) -> String {
        self.name("kassa.charges.execute")
    }
    /// The charge retry delay queue for one rung of [`RETRY_LADDER`].
    pub fn charges_retry_queue(&self, suffix: &str) -> String {
        self.name(&format!("kassa.charges.retry.{suffix}"))
    }
    /// Fanout exchange of permanent failures and exhausted retries.
    pub fn dead_exchange(&self) -> String {
        self.name("kassa.dead")
    }
    /// The queue `kassa dlq` reads.
    pub fn dead_letters_queue(&self) -> String {
        self.name("kassa.dead.letters")
    }
    /// Topic exchange of alerts for merchants' consumers.
    pub fn alerts_exchange(&self) -> String {
        self.name("kassa.alerts")
    }
    /// Kassa's own mailer queue.
    pub fn alerts_email_queue(&self) -> String {
        self.name("kassa.alerts.email")
    }
    /// Topic exchange of new-charge / new-refund triggers.
    pub fn notifications_exchange(&self) -> String {
        self.name("kassa.notifications")
    }

    /// The queue a consumer of `work` reads.
    pub fn work_queue(&self, work: WorkQueue) -> String {
        match work {
            WorkQueue::Events => self.fulfillment_queue(),
            WorkQueue::Charges => self.charges_queue(),
            WorkQueue::AlertEmails => self.alerts_email_queue(),
        }
    }

    /// The delay queue of `work` for `rung`, if `work` has a retry ladder.
    pub fn retry_queue(&self, work: WorkQueue, rung: &RetryRung) -> Option<String> {
        match work {
            WorkQueue::Events => Some(self.events_retry_queue(&rung.suffix)),
            WorkQueue::Charges => Some(self.charges_retry_queue(&rung.suffix)),
            WorkQueue::AlertEmails => None,
        }
    }

    /// Every queue name, for clean-up in tests.
    pub fn queues(&self) -> Vec<String> {
        self.definitions()
            .queues
            .into_iter()
            .map(|queue| queue.name)
            .collect()
    }

    /// Every exchange name, for clean-up in tests.
    pub fn exchanges(&self) -> Vec<String> {
        self.definitions()
            .exchanges
            .into_iter()
            .map(|exchange| exchange.name)
            .collect()
    }

    /// Every exchange, queue (with its arguments) and binding, in declaration order: what
    /// [`Topology::declare`] declares, and what `deploy/rabbitmq/definitions.json` must match.
    pub fn definitions(&self) -> Definitions {
        let dead = self.dead_exchange();
        let group = self.quorum_group_size;
        let exchanges = [
            (self.events_exchange(), ExchangeType::Topic),
            (self.charges_exchange(), ExchangeType::Direct),
            (self.dead_exchange(), ExchangeType::Fanout),
            (self.alerts_exchange(), ExchangeType::Topic),
            (self.notifications_exchange(), ExchangeType::Topic),
        ]
        .into_iter()
        .map(|(name, kind)| ExchangeDefinition { name, kind })
        .collect();

        // Work queues dead-letter to kassa.dead: rejected (permanent failure) or over the
        // delivery limit.
        let mut queues = vec![
            QueueDefinition {
                name: self.fulfillment_queue(),
                arguments: dead_lettering(group, &dead, None, None),
            },
            QueueDefinition {
                name: self.charges_queue(),
                arguments: dead_lettering(group, &dead, None, None),
            },
        ];
        let mut bindings = vec![
            binding(self.events_exchange(), self.fulfillment_queue(), "#"),
            binding(
                self.charges_exchange(),
                self.charges_queue(),
                CHARGE_ROUTING_KEY,
            ),
        ];

        // Retry ladder: a message waits out the TTL, then the broker dead-letters it through the
        // default exchange ("") straight back to its work queue.
        for rung in &self.ladder {
            for (retry, target) in [
                (
                    self.events_retry_queue(&rung.suffix),
                    self.fulfillment_queue(),
                ),
                (self.charges_retry_queue(&rung.suffix), self.charges_queue()),
            ] {
                queues.push(QueueDefinition {
                    name: retry,
                    arguments: dead_lettering(group, "", Some(&target), Some(rung.delay)),
                });
            }
        }

        let quorum = quorum(group);
        queues.push(QueueDefinition {
            name: self.dead_letters_queue(),
            arguments: quorum.clone(),
        });
        bindings.push(binding(dead, self.dead_letters_queue(), ""));
        queues.push(QueueDefinition {
            name: self.alerts_email_queue(),
            arguments: quorum,
        });
        for key in ["customer.#", "charge.#", "payment.#"] {
            bindings.push(binding(
                self.alerts_exchange(),
                self.alerts_email_queue(),
                key,
            ));
        }
        Definitions {
            exchanges,
            queues,
            bindings,
        }
    }

    /// Declares every exchange, queue and binding of [`Topology::definitions`] on channels of
    /// `connection`. Safe to run at every start.
    ///
    /// RabbitMQ refuses to re-declare a queue with an argument it was not created with, and
    /// `x-quorum-initial-group-size` only matters at creation: a queue created before Kassa
    /// declared it is declared again without it (its replicas stay as they are).
    pub async fn declare(&self, connection: &Connection) -> Result<(), BrokerError> {
        let mut channel = open_channel(connection).await?;
        let declared = self.declare_on(connection, &mut channel).await;
        let _ = channel.close(200, "topology declared".into()).await;
        declared
    }

    async fn declare_on(
        &self,
        connection: &Connection,
        channel: &mut Channel,
    ) -> Result<(), BrokerError> {
        let definitions = self.definitions();
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in definitions.exchanges {
            let kind = match exchange.kind {
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Fanout => ExchangeKind::Fanout,
            };
            channel
                .exchange_declare(
                    exchange.name.as_str().into(),
                    kind,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await
                .map_err(BrokerError::amqp("exchange.declare"))?;
        }
        for queue in definitions.queues {
            match self
                .declare_queue(channel, &queue.name, field_table(&queue.arguments, true))
                .await
            {
                Err(error) if is_group_size_refusal(&error) => {
                    // The refusal closed the channel.
                    *channel = open_channel(connection).await?;
                    self.declare_queue(channel, &queue.name, field_table(&queue.arguments, false))
                        .await
                        .map_err(|source| BrokerError::GroupSizeMismatch {
                            queue: queue.name.clone(),
                            size: self.quorum_group_size,
                            source,
                        })?;
                    info!(
                        queue = %queue.name,
                        "quorum queue created before its initial group size was declared: its replicas are unchanged (rabbitmq-queues grow adds more)"
                    );
                }
                result => result.map_err(BrokerError::amqp("queue.declare"))?,
            }
        }
        for binding in definitions.bindings {
            self.bind(
                channel,
                &binding.queue,
                &binding.exchange,
                &binding.routing_key,
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of this topology (tests, benchmarks and the demo use a
    /// prefixed topology of their own and remove it when done). Errors are ignored: a name that
    /// is already gone is fine.
    pub async fn delete(&self, channel: &Channel) {
        for queue in self.queues() {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in self.exchanges() {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    /// Connects to `url` (or the first answering node of a comma-separated list) on its own
    /// connection and deletes this topology (see [`Topology::delete`]).
    pub async fn delete_at(&self, url: &str) -> Result<(), BrokerError> {
        let connection = crate::connection::connect_first(url).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::amqp("channel.open"))?;
        self.delete(&channel).await;
        let _ = connection.close(200, "topology deleted".into()).await;
        Ok(())
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        arguments: FieldTable,
    ) -> Result<(), lapin::Error> {
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.into(), options, arguments)
            .await?;
        Ok(())
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), BrokerError> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::amqp("queue.bind"))
    }
}

async fn open_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    connection
        .create_channel()
        .await
        .map_err(BrokerError::amqp("channel.open"))
}

/// A queue's arguments as AMQP, with or without `x-quorum-initial-group-size`.
fn field_table(arguments: &[(&'static str, QueueArgument)], group_size: bool) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        if !group_size && *key == QUORUM_GROUP_SIZE_ARGUMENT {
            continue;
        }
        let value = match value {
            QueueArgument::String(value) => string(value),
            QueueArgument::Integer(value) => AMQPValue::LongLongInt(*value),
        };
        table.insert((*key).into(), value);
    }
    table
}

/// RabbitMQ's `PRECONDITION_FAILED` for an inequivalent `x-quorum-initial-group-size`.
fn is_group_size_refusal(error: &lapin::Error) -> bool {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => {
            matches!(
                e.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            ) && e
                .get_message()
                .as_str()
                .contains(QUORUM_GROUP_SIZE_ARGUMENT)
        }
        _ => false,
    }
}

/// The arguments every quorum queue starts with: its type and initial replica count.
fn quorum(group_size: u32) -> Vec<(&'static str, QueueArgument)> {
    vec![
        ("x-queue-type", QueueArgument::from("quorum")),
        (
            QUORUM_GROUP_SIZE_ARGUMENT,
            QueueArgument::Integer(i64::from(group_size)),
        ),
    ]
}

/// Arguments of a quorum queue that dead-letters to `exchange`.
///
/// Quorum queues dead-letter at most once by default: a broker crash can drop a message in
/// transit. `at-least-once` fixes that, and RabbitMQ (≥ 3.10) requires `reject-publish` overflow
/// with it.
fn dead_lettering(
    group_size: u32,
    exchange: &str,
    routing_key: Option<&str>,
    ttl: Option<Duration>,
) -> Vec<(&'static str, QueueArgument)> {
    let mut args = quorum(group_size);
    args.extend([
        ("x-dead-letter-exchange", QueueArgument::from(exchange)),
        (
            "x-dead-letter-strategy",
            QueueArgument::from("at-least-once"),
        ),
        ("x-overflow", QueueArgument::from("reject-publish")),
        ("x-delivery-limit", QueueArgument::Integer(DELIVERY_LIMIT)),
    ]);
    if let Some(key) = routing_key {
        args.push(("x-dead-letter-routing-key", QueueArgument::from(key)));
    }
    if let Some(ttl) = ttl {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        args.push(("x-message-ttl", QueueArgument::Integer(millis)));
    }
    args
}

fn binding(exchange: String, queue: String, routing_key: &str) -> BindingDefinition {
    BindingDefinition {
        exchange,
        queue,
        routing_key: routing_key.to_owned(),
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}
