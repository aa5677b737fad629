//! Flags and `KASSA_*` variables, validated once at start: a bad value fails with a message
//! naming the variable. The parts every command shares are here (RabbitMQ, PostgreSQL, Stripe,
//! webhooks, the process commands); the worker's settings and durations are in [`worker`], the
//! rule that sizes the database pool in [`pool`].

mod modes;
mod pool;
mod settings;
mod worker;

pub use modes::{
    warn_standard_keys, ModeKeyArgs, ModePublishableArgs, ModeWebhookArgs, ResolvedKeys,
};

pub use pool::PoolUse;
pub use settings::{require_key, MasterKeyArgs, SettingsReloadArgs, StoredSettings};
pub use worker::{parse_duration, parse_lookback, WorkerArgs};

use anyhow::{bail, Context};
use clap::Args;
use kassa::stack::{StackConfig, StripeTarget, WebhookSecrets};
use kassa_broker::{BrokerConfig, Topology};
use kassa_stripe::Mode;
use kassa_stripe_sim::SimConfig;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Webhook secret used when none is configured and the API key is not a live one: a well-known
/// value (so not a secret), printed as the secret source so nobody mistakes it for production.
pub const DEVELOPMENT_WEBHOOK_SECRET: &str = "whsec_kassa_development_only";

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested: finishing in-flight work");
    token.cancel();
}

/// `KASSA_AMQP_URL`'s default: the local broker's guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// RabbitMQ settings shared by every process that talks to the broker.
#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ URL, or the URLs of a cluster's nodes separated by commas: Kassa connects to
    /// one and moves to the next when it loses it (a comma in a password is written %2C).
    #[arg(
        long,
        env = "KASSA_AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name (tests and benchmarks use one so runs never share a queue).
    #[arg(long, env = "KASSA_AMQP_PREFIX", default_value = "")]
    pub amqp_prefix: String,
    /// How long a publish waits for RabbitMQ's confirm before the webhook is answered 503.
    #[arg(long, env = "KASSA_PUBLISH_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub publish_timeout_ms: u64,
    /// Confirm-mode channels that publishes are spread over.
    #[arg(long, env = "KASSA_PUBLISH_CHANNELS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub publish_channels: u64,
    /// Replicas of each quorum queue Kassa creates (`x-quorum-initial-group-size`); RabbitMQ
    /// uses fewer when the cluster has fewer nodes, so 3 also fits a single node.
    #[arg(long, env = "KASSA_AMQP_QUORUM_GROUP_SIZE", default_value_t = kassa_broker::topology::DEFAULT_QUORUM_GROUP_SIZE, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub amqp_quorum_group_size: u32,
}

impl BrokerArgs {
    /// The broker configuration these flags describe; a bad URL fails here, naming the
    /// variable (with passwords redacted).
    pub fn config(&self) -> anyhow::Result<BrokerConfig> {
        kassa_broker::connection::validate_addresses(&self.amqp_url)
            .map_err(|error| anyhow::anyhow!("KASSA_AMQP_URL: {error}"))?;
        let mut config = BrokerConfig::new(self.amqp_url.clone());
        config.topology = Topology::new(self.amqp_prefix.clone())
            .with_quorum_group_size(self.amqp_quorum_group_size);
        config.confirm_timeout = Duration::from_millis(self.publish_timeout_ms);
        config.publisher_channels = usize::try_from(self.publish_channels).unwrap_or(4);
        config.connection_name = format!("kassa-{}", std::process::id());
        Ok(config)
    }
}

/// Limits of an HTTP listener against slow, many or malicious clients.
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Time a client has to send a request's headers; an idle keep-alive connection is closed
    /// after the same time (90s, 1m).
    #[arg(long, env = "KASSA_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_header_timeout: Duration,
    /// Longest pause while a request body is read (408 above it).
    #[arg(long, env = "KASSA_HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_body_timeout: Duration,
    /// Longest time from a request's headers to its answer, body included (503 above it);
    /// more than KASSA_PUBLISH_TIMEOUT_MS, so a webhook's publish is never cut short.
    #[arg(long, env = "KASSA_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub http_request_timeout: Duration,
    /// Connections open at once on this listener; more wait in the kernel's accept queue. Keep
    /// it below the process's open-file limit (ulimit -n).
    #[arg(long, env = "KASSA_HTTP_MAX_CONNECTIONS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,
    /// Requests handled at once on this listener; more are answered 503 at once.
    #[arg(long, env = "KASSA_HTTP_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_in_flight: u32,
}

impl HttpArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> kassa_ingress::HttpLimits {
        kassa_ingress::HttpLimits {
            header_read_timeout: self.http_header_timeout,
            body_timeout: self.http_body_timeout,
            request_timeout: self.http_request_timeout,
            max_connections: self.http_max_connections as usize,
            max_in_flight: self.http_max_in_flight as usize,
        }
    }

    /// The limits, checked against the publish time-out of the same process.
    pub fn limits_for_webhooks(
        &self,
        broker: &BrokerArgs,
    ) -> anyhow::Result<kassa_ingress::HttpLimits> {
        let publish = Duration::from_millis(broker.publish_timeout_ms);
        if self.http_request_timeout <= publish {
            bail!(
                "KASSA_HTTP_REQUEST_TIMEOUT={}s must be longer than KASSA_PUBLISH_TIMEOUT_MS={} ms, or webhooks are cut before RabbitMQ confirms them",
                self.http_request_timeout.as_secs(),
                broker.publish_timeout_ms
            );
        }
        Ok(self.limits())
    }
}

