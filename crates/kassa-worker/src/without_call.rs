//! Events settled without a Stripe call, in one round trip to PostgreSQL shared with the others
//! waiting ([`crate::settler`], [`kassa_store::Store::settle_many_without_effects`]): an echo of one of this installation's writes
//! whose answer Kassa recorded ([`kassa_core::records::is_recorded_echo`]), and an event with
//! nothing to read ([`kassa_core::records::nothing_to_read`]). Of a completed setup session's five
//! events, four take this path.
//!
//! An event the batch could not take (another transaction holds its inbox row or its write's
//! key, or the batch failed as a whole) is settled on its own
//! ([`kassa_store::Store::settle_without_effects`], which waits for those locks). Anything else —
//! and an echo whose write has no note — goes the usual way: claim, re-fetch, record, commit.

use crate::settler::BatchSettler;
use kassa_broker::Outcome;
use kassa_store::{EventToSettle, Settled, Store};
use kassa_stripe::objects::Event;
use std::time::Instant;
use tracing::{debug, info};

/// What an event may be settled as without a Stripe call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WithoutCall<'e> {
    /// Caused by the write sent under this key of the installation: an echo if its answer is
    /// recorded.
    Echo { key: &'e str },
    /// Nothing to read or record.
    NothingToRead,
}

/// Counts an event handled without a Stripe call, by type.
pub(crate) fn count(kind: &str) {
    metrics::counter!("kassa_events_without_stripe_call_total", "type" => kind.to_owned())
        .increment(1);
}

/// Settles `event` in a batch when `how` allows, on its own when the batch could not; `None`
/// sends it the usual way (an echo whose write has no note, or a database error the usual path
/// meets and reports).
pub(crate) async fn settle(
    store: &Store,
    settler: &BatchSettler,
    event: &Event,
    object_id: &str,
    how: WithoutCall<'_>,
) -> Option<Outcome> {
    let started = Instant::now();
    let own_write = match how {
        WithoutCall::Echo { key } => Some((key, object_id)),
        WithoutCall::NothingToRead => None,
    };
    let batched = settler
        .settle(EventToSettle {
            id: event.id.clone(),
            kind: event.type_.clone(),
            livemode: event.livemode,
            own_write: own_write.map(|(key, object)| (key.to_owned(), object.to_owned())),
        })
        .await;
    let settled = match batched {
        Some(Settled::Busy) | None => {
            debug!("not settled in a batch: settled on its own");
            store
                .settle_without_effects(&event.id, &event.type_, event.livemode, own_write)
                .await
        }
        Some(outcome) => Ok(outcome),
    };
    match settled {
        Ok(Settled::Settled) => {
            count(&event.type_);
            metrics::counter!("kassa_events_total", "outcome" => "processed").increment(1);
            metrics::histogram!("kassa_event_handling_seconds")
                .record(started.elapsed().as_secs_f64());
            info!(?how, "event processed without a Stripe call");
            Some(Outcome::Done)
        }
        Ok(Settled::Duplicate) => {
            info!("duplicate event: already processed; acked");
            metrics::counter!("kassa_events_total", "outcome" => "duplicate").increment(1);
            Some(Outcome::Done)
        }
        Ok(Settled::NotRecorded) => {
            debug!("own write not recorded: handled the usual way");
            None
        }
        // Only a batch answers busy; the single settle waits instead. Go the usual way.
        Ok(Settled::Busy) => None,
        Err(error) => {
            debug!(%error, "could not settle without a call: handled the usual way");
            None
        }
    }
}
