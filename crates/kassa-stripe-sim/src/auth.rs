//! API keys: which are accepted, and Stripe's answers for the others.
//!
//! Stripe: authenticate with `Authorization: Bearer sk_…`, or HTTP Basic with the key as the user name and
//! no password (docs: authentication). The simulator is a sandbox: it accepts any `sk_test_`/`rk_test_` key;
//! live keys are unknown to it; publishable keys "cannot be used" for server calls.

use http::HeaderMap;

use crate::error::ApiError;

/// The API key of a request, or Stripe's 401/403 answer.
pub fn api_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(raw) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(no_key());
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
    check(&key)?;
    Ok(key)
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

fn check(key: &str) -> Result<(), ApiError> {
    let valid_chars = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    for prefix in ["sk_test_", "rk_test_"] {
        if let Some(rest) = key.strip_prefix(prefix) {
            if !rest.is_empty() && valid_chars {
                return Ok(());
            }
        }
    }
    if key.starts_with("pk_test_") || key.starts_with("pk_live_") {
        return Err(ApiError::publishable_key());
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

    #[test]
    fn bearer_and_basic() {
        assert_eq!(api_key(&with("Bearer sk_test_abc")).unwrap(), "sk_test_abc");
        assert_eq!(api_key(&with("Bearer rk_test_abc")).unwrap(), "rk_test_abc");
        // "sk_test_abc:" in base64.
        assert_eq!(
            api_key(&with("Basic c2tfdGVzdF9hYmM6")).unwrap(),
            "sk_test_abc"
        );
    }

    #[test]
    fn refusals() {
        let e = api_key(&HeaderMap::new()).unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(e.error["type"], "invalid_request_error");
        assert_eq!(api_key(&with("Bearer pk_test_x")).unwrap_err().status, 403);
        let e = api_key(&with("Bearer sk_live_12345678")).unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(
            e.error["message"],
            "Invalid API Key provided: sk_live_****5678"
        );
        assert_eq!(api_key(&with("Bearer nonsense")).unwrap_err().status, 401);
        assert_eq!(api_key(&with("Basic !!!")).unwrap_err().status, 401);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
    }
}
