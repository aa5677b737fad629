//! Group commit of the events settled without a Stripe call: handlers hand their event to one
//! task, which settles everything waiting in one round trip and one transaction
//! ([`kassa_store::Store::settle_many_without_effects`]) and answers each handler with its
//! event's outcome once that transaction has committed.
//!
//! No timer: the task takes the first request, then whatever else is already queued (at most
//! [`MAX_BATCH`]); requests that arrive while a batch is in flight make up the next one. Under
//! light load a batch is one event and costs what a single settle costs; under load one commit
//! serves many events.

use kassa_store::{EventToSettle, Settled, Store};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Most events settled in one transaction. A batch holds its events' inbox rows until it commits,
/// so it stays short; 128 is far above the events a worker handles at once.
pub(crate) const MAX_BATCH: usize = 128;

/// Requests queued ahead of the task. Each handler has at most one in flight, so this bounds
/// nothing in practice; a full queue makes handlers wait, never drops a request.
const QUEUE: usize = 1024;

/// One handler's event and where to send its outcome.
struct Request {
    event: EventToSettle,
    reply: oneshot::Sender<Option<Settled>>,
}

/// The handlers' side of the batching task; the task stops when this is dropped, after the
/// requests already sent are answered.
#[derive(Debug)]
pub(crate) struct BatchSettler {
    requests: mpsc::Sender<Request>,
}

impl BatchSettler {
    /// Starts the batching task over `store` (on the current Tokio runtime).
    pub(crate) fn start(store: Store) -> Self {
        let (requests, queued) = mpsc::channel(QUEUE);
        tokio::spawn(settle_batches(store, queued));
        Self { requests }
    }

    /// Settles `event` with the others waiting: its outcome once the batch committed, or `None`
    /// when the batch failed as a whole (nothing of it was marked) and the caller must settle
    /// the event on its own.
    pub(crate) async fn settle(&self, event: EventToSettle) -> Option<Settled> {
        let (reply, outcome) = oneshot::channel();
        self.requests.send(Request { event, reply }).await.ok()?;
        outcome.await.ok().flatten()
    }
}

/// The batching task: one batch at a time, until every [`BatchSettler`] is dropped; then it logs
/// what it did.
async fn settle_batches(store: Store, mut queued: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut tally = Tally::default();
    // Waits for the first request, then takes what is already queued, up to MAX_BATCH.
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len();
        metrics::histogram!("kassa_settle_batch_size").record(size as f64);
        tally.batches += 1;
        tally.events += size as u64;
        tally.largest = tally.largest.max(size);
        let (to_settle, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| (r.event, r.reply)).unzip();
        match store.settle_many_without_effects(&to_settle).await {
            Ok(outcomes) => {
                debug!(size, "settled a batch of events without a Stripe call");
                tally.busy += outcomes.iter().filter(|o| **o == Settled::Busy).count() as u64;
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A handler that went away (shutdown) leaves its message unacked: the
                    // redelivery finds the event processed.
                    let _ = reply.send(Some(outcome));
                }
            }
            Err(error) => {
                // The transaction rolled back: nothing of the batch was marked.
                tally.failed += 1;
                warn!(%error, size, "a batch of events could not be settled; settling them one by one");
                for reply in replies {
                    let _ = reply.send(None);
                }
            }
        }
    }
    if tally.batches > 0 {
        info!(
            batches = tally.batches,
            events = tally.events,
            mean = tally.events as f64 / tally.batches as f64,
            largest = tally.largest,
            busy = tally.busy,
            failed = tally.failed,
            "batches of events settled without a Stripe call (busy events and failed batches \
             were settled one by one)"
        );
    }
}

/// What the batching task did, for its last log line.
#[derive(Default)]
struct Tally {
    batches: u64,
    events: u64,
    largest: usize,
    /// Events another transaction held.
    busy: u64,
    /// Batches that rolled back whole.
    failed: u64,
}
