use super::{merged, resource_handle, RangeQuery};
use crate::client::path;
use crate::objects::{Charge, List, Metadata, Shipping};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(
    Charges,
    charges,
    "charges (`/v1/charges`, the legacy Charges API)"
);

/// Params to create a charge with the legacy Charges API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateCharge {
    /// Amount in the currency's minor unit.
    pub amount: i64,
    /// Lower-case ISO currency code.
    pub currency: String,
    /// The customer charged (their default source unless `source` is given).
    pub customer: Option<String>,
    /// A card, source or token id, e.g. `tok_visa`.
    pub source: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Where Stripe sends the receipt.
    pub receipt_email: Option<String>,
    /// Shipping details (`name` and `address.line1` required when given).
    pub shipping: Option<Shipping>,
    /// `false` to authorise only.
    pub capture: Option<bool>,
    /// Key-value pairs.
    pub metadata: Option<Metadata>,
}

/// Filters for listing charges.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListCharges {
    /// Only this customer's charges.
    pub customer: Option<String>,
    /// Only this PaymentIntent's charges.
    pub payment_intent: Option<String>,
    /// Creation time range.
    pub created: Option<RangeQuery>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

impl Charges<'_> {
    /// `POST /v1/charges`.
    pub async fn create(
        &self,
        params: &CreateCharge,
        key: &IdempotencyKey,
    ) -> Result<Charge, StripeError> {
        self.client
            .post("/v1/charges", params, key, self.expand)
            .await
    }

    /// `GET /v1/charges/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<Charge, StripeError> {
        let path = path(&["v1", "charges", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `GET /v1/charges`, newest first.
    pub async fn list(&self, params: &ListCharges) -> Result<List<Charge>, StripeError> {
        self.client.get("/v1/charges", params, self.expand).await
    }
}
