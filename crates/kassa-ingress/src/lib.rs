//! kassa-ingress: Kassa's HTTP front door.
//!
//! `POST /webhooks/stripe` verifies Stripe's signature over the raw body, reads only the event
//! envelope, publishes the untouched body to RabbitMQ and answers 200 only after the broker's
//! confirm — so a 2xx to Stripe always means the event is durable. It never calls Stripe and
//! never writes the database: it stays thin so it is fast and scales out. Also `/healthz`,
//! `/readyz`, `/metrics`, and the back-office API ([`admin`]), which reads and writes the
//! database and calls Stripe only to look up a customer it has not recorded. The connector
//! actions ([`connector`]) do call Stripe, synchronously: small operations for back-office
//! tools, on the same admin token. Every route that calls Stripe reads the caller's
//! `Idempotency-Key` by one rule ([`idempotency`]).
//!
//! Every listener is served by [`serve`] with [`HttpLimits`]: time limits on headers, bodies
//! and whole requests, and caps on open connections and requests in flight ([`server`]).

pub mod admin;
pub mod checkout;
pub mod connector;
pub mod envelope;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod pages;
pub mod server;
pub mod telemetry;
pub mod webhook;

use axum::Router;
use kassa_broker::{Broker, ConfirmedPublisher};
use kassa_stripe::webhook::WebhookVerifier;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tower_http::trace::TraceLayer;

pub use server::{serve, HttpLimits};

/// Stripe's webhook bodies are small; anything above this is refused with 413.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Everything the ingress's handlers share; cheap to clone.
#[derive(Clone, Debug)]
pub struct IngressState {
    /// Verifies `Stripe-Signature` against every configured secret.
    pub verifier: Arc<WebhookVerifier>,
    /// The supervised broker connection (readiness).
    pub broker: Broker,
    /// Publishes events with confirms.
    pub publisher: ConfirmedPublisher,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl IngressState {
    /// State over `broker` with `verifier`, installing the Prometheus recorder if needed.
    pub fn new(verifier: WebhookVerifier, broker: Broker) -> Self {
        Self {
            verifier: Arc::new(verifier),
            publisher: broker.publisher(),
            broker,
            metrics: telemetry::prometheus(),
        }
    }
}

/// The ingress's routes: webhooks, health and metrics.
pub fn router(state: IngressState) -> Router {
    Router::new()
        .merge(webhook::router())
        .merge(health::router())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Health and metrics only, for processes that do not take webhooks (`kassa worker`).
pub fn health_router(state: IngressState) -> Router {
    Router::new()
        .merge(health::router())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Answers unknown routes (404 `not_found`) and wrong methods (405 `method_not_allowed`) with
/// the same JSON error body as every other refusal. Apply last, to the whole merged router.
pub fn with_json_fallbacks(router: Router) -> Router {
    router
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
}
