//! Resolving a charge in `needs_review`: an attempt first sent more than 23 hours ago that
//! Stripe could not be asked about, which Kassa therefore neither sends again nor gives up. A
//! person checks Stripe (the Dashboard, or `GET /v1/payment_intents?customer=…`) and says what
//! happened; Kassa checks that against Stripe before recording it:
//!
//! - [`Resolution::SucceededBy`]: the PaymentIntent must exist, have succeeded, be the charge's
//!   customer, amount and currency, and name no other charge in its metadata;
//! - [`Resolution::Failed`]: Stripe must show no paid or processing PaymentIntent for the
//!   attempt (the lookup the executor makes); `charge.failed` is announced;
//! - [`Resolution::Requeue`]: the charge goes back in line with its attempt's record kept, so the
//!   executor looks the attempt up again first and sends it (under a new key) only if Stripe has
//!   nothing, or puts it back in review if Stripe still cannot be asked.

use super::lookup::find_attempt_intent;
use super::{job_route, ChargeExecutor};
use crate::keys::{self, Owner};
use crate::Error;
use kassa_store::charge_jobs::{self, ChargeJob};
use kassa_store::charges::{self as store_charges, ChargeStatus};
use kassa_store::{ChargeRecord, OffsetDateTime, PgConnection};
use kassa_stripe::objects::PaymentIntentStatus;
use serde_json::json;
use tracing::info;

/// What a person says became of a charge in review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Paid by this PaymentIntent (`pi_…`).
    SucceededBy(String),
    /// Nothing was charged: the charge fails.
    Failed,
    /// Look Stripe up again and go on from what it says.
    Requeue,
}

/// Why a resolution was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such charge.
    #[error("no charge {0}")]
    NotFound(i64),
    /// The charge is not in `needs_review`.
    #[error("charge {id} is {status}, not needs_review: nothing to resolve")]
    NotInReview {
        /// The charge.
        id: i64,
        /// Where it stands.
        status: ChargeStatus,
    },
    /// What Stripe shows contradicts the resolution.
    #[error("{0}")]
    Contradicted(String),
    /// Stripe or the database could not be used.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<kassa_store::StoreError> for ResolveError {
    fn from(error: kassa_store::StoreError) -> Self {
        ResolveError::Failed(error.into())
    }
}

impl From<kassa_stripe::StripeError> for ResolveError {
    fn from(error: kassa_stripe::StripeError) -> Self {
        ResolveError::Failed(error.into())
    }
}

impl ChargeExecutor {
    /// Records `resolution` for charge `charge_id`, which must be in `needs_review`, once Stripe
    /// agrees; returns the charge as it is now.
    pub async fn resolve(
        &self,
        charge_id: i64,
        resolution: &Resolution,
    ) -> Result<ChargeRecord, ResolveError> {
        let store = &self.store;
        let mut tx = store.begin().await?;
        let charge = store_charges::charge_for_update(&mut tx, charge_id)
            .await?
            .ok_or(ResolveError::NotFound(charge_id))?;
        if charge.status != ChargeStatus::NeedsReview {
            return Err(ResolveError::NotInReview {
                id: charge.id,
                status: charge.status,
            });
        }
        match resolution {
            Resolution::SucceededBy(payment_intent_id) => {
                self.resolve_succeeded(&mut tx, &charge, payment_intent_id)
                    .await?
            }
            Resolution::Failed => self.resolve_failed(&mut tx, &charge).await?,
            Resolution::Requeue => self.resolve_requeue(&mut tx, &charge).await?,
        }
        tx.commit().await.map_err(kassa_store::StoreError::from)?;
        let charge = store
            .charge(charge_id)
            .await?
            .ok_or(ResolveError::NotFound(charge_id))?;
        Ok(charge)
    }

