//! What a Stripe call can fail with, in classes a caller can act on.

use crate::form::FormError;
use crate::objects::{ErrorObject, ErrorType, PaymentIntent, PaymentMethod, SetupIntent};
use serde::Deserialize;

/// A failed Stripe call. [`StripeError::is_transient`] says whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// HTTP 402 `card_error`: declined, needs authentication, expired… The PaymentIntent (status
    /// `requires_payment_method`) comes with it; recovery needs the customer back on-session.
    #[error("card error {}: {message}", code.as_deref().unwrap_or("(no code)"))]
    Card {
        /// e.g. `card_declined`, `authentication_required`, `expired_card`.
        code: Option<String>,
        /// The issuer's reason, e.g. `generic_decline`, `insufficient_funds`.
        decline_code: Option<String>,
        /// Stripe's message, safe to show the customer.
        message: String,
        /// The PaymentIntent the charge was made on.
        payment_intent: Option<Box<PaymentIntent>>,
        /// The PaymentMethod that failed.
        payment_method: Option<Box<PaymentMethod>>,
        /// The SetupIntent, when a setup failed.
        setup_intent: Option<Box<SetupIntent>>,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// HTTP 400/404 (and other 4xx): the request is wrong and will stay wrong.
    /// A missing object has `code = Some("resource_missing")` (see [`StripeError::is_resource_missing`]).
    #[error("invalid request ({status}) {}: {message}", code.as_deref().unwrap_or("(no code)"))]
    InvalidRequest {
        /// The HTTP status.
        status: u16,
        /// e.g. `resource_missing`, `parameter_missing`.
        code: Option<String>,
        /// The offending parameter.
        param: Option<String>,
        /// Stripe's message.
        message: String,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// HTTP 401: the API key is wrong or revoked.
    #[error("Stripe refused the API key: {message}")]
    Authentication {
        /// Stripe's message (it masks the key).
        message: String,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// HTTP 403: a restricted key lacks a permission, named when Stripe's message names it.
    #[error("the API key lacks permission {}: {message}", permission.as_deref().unwrap_or("(unnamed)"))]
    Permission {
        /// Stripe's message.
        message: String,
        /// The missing permission, e.g. `rak_payment_intent_write`.
        permission: Option<String>,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// 400 `idempotency_error` (same key, different params: a bug, permanent) or 409 (the same key
    /// is still executing elsewhere: transient).
    #[error("idempotency error ({status}): {message}")]
    Idempotency {
        /// 400 or 409.
        status: u16,
        /// Stripe's message.
        message: String,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// HTTP 429: too many requests (`rate_limit`) or the object is locked by another request
    /// (`lock_timeout`).
    #[error("rate limited by Stripe ({}): {message}", if *lock_timeout { "lock_timeout" } else { "rate_limit" })]
    RateLimited {
        /// `code = lock_timeout`: another request holds the object.
        lock_timeout: bool,
        /// Stripe's message.
        message: String,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// HTTP 5xx: Stripe's side failed.
    #[error("Stripe API error ({status}): {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// Stripe's message, or the status text.
        message: String,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// The network: connection refused or reset, DNS, TLS, timeout.
    #[error("network error talking to Stripe: {0}")]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer whose body is not the expected object.
    #[error("unexpected Stripe response ({status}): {source}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The call was refused before sending: params that do not encode, or an id that cannot be
    /// part of a URL path.
    #[error("invalid params: {0}")]
    InvalidParams(String),
}

impl From<FormError> for StripeError {
    fn from(err: FormError) -> Self {
        StripeError::InvalidParams(err.to_string())
    }
}

impl StripeError {
    /// Whether the same call may succeed later: network errors, 409, 429 and 5xx. The client has
    /// already retried these (unless `Stripe-Should-Retry: false`); a job can retry them later with
    /// the same idempotency key. Everything else is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Transport(_)
            | StripeError::RateLimited { .. }
            | StripeError::Api { .. } => true,
            StripeError::Idempotency { status, .. } => *status == 409,
            _ => false,
        }
    }

    /// Whether Stripe may have carried out the request although this answer does not say what
    /// became of it, so a caller must look the object up before doing anything else about it:
    /// a network failure or time-out (the request may have reached Stripe), a 2xx whose body did
    /// not decode (Stripe acted), a 5xx (Stripe: "Treat the result of a 500 request as
    /// indeterminate", docs: advanced error handling; a saved 500 is replayed to the same key),
    /// and an idempotency error (400: an earlier request with this key but other parameters may
    /// have acted; 409: one is still running). Never true for a 402 decline, a 429 or another
    /// 4xx: Stripe refused those before acting.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            StripeError::Transport(_)
                | StripeError::Decode { .. }
                | StripeError::Api { .. }
                | StripeError::Idempotency { .. }
        )
    }

    /// Whether the call timed out waiting for Stripe (a [`StripeError::Transport`] error).
    pub fn is_timeout(&self) -> bool {
        matches!(self, StripeError::Transport(e) if e.is_timeout())
    }

    /// Whether this is Stripe's 400 `idempotency_error`: the key was first used with other
    /// parameters.
    pub fn is_idempotency_mismatch(&self) -> bool {
        matches!(self, StripeError::Idempotency { status: 400, .. })
    }

    /// Whether Stripe said the object does not exist (`resource_missing`).
    pub fn is_resource_missing(&self) -> bool {
        matches!(self, StripeError::InvalidRequest { code: Some(code), .. } if code == "resource_missing")
    }

    /// Stripe's `Request-Id` for this failure, when Stripe answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StripeError::Card { request_id, .. }
            | StripeError::InvalidRequest { request_id, .. }
            | StripeError::Authentication { request_id, .. }
            | StripeError::Permission { request_id, .. }
            | StripeError::Idempotency { request_id, .. }
            | StripeError::RateLimited { request_id, .. }
            | StripeError::Api { request_id, .. }
            | StripeError::Decode { request_id, .. } => request_id.as_deref(),
            StripeError::Transport(_) | StripeError::InvalidParams(_) => None,
        }
    }

    /// Builds the error for a non-2xx answer from its status and body.
    pub fn from_response(status: u16, body: &[u8], request_id: Option<String>) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: ErrorObject,
        }
        let error = serde_json::from_slice::<Envelope>(body)
            .map(|e| e.error)
            .unwrap_or_default();
        let code = error.code;
        let message = error
            .message
            .unwrap_or_else(|| format!("HTTP {status} with no error message"));

        if error.type_ == ErrorType::CardError || status == 402 {
            return StripeError::Card {
                code,
                decline_code: error.decline_code,
                message,
                payment_intent: error.payment_intent,
                payment_method: error.payment_method,
                setup_intent: error.setup_intent,
                request_id,
            };
        }
        if error.type_ == ErrorType::IdempotencyError || status == 409 {
            return StripeError::Idempotency {
                status,
                message,
                request_id,
            };
        }
        match status {
            401 => StripeError::Authentication {
                message,
                request_id,
            },
            403 => StripeError::Permission {
                permission: missing_permission(&message),
                message,
                request_id,
            },
            429 => StripeError::RateLimited {
                lock_timeout: code.as_deref() == Some("lock_timeout"),
                message,
                request_id,
            },
            500.. => StripeError::Api {
                status,
                message,
                request_id,
            },
            _ => StripeError::InvalidRequest {
                status,
                code,
                param: error.param,
                message,
                request_id,
            },
        }
    }
}

