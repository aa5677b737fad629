//! One Kassa process: optionally the embedded Stripe simulator, the broker connection, the
//! database, the ingress and the worker, started in the right order and stopped in the reverse
//! one (stop accepting webhooks → finish in-flight work → close the broker → stop the simulator).

use anyhow::Context;
use kassa_broker::connection::redact_url;
use kassa_broker::{Broker, BrokerConfig};
use kassa_ingress::admin::AdminState;
use kassa_ingress::IngressState;
use kassa_store::Store;
use kassa_stripe::webhook::WebhookVerifier;
use kassa_stripe::{Client, ClientConfig};
use kassa_stripe_sim::{SimConfig, Simulator};
use kassa_worker::{Worker, WorkerConfig};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The API key Kassa uses against its embedded simulator (any `sk_test_` key works there).
pub const EMBEDDED_SIM_KEY: &str = "sk_test_kassa_embedded_simulator";

/// Where Stripe is.
#[derive(Clone)]
pub enum StripeTarget {
    /// A real (or external simulated) Stripe: key and API base.
    Api {
        /// `sk_…` or `rk_…`.
        key: SecretString,
        /// e.g. `https://api.stripe.com`.
        api_base: String,
    },
    /// Start the simulator in this process and have it deliver webhooks to our own ingress.
    Embedded(Box<SimConfig>),
}

/// Everything one process needs.
#[derive(Clone)]
pub struct StackConfig {
    /// Address of the HTTP server: webhooks (if `webhooks`), `/healthz`, `/readyz`, `/metrics`.
    pub listen: Option<SocketAddr>,
    /// Mount `POST /webhooks/stripe` (false for a worker, which serves health and metrics only).
    pub webhooks: bool,
    /// RabbitMQ.
    pub broker: BrokerConfig,
    /// Limits of the HTTP listener (time-outs, connections, requests in flight).
    pub http: kassa_ingress::HttpLimits,
    /// PostgreSQL; `None` for an ingress-only process.
    pub database_url: Option<String>,
    /// Pool size.
    pub db_max_connections: u32,
    /// Stripe; `None` for an ingress-only process.
    pub stripe: Option<StripeTarget>,
    /// Requests per second this process sends to Stripe at most (`KASSA_STRIPE_MAX_RPS`).
    pub stripe_max_rps: Option<NonZeroU32>,
    /// Webhook secrets (ignored with the embedded simulator, which gets a fresh one).
    pub webhook_secrets: Vec<SecretString>,
    /// Signature tolerance.
    pub webhook_tolerance: Duration,
    /// Run the worker with this configuration.
    pub worker: Option<WorkerConfig>,
    /// `KASSA_ADMIN_TOKEN`: mounts the back-office API (needs the database too).
    pub admin_token: Option<SecretString>,
    /// `KASSA_PUBLIC_URL`: where Checkout sends customers back to (the merchant pages); empty:
    /// this process's own bound address.
    pub public_url: String,
    /// `KASSA_STRIPE_PUBLISHABLE_KEY`, handed to merchants' payment forms; its mode must match
    /// the secret key's.
    pub publishable_key: Option<String>,
}

/// The publishable key of the embedded simulator's test mode.
pub const EMBEDDED_SIM_PUBLISHABLE_KEY: &str = "pk_test_kassa_embedded_simulator";

/// Test and live never mix: a publishable key must be of the secret key's mode.
pub fn check_publishable_key(publishable: &str, mode: kassa_stripe::Mode) -> anyhow::Result<()> {
    let publishable_mode = if publishable.starts_with("pk_test_") {
        kassa_stripe::Mode::Test
    } else if publishable.starts_with("pk_live_") {
        kassa_stripe::Mode::Live
    } else {
        anyhow::bail!("KASSA_STRIPE_PUBLISHABLE_KEY must start with pk_test_ or pk_live_");
    };
    if publishable_mode != mode {
        anyhow::bail!(
            "KASSA_STRIPE_PUBLISHABLE_KEY is a {publishable_mode} key but KASSA_STRIPE_API_KEY is a {mode} key: test and live never mix"
        );
    }
    Ok(())
}

/// A running process.
pub struct Stack {
    /// The bound HTTP address, when there is an ingress.
    pub address: Option<SocketAddr>,
    /// The embedded simulator, when there is one.
    pub sim: Option<Simulator>,
    /// The Stripe client, when Stripe is configured.
    pub stripe: Option<Client>,
    /// The database, when configured.
    pub store: Option<Store>,
    /// The broker connection.
    pub broker: Broker,
    http_shutdown: CancellationToken,
    work_shutdown: CancellationToken,
    broker_shutdown: CancellationToken,
    http: JoinSet<()>,
    work: JoinSet<()>,
}