    /// `--succeeded-by`: the PaymentIntent must have succeeded, for the charge's customer, amount
    /// and currency, and name no other charge.
    async fn resolve_succeeded(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        payment_intent_id: &str,
    ) -> Result<(), ResolveError> {
        let intent = self
            .stripe(charge.livemode)?
            .payment_intents()
            .retrieve(payment_intent_id, &[])
            .await
            .map_err(|e| {
                if e.is_resource_missing() {
                    ResolveError::Contradicted(format!(
                        "Stripe has no PaymentIntent {payment_intent_id}"
                    ))
                } else {
                    e.into()
                }
            })?;
        let customer = intent.customer.as_ref().map(|c| c.id().to_owned());
        let mut wrong = Vec::new();
        if intent.status != PaymentIntentStatus::Succeeded {
            wrong.push(format!("its status is {:?}, not succeeded", intent.status));
        }
        if customer.as_deref() != Some(charge.customer_id.as_str()) {
            wrong.push(format!(
                "it is {}'s, not {}'s",
                customer.as_deref().unwrap_or("no customer"),
                charge.customer_id
            ));
        }
        if (intent.amount, intent.currency.as_str()) != (charge.amount, charge.currency.as_str()) {
            wrong.push(format!(
                "it is {} {}, the charge {} {}",
                intent.amount, intent.currency, charge.amount, charge.currency
            ));
        }
        let names_other = match keys::owner(self.installation_id(), &intent.metadata) {
            Owner::Other => true,
            _ => intent
                .metadata
                .get(keys::CHARGE_ID_METADATA)
                .is_some_and(|id| *id != charge.id.to_string()),
        };
        if names_other {
            wrong.push("its metadata names another charge".to_owned());
        }
        if !wrong.is_empty() {
            return Err(ResolveError::Contradicted(format!(
                "PaymentIntent {payment_intent_id} does not pay charge {}: {}",
                charge.id,
                wrong.join("; ")
            )));
        }
        if !store_charges::resolve_charge_succeeded(tx, charge.id, &intent.id).await? {
            return Err(ResolveError::Contradicted(format!(
                "PaymentIntent {payment_intent_id} already settles another charge"
            )));
        }
        info!(charge_id = charge.id, payment_intent = %intent.id, "charge resolved as succeeded");
        Ok(())
    }

    /// `--failed`: Stripe must show no paid or processing PaymentIntent for the attempt.
    async fn resolve_failed(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
    ) -> Result<(), ResolveError> {
        let found = find_attempt_intent(
            self.stripe(charge.livemode)?,
            self.installation_id(),
            charge,
        )
        .await
        .map_err(|e| {
            ResolveError::Contradicted(format!(
                "Stripe could not be asked whether attempt {} was charged ({e}); \
                     nothing recorded — check the Dashboard and try again",
                charge.attempt
            ))
        })?;
        if let Some(intent) = found.filter(|pi| {
            matches!(
                pi.status,
                PaymentIntentStatus::Succeeded
                    | PaymentIntentStatus::Processing
                    | PaymentIntentStatus::RequiresCapture
            )
        }) {
            return Err(ResolveError::Contradicted(format!(
                "Stripe has PaymentIntent {} for attempt {} ({:?}): not failed; \
                 use --succeeded-by {} (or --requeue to let Kassa settle from it)",
                intent.id, charge.attempt, intent.status, intent.id
            )));
        }
        let message = format!(
            "resolved as failed: Stripe shows no paid PaymentIntent for attempt {}",
            charge.attempt
        );
        store_charges::mark_charge_failed(tx, charge.id, "resolved_failed", &message).await?;
        self.announce_failed(tx, charge, "resolved_failed", &message)
            .await?;
        info!(charge_id = charge.id, "charge resolved as failed");
        Ok(())
    }

    /// `--requeue`: back in line with the attempt's record kept, looked up again first.
    async fn resolve_requeue(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
    ) -> Result<(), ResolveError> {
        let Some(requeued) = store_charges::requeue_charge(tx, charge.id).await? else {
            return Err(ResolveError::NotInReview {
                id: charge.id,
                status: charge.status,
            });
        };
        let job = ChargeJob {
            charge_id: requeued.id,
            attempt: requeued.attempt,
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        charge_jobs::enqueue_job_again(
            tx,
            &job_route(self.topology()),
            job,
            &format!("requeue:{now}"),
        )
        .await?;
        info!(
            charge_id = charge.id,
            "charge back in line: the executor looks Stripe up first"
        );
        Ok(())
    }

    /// `charge.failed` for a charge resolved by a person.
    async fn announce_failed(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        code: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.alert(
            tx,
            charge,
            "charge.failed",
            json!({"code": code, "reason": message}),
        )
        .await
    }
}
