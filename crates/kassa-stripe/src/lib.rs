//! The Stripe API client of Kassa: typed objects, Stripe's nested form encoding, `expand`,
//! caller-given idempotency keys, retries with backoff, an error model callers can act on
//! ([`StripeError`]), and webhook signature verification ([`webhook`]).
//!
//! It never invents an idempotency key (every POST takes the caller's [`IdempotencyKey`], derived
//! from the job, and every retry repeats it), never logs a secret or a request or response body
//! (only method, path, status, `Request-Id` and the idempotency key, at debug level), and refuses
//! publishable keys for server calls.
//!
//! Modules: [`key`] (API key kinds), [`idempotency`], [`form`] (bracket encoding), [`error`],
//! [`client`] (transport, timeouts, retries), [`objects`] (typed Stripe objects), [`resources`]
//! (one handle per resource: `client.customers()`, `client.checkout_sessions()`, …).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kassa_stripe::{Client, ClientConfig, IdempotencyKey};
//! let client = Client::new(ClientConfig::new("sk_test_…".into()))?;
//! let session = client.checkout_sessions().retrieve("cs_test_1", &["setup_intent"]).await?;
//! let key = IdempotencyKey::new("kassa:evt_1:create_customer")?;
//! let customer = client
//!     .customers()
//!     .create(&kassa_stripe::resources::CustomerParams::default(), &key)
//!     .await?;
//! # let _ = (session, customer);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub use kassa_wire::form;
pub mod idempotency;
pub mod key;
pub mod modes;
pub mod money;
pub mod objects;
pub mod resources;
pub use kassa_wire::webhook;

pub use client::{Client, ClientConfig, ConfigError, DEFAULT_API_BASE, STRIPE_VERSION};
pub use error::StripeError;
pub use form::{Form, FormError};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError};
pub use key::{ApiKey, KeyError, Mode};
pub use modes::{ModeNotConfigured, Modes, ModesError};
pub use objects::{Expandable, List, Metadata};
