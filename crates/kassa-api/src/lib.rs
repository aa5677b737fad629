//! kassa-api: the merchant's HTTP — everything Kassa answers besides Stripe's webhooks.
//!
//! - [`pages`]: the pages customers see — `/success` (fulfils the Checkout Session at once),
//!   `/cancel`, and in test mode the demo shop (`/`, `/create-checkout-session`).
//! - [`admin`]: the back-office API, charges of saved cards (`/api/charges`).
//! - [`checkout`]: Checkout Sessions and PaymentIntents for the merchant's own pages, and the
//!   payment confirmation (`/api/checkout-sessions`, `/api/payment-intents`).
//! - [`connector`]: small Stripe operations for back-office tools (`/api/customers`,
//!   `/api/products`, `/api/legacy-charges`).
//! - [`settings`]: the sealed settings, listed masked and set (`/api/settings`).
//! - [`auth`] (the Bearer `KASSA_ADMIN_TOKEN`), [`idempotency`] (the caller's
//!   `Idempotency-Key`), [`error`] (the one [`ApiError`], `{"error": {"code", "message"}}`).
//!
//! [`app`] merges them into one router. Every handler reads and checks its request, then calls
//! kassa-core, which does the work; this crate never consumes from RabbitMQ and never decides
//! anything about money itself.

pub mod admin;
pub mod auth;
pub mod checkout;
pub mod connector;
pub mod error;
pub mod idempotency;
pub mod pages;
pub mod settings;

pub use error::ApiError;
pub use pages::ShopProduct;

use axum::Router;
use kassa_broker::Topology;
use kassa_core::fulfil::Fulfilment;
use kassa_store::{JobRoute, Store};
use kassa_stripe::Client;
use secrecy::SecretString;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::info;

/// Requests that call Stripe from the merchant pages (`/success`, the shop's Buy) and payment
/// confirmations served at once (each may hold a database connection meanwhile); more are
/// answered 503.
pub const PAGE_CALLS_IN_FLIGHT: usize = 16;

/// What the API is built from.
#[derive(Clone)]
pub struct ApiConfig {
    /// Stripe.
    pub stripe: Client,
    /// PostgreSQL.
    pub store: Store,
    /// Where charge jobs and alerts go.
    pub topology: Topology,
    /// `KASSA_ADMIN_TOKEN`: mounts the back-office, checkout and connector APIs.
    pub admin_token: Option<SecretString>,
    /// `KASSA_PUBLIC_URL` without a trailing slash: the default success and cancel pages.
    pub public_url: String,
    /// `KASSA_STRIPE_PUBLISHABLE_KEY`, handed to the merchant's payment form.
    pub publishable_key: Option<String>,
    /// What the demo shop sells.
    pub product: ShopProduct,
    /// `KASSA_MASTER_KEY`: `GET/PUT /api/settings` seal and open with it.
    pub master_key: Option<kassa_core::settings::MasterKey>,
    /// `KASSA_DEFAULT_CURRENCY`: the currency of a request that names none.
    pub default_currency: kassa_stripe::money::Currency,
}

/// Settings the routes read.
#[derive(Debug)]
pub struct Settings {
    /// `KASSA_PUBLIC_URL` without a trailing slash.
    pub public_url: String,
    /// `KASSA_STRIPE_PUBLISHABLE_KEY`.
    pub publishable_key: Option<String>,
    /// What the demo shop sells.
    pub product: ShopProduct,
    /// `KASSA_DEFAULT_CURRENCY`.
    pub default_currency: kassa_stripe::money::Currency,
}

/// What every route shares; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    stripe: Client,
    store: Store,
    route: JobRoute,
    fulfilment: Fulfilment,
    token: Arc<SecretString>,
    settings: Arc<Settings>,
    page_calls: Arc<Semaphore>,
    master_key: Option<kassa_core::settings::MasterKey>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("route", &self.route)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state of `config`'s routes.
    pub fn new(config: ApiConfig) -> Self {
        Self {
            route: kassa_core::charges::job_route(&config.topology),
            fulfilment: Fulfilment::new(
                config.stripe.clone(),
                config.store.clone(),
                config.topology,
            ),
            stripe: config.stripe,
            store: config.store,
            // No token: an empty one, which admits nobody.
            token: Arc::new(
                config
                    .admin_token
                    .unwrap_or_else(|| SecretString::from(String::new())),
            ),
            settings: Arc::new(Settings {
                public_url: config.public_url,
                publishable_key: config.publishable_key,
                product: config.product,
                default_currency: config.default_currency,
            }),
            page_calls: Arc::new(Semaphore::new(PAGE_CALLS_IN_FLIGHT)),
            master_key: config.master_key,
        }
    }

    /// This installation's id, part of every Idempotency-Key the routes send.
    pub fn installation(&self) -> &str {
        self.store.installation_id()
    }
}

/// A request that calls Stripe from a page (and, for `/success`, holds a database connection),
/// or a payment confirmation, takes a permit: at most [`PAGE_CALLS_IN_FLIGHT`] at once, so a
/// flood of page requests cannot take every pooled connection; without one, the caller answers
/// 503 and "try again".
fn page_permit(state: &ApiState) -> Option<OwnedSemaphorePermit> {
    let permit = state.page_calls.clone().try_acquire_owned().ok();
    if permit.is_none() {
        metrics::counter!("kassa_page_requests_shed_total").increment(1);
    }
    permit
}

/// The merchant's HTTP: the pages always, the demo shop in test mode only (in live mode anyone
/// could pay real money for a demo product), and with an admin token the back-office, checkout
/// and connector APIs.
pub fn app(config: ApiConfig) -> Router {
    let apis = config.admin_token.is_some();
    let live = config.stripe.mode().is_live();
    let mut router = pages::router();
    if live {
        info!("merchant pages mounted: /success, /cancel (no demo shop in live mode)");
    } else {
        router = router.merge(pages::shop_router());
        info!("merchant pages mounted: /, /create-checkout-session (the test-mode demo shop), /success, /cancel");
    }
    if apis {
        router = router
            .merge(admin::router())
            .merge(checkout::router())
            .merge(connector::router())
            .merge(settings::router());
        info!("APIs mounted (Bearer KASSA_ADMIN_TOKEN): /api/charges, /api/checkout-sessions, /api/payment-intents, /api/customers, /api/products, /api/legacy-charges, /api/settings");
    }
    router.with_state(ApiState::new(config))
}
