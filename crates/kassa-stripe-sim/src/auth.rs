//! API keys: which are accepted, the mode each addresses, and Stripe's answers for the others.
//!
//! Stripe: authenticate with `Authorization: Bearer sk_…`, or HTTP Basic with the key as the user name and
//! no password (docs: authentication). Keys come in three kinds — secret (`sk_`), restricted (`rk_`) and
//! publishable (`pk_`) — each in test mode (`*_test_`) or live mode (`*_live_`) (docs: API keys). The
//! simulator is one account: it accepts any well-formed key of either mode, and the key's mode picks
//! which of the account's two sets of objects a request sees ([`crate::mode`]).
//!
//! Stripe.js sends the publishable key as the `key` form (or query) parameter rather than a header, so
//! that its requests stay CORS "simple requests"; the simulator accepts a publishable key there too
//! (never a secret key: those belong in a header, not in a URL).

use http::HeaderMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::mode::Mode;

/// The kind of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// `sk_…`: every server call.
    Secret,
    /// `rk_…`: a restricted key (the simulator grants every permission).
    Restricted,
    /// `pk_…`: only what Stripe lets a browser do ([`crate::publishable`]).
    Publishable,
}

/// The key a request authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key itself (never logged or recorded; see [`key_fingerprint`]).
    pub key: String,
    /// Secret, restricted or publishable.
    pub kind: KeyKind,
    /// The mode the key addresses.
    pub mode: Mode,
}

impl ApiKey {
    /// What the request log records instead of the key.
    pub fn fingerprint(&self) -> String {
        key_fingerprint(&self.key)
    }
}

/// A stable fingerprint of a key for logs and tests: the first 16 hex digits of its SHA-256. Tests
/// compute it for the key they expect and compare it with `/_sim/requests`; the key never appears.
pub fn key_fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// The raw key of a request: the `Authorization` header, or (publishable keys only, as Stripe.js
/// sends it) the `key` parameter.
fn raw_key(headers: &HeaderMap, key_param: Option<&str>) -> Result<String, ApiError> {
    let Some(raw) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return match key_param {
            Some(k) if k.starts_with("pk_") => Ok(k.to_owned()),
            _ => Err(no_key()),
        };
    };
    let raw = raw.trim();
    let key = if let Some(token) = strip_prefix_ci(raw, "bearer ") {
        token.trim().to_owned()
    } else if let Some(b64) = strip_prefix_ci(raw, "basic ") {
        let decoded = base64_decode(b64.trim()).ok_or_else(no_key)?;
        let text = String::from_utf8_lossy(&decoded).into_owned();
        text.split(':').next().unwrap_or_default().to_owned()
    } else {
        return Err(no_key());
    };
    if key.is_empty() {
        return Err(no_key());
    }
    Ok(key)
}

/// The API key of a request, or Stripe's 401. `key_param` is the request's `key` parameter, if any.
pub fn api_key(headers: &HeaderMap, key_param: Option<&str>) -> Result<ApiKey, ApiError> {
    let key = raw_key(headers, key_param)?;
    let (kind, mode) = check(&key)?;
    Ok(ApiKey { key, kind, mode })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn no_key() -> ApiError {
    // Stripe's wording for a request without a key.
    ApiError::unauthorized(
        "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.".to_owned(),
    )
}

fn check(key: &str) -> Result<(KeyKind, Mode), ApiError> {
    let valid_chars = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let kinds = [
        ("sk_", KeyKind::Secret),
        ("rk_", KeyKind::Restricted),
        ("pk_", KeyKind::Publishable),
    ];
    for (prefix, kind) in kinds {
        for mode in Mode::ALL {
            let full = format!("{prefix}{}_", mode.name());
            if let Some(rest) = key.strip_prefix(&full) {
                if !rest.is_empty() && valid_chars {
                    return Ok((kind, mode));
                }
            }
        }
    }
    // Stripe masks all but the last four characters: "Invalid API Key provided: sk_test_****1234".
    let shown = match key.rfind('_') {
        Some(i) if i + 1 < key.len() && key.is_char_boundary(i + 1) => {
            let tail: String = key
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{}****{tail}", &key[..=i])
        }
        _ => "****".to_owned(),
    };
    Err(ApiError::unauthorized(format!(
        "Invalid API Key provided: {shown}"
    )))
}

/// Standard base64 (with or without padding); `None` when the text is not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let b = acc.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(auth).unwrap(),
        );
        h
    }

    fn key(auth: &str) -> Result<ApiKey, ApiError> {
        api_key(&with(auth), None)
    }

    #[test]
    fn bearer_and_basic() {
        assert_eq!(key("Bearer sk_test_abc").unwrap().key, "sk_test_abc");
        assert_eq!(key("Bearer rk_test_abc").unwrap().kind, KeyKind::Restricted);
        // "sk_test_abc:" in base64.
        assert_eq!(key("Basic c2tfdGVzdF9hYmM6").unwrap().key, "sk_test_abc");
    }

    #[test]
    fn every_kind_in_both_modes() {
        for (k, kind, mode) in [
            ("sk_test_1", KeyKind::Secret, Mode::Test),
            ("sk_live_1", KeyKind::Secret, Mode::Live),
            ("rk_test_1", KeyKind::Restricted, Mode::Test),
            ("rk_live_1", KeyKind::Restricted, Mode::Live),
            ("pk_test_1", KeyKind::Publishable, Mode::Test),
            ("pk_live_1", KeyKind::Publishable, Mode::Live),
        ] {
            let got = key(&format!("Bearer {k}")).unwrap();
            assert_eq!((got.kind, got.mode), (kind, mode), "{k}");
        }
    }

    #[test]
    fn a_publishable_key_may_come_as_the_key_parameter_a_secret_key_may_not() {
        let got = api_key(&HeaderMap::new(), Some("pk_live_abc")).unwrap();
        assert_eq!((got.kind, got.mode), (KeyKind::Publishable, Mode::Live));
        assert_eq!(
            api_key(&HeaderMap::new(), Some("sk_test_abc"))
                .unwrap_err()
                .status,
            401
        );
        // The header wins over the parameter.
        assert_eq!(
            api_key(&with("Bearer sk_test_h"), Some("pk_test_p"))
                .unwrap()
                .key,
            "sk_test_h"
        );
    }

    #[test]
    fn fingerprints_are_stable_and_hide_the_key() {
        let f = key_fingerprint("sk_live_secret_value");
        assert_eq!(f.len(), 16);
        assert_eq!(f, key_fingerprint("sk_live_secret_value"));
        assert_ne!(f, key_fingerprint("sk_live_secret_valuf"));
        assert!(!f.contains("secret"));
    }

    #[test]
    fn refusals() {
        let e = api_key(&HeaderMap::new(), None).unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(e.error["type"], "invalid_request_error");
        let e = key("Bearer sk_other_12345678").unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(
            e.error["message"],
            "Invalid API Key provided: sk_other_****5678"
        );
        assert_eq!(key("Bearer sk_live_").unwrap_err().status, 401);
        assert_eq!(key("Bearer nonsense").unwrap_err().status, 401);
        assert_eq!(key("Basic !!!").unwrap_err().status, 401);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
    }
}
