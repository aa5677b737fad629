//! One supervised RabbitMQ connection: connect, declare the topology, open confirm-mode
//! publishing channels; when the connection or a channel breaks, drop it at once (so publishes
//! fail fast instead of hanging) and reconnect with exponential backoff until cancelled.
//!
//! The URL may list several nodes of a cluster, comma-separated. The supervisor starts at a
//! random one (so many processes spread over the nodes) and, whenever a connection fails or is
//! lost, moves on to the next one round-robin. What was in flight on the lost connection is not
//! lost: unconfirmed publishes fail (the caller answers 503 and Stripe re-sends), unacked
//! deliveries go back to their quorum queue and are redelivered on the new connection.

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
    /// `amqp://user:pass@host:port/vhost`, or several such URLs separated by commas (the nodes
    /// of a cluster; a comma inside a password is written `%2C`). Passwords are never logged.
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
    /// The node addresses of [`BrokerConfig::url`], in the order given.
    pub fn addresses(&self) -> Vec<String> {
        split_addresses(&self.url)
    }

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

/// The addresses of a comma-separated list of AMQP URLs, blanks trimmed, empty entries dropped.
pub fn split_addresses(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks a comma-separated list of AMQP URLs: at least one, each an `amqp://` or `amqps://`
/// URL with a host. The error names the bad entry by position, its password redacted.
pub fn validate_addresses(urls: &str) -> Result<Vec<String>, BrokerError> {
    let addresses = split_addresses(urls);
    if addresses.is_empty() {
        return Err(BrokerError::InvalidUrl("no address given".into()));
    }
    for (i, address) in addresses.iter().enumerate() {
        let valid = url::Url::parse(address).is_ok_and(|parsed| {
            matches!(parsed.scheme(), "amqp" | "amqps") && parsed.host_str().is_some()
        });
        if !valid {
            return Err(BrokerError::InvalidUrl(format!(
                "entry {} ({}) is not an amqp:// or amqps:// URL",
                i + 1,
                redact_url(address)
            )));
        }
    }
    Ok(addresses)
}

/// The URL (or comma-separated URLs) with every password replaced by `***`, fit for logs.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return split_addresses(url)
            .iter()
            .map(|address| redact_one(address))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
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
    /// Set once the supervisor has ended (after shutdown), its connection closed.
    stopped: watch::Sender<bool>,
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
        let (stopped, _) = watch::channel(false);
        let broker = Self {
            inner: Arc::new(Inner {
                config,
                live: RwLock::new(None),
                ready,
                connections: AtomicU64::new(0),
                stopped,
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

    /// The node the live connection goes to (password redacted), `None` while disconnected.
    pub fn connected_address(&self) -> Option<String> {
        self.live().map(|live| live.address.clone())
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

    /// Resolves once the supervisor has stopped after its `shutdown` was cancelled, having closed
    /// its connection (`connection.close` answered by RabbitMQ, or given up after 1 s). A process
    /// that waits for this before it exits leaves RabbitMQ a clean close, not a dropped socket.
    pub async fn stopped(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
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

    /// A fresh channel on the live connection, and a token cancelled once that connection is
    /// found broken (by the supervisor, or a publisher that met the failure). A consumer waits on
    /// both: a delivery stream that does not end when its connection is lost cannot hold it.
    pub(crate) async fn open_watched_channel(
        &self,
    ) -> Result<(Channel, CancellationToken), BrokerError> {
        let live = self.live().ok_or(BrokerError::NotReady(Duration::ZERO))?;
        let channel = live
            .connection
            .create_channel()
            .await
            .map_err(BrokerError::amqp("channel.open"))?;
        Ok((channel, live.broken.clone()))
    }

    /// Declares the topology again (after someone deleted a queue, say).
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        let live = self.live().ok_or(BrokerError::NotReady(Duration::ZERO))?;
        self.topology().declare(&live.connection).await
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
        let addresses = config.addresses();
        if addresses.is_empty() {
            warn!("no RabbitMQ address configured");
        }
        let (min, max) = config.reconnect_backoff;
        let mut delay = min;
        // A random first node spreads many processes over a cluster; then round-robin.
        let mut next = rand::random_range(0..addresses.len().max(1));
        loop {
            let address = addresses
                .get(next % addresses.len().max(1))
                .map_or("", String::as_str);
            next = next.wrapping_add(1);
            let url = redact_url(address);
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break,
                attempt = tokio::time::timeout(config.connect_timeout, connect(config, address)) => attempt,
            };
            match attempt {
                Ok(Ok(live)) => {
                    delay = min;
                    let live = Arc::new(live);
                    let events = live.connection.events_listener();
                    self.set_live(Some(live.clone()));
                    info!(amqp_url = %url, nodes = addresses.len(), channels = live.channels.len(), "RabbitMQ connected, topology declared");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = live.broken.cancelled() => {}
                        _ = connection_failed(events, &live.connection) => {}
                    }
                    self.set_live(None);
                    live.broken.cancel();
                    // The reason RabbitMQ logs for the close: a stop, or a reconnect.
                    let reason = if shutdown.is_cancelled() {
                        "kassa: shutting down"
                    } else {
                        "kassa: reconnecting"
                    };
                    let closing = live.connection.close(200, reason.into());
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
        self.inner.stopped.send_replace(true);
    }
}

/// Connects to the first of `urls` (comma-separated) that answers, trying them in order: for
/// tools and tests that need one plain connection to a cluster.
pub async fn connect_first(urls: &str) -> Result<Connection, BrokerError> {
    let mut last = BrokerError::InvalidUrl("no address given".into());
    for address in split_addresses(urls) {
        if url::Url::parse(&address).is_err() {
            last = BrokerError::InvalidUrl(redact_url(&address));
            continue;
        }
        match Connection::connect(&address, ConnectionProperties::default()).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = BrokerError::amqp("connect")(error),
        }
    }
    Err(last)
}

async fn connect(config: &BrokerConfig, address: &str) -> Result<Live, BrokerError> {
    if url::Url::parse(address).is_err() {
        return Err(BrokerError::InvalidUrl(redact_url(address)));
    }
    let properties =
        ConnectionProperties::default().with_connection_name(config.connection_name.clone().into());
    let connection = Connection::connect(address, properties)
        .await
        .map_err(BrokerError::amqp("connect"))?;
    config.topology.declare(&connection).await?;

    let channels = PublishingChannels::open(&connection, config.publisher_channels).await?;
    Ok(Live {
        connection,
        address: redact_url(address),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_addresses_is_split_and_trimmed() {
        assert_eq!(
            split_addresses(" amqp://a:1/%2f ,amqp://b:2/%2f,, "),
            vec!["amqp://a:1/%2f", "amqp://b:2/%2f"]
        );
        assert_eq!(
            BrokerConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f").addresses(),
            vec!["amqp://guest:guest@127.0.0.1:5672/%2f"]
        );
    }

    #[test]
    fn every_password_of_a_list_is_redacted() {
        let redacted = redact_url("amqp://kassa:first@a:5672/%2f,amqps://kassa:second@b:5671/prod");
        assert_eq!(
            redacted,
            "amqp://kassa:***@a:5672/%2f,amqps://kassa:***@b:5671/prod"
        );
        let config = BrokerConfig::new("amqp://kassa:first@a/%2f,amqp://kassa:second@b/%2f");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("first") && !debug.contains("second"),
            "{debug}"
        );
    }

    #[test]
    fn a_bad_entry_is_named_without_its_password() {
        assert!(validate_addresses("amqp://a/%2f,amqps://b:5671/%2f").is_ok());
        let error = validate_addresses("amqp://u:hunter2@a/%2f,http://u:hunter3@b/")
            .unwrap_err()
            .to_string();
        assert!(error.contains("entry 2"), "{error}");
        assert!(!error.contains("hunter"), "{error}");
        assert!(validate_addresses(" , ").is_err());
        assert!(validate_addresses("not a url").is_err());
    }
}
