//! The running simulator: shared state, the HTTP server, the webhook deliverer and the clock.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::routing::{any, get, post};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, RecordedRequest};
use crate::clock::Clock;
use crate::config::{Faults, SimConfig};
use crate::error::SimError;
use crate::faults::FaultState;
use crate::idempotency::IdempotencyStore;
use crate::mode::Mode;
use crate::resources::{checkout, payment_intents};
use crate::state::{Accounts, Ctx, Env, Origin};
use crate::webhooks::{Deliverer, DeliverySettings, EnabledEvents, Outgoing, WebhookDelivery};
use crate::{control, hosted, stripe_js};

/// State shared by every handler and background task of one instance.
pub struct Shared {
    /// The account's objects, test mode's and live mode's.
    pub store: Arc<Mutex<Accounts>>,
    /// Faults in force.
    pub faults: Arc<Mutex<FaultState>>,
    /// Idempotency keys seen.
    pub idempotency: Mutex<IdempotencyStore>,
    /// Every `/v1` request answered.
    pub requests: Mutex<Vec<RecordedRequest>>,
    /// Webhook delivery.
    pub deliverer: Arc<Deliverer>,
    events_tx: mpsc::UnboundedSender<Outgoing>,
    /// Instance facts for endpoints.
    pub env: Env,
    /// Held while the clock's work runs (the tick, or an advance), so an advance reports exactly
    /// what its own time did.
    pub clock_work: Mutex<()>,
}

