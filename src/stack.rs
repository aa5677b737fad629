//! One Kassa process: optionally the embedded Stripe simulator, the broker connection, the
//! database, the ingress with the merchant's HTTP (kassa-api) and the worker, started in the
//! right order and stopped in the reverse one (stop accepting webhooks → finish in-flight work →
//! close the broker → stop the simulator). Wiring only: what each part does is its crate's.

use crate::telemetry;
use anyhow::Context;
use axum::Router;
use kassa_api::{ApiConfig, PublishableKeys, ReloadableSettings, ShopProduct};
use kassa_broker::connection::redact_url;
use kassa_broker::{Broker, BrokerConfig};
use kassa_core::settings::{SettingName, Vault};
use kassa_ingress::IngressState;
use kassa_ingress::{ModeVerifiers, Verifier};
use kassa_store::Store;
use kassa_stripe::webhook::WebhookVerifier;
use kassa_stripe::{Client, ClientConfig, Mode, Modes};
use kassa_stripe_sim::{SimConfig, Simulator};
use kassa_worker::smtp::{MailConnections, Mailer, MailerOptions};
use kassa_worker::{Worker, WorkerConfig};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The API key Kassa uses against its embedded simulator (any `sk_test_` key works there).
pub const EMBEDDED_SIM_KEY: &str = "sk_test_kassa_embedded_simulator";

/// Where Stripe is.
#[derive(Clone)]
pub enum StripeTarget {
    /// A real (or external simulated) Stripe: the key of each configured mode and the API base.
    Api {
        /// `sk_…` or `rk_…` per mode, and the default mode.
        keys: StripeKeys,
        /// e.g. `https://api.stripe.com`.
        api_base: String,
    },
    /// Start the simulator in this process and have it deliver webhooks to our own ingress.
    Embedded(Box<SimConfig>),
}

/// The secret (`sk_…`) or restricted (`rk_…`) key of each configured mode — at least one — and
/// the mode a call that names none uses (`KASSA_DEFAULT_MODE`; required with both).
#[derive(Clone)]
pub struct StripeKeys {
    /// Test mode's key.
    pub test: Option<SecretString>,
    /// Live mode's key.
    pub live: Option<SecretString>,
    /// The default mode; `None` with one mode (that one is the default).
    pub default: Option<Mode>,
}

impl StripeKeys {
    /// One key, filed under its own mode (read from its prefix): a single-mode deployment.
    pub fn single(key: SecretString) -> Result<Self, kassa_stripe::KeyError> {
        let mode = kassa_stripe::ApiKey::parse(key.clone())?.mode;
        Ok(match mode {
            Mode::Test => StripeKeys {
                test: Some(key),
                live: None,
                default: None,
            },
            Mode::Live => StripeKeys {
                test: None,
                live: Some(key),
                default: None,
            },
        })
    }

    /// The key of `mode`, if configured.
    pub fn get(&self, mode: Mode) -> Option<&SecretString> {
        match mode {
            Mode::Test => self.test.as_ref(),
            Mode::Live => self.live.as_ref(),
        }
    }
}

/// The webhook signing secrets (`whsec_…`) of each mode: an event is verified against its own
/// mode's only, and a mode with none takes no events.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// The test endpoint's secrets (two during a rotation).
    pub test: Vec<SecretString>,
    /// The live endpoint's secrets.
    pub live: Vec<SecretString>,
}

impl WebhookSecrets {
    /// The same secrets for events of either mode: secrets whose mode nobody said (an ingress
    /// given only `KASSA_STRIPE_WEBHOOK_SECRETS` and no key).
    pub fn any_mode(secrets: Vec<SecretString>) -> Self {
        WebhookSecrets {
            test: secrets.clone(),
            live: secrets,
        }
    }

    /// Test-mode secrets only.
    pub fn test(secrets: Vec<SecretString>) -> Self {
        WebhookSecrets {
            test: secrets,
            live: Vec::new(),
        }
    }

    /// The secrets of `mode`.
    pub fn get(&self, mode: Mode) -> &[SecretString] {
        match mode {
            Mode::Test => &self.test,
            Mode::Live => &self.live,
        }
    }

