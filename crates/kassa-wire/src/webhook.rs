//! Stripe webhook signature verification: pure functions, no I/O, no clock of their own.
//!
//! Stripe signs `"{t}.{raw body}"` with HMAC-SHA256 under the endpoint secret (`whsec_…`) and sends
//! `Stripe-Signature: t=…,v1=…[,v1=…][,v0=…]`. Only the raw bytes verify: re-serialised JSON does not.
//! During a secret roll an endpoint has two secrets, so any `v1` that any configured secret produces
//! is accepted. `v0` (a dummy in test mode) and unknown keys are ignored.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::time::Duration;

/// Stripe's default tolerance for the signature timestamp (its libraries use 300 s).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The name of the header Stripe puts the signature in.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Why a webhook was refused; each maps to one error code in the ingress's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header at all.
    #[error("the Stripe-Signature header is missing")]
    Missing,
    /// The header is not `key=value` pairs with exactly one integer `t`.
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The header carries no `v1` signature (only `v0` or unknown schemes).
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1,
    /// The signed timestamp is further from now than the tolerance, in either direction.
    #[error("the signature timestamp is {age_secs} s from now, outside the {tolerance_secs} s tolerance")]
    TimestampOutOfTolerance {
        /// Signed distance: positive for past timestamps, negative for future ones.
        age_secs: i64,
        /// The tolerance in force.
        tolerance_secs: u64,
    },
    /// Well-formed, in time, but no configured secret produced any of the `v1` signatures.
    #[error("no v1 signature matches any configured webhook secret")]
    NoMatch,
}

impl SignatureError {
    /// A stable machine-readable code, used in HTTP error bodies and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed(_) => "signature_malformed",
            SignatureError::NoV1 => "signature_no_v1",
            SignatureError::TimestampOutOfTolerance { .. } => "timestamp_out_of_tolerance",
            SignatureError::NoMatch => "signature_invalid",
        }
    }
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The signed Unix timestamp.
    pub timestamp: i64,
    /// Every `v1` signature, decoded from hex. Entries that are not 64 hex digits (the 32 bytes
    /// of an HMAC-SHA256) are dropped (they can match nothing) but still count as "a v1 was
    /// present".
    pub v1: Vec<[u8; 32]>,
    v1_present: bool,
}

