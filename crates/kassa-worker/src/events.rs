//! The event consumer's handler: parse, check the mode, claim in the inbox, dispatch by type into
//! kassa-core, commit with the inbox mark, and say whether to ack, retry or dead-letter.
//!
//! | event | handled by |
//! |---|---|
//! | `checkout.session.completed`, `….async_payment_succeeded` | [`kassa_core::fulfil::checkout_session`] (then a re-pay session's charge goes again, [`kassa_core::charges::recheckout`]) |
//! | `checkout.session.expired` | [`kassa_core::records`], then [`kassa_core::charges::recheckout`] (reminder or failure) |
//! | `payment_intent.succeeded`, `.payment_failed`, `.processing` | [`kassa_core::charges::settle`], else [`kassa_core::fulfil::payment`] (no call for the echo of a charge's create that succeeded) |
//! | `payment_method.*`, `customer.*` | [`kassa_core::records`] (no call for an echo of Kassa's own recorded write, nor for a `payment_method.attached` whose attachment Kassa recorded from Stripe's answer) |
//! | `setup_intent.*` | nothing to read: the card it attaches has its own `payment_method.attached` |
//! | `charge.succeeded`, `.pending`, `.failed`, `refund.created` | [`kassa_core::notify`] |
//!
//! Echoes whose write is recorded and `setup_intent.*` are settled before any claim, in batches
//! of one round trip and one transaction (the modules `without_call` and `settler`).

use crate::settler::BatchSettler;
use crate::without_call::{self, WithoutCall};
use kassa_broker::{Incoming, MessageHandler, Outcome};
use kassa_core::charges::ChargeExecutor;
use kassa_core::fulfil::{
    fulfil_checkout_session_and_mark, record_payment_intent, Fulfilled, Fulfiller, SavedCard,
};
use kassa_core::keys::KeyScope;
use kassa_core::{notify, records, Error};
use kassa_store::payments::RecordedBy;
use kassa_store::{EventClaim, InboxMark, InboxMarked, PgConnection, Store};
use kassa_stripe::objects::Event;
use kassa_stripe::{Client, Modes};
use std::time::Instant;
use tracing::{debug, info, warn, Instrument};

/// The event types Kassa acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    SessionCompleted,
    SessionExpired,
    SetupIntent,
    PaymentMethod,
    Customer,
    PaymentIntent,
    NewCharge,
    NewRefund,
}

/// Every event type Kassa acts on, and how. The types a merchant's webhook endpoint should enable
/// (`enabled_events`); any other type is acked unread.
const HANDLED: &[(&str, Handled)] = &[
    ("checkout.session.completed", Handled::SessionCompleted),
    (
        "checkout.session.async_payment_succeeded",
        Handled::SessionCompleted,
    ),
    ("checkout.session.expired", Handled::SessionExpired),
    ("setup_intent.succeeded", Handled::SetupIntent),
    ("setup_intent.setup_failed", Handled::SetupIntent),
    ("payment_method.attached", Handled::PaymentMethod),
    ("payment_method.detached", Handled::PaymentMethod),
    ("payment_method.updated", Handled::PaymentMethod),
    // A card the network reissued or extended in place: re-read like any change not Kassa's.
    (
        "payment_method.automatically_updated",
        Handled::PaymentMethod,
    ),
    ("customer.created", Handled::Customer),
    ("customer.updated", Handled::Customer),
    ("customer.deleted", Handled::Customer),
    ("payment_intent.succeeded", Handled::PaymentIntent),
    ("payment_intent.payment_failed", Handled::PaymentIntent),
    ("payment_intent.processing", Handled::PaymentIntent),
    // The connector triggers; see kassa_core::notify for why these types.
    ("charge.succeeded", Handled::NewCharge),
    ("charge.pending", Handled::NewCharge),
    ("charge.failed", Handled::NewCharge),
    ("refund.created", Handled::NewRefund),
];

impl Handled {
    fn of(kind: &str) -> Option<Self> {
        HANDLED
            .iter()
            .find(|(name, _)| *name == kind)
            .map(|(_, handled)| *handled)
    }
}

/// The event types Kassa acts on: what a webhook endpoint for Kassa should enable.
pub fn handled_types() -> impl Iterator<Item = &'static str> {
    HANDLED.iter().map(|(name, _)| *name)
}

