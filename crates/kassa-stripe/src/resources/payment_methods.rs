use super::{merged, resource_handle};
use crate::client::path;
use crate::objects::{List, PaymentMethod};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(
    PaymentMethods,
    payment_methods,
    "payment methods (`/v1/payment_methods`)"
);

/// Filters for listing a customer's payment methods.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListPaymentMethods {
    /// The customer whose payment methods to list.
    pub customer: Option<String>,
    /// Only this type, e.g. `card`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

#[derive(Serialize)]
struct Attach<'a> {
    customer: &'a str,
}

impl PaymentMethods<'_> {
    /// `GET /v1/payment_methods/{id}`.
    pub async fn retrieve(&self, id: &str, expand: &[&str]) -> Result<PaymentMethod, StripeError> {
        let path = path(&["v1", "payment_methods", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `POST /v1/payment_methods/{id}/attach` with `customer`. Stripe refuses a PaymentMethod that
    /// is attached to another customer; check `customer` on it first to tell "already ours" apart.
    pub async fn attach(
        &self,
        id: &str,
        customer: &str,
        key: &IdempotencyKey,
    ) -> Result<PaymentMethod, StripeError> {
        let path = path(&["v1", "payment_methods", id, "attach"])?;
        self.client
            .post(&path, &Attach { customer }, key, self.expand)
            .await
    }

    /// `POST /v1/payment_methods/{id}/detach`.
    pub async fn detach(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<PaymentMethod, StripeError> {
        let path = path(&["v1", "payment_methods", id, "detach"])?;
        self.client.post(&path, &(), key, self.expand).await
    }

    /// `GET /v1/payment_methods?customer=…`.
    pub async fn list(
        &self,
        params: &ListPaymentMethods,
    ) -> Result<List<PaymentMethod>, StripeError> {
        self.client
            .get("/v1/payment_methods", params, self.expand)
            .await
    }
}
