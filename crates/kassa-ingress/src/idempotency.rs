//! The caller's `Idempotency-Key` header, read the same way by every route that calls Stripe.
//!
//! The header is 1 to [`MAX_CALLER_KEY`] visible ASCII characters (Stripe allows 255 and Kassa's
//! prefix takes the rest); anything else is `400 invalid_idempotency_key`. Kassa sends Stripe
//! `kassa:{scope}:{caller's key}`, so a client retrying after a time-out gets the first result
//! back instead of a second object, and the same key with other parameters is Stripe's
//! `idempotency_error` (answered `409 idempotency_key_reused`).
//!
//! Routes that can move money ([`required`]: legacy charges, PaymentIntents, Checkout Sessions)
//! refuse a request without the header with `400 idempotency_key_required` before anything is
//! sent to Stripe: a key Kassa made up would be different on the client's retry, and the retry
//! would charge twice. Other routes ([`optional`]: customers, products) take a fresh key when
//! none is given. Stripe remembers a key for 24 hours.

use crate::error::ApiError;
use axum::http::HeaderMap;
use kassa_stripe::IdempotencyKey;

/// The header's name.
pub const HEADER: &str = "idempotency-key";

/// Longest caller key accepted (Stripe allows 255; Kassa's prefix takes the rest).
pub const MAX_CALLER_KEY: usize = 200;

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
    if !well_formed(key) {
        return Err(invalid());
    }
    Ok(Some(key))
}

fn well_formed(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_CALLER_KEY && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The Stripe key for a key the caller gave some other way (a `--idempotency-key` flag), by the
/// header's rules.
pub fn given(scope: &str, key: &str) -> Result<IdempotencyKey, ApiError> {
    if !well_formed(key) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("1 to {MAX_CALLER_KEY} visible ASCII characters (no spaces)"),
        ));
    }
    scoped(scope, key)
}

/// A key under `scope` derived from a request's arguments (`name`, `value`; order matters): the
/// same arguments give the same key, so running the same command again within Stripe's 24
/// hours replays the first result instead of creating a second object.
pub fn derived(
    scope: &str,
    arguments: &[(&str, Option<&str>)],
) -> Result<IdempotencyKey, ApiError> {
    use sha2::{Digest, Sha256};
    // JSON keeps the encoding unambiguous (no value can fake a separator).
    let canonical = serde_json::to_string(arguments).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    scoped(scope, &format!("args-{digest}"))
}

/// The Stripe key for a route that can move money: the caller's key under `scope`, or
/// `400 idempotency_key_required`.
pub fn required(headers: &HeaderMap, scope: &str) -> Result<IdempotencyKey, ApiError> {
    let key = caller_key(headers)?.ok_or_else(|| {
        ApiError::bad_request(
            "idempotency_key_required",
            "this request can move money: send an Idempotency-Key header (e.g. a UUID or your \
             order number) and send the same key again when you retry it, so a retry never \
             charges twice",
        )
    })?;
    scoped(scope, key)
}

/// The Stripe key for a route that moves no money: the caller's key under `scope`, or a fresh
/// one.
pub fn optional(headers: &HeaderMap, scope: &str) -> Result<IdempotencyKey, ApiError> {
    match caller_key(headers)? {
        Some(key) => scoped(scope, key),
        None => fresh(scope),
    }
}

/// A fresh key under `scope`, for a request that has no key of its own (a browser form).
pub fn fresh(scope: &str) -> Result<IdempotencyKey, ApiError> {
    scoped(scope, &uuid::Uuid::new_v4().to_string())
}

/// `kassa:{scope}:{key}`.
fn scoped(scope: &str, key: &str) -> Result<IdempotencyKey, ApiError> {
    // installation id: keys of two installations on one Stripe account must not meet; the
    // installation's id belongs between `kassa:` and the scope once the process has it.
    IdempotencyKey::new(format!("kassa:{scope}:{key}")).map_err(|e| {
        ApiError::bad_request("invalid_idempotency_key", format!("Idempotency-Key: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert(HEADER, key.parse().unwrap());
        }
        headers
    }

    #[test]
    fn money_moving_routes_require_the_callers_key() {
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
            "kassa:payment_intent:order-7"
        );
    }

    #[test]
    fn other_routes_take_the_callers_key_or_a_fresh_one() {
        let a = optional(&headers(None), "connector:customer").unwrap();
        let b = optional(&headers(None), "connector:customer").unwrap();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("kassa:connector:customer:"));
        assert_eq!(
            optional(&headers(Some("crm-7")), "connector:product")
                .unwrap()
                .as_str(),
            "kassa:connector:product:crm-7"
        );
    }

    #[test]
    fn keys_derived_from_arguments_are_stable_and_tell_arguments_apart() {
        let args = [("amount", Some("1999")), ("currency", Some("usd"))];
        let a = derived("connector:legacy_charge", &args).unwrap();
        assert_eq!(a, derived("connector:legacy_charge", &args).unwrap());
        assert!(a
            .as_str()
            .starts_with("kassa:connector:legacy_charge:args-"));
        for other in [
            [("amount", Some("1998")), ("currency", Some("usd"))],
            [("amount", Some("1999")), ("currency", None)],
            [("amount", Some("1999\",")), ("currency", Some("usd"))],
        ] {
            assert_ne!(a, derived("connector:legacy_charge", &other).unwrap());
        }
        assert_ne!(a, derived("connector:customer", &args).unwrap());
        assert_eq!(
            given("connector:customer", "crm-7").unwrap().as_str(),
            "kassa:connector:customer:crm-7"
        );
        assert!(given("connector:customer", "two words").is_err());
    }

    #[test]
    fn one_rule_for_a_malformed_key_on_every_route() {
        for bad in ["has space", &"k".repeat(MAX_CALLER_KEY + 1), "tab\tin"] {
            for result in [
                required(&headers(Some(bad)), "checkout"),
                optional(&headers(Some(bad)), "connector:product"),
            ] {
                assert_eq!(
                    result.unwrap_err().code,
                    "invalid_idempotency_key",
                    "{bad:?}"
                );
            }
        }
        assert!(required(&headers(Some(&"k".repeat(MAX_CALLER_KEY))), "checkout").is_ok());
    }
}