/// Finds the permission a restricted key lacks in Stripe's 403 message, which reads:
/// "The provided key 'rk_test_***' does not have the required permissions for this endpoint on
/// account 'acct_…'. Having the 'rak_charge_write' permission would allow this request to continue."
fn missing_permission(message: &str) -> Option<String> {
    let rest = &message[message.find("Having the ")? + "Having the ".len()..];
    let name: String = rest
        .trim_start_matches(['\'', '‘', '’', '"', '`'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::PaymentIntentStatus;
    use serde_json::json;

    fn parse(status: u16, body: serde_json::Value) -> StripeError {
        StripeError::from_response(
            status,
            body.to_string().as_bytes(),
            Some("req_123".to_owned()),
        )
    }

    #[test]
    fn card_decline_carries_the_payment_intent() {
        let err = parse(
            402,
            json!({"error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                "payment_intent": {
                    "id": "pi_1", "object": "payment_intent", "amount": 1000, "currency": "jpy",
                    "status": "requires_payment_method",
                    "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline"}
                },
                "payment_method": {"id": "pm_1", "object": "payment_method", "type": "card",
                    "card": {"brand": "visa", "last4": "0002", "exp_month": 12, "exp_year": 2034}}
            }}),
        );
        let StripeError::Card {
            code,
            decline_code,
            message,
            payment_intent,
            payment_method,
            request_id,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(code.as_deref(), Some("card_declined"));
        assert_eq!(decline_code.as_deref(), Some("generic_decline"));
        assert_eq!(message, "Your card was declined.");
        let pi = payment_intent.as_ref().unwrap();
        assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
        assert_eq!(
            pi.last_payment_error.as_ref().unwrap().code.as_deref(),
            Some("card_declined")
        );
        assert_eq!(
            payment_method
                .as_ref()
                .unwrap()
                .card
                .as_ref()
                .unwrap()
                .last4,
            "0002"
        );
        assert_eq!(request_id.as_deref(), Some("req_123"));
        assert!(!err.is_transient());
        assert_eq!(err.request_id(), Some("req_123"));
    }

    #[test]
    fn invalid_requests_and_resource_missing() {
        let err = parse(
            404,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "id",
                "message": "No such customer: 'cus_x'"}}),
        );
        assert!(err.is_resource_missing());
        assert!(!err.is_transient());
        let StripeError::InvalidRequest { status, param, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*status, param.as_deref()), (404, Some("id")));

        let err = parse(
            400,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "param": "amount", "message": "Missing required param: amount."}}),
        );
        assert!(!err.is_resource_missing());
        assert!(matches!(
            err,
            StripeError::InvalidRequest { status: 400, .. }
        ));
    }

    #[test]
    fn authentication_and_permission() {
        let err = parse(
            401,
            json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****1234"}}),
        );
        assert!(matches!(err, StripeError::Authentication { .. }));

        let err = parse(
            403,
            json!({"error": {"type": "invalid_request_error", "message":
                "The provided key 'rk_test_***Cb3gph' does not have the required permissions for this endpoint on account 'acct_1NuzflB0DBR1HOyc'. Having the 'rak_payment_intent_write' permission would allow this request to continue."}}),
        );
        let StripeError::Permission { permission, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(permission.as_deref(), Some("rak_payment_intent_write"));
        assert!(err.to_string().contains("rak_payment_intent_write"));
        assert!(!err.is_transient());
    }

    #[test]
    fn permission_name_with_typographic_quotes_or_none() {
        assert_eq!(
            missing_permission("… Having the ‘rak_subscription_read’ permission would allow this request to continue.").as_deref(),
            Some("rak_subscription_read")
        );
        assert_eq!(missing_permission("Forbidden."), None);
        assert_eq!(missing_permission("Having the '' permission"), None);
    }

    #[test]
    fn idempotency_errors() {
        let err = parse(
            400,
            json!({"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}}),
        );
        assert!(matches!(err, StripeError::Idempotency { status: 400, .. }));
        assert!(!err.is_transient());
        assert!(err.is_idempotency_mismatch());
        assert!(
            err.outcome_unknown(),
            "an earlier request with this key may have acted"
        );

        let err = parse(
            409,
            json!({"error": {"type": "invalid_request_error", "message": "There is currently another in-progress request using this Stripe token (that probably means you clicked twice), and the server doesn't want to process it again."}}),
        );
        assert!(matches!(err, StripeError::Idempotency { status: 409, .. }));
        assert!(err.is_transient());
        assert!(!err.is_idempotency_mismatch());
        assert!(err.outcome_unknown());
    }

    #[test]
    fn rate_limits_and_server_errors() {
        let err = parse(
            429,
            json!({"error": {"type": "invalid_request_error", "code": "lock_timeout", "message": "This object cannot be accessed right now because another API request or Stripe process is currently accessing it."}}),
        );
        assert!(matches!(
            err,
            StripeError::RateLimited {
                lock_timeout: true,
                ..
            }
        ));
        assert!(err.is_transient());
        let err = parse(
            429,
            json!({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests."}}),
        );
        assert!(matches!(
            err,
            StripeError::RateLimited {
                lock_timeout: false,
                ..
            }
        ));

        let err = parse(
            500,
            json!({"error": {"type": "api_error", "message": "Something went wrong."}}),
        );
        assert!(matches!(err, StripeError::Api { status: 500, .. }));
        assert!(err.is_transient());
        assert!(err.outcome_unknown(), "a 500's result is indeterminate");
    }

    #[test]
    fn refusals_are_known_outcomes_and_undecodable_successes_are_not() {
        for (status, body) in [
            (
                402,
                json!({"error": {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}}),
            ),
            (
                429,
                json!({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests."}}),
            ),
            (
                400,
                json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "message": "Missing required param: amount."}}),
            ),
            (
                404,
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such customer"}}),
            ),
        ] {
            let err = parse(status, body);
            assert!(
                !err.outcome_unknown(),
                "{status}: Stripe refused before acting"
            );
        }
        // A 2xx whose body is not the object: Stripe acted, the answer is lost; not permanent
        // in the sense of "nothing happened".
        let source = serde_json::from_slice::<PaymentIntentStatus>(b"{").unwrap_err();
        let err = StripeError::Decode {
            status: 200,
            request_id: None,
            source,
        };
        assert!(err.outcome_unknown());
        assert!(!err.is_transient());
        assert!(!err.is_timeout());
    }

    #[test]
    fn bodies_that_are_not_stripe_errors() {
        let err = StripeError::from_response(502, b"<html>Bad Gateway</html>", None);
        let StripeError::Api {
            status, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, 502);
        assert!(message.contains("502"));
        assert!(err.is_transient());
        let err = StripeError::from_response(418, b"", None);
        assert!(matches!(
            err,
            StripeError::InvalidRequest { status: 418, .. }
        ));
    }
}
