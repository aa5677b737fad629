//! kassa-api: the merchant's HTTP — everything Kassa answers besides Stripe's webhooks.
//!
//! - [`pages`]: the pages customers see — `/success` (fulfils the Checkout Session at once),
//!   `/cancel`, and in test mode the demo shop (`/`, `/create-checkout-session`); the same pages
//!   under `/preview/` always in test mode.
//! - [`admin`]: the back-office API, charges of saved cards (`/api/charges`).
//! - [`checkout`]: Checkout Sessions and PaymentIntents for the merchant's own pages, and the
//!   payment confirmation (`/api/checkout-sessions`, `/api/payment-intents`).
//! - [`widgets`]: payment widgets — the admin API (`/api/widgets`) and what customers' browsers
//!   call: `/widget.js`, `/pay/{widget}`, the page load's PaymentIntent and the customer's
//!   choices, rate-limited per client IP and per widget.
//! - [`save_card`]: save-card links — made by the admin API, opened by customers at
//!   `/save-card/{token}` (a fresh setup-mode Checkout Session each time).
//! - [`connector`]: small Stripe operations for back-office tools (`/api/customers`,
//!   `/api/products`, `/api/legacy-charges`).
//! - [`settings`]: the sealed settings, listed masked and set (`/api/settings`).
//! - [`auth`] (the Bearer `KASSA_ADMIN_TOKEN`, a route layer over every route but the
//!   [`PUBLIC_ROUTES`]), [`idempotency`] (the caller's
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
pub mod rate_limit;
pub mod reloadable;
pub mod save_card;
pub mod settings;
pub mod widgets;

pub use error::ApiError;
pub use ipnet::IpNet;
pub use pages::ShopProduct;
pub use rate_limit::PublicRateLimit;
pub use reloadable::{ReloadError, ReloadableSettings};

use axum::Router;
use kassa_broker::Topology;
use kassa_core::fulfil::Fulfilment;
use kassa_store::{JobRoute, Store};
use kassa_stripe::{Client, Mode, Modes};
use secrecy::SecretString;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::info;

/// The routes of this crate anyone may call: the pages customers see. Every other route is
/// behind [`auth::require_admin`], which answers 401 before the request's body is read.
pub const PUBLIC_ROUTES: &[&str] = &[
    // The merchant pages and the test-mode demo shop.
    "/",
    "/create-checkout-session",
    "/save-your-card",
    "/success",
    "/cancel",
    // The same pages previewed, always in test mode (without test keys, a page saying so).
    "/preview",
    "/preview/",
    "/preview/create-checkout-session",
    "/preview/save-your-card",
    "/preview/success",
    "/preview/cancel",
    "/preview/{*page}",
    // A save-card link's page: the signed token is its authority.
    "/save-card/{token}",
    // The payment widget: its script, its page and the browser's calls (limited per client
    // address and per widget; amounts come from the widget's record, never from the browser).
    "/widget.js",
    "/pay/{widget}",
    "/pay/{widget}/thanks",
    "/widgets/{widget}/payment-intent",
    "/widgets/{widget}/payment-intents/{id}/details",
    // Let in by the admin token or the PaymentIntent's client secret (in the body, checked by
    // the handler before anything else is done).
    "/api/payment-intents/{id}/confirmation",
];

/// Requests that call Stripe from the merchant pages (`/success`, the shop's Buy) and payment
/// confirmations served at once (each may hold a database connection meanwhile); more are
/// answered 503.
pub const PAGE_CALLS_IN_FLIGHT: usize = 16;

/// The publishable key (`pk_test_…`/`pk_live_…`) of each mode, handed to merchants' payment
/// forms; each is of its own mode (checked at start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishableKeys {
    /// `KASSA_STRIPE_TEST_PUBLISHABLE_KEY`.
    pub test: Option<String>,
    /// `KASSA_STRIPE_LIVE_PUBLISHABLE_KEY`.
    pub live: Option<String>,
}

