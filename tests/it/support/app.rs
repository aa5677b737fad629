//! [`TestApp`]: the whole Kassa stack in-process — embedded Stripe simulator, a fresh database,
//! a fresh topology (short retry ladder), ingress and worker — torn down after the test.

use super::pg_proxy::PgCutProxy;
use super::sim::{self, LIVE_API_KEY, LIVE_PUBLISHABLE_KEY, TEST_API_KEY, TEST_PUBLISHABLE_KEY};
use super::{binary, init_test_logging, services};
use kassa::stack::{Stack, StackConfig, StripeKeys, StripeTarget, WebhookSecrets};
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

/// What to start (see [`TestAppBuilder`]).
struct AppOptions {
    /// Run the HTTP ingress and have the simulator deliver webhooks to it.
    ingress: bool,
    /// Run the worker in-process.
    worker: bool,
    /// Faults the simulator starts with.
    faults: Faults,
    /// The simulator's webhook retries: first delay (doubling) and attempts.
    webhook_retries: (Duration, u32),
    /// `KASSA_SMTP_URL` for the worker's mailer.
    smtp_url: Option<String>,
    /// `KASSA_ADMIN_TOKEN`: mount the back-office API.
    admin_token: Option<&'static str>,
    /// `KASSA_NOTIFY_EMAIL`: the merchant's address for payment notifications.
    notify_email: Option<&'static str>,
    /// Poll `/v1/events` for missed webhooks (off by default in tests).
    events_poller: Option<kassa_worker::poller::PollerConfig>,
    /// A simulator shared with other apps (another installation on the same Stripe account),
    /// signing webhooks with `DEFAULT_WEBHOOK_SECRET`; `None`: an embedded one of its own.
    shared_sim: Option<Arc<Simulator>>,
    /// The Stripe client's per-endpoint pace (`KASSA_STRIPE_ENDPOINT_RPS`); unpaced by default.
    stripe_endpoint_rps: Option<std::num::NonZeroU32>,
    /// The merchant pages' limit per client address.
    public_rate_limit: kassa_api::PublicRateLimit,
    /// The stack reaches PostgreSQL through this proxy (the test's own reads go direct).
    database_proxy: Option<Arc<PgCutProxy>>,
    /// `KASSA_MASTER_KEY`: `/api/settings` seals and opens with it.
    master_key: Option<&'static str>,
    /// `KASSA_DEFAULT_CURRENCY`.
    default_currency: &'static str,
    /// `KASSA_SMTP_CONNECTIONS`: named SMTP connections.
    smtp_connections: Vec<(&'static str, String)>,
    /// Both modes: a simulator of the app's own, a test and a live key (test the default), each
    /// mode's webhooks signed with its own endpoint's secret.
    two_modes: bool,
    /// `KASSA_DEFAULT_MODE` with [`AppOptions::two_modes`] (test when not set).
    default_mode: Option<kassa_stripe::Mode>,
    /// With [`AppOptions::two_modes`]: the live key only (no test key, secrets or publishable key).
    live_only: bool,
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
            stripe_endpoint_rps: None,
            // Far above what a test sends from its one address, so only a test that sets its
            // own limit meets it.
            public_rate_limit: kassa_api::PublicRateLimit {
                per_second: std::num::NonZeroU32::new(1000).unwrap(),
                burst: std::num::NonZeroU32::new(1000).unwrap(),
            },
            database_proxy: None,
            master_key: None,
            default_currency: "usd",
            smtp_connections: Vec::new(),
            two_modes: false,
            default_mode: None,
            live_only: false,
        }
    }
}

/// How to build a [`TestApp`]: by default the ingress (the simulator delivers webhooks to it)
/// and the worker, on an embedded simulator without faults, no APIs, no mail.
#[must_use]
pub struct TestAppBuilder {
    options: AppOptions,
}

