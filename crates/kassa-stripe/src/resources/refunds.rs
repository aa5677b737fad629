use super::{merged, resource_handle, RangeQuery};
use crate::client::path;
use crate::objects::{List, Metadata, Refund};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(Refunds, refunds, "refunds (`/v1/refunds`)");

/// Params to refund a charge or a PaymentIntent (one of the two).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateRefund {
    /// The charge to refund.
    pub charge: Option<String>,
    /// Or the PaymentIntent to refund.
    pub payment_intent: Option<String>,
    /// Minor unit; the whole remaining amount when `None`.
    pub amount: Option<i64>,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
    /// Key-value pairs.
    pub metadata: Option<Metadata>,
}

/// Filters for listing refunds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListRefunds {
    /// Only this charge's refunds.
    pub charge: Option<String>,
    /// Only this PaymentIntent's refunds.
    pub payment_intent: Option<String>,
    /// Creation time range.
    pub created: Option<RangeQuery>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

impl Refunds<'_> {
    /// `POST /v1/refunds`.
    pub async fn create(
        &self,
        params: &CreateRefund,
        key: &IdempotencyKey,
    ) -> Result<Refund, StripeError> {
        self.client
            .post("/v1/refunds", params, key, self.expand)
            .await
    }

    /// `GET /v1/refunds/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<Refund, StripeError> {
        let path = path(&["v1", "refunds", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `GET /v1/refunds`, newest first.
    pub async fn list(&self, params: &ListRefunds) -> Result<List<Refund>, StripeError> {
        self.client.get("/v1/refunds", params, self.expand).await
    }
}
