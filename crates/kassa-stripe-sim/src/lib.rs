//! kassa-stripe-sim: an in-memory Stripe account, test mode and live mode, that official Stripe
//! libraries cannot tell from Stripe, for every test, demo and benchmark of Kassa. It answers Stripe's
//! `/v1` API with Stripe's request and response shapes, status codes and error bodies, follows the
//! documented test cards, idempotency and `expand` rules, keeps each mode's objects, events and webhook
//! endpoints apart, records an event for every change and delivers it as a signed webhook (with
//! retries), and can inject faults (5xx, global and per-endpoint rate limits, latency, duplicated,
//! shuffled or dropped webhooks). Browsers get Stripe's CORS answers, a stand-in for Stripe.js at `/v3`
//! and a 3-D Secure challenge page. Every behaviour cites the Stripe documentation it follows. Stripe's
//! own tools drive it unchanged: the Stripe CLI (`stripe trigger`, `stripe fixtures`), stripe-python and
//! stripe-node.
//!
//! It never touches a real network (it binds a local port and POSTs webhooks only to the endpoints it is
//! given), never puts a simulator-only route under `/v1/` (those live under `/_sim/`, the hosted page
//! under `/c/pay/`, the browser's script and challenge page under `/v3` and `/3ds/`), never records an
//! API key (only its fingerprint), and depends on nothing of Kassa's: objects are `serde_json::Value`s
//! and webhooks are signed by its own HMAC code, so it checks Kassa's client and verifier independently.
//!
//! Tour: [`config`] (what an instance is given), [`sim`] ([`Simulator`], [`serve`]), [`api`] (the `/v1`
//! front door), [`auth`] (keys and their modes), [`mode`], [`publishable`] (what a `pk_` key may do),
//! [`form`] (bracket-form decoder), [`params`], [`idempotency`], [`faults`] (errors, rate limits),
//! [`state`] (the stores, events), [`clock`] (the simulator's now, movable), [`expand`], [`list`],
//! [`currency`], [`cards`] (test cards, the live card), [`debits`] (SEPA Direct Debit test accounts),
//! [`resources`] (one module per resource family), [`webhooks`] (signing, delivery), [`control`]
//! (`/_sim/`), [`hosted`] (the checkout page), [`stripe_js`] (the Stripe.js stand-in, 3-D Secure).
//!
//! Controls, simulator-only, under `/_sim/` (JSON or form bodies; `mode` is `test` or `live`):
//!
//! | route | what it does |
//! |---|---|
//! | `GET /_sim/ping` | `pong` |
//! | `GET /_sim/requests` | every `/v1` request answered: method, path, operation, the key's mode, kind and fingerprint, Idempotency-Key, status, replayed (`?mode=` keeps one mode) |
//! | `GET`, `POST /_sim/faults` | the faults in force; set them (see [`Faults`]); `injected` and `rate_limited` counts |
//! | `GET`, `POST /_sim/webhook_endpoints` | where webhooks go, per mode; add one (`url`, `mode`) |
//! | `GET /_sim/webhook_deliveries` | every delivery attempt and its outcome (`?mode=` keeps one mode) |
//! | `POST /_sim/checkout/sessions/{id}/complete` | the customer completes a session (`payment_method`, default `pm_card_visa`) |
//! | `POST /_sim/checkout/sessions/{id}/expire` | a session runs out of time now |
//! | `GET /_sim/clock` | `{now, offset_seconds}`: the simulator's time |
//! | `POST /_sim/clock/advance` | `{"seconds": N}`: N seconds pass on Stripe's side at once, in both modes: keys 24 hours old are forgotten, open sessions past `expires_at` expire (with their event), delayed debits due by then settle, new objects and events are created at the new time ([`clock`]) |
//!
//! ```no_run
//! # async fn demo() -> Result<(), kassa_stripe_sim::SimError> {
//! use kassa_stripe_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! let api_base = sim.base_url(); // any `sk_test_…` key for test mode, `sk_live_…` for live mode
//! # let _ = api_base;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Everything but [`form`] is the `server` feature (on by default): the fuzz targets build the
//! decoder alone, without the HTTP stack.

#![recursion_limit = "256"]
#![warn(missing_docs)]

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cards;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod control;
#[cfg(feature = "server")]
pub mod currency;
#[cfg(feature = "server")]
pub mod debits;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod expand;
#[cfg(feature = "server")]
pub mod faults;
pub mod form;
#[cfg(feature = "server")]
pub mod hosted;
#[cfg(feature = "server")]
pub mod idempotency;
#[cfg(feature = "server")]
pub mod list;
#[cfg(feature = "server")]
pub mod mode;
#[cfg(feature = "server")]
pub mod params;
#[cfg(feature = "server")]
pub mod publishable;
#[cfg(feature = "server")]
pub mod resources;
#[cfg(feature = "server")]
pub mod sim;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod stripe_js;
#[cfg(feature = "server")]
pub mod webhooks;

#[cfg(feature = "server")]
pub use api::RecordedRequest;
#[cfg(feature = "server")]
pub use auth::{key_fingerprint, KeyKind};
#[cfg(feature = "server")]
pub use config::{
    Faults, SimConfig, DEFAULT_API_VERSION, DEFAULT_LIVE_WEBHOOK_SECRET, DEFAULT_WEBHOOK_SECRET,
    ENDPOINT_RATE_LIMIT, LIVE_MODE_RATE_LIMIT, TEST_MODE_RATE_LIMIT,
};
#[cfg(feature = "server")]
pub use error::SimError;
#[cfg(feature = "server")]
pub use faults::RateLimited;
#[cfg(feature = "server")]
pub use mode::Mode;
#[cfg(feature = "server")]
pub use resources::payment_methods::NetworkUpdate;
#[cfg(feature = "server")]
pub use sim::{serve, Simulator};
#[cfg(feature = "server")]
pub use webhooks::{signature_header, DeliveryOutcome, EnabledEvents, WebhookDelivery};
