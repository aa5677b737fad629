//! The API's one error type: every refusal and failure of every route is an [`ApiError`], which
//! is its own HTTP answer — `{"error": {"code", "message", "field"?}}` with the right status —
//! and every error kassa-core returns has one mapping to it here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kassa_core::charges::submit::SubmitError;
use kassa_core::checkout::CheckoutError;
use kassa_core::fields::FieldError;
use kassa_core::keys::InvalidCallerKey;
use kassa_core::widgets::WidgetError;
use kassa_store::StoreError;
use kassa_stripe::{ModeNotConfigured, StripeError};
use serde_json::json;
use std::borrow::Cow;
use tracing::{error, warn};

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

    /// What to answer when a Stripe call made for this request failed, one mapping for every
    /// route that calls Stripe: the caller's own mistakes as 4xx (402 `card_declined` with
    /// Stripe's code and decline code; 400/404 `resource_missing` or `stripe_invalid_request`
    /// naming Stripe's `param`; 409 for an Idempotency-Key still running or reused with other
    /// parameters), 429 `stripe_rate_limited` and 503 `stripe_unavailable` when trying again
    /// later may help, 502 `stripe_configuration` when Kassa's own key is refused.
    pub fn from_stripe(error: &StripeError) -> Self {
        let request_id = error.request_id().unwrap_or("none").to_owned();
        let answer = match error {
            StripeError::Card {
                code,
                decline_code,
                message,
                ..
            } => {
                let code = code.as_deref().unwrap_or("card_error");
                let detail = match decline_code {
                    Some(decline) => format!("{message} ({code}; {decline})"),
                    None => format!("{message} ({code})"),
                };
                Self::new(StatusCode::PAYMENT_REQUIRED, "card_declined", detail)
            }
            StripeError::InvalidRequest {
                status,
                code,
                message,
                param,
                ..
            } => {
                let status = if *status == 404 {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                };
                let code = if code.as_deref() == Some("resource_missing") {
                    "resource_missing"
                } else {
                    "stripe_invalid_request"
                };
                let mut e = Self::new(status, code, format!("Stripe: {message}"));
                e.field = param.clone().map(Cow::Owned);
                e
            }
            StripeError::Idempotency { status: 409, .. } => Self::new(
                StatusCode::CONFLICT,
                "request_in_progress",
                "a request with this Idempotency-Key is still running; try again",
            ),
            StripeError::Idempotency { message, .. } => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                format!("this Idempotency-Key was used with other parameters: {message}"),
            ),
            StripeError::RateLimited { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "stripe_rate_limited",
                "Stripe is rate limiting this account; try again shortly",
            ),
            StripeError::InvalidParams(message) => {
                Self::bad_request("invalid_request", message.clone())
            }
            StripeError::Authentication { .. } | StripeError::Permission { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "stripe_configuration",
                format!("Kassa's Stripe key was refused: {error}"),
            ),
            StripeError::Api { .. } | StripeError::Transport(_) | StripeError::Decode { .. } => {
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stripe_unavailable",
                    format!("Stripe did not answer properly; try again (Request-Id {request_id})"),
                )
            }
        };
        warn!(%error, stripe_request_id = %request_id, status = answer.status.as_u16(), "a Stripe call failed");
        answer
    }

    /// A JSON body that could not be read: 400 `invalid_json` (malformed, or a field of the
    /// wrong type or unknown), 413 `payload_too_large`, 415 `unsupported_media_type`. An unknown
    /// field is named in `field` as well as in the message.
    pub fn from_json_rejection(rejection: &axum::extract::rejection::JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        let status = if code == "invalid_json" {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        let text = rejection.body_text();
        let mut answer = Self::new(status, code, text.clone());
        answer.field = unknown_field(&text).map(|f| Cow::Owned(f.to_owned()));
        answer
    }

    /// A query string that could not be read: 400 `invalid_query`.
    pub fn from_query_rejection(rejection: &axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The database failed: 503 `database_unavailable` when trying again may help, else a bare
    /// 500 (the cause is logged, not answered).
    pub fn from_store(error: &StoreError) -> Self {
        warn!(%error, "API: database error");
        if error.is_transient() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; try again",
            )
        } else {
            Self::internal()
        }
    }

    /// A failure that is Kassa's, not the caller's: a bare 500.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    /// Fulfilment by the success page or the payment confirmation failed: 404 when Stripe has
    /// no such object, 503 when trying again may help, else 422 `cannot_fulfil`.
    pub fn from_fulfil(error: &kassa_core::Error) -> Self {
        if error.is_not_found() {
            Self::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
        } else if error.is_transient() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{error}; try again"),
            )
        } else {
            Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cannot_fulfil",
                error.to_string(),
            )
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::bad_request(error.code, error.message).with_field(error.field)
    }
}

impl From<ModeNotConfigured> for ApiError {
    fn from(error: ModeNotConfigured) -> Self {
        Self::bad_request("mode_not_configured", error.to_string()).with_field("livemode")
    }
}

impl From<InvalidCallerKey> for ApiError {
    fn from(error: InvalidCallerKey) -> Self {
        Self::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key: {error}"),
        )
    }
}

impl From<CheckoutError> for ApiError {
    fn from(error: CheckoutError) -> Self {
        match error {
            CheckoutError::Invalid(field) => field.into(),
            CheckoutError::Stripe(stripe) => Self::from_stripe(&stripe),
            CheckoutError::Key(message) => {
                error!(%message, "could not build an Idempotency-Key");
                Self::internal()
            }
            CheckoutError::Store(store) => Self::from_store(&store),
        }
    }
}

impl From<WidgetError> for ApiError {
    fn from(error: WidgetError) -> Self {
        let message = error.to_string();
        match error {
            WidgetError::Invalid(field) => field.into(),
            WidgetError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            WidgetError::WrongMode(_) => {
                Self::new(StatusCode::CONFLICT, "widget_mode_unavailable", message)
            }
            WidgetError::ClientSecret => {
                Self::new(StatusCode::FORBIDDEN, "client_secret_mismatch", message)
                    .with_field("client_secret")
            }
            WidgetError::Settled(_) => {
                Self::new(StatusCode::CONFLICT, "payment_intent_settled", message)
            }
            WidgetError::Stripe(stripe) => Self::from_stripe(&stripe),
            WidgetError::Store(store) => Self::from_store(&store),
            WidgetError::Key(message) => {
                error!(%message, "could not build an Idempotency-Key");
                Self::internal()
            }
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        let message = error.to_string();
        match error {
            SubmitError::Invalid(field) => field.into(),
            SubmitError::ReferenceInUse { .. } => {
                Self::new(StatusCode::CONFLICT, "reference_in_use", message).with_field("reference")
            }
            SubmitError::Lookup { error, .. } if error.is_transient() => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stripe_unavailable",
                format!("{message}; try again"),
            ),
            SubmitError::Lookup { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "stripe_lookup_failed", message)
            }
            SubmitError::Store(store) => Self::from_store(&store),
        }
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

/// The field serde names in "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    rest.split('`').next().filter(|f| !f.is_empty())
}