impl Stack {
    /// Starts every part `config` asks for and returns once the HTTP server listens.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let listener = match config.listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding KASSA_LISTEN={address}"))?,
            ),
            None => None,
        };
        let address = match &listener {
            Some(listener) => Some(listener.local_addr().context("reading the bound address")?),
            None => None,
        };

        let mut secrets = config.webhook_secrets.clone();
        let mut sim = None;
        let stripe = match config.stripe.clone() {
            None => None,
            Some(StripeTarget::Api { key, api_base }) => {
                let mut client_config = ClientConfig::new(key);
                client_config.api_base = api_base;
                client_config.max_requests_per_second = config.stripe_max_rps;
                Some(
                    Client::new(client_config)
                        .context("KASSA_STRIPE_API_KEY / KASSA_STRIPE_API_BASE")?,
                )
            }
            Some(StripeTarget::Embedded(sim_config)) => {
                let mut sim_config = *sim_config;
                // A fresh secret per run: shared with our own verifier, never printed.
                let secret = format!("whsec_{:032x}", rand::random::<u128>());
                sim_config.webhook_secret = secret.clone();
                secrets = vec![SecretString::from(secret)];
                if let Some(address) = address {
                    sim_config
                        .webhook_endpoints
                        .push(format!("http://{address}/webhooks/stripe"));
                }
                let simulator = Simulator::start(sim_config)
                    .await
                    .context("starting the embedded Stripe simulator")?;
                let mut client_config =
                    ClientConfig::new(SecretString::from(EMBEDDED_SIM_KEY.to_owned()));
                client_config.api_base = simulator.base_url();
                client_config.max_requests_per_second = config.stripe_max_rps;
                let client = Client::new(client_config)
                    .context("configuring the Stripe client for the simulator")?;
                sim = Some(simulator);
                Some(client)
            }
        };

        let store = match &config.database_url {
            Some(url) => Some(
                Store::connect(url, config.db_max_connections)
                    .await
                    .with_context(|| {
                        format!(
                            "connecting to PostgreSQL at KASSA_DATABASE_URL={}",
                            redact_url(url)
                        )
                    })?,
            ),
            None => None,
        };
        if let Some(store) = &store {
            info!(
                installation = store.installation_id(),
                "installation id read from PostgreSQL"
            );
        }

        let broker_shutdown = CancellationToken::new();
        let broker = Broker::start(config.broker.clone(), broker_shutdown.clone());

        let http_shutdown = CancellationToken::new();
        let mut http = JoinSet::new();
        if let Some(listener) = listener {
            let verifier = WebhookVerifier::new(secrets).with_tolerance(config.webhook_tolerance);
            let state = IngressState::new(verifier, broker.clone());
            let mut router = if config.webhooks {
                kassa_ingress::router(state)
            } else {
                kassa_ingress::health_router(state)
            };
            if let (Some(token), Some(store)) = (config.admin_token.clone(), store.clone()) {
                let route = kassa_worker::charges::job_route(broker.topology());
                let mut admin = AdminState::new(store.clone(), token, route);
                if let Some(stripe) = &stripe {
                    admin = admin.with_customer_lookup(std::sync::Arc::new(
                        crate::customer_lookup::StripeCustomers::new(stripe.clone(), store),
                    ));
                }
                router = router.merge(kassa_ingress::admin::router(admin));
                info!("back-office API mounted under /api (Bearer KASSA_ADMIN_TOKEN)");
            }
            if let (Some(token), Some(stripe)) = (config.admin_token.clone(), stripe.clone()) {
                router = router.merge(kassa_ingress::connector::router(
                    kassa_ingress::connector::ConnectorState::new(stripe, token),
                ));
                info!(
                    "connector actions mounted: /api/customers, /api/products, /api/legacy-charges"
                );
            }
            if let (true, Some(stripe), Some(store)) =
                (config.webhooks, stripe.clone(), store.clone())
            {
                let publishable_key = match (&config.publishable_key, &config.stripe) {
                    (Some(key), _) => Some(key.clone()),
                    (None, Some(StripeTarget::Embedded(_))) => {
                        Some(EMBEDDED_SIM_PUBLISHABLE_KEY.to_owned())
                    }
                    (None, _) => None,
                };
                if let Some(key) = &publishable_key {
                    check_publishable_key(key, stripe.mode())?;
                }
                let test_mode = stripe.mode() == kassa_stripe::Mode::Test;
                let public_url = match (config.public_url.trim_end_matches('/'), address) {
                    ("", Some(address)) if address.ip().is_unspecified() => anyhow::bail!(
                        "KASSA_PUBLIC_URL is required: Checkout sends customers back to /success \
                         and /cancel, and KASSA_LISTEN={address} is no address a browser can reach"
                    ),
                    ("", Some(address)) => format!("http://{address}"),
                    (url, _) => url.to_owned(),
                };
                let settings = kassa_ingress::checkout::CheckoutSettings {
                    public_url,
                    publishable_key,
                    product: kassa_ingress::pages::ShopProduct::demo()
                        .context("the shop's demo product")?,
                };
                let fulfilment = std::sync::Arc::new(crate::fulfil::WorkerFulfilment::new(
                    stripe.clone(),
                    store,
                    broker.topology().clone(),
                ));
                let token = config
                    .admin_token
                    .clone()
                    .unwrap_or_else(|| SecretString::from(String::new()));
                let state = kassa_ingress::checkout::CheckoutState::new(
                    stripe, token, settings, fulfilment,
                );
                router = router.merge(kassa_ingress::pages::router(state.clone()));
                if test_mode {
                    router = router.merge(kassa_ingress::pages::shop_router(state.clone()));
                    info!(
                        "merchant pages mounted: /, /create-checkout-session (the test-mode demo shop), /success, /cancel"
                    );
                } else {
                    info!("merchant pages mounted: /success, /cancel (no demo shop in live mode)");
                }
                if config.admin_token.is_some() {
                    router = router.merge(kassa_ingress::checkout::router(state));
                    info!("checkout API mounted: /api/checkout-sessions, /api/payment-intents");
                }
            }
            let router = kassa_ingress::with_json_fallbacks(router);
            let shutdown = http_shutdown.clone();
            http.spawn(async move {
                if let Err(error) =
                    kassa_ingress::serve(listener, router, config.http, shutdown.cancelled_owned())
                        .await
                {
                    tracing::error!(%error, "HTTP server failed");
                }
            });
        }

        let work_shutdown = CancellationToken::new();
        let mut work = JoinSet::new();
        if let Some(worker_config) = config.worker {
            let stripe = stripe
                .clone()
                .context("the worker needs Stripe (KASSA_STRIPE_API_KEY)")?;
            let store = store
                .clone()
                .context("the worker needs PostgreSQL (KASSA_DATABASE_URL)")?;
            let worker = Worker::new(stripe, store, broker.clone(), worker_config);
            work.spawn(worker.run(work_shutdown.clone()));
        }
        if let Some(address) = address {
            if config.webhooks {
                info!(listen = %address, webhook_url = %format!("http://{address}/webhooks/stripe"), "HTTP server listening");
            } else {
                info!(listen = %address, "health and metrics listening (/healthz, /readyz, /metrics)");
            }
        }
        Ok(Stack {
            address,
            sim,
            stripe,
            store,
            broker,
            http_shutdown,
            work_shutdown,
            broker_shutdown,
            http,
            work,
        })
    }

    /// This installation's id (read from PostgreSQL at start), when the process has a database:
    /// the one every Idempotency-Key and Stripe metadata of this installation carry.
    pub fn installation_id(&self) -> Option<&str> {
        self.store.as_ref().map(Store::installation_id)
    }

    /// The base URL of the HTTP server, when there is one.
    pub fn base_url(&self) -> Option<String> {
        self.address.map(|a| format!("http://{a}"))
    }

    /// Stops in order: stop accepting webhooks and let in-flight ones get their confirms, let
    /// the worker finish (or roll back) in-flight events, then close the broker and the simulator.
    pub async fn stop(mut self) {
        self.http_shutdown.cancel();
        while self.http.join_next().await.is_some() {}
        self.work_shutdown.cancel();
        while self.work.join_next().await.is_some() {}
        self.broker_shutdown.cancel();
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
    }

    /// Resolves when a part stopped by itself (an HTTP server failure); `serve` then exits.
    pub async fn failed(&mut self) {
        if self.http.is_empty() {
            std::future::pending::<()>().await;
        }
        let _ = self.http.join_next().await;
    }
}
