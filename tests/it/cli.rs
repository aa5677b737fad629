//! The `kassa` binary itself: the README's first command starts, serves, and stops cleanly.

use crate::support::binary::{free_port, kassa, KassaProcess};
use crate::support::{event_body, event_id, now, services};
use kassa_broker::Topology;
use std::time::Duration;

#[tokio::test]
async fn kassa_ingress_accepts_a_webhook_and_exits_0_on_sigterm() {
    let topology = Topology::unique();
    let secret = "whsec_cli_test_secret";
    let process = start(
        "ingress",
        &[
            ("KASSA_AMQP_URL", services::amqp_url().await),
            ("KASSA_AMQP_PREFIX", topology.prefix().to_owned()),
            ("KASSA_STRIPE_WEBHOOK_SECRETS", secret.to_owned()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let base = process.base.clone();

    let body = event_body(&event_id(), "checkout.session.completed");
    let signature = kassa_stripe::webhook::sign(secret, now(), &body);
    let response = http
        .post(format!("{base}/webhooks/stripe"))
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let logs = stop(process).await;
    assert!(logs.contains("kassa ingress listening"), "{logs}");
    assert!(
        logs.contains("KASSA_STRIPE_WEBHOOK_SECRETS"),
        "the secret source is named: {logs}"
    );
    assert!(
        !logs.contains(secret),
        "the secret itself is never logged: {logs}"
    );
    assert!(logs.contains("event accepted"), "{logs}");

    // Clean up this test's topology.
    let connection = lapin::Connection::connect(&services::amqp_url().await, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for queue in topology.queues() {
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    for exchange in topology.exchanges() {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
}

/// `kassa SUBCOMMAND` on a free port with `envs`, logging at `info`, ready to serve.
async fn start(subcommand: &str, envs: &[(&str, String)]) -> KassaProcess {
    let mut command = kassa(&[subcommand]);
    command
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info");
    KassaProcess::start(command, free_port(), Duration::from_secs(30)).await
}

/// What a `kassa` process works with: a Stripe simulator, a fresh database, a fresh topology.
struct Surroundings {
    sim: kassa_stripe_sim::Simulator,
    database_url: String,
    topology: Topology,
    amqp_url: String,
}

impl Surroundings {
    async fn new() -> Self {
        let sim = kassa_stripe_sim::Simulator::start(Default::default())
            .await
            .unwrap();
        Self {
            sim,
            database_url: services::fresh_database_url().await,
            topology: Topology::unique(),
            amqp_url: services::amqp_url().await,
        }
    }

    /// The variables that point `kassa` at them, with `api_key` as its Stripe key.
    fn envs(&self, api_key: &str) -> Vec<(&'static str, String)> {
        vec![
            ("KASSA_AMQP_URL", self.amqp_url.clone()),
            ("KASSA_AMQP_PREFIX", self.topology.prefix().to_owned()),
            ("KASSA_DATABASE_URL", self.database_url.clone()),
            ("KASSA_STRIPE_API_KEY", api_key.to_owned()),
            ("KASSA_STRIPE_API_BASE", self.sim.base_url()),
        ]
    }

    async fn cleanup(self) {
        let _ = self.topology.delete_at(&self.amqp_url).await;
        services::drop_database(&self.database_url).await;
        self.sim.shutdown().await;
    }
}

/// SIGTERM; asserts exit 0 within 15 s and returns everything it printed.
async fn stop(kassa: KassaProcess) -> String {
    kassa.stop(Duration::from_secs(15)).await
}

#[tokio::test]
async fn kassa_demo_saves_a_card_end_to_end_and_exits_0() {
    let database_url = services::fresh_database_url().await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        kassa(&["demo"])
            .env("KASSA_AMQP_URL", services::amqp_url().await)
            .env("KASSA_DATABASE_URL", &database_url)
            .env_remove("KASSA_STRIPE_API_KEY")
            .output(),
    )
    .await
    .expect("the demo finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("default card:") && stdout.contains("visa •••• 4242"),
        "{stdout}"
    );
    assert!(stdout.contains("also the default in Stripe"), "{stdout}");
    services::drop_database(&database_url).await;
}

#[tokio::test]
async fn kassa_worker_serves_health_and_metrics_and_exits_0_on_sigterm() {
    let around = Surroundings::new().await;
    let metrics_port = free_port();
    let mut envs = around.envs("sk_test_kassa_cli_worker");
    envs.push(("KASSA_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}")));
    let process = start("worker", &envs).await;
    let http = reqwest::Client::new();
    let base = process.base.clone();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let webhook = http
        .post(format!("{base}/webhooks/stripe"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 404, "a worker takes no webhooks");
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("kassa_charges_total"), "{text}");
    let public = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "metrics are not on the health port");

    let logs = stop(process).await;
    assert!(
        logs.contains("kassa worker started") && logs.contains("kassa worker stopped"),
        "{logs}"
    );
    assert!(
        !logs.contains("sk_test_kassa_cli_worker"),
        "the API key is never logged: {logs}"
    );
    around.cleanup().await;
}

/// A deployment that splits ingress and worker processes (deploy/) still serves the
/// back-office, checkout and connector APIs and the merchant pages: `kassa ingress` mounts them
/// when KASSA_ADMIN_TOKEN is set.
#[tokio::test]
async fn kassa_ingress_with_the_admin_token_serves_the_apis_and_the_merchant_page() {
    let around = Surroundings::new().await;
    let token = "cli-ingress-admin-token-0123456789";
    let mut envs = around.envs("sk_test_kassa_cli_ingress");
    envs.push((
        "KASSA_STRIPE_WEBHOOK_SECRETS",
        "whsec_cli_ingress_api".to_owned(),
    ));
    envs.push(("KASSA_ADMIN_TOKEN", token.to_owned()));
    let process = start("ingress", &envs).await;
    let http = reqwest::Client::new();
    let base = process.base.clone();

    let anonymous = http
        .get(format!("{base}/api/charges"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let charges = http
        .get(format!("{base}/api/charges"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(charges.status(), 200, "back-office API, on PostgreSQL");
    let session = http
        .post(format!("{base}/api/checkout-sessions"))
        .bearer_auth(token)
        .header("Idempotency-Key", "cli-ingress-session-1")
        .json(&serde_json::json!({"records": [{"name": "Tea", "unit_amount": 500}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 201, "checkout API, on Stripe");
    let session: serde_json::Value = session.json().await.unwrap();
    assert!(
        session["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&around.sim.base_url())),
        "{session}"
    );
    let customer = http
        .post(format!("{base}/api/customers"))
        .bearer_auth(token)
        .json(&serde_json::json!({"email": "cli@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), 201, "connector actions");
    let shop = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(shop.status(), 200);
    assert!(shop.text().await.unwrap().contains("id=\"buy\""));

    let logs = stop(process).await;
    assert!(
        !logs.contains(token),
        "the admin token is never logged: {logs}"
    );
    around.cleanup().await;
}

#[tokio::test]
async fn kassa_dlq_list_says_when_the_queue_is_empty() {
    let topology = Topology::unique();
    let output = kassa(&["dlq", "list"])
        .env("KASSA_AMQP_URL", services::amqp_url().await)
        .env("KASSA_AMQP_PREFIX", topology.prefix())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is empty"), "{stdout}");
    let replay = kassa(&["dlq", "replay", "evt_nothing"])
        .env("KASSA_AMQP_URL", services::amqp_url().await)
        .env("KASSA_AMQP_PREFIX", topology.prefix())
        .output()
        .await
        .unwrap();
    assert!(!replay.status.success(), "replaying nothing is an error");
    assert!(String::from_utf8_lossy(&replay.stderr).contains("no dead letter matched"));
    let _ = topology.delete_at(&services::amqp_url().await).await;
}

#[tokio::test]
async fn a_bad_setting_stops_kassa_at_start_naming_the_variable() {
    let output = kassa(&["ingress"])
        .env("KASSA_STRIPE_WEBHOOK_SECRETS", "not-a-secret")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KASSA_STRIPE_WEBHOOK_SECRETS"), "{stderr}");
    assert!(!stderr.contains("not-a-secret"), "{stderr}");
    let output = kassa(&["ingress"])
        .env_remove("KASSA_STRIPE_WEBHOOK_SECRETS")
        .output()
        .await
        .unwrap();
    assert!(
        !output.status.success(),
        "no secret, no explicit development opt-in: refuse to start"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KASSA_STRIPE_WEBHOOK_SECRETS")
            && stderr.contains("--allow-development-secret"),
        "{stderr}"
    );
    let output = kassa(&["ingress"])
        .env("KASSA_STRIPE_WEBHOOK_SECRETS", "whsec_cli_bad_settings")
        .env("KASSA_ADMIN_TOKEN", "cli-ingress-admin-token-0123456789")
        .env_remove("KASSA_STRIPE_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        !output.status.success(),
        "the APIs without a Stripe key: refuse to start"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KASSA_ADMIN_TOKEN") && stderr.contains("KASSA_STRIPE_API_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains("0123456789"), "{stderr}");
    let output = kassa(&["worker"])
        .env("KASSA_STRIPE_API_KEY", "sk_test_cli_bad_settings")
        .env("KASSA_NOTIFY_EMAIL", "shop owner at example dot com")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KASSA_NOTIFY_EMAIL"), "{stderr}");
    let output = kassa(&["worker"])
        .env("KASSA_STRIPE_API_KEY", "pk_test_publishable")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KASSA_STRIPE_API_KEY") && stderr.contains("publishable"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_broker_addresses_and_http_limits_stop_kassa_at_start() {
    let ingress = |envs: &[(&str, &str)]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"));
        command
            .arg("ingress")
            .env("KASSA_STRIPE_WEBHOOK_SECRETS", "whsec_cli_bad_settings");
        for (name, value) in envs {
            command.env(name, value);
        }
        command.output()
    };
    // The second node's URL is not AMQP: named by position, no password shown.
    let output = ingress(&[(
        "KASSA_AMQP_URL",
        "amqp://kassa:hunter-one@127.0.0.1:5672/%2f,http://kassa:hunter-two@127.0.0.1:5673/",
    )])
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KASSA_AMQP_URL") && stderr.contains("entry 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter"), "{stderr}");
    // A request time-out shorter than the publish time-out would cut webhooks before the confirm.
    let output = ingress(&[
        ("KASSA_HTTP_REQUEST_TIMEOUT", "3s"),
        ("KASSA_PUBLISH_TIMEOUT_MS", "5000"),
    ])
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KASSA_HTTP_REQUEST_TIMEOUT")
            && stderr.contains("KASSA_PUBLISH_TIMEOUT_MS"),
        "{stderr}"
    );
    let output = ingress(&[("KASSA_HTTP_HEADER_TIMEOUT", "0")])
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http-header-timeout"), "{stderr}");
}

/// `KASSA_DATABASE_MAX_CONNECTIONS` is checked against what the process runs: a worker holds a
/// connection per event and per charge job in flight (2 × KASSA_WORKER_CONCURRENCY), plus the
/// outbox relay and the events poller; pages, confirmations and the back-office API add theirs.
/// Too small a pool is refused at start, naming the variables; unset, it is exactly the need.
#[tokio::test]
async fn the_pool_is_sized_by_what_each_process_runs() {
    let refused = |command: &'static str, envs: Vec<(&'static str, &'static str)>| async move {
        let output = kassa(&[command])
            .envs(envs)
            .env("KASSA_STRIPE_API_KEY", "sk_test_cli_pool")
            .env("KASSA_STRIPE_WEBHOOK_SECRETS", "whsec_cli_pool_test")
            .env("KASSA_LISTEN", "127.0.0.1:0")
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "kassa {command} refused");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // worker: 2 × 8 + relay + poller = 18.
    let stderr = refused(
        "worker",
        vec![
            ("KASSA_WORKER_CONCURRENCY", "8"),
            ("KASSA_DATABASE_MAX_CONNECTIONS", "17"),
        ],
    )
    .await;
    assert!(
        stderr.contains("KASSA_DATABASE_MAX_CONNECTIONS=17")
            && stderr.contains("needs 18")
            && stderr.contains("KASSA_WORKER_CONCURRENCY (8)")
            && stderr.contains("events poller"),
        "{stderr}"
    );
    // serve with the APIs: 2 × 4 + 1 + 1 + 16 pages + 2 back-office = 28.
    let stderr = refused(
        "serve",
        vec![
            ("KASSA_WORKER_CONCURRENCY", "4"),
            ("KASSA_DATABASE_MAX_CONNECTIONS", "27"),
            ("KASSA_ADMIN_TOKEN", "cli-pool-admin-token-0123456789"),
        ],
    )
    .await;
    assert!(
        stderr.contains("needs 28") && stderr.contains("KASSA_ADMIN_TOKEN"),
        "{stderr}"
    );
    // ingress with the APIs: 16 pages + 2 back-office = 18.
    let stderr = refused(
        "ingress",
        vec![
            ("KASSA_DATABASE_MAX_CONNECTIONS", "10"),
            ("KASSA_ADMIN_TOKEN", "cli-pool-admin-token-0123456789"),
        ],
    )
    .await;
    assert!(
        stderr.contains("needs 18") && stderr.contains("merchant pages"),
        "{stderr}"
    );

    // Without the poller, 2 × 8 + relay = 17 is enough; unset, the pool is exactly the need.
    let around = Surroundings::new().await;
    for (extra, connections) in [
        (
            vec![
                ("KASSA_EVENTS_POLL_INTERVAL", "off".to_owned()),
                ("KASSA_DATABASE_MAX_CONNECTIONS", "17".to_owned()),
            ],
            17,
        ),
        (vec![], 18),
    ] {
        let mut envs = around.envs("sk_test_cli_pool");
        envs.push(("KASSA_WORKER_CONCURRENCY", "8".to_owned()));
        envs.extend(extra);
        let process = start("worker", &envs).await;
        let logs = stop(process).await;
        assert!(
            logs.contains(&format!("database_connections={connections}")),
            "{logs}"
        );
    }
    around.cleanup().await;
}
