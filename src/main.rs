//! `kassa`: the one binary. This file is the command line, nothing else: each subcommand reads
//! its configuration (config.rs) and starts the matching parts (kassa::stack).

mod charges_cli;
mod config;
mod connector_cli;
mod demo;
mod dlq;
mod outbox_cli;
mod reconcile;
mod status;
mod sync_cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{IngressArgs, LogFormat, ServeArgs, StoreArgs, WorkerCommandArgs};
use kassa::stack::{Stack, StackConfig, StripeTarget};
use std::time::Duration;
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
    /// Ingress and worker in one process; with no KASSA_STRIPE_API_KEY, on the embedded Stripe simulator.
    Serve(ServeArgs),
    /// Run the whole flow once on the embedded simulator and print what happened, hop by hop.
    Demo(ServeArgs),
    /// Receive Stripe webhooks: verify, publish to RabbitMQ with confirms, answer 200.
    Ingress(IngressArgs),
    /// Consume events: re-fetch from Stripe, save cards, record customers, exactly once.
    Worker(WorkerCommandArgs),
    /// Create the database if missing and apply the migrations, then exit.
    Migrate(StoreArgs),
    /// This installation's id, and whether PostgreSQL, RabbitMQ and Stripe answer.
    Status(status::StatusArgs),
    /// Inspect and replay the dead-letter queue.
    Dlq(dlq::DlqArgs),
    /// Messages waiting in the outbox (charge jobs, alerts): list, retry or drop a failing one.
    Outbox(outbox_cli::OutboxArgs),
    /// Charge a customer's saved card: record the charge and queue it for the worker.
    Charge(charges_cli::ChargeArgs),
    /// List, show and import (CSV) back-office charges.
    Charges(charges_cli::ChargesArgs),
    /// Connector actions: create a customer, find customers by e-mail.
    Customers(connector_cli::CustomersArgs),
    /// Connector actions: create a product.
    Products(connector_cli::ProductsArgs),
    /// Charge a token or a customer with the LEGACY Charges API (new integrations: PaymentIntents).
    LegacyCharge(connector_cli::LegacyChargeArgs),
    /// Record what exists at Stripe: `sync customers` backfills every customer and saved card.
    Sync(sync_cli::SyncArgs),
    /// One pass over Stripe's /v1/events: publish what webhooks missed and report it.
    Reconcile(reconcile::ReconcileArgs),
    /// Run the Stripe simulator that tests and the demo use instead of api.stripe.com.
    StripeSim(config::StripeSimArgs),
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
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Ingress(args) => ingress(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Dlq(args) => dlq::run(args).await,
            Command::Outbox(args) => outbox_cli::run(args).await,
            Command::Charge(args) => charges_cli::charge(args).await,
            Command::Charges(args) => charges_cli::charges(args).await,
            Command::Customers(args) => connector_cli::customers(args).await,
            Command::Products(args) => connector_cli::products(args).await,
            Command::LegacyCharge(args) => connector_cli::legacy_charge(args).await,
            Command::Sync(args) => sync_cli::run(args).await,
            Command::Reconcile(args) => reconcile::run(args).await,
            Command::StripeSim(args) => stripe_sim(args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.stack_config()?;
    match &config.stripe {
        Some(StripeTarget::Embedded(_)) => info!(
            "kassa serve: no KASSA_STRIPE_API_KEY, so running in TEST MODE on the embedded Stripe simulator, which delivers webhooks to this process"
        ),
        _ => info!(api_base = %args.stripe_api_base, "kassa serve: using Stripe at KASSA_STRIPE_API_BASE"),
    }
    let mut stack = Stack::start(config).await?;
    if let Some(sim) = &stack.sim {
        info!(stripe_api_base = %sim.base_url(), "embedded Stripe simulator listening (hosted checkout pages under /c/pay/)");
    }
    if let Some(address) = stack.address {
        info!(shop = %format!("http://{address}/"), "the merchant page: Buy, pay on Checkout, land on /success");
    }
    run_until_signal(&mut stack).await;
    stack.stop().await;
    info!("kassa serve stopped");
    Ok(())
}

async fn ingress(args: IngressArgs) -> anyhow::Result<()> {
    let config = args.stack_config()?;
    let apis = config.admin_token.is_some();
    let mut stack = Stack::start(config.clone()).await?;
    let address = stack.address.context("the ingress has an address")?;
    info!(
        listen = %address,
        webhook_url = %format!("http://{address}/webhooks/stripe"),
        secret_source = %args.webhook.secret_source(),
        secrets = config.webhook_secrets.len(),
        amqp_url = %kassa_broker::connection::redact_url(&args.webhook.broker.amqp_url),
        apis,
        "kassa ingress listening"
    );
    run_until_signal(&mut stack).await;
    stack.stop().await;
    info!("kassa ingress stopped");
    Ok(())
}

async fn worker(args: WorkerCommandArgs) -> anyhow::Result<()> {
    let db_max_connections = args
        .worker
        .pool_use()
        .pool_size("kassa worker", args.store.database_max_connections)?;
    let stripe = args.stripe.target()?.context(
        "KASSA_STRIPE_API_KEY is required for `kassa worker` (`kassa serve` without a key runs on the embedded simulator)",
    )?;
    let config = StackConfig {
        listen: Some(args.listen),
        webhooks: false,
        broker: args.broker.config(),
        database_url: Some(args.store.database_url.clone()),
        db_max_connections,
        stripe: Some(stripe),
        stripe_max_rps: args.stripe.stripe_max_rps,
        webhook_secrets: Vec::new(),
        webhook_tolerance: Duration::from_secs(300),
        worker: Some(args.worker.config()?),
        admin_token: None,
        public_url: String::new(),
        publishable_key: None,
    };
    let mut stack = Stack::start(config).await?;
    info!(
        health = %format!("http://{}/healthz", stack.address.map_or_else(|| args.listen.to_string(), |a| a.to_string())),
        concurrency = args.worker.worker_concurrency,
        prefetch = args.worker.worker_prefetch,
        database_connections = db_max_connections,
        stripe_api_base = %args.stripe.stripe_api_base,
        "kassa worker started"
    );
    run_until_signal(&mut stack).await;
    stack.stop().await;
    info!("kassa worker stopped");
    Ok(())
}

async fn migrate(args: StoreArgs) -> anyhow::Result<()> {
    let store = kassa_store::Store::connect(&args.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "migrating KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&args.database_url)
            )
        })?;
    store.close().await;
    info!("database ready and migrated");
    Ok(())
}

async fn stripe_sim(args: config::StripeSimArgs) -> anyhow::Result<()> {
    let sim_config = args.sim_config()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(config::cancel_on_signal(shutdown.clone()));
    info!(listen = %sim_config.listen, webhook_endpoints = ?sim_config.webhook_endpoints, "kassa stripe-sim starting (test mode only; any sk_test_ key)");
    kassa_stripe_sim::serve(sim_config, shutdown.cancelled_owned())
        .await
        .context("running the Stripe simulator")
}

/// Waits for SIGINT/SIGTERM (or a part failing on its own).
async fn run_until_signal(stack: &mut Stack) {
    let signal = CancellationToken::new();
    tokio::spawn(config::cancel_on_signal(signal.clone()));
    tokio::select! {
        _ = signal.cancelled() => {}
        _ = stack.failed() => tracing::error!("a part of Kassa stopped unexpectedly; shutting down"),
    }
}
