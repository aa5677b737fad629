//! Executing one charge job: record the attempt, look before sending again, send the
//! off-session PaymentIntent under the attempt's recorded key, and settle from what Stripe says
//! (see the module documentation of [`crate::charges`] for why each step is there).

use super::lookup::{find_attempt_intent, LookupError};
use super::ChargeExecutor;
use crate::keys;
use crate::Error;
use kassa_store::charge_jobs::ChargeJob;
use kassa_store::charges::{self as store_charges, ChargeStatus};
use kassa_store::{customers, own_writes};
use kassa_store::{ChargeRecord, OffsetDateTime, PgConnection, StoreError};
use kassa_stripe::objects::{PaymentIntent, PaymentIntentStatus};
use kassa_stripe::resources::CreatePaymentIntent;
use kassa_stripe::{IdempotencyKey, StripeError};
use serde_json::json;
use tracing::{info, warn};

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
    /// Runs `job` once: settles the attempt, or says why not yet. `last_rung`: no retry follows
    /// this run (an attempt older than 23 hours that Stripe cannot be asked about then goes to
    /// `needs_review` instead of failing the run).
    pub async fn execute(&self, job: ChargeJob, last_rung: bool) -> Result<(), Error> {
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
        Err(Error::Retry(
            "the attempt's key was replaced twice in one run; trying again later".into(),
        ))
    }

    /// Records the attempt's start (time, card, key) and commits it, unless it was started
    /// before.
    async fn start_attempt(&self, job: ChargeJob) -> Result<Start, Error> {
        let mut tx = self.store.begin().await?;
        let Some(charge) = store_charges::charge_for_update(&mut tx, job.charge_id).await? else {
            return Err(Error::Permanent(format!("no charge {}", job.charge_id)));
        };
        if !runnable(&charge, &job) {
            info!(status = %charge.status, current_attempt = charge.attempt, "nothing to do: charge already settled or moved on");
            return Ok(Start::NothingToDo);
        }
        if charge.attempt_started_at.is_some() {
            return Ok(Start::AlreadyStarted);
        }
        if self.customer_of_other_mode(&mut tx, &charge).await? {
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Start::NothingToDo);
        }
        let Some(card) = self.resolve_card(&mut tx, &charge).await? else {
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Start::NothingToDo);
        };
        let key = keys::charge_attempt(self.installation(), charge.id, charge.attempt, 0)?;
        store_charges::record_attempt_start(
            &mut tx,
            charge.id,
            charge.attempt,
            &card,
            key.as_str(),
            charge.livemode,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        info!(payment_method = %card, idempotency_key = %key, "attempt recorded; sending it");
        Ok(Start::Recorded)
    }

    /// Whether the charge's customer is one Kassa holds in the other mode than the charge's (a
    /// row recorded before charges were recorded in their own mode): an id never crosses modes,
    /// so nothing is sent with either key and the charge goes to `needs_review` (in `tx`, with
    /// its alert), saying why. A customer Kassa does not hold is left to Stripe, asked in the
    /// charge's own mode.
    async fn customer_of_other_mode(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
    ) -> Result<bool, Error> {
        let Some((customer, _)) =
            customers::customer_with_default_card(&mut *tx, &charge.customer_id).await?
        else {
            return Ok(false);
        };
        if customer.livemode == charge.livemode {
            return Ok(false);
        }
        let mode = |live: bool| if live { "live" } else { "test" };
        let reason = format!(
            "charge {} is a {}-mode charge but its customer {} is a {}-mode customer: test and live never mix, so nothing was sent; record the charge again in the customer's mode",
            charge.id,
            mode(charge.livemode),
            charge.customer_id,
            mode(customer.livemode),
        );
        warn!(%reason, "charge and customer of different modes; sent to review");
        if store_charges::mark_charge_needs_review(tx, charge.id, charge.attempt, &reason).await? {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            self.alert_with_id(
                tx,
                charge,
                "charge.needs_review",
                json!({"reason": reason}),
                format!("charge.needs_review:{}:{}:{now}", charge.id, charge.attempt),
            )
            .await?;
            metrics::counter!("kassa_charges_total", "outcome" => "needs_review").increment(1);
        }
        Ok(true)
    }

    /// The card the charge names, else the customer's default card now. `None`: the customer
    /// has none, and the charge was failed (in `tx`, with its alert).
    ///
    /// The default comes from Kassa's record when it holds one — a customer not deleted whose
    /// default card is recorded attached to it — which the `customer.updated` and
    /// `payment_method.*` webhooks keep true (each re-fetched from Stripe); only a customer
    /// without one is read from Stripe (`GET /v1/customers/{id}`), so a charge on the happy
    /// path costs one call, the create.
    async fn resolve_card(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
    ) -> Result<Option<String>, Error> {
        if let Some(pm) = &charge.payment_method_id {
            return Ok(Some(pm.clone()));
        }
        let recorded = customers::customer_with_default_card(&mut *tx, &charge.customer_id).await?;
        if let Some((customer, Some(card))) = recorded {
            if !customer.deleted && card.customer_id.as_deref() == Some(customer.id.as_str()) {
                return Ok(Some(card.id));
            }
        }
        let customer = self
            .stripe(charge.livemode)?
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
    ) -> Result<Round, Error> {
        let mut tx = self.store.begin().await?;
        let Some(charge) = store_charges::charge_for_update(&mut tx, job.charge_id).await? else {
            return Err(Error::Permanent(format!("no charge {}", job.charge_id)));
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
            match find_attempt_intent(self.stripe(charge.livemode)?, self.installation(), &charge)
                .await
            {
                Ok(Some(intent)) => {
                    metrics::counter!("kassa_charge_lookups_total", "outcome" => "found")
                        .increment(1);
                    info!(payment_intent = %intent.id, status = ?intent.status, "found the attempt's PaymentIntent on Stripe; settling from it");
                    self.settle_attempt(&mut tx, &charge, &intent).await?;
                    tx.commit().await.map_err(StoreError::from)?;
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
                        tx.commit().await.map_err(StoreError::from)?;
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
                    tx.commit().await.map_err(StoreError::from)?;
                    return Ok(Round::Done);
                }
            },
        };
        let round = self.send(&mut tx, &charge, &card).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(round)
    }

    /// Sends the attempt's create under its recorded key and records what Stripe answered.
    async fn send(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        card: &str,
    ) -> Result<Round, Error> {
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
                .map_err(|e| Error::Permanent(format!("recorded key: {e}")))?,
            None => keys::charge_attempt(installation, charge.id, charge.attempt, 0)?,
        };
        // Held until this transaction ends, so the create's echo waits for the settled charge.
        own_writes::lock_own_key(tx, key.as_str()).await?;
        match self
            .stripe(charge.livemode)?
            .payment_intents()
            .create(&params, &key)
            .await
        {
            Ok(intent) if self.names_attempt(charge, &intent) => {
                self.settle_attempt(tx, charge, &intent).await?;
                if intent.status == PaymentIntentStatus::Succeeded {
                    // Succeeded is final: the `payment_intent.succeeded` this create causes has
                    // nothing newer to say (see kassa_store::own_writes). Any other state can
                    // still change, so its events are re-fetched.
                    own_writes::record_own_write(tx, key.as_str(), &intent.id).await?;
                }
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
                self.settle_open_answer(tx, charge, &key, error).await
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

    /// Stripe's answer to the create left the outcome open (a time-out or network error, a 5xx, a
    /// 2xx that does not decode, an `idempotency_error`): Stripe may have made the PaymentIntent,
    /// so what it has decides, never this answer.
    async fn settle_open_answer(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        key: &IdempotencyKey,
        error: StripeError,
    ) -> Result<Round, Error> {
        let installation = self.installation();
        // Stripe may have made the PaymentIntent: what it has decides, never this answer.
        warn!(%error, timeout = error.is_timeout(), "Stripe's answer leaves the outcome open; looking the attempt up");
        match find_attempt_intent(self.stripe(charge.livemode)?, installation, charge).await {
            Ok(Some(intent)) => {
                metrics::counter!("kassa_charge_lookups_total", "outcome" => "found").increment(1);
                info!(payment_intent = %intent.id, "found the attempt's PaymentIntent on Stripe; settling from it");
                self.settle_attempt(tx, charge, &intent).await?;
                Ok(Round::Done)
            }
            Ok(None) if error.is_idempotency_mismatch() => {
                metrics::counter!("kassa_charge_lookups_total", "outcome" => "none").increment(1);
                // The key was first used with other parameters, and not for a
                // PaymentIntent of this attempt: it is someone else's key.
                warn!(idempotency_key = %key, "the key was used before for another request; replacing it");
                self.rekey_in(tx, charge).await
            }
            Ok(None) => {
                metrics::counter!("kassa_charge_lookups_total", "outcome" => "none").increment(1);
                Err(not_settled(error))
            }
            Err(lookup) => {
                metrics::counter!("kassa_charge_lookups_total", "outcome" => "failed").increment(1);
                warn!(error = %lookup, "the lookup failed too");
                Err(not_settled(error))
            }
        }
    }

    /// Whether `intent` is the PaymentIntent of the charge's current attempt.
    pub(super) fn names_attempt(&self, charge: &ChargeRecord, intent: &PaymentIntent) -> bool {
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
    ) -> Result<Round, Error> {
        let round = self.rekey_in(&mut tx, charge).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(round)
    }

    /// Records the next key generation of the attempt in `tx`; the caller commits before the
    /// new key is sent.
    async fn rekey_in(&self, tx: &mut PgConnection, charge: &ChargeRecord) -> Result<Round, Error> {
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
    ) -> Result<(), Error> {
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
    pub(super) async fn settle_attempt(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        intent: &PaymentIntent,
    ) -> Result<(), Error> {
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
}

/// A lookup that could not answer, as the job's error: Stripe's own error keeps its class
/// (a 5xx is retried, a 403 is not).
fn lookup_failed(error: LookupError) -> Error {
    match error {
        LookupError::Stripe(error) => Error::Stripe(error),
        other => Error::Permanent(other.to_string()),
    }
}

/// A create whose outcome is still open after the lookup: never failed, tried again later
/// (when the next run looks first).
fn not_settled(error: StripeError) -> Error {
    Error::Retry(format!(
        "Stripe's answer left the charge open ({error}) and Stripe shows no PaymentIntent for the attempt; looking again later"
    ))
}
