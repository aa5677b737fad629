//! Stripe API keys: which kind a key is, parsed once at start, and the secret itself kept out of logs.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// Test mode (sandbox) or live mode; a key and an event must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `sk_test_…` / `rk_test_…`: no real money moves.
    Test,
    /// `sk_live_…` / `rk_live_…`.
    Live,
}

impl Mode {
    /// The mode an event's `livemode` flag stands for.
    pub fn from_livemode(livemode: bool) -> Self {
        if livemode {
            Mode::Live
        } else {
            Mode::Test
        }
    }

    /// Whether this is live mode (what Stripe calls `livemode`).
    pub fn is_live(self) -> bool {
        self == Mode::Live
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Test => "test",
            Mode::Live => "live",
        })
    }
}

/// Why a string is not a usable server-side Stripe key. Never carries the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("the Stripe API key is empty")]
    Empty,
    /// A publishable key (`pk_…`): meant for browsers, refused for server calls.
    #[error("a publishable key (pk_…) cannot make server-side Stripe calls; use a secret (sk_…) or restricted (rk_…) key")]
    Publishable,
    /// Not a Stripe API key at all (e.g. a webhook secret `whsec_…`).
    #[error("not a Stripe secret or restricted API key: expected sk_test_, sk_live_, rk_test_ or rk_live_")]
    UnknownKind,
    /// The right prefix but nothing after it, or characters no Stripe key has.
    #[error("the Stripe API key is malformed (empty after its prefix, or has whitespace or control characters)")]
    Malformed,
}

/// A server-side Stripe key with its kind: secret (`sk_`) or restricted (`rk_`), test or live.
///
/// `Debug` shows the kind only, never the key.
#[derive(Clone)]
pub struct ApiKey {
    secret: SecretString,
    /// Test or live, from the key's prefix.
    pub mode: Mode,
    /// `rk_…`: a restricted key, limited to the permissions it was given.
    pub restricted: bool,
}

impl ApiKey {
    /// Parses the key's kind from its prefix; publishable and unknown keys are refused.
    pub fn parse(secret: SecretString) -> Result<Self, KeyError> {
        let (mode, restricted) = {
            let key = secret.expose_secret();
            if key.is_empty() {
                return Err(KeyError::Empty);
            }
            let (mode, restricted, rest) = if let Some(rest) = key.strip_prefix("sk_test_") {
                (Mode::Test, false, rest)
            } else if let Some(rest) = key.strip_prefix("sk_live_") {
                (Mode::Live, false, rest)
            } else if let Some(rest) = key.strip_prefix("rk_test_") {
                (Mode::Test, true, rest)
            } else if let Some(rest) = key.strip_prefix("rk_live_") {
                (Mode::Live, true, rest)
            } else if key.starts_with("pk_") {
                return Err(KeyError::Publishable);
            } else {
                return Err(KeyError::UnknownKind);
            };
            // The key goes into an HTTP header: only visible ASCII can be sent as is.
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(KeyError::Malformed);
            }
            (mode, restricted)
        };
        Ok(ApiKey {
            secret,
            mode,
            restricted,
        })
    }

    /// The key itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("mode", &self.mode)
            .field("restricted", &self.restricted)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(key: &str) -> Result<ApiKey, KeyError> {
        ApiKey::parse(SecretString::from(key))
    }

    #[test]
    fn secret_and_restricted_keys_in_both_modes() {
        let cases = [
            ("sk_test_51Habc", Mode::Test, false),
            ("sk_live_51Habc", Mode::Live, false),
            ("rk_test_51Habc", Mode::Test, true),
            ("rk_live_51Habc", Mode::Live, true),
        ];
        for (key, mode, restricted) in cases {
            let parsed = parse(key).unwrap();
            assert_eq!(
                (parsed.mode, parsed.restricted),
                (mode, restricted),
                "{key}"
            );
            assert_eq!(parsed.expose(), key);
        }
    }

    #[test]
    fn publishable_and_other_keys_are_refused() {
        assert_eq!(parse("pk_test_51Habc").unwrap_err(), KeyError::Publishable);
        assert_eq!(parse("pk_live_51Habc").unwrap_err(), KeyError::Publishable);
        assert_eq!(parse("whsec_abc").unwrap_err(), KeyError::UnknownKind);
        assert_eq!(parse("sk_51Habc").unwrap_err(), KeyError::UnknownKind);
        assert_eq!(parse("SK_TEST_abc").unwrap_err(), KeyError::UnknownKind);
        assert_eq!(parse("").unwrap_err(), KeyError::Empty);
        assert_eq!(parse("sk_test_").unwrap_err(), KeyError::Malformed);
        assert_eq!(parse("sk_test_abc def").unwrap_err(), KeyError::Malformed);
        assert_eq!(parse("sk_test_abc\n").unwrap_err(), KeyError::Malformed);
    }

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let key = parse("sk_live_SuperSecret123").unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("SuperSecret123"), "{debug}");
        assert!(debug.contains("Live"));
        let err = parse("pk_live_SuperSecret123").unwrap_err();
        assert!(!err.to_string().contains("SuperSecret123"));
    }

    #[test]
    fn mode_follows_livemode() {
        assert_eq!(Mode::from_livemode(true), Mode::Live);
        assert_eq!(Mode::from_livemode(false), Mode::Test);
        assert!(Mode::Live.is_live());
        assert_eq!(Mode::Test.to_string(), "test");
    }
}
