//! Back-office charges of saved cards: submitting a charge (a row, then a job through the outbox,
//! [`submit`]; from a CSV file's rows, [`csv_rows`]), executing it (an off-session PaymentIntent, [`execute`]), settling it from
//! `payment_intent.*` webhooks ([`settle`]), the 402 path that asks the customer to re-pay through
//! a new setup-mode Checkout Session ([`recheckout`]), finding an attempt's PaymentIntent on
//! Stripe before anything is sent again ([`lookup`]), and resolving a charge a person must look
//! at ([`review`]).
//!
//! # Money moves at most once
//!
//! Each attempt of a charge is one PaymentIntent, created under the Idempotency-Key recorded on
//! the charge (`kassa:{installation}:charge:{id}:{attempt}`, see [`crate::keys`]) with the
//! installation, charge id, attempt and reference in its metadata. The executor:
//!
//! 1. **records the attempt before sending it**: the start time, the card (the charge's, or the
//!    customer's default *now*, resolved once) and the key are committed before the first
//!    PaymentIntent create, so every later run of the attempt knows it may have reached Stripe;
//! 2. **looks before it sends again**: a run that finds the attempt started (a redelivery, a
//!    retry from the ladder, a dead letter replayed) first lists the customer's PaymentIntents
//!    created since the attempt started ([`lookup`]) and settles from the one whose
//!    metadata names the attempt; only when Stripe has none does it send the create;
//! 3. **never sends blind after 23 hours**: Stripe forgets a key 24 hours after its first use, so
//!    a key older than 23 hours is never sent again; after a lookup that found nothing the
//!    attempt goes out under a new key recorded on the row first, and when the lookup itself
//!    cannot answer, the charge goes to `needs_review` (alert `charge.needs_review`) and nothing
//!    is sent;
//! 4. **never fails a charge Stripe may have made**: an answer that leaves the outcome open (a
//!    time-out or network error, a 5xx, a 2xx that does not decode, a 400 `idempotency_error`)
//!    is followed by a lookup; the charge is settled from what Stripe has, or stays retryable;
//! 5. retries send the recorded card, never the customer's current default, so the same key
//!    always carries the same parameters.
//!
//! `payment_intent.*` webhooks settle a charge by the attempt its PaymentIntent's metadata names
//! ([`ChargeExecutor::settle`]), so a charge whose create answer was lost is settled even before
//! the executor runs again.
//!
//! # Locks around the commit before the POST
//!
//! The start is recorded in a transaction of its own that commits (and so releases the charge's
//! row lock) before the create is sent; the create then runs in a second transaction holding the
//! row lock (`SELECT … FOR UPDATE`) from the lookup through recording the outcome. A second
//! executor of the same charge therefore waits while the first talks to Stripe and then sees
//! its outcome. Between the two transactions another executor can take the lock first; that is
//! safe, because the row it reads already says the attempt started, so it looks Stripe up
//! before anything else, and whatever either sends goes under the same recorded key with the
//! same recorded parameters, which Stripe answers once for 24 hours (a concurrent duplicate
//! gets 409 and is retried). A key is replaced only under the row lock, with a guarded update
//! from the generation that was read, and only after a lookup found nothing; the new key is
//! committed before it is sent, so two executors can never send two different keys for one
//! attempt. Holding the lock across a commit is impossible in PostgreSQL (no autonomous
//! transactions); a session-level advisory lock would have needed a second pooled connection per
//! charge in flight for nothing the row lock does not already give.

pub mod execute;
pub mod lookup;
pub mod recheckout;
pub mod review;
pub mod settle;
pub mod submit;

pub use kassa_wire::charge_csv as csv_rows;

use crate::{notify, Error};
use kassa_broker::Topology;
use kassa_store::{ChargeRecord, JobRoute, PgConnection, Store};
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::{Client, Modes};
use serde_json::{json, Value};

/// The route of charge jobs in `topology` (its `kassa.charges` exchange and routing key), as the
/// outbox rows that carry the jobs name it.
pub fn job_route(topology: &Topology) -> JobRoute {
    let (exchange, routing_key) = topology.charge_job_route();
    JobRoute {
        exchange,
        routing_key: routing_key.to_owned(),
    }
}

