//! The figures a benchmark reports: throughput and latency quantiles of a phase, and the JSON file.

use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Throughput and latency distribution of one measured phase.
#[derive(Serialize, Clone, Copy)]
pub struct Phase {
    pub messages: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Phase {
    /// The phase's figures from its latencies and wall time.
    pub fn new(latencies: Vec<Duration>, elapsed: Duration) -> Self {
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_unstable_by(f64::total_cmp);
        Self {
            messages: ms.len(),
            seconds: elapsed.as_secs_f64(),
            per_second: ms.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: quantile(&ms, 0.50),
            p99_ms: quantile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// The `q` quantile (nearest rank) of sorted values; 0 when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// Writes the JSON report, with the machine's cores and load average (1, 5, 15 min, from
/// /proc/loadavg) at the end of the run under `machine`, and says where.
pub fn write_report(path: &Path, report: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let mut report = report.clone();
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores, load average (1/5/15 min) {load:?}");
    if let Some(fields) = report.as_object_mut() {
        fields.insert(
            "machine".into(),
            serde_json::json!({"cores": cores, "load_average_1_5_15_min": load}),
        );
    }
    std::fs::write(path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}