/// `KASSA_DEFAULT_CURRENCY`: a currency Stripe charges in (kassa-stripe's money table).
fn parse_default_currency(code: &str) -> Result<kassa_stripe::money::Currency, String> {
    kassa_stripe::money::Currency::parse(code).map_err(|_| {
        format!("KASSA_DEFAULT_CURRENCY={code:?} is not a 3-letter ISO code of a currency Stripe charges in")
    })
}

/// A duration above zero (`10s`, `1m`).
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

/// The rate limit of the merchant pages (`/`, `/create-checkout-session`, `/success`,
/// `/cancel`, `/save-your-card`, `/save-card/…`) per client address (the TCP peer, or behind
/// KASSA_TRUSTED_PROXIES the address they forward).
#[derive(Args, Clone, Debug)]
pub struct PublicRateArgs {
    /// Requests per second one client address may keep making to the merchant pages; above it
    /// they are answered 429 rate_limited. 0 turns the limit off.
    #[arg(long, env = "KASSA_PUBLIC_RATE_LIMIT", default_value_t = 5)]
    pub public_rate_limit: u32,
    /// Requests one client address may make to the merchant pages at once before
    /// KASSA_PUBLIC_RATE_LIMIT applies.
    #[arg(long, env = "KASSA_PUBLIC_RATE_LIMIT_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub public_rate_limit_burst: u32,
}

impl PublicRateArgs {
    /// The limit these flags describe; `None` when it is off.
    pub fn limit(&self) -> Option<kassa_api::PublicRateLimit> {
        Some(kassa_api::PublicRateLimit {
            per_second: NonZeroU32::new(self.public_rate_limit)?,
            burst: NonZeroU32::new(self.public_rate_limit_burst)?,
        })
    }
}

/// What receiving webhooks needs; shared by `kassa ingress` and `kassa serve`.
#[derive(Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Address the HTTP server binds.
    #[arg(long, env = "KASSA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of `/metrics` (Prometheus text), a listener of its own: the public port never
    /// shows charge volumes. Port 0: any free port (logged at start).
    #[arg(long, env = "KASSA_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// Webhook signing secrets (`whsec_…`) of a single-mode deployment's endpoint,
    /// comma-separated; two during a rotation.
    #[arg(
        long,
        env = "KASSA_STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_secrets: Vec<String>,
    /// Seconds a signature timestamp may be away from now (Stripe's libraries use 300).
    #[arg(long, env = "KASSA_WEBHOOK_TOLERANCE_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub webhook_tolerance_secs: u64,
    /// Stripe secret or restricted key of a single-mode deployment (its mode is read from the
    /// key); the ingress only reads its mode (live keys require real secrets).
    #[arg(long, env = "KASSA_STRIPE_API_KEY", hide_env_values = true)]
    pub stripe_api_key: Option<String>,
    #[command(flatten)]
    pub mode_keys: ModeKeyArgs,
    #[command(flatten)]
    pub mode_secrets: ModeWebhookArgs,
    /// With no KASSA_STRIPE_WEBHOOK_SECRETS, accept webhooks signed with the well-known
    /// development secret instead of refusing to start. Never in production: anyone can sign with it.
    #[arg(long, env = "KASSA_ALLOW_DEVELOPMENT_SECRET")]
    pub allow_development_secret: bool,
}

impl WebhookArgs {
    /// Where the webhook secrets come from, for the first log line.
    pub fn secret_source(&self) -> &'static str {
        if self.webhook_secrets.iter().any(|s| !s.trim().is_empty()) || self.mode_secrets.any() {
            "KASSA_STRIPE_WEBHOOK_SECRETS / KASSA_STRIPE_TEST_WEBHOOK_SECRETS / KASSA_STRIPE_LIVE_WEBHOOK_SECRETS"
        } else {
            "built-in development secret (test mode only; set KASSA_STRIPE_TEST_WEBHOOK_SECRETS)"
        }
    }

    /// The keys of each mode, if any is set (an ingress of webhooks only reads their modes).
    pub fn keys(&self) -> anyhow::Result<Option<ResolvedKeys>> {
        modes::secret_keys(self.stripe_api_key.as_deref(), &self.mode_keys)
    }

    /// The webhook secrets of each mode and the modes KASSA_STRIPE_WEBHOOK_SECRETS stands for,
    /// refusing bad or missing ones: every mode with a key needs its endpoint's secrets (test
    /// mode may fall back to the development secret when allowed); without any key, some secret.
    pub fn webhook_secrets(
        &self,
        keys: Option<&ResolvedKeys>,
    ) -> anyhow::Result<(WebhookSecrets, Vec<Mode>)> {
        let (mut secrets, legacy_modes) =
            modes::webhook_secrets(&self.webhook_secrets, &self.mode_secrets, keys)?;
        let test_needs_one = match keys {
            Some(keys) => {
                if keys.keys.live.is_some() && secrets.live.is_empty() {
                    if keys.legacy_mode == Some(Mode::Live) {
                        bail!("KASSA_STRIPE_WEBHOOK_SECRETS is required with a live KASSA_STRIPE_API_KEY");
                    }
                    bail!("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS is required with KASSA_STRIPE_LIVE_SECRET_KEY (the live endpoint's whsec_ secrets)");
                }
                keys.keys.test.is_some() && secrets.test.is_empty()
            }
            None => secrets.test.is_empty() && secrets.live.is_empty(),
        };
        if test_needs_one {
            if !self.allow_development_secret {
                bail!(
                    "KASSA_STRIPE_WEBHOOK_SECRETS is not set: give the endpoint's whsec_ secret(s) \
                     (KASSA_STRIPE_TEST_WEBHOOK_SECRETS / KASSA_STRIPE_LIVE_WEBHOOK_SECRETS per mode), or \
                     --allow-development-secret (KASSA_ALLOW_DEVELOPMENT_SECRET=true) to accept the well-known \
                     development secret {DEVELOPMENT_WEBHOOK_SECRET} in test mode for local testing"
                );
            }
            secrets
                .test
                .push(SecretString::from(DEVELOPMENT_WEBHOOK_SECRET.to_owned()));
        }
        Ok((secrets, legacy_modes))
    }
}

