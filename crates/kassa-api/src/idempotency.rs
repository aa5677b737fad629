//! The caller's `Idempotency-Key` header, read the same way by every route that calls Stripe.
//!
//! The header is 1 to [`MAX_CALLER_KEY`] visible ASCII characters; anything else is `400
//! invalid_idempotency_key`. Kassa sends Stripe `kassa:{installation}:{scope}:{caller's key}`
//! (the scheme is kassa-core's [`kassa_core::keys`]), so a client retrying after a time-out gets
//! the first result back instead of a second object, two installations on one Stripe account
//! never meet, and the same key with other parameters is Stripe's `idempotency_error` (answered
//! `409 idempotency_key_reused`).
//!
//! Routes that can move money ([`required`]: legacy charges, PaymentIntents, Checkout Sessions)
//! refuse a request without the header with `400 idempotency_key_required` before anything is
//! sent to Stripe: a key Kassa made up would be different on the client's retry, and the retry
//! would charge twice. Other routes ([`optional`]: customers, products) take a fresh key when
//! none is given. Stripe remembers a key for 24 hours.

use crate::error::ApiError;
use axum::http::HeaderMap;
use kassa_core::keys;
use kassa_stripe::IdempotencyKey;

pub use kassa_core::keys::MAX_CALLER_KEY;

/// The header's name.
pub const HEADER: &str = "idempotency-key";

/// The caller's key, if the request has one; a malformed key is refused. An empty header counts
/// as none.
pub fn caller_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key: 1 to {MAX_CALLER_KEY} visible ASCII characters (no spaces), e.g. a UUID or your order number"
            ),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() {
        return Ok(None);
    }
    if !keys::well_formed_caller_key(key) {
        return Err(invalid());
    }
    Ok(Some(key))
}

/// The Stripe key for a route that can move money: the caller's key under `scope`, or
/// `400 idempotency_key_required`.
pub fn required(
    headers: &HeaderMap,
    installation: &str,
    scope: &str,
) -> Result<IdempotencyKey, ApiError> {
    let key = caller_key(headers)?.ok_or_else(|| {
        ApiError::bad_request(
            "idempotency_key_required",
            "this request can move money: send an Idempotency-Key header (e.g. a UUID or your \
             order number) and send the same key again when you retry it, so a retry never \
             charges twice",
        )
    })?;
    Ok(keys::caller(installation, scope, key)?)
}

/// The Stripe key for a route that moves no money: the caller's key under `scope`, or a fresh
/// one.
pub fn optional(
    headers: &HeaderMap,
    installation: &str,
    scope: &str,
) -> Result<IdempotencyKey, ApiError> {
    match caller_key(headers)? {
        Some(key) => Ok(keys::caller(installation, scope, key)?),
        None => Ok(keys::fresh(installation, scope)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLATION: &str = "0123456789abcdef";

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert(HEADER, key.parse().unwrap());
        }
        headers
    }

    #[test]
    fn money_moving_routes_require_the_callers_key() {
        let required = |h: &HeaderMap, scope| required(h, INSTALLATION, scope);
        assert_eq!(
            required(&headers(None), "payment_intent").unwrap_err().code,
            "idempotency_key_required"
        );
        assert_eq!(
            required(&headers(Some("")), "payment_intent")
                .unwrap_err()
                .code,
            "idempotency_key_required",
            "an empty header is no key"
        );
        assert_eq!(
            required(&headers(Some("order-7")), "payment_intent")
                .unwrap()
                .as_str(),
            "kassa:0123456789abcdef:payment_intent:order-7"
        );
    }

    #[test]
    fn other_routes_take_the_callers_key_or_a_fresh_one() {
        let optional = |h: &HeaderMap, scope| optional(h, INSTALLATION, scope);
        let a = optional(&headers(None), "connector:customer").unwrap();
        let b = optional(&headers(None), "connector:customer").unwrap();
        assert_ne!(a, b);
        assert!(a
            .as_str()
            .starts_with("kassa:0123456789abcdef:connector:customer:"));
        assert_eq!(
            optional(&headers(Some("crm-7")), "connector:product")
                .unwrap()
                .as_str(),
            "kassa:0123456789abcdef:connector:product:crm-7"
        );
    }

    #[test]
    fn one_rule_for_a_malformed_key_on_every_route() {
        for bad in ["has space", &"k".repeat(MAX_CALLER_KEY + 1), "tab\tin"] {
            for result in [
                required(&headers(Some(bad)), INSTALLATION, "checkout"),
                optional(&headers(Some(bad)), INSTALLATION, "connector:product"),
            ] {
                assert_eq!(
                    result.unwrap_err().code,
                    "invalid_idempotency_key",
                    "{bad:?}"
                );
            }
        }
        assert!(required(
            &headers(Some(&"k".repeat(MAX_CALLER_KEY))),
            INSTALLATION,
            "checkout"
        )
        .is_ok());
    }
}
