//! The re-pay path: a declined off-session charge asks the customer for another card through a
//! new setup-mode Checkout Session (`customer.repay_requested`, whose link is a save-card link of
//! the charge, [`crate::save_card`]), an expired session gets one reminder, and a completed
//! re-pay session puts the charge back in line once, on the new card.

use super::{job_route, ChargeExecutor};
use crate::keys;
use crate::mail::decline_in_words;
use crate::save_card;
use crate::Error;
use kassa_store::charge_jobs::{self, ChargeJob};
use kassa_store::charges::{self as store_charges, ChargeStatus};
use kassa_store::{
    checkout_sessions, ChargeRecord, CheckoutPurpose, CheckoutSessionRecord, PgConnection,
};
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::CreateCheckoutSession;
use serde_json::json;
use tracing::{info, warn};

impl ChargeExecutor {
    /// A decline: on the first attempt the customer gets a re-pay link; the retry after a
    /// re-checkout is the last one, so a second decline fails the charge.
    pub(crate) async fn decline(
        &self,
        tx: &mut PgConnection,
        charge: &ChargeRecord,
        payment_intent: Option<&str>,
        decline_code: Option<&str>,
        code: &str,
        message: &str,
    ) -> Result<(), Error> {
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
    ) -> Result<(), Error> {
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
            .stripe(charge.livemode)?
            .checkout_sessions()
            .create(&params, &key)
            .await?;
        let expires_at = kassa_store::OffsetDateTime::from_unix_timestamp(session.expires_at)
            .map_err(|e| Error::Permanent(format!("session expiry: {e}")))?;
        // What the customer is sent: a save-card link for this charge, which opens a fresh
        // session when this one has expired (a reply on day two still reaches a working page).
        let link = save_card::issue_link(
            tx,
            public,
            &charge.customer_id,
            session.livemode,
            Some(charge.id),
            kassa_store::OffsetDateTime::now_utc() + save_card::DEFAULT_LINK_TTL,
        )
        .await?;
        let url = link.url;
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
            .stripe(charge.livemode)?
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
    ) -> Result<(), Error> {
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
    ) -> Result<(), Error> {
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
}
