//! kassa-ingress: Kassa's front door for Stripe's webhooks.
//!
//! - [`webhook`]: `POST /webhooks/stripe` reads only the event envelope ([`envelope`]), verifies
//!   Stripe's signature over the raw body against the secrets of the mode the event claims
//!   (kassa-stripe's verifier; test and live never mix), publishes the
//!   untouched body to RabbitMQ and answers 200 only after the broker's confirm — so a 2xx to
//!   Stripe always means the event is durable.
//! - [`health`]: `/healthz`, `/readyz` (the broker is connected); `/metrics`, rendered from the
//!   process's recorder ([`prometheus`]), is a router of its own for the metrics listener.
//! - [`error`]: its refusals, as `{"error": {"code", "message"}}`.
//! - [`server`]: every listener of the process (the merchant's HTTP and a worker's health
//!   included) is served by [`serve`] with [`HttpLimits`]: time limits on headers, bodies and
//!   whole requests, and caps on open connections and requests in flight.
//!
//! It never calls Stripe and never touches the database: it verifies and publishes, and stays
//! thin so it is fast and scales out. The merchant's HTTP (APIs, pages) is kassa-api's.

pub use kassa_wire::envelope;
pub mod error;
pub mod health;
pub mod prometheus;
pub mod server;
pub mod webhook;

use axum::Router;
use kassa_broker::{Broker, ConfirmedPublisher};
use kassa_stripe::webhook::WebhookVerifier;
use kassa_stripe::Mode;
use std::sync::{Arc, PoisonError, RwLock};
use tower_http::trace::TraceLayer;

pub use server::{serve, HttpLimits};

/// The routes of this crate anyone may call (Stripe signs its webhooks; the health routes say
/// nothing private). Every other route of a listener is behind the admin token.
pub const PUBLIC_ROUTES: &[&str] = &["/webhooks/stripe", "/healthz", "/readyz"];

/// Stripe's webhook bodies are small; anything above this is refused with 413.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Everything the ingress's handlers share.
#[derive(Clone)]
pub struct IngressState {
    /// Verifies `Stripe-Signature` against the configured secrets of the event's mode;
    /// replaceable while running.
    pub verifier: Verifier,
    /// The supervised broker connection (readiness).
    pub broker: Broker,
    /// Publishes events with confirms.
    pub publisher: ConfirmedPublisher,
    /// What else `/readyz` reports (the process's database, when it has one).
    pub readiness: Vec<Arc<dyn health::ReadinessCheck>>,
    /// The exchange events are published to, named once (the topology never changes while
    /// the process runs).
    events_exchange: Arc<str>,
}

impl std::fmt::Debug for IngressState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressState")
            .field("verifier", &self.verifier)
            .field("broker", &self.broker)
            .field("publisher", &self.publisher)
            .field(
                "readiness",
                &self.readiness.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl IngressState {
    /// State over `broker` with the verifiers of each mode (a single [`WebhookVerifier`] serves
    /// events of both modes, see [`ModeVerifiers::any_mode`]).
    pub fn new(verifier: impl Into<ModeVerifiers>, broker: Broker) -> Self {
        Self {
            verifier: Verifier::new(verifier),
            publisher: broker.publisher(),
            events_exchange: broker.topology().events_exchange().into(),
            broker,
            readiness: Vec::new(),
        }
    }

    /// `/readyz` reports `check` too.
    pub fn with_readiness(mut self, check: Arc<dyn health::ReadinessCheck>) -> Self {
        self.readiness.push(check);
        self
    }
}

/// The webhook verifier of each mode: a Stripe endpoint belongs to one mode and signs only that
/// mode's events, so an event is verified against the secrets of the mode it claims and only
/// those. A mode without a verifier takes no events.
#[derive(Clone, Debug, Default)]
pub struct ModeVerifiers {
    /// Test-mode events (`livemode: false`).
    pub test: Option<WebhookVerifier>,
    /// Live-mode events (`livemode: true`).
    pub live: Option<WebhookVerifier>,
}

impl ModeVerifiers {
    /// One verifier for events of either mode: secrets whose mode nobody said (an ingress given
    /// only `KASSA_STRIPE_WEBHOOK_SECRETS` and no key).
    pub fn any_mode(verifier: WebhookVerifier) -> Self {
        Self {
            test: Some(verifier.clone()),
            live: Some(verifier),
        }
    }

    /// The verifier of `mode`'s events, if that mode takes any.
    pub fn get(&self, mode: Mode) -> Option<&WebhookVerifier> {
        match mode {
            Mode::Test => self.test.as_ref(),
            Mode::Live => self.live.as_ref(),
        }
    }

    /// `mode`'s verifier slot.
    pub fn slot(&mut self, mode: Mode) -> &mut Option<WebhookVerifier> {
        match mode {
            Mode::Test => &mut self.test,
            Mode::Live => &mut self.live,
        }
    }
}

impl From<WebhookVerifier> for ModeVerifiers {
    fn from(verifier: WebhookVerifier) -> Self {
        Self::any_mode(verifier)
    }
}

/// The webhook verifiers, replaceable while the ingress runs (new secrets from the stored
/// settings): each webhook is verified against the secrets current when it arrives. Clones share.
#[derive(Clone, Debug)]
pub struct Verifier(Arc<RwLock<Arc<ModeVerifiers>>>);

impl Verifier {
    /// Starts with `verifiers`.
    pub fn new(verifiers: impl Into<ModeVerifiers>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(verifiers.into()))))
    }

    /// The verifiers now.
    pub fn current(&self) -> Arc<ModeVerifiers> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Verifies later webhooks of `mode` with `verifier`; the other mode's stay as they are.
    pub fn replace(&self, mode: Mode, verifier: WebhookVerifier) {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = ModeVerifiers::clone(&current);
        *next.slot(mode) = Some(verifier);
        *current = Arc::new(next);
    }
}

/// The ingress's routes: webhooks and health (metrics are [`health::metrics_router`]'s).
pub fn router(state: IngressState) -> Router {
    Router::new()
        .merge(webhook::router())
        .merge(health::router())
        .layer(TraceLayer::new_for_http())
        // Shared behind one `Arc`: each request takes the state with one count, not a copy.
        .with_state(Arc::new(state))
}

/// Answers unknown routes (404 `not_found`) and wrong methods (405 `method_not_allowed`) with
/// the same JSON error body as every other refusal. Apply last, to the whole merged router.
pub fn with_json_fallbacks(router: Router) -> Router {
    router
        .fallback(|| async {
            error::IngressError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .method_not_allowed_fallback(|| async {
            error::IngressError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
}