/// `kassa ingress`: webhooks; with `KASSA_ADMIN_TOKEN` also the back-office, checkout and
/// connector APIs and the merchant pages, so a deployment that splits ingress and worker
/// processes still serves them (from the ingress processes, which can be scaled out).
#[derive(Args, Clone, Debug)]
pub struct IngressArgs {
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub api: IngressApiArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    #[command(flatten)]
    pub reload: SettingsReloadArgs,
    /// The storable settings the environment (or a flag) gave, filled by `apply_stored`.
    #[arg(skip)]
    pub from_env: std::collections::HashSet<kassa_core::settings::SettingName>,
}

/// What `kassa ingress` needs for the APIs (read only when `KASSA_ADMIN_TOKEN` is set).
#[derive(Args, Clone, Debug)]
pub struct IngressApiArgs {
    /// Bearer token of the back-office, checkout and connector APIs (at least 16 characters).
    /// Set: this ingress serves them and the merchant pages too, which needs
    /// KASSA_STRIPE_API_KEY and PostgreSQL. Not set: webhooks, health and metrics only.
    #[arg(long, env = "KASSA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PostgreSQL URL (with KASSA_ADMIN_TOKEN); the database is created if missing and migrated.
    #[arg(long, env = "KASSA_DATABASE_URL", default_value = kassa_store::DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Connections in the pool (with KASSA_ADMIN_TOKEN); not set: what the APIs and pages
    /// need (see the README's pool rule), which is also the least accepted.
    #[arg(long, env = "KASSA_DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: Option<u32>,
    /// Stripe's API base URL (a simulator's URL in tests).
    #[arg(long, env = "KASSA_STRIPE_API_BASE", default_value = kassa_stripe::DEFAULT_API_BASE)]
    pub stripe_api_base: String,
    #[command(flatten)]
    pub pace: StripePaceArgs,
    /// Kassa's public base URL: Checkout sends customers back to `/success` and `/cancel` there.
    /// Not set: this process's own address.
    #[arg(long, env = "KASSA_PUBLIC_URL")]
    pub public_url: Option<url::Url>,
    /// Publishable key (`pk_test_…`/`pk_live_…`) handed out by `POST /api/payment-intents`;
    /// must be of the API key's mode.
    #[arg(long, env = "KASSA_STRIPE_PUBLISHABLE_KEY")]
    pub publishable_key: Option<String>,
    #[command(flatten)]
    pub publishable: ModePublishableArgs,
    #[command(flatten)]
    pub public_rate: PublicRateArgs,
    /// Reverse proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names
    /// the customer for the public endpoints' rate limits; not set: the TCP peer's address.
    #[arg(long, env = "KASSA_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Currency of an API request that names none (3-letter ISO code Stripe charges in).
    #[arg(long, env = "KASSA_DEFAULT_CURRENCY", default_value = "usd", value_parser = parse_default_currency)]
    pub default_currency: kassa_stripe::money::Currency,
}

impl IngressArgs {
    /// Whether this ingress reads the stored settings: with the APIs (which use PostgreSQL
    /// anyway) or a master key; an ingress of webhooks only needs no database.
    pub fn reads_stored_settings(&self) -> bool {
        self.master_key.is_set()
            || self
                .api
                .admin_token
                .as_deref()
                .is_some_and(|t| !t.trim().is_empty())
    }

    /// Fills every setting the environment left unset from the stored settings.
    pub fn apply_stored(&mut self, stored: &StoredSettings) {
        use kassa_core::settings::SettingName;
        let env = &mut self.from_env;
        stored.fill(
            SettingName::StripeApiKey,
            &mut self.webhook.stripe_api_key,
            env,
        );
        stored.fill(
            SettingName::StripePublishableKey,
            &mut self.api.publishable_key,
            env,
        );
        stored.fill_list(
            SettingName::StripeWebhookSecrets,
            &mut self.webhook.webhook_secrets,
            env,
        );
        fill_mode_keys(stored, &mut self.webhook.mode_keys, env);
        fill_mode_publishable(stored, &mut self.api.publishable, env);
        fill_mode_secrets(stored, &mut self.webhook.mode_secrets, env);
        stored.fill(SettingName::AdminToken, &mut self.api.admin_token, env);
    }

