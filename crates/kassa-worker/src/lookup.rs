//! Finding a charge attempt's PaymentIntent on Stripe before anything is sent again.
//!
//! The lookup lists the customer's PaymentIntents created since the attempt started
//! (`GET /v1/payment_intents?customer=…&created[gte]=…`, 100 a page, newest first) and keeps
//! the one whose metadata names this installation, charge, attempt and reference. A list reads
//! Stripe's objects themselves, so a PaymentIntent created a moment ago is in it; Search
//! (`/v1/payment_intents/search`) is not used because its index can lag writes by up to a minute
//! ("don't use search for read-after-write flows", docs: search).
//!
//! `created[gte]` is the attempt's start minus [`CLOCK_MARGIN_SECS`]: the start is Kassa's clock,
//! `created` is Stripe's, and a margin of an hour covers any skew between them for the price of
//! a few more PaymentIntents to read.

use crate::keys::{self, Owner};
use kassa_store::ChargeRecord;
use kassa_stripe::objects::{PaymentIntent, PaymentIntentStatus};
use kassa_stripe::resources::{ListPaymentIntents, RangeQuery};
use kassa_stripe::{Client, StripeError};

/// How far before the attempt's recorded start the lookup reaches back, in seconds.
pub const CLOCK_MARGIN_SECS: i64 = 60 * 60;

/// Pages of 100 read at most: a customer with more than 5 000 PaymentIntents since the attempt
/// started is not a back-office customer Kassa can reason about without a person.
const MAX_PAGES: usize = 50;

/// Why a lookup could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Stripe could not be asked.
    #[error("listing the customer's PaymentIntents: {0}")]
    Stripe(#[from] StripeError),
    /// The attempt has no recorded start, so there is nothing to look for.
    #[error("the attempt has no recorded start")]
    NotStarted,
    /// More PaymentIntents than the lookup reads.
    #[error("more than {} PaymentIntents of the customer since the attempt started", MAX_PAGES * 100)]
    TooMany,
}

impl LookupError {
    /// Whether asking again later may answer (Stripe 5xx, 429, network).
    pub fn is_transient(&self) -> bool {
        matches!(self, LookupError::Stripe(e) if e.is_transient())
    }
}

/// The PaymentIntent Stripe has for the charge's current attempt, if any; `Err` when Stripe
/// could not be asked.
pub async fn find_attempt_intent(
    stripe: &Client,
    installation: &str,
    charge: &ChargeRecord,
) -> Result<Option<PaymentIntent>, LookupError> {
    let started = charge
        .attempt_started_at
        .ok_or(LookupError::NotStarted)?
        .unix_timestamp();
    let legacy = charge.attempt_key.as_deref()
        == Some(keys::legacy_charge_attempt(charge.id, charge.attempt).as_str());
    let mut params = ListPaymentIntents {
        customer: Some(charge.customer_id.clone()),
        created: Some(RangeQuery {
            gte: Some(started - CLOCK_MARGIN_SECS),
            ..Default::default()
        }),
        limit: Some(100),
        starting_after: None,
    };
    let mut found: Vec<PaymentIntent> = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = stripe.payment_intents().list(&params).await?;
        let next = page.next_starting_after().map(str::to_owned);
        found.extend(
            page.data
                .into_iter()
                .filter(|pi| names_attempt(installation, charge, pi, legacy, started)),
        );
        match next {
            Some(last) => params.starting_after = Some(last),
            None => return Ok(best(found)),
        }
    }
    Err(LookupError::TooMany)
}

/// Whether `intent` is the charge's current attempt. An attempt open from before installation
/// ids (its key `kassa:charge:{id}:{attempt}`) made PaymentIntents with `kassa_charge_id` and
/// `kassa_reference` only: those count when unmarked and, after a re-checkout, created no
/// earlier than the attempt (the previous attempt's declined one is older).
fn names_attempt(
    installation: &str,
    charge: &ChargeRecord,
    intent: &PaymentIntent,
    legacy: bool,
    started: i64,
) -> bool {
    let metadata = &intent.metadata;
    if keys::intent_names_attempt(
        installation,
        metadata,
        charge.id,
        charge.attempt,
        &charge.reference,
    ) {
        return true;
    }
    legacy
        && keys::owner(installation, metadata) == Owner::Unmarked
        && metadata.get(keys::CHARGE_ID_METADATA) == Some(&charge.id.to_string())
        && metadata.get(keys::REFERENCE_METADATA) == Some(&charge.reference)
        && (charge.attempt == 1 || intent.created.is_some_and(|c| c >= started))
}

/// Of several PaymentIntents for one attempt (there should be one), the one that says most:
/// money taken first, then on its way, then waiting, then declined; newest first within each.
fn best(mut found: Vec<PaymentIntent>) -> Option<PaymentIntent> {
    let rank = |pi: &PaymentIntent| match pi.status {
        PaymentIntentStatus::Succeeded => 0,
        PaymentIntentStatus::Processing => 1,
        PaymentIntentStatus::RequiresCapture => 2,
        PaymentIntentStatus::RequiresAction | PaymentIntentStatus::RequiresConfirmation => 3,
        PaymentIntentStatus::RequiresPaymentMethod => 4,
        PaymentIntentStatus::Canceled => 5,
        _ => 6,
    };
    // The list is newest first; a stable sort keeps that order within a rank.
    found.sort_by_key(rank);
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn intent(id: &str, status: &str) -> PaymentIntent {
        serde_json::from_value(json!({"id": id, "object": "payment_intent", "status": status}))
            .unwrap()
    }

    #[test]
    fn the_most_telling_payment_intent_wins() {
        let picked = best(vec![
            intent("pi_new_declined", "requires_payment_method"),
            intent("pi_paid", "succeeded"),
            intent("pi_old_processing", "processing"),
        ]);
        assert_eq!(picked.map(|pi| pi.id).as_deref(), Some("pi_paid"));
        let picked = best(vec![
            intent("pi_newer", "requires_payment_method"),
            intent("pi_older", "requires_payment_method"),
        ]);
        assert_eq!(picked.map(|pi| pi.id).as_deref(), Some("pi_newer"));
        assert!(best(Vec::new()).is_none());
    }
}
