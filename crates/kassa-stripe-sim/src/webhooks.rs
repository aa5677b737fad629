//! Webhook delivery: every event is POSTed, signed, to every endpoint of its mode, and retried with backoff.
//!
//! Stripe (docs: webhooks): an endpoint belongs to test mode or to live mode, receives that mode's
//! events only, and has its own signing secret (`whsec_…`); the `Stripe-Signature` header is `t={timestamp},v1={signature}` where the
//! signature is the hex HMAC-SHA256 of `"{t}.{raw body}"` under the endpoint secret; non-2xx answers and
//! time-outs are failures, retried "with an exponential back off"; delivery is at least once and unordered.
//! The simulator compresses time: retry n waits `webhook_retry_base × 2^(n-1)`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Faults;
use crate::mode::Mode;
use crate::state::Accounts;

/// Hex HMAC-SHA256 of `"{timestamp}.{payload}"` — Stripe's `v1` scheme.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be taken.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Stripe-Signature` header value for a payload signed at `timestamp`.
pub fn signature_header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// The attempt failed; another follows.
    Failed,
    /// The last attempt failed; no more follow.
    GaveUp,
    /// Fault injection dropped the event: never sent (still listed in `/v1/events`).
    Dropped,
}

/// One line of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    /// `evt_…` id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Endpoint URL.
    pub endpoint: String,
    /// The endpoint's (and the event's) mode: `true` for a live endpoint.
    pub livemode: bool,
    /// 1 for the first attempt; 0 for a dropped event.
    pub attempt: u32,
    /// HTTP status the endpoint answered, if it answered.
    pub status: Option<u16>,
    /// Transport error or time-out, if any.
    pub error: Option<String>,
    /// What the attempt came to.
    pub outcome: DeliveryOutcome,
    /// Whether this is the extra copy sent by `duplicate_webhooks`.
    pub duplicate: bool,
}

/// An event ready to send.
#[derive(Debug)]
pub struct Outgoing {
    /// `evt_…` id.
    pub id: String,
    /// Event type.
    pub event_type: String,
    /// The event's mode: it goes to that mode's endpoints only.
    pub mode: Mode,
    /// Serialized event, sent byte for byte and signed as is.
    pub payload: String,
}

/// Delivery settings fixed at start.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Signing secret of the test-mode endpoints.
    pub secret: String,
    /// Signing secret of the live-mode endpoints.
    pub live_secret: String,
    /// First retry delay.
    pub retry_base: Duration,
    /// Attempts per event and endpoint.
    pub max_attempts: u32,
    /// Per-attempt time-out.
    pub timeout: Duration,
    /// First attempts in flight per endpoint.
    pub concurrency: usize,
}

struct Job {
    event: Arc<Outgoing>,
    duplicate: bool,
}

/// One endpoint: where its worker takes jobs, and the event types it is sent.
struct Endpoint {
    jobs: mpsc::UnboundedSender<Job>,
    enabled_events: EnabledEvents,
}

/// An endpoint's `enabled_events`. Stripe (API reference, webhook endpoints): "The list of events
/// to enable for this endpoint. You may specify `['*']` to enable all events"; an endpoint is sent
/// only the events of those types.
#[derive(Debug, Clone)]
pub struct EnabledEvents(Arc<[String]>);

impl EnabledEvents {
    /// `['*']`: every event.
    pub fn all() -> Self {
        EnabledEvents(Arc::from(vec!["*".to_owned()]))
    }

    /// These types (`*` among them enables all).
    pub fn of(types: &[String]) -> Self {
        EnabledEvents(Arc::from(types.to_vec()))
    }

    /// Whether an event of type `event_type` is sent.
    pub fn includes(&self, event_type: &str) -> bool {
        self.0.iter().any(|t| t == "*" || t == event_type)
    }
}

