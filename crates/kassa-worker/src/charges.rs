//! Back-office charges of saved cards: submitting a charge (a row, then a job through the outbox)
//! and executing it (an off-session PaymentIntent), with the 402 path that asks the customer to
//! re-pay through a new setup-mode Checkout Session.
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
//!    created since the attempt started ([`crate::lookup`]) and settles from the one whose
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

use crate::keys::{self, Owner};
use crate::lookup::{find_attempt_intent, LookupError};
use crate::mailer::decline_in_words;
use crate::HandlerError;
use kassa_broker::topology::CHARGE_ROUTING_KEY;
use kassa_broker::{Incoming, MessageHandler, Outcome, Topology};
use kassa_store::charge_jobs::{self, ChargeJob, JobRoute};
use kassa_store::charges::{self as store_charges, ChargeStatus, PaymentIntentOutcome};
use kassa_store::{
    checkout_sessions, outbox, ChargeRecord, CheckoutPurpose, CheckoutSessionRecord,
    OffsetDateTime, OutboxMessage, PgConnection, Store,
};
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::objects::{CheckoutMode, PaymentIntent, PaymentIntentStatus};
use kassa_stripe::resources::{CreateCheckoutSession, CreatePaymentIntent};
use kassa_stripe::{Client, IdempotencyKey, StripeError};
use serde_json::json;
use tracing::{info, warn, Instrument};

/// The route of charge jobs in `topology`.
pub fn job_route(topology: &Topology) -> JobRoute {
    JobRoute {
        exchange: topology.charges_exchange(),
        routing_key: CHARGE_ROUTING_KEY.to_owned(),
    }
}

/// Where re-pay links send the customer back to.
#[derive(Debug, Clone)]
pub struct RecheckoutPages {
    /// `KASSA_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
}

/// Executes charge jobs from `kassa.charges.execute`.
pub struct ChargeExecutor {
    stripe: Client,
    store: Store,
    topology: Topology,
    pages: RecheckoutPages,
    retries: u32,
}

/// What recording an attempt's start found.
enum Start {
    /// The charge is settled, moved on, or failed before anything was sent.
    NothingToDo,
    /// This run recorded the start just now: nothing of the attempt was sent before.
    Recorded,
    /// The attempt was started before: it may have reached Stripe.
    AlreadyStarted,
}

/// How one locked round of an attempt ended.
enum Round {
    /// Settled, or nothing (more) to do.
    Done,
    /// The attempt's key was replaced (and committed); send under the new key.
    Rekeyed,
}

/// Rounds of one run: the first, and at most two key replacements.
const MAX_ROUNDS: usize = 3;

fn runnable(charge: &ChargeRecord, job: &ChargeJob) -> bool {
    matches!(
        charge.status,
        ChargeStatus::Pending | ChargeStatus::Retrying
    ) && charge.attempt == job.attempt
}

impl ChargeExecutor {
    /// An executor over this client, store and topology; `retries` is the retry ladder's length.
    pub fn new(
        stripe: Client,
        store: Store,
        topology: Topology,
        pages: RecheckoutPages,
        retries: u32,
    ) -> Self {
        Self {
            stripe,
            store,
            topology,
            pages,
            retries,
        }
    }

    /// This installation's id, part of every key and of the metadata.
    fn installation(&self) -> &str {
        self.store.installation_id()
    }

