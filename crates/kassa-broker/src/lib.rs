//! kassa-broker: everything Kassa says to RabbitMQ.
//!
//! It declares the topology of DESIGN.md idempotently, every route included ([`topology`]),
//! keeps one supervised connection that reconnects with backoff ([`connection`]; the live
//! connection and its confirm-mode channels are `live`), and publishes with publisher confirms
//! ([`publisher`]): a publish returns `Ok` only once the broker has taken responsibility for the
//! message. [`consumer`] runs a work queue with its retry ladder and dead letters ([`dlq`] reads and
//! replays them), acking each message after its handler, in as few frames as it can
//! (`acks`); [`probe`] and [`sampler`] look at exchanges and queue depths.
//!
//! It never acknowledges on anyone's behalf and never retries a publish by itself: the caller
//! decides (the ingress answers 503 and Stripe re-sends).

mod acks;
pub mod connection;
pub mod consumer;
pub mod dlq;
pub mod error;
mod live;
pub mod probe;
pub mod publisher;
pub mod sampler;
pub mod topology;

pub use connection::{Broker, BrokerConfig};
pub use consumer::{run_consumer, ConsumerConfig, Incoming, MessageHandler, Outcome};
pub use error::BrokerError;
pub use publisher::{ConfirmedPublisher, OutgoingMessage, PublishError};
pub use topology::{Definitions, RetryRung, Topology, WorkQueue};
