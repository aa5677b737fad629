//! The rig: Kassa's stack in-process (embedded simulator, ingress, broker, database) on scratch
//! names, loaded with completed sessions, and a worker run until it has drained them.

use super::WorkerBenchArgs;
use crate::scratch::{self, ScratchDatabase};
use anyhow::{bail, Context};
use futures_util::StreamExt;
use kassa::stack::{Stack, StackConfig, StripeTarget};
use kassa_broker::Topology;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::CreateCheckoutSession;
use kassa_stripe::{Client, ClientConfig, IdempotencyKey};
use kassa_stripe_sim::{SimConfig, Simulator};
use kassa_worker::{Worker, WorkerConfig};
use secrecy::SecretString;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Stripe's two limits, as the simulator enforces them and Kassa paces itself
/// (`KASSA_STRIPE_MAX_RPS`, `KASSA_STRIPE_ENDPOINT_RPS`): requests/s per account and per endpoint.
#[derive(Clone, Copy)]
pub struct Pace {
    pub global: NonZeroU32,
    pub endpoint: NonZeroU32,
}

impl Pace {
    /// The simulator's faults enforcing these limits (429 `rate_limit` above either).
    pub fn faults(self) -> kassa_stripe_sim::Faults {
        kassa_stripe_sim::Faults {
            rate_limit_per_sec: Some(self.global.get()),
            endpoint_rate_limit_per_sec: Some(self.endpoint.get()),
            ..kassa_stripe_sim::Faults::default()
        }
    }

    /// Calls/s achieved ÷ the account limit, and the busiest endpoint's calls/s ÷ the endpoint
    /// limit, for the requests answered (not 429) in `seconds`.
    pub fn ratios(self, calls: &[kassa_stripe_sim::RecordedRequest], seconds: f64) -> (f64, f64) {
        let mut per_endpoint = std::collections::BTreeMap::<&str, usize>::new();
        for call in calls.iter().filter(|c| c.status != 429) {
            *per_endpoint.entry(call.operation.as_str()).or_default() += 1;
        }
        let served: usize = per_endpoint.values().sum();
        let busiest = per_endpoint.values().copied().max().unwrap_or(0);
        let seconds = seconds.max(1e-9);
        (
            served as f64 / seconds / f64::from(self.global.get()),
            busiest as f64 / seconds / f64::from(self.endpoint.get()),
        )
    }
}

/// The in-process stack (embedded simulator, ingress, broker, database) a phase runs on.
pub struct Rig {
    pub stack: Stack,
    pub topology: Topology,
    database: ScratchDatabase,
}

impl Rig {
    pub async fn start(args: &WorkerBenchArgs) -> anyhow::Result<Rig> {
        let topology = scratch::topology("bench");
        let database = ScratchDatabase::on(&args.database_url, "bench", &scratch::run_id())?;
        let broker = args.broker.config(topology.clone());
        let config = StackConfig {
            http: kassa_ingress::HttpLimits::default(),
            listen: Some("127.0.0.1:0".parse()?),
            metrics_listen: None,
            webhooks: true,
            broker,
            database_url: Some(database.url().to_owned()),
            db_max_connections: u32::try_from(args.concurrency + 8).unwrap_or(40),
            stripe: Some(StripeTarget::Embedded(Box::new(SimConfig {
                webhook_concurrency: 32,
                // The endpoint enables the types Kassa acts on, as the README tells merchants to
                // configure theirs: types it would only ack are not sent.
                webhook_enabled_events: kassa_worker::events::handled_types()
                    .map(str::to_owned)
                    .collect(),
                ..SimConfig::default()
            }))),
            stripe_max_rps: None,
            stripe_endpoint_rps: None,
            webhook_secrets: Default::default(),
            webhook_tolerance: Duration::from_secs(300),
            worker: None, // started per phase, after the queue is loaded
            admin_token: None,
            public_url: "http://127.0.0.1:8080".into(),
            publishable_keys: Default::default(),
            public_rate_limit: None,
            trusted_proxies: Vec::new(),
            default_currency: kassa_stripe::money::Currency::usd(),
            settings_reload: None,
            master_key: None,
        };
        let stack = Stack::start(config).await?;
        stack
            .broker
            .wait_ready(Duration::from_secs(15))
            .await
            .context("RabbitMQ at KASSA_AMQP_URL")?;
        Ok(Rig {
            stack,
            topology,
            database,
        })
    }

    pub fn sim(&self) -> &Simulator {
        self.stack.sim.as_ref().expect("embedded simulator")
    }

