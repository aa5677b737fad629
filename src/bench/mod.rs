//! `kassa bench …`: benchmarks that measure Kassa against a baseline in the same run, print a
//! table with the ratio, and write the figures as JSON (for docs/PERFORMANCE.md).

mod ingress;
mod worker;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Which benchmark to run.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Raw lapin publish-with-confirms vs signed webhooks through a `kassa ingress` process.
    Ingress(ingress::IngressBenchArgs),
    /// Completed sessions through ingress → RabbitMQ → worker → Stripe → PostgreSQL, paced
    /// against a rate-limited simulator and unlimited, vs the bare Stripe calls.
    Worker(worker::WorkerBenchArgs),
}

/// Runs the chosen benchmark.
pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Ingress(args) => ingress::run(args).await,
        BenchCommand::Worker(args) => worker::run(args).await,
    }
}

/// Throughput and latency distribution of one measured phase.
#[derive(Serialize, Clone, Copy)]
pub struct Phase {
    messages: usize,
    seconds: f64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Phase {
    /// The phase's figures from its latencies and wall time.
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            let i =
                ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            messages: latencies.len(),
            seconds: elapsed.as_secs_f64(),
            per_second: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// Writes the JSON report and says where.
pub fn write_report(path: &Path, report: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}