impl PublishableKeys {
    /// The publishable key of `mode`, if one is configured.
    pub fn get(&self, mode: kassa_stripe::Mode) -> Option<&str> {
        match mode {
            kassa_stripe::Mode::Test => self.test.as_deref(),
            kassa_stripe::Mode::Live => self.live.as_deref(),
        }
    }
}

/// What the API is built from.
#[derive(Clone)]
pub struct ApiConfig {
    /// Stripe: the client of each configured mode and the default mode.
    pub stripe: Modes,
    /// PostgreSQL.
    pub store: Store,
    /// Where charge jobs and alerts go.
    pub topology: Topology,
    /// `KASSA_ADMIN_TOKEN`: mounts the back-office, checkout and connector APIs.
    pub admin_token: Option<SecretString>,
    /// `KASSA_PUBLIC_URL` without a trailing slash: the default success and cancel pages.
    pub public_url: String,
    /// The publishable key of each mode, handed to the merchant's payment form.
    pub publishable_keys: PublishableKeys,
    /// Where browsers load Stripe.js from: `https://js.stripe.com/v3` with Stripe's API, the
    /// simulator's stand-in (`{simulator}/v3`) otherwise ([`stripe_js_url`]).
    pub stripe_js_url: String,
    /// `KASSA_TRUSTED_PROXIES`: reverse proxies whose `X-Forwarded-For` names the customer for
    /// the public endpoints' rate limits ([`widgets::parse_trusted_proxies`]).
    pub trusted_proxies: Vec<IpNet>,
    /// What the demo shop sells.
    pub product: ShopProduct,
    /// `KASSA_MASTER_KEY`: `GET/PUT /api/settings` seal and open with it.
    pub master_key: Option<kassa_core::settings::MasterKey>,
    /// `KASSA_DEFAULT_CURRENCY`: the currency of a request that names none.
    pub default_currency: kassa_stripe::money::Currency,
    /// The limit per client address of the [`PUBLIC_ROUTES`]; `None`: not limited.
    pub public_rate_limit: Option<PublicRateLimit>,
}

/// Where a browser loads Stripe.js for a Stripe API at `api_base`: Stripe's own script for
/// Stripe's API, the simulator's stand-in at `{api_base}/v3` for anything else.
pub fn stripe_js_url(api_base: &str) -> String {
    let api_base = api_base.trim_end_matches('/');
    if api_base == kassa_stripe::DEFAULT_API_BASE {
        "https://js.stripe.com/v3".to_owned()
    } else {
        format!("{api_base}/v3")
    }
}

/// Settings the routes read.
#[derive(Debug)]
pub struct Settings {
    /// `KASSA_PUBLIC_URL` without a trailing slash.
    pub public_url: String,
    /// Where browsers load Stripe.js from.
    pub stripe_js_url: String,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// What the demo shop sells.
    pub product: ShopProduct,
    /// `KASSA_DEFAULT_CURRENCY`.
    pub default_currency: kassa_stripe::money::Currency,
}

