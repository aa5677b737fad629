//! `kassa bench …`: benchmarks that measure Kassa against a baseline in the same run, print a
//! table with the ratio, and write the figures as JSON (for docs/PERFORMANCE.md).

mod import;
mod ingress;
mod soak;
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
    /// `kassa charges import` of a generated CSV file (child process: rows/s, peak RSS) vs a
    /// plain in-process insert loop.
    Import(import::ImportBenchArgs),
    /// Crash soak: two ingress and two worker processes under SIGKILLs, a RabbitMQ restart,
    /// duplicated and shuffled webhooks and Stripe 500s/429s; checks nothing is lost or doubled.
    Soak(soak::SoakArgs),
}

/// Runs the chosen benchmark.
pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Ingress(args) => ingress::run(args).await,
        BenchCommand::Worker(args) => worker::run(args).await,
        BenchCommand::Import(args) => import::run(args).await,
        BenchCommand::Soak(args) => soak::run(args).await,
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

/// CPU time (user + system) a process has used, in seconds, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = 100.0; // USER_HZ on Linux
    Some((utime + stime) / ticks)
}

/// The local RabbitMQ node's process (beam.smp), if it runs on this machine.
pub fn rabbitmq_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "beam.smp").then_some(pid)
        })
}

/// CPU seconds used so far by every process named `comm` (e.g. all PostgreSQL backends alive now).
pub fn cpu_seconds_of_all(comm: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (name.trim() == comm).then(|| cpu_seconds(pid)).flatten()
        })
        .sum()
}