impl TestAppBuilder {
    /// No HTTP ingress: the simulator's webhooks go nowhere (a test hands events over itself).
    pub fn without_ingress(mut self) -> Self {
        self.options.ingress = false;
        self
    }

    /// No worker in-process (a test runs `kassa worker` itself, or nothing consumes).
    pub fn without_worker(mut self) -> Self {
        self.options.worker = false;
        self
    }

    /// The simulator starts with these faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.options.faults = faults;
        self
    }

    /// The simulator drops every webhook on the way (only what a test hands over, or what the
    /// events poller finds, reaches the worker).
    pub fn dropping_webhooks(self) -> Self {
        self.faults(Faults {
            drop_webhook_rate: 1.0,
            ..Faults::default()
        })
    }

    /// The simulator re-sends a refused webhook after `first` (doubling), `attempts` times in all.
    #[allow(dead_code)] // tests/broker_restart.rs
    pub fn webhook_retries(mut self, first: Duration, attempts: u32) -> Self {
        self.options.webhook_retries = (first, attempts);
        self
    }

    /// The simulator delivers every webhook twice (Stripe delivers at least once).
    pub fn duplicating_webhooks(self) -> Self {
        self.faults(Faults {
            duplicate_webhooks: true,
            ..Faults::default()
        })
    }

    /// The worker e-mails through this SMTP server (`KASSA_SMTP_URL`).
    pub fn smtp(mut self, url: String) -> Self {
        self.options.smtp_url = Some(url);
        self
    }

    /// Mounts the back-office, checkout and connector APIs with this token (`KASSA_ADMIN_TOKEN`).
    pub fn admin_token(mut self, token: &'static str) -> Self {
        self.options.admin_token = Some(token);
        self
    }

    /// A named SMTP connection (`KASSA_SMTP_CONNECTIONS`), e.g. for a confirmation's
    /// `mail_connection`.
    pub fn smtp_connection(mut self, name: &'static str, url: String) -> Self {
        self.options.smtp_connections.push((name, url));
        self
    }

    /// The currency of an API request that names none (`KASSA_DEFAULT_CURRENCY`).
    pub fn default_currency(mut self, code: &'static str) -> Self {
        self.options.default_currency = code;
        self
    }

    /// Seals and opens stored settings with this master key (`KASSA_MASTER_KEY`).
    pub fn master_key(mut self, key: &'static str) -> Self {
        self.options.master_key = Some(key);
        self
    }

    /// The merchant's address for payment notifications (`KASSA_NOTIFY_EMAIL`).
    pub fn notify_email(mut self, address: &'static str) -> Self {
        self.options.notify_email = Some(address);
        self
    }

    /// The worker polls `/v1/events` for missed webhooks with this configuration.
    pub fn events_poller(mut self, poller: kassa_worker::poller::PollerConfig) -> Self {
        self.options.events_poller = Some(poller);
        self
    }

    /// Runs on `sim`, shared with other apps (another installation on the same Stripe account).
    pub fn shared_sim(mut self, sim: Arc<Simulator>) -> Self {
        self.options.shared_sim = Some(sim);
        self
    }

    /// Kassa's Stripe client sends at most `rps` requests a second to any one endpoint.
    pub fn stripe_endpoint_rps(mut self, rps: u32) -> Self {
        self.options.stripe_endpoint_rps = std::num::NonZeroU32::new(rps);
        self
    }

    /// The merchant pages take `burst` requests at once from one address, then `per_second`.
    pub fn public_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.options.public_rate_limit = kassa_api::PublicRateLimit {
            per_second: std::num::NonZeroU32::new(per_second).expect("per_second > 0"),
            burst: std::num::NonZeroU32::new(burst).expect("burst > 0"),
        };
        self
    }

    /// The stack's connections to PostgreSQL go through `proxy` (which can cut them).
    pub fn database_through(mut self, proxy: Arc<PgCutProxy>) -> Self {
        self.options.database_proxy = Some(proxy);
        self
    }

    /// Test and live side by side: a simulator of the app's own, [`TEST_API_KEY`] and
    /// [`LIVE_API_KEY`] (test is `KASSA_DEFAULT_MODE`), each mode's webhooks delivered to the
    /// ingress signed with that mode's endpoint secret.
    pub fn two_modes(mut self) -> Self {
        self.options.two_modes = true;
        self
    }

    /// A live-only deployment on a simulator of the app's own: [`LIVE_API_KEY`] and its
    /// publishable key and webhook secret, no test key.
    pub fn live_only(mut self) -> Self {
        self.options.two_modes = true;
        self.options.live_only = true;
        self.options.default_mode = Some(kassa_stripe::Mode::Live);
        self
    }

    /// With [`TestAppBuilder::two_modes`]: the mode a call that names none uses.
    pub fn default_mode(mut self, mode: kassa_stripe::Mode) -> Self {
        self.options.default_mode = Some(mode);
        self
    }

    /// Starts the app: a fresh database, a fresh topology (short retry ladder), the stack.
    pub async fn spawn(self) -> TestApp {
        TestApp::start(self.options).await
    }
}

