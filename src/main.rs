//! `kassa`: the one binary. This file is the command line, nothing else: each subcommand is a
//! module of `cli/` that reads its configuration (`config/`) and calls the crates that do the
//! work (the processes through `kassa::stack`).

mod cli;
mod config;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::{
    charges, connector, customers, demo, dlq, outbox, reconcile, serve, settings, status, widgets,
};
use config::{IngressArgs, ServeArgs, StoreArgs, WorkerCommandArgs};
use kassa::telemetry::{self, LogFormat};

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
    Outbox(outbox::OutboxArgs),
    /// Charge a customer's saved card: record the charge and queue it for the worker.
    Charge(charges::ChargeArgs),
    /// List, show and import (CSV) back-office charges.
    Charges(charges::ChargesArgs),
    /// Customers of the Stripe account: create, find by e-mail, sync every one (and its cards) into Kassa.
    Customers(customers::CustomersArgs),
    /// Payment widgets to embed in any page (widget.js) or link to (/pay/{widget}): create, list, show.
    Widgets(widgets::WidgetsArgs),
    /// Connector actions: create a product.
    Products(connector::ProductsArgs),
    /// Charge a token or a customer with the LEGACY Charges API (new integrations: PaymentIntents).
    LegacyCharge(connector::LegacyChargeArgs),
    /// The former name of `kassa customers sync`.
    #[command(hide = true)]
    Sync(customers::SyncArgs),
    /// One pass over Stripe's /v1/events: publish what webhooks missed and report it.
    Reconcile(reconcile::ReconcileArgs),
    /// Settings kept sealed in PostgreSQL: set (value from stdin), list (masked), rotate-master-key.
    Settings(settings::SettingsArgs),
    /// Run the Stripe simulator that tests and the demo use instead of api.stripe.com.
    StripeSim(config::StripeSimArgs),
}

/// mimalloc rather than the system allocator: the process makes many small, short-lived
/// allocations (JSON, HTTP and AMQP frames), which glibc's malloc serves at a fifth of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Ingress(args) => serve::ingress(args).await,
            Command::Worker(args) => serve::worker(args).await,
            Command::Migrate(args) => serve::migrate(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Dlq(args) => dlq::run(args).await,
            Command::Outbox(args) => outbox::run(args).await,
            Command::Charge(args) => charges::charge(args).await,
            Command::Charges(args) => charges::charges(args).await,
            Command::Customers(args) => customers::run(args).await,
            Command::Widgets(args) => widgets::run(args).await,
            Command::Products(args) => connector::products(args).await,
            Command::LegacyCharge(args) => connector::legacy_charge(args).await,
            Command::Sync(args) => customers::run_sync_alias(args).await,
            Command::Reconcile(args) => reconcile::run(args).await,
            Command::Settings(args) => settings::run(args).await,
            Command::StripeSim(args) => serve::stripe_sim(args).await,
        }
    })
}
