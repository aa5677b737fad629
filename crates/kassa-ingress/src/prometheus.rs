//! The process's Prometheus recorder, which `/metrics` renders: installed once and shared by
//! every router of the process. Which metrics exist, and their help texts, is the binary's
//! business (its `telemetry.rs`); this only makes sure there is a recorder, with latency buckets
//! for every `…_seconds` histogram, before the first webhook is counted.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets (seconds) for publish confirms and request handling: 0.5 ms … 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples recorded since the last scrape are folded into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the recorder `builder` describes (with [`LATENCY_BUCKETS`] added for `…_seconds`
/// histograms that have no buckets of their own) and returns its handle; only the first call
/// installs, later ones return the first handle. Its upkeep runs every [`UPKEEP_INTERVAL`].
pub fn install(builder: PrometheusBuilder) -> PrometheusHandle {
    install_with_upkeep(builder, UPKEEP_INTERVAL)
}

/// [`install`] with upkeep every `every`.
///
/// The recorder keeps each histogram sample until it is folded into the histogram's buckets,
/// which a scrape of `/metrics` does, and so does the upkeep. Without it a process nobody
/// scrapes would hold every sample it ever recorded: memory growing with each webhook
/// published and each event handled.
pub fn install_with_upkeep(builder: PrometheusBuilder, every: Duration) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // A bucket list of its own (a full name) wins over the suffix, whatever the order.
            let recorder = match builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            {
                Ok(builder) => builder.build_recorder(),
                // Only an empty bucket list fails, and LATENCY_BUCKETS is not empty.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (e.g. by an embedding app);
            // /metrics then shows nothing, which is visible and harmless.
            let _ = metrics::set_global_recorder(recorder);
            spawn_upkeep(handle.clone(), every);
            handle
        })
        .clone()
}

/// The process's recorder handle, installing a plain one if none was installed yet.
pub fn handle() -> PrometheusHandle {
    match HANDLE.get() {
        Some(handle) => handle.clone(),
        None => install(PrometheusBuilder::new()),
    }
}

/// Runs the recorder's upkeep every `every` for the rest of the process, on a thread of its own:
/// the recorder may be installed before any async runtime runs, and the upkeep is a few
/// microseconds of work every few seconds.
fn spawn_upkeep(handle: PrometheusHandle, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("kassa-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(
            %error,
            "no thread for the metrics upkeep: histogram samples are folded into their buckets only when /metrics is scraped"
        );
    }
}
