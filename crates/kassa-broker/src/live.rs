//! A live connection to RabbitMQ with its confirm-mode publishing channels: what the supervisor
//! ([`crate::connection`]) holds while connected and the publisher ([`crate::publisher`]) sends
//! on. A channel the broker closes is replaced on the same connection; anything worse marks the
//! connection broken for the supervisor to replace.

use crate::BrokerError;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A live connection with its publishing channels.
pub(crate) struct Live {
    pub(crate) connection: Connection,
    /// The node this connection goes to, password redacted.
    pub(crate) address: String,
    /// Confirm-mode channels; one that the broker closes is replaced on this same connection.
    pub(crate) channels: PublishingChannels,
    /// Cancelled by whoever sees this connection fail; the supervisor then replaces it.
    pub(crate) broken: CancellationToken,
}

/// One publishing channel: the channel in use, and a lock that lets one task at a time replace it.
struct Slot {
    /// Shared behind an `Arc`: a publish takes it with one count instead of cloning the
    /// channel's many handles.
    channel: RwLock<Arc<Channel>>,
    replacing: tokio::sync::Mutex<()>,
}

/// The confirm-mode channels of one connection, used round-robin. A channel the broker closed is
/// replaced in place ([`PublishingChannels::replace`]).
pub(crate) struct PublishingChannels {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(BrokerError::amqp("channel.open"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(BrokerError::amqp("confirm.select"))?;
    Ok(channel)
}

impl PublishingChannels {
    /// Opens `count` (at least one) confirm-mode channels on `connection`.
    pub(crate) async fn open(connection: &Connection, count: usize) -> Result<Self, BrokerError> {
        let mut slots = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            slots.push(Slot {
                channel: RwLock::new(Arc::new(confirm_channel(connection).await?)),
                replacing: tokio::sync::Mutex::new(()),
            });
        }
        Ok(Self {
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// How many channels there are.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The next channel, round-robin, with its slot number.
    pub(crate) fn next(&self) -> (usize, Arc<Channel>) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        (index, self.current(index))
    }

    fn current(&self, index: usize) -> Arc<Channel> {
        match self.slots[index].channel.read() {
            Ok(channel) => channel.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the channel of slot `index` with a new one on `connection`, unless it is open
    /// (another publish already replaced it, or it never closed).
    async fn replace(&self, connection: &Connection, index: usize) -> Result<(), BrokerError> {
        let slot = &self.slots[index];
        let _one_at_a_time = slot.replacing.lock().await;
        if self.current(index).status().connected() {
            return Ok(());
        }
        let channel = Arc::new(confirm_channel(connection).await?);
        match slot.channel.write() {
            Ok(mut current) => *current = channel,
            Err(poisoned) => *poisoned.into_inner() = channel,
        }
        Ok(())
    }
}

impl Live {
    /// A publish on channel `index` failed with `error`: a channel fault (the connection is still
    /// up) replaces that channel; anything else marks the connection broken for the supervisor.
    pub(crate) async fn channel_failed(&self, index: usize, error: &lapin::Error) {
        if error.is_amqp_hard_error() || !self.connection.status().connected() {
            self.broken.cancel();
            return;
        }
        match self.channels.replace(&self.connection, index).await {
            Ok(()) => {
                info!(%error, "RabbitMQ closed a publishing channel; replaced it on the same connection")
            }
            Err(replace_error) => {
                warn!(%error, %replace_error, "could not replace a closed publishing channel; reconnecting");
                self.broken.cancel();
            }
        }
    }
}

impl Live {
    /// The broker nacked a publish on `channel` (slot `index`). Kassa's queues have no length
    /// limit, so a nack is a fault, not back-pressure: on RabbitMQ 3.10 a channel that first
    /// publishes to a quorum queue while the queue's leader is being re-elected (a cluster node
    /// just died) nacks every later publish to it. A new channel starts with the new leader.
    pub(crate) async fn channel_refused(&self, index: usize, channel: &Channel) {
        let _ = channel
            .close(200, "kassa: replacing a channel that nacks".into())
            .await;
        match self.channels.replace(&self.connection, index).await {
            Ok(()) => info!("RabbitMQ nacked a publish; replaced the publishing channel"),
            Err(error) => {
                warn!(%error, "could not replace a publishing channel that nacked; reconnecting");
                self.broken.cancel();
            }
        }
    }
}