    /// The process's configuration: webhooks only, or webhooks and the APIs.
    pub fn stack_config(&self) -> anyhow::Result<StackConfig> {
        let master_key = self.master_key.key()?;
        let keys = self.webhook.keys()?;
        let (webhook_secrets, legacy_modes) = self.webhook.webhook_secrets(keys.as_ref())?;
        let admin_token = parse_admin_token(self.api.admin_token.as_deref())?;
        let stripe = match &admin_token {
            None => None,
            Some(_) => Some(
                api_target(keys.clone(), &self.api.stripe_api_base)?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "KASSA_ADMIN_TOKEN makes `kassa ingress` serve the back-office, checkout \
                         and connector APIs, which call Stripe: set KASSA_STRIPE_API_KEY (or \
                         KASSA_STRIPE_TEST_SECRET_KEY / KASSA_STRIPE_LIVE_SECRET_KEY) too"
                    )
                })?,
            ),
        };
        let publishable_keys = match &keys {
            Some(keys) => modes::publishable_keys(
                self.api.publishable_key.as_deref(),
                &self.api.publishable,
                keys,
            )?,
            None => Default::default(),
        };
        if let (Some(keys), Some(_)) = (&keys, &admin_token) {
            modes::warn_standard_keys(&keys.keys);
        }
        let pool = PoolUse {
            worker: None,
            pages: admin_token.is_some(),
            admin_api: admin_token.is_some(),
        };
        let db_max_connections = if admin_token.is_some() {
            pool.pool_size("kassa ingress", self.api.database_max_connections)?
        } else {
            1
        };
        Ok(StackConfig {
            listen: Some(self.webhook.listen),
            metrics_listen: Some(self.webhook.metrics_listen),
            webhooks: true,
            broker: self.webhook.broker.config()?,
            http: self
                .webhook
                .http
                .limits_for_webhooks(&self.webhook.broker)?,
            database_url: admin_token.as_ref().map(|_| self.api.database_url.clone()),
            db_max_connections,
            stripe,
            stripe_max_rps: self.api.pace.stripe_max_rps,
            stripe_endpoint_rps: self.api.pace.endpoint_rps(),
            webhook_secrets,
            webhook_tolerance: Duration::from_secs(self.webhook.webhook_tolerance_secs),
            worker: None,
            admin_token,
            public_url: self
                .api
                .public_url
                .as_ref()
                .map(|url| url.as_str().trim_end_matches('/').to_owned())
                .unwrap_or_default(),
            publishable_keys,
            public_rate_limit: self.api.public_rate.limit(),
            trusted_proxies: trusted_proxies(&self.api.trusted_proxies)?,
            default_currency: self.api.default_currency,
            // Only with the APIs does this process keep a database to read again.
            settings_reload: self.reload.reload(
                master_key.as_ref(),
                &self.from_env,
                &[&WEBHOOK_SECRET_SETTINGS[..], &API_SETTINGS[..]].concat(),
                Default::default(),
                legacy_modes,
            ),
            master_key,
        })
    }
}

/// The stored settings that hold webhook secrets (reloaded while running).
const WEBHOOK_SECRET_SETTINGS: [kassa_core::settings::SettingName; 3] = [
    kassa_core::settings::SettingName::StripeWebhookSecrets,
    kassa_core::settings::SettingName::StripeTestWebhookSecrets,
    kassa_core::settings::SettingName::StripeLiveWebhookSecrets,
];

/// The stored settings of the merchant's HTTP a running process takes without a restart.
const API_SETTINGS: [kassa_core::settings::SettingName; 4] = [
    kassa_core::settings::SettingName::AdminToken,
    kassa_core::settings::SettingName::StripePublishableKey,
    kassa_core::settings::SettingName::StripeTestPublishableKey,
    kassa_core::settings::SettingName::StripeLivePublishableKey,
];

/// Fills the per-mode secret keys from the stored settings.
fn fill_mode_keys(
    stored: &StoredSettings,
    keys: &mut ModeKeyArgs,
    env: &mut std::collections::HashSet<kassa_core::settings::SettingName>,
) {
    use kassa_core::settings::SettingName;
    stored.fill(
        SettingName::StripeTestSecretKey,
        &mut keys.stripe_test_secret_key,
        env,
    );
    stored.fill(
        SettingName::StripeLiveSecretKey,
        &mut keys.stripe_live_secret_key,
        env,
    );
}

/// Fills the per-mode publishable keys from the stored settings.
fn fill_mode_publishable(
    stored: &StoredSettings,
    keys: &mut ModePublishableArgs,
    env: &mut std::collections::HashSet<kassa_core::settings::SettingName>,
) {
    use kassa_core::settings::SettingName;
    stored.fill(
        SettingName::StripeTestPublishableKey,
        &mut keys.stripe_test_publishable_key,
        env,
    );
    stored.fill(
        SettingName::StripeLivePublishableKey,
        &mut keys.stripe_live_publishable_key,
        env,
    );
}

/// Fills the per-mode webhook secrets from the stored settings.
fn fill_mode_secrets(
    stored: &StoredSettings,
    secrets: &mut ModeWebhookArgs,
    env: &mut std::collections::HashSet<kassa_core::settings::SettingName>,
) {
    use kassa_core::settings::SettingName;
    stored.fill_list(
        SettingName::StripeTestWebhookSecrets,
        &mut secrets.stripe_test_webhook_secrets,
        env,
    );
    stored.fill_list(
        SettingName::StripeLiveWebhookSecrets,
        &mut secrets.stripe_live_webhook_secrets,
        env,
    );
}