    /// `mode`'s secrets, to fill.
    pub fn get_mut(&mut self, mode: Mode) -> &mut Vec<SecretString> {
        match mode {
            Mode::Test => &mut self.test,
            Mode::Live => &mut self.live,
        }
    }

    /// The verifiers these secrets make, with `tolerance`.
    pub fn verifiers(&self, tolerance: Duration) -> ModeVerifiers {
        let verifier = |secrets: &[SecretString]| {
            (!secrets.is_empty())
                .then(|| WebhookVerifier::new(secrets.to_vec()).with_tolerance(tolerance))
        };
        ModeVerifiers {
            test: verifier(&self.test),
            live: verifier(&self.live),
        }
    }
}

/// Everything one process needs.
#[derive(Clone)]
pub struct StackConfig {
    /// Address of the HTTP server: webhooks (if `webhooks`), `/healthz`, `/readyz`.
    pub listen: Option<SocketAddr>,
    /// Address of `/metrics` (`KASSA_METRICS_LISTEN`), a listener of its own so the public port
    /// never shows charge volumes; `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Mount `POST /webhooks/stripe` (false for a worker, which serves health and metrics only).
    pub webhooks: bool,
    /// RabbitMQ.
    pub broker: BrokerConfig,
    /// Limits of the HTTP listener (time-outs, connections, requests in flight).
    pub http: kassa_ingress::HttpLimits,
    /// PostgreSQL; `None` for an ingress-only process.
    pub database_url: Option<String>,
    /// Pool size.
    pub db_max_connections: u32,
    /// Stripe; `None` for an ingress-only process.
    pub stripe: Option<StripeTarget>,
    /// Requests per second this process sends to Stripe at most (`KASSA_STRIPE_MAX_RPS`).
    pub stripe_max_rps: Option<NonZeroU32>,
    /// Requests per second this process sends to any one Stripe endpoint at most (its share of
    /// `KASSA_STRIPE_ENDPOINT_RPS`).
    pub stripe_endpoint_rps: Option<NonZeroU32>,
    /// Webhook secrets of each mode (ignored with the embedded simulator, which gets a fresh
    /// one).
    pub webhook_secrets: WebhookSecrets,
    /// Signature tolerance.
    pub webhook_tolerance: Duration,
    /// Run the worker with this configuration.
    pub worker: Option<WorkerConfig>,
    /// `KASSA_ADMIN_TOKEN`: mounts the back-office API (needs the database too).
    pub admin_token: Option<SecretString>,
    /// `KASSA_PUBLIC_URL`: where Checkout sends customers back to (the merchant pages); empty:
    /// this process's own bound address.
    pub public_url: String,
    /// The publishable key of each mode, handed to merchants' payment forms; each of a mode
    /// with a secret key (checked at start).
    pub publishable_keys: PublishableKeys,
    /// `KASSA_PUBLIC_RATE_LIMIT…`: the merchant pages' limit per client address; `None`: none.
    pub public_rate_limit: Option<kassa_api::PublicRateLimit>,
    /// `KASSA_TRUSTED_PROXIES`: reverse proxies whose `X-Forwarded-For` names the customer.
    pub trusted_proxies: Vec<kassa_api::IpNet>,
    /// `KASSA_MASTER_KEY`: the admin API's `/api/settings` seal and open with it, and the
    /// settings reload opens the stored settings with it.
    pub master_key: Option<kassa_core::settings::MasterKey>,
    /// `KASSA_DEFAULT_CURRENCY`: the currency of an API request that names none.
    pub default_currency: kassa_stripe::money::Currency,
    /// Read the stored settings again while running (`KASSA_SETTINGS_RELOAD`); needs
    /// `master_key` and the database.
    pub settings_reload: Option<SettingsReload>,
}