    /// This installation's id (read from the database at start).
    pub fn installation_id(&self) -> &str {
        self.installation()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn stripe(&self) -> &Client {
        &self.stripe
    }

    /// Queues an alert about `charge` (see [`Self::alert`]).
    pub(crate) async fn announce(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        routing_key: &str,
        details: serde_json::Value,
    ) -> Result<(), HandlerError> {
        self.alert(tx, charge, routing_key, details).await
    }

    async fn execute(&self, job: ChargeJob, ladder_attempt: u32) -> Outcome {
        let last_rung = ladder_attempt >= self.retries;
        match self.try_execute(job, last_rung).await {
            Ok(()) => Outcome::Done,
            Err(error) if error.is_transient() && !last_rung => {
                warn!(%error, "charge attempt not settled; will look again");
                Outcome::Retry(error.to_string())
            }
            Err(error) => {
                warn!(%error, "charge job failed permanently");
                Outcome::DeadLetter(error.to_string())
            }
        }
    }

    async fn try_execute(&self, job: ChargeJob, last_rung: bool) -> Result<(), HandlerError> {
        let mut sent_before = match self.start_attempt(job).await? {
            Start::NothingToDo => return Ok(()),
            Start::Recorded => false,
            Start::AlreadyStarted => true,
        };
        for _ in 0..MAX_ROUNDS {
            match self.round(job, sent_before, last_rung).await? {
                Round::Done => return Ok(()),
                // The new key was never sent: no lookup needed before sending it (a racing
                // executor that sends it first is answered once by Stripe).
                Round::Rekeyed => sent_before = false,
            }
        }
        Err(HandlerError::Retry(
            "the attempt's key was replaced twice in one run; trying again later".into(),
        ))
    }

    /// Records the attempt's start (time, card, key) and commits it, unless it was started
    /// before.
    async fn start_attempt(&self, job: ChargeJob) -> Result<Start, HandlerError> {
        let mut tx = self.store.begin().await?;
        let Some(charge) = store_charges::charge_for_update(&mut tx, job.charge_id).await? else {
            return Err(HandlerError::Permanent(format!(
                "no charge {}",
                job.charge_id
            )));
        };
        if !runnable(&charge, &job) {
            info!(status = %charge.status, current_attempt = charge.attempt, "nothing to do: charge already settled or moved on");
            return Ok(Start::NothingToDo);
        }
        if charge.attempt_started_at.is_some() {
            return Ok(Start::AlreadyStarted);
        }
        let Some(card) = self.resolve_card(&mut tx, &charge).await? else {
            tx.commit().await.map_err(kassa_store::StoreError::from)?;
            return Ok(Start::NothingToDo);
        };
        let key = keys::charge_attempt(self.installation(), charge.id, charge.attempt, 0)?;
        store_charges::record_attempt_start(
            &mut tx,
            charge.id,
            charge.attempt,
            &card,
            key.as_str(),
            self.stripe.mode().is_live(),
        )
        .await?;
        tx.commit().await.map_err(kassa_store::StoreError::from)?;
        info!(payment_method = %card, idempotency_key = %key, "attempt recorded; sending it");
        Ok(Start::Recorded)
    }

    /// The card the charge names, else the customer's default card now. `None`: the customer
    /// has none, and the charge was failed (in `tx`, with its alert).
    async fn resolve_card(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
    ) -> Result<Option<String>, HandlerError> {
        if let Some(pm) = &charge.payment_method_id {
            return Ok(Some(pm.clone()));
        }
        let customer = self
            .stripe
            .customers()
            .retrieve(&charge.customer_id, &[])
            .await?;
        if let Some(pm) = customer.invoice_settings.default_payment_method {
            return Ok(Some(pm.id().to_owned()));
        }
        let message = "the customer has no default payment method";
        store_charges::mark_charge_failed(tx, charge.id, "no_payment_method", message).await?;
        self.alert(tx, charge, "charge.failed", json!({"reason": message}))
            .await?;
        metrics::counter!("kassa_charges_total", "outcome" => "failed").increment(1);
        Ok(None)
    }

    /// One round under the charge's row lock: look the attempt up when it may have been sent
    /// before (or its key is too old to send again), then send it, then record the outcome.
    async fn round(
        &self,
        job: ChargeJob,
        sent_before: bool,
        last_rung: bool,
    ) -> Result<Round, HandlerError> {
        let mut tx = self.store.begin().await?;
        let Some(charge) = store_charges::charge_for_update(&mut tx, job.charge_id).await? else {
            return Err(HandlerError::Permanent(format!(
                "no charge {}",
                job.charge_id
            )));
        };
        if !runnable(&charge, &job) || charge.attempt_started_at.is_none() {
            info!(status = %charge.status, current_attempt = charge.attempt, "nothing to do: charge settled or moved on meanwhile");
            return Ok(Round::Done);
        }
        let key_age = charge.attempt_key_started_at.map_or(i64::MAX, |t| {
            (OffsetDateTime::now_utc() - t).whole_seconds()
        });
        let stale = key_age >= keys::KEY_REUSE_LIMIT_SECS;
        if sent_before || stale {
            match find_attempt_intent(&self.stripe, self.installation(), &charge).await {
                Ok(Some(intent)) => {
                    metrics::counter!("kassa_charge_lookups_total", "outcome" => "found")
                        .increment(1);
                    info!(payment_intent = %intent.id, status = ?intent.status, "found the attempt's PaymentIntent on Stripe; settling from it");
                    self.settle_attempt(&mut tx, &charge, &intent).await?;
                    tx.commit().await.map_err(kassa_store::StoreError::from)?;
                    return Ok(Round::Done);
                }
                Ok(None) => {
                    metrics::counter!("kassa_charge_lookups_total", "outcome" => "none")
                        .increment(1);
                    if stale {
                        info!(key_age_secs = key_age, "Stripe has no PaymentIntent for this attempt and its key is too old to send again: a new key");
                        return self.rekey(tx, &charge).await;
                    }
                    info!("Stripe has no PaymentIntent for this attempt yet: sending it under the same key");
                }
                Err(error) => {
                    metrics::counter!("kassa_charge_lookups_total", "outcome" => "failed")
                        .increment(1);
                    if stale && (!error.is_transient() || last_rung) {
                        self.needs_review(&mut tx, &charge, key_age, &error).await?;
                        tx.commit().await.map_err(kassa_store::StoreError::from)?;
                        return Ok(Round::Done);
                    }
                    return Err(lookup_failed(error));
                }
            }
        }
        let card = match &charge.attempt_payment_method_id {
            Some(card) => card.clone(),
            // Started before cards were recorded with the attempt: resolved once, now.
            None => match self.resolve_card(&mut tx, &charge).await? {
                Some(card) => {
                    store_charges::record_attempt_card(&mut tx, charge.id, charge.attempt, &card)
                        .await?;
                    card
                }
                None => {
                    tx.commit().await.map_err(kassa_store::StoreError::from)?;
                    return Ok(Round::Done);
                }
            },
        };
        let round = self.send(&mut tx, &charge, &card).await?;
        tx.commit().await.map_err(kassa_store::StoreError::from)?;
        Ok(round)
    }

    /// Sends the attempt's create under its recorded key and records what Stripe answered.
    async fn send(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        card: &str,
    ) -> Result<Round, HandlerError> {
        let installation = self.installation();
        let params = CreatePaymentIntent {
            amount: charge.amount,
            currency: charge.currency.clone(),
            customer: Some(charge.customer_id.clone()),
            payment_method: Some(card.to_owned()),
            off_session: Some(true),
            confirm: Some(true),
            description: charge.description.clone(),
            metadata: Some(keys::charge_metadata(
                installation,
                charge.id,
                charge.attempt,
                &charge.reference,
            )),
            ..Default::default()
        };
        let key = match &charge.attempt_key {
            Some(key) => IdempotencyKey::new(key.clone())
                .map_err(|e| HandlerError::Permanent(format!("recorded key: {e}")))?,
            None => keys::charge_attempt(installation, charge.id, charge.attempt, 0)?,
        };
        match self.stripe.payment_intents().create(&params, &key).await {
            Ok(intent) if self.names_attempt(charge, &intent) => {
                self.settle_attempt(tx, charge, &intent).await?;
                Ok(Round::Done)
            }
            Ok(intent) => {
                // Stripe answered this key with someone else's PaymentIntent: the key was used
                // before for another object (a database restored from a backup reuses charge
                // ids). Nothing of this attempt exists under it; a new key, then send.
                warn!(payment_intent = %intent.id, idempotency_key = %key, "the key answered another PaymentIntent; replacing it");
                self.rekey_in(tx, charge).await
            }
            Err(StripeError::Card {
                code,
                decline_code,
                message,
                payment_intent,
                ..
            }) => {
                // Stripe: an off-session decline or authentication_required is HTTP 402 with the
                // PaymentIntent in requires_payment_method (docs: off-session payments).
                let code = code.unwrap_or_else(|| "card_declined".into());
                let intent = payment_intent.map(|pi| pi.id);
                self.decline(
                    tx,
                    charge,
                    intent.as_deref(),
                    decline_code.as_deref(),
                    &code,
                    &message,
                )
                .await?;
                Ok(Round::Done)
            }
            Err(error) if error.outcome_unknown() => {
                // Stripe may have made the PaymentIntent: what it has decides, never this answer.
                warn!(%error, timeout = error.is_timeout(), "Stripe's answer leaves the outcome open; looking the attempt up");
                match find_attempt_intent(&self.stripe, installation, charge).await {
                    Ok(Some(intent)) => {
                        metrics::counter!("kassa_charge_lookups_total", "outcome" => "found")
                            .increment(1);
                        info!(payment_intent = %intent.id, "found the attempt's PaymentIntent on Stripe; settling from it");
                        self.settle_attempt(tx, charge, &intent).await?;
                        Ok(Round::Done)
                    }
                    Ok(None) if error.is_idempotency_mismatch() => {
                        metrics::counter!("kassa_charge_lookups_total", "outcome" => "none")
                            .increment(1);
                        // The key was first used with other parameters, and not for a
                        // PaymentIntent of this attempt: it is someone else's key.
                        warn!(idempotency_key = %key, "the key was used before for another request; replacing it");
                        self.rekey_in(tx, charge).await
                    }
                    Ok(None) => {
                        metrics::counter!("kassa_charge_lookups_total", "outcome" => "none")
                            .increment(1);
                        Err(not_settled(error))
                    }
                    Err(lookup) => {
                        metrics::counter!("kassa_charge_lookups_total", "outcome" => "failed")
                            .increment(1);
                        warn!(error = %lookup, "the lookup failed too");
                        Err(not_settled(error))
                    }
                }
            }
            Err(error) if error.is_transient() => Err(error.into()),
            Err(error) => {
                // A refusal before Stripe acted (a 4xx other than 402 and idempotency errors).
                let (code, message) = match &error {
                    StripeError::InvalidRequest { code, message, .. } => (
                        code.clone().unwrap_or_else(|| "invalid_request".into()),
                        message.clone(),
                    ),
                    other => ("stripe_error".to_owned(), other.to_string()),
                };
                store_charges::mark_charge_failed(tx, charge.id, &code, &message).await?;
                self.alert(
                    tx,
                    charge,
                    "charge.failed",
                    json!({"code": code, "reason": message}),
                )
                .await?;
                metrics::counter!("kassa_charges_total", "outcome" => "failed").increment(1);
                Ok(Round::Done)
            }
        }
    }

    /// Whether `intent` is the PaymentIntent of the charge's current attempt.
    fn names_attempt(&self, charge: &ChargeRecord, intent: &PaymentIntent) -> bool {
        keys::intent_names_attempt(
            self.installation(),
            &intent.metadata,
            charge.id,
            charge.attempt,
            &charge.reference,
        )
    }

    /// Replaces the attempt's key (in `tx`, committed by it) after a lookup found nothing.
    async fn rekey(
        &self,
        mut tx: kassa_store::Transaction,
        charge: &ChargeRecord,
    ) -> Result<Round, HandlerError> {
        let round = self.rekey_in(&mut tx, charge).await?;
        tx.commit().await.map_err(kassa_store::StoreError::from)?;
        Ok(round)
    }

    /// Records the next key generation of the attempt in `tx`; the caller commits before the
    /// new key is sent.
    async fn rekey_in(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
    ) -> Result<Round, HandlerError> {
        let next = charge.attempt_key_generation + 1;
        let key = keys::charge_attempt(self.installation(), charge.id, charge.attempt, next)?;
        let replaced = store_charges::rekey_attempt(
            tx,
            charge.id,
            charge.attempt,
            charge.attempt_key_generation,
            key.as_str(),
        )
        .await?;
        if replaced {
            info!(idempotency_key = %key, generation = next, "new key recorded for the attempt");
        }
        // Not replaced: another run replaced it first; the next round reads its key.
        Ok(Round::Rekeyed)
    }

    /// An attempt older than 23 hours that Stripe cannot be asked about: a person decides.
    async fn needs_review(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        key_age: i64,
        error: &LookupError,
    ) -> Result<(), HandlerError> {
        let reason = format!(
            "attempt {} was first sent {} h ago under {} and Stripe could not be asked whether it was charged ({error}); Stripe has forgotten that key, so Kassa will not send it again",
            charge.attempt,
            key_age / 3600,
            charge.attempt_key.as_deref().unwrap_or("(no key)"),
        );
        if store_charges::mark_charge_needs_review(tx, charge.id, charge.attempt, &reason).await? {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            self.alert_with_id(
                tx,
                charge,
                "charge.needs_review",
                json!({"reason": reason, "idempotency_key": charge.attempt_key}),
                format!("charge.needs_review:{}:{}:{now}", charge.id, charge.attempt),
            )
            .await?;
            metrics::counter!("kassa_charges_total", "outcome" => "needs_review").increment(1);
            warn!(%reason, "charge needs review");
        }
        Ok(())
    }

    /// Records what the attempt's PaymentIntent says: paid, on its way, declined (the re-pay
    /// path), cancelled, or something Kassa does not act on alone (`needs_review`).
    async fn settle_attempt(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        intent: &PaymentIntent,
    ) -> Result<(), HandlerError> {
        match intent.status {
            PaymentIntentStatus::Succeeded => {
                if store_charges::mark_charge_succeeded(tx, charge.id, charge.attempt, &intent.id)
                    .await?
                {
                    info!(payment_intent = %intent.id, "charge succeeded");
                    metrics::counter!("kassa_charges_total", "outcome" => "succeeded").increment(1);
                }
            }
            PaymentIntentStatus::Processing => {
                // payment_intent.succeeded / payment_failed webhooks settle it later.
                if store_charges::mark_charge_processing(tx, charge.id, charge.attempt, &intent.id)
                    .await?
                {
                    metrics::counter!("kassa_charges_total", "outcome" => "processing")
                        .increment(1);
                }
            }
            PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::RequiresAction => {
                // Stripe: a declined off-session confirmation leaves the PaymentIntent in
                // requires_payment_method with last_payment_error; one that needs the customer
                // (3-D Secure) cannot be completed off-session either (docs: off-session
                // payments, authentication_required).
                let error = intent.last_payment_error.as_ref();
                let code = error.and_then(|e| e.code.clone()).unwrap_or_else(|| {
                    if intent.status == PaymentIntentStatus::RequiresAction {
                        "authentication_required".into()
                    } else {
                        "card_declined".into()
                    }
                });
                let message = error
                    .and_then(|e| e.message.clone())
                    .unwrap_or_else(|| format!("the PaymentIntent is {:?}", intent.status));
                let decline_code = error.and_then(|e| e.decline_code.clone());
                self.decline(
                    tx,
                    charge,
                    Some(&intent.id),
                    decline_code.as_deref(),
                    &code,
                    &message,
                )
                .await?;
            }
            PaymentIntentStatus::Canceled => {
                let message = format!("the PaymentIntent {} was cancelled", intent.id);
                if store_charges::mark_charge_failed(
                    tx,
                    charge.id,
                    "payment_intent_canceled",
                    &message,
                )
                .await?
                {
                    self.alert(
                        tx,
                        charge,
                        "charge.failed",
                        json!({"code": "payment_intent_canceled", "reason": message}),
                    )
                    .await?;
                    metrics::counter!("kassa_charges_total", "outcome" => "failed").increment(1);
                }
            }
            status => {
                let reason = format!(
                    "the attempt's PaymentIntent {} is {status:?}: neither paid nor declined; check it on Stripe",
                    intent.id
                );
                if store_charges::mark_charge_needs_review(tx, charge.id, charge.attempt, &reason)
                    .await?
                {
                    let now = OffsetDateTime::now_utc().unix_timestamp();
                    self.alert_with_id(
                        tx,
                        charge,
                        "charge.needs_review",
                        json!({"reason": reason, "payment_intent": intent.id}),
                        format!("charge.needs_review:{}:{}:{now}", charge.id, charge.attempt),
                    )
                    .await?;
                    metrics::counter!("kassa_charges_total", "outcome" => "needs_review")
                        .increment(1);
                }
            }
        }
        Ok(())
    }

    /// A decline: on the first attempt the customer gets a re-pay link; the retry after a
    /// re-checkout is the last one, so a second decline fails the charge.
    async fn decline(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        payment_intent: Option<&str>,
        decline_code: Option<&str>,
        code: &str,
        message: &str,
    ) -> Result<(), HandlerError> {
        if charge.attempt >= 2 {
            store_charges::mark_charge_failed(tx, charge.id, code, message).await?;
            self.alert(
                tx,
                charge,
                "charge.failed",
                json!({"code": code, "decline_code": decline_code, "reason": message}),
            )
            .await?;
            metrics::counter!("kassa_charges_total", "outcome" => "failed").increment(1);
            return Ok(());
        }
        store_charges::mark_charge_requires_recheckout(
            tx,
            charge.id,
            charge.attempt,
            payment_intent,
            decline_code,
            code,
            message,
        )
        .await?;
        self.request_repay(tx, charge, 0, decline_code.unwrap_or(code))
            .await?;
        metrics::counter!("kassa_charges_total", "outcome" => "requires_recheckout").increment(1);
        Ok(())
    }

    /// Creates the setup-mode Checkout Session that collects a new card, records it, and
    /// announces `customer.repay_requested` (reminder `n` > 0 after an expired link).
    pub async fn request_repay(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        reminder: i32,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let metadata = keys::recheckout_metadata(self.installation(), charge.id);
        let public = self.pages.public_url.trim_end_matches('/');
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            customer: Some(charge.customer_id.clone()),
            currency: Some(charge.currency.clone()),
            success_url: Some(format!(
                "{public}/success?session_id={{CHECKOUT_SESSION_ID}}"
            )),
            cancel_url: Some(format!("{public}/cancel")),
            metadata: Some(metadata),
            ..Default::default()
        };
        let key = keys::recheckout(self.installation(), charge.id, charge.attempt, reminder)?;
        let session = self
            .stripe
            .checkout_sessions()
            .create(&params, &key)
            .await?;
        let url = session.url.clone().unwrap_or_default();
        let expires_at = kassa_store::OffsetDateTime::from_unix_timestamp(session.expires_at)
            .map_err(|e| HandlerError::Permanent(format!("session expiry: {e}")))?;
        store_charges::set_recheckout_session(
            tx,
            charge.id,
            &session.id,
            &url,
            expires_at,
            reminder,
        )
        .await?;
        checkout_sessions::upsert_checkout_session(
            tx,
            &CheckoutSessionRecord {
                id: session.id.clone(),
                mode: "setup".into(),
                status: "open".into(),
                livemode: session.livemode,
                customer_id: Some(charge.customer_id.clone()),
                purpose: CheckoutPurpose::Recheckout,
                charge_id: Some(charge.id),
                setup_intent_id: session.setup_intent.as_ref().map(|s| s.id().to_owned()),
                payment_intent_id: None,
                payment_method_id: None,
                url: session.url.clone(),
                expires_at: Some(expires_at),
                completed_at: None,
            },
        )
        .await?;
        let customer = self
            .stripe
            .customers()
            .retrieve(&charge.customer_id, &[])
            .await?;
        let amount_display = Currency::parse(&charge.currency)
            .map(|currency| format_amount(charge.amount, &currency))
            .unwrap_or_else(|_| format!("{} {}", charge.amount, charge.currency.to_uppercase()));
        let details = json!({
            "email": customer.email,
            "customer_name": customer.name,
            "amount_display": amount_display,
            "reason": reason,
            "reason_in_words": decline_in_words(reason),
            "url": url,
            "expires_at": session.expires_at,
            "reminder": reminder,
            "checkout_session": session.id,
        });
        self.alert(tx, charge, "customer.repay_requested", details)
            .await?;
        info!(checkout_session = %session.id, reminder, "re-pay link created");
        Ok(())
    }

