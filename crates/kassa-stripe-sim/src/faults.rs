//! Fault injection on `/v1` requests: Stripe-side errors, rate limiters, and added latency.
//!
//! Injected errors happen before the endpoint executes (like a failure in front of Stripe's API servers),
//! so nothing is saved under the request's idempotency key and a retry with the same key executes — Stripe:
//! "We save results only after the execution of an endpoint begins" (docs: idempotent requests).
//!
//! Rate limits follow Stripe's (docs: rate limits): a global limit per account and mode ("Live mode:
//! 100 requests per second; Sandbox: 25"), and besides it a limit per endpoint ("Individual API
//! endpoints: 25 requests per second", each named operation being one endpoint whatever its ids). A
//! request above either answers 429 `rate_limit`; `Stripe-Rate-Limited-Reason` says which limiter
//! (`global-rate` or `endpoint-rate`), and the simulator counts every 429 per endpoint.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use http::StatusCode;
use rand::Rng;

use crate::config::Faults;
use crate::error::ApiError;
use crate::mode::Mode;

/// A token bucket: `rate` tokens a second, at most one second's worth saved up.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Requests refused by the rate limiters since the faults were set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimited {
    /// 429s from the account-wide limiter.
    pub global: u64,
    /// 429s from the per-endpoint limiters.
    pub endpoint: u64,
    /// Every 429 by the endpoint (operation) it refused, whichever limiter refused it.
    pub by_endpoint: BTreeMap<String, u64>,
}

/// The faults in force and what they have done so far.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    injected: u64,
    global: HashMap<Mode, TokenBucket>,
    endpoints: HashMap<(Mode, String), TokenBucket>,
    rate_limited: RateLimited,
}

impl FaultState {
    /// Faults as configured at start.
    pub fn new(faults: Faults) -> Self {
        FaultState {
            faults,
            injected: 0,
            global: HashMap::new(),
            endpoints: HashMap::new(),
            rate_limited: RateLimited::default(),
        }
    }