impl Shared {
    /// Runs `f` in `mode` under the store lock, then hands the events it emitted to the webhook
    /// deliverer. Returns `f`'s result and whether it changed anything.
    pub fn execute<T>(
        &self,
        mode: Mode,
        origin: Origin,
        f: impl FnOnce(&mut Ctx<'_>) -> T,
    ) -> (T, bool) {
        let endpoints = self.deliverer.enabled_events_of(mode);
        let any_endpoint = !endpoints.is_empty();
        let (out, emitted, mutated) = {
            let mut accounts = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            let mut ctx = Ctx::new(&mut accounts, mode, &self.env, origin, endpoints);
            let out = f(&mut ctx);
            (out, std::mem::take(&mut ctx.emitted), ctx.mutated)
        };
        if any_endpoint {
            for event in emitted {
                let outgoing = Outgoing {
                    // Stripe sends events pretty-printed; receivers must verify the raw bytes either way.
                    payload: serde_json::to_string_pretty(&event).unwrap_or_default(),
                    id: event.id,
                    event_type: event.event_type,
                    mode: event.mode,
                };
                // Fails only when the dispatcher has stopped, i.e. during shutdown.
                let _ = self.events_tx.send(outgoing);
            }
        }
        (out, mutated)
    }

    /// The mode whose objects include `id` (a Checkout Session, a PaymentIntent…), if any.
    pub fn mode_of(&self, id: &str) -> Option<Mode> {
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mode_of(id)
    }
}

/// An in-process Stripe simulator listening on a local port.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// `None` once the server task has been awaited.
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Simulator {
    /// A simulator dropped without [`Simulator::shutdown`] (a failed test) still stops serving.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Simulator {
    /// Binds the listen address, then starts the HTTP server, the webhook deliverer and the clock.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        config.faults.validate().map_err(SimError::Config)?;
        if config.webhook_secret.is_empty() || config.live_webhook_secret.is_empty() {
            return Err(SimError::Config(
                "webhook_secret and live_webhook_secret must not be empty".to_owned(),
            ));
        }
        if config.webhook_secret == config.live_webhook_secret {
            // Stripe: each endpoint has its own secret; a live event must never verify with the
            // test endpoint's secret.
            return Err(SimError::Config(
                "live_webhook_secret must differ from webhook_secret".to_owned(),
            ));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let mut addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let base_url = format!("http://{addr}");
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let store = Arc::new(Mutex::new(Accounts::default()));
        let faults = Arc::new(Mutex::new(FaultState::new(config.faults.clone())));
        let deliverer = Deliverer::new(
            DeliverySettings {
                secret: config.webhook_secret.clone(),
                live_secret: config.live_webhook_secret.clone(),
                retry_base: config.webhook_retry_base,
                max_attempts: config.webhook_max_attempts,
                timeout: config.webhook_timeout,
                concurrency: config.webhook_concurrency,
            },
            Arc::clone(&store),
            Arc::clone(&faults),
            cancel.clone(),
            tasks.clone(),
        )
        .map_err(SimError::HttpClient)?;
        let enabled = EnabledEvents::of(&config.webhook_enabled_events);
        for url in &config.webhook_endpoints {
            deliverer.add_endpoint_for(Mode::Test, url.clone(), enabled.clone());
        }
        for url in &config.live_webhook_endpoints {
            deliverer.add_endpoint_for(Mode::Live, url.clone(), enabled.clone());
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tasks.spawn(Arc::clone(&deliverer).dispatch(events_rx));
        let shared = Arc::new(Shared {
            store,
            faults,
            idempotency: Mutex::new(IdempotencyStore::default()),
            requests: Mutex::new(Vec::new()),
            deliverer,
            events_tx,
            env: Env {
                clock: Arc::new(Clock::default()),
                api_version: config.api_version.clone(),
                public_url: config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| base_url.clone())
                    .trim_end_matches('/')
                    .to_owned(),
            },
            clock_work: Mutex::new(()),
        });
        tasks.spawn(clock(Arc::clone(&shared), cancel.clone()));
        let app = router(Arc::clone(&shared));
        let shutdown = cancel.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        });
        tracing::info!(%base_url, "Stripe simulator listening");
        Ok(Simulator {
            shared,
            addr,
            cancel,
            tasks,
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:PORT` — what to use as the Stripe API base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults in force (counters start afresh); out-of-range values are clamped.
    pub fn set_faults(&self, f: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(f);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .faults()
            .clone()
    }

    /// Requests refused by the rate limiters since the faults were last set, per endpoint.
    pub fn rate_limited(&self) -> crate::faults::RateLimited {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate_limited()
            .clone()
    }

    /// Errors injected since the faults were last set.
    pub fn injected_faults(&self) -> u64 {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .injected()
    }

    /// Unix time on the simulator's clock (the wall clock until [`Simulator::advance_clock`]).
    pub fn now(&self) -> i64 {
        self.shared.env.clock.now()
    }

    /// Lets `seconds` pass on Stripe's side at once, as `POST /_sim/clock/advance` does: keys 24
    /// hours old are forgotten, open Checkout Sessions past `expires_at` expire and delayed debits
    /// due by then settle, in both modes.
    pub fn advance_clock(&self, seconds: u32) -> control::ClockAdvanced {
        control::advance_clock(&self.shared, seconds)
    }

    /// Adds a test-mode webhook endpoint; it receives the test events created from now on.
    pub fn add_webhook_endpoint(&self, url: String) {
        self.shared.deliverer.add_endpoint(Mode::Test, url);
    }

    /// Adds a webhook endpoint of `mode`, signed with that mode's secret.
    pub fn add_webhook_endpoint_in(&self, mode: Mode, url: String) {
        self.shared.deliverer.add_endpoint(mode, url);
    }

    /// Every `/v1` request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every webhook delivery attempt so far (and events dropped by fault injection).
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.deliverer.log()
    }

    /// Completes a Checkout Session as a customer paying with a test card (`pm_card_visa`, …).
    /// `Err` is Stripe's error body (a decline, or a session that is not open).
    pub fn complete_checkout_session(
        &self,
        id: &str,
        payment_method: &str,
    ) -> Result<Value, Value> {
        let completion = checkout::Completion {
            payment_method: payment_method.to_owned(),
            ..Default::default()
        };
        let mode = self.shared.mode_of(id).unwrap_or_default();
        let (result, _) = self.shared.execute(mode, Origin::default(), |ctx| {
            checkout::complete(ctx, id, &completion)
        });
        result.map(Arc::unwrap_or_clone).map_err(|e| e.body())
    }

    /// The card network updates the saved card `id` in place (see
    /// [`control::network_update_card`]), emitting `payment_method.automatically_updated`.
    /// `Err` is Stripe's error body (no such PaymentMethod, not a card, an invalid field).
    pub fn network_update_card(
        &self,
        id: &str,
        update: &crate::NetworkUpdate,
    ) -> Result<Value, Value> {
        control::update_card_from_network(&self.shared, id, update)
            .map(Arc::unwrap_or_clone)
            .map_err(|e| e.body())
    }

    /// Stops serving, stops delivering webhooks, and waits (a few seconds at most) for tasks to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tasks.close();
        let server = self.server.take();
        let tasks = self.tasks.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), async move {
            if let Some(server) = server {
                let _ = server.await;
            }
            tasks.wait().await;
        })
        .await;
    }

    /// Serves until `shutdown` completes or the server fails.
    async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), SimError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let result = tokio::select! {
            () = shutdown => Ok(()),
            r = server => {
                // The server task is finished: never poll its handle again.
                self.server = None;
                match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(SimError::Serve(e)),
                    Err(e) => Err(SimError::Serve(std::io::Error::other(e))),
                }
            }
        };
        self.shutdown().await;
        result
    }
}

/// Runs a simulator until `shutdown` completes — for `kassa stripe-sim --listen ADDR`.
pub async fn serve(config: SimConfig, shutdown: impl Future<Output = ()>) -> Result<(), SimError> {
    let sim = Simulator::start(config).await?;
    sim.run_until(shutdown).await
}

/// Once a second, on the simulator's clock: expires open Checkout Sessions whose `expires_at` has
/// passed and settles the delayed debits whose time has come.
async fn clock(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _clock_work = shared
            .clock_work
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for mode in Mode::ALL {
            shared.execute(mode, Origin::default(), |ctx| {
                checkout::expire_due(ctx);
                payment_intents::settle_due(ctx);
            });
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/{*rest}", any(api::v1))
        .route("/_sim/ping", get(|| async { "pong" }))
        .route("/_sim/requests", get(control::requests))
        .route(
            "/_sim/faults",
            get(control::get_faults).post(control::set_faults),
        )
        .route(
            "/_sim/webhook_endpoints",
            get(control::list_endpoints).post(control::add_endpoint),
        )
        .route("/_sim/webhook_deliveries", get(control::deliveries))
        .route("/_sim/clock", get(control::get_clock))
        .route("/_sim/clock/advance", post(control::post_advance_clock))
        .route(
            "/_sim/checkout/sessions/{id}/complete",
            post(control::complete_session),
        )
        .route(
            "/_sim/checkout/sessions/{id}/expire",
            post(control::expire_session),
        )
        .route(
            "/_sim/payment_methods/{id}/network_update",
            post(control::network_update_card),
        )
        .route("/c/pay/{id}", get(hosted::page).post(hosted::pay))
        .route("/v3", get(stripe_js::script))
        .route("/v3/", get(stripe_js::script))
        .route("/v3/stripe.js", get(stripe_js::script))
        .route(
            "/3ds/{id}",
            get(stripe_js::challenge_page).post(stripe_js::challenge_answer),
        )
        .fallback(control::not_found)
        .layer(axum::middleware::map_response(control::ensure_request_id))
        .with_state(shared)
}