    /// A re-checkout session completed and its card is the default now: the charge goes again,
    /// once, as the next attempt, on that card (queued in the caller's transaction, with the
    /// card's records). Only the charge whose current re-pay session is `session_id` is retried:
    /// a session of another installation (whose charge ids overlap ours) or an old link names
    /// none.
    pub async fn retry_after_recheckout(
        &self,
        tx: &mut PgConnection,
        charge_id: i64,
        session_id: &str,
        payment_method_id: &str,
    ) -> Result<(), HandlerError> {
        let Some(charge) = store_charges::charge_for_update(tx, charge_id).await? else {
            warn!(
                charge_id,
                "re-checkout for an unknown charge; card saved, nothing to retry"
            );
            return Ok(());
        };
        if charge.status != ChargeStatus::RequiresRecheckout {
            return Ok(()); // already retried (a duplicate event) or settled
        }
        if charge.recheckout_session_id.as_deref() != Some(session_id) {
            warn!(
                charge_id,
                checkout_session = session_id,
                current = charge.recheckout_session_id.as_deref().unwrap_or("-"),
                "a completed re-pay session that is not this charge's current one; nothing retried"
            );
            return Ok(());
        }
        let next = charge.attempt + 1;
        if store_charges::mark_charge_retrying(tx, charge.id, next, payment_method_id).await? {
            let job = ChargeJob {
                charge_id: charge.id,
                attempt: next,
            };
            charge_jobs::enqueue_job(tx, &job_route(&self.topology), job).await?;
            info!(
                charge_id,
                attempt = next,
                payment_method = payment_method_id,
                "new card saved: charge queued again on it"
            );
        }
        Ok(())
    }

