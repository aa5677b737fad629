//! Idempotent requests, as Stripe documents them (docs: idempotent requests):
//! - "Stripe's idempotency works by saving the resulting status code and body of the first request made for
//!   any given idempotency key, regardless of whether it succeeds or fails. Subsequent requests with the same
//!   key return the same result, including 500 errors." Replays carry `Idempotent-Replayed: true`.
//! - "The idempotency layer compares incoming parameters to those of the original request and errors if
//!   they're not the same" → 400 `idempotency_error`.
//! - "We save results only after the execution of an endpoint begins. If incoming parameters fail
//!   validation, or the request conflicts with another that was executing concurrently, we don't save the
//!   idempotent result" — a concurrent request answers 409.
//! - "You can remove keys from the system automatically after they're at least 24 hours old. We
//!   generate a new request if a key is reused after the original is pruned." The
//!   simulator forgets a key once it is 24 hours old on the simulator's clock ([`crate::clock`]), so
//!   `POST /_sim/clock/advance` lets a test reuse a key "a day later".
//! - Keys are scoped to the API key that sent them (one account, one mode).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

/// Keys this old (seconds on the simulator's clock) are forgotten.
pub const KEY_LIFETIME_SECS: i64 = 24 * 60 * 60;

/// What makes two requests "the same": method, path and decoded parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Decoded parameters.
    pub params: Value,
}

/// A saved first result.
#[derive(Debug, Clone)]
pub struct Saved {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: Bytes,
    /// `Request-Id` of the original request (sent back as `Original-Request`).
    pub request_id: String,
    /// `Stripe-Should-Retry` of the original answer.
    pub should_retry: Option<bool>,
}

#[derive(Debug)]
enum Entry {
    InFlight(Fingerprint),
    Done {
        fingerprint: Fingerprint,
        saved: Saved,
        /// When the result was saved, on the simulator's clock.
        at: i64,
    },
}

/// What to do with a request that carries an `Idempotency-Key`.
#[derive(Debug)]
pub enum Begin {
    /// First use of the key: execute (the key is now held).
    Execute,
    /// Same parameters as a finished request: answer with its saved result.
    Replay(Saved),
    /// Different parameters: 400 `idempotency_error`.
    Mismatch,
    /// The first request is still executing: 409.
    InFlight,
}

/// Every idempotency key seen, per API key.
#[derive(Debug, Default)]
pub struct IdempotencyStore {
    entries: HashMap<(String, String), Entry>,
    inserts: u64,
}

impl IdempotencyStore {
    /// Looks the key up at `now` (the simulator's clock) and, when it is new or forgotten,
    /// holds it for this request.
    pub fn begin(&mut self, scope: &str, key: &str, fingerprint: Fingerprint, now: i64) -> Begin {
        self.inserts += 1;
        if self.inserts.is_multiple_of(4096) {
            self.forget_expired(now);
        }
        let k = (scope.to_owned(), key.to_owned());
        match self.entries.get(&k) {
            Some(Entry::InFlight(_)) => Begin::InFlight,
            Some(Entry::Done {
                fingerprint: first,
                saved,
                at,
            }) if now - at < KEY_LIFETIME_SECS => {
                if *first == fingerprint {
                    Begin::Replay(saved.clone())
                } else {
                    Begin::Mismatch
                }
            }
            _ => {
                self.entries.insert(k, Entry::InFlight(fingerprint));
                Begin::Execute
            }
        }
    }

    /// Forgets every saved result that is 24 hours old at `now`; returns how many.
    pub fn forget_expired(&mut self, now: i64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| !matches!(e, Entry::Done { at, .. } if now - *at >= KEY_LIFETIME_SECS));
        before - self.entries.len()
    }

    /// Ends a held key at `now`: saves the result, or (`None`) frees the key for a retry.
    pub fn finish(&mut self, scope: &str, key: &str, saved: Option<Saved>, now: i64) {
        let k = (scope.to_owned(), key.to_owned());
        match saved {
            Some(saved) => {
                if let Some(Entry::InFlight(fp)) = self.entries.remove(&k) {
                    self.entries.insert(
                        k,
                        Entry::Done {
                            fingerprint: fp,
                            saved,
                            at: now,
                        },
                    );
                }
            }
            None => {
                if matches!(self.entries.get(&k), Some(Entry::InFlight(_))) {
                    self.entries.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(amount: u32) -> Fingerprint {
        Fingerprint {
            method: "POST".into(),
            path: "/v1/payment_intents".into(),
            params: json!({"amount": amount.to_string()}),
        }
    }

    fn saved() -> Saved {
        Saved {
            status: 200,
            body: Bytes::from_static(b"{}"),
            request_id: "req_1".into(),
            should_retry: None,
        }
    }

    #[test]
    fn replay_mismatch_and_in_flight() {
        let mut s = IdempotencyStore::default();
        assert!(matches!(
            s.begin("sk_test_a", "k", fp(100), 0),
            Begin::Execute
        ));
        assert!(matches!(
            s.begin("sk_test_a", "k", fp(100), 0),
            Begin::InFlight
        ));
        // Another API key has its own keys.
        assert!(matches!(
            s.begin("sk_test_b", "k", fp(100), 0),
            Begin::Execute
        ));
        s.finish("sk_test_a", "k", Some(saved()), 0);
        assert!(
            matches!(s.begin("sk_test_a", "k", fp(100), 1), Begin::Replay(r) if r.request_id == "req_1")
        );
        assert!(matches!(
            s.begin("sk_test_a", "k", fp(200), 1),
            Begin::Mismatch
        ));
    }

    #[test]
    fn keys_are_forgotten_once_24_hours_old() {
        let mut s = IdempotencyStore::default();
        let t0 = 1_700_000_000;
        assert!(matches!(s.begin("sk", "k", fp(1), t0), Begin::Execute));
        s.finish("sk", "k", Some(saved()), t0);
        let almost = t0 + KEY_LIFETIME_SECS - 1;
        assert!(matches!(
            s.begin("sk", "k", fp(1), almost),
            Begin::Replay(_)
        ));
        assert_eq!(s.forget_expired(almost), 0);
        let day_later = t0 + KEY_LIFETIME_SECS;
        assert_eq!(s.forget_expired(day_later), 1);
        // A reused key after the original was pruned is a new request: other params are fine.
        assert!(matches!(
            s.begin("sk", "k", fp(2), day_later),
            Begin::Execute
        ));
    }

    #[test]
    fn unsaved_results_free_the_key() {
        let mut s = IdempotencyStore::default();
        assert!(matches!(s.begin("sk", "k", fp(1), 0), Begin::Execute));
        s.finish("sk", "k", None, 0);
        assert!(matches!(s.begin("sk", "k", fp(2), 0), Begin::Execute));
    }
}
