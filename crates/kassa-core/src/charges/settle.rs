//! `payment_intent.*` webhooks settle a charge: the attempt its PaymentIntent's metadata names is
//! settled from the PaymentIntent as Stripe has it now, so a charge whose create answer was lost
//! is settled even before the executor runs again.

use super::ChargeExecutor;
use crate::keys::{self, Owner};
use crate::Error;
use kassa_store::charges::{self as store_charges, ChargeStatus, PaymentIntentOutcome};
use kassa_store::PgConnection;
use kassa_stripe::objects::PaymentIntentStatus;
use serde_json::json;
use tracing::info;

impl ChargeExecutor {
    /// payment_intent.* webhooks: the charge attempt the PaymentIntent's metadata names (this
    /// installation's, the charge id, the attempt and the reference) is settled from the
    /// PaymentIntent as Stripe has it now, even when the executor never saw Stripe's answer to
    /// its create; a charge `processing` under an earlier PaymentIntent (made before metadata
    /// named attempts) is found by its PaymentIntent. Returns whether the PaymentIntent belongs
    /// to a back-office charge (of any installation): those are not merchant payments.
    /// `livemode` is the event's: the PaymentIntent is read with the client of that mode.
    pub async fn settle(
        &self,
        tx: &mut PgConnection,
        livemode: bool,
        payment_intent_id: &str,
    ) -> Result<bool, Error> {
        let intent = self
            .stripe(livemode)?
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
}
