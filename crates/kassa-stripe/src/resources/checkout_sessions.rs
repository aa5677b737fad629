use super::{merged, resource_handle, ListParams, ProductData};
use crate::client::path;
use crate::objects::{CheckoutMode, CheckoutSession, LineItem, List, Metadata, Timestamp};
use crate::{IdempotencyKey, StripeError};
use serde::Serialize;

resource_handle!(
    CheckoutSessions,
    checkout_sessions,
    "Checkout Sessions (`/v1/checkout/sessions`)"
);

/// Params to create a Checkout Session.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateCheckoutSession {
    /// `payment`, `setup` or `subscription`.
    pub mode: CheckoutMode,
    /// Where to send the customer after success; may hold the literal `{CHECKOUT_SESSION_ID}`.
    pub success_url: Option<String>,
    /// Where to send the customer on cancel.
    pub cancel_url: Option<String>,
    /// An existing customer (`cus_…`).
    pub customer: Option<String>,
    /// Prefill the e-mail when there is no customer yet.
    pub customer_email: Option<String>,
    /// Lower-case ISO currency code (needed in setup mode with dynamic payment methods).
    pub currency: Option<String>,
    /// Your reference.
    pub client_reference_id: Option<String>,
    /// What is bought (payment mode).
    pub line_items: Option<Vec<CheckoutLineItem>>,
    /// e.g. `["card"]`.
    pub payment_method_types: Option<Vec<String>>,
    /// Between 30 minutes and 24 hours from now (Stripe's default: 24 hours).
    pub expires_at: Option<Timestamp>,
    /// Data for the SetupIntent of a setup session.
    pub setup_intent_data: Option<IntentData>,
    /// Data for the PaymentIntent of a payment session.
    pub payment_intent_data: Option<IntentData>,
    /// Key-value pairs on the session.
    pub metadata: Option<Metadata>,
}

/// One line item: an existing `price`, or `price_data` made up on the fly, and a quantity.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckoutLineItem {
    /// An existing price (`price_…`).
    pub price: Option<String>,
    /// A price made for this session.
    pub price_data: Option<PriceData>,
    /// How many.
    pub quantity: Option<u64>,
}

/// `line_items[i][price_data]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PriceData {
    /// Lower-case ISO currency code.
    pub currency: String,
    /// Amount in the currency's minor unit.
    pub unit_amount: Option<i64>,
    /// An existing product (`prod_…`).
    pub product: Option<String>,
    /// A product made for this session.
    pub product_data: Option<ProductData>,
}

/// `setup_intent_data` / `payment_intent_data` of a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IntentData {
    /// Free text on the intent.
    pub description: Option<String>,
    /// Key-value pairs on the intent.
    pub metadata: Option<Metadata>,
}

/// Filters for listing Checkout Sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListCheckoutSessions {
    /// Only the session that made this PaymentIntent ("Only return the Checkout Session for the
    /// PaymentIntent specified", Stripe's API reference).
    pub payment_intent: Option<String>,
    /// Only this customer's sessions.
    pub customer: Option<String>,
    /// Page size, 1 to 100.
    pub limit: Option<u8>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

impl CheckoutSessions<'_> {
    /// `POST /v1/checkout/sessions`.
    pub async fn create(
        &self,
        params: &CreateCheckoutSession,
        key: &IdempotencyKey,
    ) -> Result<CheckoutSession, StripeError> {
        self.client
            .post("/v1/checkout/sessions", params, key, self.expand)
            .await
    }

    /// `GET /v1/checkout/sessions/{id}`; `&["setup_intent"]` brings the SetupIntent and with it
    /// the saved card's id in one request.
    pub async fn retrieve(
        &self,
        id: &str,
        expand: &[&str],
    ) -> Result<CheckoutSession, StripeError> {
        let path = path(&["v1", "checkout", "sessions", id])?;
        self.client
            .get(&path, &(), &merged(self.expand, expand))
            .await
    }

    /// `POST /v1/checkout/sessions/{id}/expire`: an open session can no longer be completed.
    pub async fn expire(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<CheckoutSession, StripeError> {
        let path = path(&["v1", "checkout", "sessions", id, "expire"])?;
        self.client.post(&path, &(), key, self.expand).await
    }

    /// `GET /v1/checkout/sessions`, newest first.
    pub async fn list(
        &self,
        params: &ListCheckoutSessions,
    ) -> Result<List<CheckoutSession>, StripeError> {
        self.client
            .get("/v1/checkout/sessions", params, self.expand)
            .await
    }

    /// `GET /v1/checkout/sessions/{id}/line_items`.
    pub async fn list_line_items(
        &self,
        id: &str,
        params: &ListParams,
    ) -> Result<List<LineItem>, StripeError> {
        let path = path(&["v1", "checkout", "sessions", id, "line_items"])?;
        self.client.get(&path, params, self.expand).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::Form;

    #[test]
    fn line_items_with_price_data_encode_like_stripe_documents() {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Payment,
            success_url: Some("https://shop.example/ok?session_id={CHECKOUT_SESSION_ID}".into()),
            line_items: Some(vec![CheckoutLineItem {
                price_data: Some(PriceData {
                    currency: "jpy".into(),
                    unit_amount: Some(1500),
                    product: Some("prod_1".into()),
                    product_data: None,
                }),
                quantity: Some(2),
                ..Default::default()
            }]),
            metadata: Some([("charge_id".to_owned(), "42".to_owned())].into()),
            ..Default::default()
        };
        let pairs: Vec<(String, String)> = Form::from_params(&params).unwrap().pairs().to_vec();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(get("line_items[0][price_data][currency]"), Some("jpy"));
        assert_eq!(get("line_items[0][price_data][unit_amount]"), Some("1500"));
        assert_eq!(get("line_items[0][price_data][product]"), Some("prod_1"));
        assert_eq!(get("line_items[0][quantity]"), Some("2"));
        assert_eq!(get("metadata[charge_id]"), Some("42"));
        assert_eq!(
            get("success_url"),
            Some("https://shop.example/ok?session_id={CHECKOUT_SESSION_ID}")
        );
        assert_eq!(pairs.len(), 7, "{pairs:?}");
    }
}