/// What every route shares; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    modes: Modes,
    store: Store,
    route: JobRoute,
    fulfilment: Fulfilment,
    reloadable: ReloadableSettings,
    settings: Arc<Settings>,
    page_calls: Arc<Semaphore>,
    public_limits: Arc<widgets::PublicLimits>,
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
        // No token: an empty one, which admits nobody.
        let reloadable =
            ReloadableSettings::new(config.admin_token, config.publishable_keys, |mode| {
                config.stripe.has(mode)
            });
        Self {
            route: kassa_core::charges::job_route(&config.topology),
            fulfilment: Fulfilment::new(
                config.stripe.clone(),
                config.store.clone(),
                config.topology,
            ),
            modes: config.stripe,
            store: config.store,
            reloadable,
            settings: Arc::new(Settings {
                public_url: config.public_url,
                stripe_js_url: config.stripe_js_url,
                trusted_proxies: config.trusted_proxies,
                product: config.product,
                default_currency: config.default_currency,
            }),
            page_calls: Arc::new(Semaphore::new(PAGE_CALLS_IN_FLIGHT)),
            public_limits: Arc::new(widgets::PublicLimits::default()),
            master_key: config.master_key,
        }
    }

    /// The Stripe clients of the configured modes and the default mode.
    pub fn modes(&self) -> &Modes {
        &self.modes
    }

    /// The mode of a call: the one its body or query names (`livemode`), else the default.
    pub fn mode(&self, livemode: Option<bool>) -> Mode {
        livemode
            .map(Mode::from_livemode)
            .unwrap_or_else(|| self.modes.default_mode())
    }

    /// The Stripe client of a call's mode ([`ApiState::mode`]); a mode with no key is 400
    /// `mode_not_configured` naming it, and nothing is sent to Stripe.
    pub fn stripe_for(&self, livemode: Option<bool>) -> Result<(Mode, &Client), ApiError> {
        let mode = self.mode(livemode);
        let client = self.modes.client(mode).map_err(ApiError::from)?;
        Ok((mode, client))
    }

    /// The admin token now (it may change while running).
    pub fn admin_token(&self) -> Arc<SecretString> {
        self.reloadable.admin_token()
    }

    /// The publishable key of each mode now (they may change while running).
    pub fn publishable_keys(&self) -> Arc<PublishableKeys> {
        self.reloadable.publishable_keys()
    }

    /// The default mode's publishable key now.
    pub fn publishable_key(&self) -> Option<String> {
        self.publishable_keys()
            .get(self.modes.default_mode())
            .map(str::to_owned)
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
    app_with_settings(config).0
}

/// [`app`], and the handle that changes its admin token and publishable keys while it runs.
pub fn app_with_settings(config: ApiConfig) -> (Router, ReloadableSettings) {
    let apis = config.admin_token.is_some();
    let live = config.stripe.default_mode().is_live();
    let test_configured = config.stripe.has(Mode::Test);
    let public_rate_limit = config.public_rate_limit;
    let state = ApiState::new(config);
    let reloadable = state.reloadable.clone();
    let mut public = pages::router()
        .merge(pages::preview_router(test_configured))
        .merge(save_card::public_router());
    if test_configured {
        info!(
            "page preview mounted (always test mode): /preview/, /preview/success, /preview/cancel"
        );
    }
    if live {
        info!("merchant pages mounted: /success, /cancel (no demo shop in live mode)");
    } else {
        public = public.merge(pages::shop_router());
        info!("merchant pages mounted: /, /create-checkout-session (the test-mode demo shop), /success, /cancel");
    }
    let mut router = match &public_rate_limit {
        Some(limit) => {
            info!(
                per_second = limit.per_second.get(),
                burst = limit.burst.get(),
                trusted_proxies = state.settings.trusted_proxies.len(),
                "merchant pages rate-limited per client address"
            );
            rate_limit::limit_public(public, limit, &state.settings.trusted_proxies)
        }
        None => public,
    };
    // The widgets' endpoints have limits of their own (per client address and per widget); a
    // payment confirmation is let in by the admin token or by the PaymentIntent's client secret,
    // which only the handler can check (it is in the body), so it is public by name.
    router = router
        .merge(widgets::public_router())
        .merge(checkout::confirmation_router());
    info!("payment widgets mounted: /widget.js, /pay/{{widget}}, /widgets/{{widget}}/payment-intent; payment confirmations with a client_secret: /api/payment-intents/{{id}}/confirmation");
    if apis {
        // A route layer, not an extractor: it runs before any handler's `Json`, `Form` or
        // `Query`, so an unauthenticated caller never has its body read.
        let private = admin::router()
            .merge(checkout::router())
            .merge(connector::router())
            .merge(widgets::admin_router())
            .merge(save_card::admin_router())
            .merge(settings::router())
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_admin,
            ));
        router = router.merge(private);
        info!("APIs mounted (Bearer KASSA_ADMIN_TOKEN): /api/charges, /api/checkout-sessions, /api/payment-intents, /api/customers, /api/products, /api/legacy-charges, /api/widgets, /api/customers/{{id}}/save-card-links, /api/settings");
    }
    (router.with_state(state), reloadable)
}