/// What a running process reads again from the stored settings, and how often.
#[derive(Clone, Debug)]
pub struct SettingsReload {
    /// `KASSA_SETTINGS_RELOAD`.
    pub every: Duration,
    /// The settings applied when their stored value changes: webhook secrets (the ingress's
    /// verifiers), the admin token and publishable keys (the merchant's HTTP), `KASSA_SMTP_URL`
    /// and `KASSA_SMTP_CONNECTIONS` (the worker's mail). Never those the environment gave, which
    /// win over stored values.
    pub settings: Vec<SettingName>,
    /// The modes `KASSA_STRIPE_WEBHOOK_SECRETS` stands for in this process (its key's mode).
    pub webhook_secrets_modes: Vec<Mode>,
    /// The sender and time limit of reloaded SMTP connections.
    pub mailer_options: MailerOptions,
}

/// The publishable key of the embedded simulator's test mode.
pub const EMBEDDED_SIM_PUBLISHABLE_KEY: &str = "pk_test_kassa_embedded_simulator";

/// Test and live never mix: a publishable key must be of the secret key's mode.
pub fn check_publishable_key(publishable: &str, mode: Mode) -> anyhow::Result<()> {
    let publishable_mode = publishable_mode(publishable).ok_or_else(|| {
        anyhow::anyhow!("KASSA_STRIPE_PUBLISHABLE_KEY must start with pk_test_ or pk_live_")
    })?;
    if publishable_mode != mode {
        anyhow::bail!(
            "KASSA_STRIPE_PUBLISHABLE_KEY is a {publishable_mode} key but KASSA_STRIPE_API_KEY is a {mode} key: test and live never mix"
        );
    }
    Ok(())
}

/// The mode of a publishable key (`pk_test_…`/`pk_live_…`), if it is one.
pub fn publishable_mode(publishable: &str) -> Option<Mode> {
    if publishable.starts_with("pk_test_") {
        Some(Mode::Test)
    } else if publishable.starts_with("pk_live_") {
        Some(Mode::Live)
    } else {
        None
    }
}

/// A running process.
pub struct Stack {
    /// The bound HTTP address, when there is an ingress.
    pub address: Option<SocketAddr>,
    /// The bound address of `/metrics`, when there is a metrics listener.
    pub metrics_address: Option<SocketAddr>,
    /// The embedded simulator, when there is one.
    pub sim: Option<Simulator>,
    /// The default mode's Stripe client, when Stripe is configured.
    pub stripe: Option<Client>,
    /// The Stripe clients of every configured mode, when Stripe is configured.
    pub modes: Option<Modes>,
    /// The database, when configured.
    pub store: Option<Store>,
    /// The broker connection.
    pub broker: Broker,
    http_shutdown: CancellationToken,
    work_shutdown: CancellationToken,
    broker_shutdown: CancellationToken,
    http: JoinSet<()>,
    work: JoinSet<()>,
}