/// The delivery machinery shared by the dispatcher and the endpoint workers.
pub struct Deliverer {
    settings: DeliverySettings,
    client: reqwest::Client,
    endpoints: Mutex<HashMap<(Mode, String), Endpoint>>,
    test_count: AtomicUsize,
    live_count: AtomicUsize,
    log: Mutex<Vec<WebhookDelivery>>,
    store: Arc<Mutex<Accounts>>,
    faults: Arc<Mutex<crate::faults::FaultState>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Deliverer {
    /// Builds the deliverer; endpoints are added with [`Deliverer::add_endpoint`].
    pub fn new(
        settings: DeliverySettings,
        store: Arc<Mutex<Accounts>>,
        faults: Arc<Mutex<crate::faults::FaultState>>,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, reqwest::Error> {
        // Endpoints are local: never go through a proxy from the environment.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(settings.timeout)
            .build()?;
        Ok(Arc::new(Deliverer {
            settings,
            client,
            endpoints: Mutex::new(HashMap::new()),
            test_count: AtomicUsize::new(0),
            live_count: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            store,
            faults,
            cancel,
            tasks,
        }))
    }

    fn counter(&self, mode: Mode) -> &AtomicUsize {
        match mode {
            Mode::Test => &self.test_count,
            Mode::Live => &self.live_count,
        }
    }

    /// Number of endpoints configured in `mode`.
    pub fn endpoint_count(&self, mode: Mode) -> usize {
        self.counter(mode).load(Ordering::Relaxed)
    }

    /// The `enabled_events` of each endpoint of `mode`.
    pub fn enabled_events_of(&self, mode: Mode) -> Vec<EnabledEvents> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((m, _), _)| *m == mode)
            .map(|(_, e)| e.enabled_events.clone())
            .collect()
    }

