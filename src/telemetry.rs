//! The process's telemetry: tracing (one subscriber, text or JSON lines), [`METRICS`] — the one
//! list of every metric Kassa exports — with the Prometheus recorder that describes them, and
//! the health routes of a process that takes no webhooks (`kassa worker`).
//!
//! metrics-exporter-prometheus renders a metric only once it has been registered, so at install
//! every counter and histogram of [`METRICS`] is described and registered with its known label
//! values: `/metrics` lists them at zero from the start, and `rate()` and alerts see a series
//! before the first event. Gauges are left until their first real sample (a gauge at 0 would
//! claim an empty queue nobody has looked at). deploy/'s dashboard and alert rules may name
//! only metrics that `/metrics` shows (tests/it/deploy.rs checks it).

use axum::routing::get;
use axum::{Json, Router};
use clap::ValueEnum;
use kassa_broker::Broker;
use kassa_ingress::health::{readiness, ReadinessCheck};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use std::sync::Arc;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber (`RUST_LOG`, default `info`).
pub fn init_tracing(format: LogFormat) {
    // sqlx logs PostgreSQL's notices (e.g. "relation _sqlx_migrations already exists") at info.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // lapin logs a message the broker returned (unroutable) with its whole body: a Stripe event,
    // with the customer's name, e-mail and address. Kassa reports the failed publish itself
    // (without the body), so lapin's line is kept out whatever RUST_LOG says.
    let filter = match "lapin::returned_messages=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Buckets (seconds) of `kassa_message_age_seconds`: AMQP timestamps are whole seconds, and a
/// message back from the retry ladder can be hours old. Other `…_seconds` histograms get the
/// ingress's latency buckets.
const AGE_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0,
];

/// Buckets (events) of `kassa_settle_batch_size`: powers of two up to the largest batch, 128.
const BATCH_SIZE_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// What kind of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Set to a sampled value.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One exported metric: its name, kind, help text, label name and the label values known up
/// front (registered at zero).
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The label, if any.
    pub label: Option<&'static str>,
    /// Label values registered at start.
    pub values: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    label: Option<&'static str>,
    values: &'static [&'static str],
) -> MetricSpec {
    MetricSpec {
        name,
        kind,
        help,
        label,
        values,
    }
}

const QUEUES: &[&str] = &["events", "charges", "alert_emails"];

