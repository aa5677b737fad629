use super::{merged, resource_handle, RangeQuery};
use crate::client::path;
use crate::objects::{List, Metadata, PaymentIntent};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(
    PaymentIntents,
    payment_intents,
    "PaymentIntents (`/v1/payment_intents`)"
);

/// Params to create a PaymentIntent. For an off-session charge of a saved card set `customer`,
/// `payment_method`, `off_session: Some(true)` and `confirm: Some(true)`: a decline then fails
/// with [`StripeError::Card`] (HTTP 402) carrying the PaymentIntent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreatePaymentIntent {
    /// Amount in the currency's minor unit (JPY is zero-decimal: never ×100).
    pub amount: i64,
    /// Lower-case ISO currency code.
    pub currency: String,
    /// The customer paying.
    pub customer: Option<String>,
    /// The PaymentMethod to charge.
    pub payment_method: Option<String>,
    /// The customer is not present (saved card, back-office charge).
    pub off_session: Option<bool>,
    /// Confirm at once.
    pub confirm: Option<bool>,
    /// `off_session` or `on_session`: save the card for later.
    pub setup_future_usage: Option<String>,
    /// e.g. `["card"]`.
    pub payment_method_types: Option<Vec<String>>,
    /// Free text.
    pub description: Option<String>,
    /// Where Stripe sends the receipt.
    pub receipt_email: Option<String>,
    /// Key-value pairs.
    pub metadata: Option<Metadata>,
    /// Appended to the account's statement descriptor prefix on the card statement.
    pub statement_descriptor_suffix: Option<String>,
}

/// Fields to update on a PaymentIntent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdatePaymentIntent {
    /// A new amount in minor units (only before the PaymentIntent succeeds).
    pub amount: Option<i64>,
    /// Free text.
    pub description: Option<String>,
    /// Where Stripe sends the receipt (`Some("")` unsets it).
    pub receipt_email: Option<String>,
    /// Key-value pairs.
    pub metadata: Option<Metadata>,
}

/// Filters for listing PaymentIntents (`GET /v1/payment_intents`), newest first.
///
/// Unlike Search (`/v1/payment_intents/search`), whose index can lag writes by up to a minute, a
/// list reads Stripe's objects themselves, so a PaymentIntent created a moment ago is in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListPaymentIntents {
    /// Only this customer's PaymentIntents.
    pub customer: Option<String>,
    /// Creation time range, e.g. `gte` the time an attempt started.
    pub created: Option<RangeQuery>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

impl PaymentIntents<'_> {
    /// `POST /v1/payment_intents`.
    pub async fn create(
        &self,
        params: &CreatePaymentIntent,
        key: &IdempotencyKey,
    ) -> Result<PaymentIntent, StripeError> {
        self.client
            .post("/v1/payment_intents", params, key, self.expand)
            .await
    }

    /// `GET /v1/payment_intents/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<PaymentIntent, StripeError> {
        let path = path(&["v1", "payment_intents", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `GET /v1/payment_intents`, newest first.
    pub async fn list(
        &self,
        params: &ListPaymentIntents,
    ) -> Result<List<PaymentIntent>, StripeError> {
        self.client
            .get("/v1/payment_intents", params, self.expand)
            .await
    }

    /// `POST /v1/payment_intents/{id}`.
    pub async fn update(
        &self,
        id: &str,
        params: &UpdatePaymentIntent,
        key: &IdempotencyKey,
    ) -> Result<PaymentIntent, StripeError> {
        let path = path(&["v1", "payment_intents", id])?;
        self.client.post(&path, params, key, self.expand).await
    }

    /// `POST /v1/payment_intents/{id}/cancel`.
    pub async fn cancel(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<PaymentIntent, StripeError> {
        let path = path(&["v1", "payment_intents", id, "cancel"])?;
        self.client.post(&path, &(), key, self.expand).await
    }
}