/// Stripe at `api_base` with `keys`, if any; a bad base URL fails here, naming the variable.
fn api_target(keys: Option<ResolvedKeys>, api_base: &str) -> anyhow::Result<Option<StripeTarget>> {
    let Some(keys) = keys else {
        return Ok(None);
    };
    url::Url::parse(api_base)
        .map_err(|e| anyhow::anyhow!("KASSA_STRIPE_API_BASE={api_base:?}: {e}"))?;
    Ok(Some(StripeTarget::Api {
        keys: keys.keys,
        api_base: api_base.to_owned(),
    }))
}

/// `KASSA_TRUSTED_PROXIES`, each an address or a network.
fn trusted_proxies(list: &[String]) -> anyhow::Result<Vec<kassa_api::IpNet>> {
    kassa_api::widgets::parse_trusted_proxies(list)
        .map_err(|e| anyhow::anyhow!("KASSA_TRUSTED_PROXIES: {e}"))
}

/// `KASSA_ADMIN_TOKEN`: unset or empty → no API; shorter than 16 characters → refused.
fn parse_admin_token(raw: Option<&str>) -> anyhow::Result<Option<SecretString>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(token) if token.len() < 16 => {
            bail!("KASSA_ADMIN_TOKEN must be at least 16 characters")
        }
        Some(token) => Ok(Some(SecretString::from(token.to_owned()))),
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// PostgreSQL settings.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// PostgreSQL URL; the database is created if missing and migrated at start.
    #[arg(long, env = "KASSA_DATABASE_URL", default_value = kassa_store::DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Connections in the pool. Not set: what this process needs (the README's pool rule:
    /// `serve` and `worker` 2 × KASSA_WORKER_CONCURRENCY + 2, plus 18 for the pages and APIs);
    /// set below that, Kassa refuses to start.
    #[arg(long, env = "KASSA_DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: Option<u32>,
}

/// Where Stripe is.
#[derive(Args, Clone, Debug)]
pub struct StripeArgs {
    /// Stripe secret (`sk_…`) or restricted (`rk_…`) key of a single-mode deployment (its mode
    /// is read from the key). Not set, nor a per-mode key: `serve` and `demo` start the embedded
    /// simulator.
    #[arg(long, env = "KASSA_STRIPE_API_KEY", hide_env_values = true)]
    pub stripe_api_key: Option<String>,
    #[command(flatten)]
    pub mode_keys: ModeKeyArgs,
    /// Stripe's API base URL (a simulator's URL in tests).
    #[arg(long, env = "KASSA_STRIPE_API_BASE", default_value = kassa_stripe::DEFAULT_API_BASE)]
    pub stripe_api_base: String,
    #[command(flatten)]
    pub pace: StripePaceArgs,
}

/// How fast a process calls Stripe: per account and per endpoint.
#[derive(Args, Clone, Debug)]
pub struct StripePaceArgs {
    /// Requests per second this process sends to Stripe at most, evenly spaced (Stripe allows
    /// about 100/s live and 25/s in test mode per account: divide by the number of processes).
    #[arg(long, env = "KASSA_STRIPE_MAX_RPS")]
    pub stripe_max_rps: Option<NonZeroU32>,
    /// Requests per second the whole deployment sends to any one Stripe endpoint (e.g.
    /// `POST /v1/payment_intents`, or `GET /v1/customers/{id}` whatever the id); each process
    /// paces itself at this divided by KASSA_STRIPE_PROCESSES (at least 1). Stripe allows about
    /// 25/s per endpoint. 0: no per-endpoint pace.
    #[arg(long, env = "KASSA_STRIPE_ENDPOINT_RPS", default_value_t = 25, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub stripe_endpoint_rps: u32,
    /// Processes of this deployment calling Stripe with the same account (workers, and `serve`
    /// or API ingresses): KASSA_STRIPE_ENDPOINT_RPS is shared among them.
    #[arg(long, env = "KASSA_STRIPE_PROCESSES", default_value_t = NonZeroU32::MIN)]
    pub stripe_processes: NonZeroU32,
}

impl StripePaceArgs {
    /// This process's share of the per-endpoint pace; `None` without one.
    pub fn endpoint_rps(&self) -> Option<NonZeroU32> {
        if self.stripe_endpoint_rps == 0 {
            return None;
        }
        NonZeroU32::new((self.stripe_endpoint_rps / self.stripe_processes.get()).max(1))
    }

    /// Sets both paces on a client's configuration.
    pub fn apply(&self, config: &mut kassa_stripe::ClientConfig) {
        config.max_requests_per_second = self.stripe_max_rps;
        config.max_requests_per_second_per_endpoint = self.endpoint_rps();
    }
}

/// `--live` / `--test`: the mode of a command's Stripe calls and of the rows it writes (absent:
/// the default mode, `KASSA_DEFAULT_MODE` or the only configured one); for a listing, a filter
/// (absent: both modes).
#[derive(Args, Clone, Debug, Default)]
pub struct ModeArgs {
    /// Live mode: live keys, live rows (a listing shows live rows only).
    #[arg(long, conflicts_with = "test")]
    pub live: bool,
    /// Test mode: test keys, test rows (a listing shows test rows only).
    #[arg(long)]
    pub test: bool,
}

impl ModeArgs {
    /// The mode asked for, if any.
    pub fn mode(&self) -> Option<Mode> {
        match (self.live, self.test) {
            (true, _) => Some(Mode::Live),
            (_, true) => Some(Mode::Test),
            _ => None,
        }
    }