    /// A client of the embedded simulator, paced at `pace` when given.
    pub fn client(&self, pace: Option<Pace>) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(SecretString::from("sk_test_kassa_bench".to_owned()));
        config.api_base = self.sim().base_url();
        config.max_requests_per_second = pace.map(|p| p.global);
        config.max_requests_per_second_per_endpoint = pace.map(|p| p.endpoint);
        Ok(Client::new(config)?)
    }

    /// Creates and completes `n` setup sessions; returns when their webhooks are all accepted.
    pub async fn load(&self, n: usize, tag: &str) -> anyhow::Result<Vec<String>> {
        let client = Arc::new(self.client(None)?);
        // 64 creates in flight: unbounded, 10 000 sessions would open 10 000 sockets at once.
        let ids = futures_util::stream::iter((0..n).map(|i| {
            let client = client.clone();
            let tag = tag.to_owned();
            async move {
                let params = CreateCheckoutSession {
                    mode: CheckoutMode::Setup,
                    currency: Some("usd".into()),
                    customer_email: Some(format!("bench-{tag}-{i}@example.com")),
                    success_url: Some("http://127.0.0.1/success".into()),
                    ..Default::default()
                };
                let key = IdempotencyKey::new(format!("bench:{tag}:{i}"))?;
                anyhow::Ok(client.checkout_sessions().create(&params, &key).await?.id)
            }
        }))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            self.sim()
                .complete_checkout_session(id, "pm_card_visa")
                .map_err(|e| anyhow::anyhow!("completing {id}: {e}"))?;
        }
        Ok(ids)
    }

    /// Sessions of this rig's database with a saved card: one scan, no parameters. The rig's
    /// database holds only its own phase's sessions, so this reaches `ids.len()` exactly when
    /// [`Rig::fulfilled`] would, at a fraction of the cost (that one binds every id, 10 000 of
    /// them at 10 000 sessions).
    async fn cards_saved(&self) -> anyhow::Result<usize> {
        let store = self.stack.store.as_ref().context("database")?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM checkout_sessions WHERE payment_method_id IS NOT NULL",
        )
        .fetch_one(store.pool())
        .await?;
        Ok(count as usize)
    }

    pub async fn fulfilled(&self, ids: &[String]) -> anyhow::Result<usize> {
        let store = self.stack.store.as_ref().context("database")?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM checkout_sessions WHERE id = ANY($1) AND payment_method_id IS NOT NULL")
            .bind(ids)
            .fetch_one(store.pool())
            .await?;
        Ok(count as usize)
    }

    pub async fn queue_empty(&self) -> bool {
        let Ok(channel) = self.stack.broker.open_channel().await else {
            return false;
        };
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(
                self.topology.fulfillment_queue().as_str().into(),
                options,
                Default::default(),
            )
            .await;
        let _ = channel.close(200, "checked".into()).await;
        declared.is_ok_and(|q| q.message_count() == 0)
    }

    /// Runs a worker until every session is fulfilled and the queue is drained.
    pub async fn drain(
        &self,
        worker_client: Client,
        ids: &[String],
        concurrency: usize,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let store = self.stack.store.clone().context("database")?;
        let shutdown = CancellationToken::new();
        let worker = Worker::new(
            worker_client,
            store,
            self.stack.broker.clone(),
            WorkerConfig {
                prefetch: (concurrency * 2) as u16,
                concurrency,
                ..WorkerConfig::default()
            },
        );
        let started = Instant::now();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        // The poll is the benchmark's own load on PostgreSQL, in the timed phase: a cheap count
        // every 50 ms (at most 50 ms added to a phase of seconds), and the exact check by id
        // only once it says done.
        loop {
            if self.cards_saved().await? >= ids.len()
                && self.fulfilled(ids).await? == ids.len()
                && self.queue_empty().await
            {
                break;
            }
            if started.elapsed() > deadline {
                shutdown.cancel();
                bail!(
                    "not done within {deadline:?}: {} of {} sessions fulfilled",
                    self.fulfilled(ids).await?,
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed();
        shutdown.cancel();
        let _ = running.await;
        Ok(elapsed)
    }

    pub async fn stop(self) {
        let amqp_url = self.stack.broker.config().url.clone();
        self.stack.stop().await;
        let _ = self.topology.delete_at(&amqp_url).await;
        self.database.drop().await;
    }
}

/// Waits until the simulator's `checkout.session.completed` webhooks for `sessions` sessions
/// have all been accepted.
pub async fn wait_for_webhooks(sim: &Simulator, sessions: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let accepted = sim
            .webhook_deliveries()
            .iter()
            .filter(|d| d.event_type == "checkout.session.completed" && d.status == Some(200))
            .count();
        if accepted >= sessions {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {accepted} of {sessions} checkout.session.completed webhooks accepted");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
