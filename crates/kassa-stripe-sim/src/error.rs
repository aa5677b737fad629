//! Errors: [`SimError`] for the embedding program, [`ApiError`] for Stripe-shaped error answers.

use http::StatusCode;
use serde_json::{json, Map, Value};

/// Why the simulator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot bind the simulator to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an I/O error.
    #[error("the simulator's HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The configuration is not usable (bad fault rates, empty secret, …).
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// The webhook HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// A Stripe error answer: the status and the `error` object of `{"error": {...}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// The object under `"error"` (`type`, `code`, `message`, `param`, …).
    pub error: Value,
    /// `Stripe-Should-Retry` header value, when the answer carries one.
    pub should_retry: Option<bool>,
    /// `Stripe-Rate-Limited-Reason` of a 429 from a rate limiter (`global-rate`, `endpoint-rate`).
    pub rate_limited_reason: Option<&'static str>,
    /// The id a 404 `resource_missing` did not find (to say when the other mode has it).
    pub missing_id: Option<String>,
}

const DOC_BASE: &str = "https://stripe.com/docs/error-codes";

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        message: String,
        param: Option<&str>,
    ) -> Self {
        let mut e = Map::new();
        if let Some(code) = code {
            e.insert("code".into(), json!(code));
            // Stripe: "Every Error object links to this list in its doc_url attribute" (docs: error codes).
            e.insert(
                "doc_url".into(),
                json!(format!("{DOC_BASE}/{}", code.replace('_', "-"))),
            );
        }
        e.insert("message".into(), json!(message));
        if let Some(param) = param {
            e.insert("param".into(), json!(param));
        }
        e.insert("type".into(), json!(kind));
        ApiError {
            status,
            error: Value::Object(e),
            should_retry: None,
            rate_limited_reason: None,
            missing_id: None,
        }
    }

    /// 400 `invalid_request_error` with an optional `code` and `param`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message.into(),
            param,
        )
    }

    /// 400 `invalid_request_error` with a `code`.
    pub fn invalid_code(code: &str, message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some(code),
            message.into(),
            param,
        )
    }

    /// 400 `parameter_missing`: Stripe's "Missing required param: x."
    pub fn missing(param: &str) -> Self {
        Self::invalid_code(
            "parameter_missing",
            format!("Missing required param: {param}."),
            Some(param),
        )
    }

    /// 400 `parameter_unknown`: Stripe's "Received unknown parameter: x".
    pub fn unknown_param(param: &str) -> Self {
        Self::invalid_code(
            "parameter_unknown",
            format!("Received unknown parameter: {param}"),
            Some(param),
        )
    }

    /// 404 `resource_missing`: Stripe's "No such customer: 'cus_x'".
    pub fn no_such(noun: &str, id: &str, param: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            format!("No such {noun}: '{id}'"),
            Some(param),
        );
        e.missing_id = Some(id.to_owned());
        e
    }

    /// Adds Stripe's mode hint to a `resource_missing` whose object exists in `other`, the mode the
    /// request's key does not address: "No such customer: 'cus_x'; a similar object exists in test
    /// mode, but a live mode key was used to make this request."
    pub fn exists_in_other_mode(mut self, other: crate::mode::Mode) -> Self {
        if let Some(Value::String(message)) = self.error.get_mut("message") {
            message.push_str(&format!(
                "; a similar object exists in {} mode, but a {} mode key was used to make this request.",
                other.name(),
                other.other().name()
            ));
        }
        self
    }

    /// 400 `resource_missing` for an id given as a parameter (`customer=cus_x`).
    pub fn no_such_param(noun: &str, id: &str, param: &str) -> Self {
        let mut e = Self::no_such(noun, id, param);
        e.status = StatusCode::BAD_REQUEST;
        e
    }

    /// 404 for a path no endpoint serves.
    pub fn unrecognized(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            format!("Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."),
            None,
        )
    }

    /// 401 `invalid_request_error`: no or a bad API key.
    pub fn unauthorized(message: String) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            message,
            None,
        )
    }

    /// 403 `secret_key_required`: a publishable key on a server endpoint.
    pub fn publishable_key() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some("secret_key_required"),
            "This API call cannot be made with a publishable API key. Please use a secret API key. You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys.".to_owned(),
            None,
        )
    }

    /// 400 `idempotency_error`: same key, different parameters.
    pub fn idempotency_mismatch(key: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            None,
            format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
            None,
        )
    }

    /// 409 `idempotency_error` / `idempotency_key_in_use`: the same key is still executing.
    pub fn idempotency_in_use(key: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "idempotency_error",
            Some("idempotency_key_in_use"),
            format!("There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."),
            None,
        )
    }

    /// 429 `rate_limit` from the limiter named by `reason` (`Stripe-Rate-Limited-Reason`:
    /// `global-rate` for the account's limit, `endpoint-rate` for one endpoint's).
    pub fn rate_limited(reason: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            Some("rate_limit"),
            "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.".to_owned(),
            None,
        );
        e.rate_limited_reason = Some(reason);
        e
    }

    /// 5xx `api_error`, with `Stripe-Should-Retry: true`.
    pub fn server_error(status: StatusCode) -> Self {
        let mut e = Self::new(
            status,
            "api_error",
            None,
            "An unknown error occurred. Please retry your request.".to_owned(),
            None,
        );
        e.should_retry = Some(true);
        e
    }

    /// 402 `card_error` built by [`crate::cards`]; extra fields (decline_code, payment_intent, …) are set by the caller.
    pub fn card_error(code: &str, message: &str, param: Option<&str>) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            Some(code),
            message.to_owned(),
            param,
        )
    }

    /// Adds a field to the error object (`decline_code`, `payment_intent`, `charge`, …).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        if let Value::Object(m) = &mut self.error {
            m.insert(key.to_owned(), value);
        }
        self
    }

    /// The full answer body `{"error": {...}}`.
    pub fn body(&self) -> Value {
        json!({ "error": self.error })
    }
}