    /// The mode asked for as a `livemode` filter (`None`: both modes).
    pub fn livemode(&self) -> Option<bool> {
        self.mode().map(Mode::is_live)
    }
}

impl StripeArgs {
    /// The mode a command runs in: `mode` when given, else the default mode of the configured
    /// keys (test without any key).
    pub fn mode_for(&self, mode: Option<Mode>) -> anyhow::Result<Mode> {
        if let Some(mode) = mode {
            return Ok(mode);
        }
        Ok(match self.keys()? {
            Some(keys) => default_mode(&keys),
            None => Mode::Test,
        })
    }

    /// The Stripe client of `mode` (else of the default mode): its key is required, and a mode
    /// without one is refused, naming the variable — never served with the other mode's key.
    pub fn client_for(&self, mode: Option<Mode>) -> anyhow::Result<kassa_stripe::Client> {
        let Some(keys) = self.keys()? else {
            bail!("KASSA_STRIPE_API_KEY (or KASSA_STRIPE_TEST_SECRET_KEY / KASSA_STRIPE_LIVE_SECRET_KEY) is required (a sk_test_/sk_live_ or rk_ key)");
        };
        api_target(Some(keys.clone()), &self.stripe_api_base)?;
        let mode = mode.unwrap_or_else(|| default_mode(&keys));
        if keys.keys.get(mode).is_none() {
            bail!(
                "{mode} mode is not configured: KASSA_STRIPE_{}_SECRET_KEY is not set (nothing was sent to Stripe)",
                modes::upper(mode)
            );
        }
        self.client_of(&keys, mode)?.context("the mode has a key")
    }

    /// The client of `mode`'s key in `keys`, paced as configured; `None` without one.
    fn client_of(
        &self,
        keys: &ResolvedKeys,
        mode: Mode,
    ) -> anyhow::Result<Option<kassa_stripe::Client>> {
        let Some(key) = keys.keys.get(mode) else {
            return Ok(None);
        };
        let mut config = kassa_stripe::ClientConfig::new(key.clone());
        config.api_base = self.stripe_api_base.clone();
        self.pace.apply(&mut config);
        let client = kassa_stripe::Client::new(config)
            .with_context(|| format!("{} / KASSA_STRIPE_API_BASE", keys.variable(mode)))?;
        Ok(Some(client))
    }

    /// The Stripe client of every configured mode (each paced alike), for a command that needs
    /// Stripe: a key is required.
    pub fn modes(&self) -> anyhow::Result<kassa_stripe::Modes> {
        let Some(keys) = self.keys()? else {
            bail!("KASSA_STRIPE_API_KEY (or KASSA_STRIPE_TEST_SECRET_KEY / KASSA_STRIPE_LIVE_SECRET_KEY) is required (a sk_test_/sk_live_ or rk_ key)");
        };
        api_target(Some(keys.clone()), &self.stripe_api_base)?;
        kassa_stripe::Modes::new(
            self.client_of(&keys, Mode::Test)?,
            self.client_of(&keys, Mode::Live)?,
            keys.keys.default,
        )
        .context("the Stripe keys")
    }

    /// The keys of each mode, if any is set; refused as [`modes::secret_keys`] says.
    pub fn keys(&self) -> anyhow::Result<Option<ResolvedKeys>> {
        modes::secret_keys(self.stripe_api_key.as_deref(), &self.mode_keys)
    }

    /// The configured Stripe, if a key is set; a bad key fails here, naming the variable.
    pub fn target(&self) -> anyhow::Result<Option<StripeTarget>> {
        api_target(self.keys()?, &self.stripe_api_base)
    }
}

/// The default mode of `keys`: `KASSA_DEFAULT_MODE`, else the only configured one.
fn default_mode(keys: &ResolvedKeys) -> Mode {
    match keys.keys.default {
        Some(mode) => mode,
        None if keys.keys.test.is_some() => Mode::Test,
        None => Mode::Live,
    }
}

/// `kassa worker`.
#[derive(Args, Clone, Debug)]
pub struct WorkerCommandArgs {
    /// Address of the worker's `/healthz` and `/readyz` (8081 by default, so an ingress and a
    /// worker can share a host with their defaults).
    #[arg(long, env = "KASSA_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Address of the worker's `/metrics` (9091 by default, beside the ingress's 9090). Port 0:
    /// any free port (logged at start).
    #[arg(long, env = "KASSA_METRICS_LISTEN", default_value = "127.0.0.1:9091")]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    #[command(flatten)]
    pub reload: SettingsReloadArgs,
    /// The storable settings the environment (or a flag) gave, filled by `apply_stored`.
    #[arg(skip)]
    pub from_env: std::collections::HashSet<kassa_core::settings::SettingName>,
}

impl WorkerCommandArgs {
    /// Fills every setting the environment left unset from the stored settings.
    pub fn apply_stored(&mut self, stored: &StoredSettings) {
        use kassa_core::settings::SettingName;
        let env = &mut self.from_env;
        stored.fill(
            SettingName::StripeApiKey,
            &mut self.stripe.stripe_api_key,
            env,
        );
        fill_mode_keys(stored, &mut self.stripe.mode_keys, env);
        stored.fill(SettingName::SmtpUrl, &mut self.worker.smtp_url, env);
        stored.fill(
            SettingName::SmtpConnections,
            &mut self.worker.smtp_connections,
            env,
        );
    }
}