impl Stack {
    /// Starts every part `config` asks for and returns once the HTTP server listens: the
    /// simulator (if embedded), PostgreSQL, the broker connection, the HTTP server, the worker.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let listener = match config.listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding KASSA_LISTEN={address}"))?,
            ),
            None => None,
        };
        let address = match &listener {
            Some(listener) => Some(listener.local_addr().context("reading the bound address")?),
            None => None,
        };
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding KASSA_METRICS_LISTEN={address}"))?,
            ),
            None => None,
        };
        let metrics_address = match &metrics_listener {
            Some(listener) => Some(
                listener
                    .local_addr()
                    .context("reading the bound metrics address")?,
            ),
            None => None,
        };
        // Before anything counts: /metrics describes every metric from the start.
        telemetry::prometheus();
        let stripe = connect_stripe(&config, address).await?;
        let store = connect_store(&config).await?;
        let broker_shutdown = CancellationToken::new();
        let broker = Broker::start(config.broker.clone(), broker_shutdown.clone());

        let http_shutdown = CancellationToken::new();
        let mut http = JoinSet::new();
        let mut reload_targets = HttpReloadTargets::default();
        if let (Some(listener), Some(address)) = (listener, address) {
            let parts = Parts {
                stripe: stripe.modes.as_ref(),
                store: store.as_ref(),
                broker: &broker,
            };
            let (router, targets) = http_router(&config, &stripe.webhook_secrets, parts, address)?;
            reload_targets = targets;
            let shutdown = http_shutdown.clone();
            http.spawn(async move {
                if let Err(error) =
                    kassa_ingress::serve(listener, router, config.http, shutdown.cancelled_owned())
                        .await
                {
                    tracing::error!(%error, "HTTP server failed");
                }
            });
        }

        if let (Some(listener), Some(address)) = (metrics_listener, metrics_address) {
            info!(metrics = %format!("http://{address}/metrics"), "metrics listening (KASSA_METRICS_LISTEN)");
            let router =
                kassa_ingress::with_json_fallbacks(kassa_ingress::health::metrics_router());
            let shutdown = http_shutdown.clone();
            let limits = config.http;
            http.spawn(async move {
                if let Err(error) =
                    kassa_ingress::serve(listener, router, limits, shutdown.cancelled_owned()).await
                {
                    tracing::error!(%error, "metrics server failed");
                }
            });
        }

        let work_shutdown = CancellationToken::new();
        let mut work = JoinSet::new();
        if let (Some(reload), Some(key), Some(store)) =
            (&config.settings_reload, &config.master_key, &store)
        {
            let targets = ReloadTargets {
                verifier: reload_targets.verifier,
                api: reload_targets.api,
                tolerance: config.webhook_tolerance,
                mail: config.worker.as_ref().map(|w| w.mail.clone()),
            };
            work.spawn(reload_settings(
                Vault::new(store.clone(), Some(key.clone())),
                reload.clone(),
                targets,
                work_shutdown.clone(),
            ));
        }
        if let Some(worker_config) = config.worker {
            let stripe = (stripe.modes.clone())
                .context("the worker needs Stripe (KASSA_STRIPE_TEST_SECRET_KEY, KASSA_STRIPE_LIVE_SECRET_KEY or KASSA_STRIPE_API_KEY)")?;
            let store =
                (store.clone()).context("the worker needs PostgreSQL (KASSA_DATABASE_URL)")?;
            let worker = Worker::new(stripe, store, broker.clone(), worker_config);
            work.spawn(worker.run(work_shutdown.clone()));
        }
        Ok(Stack {
            address,
            metrics_address,
            sim: stripe.sim,
            stripe: stripe.modes.as_ref().map(|m| m.default_client().clone()),
            modes: stripe.modes,
            store,
            broker,
            http_shutdown,
            work_shutdown,
            broker_shutdown,
            http,
            work,
        })
    }

    /// This installation's id (read from PostgreSQL at start), when the process has a database:
    /// the one every Idempotency-Key and Stripe metadata of this installation carry.
    pub fn installation_id(&self) -> Option<&str> {
        self.store.as_ref().map(Store::installation_id)
    }

    /// The base URL of the HTTP server, when there is one.
    pub fn base_url(&self) -> Option<String> {
        self.address.map(|a| format!("http://{a}"))
    }

    /// `http://{KASSA_METRICS_LISTEN}/metrics`, when there is a metrics listener.
    pub fn metrics_url(&self) -> Option<String> {
        self.metrics_address.map(|a| format!("http://{a}/metrics"))
    }

    /// Stops in order: stop accepting webhooks and let in-flight ones get their confirms, let
    /// the worker finish (or roll back) in-flight events, then close the broker and the simulator.
    pub async fn stop(mut self) {
        self.http_shutdown.cancel();
        while self.http.join_next().await.is_some() {}
        self.work_shutdown.cancel();
        while self.work.join_next().await.is_some() {}
        stop_broker(&self.broker, &self.broker_shutdown).await;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
    }

    /// Resolves when a part stopped by itself (an HTTP server failure); `serve` then exits.
    pub async fn failed(&mut self) {
        if self.http.is_empty() {
            std::future::pending::<()>().await;
        }
        let _ = self.http.join_next().await;
    }
}

