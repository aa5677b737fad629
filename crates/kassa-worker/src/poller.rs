//! The events poller, the backstop for missed webhooks: list Stripe's events (`GET /v1/events`)
//! and publish the ones the inbox never saw into `kassa.events`, where the worker handles them
//! like any webhook.
//!
//! Stripe lists events newest first, filtered by `created[gte]` and paged with `starting_after`,
//! and keeps them 30 days ("We only guarantee access to events through the Retrieve Event API for
//! 30 days", API reference, events). A webhook Stripe gave up on, or one dropped on the way, is
//! still listed there. Deduplication stays where it already is: the inbox (`stripe_events`). This
//! pass skips events the inbox has a row for — a published event gets one at once, so later
//! passes never publish it again while it waits in the queue (only after an hour unclaimed,
//! [`kassa_store::events::POLLED_EVENT_WAIT`]) — and an event that is published here while its
//! webhook is also in flight is claimed once by the worker; the other copy is acked as a
//! duplicate. So effects and notifications happen once per event whichever path brings it.
//!
//! [`run_poller`] repeats the pass ([`poll_once`]) every interval for each configured mode, with
//! that mode's client and a cursor of that mode kept in PostgreSQL (`event_poll_cursor`, one row
//! per mode, [`cursor_name`]), so a restart resumes where it stopped. Every worker runs it,
//! but only the leader polls: the process holding the advisory lock [`POLLER_LEADERSHIP`]
//! ([`kassa_store::leadership`]) on a connection of its own. The others try for it every
//! interval, and one of them takes over when the leader's session ends (the process died, or its
//! connection was cut); `kassa reconcile
//! --since …` is one pass over a window, reporting what had been missing.

use crate::events::handles;
use kassa_broker::{Broker, OutgoingMessage};
use kassa_store::events::PollCursor;
use kassa_store::{Leadership, Store, StoreError};
use kassa_stripe::objects::Event;
use kassa_stripe::resources::{ListEvents, RangeQuery};
use kassa_stripe::{Client, Mode, Modes, StripeError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The name of the cursor row of a deployment's only mode before cursors were kept per mode;
/// a mode without a cursor of its own starts from it.
pub const POLLER_CURSOR: &str = "events";

/// The name of `mode`'s cursor row: each mode's events are listed with its own key, so each has
/// its own cursor.
pub fn cursor_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Test => "events.test",
        Mode::Live => "events.live",
    }
}

/// Stripe's page size limit for lists ("limit can range between 1 and 100").
const PAGE: u8 = 100;

/// How the background poller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// Time between passes (`KASSA_EVENTS_POLL_INTERVAL`, 15 s by default).
    pub interval: Duration,
    /// How far back the very first pass looks, when there is no cursor yet.
    pub first_lookback: Duration,
    /// Events younger than this are left for the next pass: their webhook is most likely still on
    /// its way, and publishing them too would only make a duplicate for the inbox to drop.
    pub settle: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            first_lookback: Duration::from_secs(24 * 60 * 60),
            settle: Duration::from_secs(5),
        }
    }
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Listing events failed.
    #[error("listing Stripe events: {0}")]
    Stripe(#[from] StripeError),
    /// Reading the inbox or the cursor failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// An event could not be published (the pass stops; the next one tries again).
    #[error("publishing event {event_id}: {error}")]
    Publish {
        /// The event.
        event_id: String,
        /// What the broker said.
        error: kassa_broker::PublishError,
    },
}

/// An event Stripe has that the inbox had not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingEvent {
    /// `evt_…`.
    pub id: String,
    /// e.g. `charge.succeeded`.
    pub kind: String,
    /// Stripe's `created`.
    pub created: i64,
    /// The object it is about (`ch_…`, `re_…`, `cs_…`).
    pub object_id: Option<String>,
}

/// What one pass saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Events Stripe listed in the window.
    pub listed: usize,
    /// Of those, events of types Kassa handles.
    pub handled: usize,
    /// Handled events the inbox had no row for; each was published, oldest first.
    pub missing: Vec<MissingEvent>,
    /// The newest event listed (the cursor to resume from).
    pub newest: Option<PollCursor>,
}

/// Unix time now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// One pass over events created in `since ..= until` (Unix seconds): lists them all, and
/// publishes (with confirms) every handled event the inbox has not seen, oldest first.
pub async fn poll_once(
    stripe: &Client,
    store: &Store,
    broker: &Broker,
    since: i64,
    until: i64,
) -> Result<PollReport, PollError> {
    let mut report = PollReport::default();
    let mut events: Vec<Event> = Vec::new();
    let mut starting_after = None;
    loop {
        let page = stripe
            .events()
            .list(&ListEvents {
                created: Some(RangeQuery {
                    gte: Some(since),
                    lte: Some(until),
                    ..Default::default()
                }),
                limit: Some(PAGE),
                starting_after: starting_after.take(),
                ..Default::default()
            })
            .await?;
        report.listed += page.data.len();
        if report.newest.is_none() {
            report.newest = page.data.first().map(|e| PollCursor {
                last_created: e.created,
                last_event_id: Some(e.id.clone()),
            });
        }
        starting_after = page.data.last().map(|e| e.id.clone());
        events.extend(page.data.into_iter().filter(|e| handles(&e.type_)));
        if !page.has_more || starting_after.is_none() {
            break;
        }
    }
    report.handled = events.len();
    let mut known = std::collections::HashSet::new();
    for chunk in events.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|e| e.id.clone()).collect();
        known.extend(store.known_event_ids(&ids).await?);
    }
    // Oldest first, as Stripe created them (they are listed newest first).
    let publisher = broker.publisher();
    let exchange = broker.topology().events_exchange();
    for event in events.iter().rev().filter(|e| !known.contains(&e.id)) {
        publish(&publisher, &exchange, event).await?;
        store
            .note_polled_event(&event.id, &event.type_, event.livemode)
            .await?;
        metrics::counter!("kassa_events_backfilled_total").increment(1);
        info!(event_id = %event.id, event_type = %event.type_, "missed event found in /v1/events; published");
        report.missing.push(MissingEvent {
            id: event.id.clone(),
            kind: event.type_.clone(),
            created: event.created,
            object_id: event.object_id().map(str::to_owned),
        });
    }
    Ok(report)
}