/// `kassa serve` and `kassa demo`: ingress and worker in one process.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub ingress: WebhookArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Stripe's API base URL (a simulator's URL in tests).
    #[arg(long, env = "KASSA_STRIPE_API_BASE", default_value = kassa_stripe::DEFAULT_API_BASE)]
    pub stripe_api_base: String,
    #[command(flatten)]
    pub pace: StripePaceArgs,
    /// Bearer token of the back-office API (`/api/charges`); not set: the API is not mounted.
    #[arg(long, env = "KASSA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Publishable key (`pk_test_…`/`pk_live_…`) handed to merchants' payment forms by
    /// `POST /api/payment-intents`; must be of the API key's mode.
    #[arg(long, env = "KASSA_STRIPE_PUBLISHABLE_KEY")]
    pub publishable_key: Option<String>,
    #[command(flatten)]
    pub publishable: ModePublishableArgs,
    /// Reverse proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names
    /// the customer for the public endpoints' rate limits; not set: the TCP peer's address.
    #[arg(long, env = "KASSA_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    #[command(flatten)]
    pub public_rate: PublicRateArgs,
    /// Currency of an API request that names none (3-letter ISO code Stripe charges in).
    #[arg(long, env = "KASSA_DEFAULT_CURRENCY", default_value = "usd", value_parser = parse_default_currency)]
    pub default_currency: kassa_stripe::money::Currency,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    #[command(flatten)]
    pub reload: SettingsReloadArgs,
    /// The storable settings the environment (or a flag) gave, filled by `apply_stored`.
    #[arg(skip)]
    pub from_env: std::collections::HashSet<kassa_core::settings::SettingName>,
}

impl ServeArgs {
    /// Fills every setting the environment left unset from the stored settings.
    pub fn apply_stored(&mut self, stored: &StoredSettings) {
        use kassa_core::settings::SettingName;
        let env = &mut self.from_env;
        stored.fill(
            SettingName::StripeApiKey,
            &mut self.ingress.stripe_api_key,
            env,
        );
        stored.fill(
            SettingName::StripePublishableKey,
            &mut self.publishable_key,
            env,
        );
        stored.fill_list(
            SettingName::StripeWebhookSecrets,
            &mut self.ingress.webhook_secrets,
            env,
        );
        fill_mode_keys(stored, &mut self.ingress.mode_keys, env);
        fill_mode_publishable(stored, &mut self.publishable, env);
        fill_mode_secrets(stored, &mut self.ingress.mode_secrets, env);
        stored.fill(SettingName::AdminToken, &mut self.admin_token, env);
        stored.fill(SettingName::SmtpUrl, &mut self.worker.smtp_url, env);
        stored.fill(
            SettingName::SmtpConnections,
            &mut self.worker.smtp_connections,
            env,
        );
    }

    /// Stripe from the keys, or the embedded simulator when none is set.
    pub fn stripe_target(&self) -> anyhow::Result<StripeTarget> {
        Ok(
            match api_target(self.ingress.keys()?, &self.stripe_api_base)? {
                Some(target) => target,
                None => StripeTarget::Embedded(Box::default()),
            },
        )
    }

    /// The whole stack's configuration.
    pub fn stack_config(&self) -> anyhow::Result<StackConfig> {
        use kassa_core::settings::SettingName;
        let admin_token = parse_admin_token(self.admin_token.as_deref())?;
        let pool = PoolUse {
            pages: true,
            admin_api: admin_token.is_some(),
            ..self.worker.pool_use()
        };
        let db_max_connections =
            pool.pool_size("kassa serve", self.store.database_max_connections)?;
        let keys = self.ingress.keys()?;
        let stripe = self.stripe_target()?;
        let master_key = self.master_key.key()?;
        let (webhook_secrets, legacy_modes, publishable_keys, reloadable) = match &keys {
            // The embedded simulator signs with a fresh secret of its own, in test mode.
            None => {
                let publishable = match (
                    non_empty(self.publishable_key.as_deref()),
                    non_empty(self.publishable.stripe_test_publishable_key.as_deref()),
                ) {
                    (Some(key), _) | (None, Some(key)) => {
                        kassa::stack::check_publishable_key(&key, Mode::Test)?;
                        Some(key)
                    }
                    (None, None) => None,
                };
                (
                    WebhookSecrets::default(),
                    Vec::new(),
                    kassa_api::PublishableKeys {
                        test: publishable,
                        live: None,
                    },
                    vec![
                        SettingName::AdminToken,
                        SettingName::SmtpUrl,
                        SettingName::SmtpConnections,
                    ],
                )
            }
            Some(keys) => {
                let (secrets, legacy_modes) = modes::webhook_secrets(
                    &self.ingress.webhook_secrets,
                    &self.ingress.mode_secrets,
                    Some(keys),
                )?;
                for mode in keys.modes() {
                    if secrets.get(mode).is_empty() {
                        if keys.legacy_mode == Some(mode) {
                            bail!("KASSA_STRIPE_WEBHOOK_SECRETS is required when KASSA_STRIPE_API_KEY is set");
                        }
                        bail!(
                            "KASSA_STRIPE_{upper}_WEBHOOK_SECRETS is required when KASSA_STRIPE_{upper}_SECRET_KEY is set (the {mode} endpoint's whsec_ secrets)",
                            upper = modes::upper(mode)
                        );
                    }
                }
                let publishable = modes::publishable_keys(
                    self.publishable_key.as_deref(),
                    &self.publishable,
                    keys,
                )?;
                modes::warn_standard_keys(&keys.keys);
                let mut reloadable = [&WEBHOOK_SECRET_SETTINGS[..], &API_SETTINGS[..]].concat();
                reloadable.extend([SettingName::SmtpUrl, SettingName::SmtpConnections]);
                (secrets, legacy_modes, publishable, reloadable)
            }
        };
        Ok(StackConfig {
            listen: Some(self.ingress.listen),
            metrics_listen: Some(self.ingress.metrics_listen),
            webhooks: true,
            broker: self.ingress.broker.config()?,
            http: self
                .ingress
                .http
                .limits_for_webhooks(&self.ingress.broker)?,
            database_url: Some(self.store.database_url.clone()),
            db_max_connections,
            stripe: Some(stripe),
            stripe_max_rps: self.pace.stripe_max_rps,
            stripe_endpoint_rps: self.pace.endpoint_rps(),
            webhook_secrets,
            webhook_tolerance: Duration::from_secs(self.ingress.webhook_tolerance_secs),
            worker: Some(self.worker.config()?),
            admin_token,
            public_url: self
                .worker
                .public_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            publishable_keys,
            public_rate_limit: self.public_rate.limit(),
            trusted_proxies: trusted_proxies(&self.trusted_proxies)?,
            default_currency: self.default_currency,
            settings_reload: self.reload.reload(
                master_key.as_ref(),
                &self.from_env,
                &reloadable,
                self.worker.mailer_options(),
                legacy_modes,
            ),
            master_key,
        })
    }
}

