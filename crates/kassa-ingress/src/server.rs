//! The HTTP server with the limits a public endpoint needs against slow, many or malicious
//! clients, per listener:
//!
//! - **headers**: a client has [`HttpLimits::header_read_timeout`] to send a request's headers
//!   (an idle keep-alive connection is closed after the same time);
//! - **body**: reading a request body may pause at most [`HttpLimits::body_timeout`] (408);
//! - **request**: from headers to answer, body included, at most [`HttpLimits::request_timeout`]
//!   (503 `request_timeout`);
//! - **connections**: at most [`HttpLimits::max_connections`] open at once; further ones wait in
//!   the kernel's accept queue until one closes;
//! - **in flight**: at most [`HttpLimits::max_in_flight`] requests handled at once; above that
//!   a request is answered 503 `overloaded` at once.
//!
//! Every refusal is a 4xx/5xx JSON error; Stripe re-sends a webhook answered with any non-2xx,
//! so a webhook caught by a limit is delayed, never lost.

use crate::error::IngressError;
use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::{debug, warn};

/// The limits of one listener. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a request's headers; also how long an idle keep-alive connection stays.
    pub header_read_timeout: Duration,
    /// Longest pause while a request body is read.
    pub body_timeout: Duration,
    /// Longest time from a request's headers to its answer, body reading included.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Requests handled at once.
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 2048,
            max_in_flight: 1024,
        }
    }
}

/// Serves `router` on an already-bound listener with `limits` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests (and their publishes) finish and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = with_request_limits(router, &limits);
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(max_connections));
    let closing = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free connection slot first: at the cap, new connections wait in the accept queue.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // keep serving the connections we have.
                    warn!(%error, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request.map(axum::body::Body::new)
            },
        ));
        // A token of the connection's own: the connection checks it each time it is polled, and
        // a child's check takes only its own lock, not the one every connection would share.
        let closing = closing.child_token();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                if error.is_timeout() {
                    metrics::counter!("kassa_http_timeouts_total", "stage" => "headers")
                        .increment(1);
                }
                debug!(%remote, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection holds a slot until it has ended.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = connections.acquire_many(all).await;
    Ok(())
}

/// The per-request limits as layers: a shared cap on requests in flight (answered 503 above it,
/// not queued), a time-out over the whole request and an idle time-out on the body.
fn with_request_limits(router: Router, limits: &HttpLimits) -> Router {
    let request_timeout = limits.request_timeout;
    router
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |error: BoxError| async move {
                    answer_limit(error, request_timeout)
                }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
                ))
                .timeout(request_timeout),
        )
}

fn answer_limit(error: BoxError, request_timeout: Duration) -> IngressError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!("kassa_http_requests_shed_total").increment(1);
        return IngressError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight on this listener; retry shortly",
        );
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        metrics::counter!("kassa_http_timeouts_total", "stage" => "request").increment(1);
        return IngressError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request was not answered within {} s; retry it",
                request_timeout.as_secs_f64()
            ),
        );
    }
    warn!(%error, "request failed in the HTTP layers");
    IngressError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the request could not be handled",
    )
}

/// Whether a body-reading error is the body idle time-out of [`HttpLimits::body_timeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = error.source();
    }
    false
}