/// Every metric Kassa exports.
pub const METRICS: &[MetricSpec] = &[
    spec(
        "kassa_webhook_requests_total",
        Kind::Counter,
        "Webhook deliveries answered, by outcome (accepted or the error code).",
        Some("outcome"),
        &["accepted"],
    ),
    spec(
        "kassa_webhook_signature_failures_total",
        Kind::Counter,
        "Webhooks refused for their Stripe-Signature, by reason.",
        Some("reason"),
        &[
            "signature_missing",
            "signature_invalid",
            "timestamp_out_of_tolerance",
        ],
    ),
    spec(
        "kassa_publish_confirm_seconds",
        Kind::Histogram,
        "Time from publish to RabbitMQ's publisher confirm, by outcome.",
        Some("outcome"),
        &["confirmed", "timeout", "nacked", "unavailable"],
    ),
    spec(
        "kassa_broker_reconnects_total",
        Kind::Counter,
        "Connections to RabbitMQ re-established.",
        None,
        &[],
    ),
    spec(
        "kassa_messages_retried_total",
        Kind::Counter,
        "Messages sent up the retry ladder, by work queue.",
        Some("queue"),
        QUEUES,
    ),
    spec(
        "kassa_messages_dead_lettered_total",
        Kind::Counter,
        "Messages sent to kassa.dead.letters, by work queue.",
        Some("queue"),
        QUEUES,
    ),
    spec(
        "kassa_message_age_seconds",
        Kind::Histogram,
        "Seconds between a message's publish and its delivery to a worker, by work queue.",
        Some("queue"),
        QUEUES,
    ),
    spec(
        "kassa_queue_messages",
        Kind::Gauge,
        "Messages ready in a queue, sampled by each worker every 15 s.",
        Some("queue"),
        &[],
    ),
    spec(
        "kassa_queue_consumers",
        Kind::Gauge,
        "Consumers of a queue, sampled by each worker every 15 s.",
        Some("queue"),
        &[],
    ),
    spec(
        "kassa_dead_letter_messages",
        Kind::Gauge,
        "Messages in kassa.dead.letters, sampled by each worker every 15 s.",
        None,
        &[],
    ),
    spec(
        "kassa_events_total",
        Kind::Counter,
        "Stripe events handled by the worker, by outcome.",
        Some("outcome"),
        &[
            "processed",
            "duplicate",
            "ignored_type",
            "retried",
            "dead_lettered",
        ],
    ),
    spec(
        "kassa_events_without_stripe_call_total",
        Kind::Counter,
        "Stripe events processed without calling Stripe, by event type: echoes of Kassa's own \
         recorded writes, events with nothing to read, and attachments already recorded.",
        Some("type"),
        &[
            "customer.created",
            "customer.updated",
            "payment_method.attached",
            "payment_intent.succeeded",
            "setup_intent.succeeded",
            "setup_intent.setup_failed",
        ],
    ),
    spec(
        "kassa_settle_batch_size",
        Kind::Histogram,
        "Events settled together without a Stripe call, in one transaction (one observation \
         per batch).",
        None,
        &[],
    ),
    spec(
        "kassa_event_handling_seconds",
        Kind::Histogram,
        "Time to handle one event that was processed.",
        None,
        &[],
    ),
    spec(
        "kassa_charges_total",
        Kind::Counter,
        "Back-office charge executions, by outcome.",
        Some("outcome"),
        &[
            "succeeded",
            "processing",
            "requires_recheckout",
            "failed",
            "needs_review",
        ],
    ),
    spec(
        "kassa_charge_lookups_total",
        Kind::Counter,
        "Charge attempts looked up on Stripe before sending again, by what Stripe had.",
        Some("outcome"),
        &["found", "none", "failed"],
    ),
    spec(
        "kassa_stripe_card_errors_total",
        Kind::Counter,
        "Stripe answers with HTTP 402 (card errors), by Stripe's error code.",
        Some("code"),
        &["card_declined", "authentication_required"],
    ),
    spec(
        "kassa_events_backfilled_total",
        Kind::Counter,
        "Events found on Stripe's /v1/events that Kassa had not received, and published.",
        None,
        &[],
    ),
    spec(
        "kassa_events_polls_total",
        Kind::Counter,
        "Polls of Stripe's /v1/events for missed webhooks, by outcome.",
        Some("outcome"),
        &["ok", "failed"],
    ),
    spec(
        "kassa_payments_recorded_total",
        Kind::Counter,
        "Payments recorded, by what recorded them.",
        Some("recorded_by"),
        &[],
    ),
    spec(
        "kassa_page_requests_shed_total",
        Kind::Counter,
        "Merchant page requests and payment confirmations answered 503 because too many were in flight.",
        None,
        &[],
    ),
    spec(
        "kassa_public_requests_limited_total",
        Kind::Counter,
        "Requests to the public pages refused 429 by the per-client-address rate limit.",
        None,
        &[],
    ),
    spec(
        "kassa_widget_requests_limited_total",
        Kind::Counter,
        "Requests to the public payment-widget endpoints answered 429, per client IP or per widget.",
        None,
        &[],
    ),
    spec(
        "kassa_connector_requests_total",
        Kind::Counter,
        "Connector API requests, by method, route and status.",
        Some("route"),
        &[],
    ),
    spec(
        "kassa_http_requests_shed_total",
        Kind::Counter,
        "HTTP requests answered 503 overloaded: the listener had KASSA_HTTP_MAX_IN_FLIGHT requests in flight.",
        None,
        &[],
    ),
    spec(
        "kassa_http_timeouts_total",
        Kind::Counter,
        "HTTP requests cut by a time limit, by stage: headers (KASSA_HTTP_HEADER_TIMEOUT), body (KASSA_HTTP_BODY_TIMEOUT, webhooks), request (KASSA_HTTP_REQUEST_TIMEOUT).",
        Some("stage"),
        &["headers", "body", "request"],
    ),
    spec(
        "kassa_outbox_published_total",
        Kind::Counter,
        "Outbox rows (charge jobs, alerts) published to RabbitMQ.",
        None,
        &[],
    ),
    spec(
        "kassa_outbox_publish_failures_total",
        Kind::Counter,
        "Outbox messages RabbitMQ refused (retried later, after the messages behind them), by reason.",
        Some("reason"),
        &["amqp_error", "unroutable", "nacked", "timeout"],
    ),
    spec(
        "kassa_outbox_failing_messages",
        Kind::Gauge,
        "Unpublished outbox messages that failed 5 times or more (`kassa outbox list`).",
        None,
        &[],
    ),
    spec(
        "kassa_emails_sent_total",
        Kind::Counter,
        "E-mails sent through KASSA_SMTP_URL.",
        None,
        &[],
    ),
];

/// The process's Prometheus handle; the first call installs the recorder and registers
/// [`METRICS`].
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("kassa_message_age_seconds".into()),
                    &AGE_BUCKETS,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("kassa_settle_batch_size".into()),
                        &BATCH_SIZE_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = kassa_ingress::prometheus::install(builder);
            register_all();
            handle
        })
        .clone()
}

/// Describes every metric and registers the counters and histograms at zero.
fn register_all() {
    for metric in METRICS {
        let name = metric.name;
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(name, metric.help),
        }
        match (metric.kind, metric.label) {
            (Kind::Gauge, _) => {}
            (Kind::Counter, None) => drop(metrics::counter!(name)),
            (Kind::Histogram, None) => drop(metrics::histogram!(name)),
            (kind, Some(label)) => {
                for value in metric.values {
                    if kind == Kind::Counter {
                        drop(metrics::counter!(name, label => *value));
                    } else {
                        drop(metrics::histogram!(name, label => *value));
                    }
                }
            }
        }
    }
}

/// `/readyz` reports PostgreSQL as `"database"`: a connection can be had and answers.
pub struct DatabaseReadiness(pub kassa_store::Store);

impl kassa_ingress::health::ReadinessCheck for DatabaseReadiness {
    fn name(&self) -> &'static str {
        "database"
    }

    fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move { self.0.ping().await.is_ok() })
    }
}

/// `/healthz` (the process answers) and `/readyz` (the broker is connected and the topology
/// declared, and PostgreSQL answers when the process has it), for a process that takes no
/// webhooks: the ingress's router is not mounted there, so `POST /webhooks/stripe` is a 404.
/// `/metrics` is on the metrics listener.
pub fn health_router(broker: Broker, store: Option<kassa_store::Store>) -> Router {
    let checks: Vec<Arc<dyn ReadinessCheck>> = store
        .map(|store| Arc::new(DatabaseReadiness(store)) as Arc<dyn ReadinessCheck>)
        .into_iter()
        .collect();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let (broker, checks) = (broker.clone(), checks.clone());
                async move { readiness(broker.is_ready(), &checks).await }
            }),
        )
}