/// Cancels `shutdown` and waits, at most 2 s, until `broker`'s supervisor has closed its
/// connection (its own close time-out is 1 s): without waiting, a process would exit first and
/// RabbitMQ would log a connection dropped without a close.
pub async fn stop_broker(broker: &Broker, shutdown: &CancellationToken) {
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), broker.stopped()).await;
}

/// Stripe as configured: the client of each mode, and with the embedded simulator the simulator
/// itself and the fresh webhook secret it signs with.
struct StripeParts {
    modes: Option<Modes>,
    sim: Option<Simulator>,
    webhook_secrets: WebhookSecrets,
}

/// The Stripe clients of `config` (one per configured mode, each paced alike), starting the
/// embedded simulator (delivering webhooks to this process's `address`) when asked to.
async fn connect_stripe(
    config: &StackConfig,
    address: Option<SocketAddr>,
) -> anyhow::Result<StripeParts> {
    let client = |key: SecretString, api_base: String| {
        let mut client_config = ClientConfig::new(key);
        client_config.api_base = api_base;
        client_config.max_requests_per_second = config.stripe_max_rps;
        client_config.max_requests_per_second_per_endpoint = config.stripe_endpoint_rps;
        Client::new(client_config)
    };
    match config.stripe.clone() {
        None => Ok(StripeParts {
            modes: None,
            sim: None,
            webhook_secrets: config.webhook_secrets.clone(),
        }),
        Some(StripeTarget::Api { keys, api_base }) => {
            let mut clients = [None, None];
            for (slot, mode) in clients.iter_mut().zip([Mode::Test, Mode::Live]) {
                if let Some(key) = keys.get(mode) {
                    *slot = Some(client(key.clone(), api_base.clone()).with_context(|| {
                        format!(
                            "KASSA_STRIPE_{}_SECRET_KEY / KASSA_STRIPE_API_BASE",
                            mode.to_string().to_uppercase()
                        )
                    })?);
                }
            }
            let [test, live] = clients;
            let modes = Modes::new(test, live, keys.default).context("the Stripe keys")?;
            Ok(StripeParts {
                modes: Some(modes),
                sim: None,
                webhook_secrets: config.webhook_secrets.clone(),
            })
        }
        Some(StripeTarget::Embedded(sim_config)) => {
            let mut sim_config = *sim_config;
            // A fresh secret per run: shared with our own verifier, never printed. The
            // simulator's live mode is left unused: a demo moves no real money.
            let secret = format!("whsec_{:032x}", rand::random::<u128>());
            sim_config.webhook_secret = secret.clone();
            if let Some(address) = address {
                sim_config
                    .webhook_endpoints
                    .push(format!("http://{address}/webhooks/stripe"));
            }
            let sim = Simulator::start(sim_config)
                .await
                .context("starting the embedded Stripe simulator")?;
            let key = SecretString::from(EMBEDDED_SIM_KEY.to_owned());
            let client = client(key, sim.base_url())
                .context("configuring the Stripe client for the simulator")?;
            Ok(StripeParts {
                modes: Some(Modes::single(client)),
                sim: Some(sim),
                webhook_secrets: WebhookSecrets::test(vec![SecretString::from(secret)]),
            })
        }
    }
}

/// PostgreSQL, when `config` names it (created if missing and migrated).
async fn connect_store(config: &StackConfig) -> anyhow::Result<Option<Store>> {
    let Some(url) = &config.database_url else {
        return Ok(None);
    };
    let store = Store::connect(url, config.db_max_connections)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at KASSA_DATABASE_URL={}",
                redact_url(url)
            )
        })?;
    info!(
        installation = store.installation_id(),
        "installation id read from PostgreSQL"
    );
    Ok(Some(store))
}

/// The connections the HTTP server's routes use.
#[derive(Clone, Copy)]
struct Parts<'a> {
    stripe: Option<&'a Modes>,
    store: Option<&'a Store>,
    broker: &'a Broker,
}

