//! Fault injection on `/v1` requests: Stripe-side errors, a rate limiter, and added latency.
//!
//! Injected errors happen before the endpoint executes (like a failure in front of Stripe's API servers),
//! so nothing is saved under the request's idempotency key and a retry with the same key executes — Stripe:
//! "We save results only after the execution of an endpoint begins" (docs: idempotent requests).

use std::time::{Duration, Instant};

use http::StatusCode;
use rand::Rng;

use crate::config::Faults;
use crate::error::ApiError;

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

/// The faults in force and what they have done so far.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    injected: u64,
    bucket: Option<TokenBucket>,
}

impl FaultState {
    /// Faults as configured at start.
    pub fn new(faults: Faults) -> Self {
        let bucket = faults.rate_limit_per_sec.map(TokenBucket::new);
        FaultState {
            faults,
            injected: 0,
            bucket,
        }
    }

    /// Replaces the faults; counters and the bucket start afresh.
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

    /// Decides whether this request fails before executing: 429 from the rate limiter, or an injected 5xx.
    pub fn intercept(&mut self, path: &str) -> Option<ApiError> {
        if let Some(bucket) = &mut self.bucket {
            if !bucket.take() {
                // Stripe: "If you send many requests in quick succession, you might receive 429 error
                // responses" with code `rate_limit` (docs: rate limits).
                return Some(ApiError::rate_limited());
            }
        }
        if self.faults.after_execution {
            return None;
        }
        self.inject(path)
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
        assert!((0..1000).all(|_| s.intercept("/v1/customers").is_none()));
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
            .filter_map(|_| s.intercept("/v1/customers"))
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
        let limited = (0..40).filter_map(|_| s.intercept("/v1/customers")).count();
        assert!((14..=15).contains(&limited), "{limited} limited");
        let e = s.intercept("/v1/customers").unwrap();
        assert_eq!(e.status, 429);
        assert_eq!(e.error["code"], "rate_limit");
    }
}