    /// Replaces the faults; counters and buckets start afresh.
    pub fn set(&mut self, faults: Faults) {
        *self = FaultState::new(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Errors injected since the faults were set.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Requests the rate limiters refused since the faults were set.
    pub fn rate_limited(&self) -> &RateLimited {
        &self.rate_limited
    }

    /// The latency to add to an executed request.
    pub fn latency(&self) -> Duration {
        self.faults.latency
    }

    /// The delay between saving a result and answering, for a request to `path`.
    pub fn latency_after(&self, path: &str) -> Duration {
        let targeted = self
            .faults
            .path_contains
            .as_deref()
            .is_none_or(|p| path.contains(p));
        if targeted {
            self.faults.latency_after
        } else {
            Duration::ZERO
        }
    }

    /// The per-endpoint limit of `operation`, if one is in force.
    fn endpoint_limit(&self, operation: &str) -> Option<u32> {
        self.faults
            .endpoint_rate_limits
            .get(operation)
            .copied()
            .or(self.faults.endpoint_rate_limit_per_sec)
    }

    /// Decides whether a request fails before executing: 429 from a rate limiter, or an injected
    /// 5xx. `operation` names the endpoint (`POST /v1/payment_intents`), `path` the request's path.
    pub fn intercept(&mut self, mode: Mode, operation: &str, path: &str) -> Option<ApiError> {
        if let Some(e) = self.limit(mode, operation) {
            return Some(e);
        }
        if self.faults.after_execution {
            return None;
        }
        self.inject(path)
    }

    fn limit(&mut self, mode: Mode, operation: &str) -> Option<ApiError> {
        // The endpoint's limiter first: a request it refuses never spends the account's budget.
        if let Some(rate) = self.endpoint_limit(operation) {
            let bucket = self
                .endpoints
                .entry((mode, operation.to_owned()))
                .or_insert_with(|| TokenBucket::new(rate));
            if !bucket.take() {
                self.rate_limited.endpoint += 1;
                *self
                    .rate_limited
                    .by_endpoint
                    .entry(operation.to_owned())
                    .or_default() += 1;
                return Some(ApiError::rate_limited("endpoint-rate"));
            }
        }
        if let Some(rate) = self.faults.rate_limit_per_sec {
            let bucket = self
                .global
                .entry(mode)
                .or_insert_with(|| TokenBucket::new(rate));
            if !bucket.take() {
                // Stripe: "If you send many requests in quick succession, you might receive 429
                // error responses" with code `rate_limit` (docs: rate limits).
                self.rate_limited.global += 1;
                *self
                    .rate_limited
                    .by_endpoint
                    .entry(operation.to_owned())
                    .or_default() += 1;
                return Some(ApiError::rate_limited("global-rate"));
            }
        }
        None
    }

    /// The error injected after a request executed, when the faults say `after_execution`.
    pub fn intercept_after(&mut self, path: &str) -> Option<ApiError> {
        if !self.faults.after_execution {
            return None;
        }
        self.inject(path)
    }

    fn inject(&mut self, path: &str) -> Option<ApiError> {
        let f = &self.faults;
        let capped = f.max_faults.is_some_and(|max| self.injected >= max);
        let targeted = f.path_contains.as_deref().is_none_or(|p| path.contains(p));
        if f.error_rate > 0.0
            && targeted
            && !capped
            && rand::rng().random_bool(f.error_rate.clamp(0.0, 1.0))
        {
            self.injected += 1;
            if f.error_status == 400 {
                // Stripe: 400 "The request was unacceptable, often due to missing a required
                // parameter" (docs: error codes); not retryable, so no Stripe-Should-Retry: true.
                return Some(ApiError::invalid(
                    "Injected fault: the simulator refused this request.",
                    None,
                ));
            }
            let status =
                StatusCode::from_u16(f.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // Stripe: 5xx "indicate an error with Stripe's servers"; `Stripe-Should-Retry: true` tells
            // clients a retry may succeed (docs: error handling).
            return Some(ApiError::server_error(status));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_by_default() {
        let mut s = FaultState::new(Faults::default());
        assert!((0..1000).all(|_| s
            .intercept(Mode::Test, "GET /v1/customers", "/v1/customers")
            .is_none()));
    }

    #[test]
    fn error_rate_respects_max_faults() {
        let mut s = FaultState::new(Faults {
            error_rate: 1.0,
            error_status: 503,
            max_faults: Some(3),
            ..Faults::default()
        });
        let errors: Vec<_> = (0..10)
            .filter_map(|_| s.intercept(Mode::Test, "GET /v1/customers", "/v1/customers"))
            .collect();
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().all(|e| e.status == 503
            && e.error["type"] == "api_error"
            && e.should_retry == Some(true)));
        assert_eq!(s.injected(), 3);
    }

    #[test]
    fn rate_limit_allows_a_burst_of_one_second() {
        let mut s = FaultState::new(Faults {
            rate_limit_per_sec: Some(25),
            ..Faults::default()
        });
        let op = "GET /v1/customers";
        let limited = (0..40)
            .filter_map(|_| s.intercept(Mode::Test, op, "/v1/customers"))
            .count();
        assert!((14..=15).contains(&limited), "{limited} limited");
        let e = s.intercept(Mode::Test, op, "/v1/customers").unwrap();
        assert_eq!(e.status, 429);
        assert_eq!(e.error["code"], "rate_limit");
        assert_eq!(e.rate_limited_reason, Some("global-rate"));
        // Live mode has its own budget.
        assert!(s.intercept(Mode::Live, op, "/v1/customers").is_none());
        assert_eq!(s.rate_limited().global, limited as u64 + 1);
    }

    #[test]
    fn each_endpoint_has_its_own_limit_whatever_the_id() {
        let mut s = FaultState::new(Faults {
            endpoint_rate_limit_per_sec: Some(5),
            endpoint_rate_limits: [("GET /v1/customers/search".to_owned(), 2)].into(),
            ..Faults::default()
        });
        let get = "GET /v1/customers/{id}";
        // Five different ids spend the one endpoint's budget of five…
        for i in 0..5 {
            assert!(s
                .intercept(Mode::Test, get, &format!("/v1/customers/cus_{i}"))
                .is_none());
        }
        let e = s.intercept(Mode::Test, get, "/v1/customers/cus_9").unwrap();
        assert_eq!(
            (e.status.as_u16(), e.rate_limited_reason),
            (429, Some("endpoint-rate"))
        );
        // …while another endpoint still has all of its own.
        assert!((0..5).all(|_| s
            .intercept(Mode::Test, "POST /v1/customers", "/v1/customers")
            .is_none()));
        // A documented override.
        let search = "GET /v1/customers/search";
        let refused = (0..4)
            .filter_map(|_| s.intercept(Mode::Test, search, "/v1/customers/search"))
            .count();
        assert_eq!(refused, 2);
        assert_eq!(s.rate_limited().endpoint, 3);
        assert_eq!(s.rate_limited().global, 0);
        assert_eq!(s.rate_limited().by_endpoint[get], 1);
        assert_eq!(s.rate_limited().by_endpoint[search], 2);
    }
}