/// What the process answers over HTTP: a worker only its health; otherwise the ingress
/// (webhooks, health — `/readyz` includes PostgreSQL when the process has it) and, with Stripe and PostgreSQL, the merchant's HTTP.
fn http_router(
    config: &StackConfig,
    webhook_secrets: &WebhookSecrets,
    parts: Parts<'_>,
    address: SocketAddr,
) -> anyhow::Result<(Router, HttpReloadTargets)> {
    if !config.webhooks {
        info!(listen = %address, "health listening (/healthz, /readyz)");
        let router = telemetry::health_router(parts.broker.clone(), parts.store.cloned());
        return Ok((
            kassa_ingress::with_json_fallbacks(router),
            HttpReloadTargets::default(),
        ));
    }
    let verifier = webhook_secrets.verifiers(config.webhook_tolerance);
    let mut state = IngressState::new(verifier, parts.broker.clone());
    if let Some(store) = parts.store {
        state = state.with_readiness(Arc::new(telemetry::DatabaseReadiness(store.clone())));
    }
    let verifier = state.verifier.clone();
    let mut router = kassa_ingress::router(state);
    let mut api_settings = None;
    if let (Some(stripe), Some(store)) = (parts.stripe, parts.store) {
        let api = api_config(config, stripe, store, parts.broker, address)?;
        let (api, settings) = kassa_api::app_with_settings(api);
        router = router.merge(api);
        api_settings = Some(settings);
    }
    info!(listen = %address, webhook_url = %format!("http://{address}/webhooks/stripe"), "HTTP server listening");
    Ok((
        kassa_ingress::with_json_fallbacks(router),
        HttpReloadTargets {
            verifier: Some(verifier),
            api: api_settings,
        },
    ))
}

/// What of the HTTP server the settings reload can replace.
#[derive(Default)]
struct HttpReloadTargets {
    verifier: Option<Verifier>,
    api: Option<ReloadableSettings>,
}

/// What the settings reload replaces.
struct ReloadTargets {
    /// The ingress's webhook verifier, when this process receives webhooks.
    verifier: Option<Verifier>,
    /// The admin token and publishable keys of the merchant's HTTP, when this process serves it.
    api: Option<ReloadableSettings>,
    /// The signature tolerance of a new verifier.
    tolerance: Duration,
    /// The worker's SMTP connections, when this process runs the worker.
    mail: Option<MailConnections>,
}

/// Every `reload.every`, opens the stored settings and applies those of `reload.settings`
/// whose value changed since the last look (the first look applies them all, which changes
/// nothing that was read at start). A setting that cannot be opened or used is logged and the
/// one in use kept.
async fn reload_settings(
    vault: Vault,
    reload: SettingsReload,
    targets: ReloadTargets,
    shutdown: CancellationToken,
) {
    let mut seen: std::collections::HashMap<SettingName, SecretString> = Default::default();
    let mut ticks = tokio::time::interval(reload.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let opened = match vault.open_all().await {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(%error, "reading the stored settings failed; keeping the settings in use");
                continue;
            }
        };
        for setting in opened {
            if !reload.settings.contains(&setting.name) {
                continue;
            }
            let unchanged = seen
                .get(&setting.name)
                .is_some_and(|old| old.expose_secret() == setting.value.expose_secret());
            if unchanged {
                continue;
            }
            match apply_setting(setting.name, &setting.value, &reload, &targets) {
                Ok(true) => info!(
                    setting = setting.name.as_str(),
                    "stored setting changed: applied"
                ),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(setting = setting.name.as_str(), %error, "stored setting changed but cannot be used; keeping the one in use")
                }
            }
            seen.insert(setting.name, setting.value);
        }
    }
}