    /// A re-pay link expired: the first time the customer gets a reminder with a new link, the
    /// second time the charge fails and `charge.failed` is announced.
    pub async fn recheckout_expired(
        &self,
        tx: &mut PgConnection,
        session_id: &str,
    ) -> Result<(), HandlerError> {
        let Some(charge) =
            store_charges::charge_by_recheckout_session(&mut *tx, session_id).await?
        else {
            return Ok(()); // not a re-pay link, or an older link already replaced
        };
        let Some(charge) = store_charges::charge_for_update(tx, charge.id).await? else {
            return Ok(());
        };
        let current = charge.recheckout_session_id.as_deref() == Some(session_id);
        if charge.status != ChargeStatus::RequiresRecheckout || !current {
            return Ok(());
        }
        if charge.reminders_sent == 0 {
            let reason = charge
                .decline_code
                .clone()
                .or(charge.failure_code.clone())
                .unwrap_or_default();
            self.request_repay(tx, &charge, 1, &reason).await
        } else {
            let message = "the customer did not complete the re-pay link, nor the reminder";
            store_charges::mark_charge_failed(tx, charge.id, "recheckout_expired", message).await?;
            self.alert(
                tx,
                &charge,
                "charge.failed",
                json!({"code": "recheckout_expired", "reason": message}),
            )
            .await?;
            metrics::counter!("kassa_charges_total", "outcome" => "failed").increment(1);
            Ok(())
        }
    }

