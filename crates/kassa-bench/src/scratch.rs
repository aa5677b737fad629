//! What a benchmark creates for itself and removes afterwards — a PostgreSQL database, a prefix
//! for every RabbitMQ name, free ports — and the RabbitMQ flags every benchmark takes.

use anyhow::Context;
use clap::Args;
use kassa_broker::{BrokerConfig, Topology};
use std::time::Duration;

/// `KASSA_AMQP_URL`'s default: the local broker's guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The RabbitMQ a benchmark runs against, and how Kassa publishes to it (as `kassa ingress` takes them).
#[derive(Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "KASSA_AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// How long a publish waits for RabbitMQ's confirm before the webhook is answered 503.
    #[arg(long, env = "KASSA_PUBLISH_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub publish_timeout_ms: u64,
    /// Confirm-mode channels that publishes are spread over.
    #[arg(long, env = "KASSA_PUBLISH_CHANNELS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub publish_channels: u64,
}

impl BrokerArgs {
    /// The broker configuration these flags describe, under `topology`'s names.
    pub fn config(&self, topology: Topology) -> BrokerConfig {
        let mut config = BrokerConfig::new(self.amqp_url.clone());
        config.topology = topology;
        config.confirm_timeout = Duration::from_millis(self.publish_timeout_ms);
        config.publisher_channels = self.publish_channels();
        config.connection_name = format!("kassa-bench-{}", std::process::id());
        config
    }

    /// `--publish-channels` as a count.
    pub fn publish_channels(&self) -> usize {
        usize::try_from(self.publish_channels).unwrap_or(4)
    }
}

/// A random six-hex-digit run id.
pub fn run_id() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Exchange and queue names of their own for one run: `{kind}{run id}.kassa.…`.
pub fn topology(kind: &str) -> Topology {
    Topology::new(format!("{kind}{}.", run_id()))
}

/// A database of one run's own on the server of `server_url`, named `kassa_{kind}_{run id}`.
/// Kassa creates and migrates it on first connection; [`ScratchDatabase::drop`] removes it.
pub struct ScratchDatabase {
    url: String,
}

impl ScratchDatabase {
    /// Names the database (it is created when first connected to).
    pub fn on(server_url: &str, kind: &str, run_id: &str) -> anyhow::Result<Self> {
        let mut url = url::Url::parse(server_url).context("KASSA_DATABASE_URL")?;
        url.set_path(&format!("/kassa_{kind}_{run_id}"));
        Ok(Self {
            url: url.to_string(),
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, closing the connections still open to it.
    pub async fn drop(self) {
        let Ok(mut maintenance) = url::Url::parse(&self.url) else {
            return;
        };
        let name = maintenance.path().trim_start_matches('/').to_owned();
        maintenance.set_path("/postgres");
        if let Ok(pool) = sqlx::PgPool::connect(maintenance.as_str()).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?.port())
}
