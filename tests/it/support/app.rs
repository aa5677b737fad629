//! `TestApp`: the whole Kassa stack in-process — embedded Stripe simulator, a fresh database,
//! a fresh topology (short retry ladder), ingress and worker — torn down after the test.

use super::services;
use kassa::stack::{Stack, StackConfig, StripeTarget};
use kassa_broker::{BrokerConfig, OutgoingMessage, RetryRung, Topology};
use kassa_store::Store;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::CreateCheckoutSession;
use kassa_stripe::IdempotencyKey;
use kassa_stripe_sim::{Faults, SimConfig, Simulator};
use kassa_worker::WorkerConfig;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The API key tests use against a simulator (any `sk_test_` key works there).
pub const TEST_API_KEY: &str = "sk_test_kassa_tests";

/// What to start.
pub struct AppOptions {
    /// Run the HTTP ingress and have the simulator deliver webhooks to it.
    pub ingress: bool,
    /// Run the worker in-process.
    pub worker: bool,
    /// Faults the simulator starts with.
    pub faults: Faults,
    /// The simulator's webhook retries: first delay (doubling) and attempts.
    pub webhook_retries: (Duration, u32),
    /// `KASSA_SMTP_URL` for the worker's mailer.
    pub smtp_url: Option<String>,
    /// `KASSA_ADMIN_TOKEN`: mount the back-office API.
    pub admin_token: Option<&'static str>,
    /// `KASSA_NOTIFY_EMAIL`: the merchant's address for payment notifications.
    pub notify_email: Option<&'static str>,
    /// Poll `/v1/events` for missed webhooks (off by default in tests).
    pub events_poller: Option<kassa_worker::poller::PollerConfig>,
    /// A simulator shared with other apps (another installation on the same Stripe account),
    /// signing webhooks with `DEFAULT_WEBHOOK_SECRET`; `None`: an embedded one of its own.
    pub shared_sim: Option<Arc<Simulator>>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            ingress: true,
            worker: true,
            faults: Faults::default(),
            webhook_retries: (Duration::from_millis(50), 4),
            smtp_url: None,
            admin_token: None,
            notify_email: None,
            events_poller: None,
            shared_sim: None,
        }
    }
}