/// Puts one reloaded setting to use; `Ok(false)` when this process has no use for it.
fn apply_setting(
    name: SettingName,
    value: &SecretString,
    reload: &SettingsReload,
    targets: &ReloadTargets,
) -> anyhow::Result<bool> {
    match (name, &targets.verifier, &targets.mail) {
        (
            SettingName::StripeWebhookSecrets
            | SettingName::StripeTestWebhookSecrets
            | SettingName::StripeLiveWebhookSecrets,
            Some(verifier),
            _,
        ) => {
            let secrets: Vec<SecretString> = value
                .expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
                .collect();
            if secrets.is_empty() {
                anyhow::bail!("no webhook secret");
            }
            let modes = match name.mode() {
                Some(mode) => vec![mode],
                None => reload.webhook_secrets_modes.clone(),
            };
            // Only a mode that takes events already: a new mode needs its key, and a restart.
            let current = verifier.current();
            let modes: Vec<Mode> = modes
                .into_iter()
                .filter(|mode| current.get(*mode).is_some())
                .collect();
            for mode in &modes {
                verifier.replace(
                    *mode,
                    WebhookVerifier::new(secrets.clone()).with_tolerance(targets.tolerance),
                );
            }
            Ok(!modes.is_empty())
        }
        (SettingName::AdminToken, _, _) => match &targets.api {
            Some(api) => {
                api.replace_admin_token(value.clone())?;
                Ok(true)
            }
            None => Ok(false),
        },
        (
            SettingName::StripePublishableKey
            | SettingName::StripeTestPublishableKey
            | SettingName::StripeLivePublishableKey,
            _,
            _,
        ) => match &targets.api {
            Some(api) => {
                let key = value.expose_secret();
                let mode = name
                    .mode()
                    .or_else(|| publishable_mode(key))
                    .context("a publishable key starts with pk_test_ or pk_live_")?;
                api.replace_publishable_key(mode, key)?;
                Ok(true)
            }
            None => Ok(false),
        },
        (SettingName::SmtpUrl, _, Some(mail)) => {
            let mailer =
                Mailer::from_url_with(value.expose_secret(), reload.mailer_options.clone())?;
            mail.replace_default(Some(std::sync::Arc::new(mailer)));
            Ok(true)
        }
        (SettingName::SmtpConnections, _, Some(mail)) => {
            let named = kassa_worker::smtp::parse_connections(
                value.expose_secret(),
                &reload.mailer_options,
            )?;
            mail.replace_named(named);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The merchant's HTTP of `config`: where Checkout sends customers back to (`KASSA_PUBLIC_URL`,
/// else this process's own address) and the publishable key it hands out, checked against the
/// secret key's mode.
fn api_config(
    config: &StackConfig,
    stripe: &Modes,
    store: &Store,
    broker: &Broker,
    address: SocketAddr,
) -> anyhow::Result<ApiConfig> {
    let mut publishable_keys = config.publishable_keys.clone();
    if let (None, Some(StripeTarget::Embedded(_))) = (&publishable_keys.test, &config.stripe) {
        publishable_keys.test = Some(EMBEDDED_SIM_PUBLISHABLE_KEY.to_owned());
    }
    for mode in [Mode::Test, Mode::Live] {
        if let Some(key) = publishable_keys.get(mode) {
            if publishable_mode(key) != Some(mode) || !stripe.has(mode) {
                anyhow::bail!(
                    "KASSA_STRIPE_{upper}_PUBLISHABLE_KEY must be a pk_{mode}_ key of a mode with a secret key (KASSA_STRIPE_{upper}_SECRET_KEY): test and live never mix",
                    upper = mode.to_string().to_uppercase()
                );
            }
        }
    }
    let public_url = match config.public_url.trim_end_matches('/') {
        "" if address.ip().is_unspecified() => anyhow::bail!(
            "KASSA_PUBLIC_URL is required: Checkout sends customers back to /success \
             and /cancel, and KASSA_LISTEN={address} is no address a browser can reach"
        ),
        "" => format!("http://{address}"),
        url => url.to_owned(),
    };
    Ok(ApiConfig {
        stripe: stripe.clone(),
        store: store.clone(),
        topology: broker.topology().clone(),
        admin_token: config.admin_token.clone(),
        public_url,
        publishable_keys,
        stripe_js_url: kassa_api::stripe_js_url(stripe.default_client().api_base()),
        trusted_proxies: config.trusted_proxies.clone(),
        product: ShopProduct::demo().context("the shop's demo product")?,
        public_rate_limit: config.public_rate_limit,
        master_key: config.master_key.clone(),
        default_currency: config.default_currency,
    })
}