    /// payment_intent.* webhooks: the charge attempt the PaymentIntent's metadata names (this
    /// installation's, the charge id, the attempt and the reference) is settled from the
    /// PaymentIntent as Stripe has it now, even when the executor never saw Stripe's answer to
    /// its create; a charge `processing` under an earlier PaymentIntent (made before metadata
    /// named attempts) is found by its PaymentIntent. Returns whether the PaymentIntent belongs
    /// to a back-office charge (of any installation): those are not merchant payments.
    pub async fn settle(
        &self,
        tx: &mut PgConnection,
        payment_intent_id: &str,
    ) -> Result<bool, HandlerError> {
        let intent = self
            .stripe
            .payment_intents()
            .retrieve(payment_intent_id, &[])
            .await?;
        let installation = self.installation();
        match keys::owner(installation, &intent.metadata) {
            // Another installation's charge: its ids are not ours, it never touches ours.
            Owner::Other => return Ok(intent.metadata.contains_key(keys::CHARGE_ID_METADATA)),
            Owner::Ours => {
                if let Some((charge_id, attempt)) = keys::attempt_of(installation, &intent.metadata)
                {
                    let Some(charge) = store_charges::charge_for_update(tx, charge_id).await?
                    else {
                        return Ok(true);
                    };
                    let open = matches!(
                        charge.status,
                        ChargeStatus::Pending | ChargeStatus::Retrying | ChargeStatus::NeedsReview
                    );
                    if open && charge.attempt == attempt && self.names_attempt(&charge, &intent) {
                        info!(charge_id, attempt, payment_intent = %intent.id, "charge settled by webhook");
                        self.settle_attempt(tx, &charge, &intent).await?;
                        return Ok(true);
                    }
                    if charge.status != ChargeStatus::Processing {
                        return Ok(true);
                    }
                }
            }
            Owner::Unmarked => {}
        }
        let outcome = match intent.status {
            PaymentIntentStatus::Succeeded => PaymentIntentOutcome::Succeeded,
            PaymentIntentStatus::Processing => PaymentIntentOutcome::Processing,
            PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
                let error = intent.last_payment_error.as_ref();
                PaymentIntentOutcome::Failed {
                    code: error
                        .and_then(|e| e.code.clone())
                        .unwrap_or_else(|| "payment_failed".into()),
                    message: error
                        .and_then(|e| e.message.clone())
                        .unwrap_or_else(|| "the payment failed".into()),
                }
            }
            _ => return Ok(intent.metadata.contains_key(keys::CHARGE_ID_METADATA)),
        };
        let settled =
            store_charges::settle_charge_by_payment_intent(tx, payment_intent_id, &outcome).await?;
        let ours = settled.is_some() || intent.metadata.contains_key(keys::CHARGE_ID_METADATA);
        if let Some(charge) = settled {
            info!(charge_id = charge.id, status = %charge.status, "charge settled by webhook");
            if charge.status == ChargeStatus::Failed {
                self.alert(
                    tx,
                    &charge,
                    "charge.failed",
                    json!({"code": charge.failure_code, "reason": charge.failure_message}),
                )
                .await?;
            }
        }
        Ok(ours)
    }

    /// The topology alerts and jobs go to.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Queues an alert on `kassa.alerts` through the outbox, in the caller's transaction, with
    /// a message id that names the charge, attempt and reminder (a retried transaction queues it
    /// once).
    async fn alert(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        routing_key: &str,
        details: serde_json::Value,
    ) -> Result<(), HandlerError> {
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
        details: serde_json::Value,
        message_id: String,
    ) -> Result<(), HandlerError> {
        let mut body = json!({
            "charge_id": charge.id,
            "reference": charge.reference,
            "customer": charge.customer_id,
            "amount": charge.amount,
            "currency": charge.currency,
            "attempt": charge.attempt,
            "installation": self.installation(),
        });
        if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
            body.extend(details.clone());
        }
        let message = OutboxMessage {
            exchange: self.topology.alerts_exchange(),
            routing_key: routing_key.to_owned(),
            message_id,
            message_type: routing_key.to_owned(),
            body,
            headers: json!({}),
        };
        outbox::enqueue(tx, &message).await?;
        Ok(())
    }
}

/// A lookup that could not answer, as the job's error: Stripe's own error keeps its class
/// (a 5xx is retried, a 403 is not).
fn lookup_failed(error: LookupError) -> HandlerError {
    match error {
        LookupError::Stripe(error) => HandlerError::Stripe(error),
        other => HandlerError::Permanent(other.to_string()),
    }
}

/// A create whose outcome is still open after the lookup: never failed, tried again later
/// (when the next run looks first).
fn not_settled(error: StripeError) -> HandlerError {
    HandlerError::Retry(format!(
        "Stripe's answer left the charge open ({error}) and Stripe shows no PaymentIntent for the attempt; looking again later"
    ))
}

impl MessageHandler for ChargeExecutor {
    async fn handle(&self, message: Incoming) -> Outcome {
        let job: ChargeJob = match serde_json::from_slice(&message.body) {
            Ok(job) => job,
            Err(error) => return Outcome::DeadLetter(format!("not a charge job: {error}")),
        };
        let span = tracing::info_span!("charge", charge_id = job.charge_id, attempt = job.attempt);
        self.execute(job, message.attempt).instrument(span).await
    }
}