/// The whole Kassa stack in-process on a database and topology of its own.
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
    /// The default app: ingress and worker on an embedded simulator.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// How to build an app other than the default.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            options: AppOptions::default(),
        }
    }

    async fn start(options: AppOptions) -> Self {
        init_test_logging();
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
        let shared_sim = match (&options.shared_sim, options.two_modes) {
            (Some(shared), _) => Some(shared.clone()),
            (None, true) => Some(Arc::new(
                Simulator::start(sim.clone())
                    .await
                    .expect("simulator starts"),
            )),
            (None, false) => None,
        };
        let secret = |s: &str| secrecy::SecretString::from(s.to_owned());
        let (stripe, webhook_secrets) = match &shared_sim {
            Some(shared) if options.two_modes => (
                StripeTarget::Api {
                    keys: StripeKeys {
                        test: (!options.live_only).then(|| secret(TEST_API_KEY)),
                        live: Some(secret(LIVE_API_KEY)),
                        default: Some(options.default_mode.unwrap_or(kassa_stripe::Mode::Test)),
                    },
                    api_base: shared.base_url(),
                },
                WebhookSecrets {
                    test: if options.live_only {
                        Vec::new()
                    } else {
                        vec![secret(kassa_stripe_sim::DEFAULT_WEBHOOK_SECRET)]
                    },
                    live: vec![secret(kassa_stripe_sim::DEFAULT_LIVE_WEBHOOK_SECRET)],
                },
            ),
            Some(shared) => (
                StripeTarget::Api {
                    keys: StripeKeys::single(secret(TEST_API_KEY)).expect("a test key"),
                    api_base: shared.base_url(),
                },
                WebhookSecrets::test(vec![secret(kassa_stripe_sim::DEFAULT_WEBHOOK_SECRET)]),
            ),
            None => (
                StripeTarget::Embedded(Box::new(sim)),
                WebhookSecrets::default(),
            ),
        };
        let config = StackConfig {
            listen: options.ingress.then(|| "127.0.0.1:0".parse().unwrap()),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            webhooks: true,
            broker,
            http: kassa_ingress::HttpLimits::default(),
            database_url: Some(match &options.database_proxy {
                Some(proxy) => proxy.database_url(&database_url),
                None => database_url.clone(),
            }),
            db_max_connections: 20,
            stripe: Some(stripe),
            stripe_max_rps: None,
            stripe_endpoint_rps: options.stripe_endpoint_rps,
            webhook_secrets,
            webhook_tolerance: Duration::from_secs(300),
            worker: options.worker.then(|| WorkerConfig {
                prefetch: 16,
                concurrency: 8,
                mail: kassa_worker::smtp::MailConnections::new(kassa_worker::smtp::ConnectionSet {
                    default: options.smtp_url.as_deref().map(|url| {
                        std::sync::Arc::new(
                            kassa_worker::smtp::Mailer::from_url(url).expect("SMTP URL"),
                        )
                    }),
                    named: options
                        .smtp_connections
                        .iter()
                        .map(|(name, url)| {
                            let mailer =
                                kassa_worker::smtp::Mailer::from_url(url).expect("SMTP URL");
                            ((*name).to_owned(), std::sync::Arc::new(mailer))
                        })
                        .collect(),
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
            publishable_keys: if options.two_modes {
                kassa_api::PublishableKeys {
                    test: (!options.live_only).then(|| TEST_PUBLISHABLE_KEY.to_owned()),
                    live: Some(LIVE_PUBLISHABLE_KEY.to_owned()),
                }
            } else {
                Default::default()
            },
            public_rate_limit: Some(options.public_rate_limit),
            trusted_proxies: Vec::new(),
            default_currency: kassa_stripe::money::Currency::parse(options.default_currency)
                .expect("a currency"),
            settings_reload: None,
            master_key: options.master_key.map(|key| {
                kassa_core::settings::MasterKey::parse(&secrecy::SecretString::from(key.to_owned()))
                    .expect("a master key")
            }),
        };
        let stack = Stack::start(config).await.expect("stack starts");
        stack
            .broker
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("broker ready");
        if let (Some(shared), Some(base)) = (&shared_sim, stack.base_url()) {
            shared.add_webhook_endpoint(format!("{base}/webhooks/stripe"));
            if options.two_modes {
                shared.add_webhook_endpoint_in(
                    kassa_stripe_sim::Mode::Live,
                    format!("{base}/webhooks/stripe"),
                );
            }
        }
        Self {
            shared_sim,
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

    /// A request to this app's own HTTP server (`path` from its root: `/api/charges`, `/success`).
    pub fn call(&self, method: reqwest::Method, path: &str) -> ApiCall {
        let base = self.stack.base_url().expect("the app serves HTTP");
        ApiCall {
            request: self.http.request(method, format!("{base}{path}")),
        }
    }

    /// `GET path` of this app's HTTP server (see [`TestApp::call`]).
    pub fn get(&self, path: &str) -> ApiCall {
        self.call(reqwest::Method::GET, path)
    }

    /// `POST path` of this app's HTTP server (see [`TestApp::call`]).
    pub fn post(&self, path: &str) -> ApiCall {
        self.call(reqwest::Method::POST, path)
    }

    /// Lets `seconds` pass on Stripe's side, through the simulator's `POST /_sim/clock/advance`.
    pub async fn advance_stripe_clock(&self, seconds: u32) -> Value {
        sim::advance_clock(&self.sim().base_url(), seconds).await
    }

    /// `kassa ARGS` against this app's database, queues and simulator (see [`binary::kassa`]).
    pub fn kassa_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = binary::kassa(args);
        command
            .env("KASSA_DATABASE_URL", &self.database_url)
            .env("KASSA_AMQP_URL", &self.amqp_url)
            .env("KASSA_AMQP_PREFIX", self.topology.prefix())
            .env("KASSA_STRIPE_API_KEY", TEST_API_KEY)
            .env("KASSA_STRIPE_API_BASE", self.sim().base_url());
        command
    }

    /// Runs `kassa ARGS` against this app (see [`TestApp::kassa_command`]) to its end; returns
    /// its exit status, stdout and stderr.
    pub async fn kassa(&self, args: &[&str]) -> std::process::Output {
        binary::run(self.kassa_command(args)).await
    }

    pub fn stripe(&self) -> &kassa_stripe::Client {
        self.stack.stripe.as_ref().unwrap()
    }

    /// A customer of `mode` on the simulator with a default card, made with that mode's key
    /// (Kassa has not recorded them): the customer and the card as Stripe answered.
    pub async fn customer_with_card(
        &self,
        mode: kassa_stripe::Mode,
    ) -> (
        kassa_stripe::objects::Customer,
        kassa_stripe::objects::PaymentMethod,
    ) {
        let stripe = self.stripe_in(mode);
        let params = kassa_stripe::resources::CustomerParams {
            email: Some(format!(
                "{mode}-{}@example.com",
                uuid::Uuid::new_v4().simple()
            )),
            ..Default::default()
        };
        let customer = stripe
            .customers()
            .create(&params, &super::key("customer"))
            .await
            .unwrap();
        let card = stripe
            .payment_methods()
            .attach(sim::card_of(mode), &customer.id, &super::key("attach"))
            .await
            .unwrap();
        stripe
            .customers()
            .set_default_payment_method(&customer.id, &card.id, &super::key("default"))
            .await
            .unwrap();
        (customer, card)
    }

    /// The app's Stripe client of `mode`.
    pub fn stripe_in(&self, mode: kassa_stripe::Mode) -> &kassa_stripe::Client {
        self.stack
            .modes
            .as_ref()
            .unwrap()
            .client(mode)
            .expect("the mode is configured")
    }

    pub fn store(&self) -> &Store {
        self.stack.store.as_ref().unwrap()
    }

    /// Creates an open setup-mode Checkout Session, as a merchant's page would.
    pub async fn create_setup_session(&self, email: &str) -> String {
        self.create_setup_session_with(self.stripe(), email).await
    }

    /// Creates an open setup-mode Checkout Session with `stripe` (of the session's mode).
    pub async fn create_setup_session_with(
        &self,
        stripe: &kassa_stripe::Client,
        email: &str,
    ) -> String {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            currency: Some("usd".into()),
            customer_email: Some(email.into()),
            success_url: Some("http://127.0.0.1/success?session_id={CHECKOUT_SESSION_ID}".into()),
            cancel_url: Some("http://127.0.0.1/cancel".into()),
            ..Default::default()
        };
        let key = IdempotencyKey::new(format!("test:{}", uuid::Uuid::new_v4())).unwrap();
        stripe
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
    pub async fn sim_get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        sim::get(&self.sim().base_url(), path, query).await
    }

    /// Stripe's own record of the events of `kind`, newest first, as raw JSON.
    pub async fn stripe_events(&self, kind: &str) -> Vec<Value> {
        sim::list(&self.sim().base_url(), "/v1/events", &[("type", kind)]).await
    }

    /// The id of `customer`'s default card, as Stripe has it.
    pub async fn default_card(&self, customer: &str) -> String {
        self.stripe()
            .customers()
            .retrieve(customer, &[])
            .await
            .unwrap()
            .invoice_settings
            .default_payment_method
            .expect("the customer has a default card")
            .id()
            .to_owned()
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
        self.kassa_command(&["worker"])
            .env("KASSA_STRIPE_API_KEY", "sk_test_kassa_worker_process")
            .env("KASSA_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
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

/// A request to a [`TestApp`]'s HTTP API being put together; `send` gives the status and body.
#[must_use]
pub struct ApiCall {
    request: reqwest::RequestBuilder,
}

impl ApiCall {
    /// `Authorization: Bearer {token}`, when there is one.
    pub fn token(mut self, token: Option<&str>) -> Self {
        if let Some(token) = token {
            self.request = self.request.bearer_auth(token);
        }
        self
    }

    /// The `Idempotency-Key` header, when there is one.
    pub fn idempotency_key(mut self, key: Option<&str>) -> Self {
        if let Some(key) = key {
            self.request = self.request.header("Idempotency-Key", key);
        }
        self
    }

    /// A JSON body.
    pub fn json(mut self, body: &Value) -> Self {
        self.request = self.request.json(body);
        self
    }

    /// Sends it: the status and the JSON body (`null` when the body is not JSON).
    pub async fn send(self) -> (u16, Value) {
        let response = self.request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
