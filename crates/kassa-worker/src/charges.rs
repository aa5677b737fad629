//! Back-office charges of saved cards: submitting a charge (a row, then a job through the outbox)
//! and executing it (an off-session PaymentIntent), with the 402 path that asks the customer to
//! re-pay through a new setup-mode Checkout Session.
//!
//! Every PaymentIntent is created with `Idempotency-Key: kassa:charge:{id}:{attempt}`, and the
//! charge row is locked (`SELECT … FOR UPDATE`) while its attempt runs, so a job delivered twice,
//! concurrently or after a crash, creates at most one PaymentIntent per attempt.

use crate::mailer::decline_in_words;
use crate::setup::CHARGE_ID_METADATA;
use crate::HandlerError;
use kassa_broker::topology::CHARGE_ROUTING_KEY;
use kassa_broker::{Incoming, MessageHandler, Outcome, Topology};
use kassa_store::charge_jobs::{self, ChargeJob, JobRoute};
use kassa_store::charges::{self as store_charges, ChargeStatus, PaymentIntentOutcome};
use kassa_store::{
    checkout_sessions, outbox, ChargeRecord, CheckoutPurpose, CheckoutSessionRecord, OutboxMessage,
    PgConnection, Store,
};
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::objects::{CheckoutMode, PaymentIntentStatus};
use kassa_stripe::resources::{CreateCheckoutSession, CreatePaymentIntent};
use kassa_stripe::{Client, IdempotencyKey, Metadata, StripeError};
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

    async fn execute(&self, job: ChargeJob, ladder_attempt: u32) -> Outcome {
        match self.try_execute(job).await {
            Ok(()) => Outcome::Done,
            Err(error) if error.is_transient() && ladder_attempt < self.retries => {
                warn!(%error, "charge attempt failed; will retry with the same key");
                Outcome::Retry(error.to_string())
            }
            Err(error) => {
                warn!(%error, "charge job failed permanently");
                Outcome::DeadLetter(error.to_string())
            }
        }
    }

    async fn try_execute(&self, job: ChargeJob) -> Result<(), HandlerError> {
        let mut tx = self.store.begin().await?;
        let Some(charge) = store_charges::charge_for_update(&mut tx, job.charge_id).await? else {
            return Err(HandlerError::Permanent(format!(
                "no charge {}",
                job.charge_id
            )));
        };
        let runnable = matches!(
            charge.status,
            ChargeStatus::Pending | ChargeStatus::Retrying
        );
        if !runnable || charge.attempt != job.attempt {
            info!(status = %charge.status, current_attempt = charge.attempt, "nothing to do: charge already settled or moved on");
            return Ok(());
        }
        let payment_method = match &charge.payment_method_id {
            Some(pm) => pm.clone(),
            None => {
                let customer = self
                    .stripe
                    .customers()
                    .retrieve(&charge.customer_id, &[])
                    .await?;
                match customer.invoice_settings.default_payment_method {
                    Some(pm) => pm.id().to_owned(),
                    None => {
                        let message = "the customer has no default payment method";
                        store_charges::mark_charge_failed(
                            &mut tx,
                            charge.id,
                            "no_payment_method",
                            message,
                        )
                        .await?;
                        self.alert(
                            &mut tx,
                            &charge,
                            "charge.failed",
                            json!({"reason": message}),
                        )
                        .await?;
                        tx.commit().await.map_err(kassa_store::StoreError::from)?;
                        return Ok(());
                    }
                }
            }
        };
        let mut metadata = Metadata::new();
        metadata.insert(CHARGE_ID_METADATA.into(), charge.id.to_string());
        metadata.insert("kassa_reference".into(), charge.reference.clone());
        let params = CreatePaymentIntent {
            amount: charge.amount,
            currency: charge.currency.clone(),
            customer: Some(charge.customer_id.clone()),
            payment_method: Some(payment_method),
            off_session: Some(true),
            confirm: Some(true),
            description: charge.description.clone(),
            metadata: Some(metadata),
            ..Default::default()
        };
        let key = key(format!("kassa:charge:{}:{}", charge.id, charge.attempt))?;
        match self.stripe.payment_intents().create(&params, &key).await {
            Ok(intent) => match intent.status {
                PaymentIntentStatus::Succeeded => {
                    store_charges::mark_charge_succeeded(
                        &mut tx,
                        charge.id,
                        charge.attempt,
                        &intent.id,
                    )
                    .await?;
                    info!(payment_intent = %intent.id, "charge succeeded");
                    metrics::counter!("kassa_charges_total", "outcome" => "succeeded").increment(1);
                }
                PaymentIntentStatus::Processing => {
                    // payment_intent.succeeded / payment_failed webhooks settle it later.
                    store_charges::mark_charge_processing(
                        &mut tx,
                        charge.id,
                        charge.attempt,
                        &intent.id,
                    )
                    .await?;
                    metrics::counter!("kassa_charges_total", "outcome" => "processing")
                        .increment(1);
                }
                status => {
                    let message = format!("the PaymentIntent ended in {status:?}");
                    self.decline(
                        &mut tx,
                        &charge,
                        Some(&intent.id),
                        None,
                        "payment_intent_incomplete",
                        &message,
                    )
                    .await?;
                }
            },
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
                    &mut tx,
                    &charge,
                    intent.as_deref(),
                    decline_code.as_deref(),
                    &code,
                    &message,
                )
                .await?;
            }
            Err(error) if error.is_transient() => return Err(error.into()),
            Err(error) => {
                let (code, message) = match &error {
                    StripeError::InvalidRequest { code, message, .. } => (
                        code.clone().unwrap_or_else(|| "invalid_request".into()),
                        message.clone(),
                    ),
                    other => ("stripe_error".to_owned(), other.to_string()),
                };
                store_charges::mark_charge_failed(&mut tx, charge.id, &code, &message).await?;
                self.alert(
                    &mut tx,
                    &charge,
                    "charge.failed",
                    json!({"code": code, "reason": message}),
                )
                .await?;
                metrics::counter!("kassa_charges_total", "outcome" => "failed").increment(1);
            }
        }
        tx.commit().await.map_err(kassa_store::StoreError::from)?;
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
        let mut metadata = Metadata::new();
        metadata.insert(CHARGE_ID_METADATA.into(), charge.id.to_string());
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
        let key = key(format!(
            "kassa:charge:{}:{}:recheckout:{reminder}",
            charge.id, charge.attempt
        ))?;
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
    /// once, as the next attempt (queued in the caller's transaction, with the card's records).
    pub async fn retry_after_recheckout(
        &self,
        tx: &mut PgConnection,
        charge_id: i64,
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
        let next = charge.attempt + 1;
        if store_charges::mark_charge_retrying(tx, charge.id, next).await? {
            let job = ChargeJob {
                charge_id: charge.id,
                attempt: next,
            };
            charge_jobs::enqueue_job(tx, &job_route(&self.topology), job).await?;
            info!(
                charge_id,
                attempt = next,
                "new card saved: charge queued again"
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

    /// payment_intent.* webhooks: a charge still open (processing) is settled from the
    /// PaymentIntent as Stripe has it now.
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
            _ => return Ok(intent.metadata.contains_key(CHARGE_ID_METADATA)),
        };
        let settled =
            store_charges::settle_charge_by_payment_intent(tx, payment_intent_id, &outcome).await?;
        let ours = settled.is_some() || intent.metadata.contains_key(CHARGE_ID_METADATA);
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

    /// Queues an alert on `kassa.alerts` through the outbox, in the caller's transaction.
    async fn alert(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        routing_key: &str,
        details: serde_json::Value,
    ) -> Result<(), HandlerError> {
        let mut body = json!({
            "charge_id": charge.id,
            "reference": charge.reference,
            "customer": charge.customer_id,
            "amount": charge.amount,
            "currency": charge.currency,
            "attempt": charge.attempt,
        });
        if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
            body.extend(details.clone());
        }
        let reminder = details
            .get("reminder")
            .and_then(|r| r.as_i64())
            .unwrap_or(0);
        let message = OutboxMessage {
            exchange: self.topology.alerts_exchange(),
            routing_key: routing_key.to_owned(),
            message_id: format!("{routing_key}:{}:{}:{reminder}", charge.id, charge.attempt),
            message_type: routing_key.to_owned(),
            body,
            headers: json!({}),
        };
        outbox::enqueue(tx, &message).await?;
        Ok(())
    }
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

fn key(value: String) -> Result<IdempotencyKey, HandlerError> {
    IdempotencyKey::new(value).map_err(|e| HandlerError::Permanent(format!("idempotency key: {e}")))
}
