//! How a simulator instance is set up: where it listens, where its webhooks go, and which faults it injects.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The webhook signing secret used when none is configured.
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_test_kassa_sim";

/// The API version stamped on events and the `Stripe-Version` response header.
pub const DEFAULT_API_VERSION: &str = "2025-12-15.clover";

/// The live endpoints' webhook signing secret used when none is configured.
pub const DEFAULT_LIVE_WEBHOOK_SECRET: &str = "whsec_live_kassa_sim";

/// Stripe: "Sandbox: 25 requests per second" (docs: rate limits) — the rate a test-mode limiter allows.
pub const TEST_MODE_RATE_LIMIT: u32 = 25;

/// Stripe: "Live mode: 100 requests per second" (docs: rate limits, global API rate limit).
pub const LIVE_MODE_RATE_LIMIT: u32 = 100;

/// Stripe: "Individual API endpoints (unless otherwise specified): 25 requests per second", where
/// "Stripe treats each named API operation as a separate endpoint" (docs: rate limits).
pub const ENDPOINT_RATE_LIMIT: u32 = 25;

/// Everything a [`crate::Simulator`] needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free port (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// URLs that receive every test-mode event as a signed webhook.
    pub webhook_endpoints: Vec<String>,
    /// Secret (`whsec_…`) that signs test-mode webhooks, shared by the test endpoints.
    pub webhook_secret: String,
    /// URLs that receive every live-mode event (Stripe: an endpoint belongs to one mode).
    pub live_webhook_endpoints: Vec<String>,
    /// Secret that signs live-mode webhooks: a live endpoint's own secret, never the test one.
    pub live_webhook_secret: String,
    /// The `enabled_events` of the endpoints above (default `["*"]`, every event). Stripe (API
    /// reference, webhook endpoints): "The list of events to enable for this endpoint. You may
    /// specify `['*']` to enable all events"; an endpoint is sent only events of those types.
    pub webhook_enabled_events: Vec<String>,
    /// First retry delay of a failed delivery; attempt n waits `base × 2^(n-1)` (compressed time for tests).
    pub webhook_retry_base: Duration,
    /// Attempts per event and endpoint before giving up (default 4: Stripe's sandbox retries three times).
    pub webhook_max_attempts: u32,
    /// Time-out of one delivery attempt; a time-out counts as a failure.
    pub webhook_timeout: Duration,
    /// First attempts in flight at once per endpoint (1 delivers in creation order).
    pub webhook_concurrency: usize,
    /// Faults injected from the start (default: none).
    pub faults: Faults,
    /// Base URL that Checkout Session `url`s point at (default: the bound address).
    pub public_url: Option<String>,
    /// API version on events and responses.
    pub api_version: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook_endpoints: Vec::new(),
            webhook_secret: DEFAULT_WEBHOOK_SECRET.to_owned(),
            live_webhook_endpoints: Vec::new(),
            live_webhook_secret: DEFAULT_LIVE_WEBHOOK_SECRET.to_owned(),
            webhook_enabled_events: vec!["*".to_owned()],
            webhook_retry_base: Duration::from_millis(100),
            // Stripe: "In a sandbox, Stripe retries three times over a few hours" (docs: webhooks).
            webhook_max_attempts: 4,
            webhook_timeout: Duration::from_secs(10),
            webhook_concurrency: 8,
            faults: Faults::default(),
            public_url: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
        }
    }
}

