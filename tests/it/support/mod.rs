//! Helpers shared by the integration tests.

pub mod app;
pub mod proxy;
pub mod services;
pub mod smtp_sink;

use kassa_broker::{Broker, BrokerConfig, Topology};
use kassa_ingress::IngressState;
use kassa_stripe::webhook::{sign, WebhookVerifier};
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The secret test ingresses accept unless told otherwise.
pub const SECRET: &str = "whsec_test_secret_kassa";

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unix time now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Stripe-shaped event body with this id and type.
pub fn event_body(id: &str, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "object": "event",
        "api_version": "2025-12-15.clover",
        "created": now(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
        "data": {"object": {"id": "cs_test_a1", "object": "checkout.session", "mode": "setup"}}
    }))
    .unwrap()
}

/// A unique `evt_…` id.
pub fn event_id() -> String {
    format!("evt_test_{}", uuid::Uuid::new_v4().simple())
}

/// An in-process ingress on 127.0.0.1:0 with its own topology, plus a side connection for
/// inspecting queues.
pub struct TestIngress {
    pub base_url: String,
    pub http: reqwest::Client,
    pub topology: Topology,
    pub inspector: Channel,
    inspector_connection: Connection,
    shutdown: CancellationToken,
}

/// How to build a [`TestIngress`].
pub struct IngressOptions {
    pub secrets: Vec<&'static str>,
    /// Broker URL the ingress uses (e.g. through a proxy); the inspector always uses the real one.
    pub amqp_url: Option<String>,
    pub confirm_timeout: Duration,
    /// The HTTP server's limits.
    pub http: kassa_ingress::HttpLimits,
}

impl Default for IngressOptions {
    fn default() -> Self {
        Self {
            secrets: vec![SECRET],
            amqp_url: None,
            confirm_timeout: Duration::from_secs(5),
            http: kassa_ingress::HttpLimits::default(),
        }
    }
}

impl TestIngress {
    pub async fn spawn() -> Self {
        Self::spawn_with(IngressOptions::default()).await
    }

    pub async fn spawn_with(options: IngressOptions) -> Self {
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

        let inspector_connection = Connection::connect(&real_url, ConnectionProperties::default())
            .await
            .expect("inspector connection");
        let inspector = inspector_connection.create_channel().await.unwrap();
        Self {
            base_url,
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
