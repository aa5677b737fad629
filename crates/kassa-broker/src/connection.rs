//! One supervised RabbitMQ connection: connect, declare the topology, open confirm-mode
//! publishing channels; when the connection or a channel breaks, drop it at once (so publishes
//! fail fast instead of hanging) and reconnect with exponential backoff until cancelled.

use crate::live::{Live, PublishingChannels};
use crate::{BrokerError, Topology};
use futures_util::StreamExt;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How to reach RabbitMQ and how patient to be with it.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost`; the password is never logged.
    pub url: String,
    /// Exchange and queue names (with the prefix in force).
    pub topology: Topology,
    /// Confirm-mode channels publishes are spread over.
    pub publisher_channels: usize,
    /// How long a publish waits for the broker's confirm before it counts as failed.
    pub confirm_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// First and largest delay between reconnection attempts.
    pub reconnect_backoff: (Duration, Duration),
    /// Shown in RabbitMQ's management UI.
    pub connection_name: String,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact_url(&self.url))
            .field("topology", &self.topology)
            .field("publisher_channels", &self.publisher_channels)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// Defaults for `url`: production topology, 5 s confirm time-out, 4 publishing channels.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            topology: Topology::default(),
            publisher_channels: 4,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reconnect_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            connection_name: "kassa".into(),
        }
    }
}

/// The URL with its password replaced by `***`, fit for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable AMQP URL>".into(),
    }
}

struct Inner {
    config: BrokerConfig,
    live: RwLock<Option<Arc<Live>>>,
    ready: watch::Sender<bool>,
    /// Connections established so far (1 while the first one lasts).
    connections: AtomicU64,
}

/// Handle to the supervised connection; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.inner.config)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Broker {
    /// Starts the supervisor in the background and returns at once; the connection comes up
    /// (and comes back) on its own. Stops when `shutdown` is cancelled.
    pub fn start(config: BrokerConfig, shutdown: CancellationToken) -> Self {
        let (ready, _) = watch::channel(false);
        let broker = Self {
            inner: Arc::new(Inner {
                config,
                live: RwLock::new(None),
                ready,
                connections: AtomicU64::new(0),
            }),
        };
        tokio::spawn(broker.clone().supervise(shutdown));
        broker
    }

    /// The names in force.
    pub fn topology(&self) -> &Topology {
        &self.inner.config.topology
    }

    /// The configuration this broker was started with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// Connected, topology declared, publishing channels open.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// How many connections this broker has established since it started: 1 while the first
    /// connection lasts, one more for each reconnection.
    pub fn connections_established(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Waits until [`Broker::is_ready`], at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), BrokerError> {
        let mut ready = self.inner.ready.subscribe();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .map(|_| ())
            .map_err(|_| BrokerError::NotReady(timeout))
    }

    /// A fresh channel on the live connection (for consumers and tools), or an error when down.
    pub async fn open_channel(&self) -> Result<Channel, BrokerError> {
        let live = self.live().ok_or(BrokerError::NotReady(Duration::ZERO))?;
        live.connection
            .create_channel()
            .await
            .map_err(BrokerError::amqp("channel.open"))
    }

    /// Declares the topology again on a fresh channel (after someone deleted a queue, say).
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        let channel = self.open_channel().await?;
        let declared = self.topology().declare(&channel).await;
        let _ = channel.close(200, "topology declared".into()).await;
        declared
    }

    pub(crate) fn live(&self) -> Option<Arc<Live>> {
        match self.inner.live.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_live(&self, live: Option<Arc<Live>>) {
        let ready = live.is_some();
        if ready {
            self.inner.connections.fetch_add(1, Ordering::Relaxed);
        }
        match self.inner.live.write() {
            Ok(mut guard) => *guard = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
        self.inner.ready.send_replace(ready);
    }

    async fn supervise(self, shutdown: CancellationToken) {
        let config = &self.inner.config;
        let url = redact_url(&config.url);
        let (min, max) = config.reconnect_backoff;
        let mut delay = min;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break,
                attempt = tokio::time::timeout(config.connect_timeout, connect(config)) => attempt,
            };
            match attempt {
                Ok(Ok(live)) => {
                    delay = min;
                    let live = Arc::new(live);
                    let events = live.connection.events_listener();
                    self.set_live(Some(live.clone()));
                    info!(amqp_url = %url, channels = live.channels.len(), "RabbitMQ connected, topology declared");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = live.broken.cancelled() => {}
                        _ = connection_failed(events, &live.connection) => {}
                    }
                    self.set_live(None);
                    live.broken.cancel();
                    let closing = live.connection.close(200, "kassa: reconnecting".into());
                    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
                    if shutdown.is_cancelled() {
                        break;
                    }
                    warn!(amqp_url = %url, "RabbitMQ connection lost; reconnecting");
                    metrics::counter!("kassa_broker_reconnects_total").increment(1);
                }
                Ok(Err(error)) => {
                    warn!(amqp_url = %url, %error, retry_in = ?delay, "RabbitMQ unavailable")
                }
                Err(_) => {
                    warn!(amqp_url = %url, retry_in = ?delay, "RabbitMQ connection attempt timed out")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(max);
        }
        self.set_live(None);
    }
}

async fn connect(config: &BrokerConfig) -> Result<Live, BrokerError> {
    if url::Url::parse(&config.url).is_err() {
        return Err(BrokerError::InvalidUrl(redact_url(&config.url)));
    }
    let properties =
        ConnectionProperties::default().with_connection_name(config.connection_name.clone().into());
    let connection = Connection::connect(&config.url, properties)
        .await
        .map_err(BrokerError::amqp("connect"))?;
    let setup = connection
        .create_channel()
        .await
        .map_err(BrokerError::amqp("channel.open"))?;
    config.topology.declare(&setup).await?;
    let _ = setup.close(200, "topology declared".into()).await;

    let channels = PublishingChannels::open(&connection, config.publisher_channels).await?;
    Ok(Live {
        connection,
        channels,
        broken: CancellationToken::new(),
    })
}

/// Resolves when lapin reports an error on the connection, or the connection stops being
/// connected (checked every second in case no event arrives, e.g. on a silent close).
///
/// A channel-level (soft) error — the broker closing one channel, e.g. `404 NOT_FOUND` for a
/// publish to an exchange that does not exist — is reported here too, but it leaves the
/// connection and its other channels working: the channel's owner replaces that channel (the
/// publisher, a consumer), so it is no reason to reconnect.
async fn connection_failed(
    events: impl futures_util::Stream<Item = Event> + Send + 'static,
    connection: &Connection,
) {
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(error)) if error.is_amqp_soft_error() => {
                    warn!(%error, "RabbitMQ closed a channel; the connection stays up");
                }
                Some(Event::Error(error)) => {
                    warn!(%error, "RabbitMQ connection error");
                    return;
                }
                Some(_) => {}
                None => return,
            },
            _ = tick.tick() => {
                if !connection.status().connected() {
                    return;
                }
            }
        }
    }
}
