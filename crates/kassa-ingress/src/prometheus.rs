//! The process's Prometheus recorder, which `/metrics` renders: installed once and shared by
//! every router of the process. Which metrics exist, and their help texts, is the binary's
//! business (its `telemetry.rs`); this only makes sure there is a recorder, with latency buckets
//! for every `…_seconds` histogram, before the first webhook is counted.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets (seconds) for publish confirms and request handling: 0.5 ms … 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder `builder` describes (with [`LATENCY_BUCKETS`] added for `…_seconds`
/// histograms that have no buckets of their own) and returns its handle; only the first call
/// installs, later ones return the first handle.
pub fn install(builder: PrometheusBuilder) -> PrometheusHandle {
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