/// Whether Kassa acts on events of type `kind` (the others are acked unread and never enter the
/// inbox, so the `/v1/events` poller looks only for these).
pub fn handles(kind: &str) -> bool {
    Handled::of(kind).is_some()
}

/// Handles Stripe events from `kassa.events.fulfillment`.
pub struct EventHandler {
    stripe: Modes,
    store: Store,
    charges: ChargeExecutor,
    /// Rungs of the retry ladder: a transient failure on the last one ends in the dead letters.
    retries: u32,
    /// Settles the events that need no Stripe call, in batches; started on first use (so on the
    /// runtime that handles events), stopped when the handler is dropped.
    settler: std::sync::OnceLock<BatchSettler>,
}

impl EventHandler {
    /// A handler over these clients (each event served by the client of its own mode) and
    /// store; `retries` is the length of the retry ladder.
    pub fn new(
        stripe: impl Into<Modes>,
        store: Store,
        charges: ChargeExecutor,
        retries: u32,
    ) -> Self {
        Self {
            stripe: stripe.into(),
            store,
            charges,
            retries,
            settler: std::sync::OnceLock::new(),
        }
    }

    async fn process(&self, event: Event, attempt: u32) -> Outcome {
        let started = Instant::now();
        let Some(handled) = Handled::of(&event.type_) else {
            debug!("event type not handled; acked");
            metrics::counter!("kassa_events_total", "outcome" => "ignored_type").increment(1);
            return Outcome::Done;
        };
        // Test and live never mix: an event is served by its own mode's client or not at all.
        let stripe = match self.stripe.for_livemode(event.livemode) {
            Ok(stripe) => stripe,
            Err(not_configured) => {
                let reason = format!(
                    "livemode={}: {not_configured}; the other mode's key is never used",
                    event.livemode
                );
                return self.mode_not_configured(&event, reason).await;
            }
        };
        if let Some(outcome) = self.settle_without_call(handled, &event).await {
            return outcome;
        }
        let mut claimed = match self
            .store
            .claim_event(&event.id, &event.type_, event.livemode)
            .await
        {
            Ok(EventClaim::AlreadyProcessed) => {
                info!("duplicate event: already processed; acked");
                metrics::counter!("kassa_events_total", "outcome" => "duplicate").increment(1);
                return Outcome::Done;
            }
            Ok(EventClaim::Claimed(claimed)) => claimed,
            Err(error) => return self.failed(Error::from(error), attempt, None).await,
        };
        let object_id = event.object_id().unwrap_or_default().to_owned();
        let installation = self.store.installation_id();
        let keys = KeyScope::new(installation, event.id.clone(), attempt);
        let inbox = claimed.inbox_mark();
        let conn = claimed.conn();
        // Before the object's lock: the write an echo answers may hold it until it commits.
        let result = match self.echo(handled, conn, &event, &object_id).await {
            Ok(true) => {
                info!("echo of Kassa's own write, already recorded: not re-fetched");
                without_call::count(&event.type_);
                Ok(None)
            }
            // The fulfilment takes the session's lock itself (the success page calls it too).
            Ok(false) if handled == Handled::SessionCompleted => {
                self.dispatch(stripe, handled, conn, &event, &object_id, &keys, &inbox)
                    .await
            }
            Ok(false) => {
                // Before the re-fetch: concurrent events about one object then commit in fetch
                // order.
                match kassa_store::events::lock_stripe_object(conn, &object_id).await {
                    Ok(()) => {
                        self.dispatch(stripe, handled, conn, &event, &object_id, &keys, &inbox)
                            .await
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Err(error) => Err(error),
        };
        // A handler's last write may have set the inbox mark already (`marked`): then only the
        // commit is left.
        let completed = match result {
            Ok(Some(marked)) => Ok(claimed.complete_marked(marked).await),
            Ok(None) => Ok(claimed.complete().await),
            Err(error) => Err((error, claimed)),
        };
        match completed {
            Ok(completed) => match completed {
                Ok(()) => {
                    metrics::counter!("kassa_events_total", "outcome" => "processed").increment(1);
                    metrics::histogram!("kassa_event_handling_seconds")
                        .record(started.elapsed().as_secs_f64());
                    info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "event processed"
                    );
                    Outcome::Done
                }
                Err(error) => self.failed(error.into(), attempt, None).await,
            },
            Err((error, claimed)) => self.failed(error, attempt, Some(claimed)).await,
        }
    }

    /// Settles an event that needs no Stripe call in one round trip, when it is one
    /// ([`without_call`]); `None`: handle it the usual way.
    async fn settle_without_call(&self, handled: Handled, event: &Event) -> Option<Outcome> {
        let how = match handled {
            Handled::SetupIntent if records::nothing_to_read(&event.type_) => {
                WithoutCall::NothingToRead
            }
            Handled::Customer | Handled::PaymentMethod | Handled::PaymentIntent => {
                WithoutCall::Echo {
                    key: records::own_key(self.store.installation_id(), event)?,
                }
            }
            _ => return None,
        };
        let object_id = event.object_id()?;
        let settler = self
            .settler
            .get_or_init(|| BatchSettler::start(self.store.clone()));
        without_call::settle(&self.store, settler, event, object_id, how).await
    }

    /// Whether the event is an echo of one of this installation's writes to a customer, a card
    /// or a charge's PaymentIntent whose answer Kassa recorded ([`records::is_recorded_echo`]).
    async fn echo(
        &self,
        handled: Handled,
        conn: &mut PgConnection,
        event: &Event,
        object_id: &str,
    ) -> Result<bool, Error> {
        if !matches!(
            handled,
            Handled::Customer | Handled::PaymentMethod | Handled::PaymentIntent
        ) {
            return Ok(false);
        }
        records::is_recorded_echo(conn, self.store.installation_id(), event, object_id).await
    }

    /// Records an event of a mode this deployment has no key for as failed and dead-letters it,
    /// without a Stripe call.
    async fn mode_not_configured(&self, event: &Event, reason: String) -> Outcome {
        warn!(%reason, "event of a mode without a key; dead-lettering");
        if let Err(error) = self
            .store
            .record_event_failure(&event.id, &event.type_, event.livemode, &reason, true)
            .await
        {
            warn!(%error, "could not record the failure");
        }
        metrics::counter!("kassa_events_total", "outcome" => "dead_lettered").increment(1);
        Outcome::DeadLetter(reason)
    }

    /// Hands the event to kassa-core by type, in the inbox transaction `conn`, with `stripe`,
    /// the client of the event's mode. `Some`: the handler's last write marked the event
    /// processed (`inbox`), in this transaction.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        stripe: &Client,
        handled: Handled,
        conn: &mut PgConnection,
        event: &Event,
        object_id: &str,
        keys: &KeyScope,
        inbox: &InboxMark,
    ) -> Result<Option<InboxMarked>, Error> {
        let installation = self.store.installation_id();
        let done = match handled {
            Handled::SessionCompleted => {
                let how = Fulfiller {
                    stripe,
                    topology: self.charges.topology(),
                    recorded_by: RecordedBy::Webhook,
                    installation,
                };
                return match fulfil_checkout_session_and_mark(how, conn, object_id, keys, inbox)
                    .await
                {
                    // A re-checkout: the new card is the default now; the charge goes again, in
                    // the same transaction (a failure rolls the mark back with the rest).
                    Ok((
                        Fulfilled::Card(SavedCard {
                            charge_id: Some(charge_id),
                            payment_method_id,
                            ..
                        }),
                        marked,
                    )) => self
                        .charges
                        .retry_after_recheckout(conn, charge_id, object_id, &payment_method_id)
                        .await
                        .map(|()| marked),
                    Ok((_, marked)) => Ok(marked),
                    Err(error) => Err(error),
                };
            }
            Handled::SessionExpired => {
                match records::record_checkout_session(stripe, conn, object_id, installation).await
                {
                    Ok(()) => self.charges.recheckout_expired(conn, object_id).await,
                    Err(error) => Err(error),
                }
            }
            Handled::PaymentIntent => {
                match self.charges.settle(conn, event.livemode, object_id).await {
                    // Not a back-office charge: a payment made on the merchant's pages.
                    Ok(false) if event.type_ == "payment_intent.succeeded" => {
                        record_payment_intent(
                            stripe,
                            conn,
                            self.charges.topology(),
                            object_id,
                            RecordedBy::Webhook,
                        )
                        .await
                        .map(|_| ())
                    }
                    Ok(_) => Ok(()),
                    Err(error) => Err(error),
                }
            }
            // A SetupIntent that succeeded attaches its card to its customer, if it names one,
            // and Stripe sends `payment_method.attached` for that (docs: SetupIntent `customer`,
            // "the SetupIntent's payment method will be attached to the Customer on successful
            // setup"); a Checkout setup without a customer leaves the card unattached until the
            // session is fulfilled. Either way the card is recorded by other events: nothing to
            // read here.
            Handled::SetupIntent => Ok(()),
            Handled::PaymentMethod => {
                if records::is_recorded_attachment(conn, event, object_id).await? {
                    info!("attachment already recorded from Stripe's answer: not re-fetched");
                    without_call::count(&event.type_);
                    return Ok(None);
                }
                records::record_payment_method(stripe, conn, object_id).await
            }
            Handled::Customer => records::record_customer(stripe, conn, object_id).await,
            Handled::NewCharge => {
                let topology = self.charges.topology();
                notify::announce_charge(stripe, conn, topology, event, object_id).await
            }
            Handled::NewRefund => {
                let topology = self.charges.topology();
                notify::announce_refund(stripe, conn, topology, event, object_id).await
            }
        };
        done.map(|()| None)
    }

    /// Records the failure in the inbox and picks retry or dead letter.
    async fn failed(
        &self,
        error: Error,
        attempt: u32,
        claimed: Option<kassa_store::EventTx>,
    ) -> Outcome {
        let dead = !error.is_transient() || attempt >= self.retries;
        let reason = match &error {
            Error::Stripe(stripe) => match stripe.request_id() {
                Some(request_id) => format!("{error} (Stripe Request-Id {request_id})"),
                None => error.to_string(),
            },
            _ => error.to_string(),
        };
        if let Some(claimed) = claimed {
            if let Err(store_error) = claimed.fail(&reason, dead).await {
                warn!(error = %store_error, "could not record the failure");
            }
        }
        if dead {
            warn!(%reason, transient = error.is_transient(), "event failed permanently; dead-lettering");
            metrics::counter!("kassa_events_total", "outcome" => "dead_lettered").increment(1);
            Outcome::DeadLetter(reason)
        } else {
            warn!(%reason, "event failed; will retry");
            metrics::counter!("kassa_events_total", "outcome" => "retried").increment(1);
            Outcome::Retry(reason)
        }
    }
}

impl MessageHandler for EventHandler {
    async fn handle(&self, message: Incoming) -> Outcome {
        let event: Event = match serde_json::from_slice(&message.body) {
            Ok(event) => event,
            Err(error) => {
                warn!(message_id = %message.message_id, %error, "not a Stripe event; dead-lettering");
                return Outcome::DeadLetter(format!("not a Stripe event: {error}"));
            }
        };
        let span = tracing::info_span!("stripe_event", event_id = %event.id, event_type = %event.type_, attempt = message.attempt);
        self.process(event, message.attempt).instrument(span).await
    }
}

#[cfg(test)]
mod tests {
    use super::handled_types;
    use std::collections::BTreeSet;

    /// The README's table of handled types (what merchants enable on their endpoint) is exactly
    /// the list the worker acts on.
    #[test]
    fn the_readme_lists_exactly_the_handled_types() {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("| event type Kassa handles |")
            .nth(1)
            .expect("the README's table of handled types");
        let mut listed = BTreeSet::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let first_column = row.split('|').nth(1).unwrap_or_default();
            let mut prefix = "";
            for name in first_column.split('`').skip(1).step_by(2) {
                if let Some(rest) = name.strip_prefix('.') {
                    listed.insert(format!("{prefix}.{rest}"));
                } else {
                    prefix = name.rsplit_once('.').map_or(name, |(head, _)| head);
                    listed.insert(name.to_owned());
                }
            }
        }
        let handled: BTreeSet<String> = handled_types().map(str::to_owned).collect();
        assert_eq!(listed, handled);
    }
}
