//! Flags and `KASSA_*` variables, validated once at start: a bad value fails with a message
//! naming the variable.

use anyhow::bail;
use clap::{Args, ValueEnum};
use kassa_broker::{BrokerConfig, Topology};
use kassa_stripe::webhook::WebhookVerifier;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Webhook secret used when none is configured and the API key is not a live one: a well-known
/// value (so not a secret), printed as the secret source so nobody mistakes it for production.
pub const DEVELOPMENT_WEBHOOK_SECRET: &str = "whsec_kassa_development_only";

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber (`RUST_LOG`, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

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

/// RabbitMQ settings shared by every process that talks to the broker.
#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "KASSA_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
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
}

impl BrokerArgs {
    /// The broker configuration these flags describe.
    pub fn config(&self) -> BrokerConfig {
        let mut config = BrokerConfig::new(self.amqp_url.clone());
        config.topology = Topology::new(self.amqp_prefix.clone());
        config.confirm_timeout = Duration::from_millis(self.publish_timeout_ms);
        config.publisher_channels = usize::try_from(self.publish_channels).unwrap_or(4);
        config.connection_name = format!("kassa-{}", std::process::id());
        config
    }
}

/// `kassa ingress`.
#[derive(Args, Clone, Debug)]
pub struct IngressArgs {
    /// Address the HTTP server binds.
    #[arg(long, env = "KASSA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Webhook signing secrets (`whsec_…`), comma-separated; two during a rotation.
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
    /// Stripe secret or restricted key; the ingress only reads its mode (live keys require real secrets).
    #[arg(long, env = "KASSA_STRIPE_API_KEY", hide_env_values = true)]
    pub stripe_api_key: Option<String>,
}

impl IngressArgs {
    /// Where the webhook secrets come from, for the first log line.
    pub fn secret_source(&self) -> &'static str {
        if self.webhook_secrets.iter().any(|s| !s.trim().is_empty()) {
            "KASSA_STRIPE_WEBHOOK_SECRETS"
        } else {
            "built-in development secret (test mode only; set KASSA_STRIPE_WEBHOOK_SECRETS)"
        }
    }

    /// The verifier for the configured secrets, refusing bad or missing ones.
    pub fn webhook_verifier(&self) -> anyhow::Result<WebhookVerifier> {
        let mut secrets = Vec::new();
        for (i, secret) in self.webhook_secrets.iter().map(|s| s.trim()).enumerate() {
            if secret.is_empty() {
                continue;
            }
            if !secret.starts_with("whsec_") || secret.len() < 10 {
                bail!("KASSA_STRIPE_WEBHOOK_SECRETS: entry {} is not a webhook signing secret (they start with whsec_)", i + 1);
            }
            secrets.push(SecretString::from(secret.to_owned()));
        }
        if secrets.is_empty() {
            let live = self
                .stripe_api_key
                .as_deref()
                .is_some_and(|k| k.starts_with("sk_live_") || k.starts_with("rk_live_"));
            if live {
                bail!("KASSA_STRIPE_WEBHOOK_SECRETS is required with a live KASSA_STRIPE_API_KEY");
            }
            secrets.push(SecretString::from(DEVELOPMENT_WEBHOOK_SECRET.to_owned()));
        }
        Ok(WebhookVerifier::new(secrets)
            .with_tolerance(Duration::from_secs(self.webhook_tolerance_secs)))
    }
}
