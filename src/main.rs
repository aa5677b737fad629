//! `kassa`: the one binary. This file is the command line and the wiring of the crates,
//! nothing else; `bench` holds the benchmarks.

mod bench;
mod config;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{IngressArgs, LogFormat};
use kassa_broker::Broker;
use kassa_ingress::IngressState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "kassa",
    version,
    about = "Stripe webhooks to fulfilment: saved cards, off-session charges, re-pay links"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "KASSA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive Stripe webhooks: verify, publish to RabbitMQ with confirms, answer 200.
    Ingress(IngressArgs),
    /// Measure Kassa against a baseline in the same run; prints a table and writes JSON.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    config::init_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Ingress(args) => run_ingress(args).await,
            Command::Bench { which } => bench::run(which).await,
        }
    })
}

async fn run_ingress(args: IngressArgs) -> anyhow::Result<()> {
    let verifier = args.webhook_verifier()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding KASSA_LISTEN={}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    info!(
        listen = %address,
        webhook_url = %format!("http://{address}/webhooks/stripe"),
        secret_source = %args.secret_source(),
        secrets = verifier.secret_count(),
        amqp_url = %kassa_broker::connection::redact_url(&args.broker.amqp_url),
        "kassa ingress listening"
    );

    let shutdown = CancellationToken::new();
    let broker_shutdown = CancellationToken::new();
    let broker = Broker::start(args.broker.config(), broker_shutdown.clone());
    let router = kassa_ingress::router(IngressState::new(verifier, broker));
    tokio::spawn(config::cancel_on_signal(shutdown.clone()));
    kassa_ingress::serve(listener, router, shutdown.cancelled_owned())
        .await
        .context("serving HTTP")?;
    // In-flight webhooks have had their confirms; only now let the connection go.
    broker_shutdown.cancel();
    info!("kassa ingress stopped");
    Ok(())
}