/// A charge as Kassa shows it: the API's body and what `kassa charges show` prints.
pub fn charge_json(c: &ChargeRecord) -> Value {
    let amount_display = Currency::parse(&c.currency)
        .map(|cur| format_amount(c.amount, &cur))
        .ok();
    json!({
        "id": c.id,
        "reference": c.reference,
        "status": c.status.as_str(),
        "attempt": c.attempt,
        "customer": c.customer_id,
        "payment_method": c.payment_method_id,
        "amount": c.amount,
        "currency": c.currency,
        "amount_display": amount_display,
        "description": c.description,
        "metadata": c.metadata,
        "payment_intent": c.payment_intent_id,
        "decline_code": c.decline_code,
        "failure_code": c.failure_code,
        "failure_message": c.failure_message,
        "recheckout_url": c.recheckout_url,
        "recheckout_expires_at": c.recheckout_expires_at.map(|t| t.unix_timestamp()),
        "created_at": c.created_at.unix_timestamp(),
        "updated_at": c.updated_at.unix_timestamp(),
        "livemode": c.livemode,
        "attempt_started_at": c.attempt_started_at.map(|t| t.unix_timestamp()),
        "attempt_payment_method": c.attempt_payment_method_id,
        "attempt_idempotency_key": c.attempt_key,
        "attempt_key_started_at": c.attempt_key_started_at.map(|t| t.unix_timestamp()),
        "review_reason": c.review_reason,
    })
}

/// Where re-pay links send the customer back to.
#[derive(Debug, Clone)]
pub struct RecheckoutPages {
    /// `KASSA_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
}

/// Executes, settles, re-checks-out and resolves back-office charges over the Stripe clients of
/// the deployment's modes (each charge with the client of its own `livemode`), one database and
/// one topology (where alerts and jobs go).
#[derive(Debug, Clone)]
pub struct ChargeExecutor {
    modes: Modes,
    store: Store,
    topology: Topology,
    pages: RecheckoutPages,
}

impl ChargeExecutor {
    /// An executor over these clients (one per configured mode, or a single client), store and
    /// topology; re-pay links point at `pages`.
    pub fn new(
        stripe: impl Into<Modes>,
        store: Store,
        topology: Topology,
        pages: RecheckoutPages,
    ) -> Self {
        Self {
            modes: stripe.into(),
            store,
            topology,
            pages,
        }
    }

    /// This installation's id (read from the database at start), part of every key and of the
    /// metadata.
    pub fn installation_id(&self) -> &str {
        self.store.installation_id()
    }

    fn installation(&self) -> &str {
        self.store.installation_id()
    }

    /// The Stripe client of an object of `livemode` (a charge's row, a PaymentIntent's event):
    /// never the other mode's, so a mode without a key is a permanent error.
    fn stripe(&self, livemode: bool) -> Result<&Client, Error> {
        self.modes
            .for_livemode(livemode)
            .map_err(|e| Error::Permanent(e.to_string()))
    }

    /// The topology alerts and jobs go to.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Queues an alert about `charge` on `kassa.alerts` through the outbox, in the caller's
    /// transaction, with a message id that names the charge, attempt and reminder (a retried
    /// transaction queues it once).
    async fn alert(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        routing_key: &str,
        details: Value,
    ) -> Result<(), Error> {
        let reminder = details
            .get("reminder")
            .and_then(|r| r.as_i64())
            .unwrap_or(0);
        let message_id = format!("{routing_key}:{}:{}:{reminder}", charge.id, charge.attempt);
        self.alert_with_id(tx, charge, routing_key, details, message_id)
            .await
    }

    /// [`Self::alert`] with the caller's message id (for alerts that can recur in one attempt).
    async fn alert_with_id(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        routing_key: &str,
        details: Value,
        message_id: String,
    ) -> Result<(), Error> {
        notify::charge_alert(
            tx,
            &self.topology,
            self.installation(),
            charge,
            routing_key,
            details,
            message_id,
        )
        .await
    }
}