/// Parses `t=…,v1=…,v0=…`; `v0` and unknown keys are ignored, as Stripe's libraries do.
pub fn parse_signature_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut v1_present = false;
    for part in header.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once('=')
            .ok_or(SignatureError::Malformed("an element is not key=value"))?;
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one t"));
                }
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("t is not an integer"))?;
                timestamp = Some(t);
            }
            "v1" => {
                v1_present = true;
                let mut bytes = [0; 32];
                if hex::decode_to_slice(value.trim(), &mut bytes).is_ok() {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t timestamp"))?;
    Ok(SignatureHeader {
        timestamp,
        v1,
        v1_present,
    })
}

/// The webhook secrets an endpoint accepts (more than one during a rotation) and the tolerance.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<SecretString>,
    tolerance: Duration,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier {
    /// A verifier for these secrets with Stripe's default 300 s tolerance.
    pub fn new(secrets: Vec<SecretString>) -> Self {
        Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// Replaces the timestamp tolerance.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How many secrets are configured.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// The configured secrets (still wrapped: `Debug` does not print them).
    pub fn secrets(&self) -> &[SecretString] {
        &self.secrets
    }

    /// Verifies `header` over the raw `body` at Unix time `now`.
    ///
    /// Order of checks: header present → parsed → has v1 → timestamp within tolerance (past or
    /// future) → some secret matches some v1, compared in constant time.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify_stripe_signature(header, body, &self.secrets, self.tolerance, now)
    }
}

/// Verifies a `Stripe-Signature` header against every secret; see [`WebhookVerifier::verify`].
pub fn verify_stripe_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let header = parse_signature_header(header.ok_or(SignatureError::Missing)?)?;
    if !header.v1_present {
        return Err(SignatureError::NoV1);
    }
    let age = now.saturating_sub(header.timestamp);
    let tolerance_secs = tolerance.as_secs();
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::TimestampOutOfTolerance {
            age_secs: age,
            tolerance_secs,
        });
    }
    for secret in secrets {
        let mac = signed_payload_mac(secret.expose_secret(), header.timestamp, body);
        for candidate in &header.v1 {
            // `verify_slice` compares in constant time.
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// Builds a `Stripe-Signature` header value as Stripe would, for tests, benchmarks and tools.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = signed_payload_mac(secret, timestamp, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

fn signed_payload_mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;

    fn secrets(s: &[&str]) -> Vec<SecretString> {
        s.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    fn verify(header: Option<&str>, body: &[u8], s: &[&str]) -> Result<(), SignatureError> {
        WebhookVerifier::new(secrets(s)).verify(header, body, NOW)
    }

    #[test]
    fn a_signature_made_by_another_implementation_verifies() {
        // Computed with Python's hmac module, independently of this code:
        // hmac.new(b"whsec_test", b'1700000000.{"id":"evt_1"}', sha256).hexdigest()
        let body = br#"{"id":"evt_1"}"#;
        let header =
            "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";
        assert_eq!(verify(Some(header), body, &["whsec_test"]), Ok(()));
        assert_eq!(sign("whsec_test", NOW, body), header);
        assert_eq!(
            verify(Some(header), body, &["whsec_other"]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn header_errors_are_told_apart() {
        let body = b"{}";
        assert_eq!(verify(None, body, &["s"]), Err(SignatureError::Missing));
        assert!(matches!(
            verify(Some("garbage"), body, &["s"]),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("t=abc,v1=00"), body, &["s"]),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("v1=00"), body, &["s"]),
            Err(SignatureError::Malformed(_))
        ));
        assert_eq!(
            verify(Some("t=1700000000,v0=abcd"), body, &["s"]),
            Err(SignatureError::NoV1)
        );
        assert_eq!(
            verify(Some("t=1700000000,v1=zz"), body, &["s"]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn v0_and_unknown_keys_are_ignored_and_any_v1_may_match() {
        let body = b"{\"id\":\"evt_2\"}";
        let good = sign("whsec_a", NOW, body);
        let v1 = good.split("v1=").nth(1).unwrap_or_default();
        let header = format!("t={NOW},v0=deadbeef,x=1,v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify(Some(&header), body, &["whsec_a"]), Ok(()));
    }

    #[test]
    fn a_v1_of_another_length_matches_nothing_but_counts_as_a_v1() {
        let body = b"{\"id\":\"evt_3\"}";
        let good = sign("whsec_a", NOW, body);
        let v1 = good.split("v1=").nth(1).unwrap_or_default();
        // The right signature with a byte cut off, or one added: valid hex, wrong length.
        for wrong in [&v1[..62], &format!("{v1}00")[..]] {
            let header = format!("t={NOW},v1={wrong}");
            assert_eq!(
                verify(Some(&header), body, &["whsec_a"]),
                Err(SignatureError::NoMatch),
                "{header}"
            );
        }
        // Next to the right one it changes nothing.
        let header = format!("t={NOW},v1={},v1={v1}", &v1[..62]);
        assert_eq!(verify(Some(&header), body, &["whsec_a"]), Ok(()));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let body = b"{}";
        let stale = sign("s", NOW - 301, body);
        let future = sign("s", NOW + 301, body);
        let edge = sign("s", NOW - 300, body);
        assert!(matches!(
            verify(Some(&stale), body, &["s"]),
            Err(SignatureError::TimestampOutOfTolerance { age_secs: 301, .. })
        ));
        assert!(matches!(
            verify(Some(&future), body, &["s"]),
            Err(SignatureError::TimestampOutOfTolerance { age_secs: -301, .. })
        ));
        assert_eq!(verify(Some(&edge), body, &["s"]), Ok(()));
        let wide = WebhookVerifier::new(secrets(&["s"])).with_tolerance(Duration::from_secs(600));
        assert_eq!(wide.verify(Some(&stale), body, NOW), Ok(()));
    }

    #[test]
    fn either_of_two_secrets_verifies_during_rotation() {
        let body = b"{}";
        for s in ["whsec_old", "whsec_new"] {
            let header = sign(s, NOW, body);
            assert_eq!(
                verify(Some(&header), body, &["whsec_old", "whsec_new"]),
                Ok(())
            );
        }
        let header = sign("whsec_other", NOW, body);
        assert_eq!(
            verify(Some(&header), body, &["whsec_old", "whsec_new"]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let v = WebhookVerifier::new(secrets(&["whsec_topsecret"]));
        assert!(!format!("{v:?}").contains("topsecret"));
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(body in proptest::collection::vec(any::<u8>(), 0..2048),
                                        secret in "whsec_[a-zA-Z0-9]{1,40}",
                                        skew in -300i64..=300) {
            let header = sign(&secret, NOW + skew, &body);
            prop_assert_eq!(verify(Some(&header), &body, &[&secret]), Ok(()));
        }

        #[test]
        fn any_flipped_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..1024),
                                  index in any::<prop::sample::Index>(),
                                  bit in 0u8..8) {
            let header = sign("whsec_k", NOW, &body);
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(verify(Some(&header), &tampered, &["whsec_k"]), Err(SignatureError::NoMatch));
        }

        #[test]
        fn another_secret_fails(body in proptest::collection::vec(any::<u8>(), 0..512),
                                a in "[a-z]{1,20}", b in "[a-z]{1,20}") {
            prop_assume!(a != b);
            let header = sign(&a, NOW, &body);
            prop_assert_eq!(verify(Some(&header), &body, &[&b]), Err(SignatureError::NoMatch));
        }

        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = verify(Some(&header), &body, &["s"]);
        }
    }
}
