//! kassa-worker: Kassa's consumers, and nothing else — what to do is kassa-core's.
//!
//! - [`events`]: Stripe events from `kassa.events.fulfillment`, through the inbox
//!   (`stripe_events`): an event already processed is acked and skipped, and a concurrent
//!   duplicate waits for the first and then skips. The handler never trusts the payload's state:
//!   kassa-core re-fetches the object from Stripe, sends every POST with an Idempotency-Key
//!   derived from the installation and the event (`kassa:{installation}:{event id}:{step}`, see
//!   `kassa_core::keys`), and writes its records in the transaction that marks the event
//!   processed; the message is acked only after that commit. So a crash at any point repeats
//!   Stripe calls that Stripe then replays, and never doubles an effect.
//! - [`charge_jobs`]: one message per back-office charge attempt, executed by kassa-core.
//! - [`alert_emails`]: the e-mails of alerts (`kassa.alerts.email`), worded by kassa-core's
//!   `mail` templates and sent over SMTP ([`smtp`]).
//! - [`relay`]: the outbox relay, publishing what transactions queued.
//! - [`poller`]: the events poller, publishing events whose webhooks never arrived (`kassa
//!   reconcile` is one pass of it).
//!
//! It never answers HTTP (health and metrics are the binary's) and never acks a message before
//! the database commit of its effects.

pub mod alert_emails;
pub mod charge_jobs;
pub mod events;
pub mod poller;
pub mod relay;
mod settler;
pub mod smtp;
mod without_call;

use kassa_broker::{run_consumer, Broker, ConsumerConfig, WorkQueue};
use kassa_store::Store;
use kassa_stripe::Modes;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use charge_jobs::ChargeJobs;
pub use events::EventHandler;
pub use kassa_core::charges::RecheckoutPages;

/// How much work one worker process takes on.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unacked messages RabbitMQ sends ahead.
    pub prefetch: u16,
    /// Events handled at once (each holds a database connection while it runs); the charge
    /// executor gets as many again.
    pub concurrency: usize,
    /// `KASSA_PUBLIC_URL`: where re-pay links send customers back to.
    pub public_url: String,
    /// The SMTP connections (`KASSA_SMTP_URL` and `KASSA_SMTP_CONNECTIONS`): re-pay links,
    /// payment notifications and receipts are e-mailed when there is one; replaceable while
    /// running.
    pub mail: smtp::MailConnections,
    /// `KASSA_NOTIFY_EMAIL`: the merchant's address for "payment received" notifications.
    pub notify_email: Option<String>,
    /// `KASSA_EVENTS_POLL_INTERVAL`: poll `/v1/events` for missed webhooks; `None` does not.
    pub events_poller: Option<poller::PollerConfig>,
    /// The outbox relay's settings (`KASSA_OUTBOX_RETENTION`).
    pub relay: relay::RelayConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            prefetch: 32,
            concurrency: 16,
            public_url: "http://127.0.0.1:8080".into(),
            mail: smtp::MailConnections::default(),
            notify_email: None,
            events_poller: None,
            relay: relay::RelayConfig::default(),
        }
    }
}

/// The worker: consumers over the Stripe clients of the configured modes (each event and charge
/// served by the client of its own mode), one database pool and one broker connection.
#[derive(Clone)]
pub struct Worker {
    stripe: Modes,
    store: Store,
    broker: Broker,
    config: WorkerConfig,
}

/// How often the worker samples queue depths for `kassa_queue_messages` and
/// `kassa_dead_letter_messages` (about one Prometheus scrape interval).
const QUEUE_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

impl Worker {
    /// A worker over these connections (`stripe`: one client per configured mode, or a single
    /// client).
    pub fn new(
        stripe: impl Into<Modes>,
        store: Store,
        broker: Broker,
        config: WorkerConfig,
    ) -> Self {
        Self {
            stripe: stripe.into(),
            store,
            broker,
            config,
        }
    }

    /// Consumes events and charge jobs and relays the outbox until `shutdown`, then waits for
    /// in-flight work to commit or roll back.
    pub async fn run(self, shutdown: CancellationToken) {
        let topology = self.broker.topology().clone();
        let retries = u32::try_from(topology.retry_ladder().len()).unwrap_or(u32::MAX);
        let pages = RecheckoutPages {
            public_url: self.config.public_url.clone(),
        };
        let charges = Arc::new(ChargeJobs::new(
            self.stripe.clone(),
            self.store.clone(),
            topology,
            pages,
            retries,
        ));
        let events = Arc::new(EventHandler::new(
            self.stripe.clone(),
            self.store.clone(),
            charges.executor().clone(),
            retries,
        ));
        let consumer = |work, tag: &str| ConsumerConfig {
            work,
            prefetch: self.config.prefetch,
            concurrency: self.config.concurrency,
            tag: tag.into(),
        };
        tokio::join!(
            run_consumer(
                self.broker.clone(),
                consumer(WorkQueue::Events, "kassa-worker-events"),
                events,
                shutdown.clone()
            ),
            run_consumer(
                self.broker.clone(),
                consumer(WorkQueue::Charges, "kassa-worker-charges"),
                charges,
                shutdown.clone()
            ),
            run_consumer(
                self.broker.clone(),
                consumer(WorkQueue::AlertEmails, "kassa-worker-mail"),
                Arc::new(alert_emails::AlertEmails::new(
                    self.config.mail.clone(),
                    self.config.notify_email.clone()
                )),
                shutdown.clone()
            ),
            async {
                if let Some(poller) = self.config.events_poller.clone() {
                    poller::run_poller(
                        self.stripe.clone(),
                        self.store.clone(),
                        self.broker.clone(),
                        poller,
                        shutdown.clone(),
                    )
                    .await;
                }
            },
            kassa_broker::sampler::run_queue_sampler(
                self.broker.clone(),
                QUEUE_SAMPLE_INTERVAL,
                shutdown.clone()
            ),
            relay::run_outbox_relay(
                self.store.clone(),
                self.broker.clone(),
                self.config.relay.clone(),
                shutdown.clone()
            ),
        );
    }
}