/// Faults injected into `/v1` requests and webhook deliveries. `Faults::default()` injects none.
///
/// As JSON (`POST /_sim/faults`), durations are milliseconds: `{"error_rate":0.2,"latency_ms":50}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0.0–1.0) of `/v1` requests answered with `error_status` before they execute.
    pub error_rate: f64,
    /// Status of injected errors: 500, 502, 503 or 504 (Stripe's side), or 400 (a request Stripe
    /// refuses, e.g. to test that Kassa does not retry it).
    pub error_status: u16,
    /// Inject errors only into requests whose path contains this (e.g. `/attach`); `None`: all.
    pub path_contains: Option<String>,
    /// Inject the error *after* the request executed (its effect happened) instead of before.
    /// Stripe saves such a result under the Idempotency-Key and replays it, 500s included
    /// ("Subsequent requests with the same key return the same result, including 500 errors",
    /// docs: idempotent requests), so a retry with the same key cannot succeed.
    pub after_execution: bool,
    /// At most this many injected errors since the faults were set; `None` is unlimited.
    pub max_faults: Option<u64>,
    /// Added to every executed `/v1` request, while its idempotency key is held.
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Added after a `/v1` request executed and its result was saved, before the answer leaves:
    /// the effect has happened but the client does not know yet (a client dying now must find
    /// the result by replaying its Idempotency-Key). Only POSTs matching `path_contains`.
    #[serde(rename = "latency_after_ms", with = "millis")]
    pub latency_after: Duration,
    /// Token-bucket limit on `/v1` requests per second and mode, the account-wide limit (burst = one
    /// second's worth); see [`TEST_MODE_RATE_LIMIT`], [`LIVE_MODE_RATE_LIMIT`]. Above it: 429
    /// `rate_limit` with `Stripe-Rate-Limited-Reason: global-rate`.
    pub rate_limit_per_sec: Option<u32>,
    /// Token-bucket limit per endpoint and mode — one named operation such as
    /// `POST /v1/payment_intents` or `GET /v1/customers/{id}` whatever the id — besides the
    /// account-wide one; see [`ENDPOINT_RATE_LIMIT`]. Above it: 429 `rate_limit` with
    /// `Stripe-Rate-Limited-Reason: endpoint-rate`, counted per endpoint in `/_sim/faults`.
    pub endpoint_rate_limit_per_sec: Option<u32>,
    /// Per-endpoint limits that differ from `endpoint_rate_limit_per_sec`, by operation name
    /// (Stripe documents some, e.g. Search: `{"GET /v1/customers/search": 20}`); they apply even
    /// when `endpoint_rate_limit_per_sec` is unset.
    pub endpoint_rate_limits: std::collections::BTreeMap<String, u32>,
    /// Deliver every webhook twice.
    pub duplicate_webhooks: bool,
    /// Deliver webhooks in a shuffled order (events produced close together are reordered).
    pub shuffle_webhooks: bool,
    /// Fraction (0.0–1.0) of events never delivered (they stay listed in `/v1/events`).
    pub drop_webhook_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 500,
            path_contains: None,
            after_execution: false,
            max_faults: None,
            latency: Duration::ZERO,
            latency_after: Duration::ZERO,
            rate_limit_per_sec: None,
            endpoint_rate_limit_per_sec: None,
            endpoint_rate_limits: std::collections::BTreeMap::new(),
            duplicate_webhooks: false,
            shuffle_webhooks: false,
            drop_webhook_rate: 0.0,
        }
    }
}

impl Faults {
    /// Checks the values a caller can get wrong (rates outside 0..=1, a status that is not a 5xx).
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error_rate must be within 0..=1, got {}",
                self.error_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.drop_webhook_rate) {
            return Err(format!(
                "drop_webhook_rate must be within 0..=1, got {}",
                self.drop_webhook_rate
            ));
        }
        if ![400, 500, 502, 503, 504].contains(&self.error_status) {
            return Err(format!(
                "error_status must be 400, 500, 502, 503 or 504, got {}",
                self.error_status
            ));
        }
        if self.rate_limit_per_sec == Some(0) {
            return Err("rate_limit_per_sec must be at least 1 (or null for no limit)".to_owned());
        }
        if self.endpoint_rate_limit_per_sec == Some(0) {
            return Err(
                "endpoint_rate_limit_per_sec must be at least 1 (or null for no limit)".to_owned(),
            );
        }
        for (operation, limit) in &self.endpoint_rate_limits {
            if *limit == 0 {
                return Err(format!(
                    "endpoint_rate_limits[{operation:?}] must be at least 1"
                ));
            }
            if !crate::resources::is_operation_name(operation) {
                return Err(format!(
                    "endpoint_rate_limits: {operation:?} is not an endpoint the simulator serves \
                     (write it as METHOD /v1/path with {{id}} for ids, e.g. \"GET /v1/customers/{{id}}\")"
                ));
            }
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
