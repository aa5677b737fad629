//! `kassa-bench`: Kassa's benchmarks and its crash soak, a binary of their own beside the product.
//! Each measures Kassa against a baseline taken in the same run, prints a table with the ratio and
//! writes its figures as JSON (under `target/bench/` by default; docs/PERFORMANCE.md and
//! docs/RELIABILITY.md quote them). Nothing of Kassa depends on this crate.
//!
//! Modules: [`ingress`] (signed webhooks through `kassa ingress` vs raw lapin publishes and vs
//! [`bridge`], a minimal HTTP → AMQP process),
//! [`worker`] (sessions and charges through the whole pipeline vs bare Stripe calls), [`import`]
//! (`kassa charges import` vs plain inserts), [`inbox`] (the inbox's cost per event as
//! `stripe_events` grows), [`soak`] (two ingress and two worker processes under
//! SIGKILLs and a broker restart: load, chaos, checks), and what they share: [`kassa_binary`] (the
//! `kassa` executable they start), [`scratch`] (throwaway databases, queue prefixes, ports, the
//! RabbitMQ flags), [`procfs`] (CPU and memory of processes) and [`report`] (latency figures, JSON).
//!
//! It never touches a database or a queue it did not create, except that `soak` restarts the
//! RabbitMQ node behind `KASSA_AMQP_URL` once (and starts it again however the run ends), or with
//! `--cluster` SIGKILLs nodes of `scripts/rabbitmq-cluster`, and with `--postgres-crash` crashes the
//! PostgreSQL of `scripts/postgres-scratch` (never the machine's own).

mod bridge;
mod import;
mod inbox;
mod ingress;
mod kassa_binary;
mod procfs;
mod report;
mod scratch;
mod soak;
mod worker;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "kassa-bench",
    version,
    about = "Measure Kassa against a baseline in the same run; prints a table and writes JSON"
)]
struct Cli {
    /// The `kassa` executable to run as child processes. Default: the one beside kassa-bench,
    /// first brought up to date by cargo when kassa-bench runs under cargo.
    #[arg(long, env = "KASSA_BIN", global = true)]
    kassa_bin: Option<PathBuf>,
    #[command(subcommand)]
    which: Benchmark,
}

/// Which benchmark to run.
#[derive(Subcommand)]
enum Benchmark {
    /// Raw lapin publish-with-confirms vs signed webhooks through a `kassa ingress` process.
    Ingress(ingress::IngressBenchArgs),
    /// Completed sessions through ingress → RabbitMQ → worker → Stripe → PostgreSQL, paced
    /// against a rate-limited simulator and unlimited, vs the bare Stripe calls.
    Worker(worker::WorkerBenchArgs),
    /// `kassa charges import` of a generated CSV file (child process: rows/s, peak RSS) vs a
    /// plain in-process insert loop.
    Import(import::ImportBenchArgs),
    /// The inbox's time per event with 0, 1 M and 5 M processed rows already in `stripe_events`
    /// (a scratch database filled by PostgreSQL), against the empty table.
    Inbox(inbox::InboxBenchArgs),
    /// Crash soak: two ingress and two worker processes under SIGKILLs, a RabbitMQ restart,
    /// duplicated and shuffled webhooks and Stripe 500s/429s; checks nothing is lost or doubled.
    Soak(soak::SoakArgs),
    /// The minimal HTTP → AMQP bridge `ingress` measures Kassa against (started by `ingress`).
    #[command(hide = true)]
    Bridge(bridge::BridgeArgs),
}

/// mimalloc, as the `kassa` binary, for Kassa and the baselines alike: the process makes many small, short-lived
/// allocations (JSON, HTTP and AMQP frames), which glibc's malloc serves at a fifth of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // sqlx logs PostgreSQL's notices (e.g. "relation _sqlx_migrations already exists") at info.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let kassa = || kassa_binary::locate(cli.kassa_bin.as_deref());
    runtime.block_on(async {
        match cli.which {
            Benchmark::Ingress(args) => ingress::run(args, &kassa()?).await,
            Benchmark::Worker(args) => worker::run(args).await,
            Benchmark::Import(args) => import::run(args, &kassa()?).await,
            Benchmark::Inbox(args) => inbox::run(args).await,
            Benchmark::Soak(args) => soak::run(args, &kassa()?).await,
            Benchmark::Bridge(args) => bridge::run(args).await,
        }
    })
}