/// `kassa stripe-sim`.
#[derive(Args, Clone, Debug)]
pub struct StripeSimArgs {
    /// Address the simulator binds.
    #[arg(long, env = "KASSA_SIM_LISTEN", default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Where to deliver webhooks (repeat for several endpoints).
    #[arg(long = "webhook-endpoint")]
    pub webhook_endpoints: Vec<String>,
    /// The secret webhooks are signed with.
    #[arg(long, default_value = kassa_stripe_sim::DEFAULT_WEBHOOK_SECRET, hide_default_value = true)]
    pub webhook_secret: String,
    /// Where to deliver live-mode webhooks (repeat for several endpoints; live keys `sk_live_…`).
    #[arg(long = "live-webhook-endpoint")]
    pub live_webhook_endpoints: Vec<String>,
    /// The secret live-mode webhooks are signed with (must differ from --webhook-secret).
    #[arg(long, default_value = kassa_stripe_sim::DEFAULT_LIVE_WEBHOOK_SECRET, hide_default_value = true)]
    pub live_webhook_secret: String,
    /// Answer this fraction of /v1 requests with a 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Answer 429 rate_limit above this many requests per second (Stripe test mode: about 25).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Answer 429 rate_limit above this many requests per second to one endpoint (Stripe: about 25).
    #[arg(long)]
    pub endpoint_rate_limit: Option<u32>,
    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

impl StripeSimArgs {
    /// The simulator configuration these flags describe.
    pub fn sim_config(&self) -> anyhow::Result<SimConfig> {
        if !self.webhook_secret.starts_with("whsec_") {
            bail!("--webhook-secret must start with whsec_");
        }
        if !self.live_webhook_secret.starts_with("whsec_") {
            bail!("--live-webhook-secret must start with whsec_");
        }
        if self.live_webhook_secret == self.webhook_secret {
            bail!("--live-webhook-secret must differ from --webhook-secret");
        }
        let mut config = SimConfig {
            listen: self.listen,
            webhook_endpoints: self.webhook_endpoints.clone(),
            webhook_secret: self.webhook_secret.clone(),
            live_webhook_endpoints: self.live_webhook_endpoints.clone(),
            live_webhook_secret: self.live_webhook_secret.clone(),
            ..SimConfig::default()
        };
        config.faults.error_rate = self.error_rate;
        config.faults.rate_limit_per_sec = self.rate_limit;
        config.faults.endpoint_rate_limit_per_sec = self.endpoint_rate_limit;
        config.faults.latency = Duration::from_millis(self.latency_ms);
        config
            .faults
            .validate()
            .map_err(|e| anyhow::anyhow!("stripe-sim faults: {e}"))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(endpoint_rps: u32, processes: u32) -> StripePaceArgs {
        StripePaceArgs {
            stripe_max_rps: None,
            stripe_endpoint_rps: endpoint_rps,
            stripe_processes: NonZeroU32::new(processes).unwrap(),
        }
    }

    #[test]
    fn each_process_takes_its_share_of_the_endpoint_pace() {
        assert_eq!(pace(25, 1).endpoint_rps(), NonZeroU32::new(25));
        assert_eq!(pace(25, 4).endpoint_rps(), NonZeroU32::new(6));
        assert_eq!(
            pace(25, 40).endpoint_rps(),
            NonZeroU32::new(1),
            "at least one request a second"
        );
        assert_eq!(pace(0, 4).endpoint_rps(), None, "0 turns it off");
        let mut config = kassa_stripe::ClientConfig::new("sk_test_x".into());
        pace(25, 2).apply(&mut config);
        assert_eq!(
            config.max_requests_per_second_per_endpoint,
            NonZeroU32::new(12)
        );
        assert_eq!(config.max_requests_per_second, None);
    }
}
