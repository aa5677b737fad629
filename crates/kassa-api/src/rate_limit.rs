//! The per-client-IP rate limit of the public routes (the pages customers see, the demo shop's
//! Buy): tower_governor's token bucket per address, in front of every handler, so a flood from
//! one address is answered `429 rate_limited` (with `Retry-After`) before it reads a body, the
//! database or Stripe. Refusals are counted in `kassa_public_requests_limited_total`. The
//! webhook, health and the authenticated APIs are not limited here (Stripe's deliveries come
//! from a few addresses, and the APIs have their token).

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use tracing::warn;

/// How often addresses that have been quiet for a while are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The public routes' limit per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicRateLimit {
    /// Requests per second one address may keep making.
    pub per_second: NonZeroU32,
    /// Requests one address may make at once before the rate applies.
    pub burst: NonZeroU32,
}

/// The customer's address for the rate limits: the TCP peer, unless the peer is a trusted
/// proxy (`KASSA_TRUSTED_PROXIES`) — then the right-most address of `X-Forwarded-For` that is not
/// a trusted proxy itself (a client can prepend anything, but not what the proxies append).
pub fn client_ip(trusted: &[ipnet::IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// tower_governor's key: [`client_ip`] of the request's peer with these trusted proxies.
#[derive(Debug, Clone)]
struct CustomerAddress(Arc<Vec<ipnet::IpNet>>);

impl KeyExtractor for CustomerAddress {
    type Key = IpAddr;

    fn extract<T>(&self, request: &axum::http::Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(client_ip(&self.0, peer, request.headers()))
    }
}

/// `router`'s routes behind `limit` per customer address (a route layer: unknown paths stay
/// plain 404s).
pub fn limit_public(
    router: Router<ApiState>,
    limit: &PublicRateLimit,
    trusted_proxies: &[ipnet::IpNet],
) -> Router<ApiState> {
    with_limit(
        router,
        limit,
        CustomerAddress(Arc::new(trusted_proxies.to_vec())),
    )
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