    /// The endpoint URLs of `mode`, sorted.
    pub fn endpoints(&self, mode: Mode) -> Vec<String> {
        let mut urls: Vec<String> = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|(m, _)| *m == mode)
            .map(|(_, url)| url.clone())
            .collect();
        urls.sort();
        urls
    }

    /// The delivery log so far.
    pub fn log(&self) -> Vec<WebhookDelivery> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds an endpoint of `mode` (ignored if already there); it receives that mode's events created
    /// from now on. The same URL may be an endpoint of both modes, each signing with its own secret.
    pub fn add_endpoint(self: &Arc<Self>, mode: Mode, url: String) {
        self.add_endpoint_for(mode, url, EnabledEvents::all());
    }

    /// [`Deliverer::add_endpoint`], sent only the events of the types `enabled_events` names.
    pub fn add_endpoint_for(
        self: &Arc<Self>,
        mode: Mode,
        url: String,
        enabled_events: EnabledEvents,
    ) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (mode, url.clone());
        if endpoints.contains_key(&key) {
            return;
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        endpoints.insert(
            key,
            Endpoint {
                jobs,
                enabled_events,
            },
        );
        let count = endpoints.keys().filter(|(m, _)| *m == mode).count();
        self.counter(mode).store(count, Ordering::Relaxed);
        let me = Arc::clone(self);
        self.tasks
            .spawn(async move { me.endpoint_worker(mode, url, rx).await });
    }

    fn record(&self, d: WebhookDelivery) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(d);
    }

    /// Takes events in creation order, applies the delivery faults, and hands them to each endpoint.
    pub async fn dispatch(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
        loop {
            let first = tokio::select! {
                () = self.cancel.cancelled() => return,
                e = rx.recv() => match e { Some(e) => e, None => return },
            };
            let faults: Faults = self
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .faults()
                .clone();
            let mut batch = vec![first];
            if faults.shuffle_webhooks {
                // Events produced close together are reordered: wait briefly for more, then shuffle.
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                while let Ok(e) = rx.try_recv() {
                    batch.push(e);
                }
                batch.shuffle(&mut rand::rng());
            }
            let senders: Vec<(Mode, String, Endpoint)> = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|((m, url), e)| {
                    let endpoint = Endpoint {
                        jobs: e.jobs.clone(),
                        enabled_events: e.enabled_events.clone(),
                    };
                    (*m, url.clone(), endpoint)
                })
                .collect();
            for event in batch {
                let event = Arc::new(event);
                let dropped = faults.drop_webhook_rate > 0.0
                    && rand::rng().random_bool(faults.drop_webhook_rate.clamp(0.0, 1.0));
                for (mode, url, endpoint) in &senders {
                    if *mode != event.mode || !endpoint.enabled_events.includes(&event.event_type) {
                        continue;
                    }
                    let tx = &endpoint.jobs;
                    if dropped {
                        self.record(WebhookDelivery {
                            event_id: event.id.clone(),
                            event_type: event.event_type.clone(),
                            endpoint: url.clone(),
                            livemode: mode.livemode(),
                            attempt: 0,
                            status: None,
                            error: None,
                            outcome: DeliveryOutcome::Dropped,
                            duplicate: false,
                        });
                        continue;
                    }
                    // A closed worker means shutdown is under way; nothing is lost that matters then.
                    let _ = tx.send(Job {
                        event: Arc::clone(&event),
                        duplicate: false,
                    });
                    if faults.duplicate_webhooks {
                        let _ = tx.send(Job {
                            event: Arc::clone(&event),
                            duplicate: true,
                        });
                    }
                }
            }
        }
    }

    async fn endpoint_worker(
        self: Arc<Self>,
        mode: Mode,
        url: String,
        mut rx: mpsc::UnboundedReceiver<Job>,
    ) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        loop {
            let job = tokio::select! {
                () = self.cancel.cancelled() => return,
                j = rx.recv() => match j { Some(j) => j, None => return },
            };
            let permit = tokio::select! {
                () = self.cancel.cancelled() => return,
                p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let me = Arc::clone(&self);
            let url = url.clone();
            self.tasks
                .spawn(async move { me.deliver(mode, url, job, permit).await });
        }
    }

    async fn deliver(
        self: Arc<Self>,
        mode: Mode,
        url: String,
        job: Job,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut permit = Some(permit);
        let max = self.settings.max_attempts.max(1);
        for attempt in 1..=max {
            let (status, error) = self.attempt(mode, &url, &job.event.payload).await;
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            let outcome = if ok {
                DeliveryOutcome::Delivered
            } else if attempt == max {
                DeliveryOutcome::GaveUp
            } else {
                DeliveryOutcome::Failed
            };
            self.record(WebhookDelivery {
                event_id: job.event.id.clone(),
                event_type: job.event.event_type.clone(),
                endpoint: url.clone(),
                livemode: mode.livemode(),
                attempt,
                status,
                error,
                outcome,
                duplicate: job.duplicate,
            });
            if ok {
                if !job.duplicate {
                    self.store
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .store_mut(mode)
                        .webhook_delivered(&job.event.id);
                }
                return;
            }
            // Retries do not hold the endpoint's first-attempt slots: later events go ahead of them,
            // as Stripe's retries arrive after newer events.
            permit.take();
            if attempt < max {
                let delay = self
                    .settings
                    .retry_base
                    .saturating_mul(1u32 << (attempt - 1).min(20));
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    async fn attempt(&self, mode: Mode, url: &str, payload: &str) -> (Option<u16>, Option<String>) {
        let secret = match mode {
            Mode::Test => &self.settings.secret,
            Mode::Live => &self.settings.live_secret,
        };
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        let request = self
            .client
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .header(
                http::header::USER_AGENT,
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header(
                "Stripe-Signature",
                signature_header(secret, t, payload.as_bytes()),
            )
            .body(payload.to_owned());
        let response = tokio::select! {
            () = self.cancel.cancelled() => return (None, Some("simulator shut down".to_owned())),
            r = request.send() => r,
        };
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                // Read the body so the connection can be reused; its content does not matter.
                let _ = r.bytes().await;
                (Some(status), None)
            }
            Err(e) if e.is_timeout() => (None, Some("timed out".to_owned())),
            Err(e) => (None, Some(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // HMAC-SHA256("whsec_test", "1492774577.{}") computed independently with Python's hmac module.
        let sig = sign("whsec_test", 1_492_774_577, b"{}");
        assert_eq!(
            sig,
            "0d0602f6611bd2252dd4b74b58a4528355a7380639a15e6cc21e3059d56d5b8b"
        );
        assert_eq!(
            signature_header("whsec_test", 1_492_774_577, b"{}"),
            format!("t=1492774577,v1={sig}")
        );
        assert_ne!(sig, sign("whsec_other", 1_492_774_577, b"{}"));
    }
}