pub struct TestApp {
    pub stack: Stack,
    /// The shared simulator, when the app runs on one (else `stack.sim`).
    pub shared_sim: Option<Arc<Simulator>>,
    pub topology: Topology,
    pub database_url: String,
    pub amqp_url: String,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(AppOptions::default()).await
    }

    pub async fn spawn_with(options: AppOptions) -> Self {
        let amqp_url = services::amqp_url().await;
        let database_url = services::fresh_database_url().await;
        let topology = Topology::unique().with_retry_ladder(vec![
            RetryRung {
                suffix: "1s".into(),
                delay: Duration::from_secs(1),
            },
            RetryRung {
                suffix: "2s".into(),
                delay: Duration::from_secs(2),
            },
        ]);
        let mut broker = BrokerConfig::new(amqp_url.clone());
        broker.topology = topology.clone();
        broker.reconnect_backoff = (Duration::from_millis(50), Duration::from_millis(500));
        let sim = SimConfig {
            faults: options.faults,
            webhook_retry_base: options.webhook_retries.0,
            webhook_max_attempts: options.webhook_retries.1,
            ..SimConfig::default()
        };
        let (stripe, webhook_secrets) = match &options.shared_sim {
            Some(shared) => (
                StripeTarget::Api {
                    key: secrecy::SecretString::from(TEST_API_KEY.to_owned()),
                    api_base: shared.base_url(),
                },
                vec![secrecy::SecretString::from(
                    kassa_stripe_sim::DEFAULT_WEBHOOK_SECRET.to_owned(),
                )],
            ),
            None => (StripeTarget::Embedded(Box::new(sim)), Vec::new()),
        };
        let config = StackConfig {
            listen: options.ingress.then(|| "127.0.0.1:0".parse().unwrap()),
            webhooks: true,
            broker,
            http: kassa_ingress::HttpLimits::default(),
            database_url: Some(database_url.clone()),
            db_max_connections: 20,
            stripe: Some(stripe),
            stripe_max_rps: None,
            webhook_secrets,
            webhook_tolerance: Duration::from_secs(300),
            worker: options.worker.then(|| WorkerConfig {
                prefetch: 16,
                concurrency: 8,
                mailer: options.smtp_url.as_deref().map(|url| {
                    std::sync::Arc::new(
                        kassa_worker::smtp::Mailer::from_url(url).expect("SMTP URL"),
                    )
                }),
                events_poller: options.events_poller.clone(),
                notify_email: options.notify_email.map(str::to_owned),
                ..WorkerConfig::default()
            }),
            admin_token: options
                .admin_token
                .map(|t| secrecy::SecretString::from(t.to_owned())),
            // Empty: the merchant pages' own bound address.
            public_url: String::new(),
            publishable_key: None,
        };
        let stack = Stack::start(config).await.expect("stack starts");
        stack
            .broker
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("broker ready");
        if let (Some(shared), Some(base)) = (&options.shared_sim, stack.base_url()) {
            shared.add_webhook_endpoint(format!("{base}/webhooks/stripe"));
        }
        Self {
            shared_sim: options.shared_sim.clone(),
            stack,
            topology,
            database_url,
            amqp_url,
            http: reqwest::Client::new(),
        }
    }

    pub fn sim(&self) -> &Simulator {
        self.shared_sim
            .as_deref()
            .or(self.stack.sim.as_ref())
            .unwrap()
    }

    /// Lets `seconds` pass on Stripe's side, through the simulator's `POST /_sim/clock/advance`.
    pub async fn advance_stripe_clock(&self, seconds: u32) -> Value {
        let answer = self
            .http
            .post(format!("{}/_sim/clock/advance", self.sim().base_url()))
            .json(&serde_json::json!({ "seconds": seconds }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json().await.unwrap()
    }

    /// Runs the `kassa` binary with `args` against this app's database, queues and simulator;
    /// returns its exit status, stdout and stderr.
    pub async fn kassa(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
            .args(args)
            .env("KASSA_DATABASE_URL", &self.database_url)
            .env("KASSA_AMQP_URL", &self.amqp_url)
            .env("KASSA_AMQP_PREFIX", self.topology.prefix())
            .env("KASSA_STRIPE_API_KEY", TEST_API_KEY)
            .env("KASSA_STRIPE_API_BASE", self.sim().base_url())
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .kill_on_drop(true)
            .output()
            .await
            .expect("the kassa binary runs")
    }

    pub fn stripe(&self) -> &kassa_stripe::Client {
        self.stack.stripe.as_ref().unwrap()
    }

    pub fn store(&self) -> &Store {
        self.stack.store.as_ref().unwrap()
    }

    /// Creates an open setup-mode Checkout Session, as a merchant's page would.
    pub async fn create_setup_session(&self, email: &str) -> String {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            currency: Some("usd".into()),
            customer_email: Some(email.into()),
            success_url: Some("http://127.0.0.1/success?session_id={CHECKOUT_SESSION_ID}".into()),
            cancel_url: Some("http://127.0.0.1/cancel".into()),
            ..Default::default()
        };
        let key = IdempotencyKey::new(format!("test:{}", uuid::Uuid::new_v4())).unwrap();
        self.stripe()
            .checkout_sessions()
            .create(&params, &key)
            .await
            .expect("session created")
            .id
    }

    /// The customer completes the session with a test card.
    pub fn complete(&self, session_id: &str, payment_method: &str) {
        self.sim()
            .complete_checkout_session(session_id, payment_method)
            .expect("session completed");
    }

    /// `GET` of a simulator `/v1` path with query parameters, as raw JSON.
    pub async fn sim_get(&self, path: &str, query: &[(&str, String)]) -> Value {
        self.http
            .get(format!("{}{path}", self.sim().base_url()))
            .query(query)
            .bearer_auth("sk_test_kassa_tests")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Stripe's own record of the events of `kind`, newest first, as raw JSON.
    pub async fn stripe_events(&self, kind: &str) -> Vec<Value> {
        let list: Value = self
            .http
            .get(format!("{}/v1/events", self.sim().base_url()))
            .query(&[("type", kind), ("limit", "100")])
            .bearer_auth("sk_test_kassa_tests")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["data"].as_array().cloned().unwrap_or_default()
    }

    /// Publishes a raw event straight to `kassa.events`, as the ingress would.
    pub async fn publish_event(&self, event: &Value) {
        let body = serde_json::to_vec(event).unwrap();
        let kind = event["type"].as_str().unwrap();
        self.stack
            .broker
            .publisher()
            .publish(OutgoingMessage {
                exchange: &self.topology.events_exchange(),
                routing_key: kind,
                body: &body,
                message_id: event["id"].as_str().unwrap(),
                kind,
                headers: None,
            })
            .await
            .expect("published");
    }

    /// Binds a queue of the test's own to `exchange` (routing key `#`), as a merchant's consumer
    /// would; it expires a minute after the test stops using it. Returns the queue's name.
    pub async fn tap(&self, exchange: &str) -> String {
        let channel = self.stack.broker.open_channel().await.unwrap();
        let mut args = lapin::types::FieldTable::default();
        args.insert(
            "x-expires".into(),
            lapin::types::AMQPValue::LongLongInt(60_000),
        );
        let queue = self.tap_queue(exchange);
        channel
            .queue_declare(queue.as_str().into(), Default::default(), args)
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                "#".into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        queue
    }

    /// The name of [`TestApp::tap`]'s queue for `exchange`.
    pub fn tap_queue(&self, exchange: &str) -> String {
        format!("{}test.tap.{exchange}", self.topology.prefix())
    }

    /// Takes every message now in a [`TestApp::tap`] queue: (routing key, message_id, body).
    pub async fn take_tapped(&self, queue: &str) -> Vec<(String, String, Value)> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let channel = self.stack.broker.open_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            let id = m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            out.push((
                m.delivery.routing_key.to_string(),
                id,
                serde_json::from_slice(&m.delivery.data).unwrap(),
            ));
        }
        out
    }

    /// Waits until the inbox says `event_id` was processed.
    pub async fn processed(&self, event_id: &str) -> kassa_store::StoredEvent {
        super::eventually(
            Duration::from_secs(20),
            &format!("{event_id} to be processed"),
            || async {
                self.store()
                    .event(event_id)
                    .await
                    .unwrap()
                    .filter(|e| e.processed_at.is_some())
            },
        )
        .await
    }

    /// Waits until the dead-letter queue holds at least one message, and returns them.
    pub async fn dead_letters(&self) -> Vec<kassa_broker::dlq::DeadLetter> {
        super::eventually(Duration::from_secs(20), "a dead letter", || async {
            let letters = kassa_broker::dlq::list(&self.stack.broker, 10)
                .await
                .unwrap();
            (!letters.is_empty()).then_some(letters)
        })
        .await
    }

    /// Waits until `queue` has no ready message left.
    pub async fn drained(&self, queue: &str) {
        super::eventually(
            Duration::from_secs(10),
            &format!("{queue} to drain"),
            || async {
                let channel = self.stack.broker.open_channel().await.ok()?;
                let passive = lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let declared = channel
                    .queue_declare(queue.into(), passive, Default::default())
                    .await
                    .ok()?;
                (declared.message_count() == 0).then_some(())
            },
        )
        .await
    }

    /// Simulator requests matching method and path suffix.
    pub fn calls(
        &self,
        method: &str,
        path_contains: &str,
    ) -> Vec<kassa_stripe_sim::RecordedRequest> {
        self.sim()
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .collect()
    }

    /// Starts `kassa worker` as a separate process against this app's simulator, database and
    /// queues — so a test can SIGKILL it like a crash.
    pub fn spawn_worker_process(&self) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
            .arg("worker")
            .env("KASSA_AMQP_URL", &self.amqp_url)
            .env("KASSA_AMQP_PREFIX", self.topology.prefix())
            .env("KASSA_DATABASE_URL", &self.database_url)
            .env("KASSA_STRIPE_API_KEY", "sk_test_kassa_worker_process")
            .env("KASSA_STRIPE_API_BASE", self.sim().base_url())
            .env("KASSA_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kassa worker starts")
    }

    pub async fn cleanup(self) {
        self.stack.stop().await;
        let _ = self.topology.delete_at(&self.amqp_url).await;
        // A `kassa worker` process declares the default ladder under the same prefix.
        let _ = Topology::new(self.topology.prefix())
            .delete_at(&self.amqp_url)
            .await;
        services::drop_database(&self.database_url).await;
    }
}
