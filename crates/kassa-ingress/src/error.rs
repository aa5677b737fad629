//! Errors answered over HTTP: `{"error": {"code", "message"}}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kassa_stripe::StripeError;
use serde_json::json;
use std::borrow::Cow;
use tracing::warn;

/// An error that is its own HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
    /// The request field at fault, when there is one (e.g. `records[2].unit_amount`).
    pub field: Option<Cow<'static, str>>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the request field at fault (`"field"` in the body).
    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// What to answer when a Stripe call made for this request failed: Stripe's reason where the
    /// caller can act on it (402 for a card error, 400 for a request Stripe refused), 503 when a
    /// retry later may help, 502 when Kassa's own Stripe configuration is at fault.
    pub fn from_stripe(error: &StripeError) -> Self {
        let request_id = error.request_id().unwrap_or("none").to_owned();
        warn!(%error, stripe_request_id = %request_id, "a Stripe call failed");
        match error {
            StripeError::Card { message, .. } => {
                Self::new(StatusCode::PAYMENT_REQUIRED, "card_error", message.clone())
            }
            StripeError::InvalidRequest {
                status,
                message,
                param,
                ..
            } => {
                let status = if *status == 404 {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                };
                let mut e = Self::new(status, "stripe_invalid_request", message.clone());
                e.field = param.clone().map(Cow::Owned);
                e
            }
            error if error.is_transient() => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stripe_unavailable",
                format!("Stripe did not answer successfully; try again (Request-Id {request_id})"),
            ),
            StripeError::Authentication { .. } | StripeError::Permission { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "stripe_configuration",
                format!("Kassa's Stripe key was refused: {error}"),
            ),
            _ => Self::new(
                StatusCode::BAD_GATEWAY,
                "stripe_error",
                format!("Stripe call failed: {error}"),
            ),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(field), Some(object)) = (self.field, error.as_object_mut()) {
            object.insert("field".into(), json!(field));
        }
        let body = Json(json!({ "error": error }));
        (self.status, body).into_response()
    }
}