async fn publish(
    publisher: &kassa_broker::ConfirmedPublisher,
    exchange: &str,
    event: &Event,
) -> Result<(), PollError> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut headers = FieldTable::default();
    // Where the message came from, for `kassa dlq show` and people reading the queue.
    headers.insert(
        "x-kassa-source".into(),
        AMQPValue::LongString(LongString::from("events-poller")),
    );
    publisher
        .publish(OutgoingMessage {
            exchange,
            routing_key: &event.type_,
            body: &body,
            message_id: &event.id,
            kind: &event.type_,
            headers: Some(headers),
        })
        .await
        .map_err(|error| PollError::Publish {
            event_id: event.id.clone(),
            error,
        })
}

/// Runs a pass for each configured mode every `config.interval` until `shutdown`, resuming from
/// that mode's cursor in PostgreSQL (or `first_lookback` ago the first time) and moving it to the
/// newest event listed.
pub async fn run_poller(
    stripe: impl Into<Modes>,
    store: Store,
    broker: Broker,
    config: PollerConfig,
    shutdown: CancellationToken,
) {
    info!(
        interval_s = config.interval.as_secs_f64(),
        "polling /v1/events for missed webhooks when this process leads"
    );
    let modes = stripe.into();
    let settle = i64::try_from(config.settle.as_secs()).unwrap_or(0);
    let lookback = i64::try_from(config.first_lookback.as_secs()).unwrap_or(0);
    let mut leadership: Option<Leadership> = None;
    loop {
        let wait = match lead(&store, &mut leadership).await {
            Lead::Leading => None,
            Lead::Following => Some(config.interval),
            // Give the others first go: a process whose session just died may well be the one
            // with trouble reaching PostgreSQL.
            Lead::Lost => Some(config.interval * 2),
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        for (mode, client) in modes.iter() {
            let outcome = poll_mode(mode, client, &store, &broker, lookback, settle).await;
            match outcome {
                Ok(Some(report)) => {
                    metrics::counter!("kassa_events_polls_total", "outcome" => "ok").increment(1);
                    if !report.missing.is_empty() {
                        warn!(
                            %mode,
                            missing = report.missing.len(),
                            listed = report.listed,
                            "events poller published events whose webhooks never arrived"
                        );
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    metrics::counter!("kassa_events_polls_total", "outcome" => "failed")
                        .increment(1);
                    warn!(%mode, %error, "events poll failed; trying again next interval");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
    if let Some(leadership) = leadership {
        // Let another process take over now rather than when this connection times out.
        leadership.release().await;
    }
}

/// One pass over `mode`'s events with its `client`, from its cursor (or the cursor kept before
/// cursors were per mode, or `lookback` seconds ago) to `settle` seconds ago; moves its cursor.
async fn poll_mode(
    mode: Mode,
    client: &Client,
    store: &Store,
    broker: &Broker,
    lookback: i64,
    settle: i64,
) -> Result<Option<PollReport>, PollError> {
    let cursor = match store.poll_cursor(cursor_name(mode)).await? {
        Some(cursor) => Some(cursor),
        None => store.poll_cursor(POLLER_CURSOR).await?,
    };
    let since = match cursor {
        // `gte` the newest seen: events of that same second listed after the last pass are not
        // skipped (those seen already are in the inbox, or in flight).
        Some(cursor) => cursor.last_created,
        None => unix_now() - lookback,
    };
    let until = unix_now() - settle;
    if until < since {
        return Ok(None);
    }
    let report = poll_once(client, store, broker, since, until).await?;
    if let Some(newest) = &report.newest {
        store.advance_poll_cursor(cursor_name(mode), newest).await?;
    }
    Ok(Some(report))
}

/// The advisory lock that makes one process of the deployment the poller.
pub const POLLER_LEADERSHIP: &str = "events-poller";

/// Where this process stands in the polling.
enum Lead {
    /// It holds the leadership: poll.
    Leading,
    /// Another process holds it.
    Following,
    /// It held the leadership and lost it (its session ended).
    Lost,
}

/// Whether this process leads the polling now: keeps a live leadership, notices a lost one
/// (its connection died), and tries to take it when no one holds it.
async fn lead(store: &Store, leadership: &mut Option<Leadership>) -> Lead {
    if let Some(held) = leadership {
        if held.still_held().await {
            return Lead::Leading;
        }
        warn!("the events poller's leadership was lost (its PostgreSQL session ended); another process may take it over");
        *leadership = None;
        return Lead::Lost;
    }
    match store.try_lead(POLLER_LEADERSHIP).await {
        Ok(Some(held)) => {
            info!(
                backend_pid = held.backend_pid(),
                "this process now polls /v1/events for the deployment"
            );
            *leadership = Some(held);
            Lead::Leading
        }
        Ok(None) => {
            debug!("another process polls /v1/events");
            Lead::Following
        }
        Err(error) => {
            warn!(%error, "could not try for the events poller's leadership");
            Lead::Following
        }
    }
}
