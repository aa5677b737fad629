use super::{PaymentIntent, PaymentMethod, SetupIntent};
use serde::{Deserialize, Serialize};

/// Stripe's error object: the `error` of an error response, and an intent's `last_payment_error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The class of error.
    #[serde(rename = "type", default)]
    pub type_: ErrorType,
    /// A short code such as `card_declined`, `resource_missing`, `lock_timeout`.
    pub code: Option<String>,
    /// The issuer's reason for a card decline, such as `insufficient_funds`.
    pub decline_code: Option<String>,
    /// A human-readable message.
    pub message: Option<String>,
    /// The parameter the error relates to.
    pub param: Option<String>,
    /// A link to Stripe's page about the code.
    pub doc_url: Option<String>,
    /// The PaymentIntent the error happened on (card errors).
    pub payment_intent: Option<Box<PaymentIntent>>,
    /// The PaymentMethod involved (card errors).
    pub payment_method: Option<Box<PaymentMethod>>,
    /// The SetupIntent the error happened on (card errors while setting up).
    pub setup_intent: Option<Box<SetupIntent>>,
    /// A link to the request in the Dashboard logs.
    pub request_log_url: Option<String>,
}

/// The `type` of a Stripe error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// Stripe's side failed.
    ApiError,
    /// The card cannot be charged (decline, authentication needed, expired…).
    CardError,
    /// An idempotency key was reused with different params.
    IdempotencyError,
    /// The request's params were invalid.
    InvalidRequestError,
    /// A type this crate does not know yet.
    #[default]
    #[serde(other)]
    Unknown,
}
