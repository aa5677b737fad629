//! kassa-worker: turns Stripe events from RabbitMQ into saved cards and records.
//!
//! Each event goes through the inbox (`stripe_events`): an event already processed is acked and
//! skipped, and a concurrent duplicate waits for the first and then skips. The handler never
//! trusts the payload's state: it re-fetches the object from Stripe, sends every POST with an
//! Idempotency-Key derived from the event (`kassa:{event id}:{step}`), and commits its records
//! together with the inbox mark; the message is acked only after that commit. So a crash at any
//! point repeats Stripe calls that Stripe then replays, and never doubles an effect.

pub mod error;
pub mod events;
pub mod records;
pub mod setup;

use kassa_broker::{run_consumer, Broker, ConsumerConfig, WorkQueue};
use kassa_store::Store;
use kassa_stripe::Client;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use error::HandlerError;
pub use events::EventHandler;

/// How much work one worker process takes on.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Unacked messages RabbitMQ sends ahead.
    pub prefetch: u16,
    /// Events handled at once (each holds a database connection while it runs).
    pub concurrency: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            prefetch: 32,
            concurrency: 16,
        }
    }
}

/// The worker: consumers over one Stripe client, one database pool and one broker connection.
#[derive(Clone)]
pub struct Worker {
    stripe: Client,
    store: Store,
    broker: Broker,
    config: WorkerConfig,
}

impl Worker {
    /// A worker over these connections.
    pub fn new(stripe: Client, store: Store, broker: Broker, config: WorkerConfig) -> Self {
        Self {
            stripe,
            store,
            broker,
            config,
        }
    }

    /// Consumes until `shutdown`, then waits for in-flight events to commit or roll back.
    pub async fn run(self, shutdown: CancellationToken) {
        let retries =
            u32::try_from(self.broker.topology().retry_ladder().len()).unwrap_or(u32::MAX);
        let handler = Arc::new(EventHandler::new(self.stripe, self.store, retries));
        let consumer = ConsumerConfig {
            work: WorkQueue::Events,
            prefetch: self.config.prefetch,
            concurrency: self.config.concurrency,
            tag: "kassa-worker-events".into(),
        };
        run_consumer(self.broker, consumer, handler, shutdown).await;
    }
}
