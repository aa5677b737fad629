//! What a publishable key may do, and what it sees.
//!
//! Stripe (docs: API keys): publishable keys "can only be used to perform a limited set of
//! operations", those Stripe.js makes from a browser. The simulator lets a `pk_…` key:
//! - create a PaymentMethod from the card details a customer typed (`POST /v1/payment_methods`,
//!   as Stripe.js's `createPaymentMethod` does);
//! - retrieve and confirm a PaymentIntent or a SetupIntent **with its client secret** (docs:
//!   retrieve a PaymentIntent, "You can retrieve a PaymentIntent client-side using a publishable key
//!   when the `client_secret` is in the query string"; Stripe.js `confirmPayment`/`confirmSetup`).
//!
//! Anything else answers Stripe's 403 `secret_key_required`. A client secret that is not the intent's
//! answers "The client_secret provided does not match the client_secret associated with the
//! PaymentIntent." And "if you retrieve a PaymentIntent with a publishable key, it only returns a subset
//! of properties" (docs: retrieve a PaymentIntent): [`view`] keeps the fields Stripe's object
//! reference marks as retrievable with a publishable key — the customer, metadata and charges stay
//! on the server's side.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::state::Ctx;

/// Whether a publishable key may call this endpoint (`segments` after `/v1/`).
pub fn allowed(method: &str, segments: &[&str]) -> bool {
    match (method, segments) {
        ("POST", ["payment_methods"]) => true,
        ("GET", ["payment_intents" | "setup_intents", id]) => *id != "search",
        ("POST", ["payment_intents" | "setup_intents", _, "confirm"]) => true,
        _ => false,
    }
}

/// Checks the `client_secret` parameter against the intent's own: a mismatch is refused for every
/// key; a publishable key must give it.
pub fn check_client_secret(ctx: &Ctx, intent: &Value, p: &Params) -> Result<(), ApiError> {
    let noun = if intent["object"] == "setup_intent" {
        "SetupIntent"
    } else {
        "PaymentIntent"
    };
    match p.str("client_secret") {
        Some(given) if intent["client_secret"].as_str() == Some(given.as_str()) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            format!("The client_secret provided does not match the client_secret associated with the {noun}."),
            Some("client_secret"),
        )),
        None if ctx.via_publishable_key => Err(ApiError::publishable_key()),
        None => Ok(()),
    }
}

/// PaymentIntent fields a publishable key sees (Stripe's object reference: "retrievable with
/// publishable key").
const PAYMENT_INTENT_FIELDS: &[&str] = &[
    "id",
    "object",
    "amount",
    "automatic_payment_methods",
    "canceled_at",
    "cancellation_reason",
    "capture_method",
    "client_secret",
    "confirmation_method",
    "created",
    "currency",
    "description",
    "last_payment_error",
    "livemode",
    "next_action",
    "payment_method",
    "payment_method_types",
    "processing",
    "receipt_email",
    "setup_future_usage",
    "shipping",
    "status",
];

/// SetupIntent fields a publishable key sees.
const SETUP_INTENT_FIELDS: &[&str] = &[
    "id",
    "object",
    "cancellation_reason",
    "client_secret",
    "created",
    "description",
    "last_setup_error",
    "livemode",
    "next_action",
    "payment_method",
    "payment_method_types",
    "status",
    "usage",
];

fn keep(v: &Value, fields: &[&str]) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    let kept: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| fields.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept)
}

/// An intent as a publishable key sees it; other objects unchanged.
pub fn view(v: &Value) -> Value {
    match v["object"].as_str() {
        Some("payment_intent") => keep(v, PAYMENT_INTENT_FIELDS),
        Some("setup_intent") => keep(v, SETUP_INTENT_FIELDS),
        _ => v.clone(),
    }
}

/// A response body (an object, or `{"error": {…}}` carrying intents) as a publishable key sees it.
pub fn view_body(body: &mut Value) {
    if let Some(error) = body.get_mut("error") {
        for k in ["payment_intent", "setup_intent"] {
            if let Some(intent) = error.get_mut(k) {
                *intent = view(intent);
            }
        }
    } else {
        *body = view(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_browser_calls_are_allowed() {
        assert!(allowed("POST", &["payment_methods"]));
        assert!(allowed("GET", &["payment_intents", "pi_1"]));
        assert!(allowed("POST", &["payment_intents", "pi_1", "confirm"]));
        assert!(allowed("GET", &["setup_intents", "seti_1"]));
        assert!(allowed("POST", &["setup_intents", "seti_1", "confirm"]));
        assert!(!allowed("GET", &["payment_intents", "search"]));
        assert!(!allowed("GET", &["payment_intents"]));
        assert!(!allowed("POST", &["payment_intents"]));
        assert!(!allowed("POST", &["payment_intents", "pi_1", "capture"]));
        assert!(!allowed("GET", &["payment_methods", "pm_1"]));
        assert!(!allowed("GET", &["customers"]));
    }

    #[test]
    fn a_publishable_key_sees_no_customer_or_metadata() {
        let pi = json!({"id": "pi_1", "object": "payment_intent", "amount": 1000, "customer": "cus_1",
                        "metadata": {"k": "v"}, "status": "succeeded", "client_secret": "pi_1_secret_x",
                        "latest_charge": "ch_1"});
        let seen = view(&pi);
        assert_eq!(seen["amount"], 1000);
        assert_eq!(seen["status"], "succeeded");
        assert!(seen.get("customer").is_none());
        assert!(seen.get("metadata").is_none());
        assert!(seen.get("latest_charge").is_none());
        let mut error = json!({"error": {"code": "card_declined", "payment_intent": pi}});
        view_body(&mut error);
        assert!(error["error"]["payment_intent"].get("customer").is_none());
        assert_eq!(error["error"]["code"], "card_declined");
    }
}
