//! [`TestIngress`]: the webhook ingress alone, in-process, with a topology of its own and a
//! side connection for looking into its queues.

use super::{init_test_logging, now, services, SECRET};
use kassa_broker::{Broker, BrokerConfig, Topology};
use kassa_ingress::IngressState;
use kassa_stripe::webhook::{sign, WebhookVerifier};
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::SecretString;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An in-process ingress on 127.0.0.1:0 with its own topology, plus a side connection for
/// inspecting queues.
pub struct TestIngress {
    pub base_url: String,
    /// `http://{metrics listener}/metrics`, served apart from the webhooks as in a process.
    pub metrics_url: String,
    pub http: reqwest::Client,
    pub topology: Topology,
    pub inspector: Channel,
    inspector_connection: Connection,
    shutdown: CancellationToken,
}

/// What to start (see [`TestIngressBuilder`]).
struct IngressOptions {
    secrets: Vec<&'static str>,
    /// Broker URL the ingress uses (e.g. through a proxy); the inspector always uses the real one.
    amqp_url: Option<String>,
    confirm_timeout: Duration,
    /// The HTTP server's limits.
    http: kassa_ingress::HttpLimits,
}

/// How to build a [`TestIngress`]: by default it accepts [`SECRET`], on the real broker, and
/// waits 5 s for a publisher confirm.
#[must_use]
pub struct TestIngressBuilder {
    options: IngressOptions,
}

impl TestIngressBuilder {
    /// The webhook signing secrets it accepts.
    pub fn secrets(mut self, secrets: &[&'static str]) -> Self {
        self.options.secrets = secrets.to_vec();
        self
    }

    /// Reaches RabbitMQ at `amqp_url` (a proxy a test can cut), not the real broker.
    pub fn broker_url(mut self, amqp_url: String) -> Self {
        self.options.amqp_url = Some(amqp_url);
        self
    }

    /// How long a publish waits for RabbitMQ's confirm before the webhook is answered 503.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.options.confirm_timeout = timeout;
        self
    }

    /// Serves with these HTTP limits instead of the defaults.
    #[allow(dead_code)] // tests/slow_clients.rs
    pub fn http_limits(mut self, limits: kassa_ingress::HttpLimits) -> Self {
        self.options.http = limits;
        self
    }

    /// Starts it.
    pub async fn spawn(self) -> TestIngress {
        TestIngress::start(self.options).await
    }
}

impl TestIngress {
    /// The default ingress.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// How to build an ingress other than the default.
    pub fn builder() -> TestIngressBuilder {
        TestIngressBuilder {
            options: IngressOptions {
                secrets: vec![SECRET],
                amqp_url: None,
                confirm_timeout: Duration::from_secs(5),
                http: kassa_ingress::HttpLimits::default(),
            },
        }
    }

    async fn start(options: IngressOptions) -> Self {
        init_test_logging();
        let real_url = services::amqp_url().await;
        let topology = Topology::unique();
        let shutdown = CancellationToken::new();
        let mut config = BrokerConfig::new(options.amqp_url.unwrap_or_else(|| real_url.clone()));
        config.topology = topology.clone();
        config.confirm_timeout = options.confirm_timeout;
        config.reconnect_backoff = (Duration::from_millis(50), Duration::from_millis(500));
        config.connect_timeout = Duration::from_secs(2);
        let broker = Broker::start(config, shutdown.clone());
        broker
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("broker ready");

        let secrets = options
            .secrets
            .iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect();
        let state = IngressState::new(WebhookVerifier::new(secrets), broker);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let router = kassa_ingress::router(state);
        tokio::spawn(kassa_ingress::serve(
            listener,
            router,
            options.http,
            shutdown.clone().cancelled_owned(),
        ));
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_url = format!("http://{}/metrics", metrics_listener.local_addr().unwrap());
        tokio::spawn(kassa_ingress::serve(
            metrics_listener,
            kassa_ingress::health::metrics_router(),
            options.http,
            shutdown.clone().cancelled_owned(),
        ));

        let inspector_connection = Connection::connect(&real_url, ConnectionProperties::default())
            .await
            .expect("inspector connection");
        let inspector = inspector_connection.create_channel().await.unwrap();
        Self {
            base_url,
            metrics_url,
            http: reqwest::Client::new(),
            topology,
            inspector,
            inspector_connection,
            shutdown,
        }
    }

    /// POSTs `body` to /webhooks/stripe with `signature` as the Stripe-Signature header.
    pub async fn post_webhook(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(format!("{}/webhooks/stripe", self.base_url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let response = request.send().await.expect("webhook request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Signs `body` with the default secret now and POSTs it.
    pub async fn post_signed(&self, body: Vec<u8>) -> (u16, serde_json::Value) {
        let signature = sign(SECRET, now(), &body);
        self.post_webhook(body, Some(signature)).await
    }

    /// Takes (and acks) every message now in the fulfillment queue.
    pub async fn drain_fulfillment(&self) -> Vec<lapin::message::BasicGetMessage> {
        let mut messages = Vec::new();
        let queue = self.topology.fulfillment_queue();
        while let Some(message) = self
            .inspector
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
            messages.push(message);
        }
        messages
    }

    /// Takes (and acks) every message now in the fulfillment queue; their AMQP message ids.
    pub async fn drain_message_ids(&self) -> Vec<String> {
        let messages = self.drain_fulfillment().await;
        messages
            .iter()
            .map(|m| {
                let id = m.delivery.properties.message_id().clone();
                id.expect("every message has its event id").to_string()
            })
            .collect()
    }

    /// Stops the ingress and deletes this test's exchanges and queues.
    pub async fn cleanup(self) {
        self.shutdown.cancel();
        for queue in self.topology.queues() {
            let _ = self
                .inspector
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in self.topology.exchanges() {
            let _ = self
                .inspector
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self
            .inspector_connection
            .close(200, "test done".into())
            .await;
    }
}
