//! The per-client-IP rate limit of the public routes (the pages customers see, the demo shop's
//! Buy): tower_governor's token bucket per address, in front of every handler, so a flood from
//! one address is answered `429 rate_limited` (with `Retry-After`) before it reads a body, the
//! database or Stripe. Refusals are counted in `kassa_public_requests_limited_total`. The
//! webhook, health and the authenticated APIs are not limited here (Stripe's deliveries come
//! from a few addresses, and the APIs have their token).

use crate::error::ApiError;
use crate::ApiState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::{KeyExtractor, PeerIpKeyExtractor, SmartIpKeyExtractor};
use tower_governor::{GovernorError, GovernorLayer};
use tracing::warn;

/// How often addresses that have been quiet for a while are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Where a request's client address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIp {
    /// The TCP peer: right when clients connect to Kassa directly.
    Peer,
    /// `X-Forwarded-For`, `X-Real-IP` or `Forwarded` (then the peer): only behind a proxy that
    /// sets them, or anyone can pick their own address.
    Forwarded,
}

/// The public routes' limit per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicRateLimit {
    /// Requests per second one address may keep making.
    pub per_second: NonZeroU32,
    /// Requests one address may make at once before the rate applies.
    pub burst: NonZeroU32,
    /// Where the address comes from.
    pub client_ip: ClientIp,
}

/// `router`'s routes behind `limit` (a route layer: unknown paths stay plain 404s).
pub fn limit_public(router: Router<ApiState>, limit: &PublicRateLimit) -> Router<ApiState> {
    match limit.client_ip {
        ClientIp::Peer => with_limit(router, limit, PeerIpKeyExtractor),
        ClientIp::Forwarded => with_limit(router, limit, SmartIpKeyExtractor),
    }
}

fn with_limit<K>(router: Router<ApiState>, limit: &PublicRateLimit, key: K) -> Router<ApiState>
where
    K: KeyExtractor + Send + Sync + 'static,
    K::Key: Send + Sync + 'static,
{
    let nanos = 1_000_000_000 / u64::from(limit.per_second.get());
    let Some(config) = GovernorConfigBuilder::default()
        .key_extractor(key)
        .period(Duration::from_nanos(nanos.max(1)))
        .burst_size(limit.burst.get())
        .finish()
    else {
        // Only a zero period or burst fails, and both are at least 1 here.
        warn!("the public rate limit could not be built; the public routes are not limited");
        return router;
    };
    // The limiter keeps one small state per address it has seen: forget the quiet ones now and
    // then, for as long as the limiter exists.
    let limiter = Arc::downgrade(config.limiter());
    forget_now_and_then(move || {
        let Some(limiter) = limiter.upgrade() else {
            return false;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        true
    });
    router.route_layer(GovernorLayer::new(config).error_handler(refusal))
}

/// Runs `forget` every [`FORGET_EVERY`] until it returns false (outside a runtime: never).
fn forget_now_and_then(forget: impl Fn() -> bool + Send + 'static) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(FORGET_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if !forget() {
                return;
            }
        }
    });
}

/// 429 `rate_limited` with `Retry-After`, counted; anything else the limiter reports is a 500.
fn refusal(error: GovernorError) -> Response {
    match error {
        GovernorError::TooManyRequests { wait_time, headers } => {
            metrics::counter!("kassa_public_requests_limited_total").increment(1);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests from this address; retry in {} s",
                    wait_time.max(1)
                ),
            )
            .into_response();
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            response
        }
        other => {
            warn!(error = %other, "the public rate limit could not read the client address");
            ApiError::internal().into_response()
        }
    }
}
