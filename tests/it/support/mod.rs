//! What the integration tests share: [`app::TestApp`] (the whole stack in-process, built with
//! `TestApp::builder()`), [`ingress::TestIngress`] (the webhook ingress alone), [`binary`] (the
//! `kassa` binary, started one way), [`sim`] (every HTTP call to the Stripe simulator),
//! [`services`] (where PostgreSQL and RabbitMQ are), a TCP [`proxy`], a PostgreSQL proxy that cuts a
//! commit ([`pg_proxy`]), an SMTP sink
//! ([`smtp_sink`]), and what many tests use: polling with a deadline, event bodies, test logs.
//!
//! Logs of the code under test are hidden; `TEST_LOG=1 cargo test …` shows them (at `RUST_LOG`,
//! default `info`), and the output of every `kassa` process a test stops.

pub mod app;
pub mod binary;
pub mod ingress;
pub mod pg_proxy;
pub mod proxy;
pub mod services;
pub mod sim;
pub mod smtp_sink;

pub use ingress::TestIngress;
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The secret test ingresses accept unless told otherwise.
pub const SECRET: &str = "whsec_test_secret_kassa";

/// Shows the logs of the code under test on stdout when `TEST_LOG` is set; otherwise they are
/// dropped. Every fixture calls it; the first call decides.
pub fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stdout)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .try_init();
        }
    });
}

/// A unique Idempotency-Key for a test's own Stripe call (`test:{what}:{uuid}`).
pub fn key(what: &str) -> kassa_stripe::IdempotencyKey {
    kassa_stripe::IdempotencyKey::new(format!("test:{what}:{}", uuid::Uuid::new_v4())).unwrap()
}

/// Asserts Kassa's error answer: `{"error": {"code": code, "message": "…"}}` with a message.
pub fn assert_error(answer: &serde_json::Value, code: &str, context: &str) {
    assert_eq!(answer["error"]["code"], code, "{context}: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{context}: {answer}"
    );
}

/// Records in Kassa's database a customer whose default card is `card` (a Visa ending 4242),
/// as the setup flow leaves one.
pub async fn record_customer_with_card(
    store: &kassa_store::Store,
    customer: &str,
    card: &str,
    email: Option<&str>,
) {
    record_customer_with_card_in(store, customer, card, email, false).await
}

/// [`record_customer_with_card`] in test (`livemode: false`) or live mode.
pub async fn record_customer_with_card_in(
    store: &kassa_store::Store,
    customer: &str,
    card: &str,
    email: Option<&str>,
    livemode: bool,
) {
    let mut tx = store.begin().await.unwrap();
    let record = kassa_store::CustomerRecord {
        id: customer.to_owned(),
        email: email.map(str::to_owned),
        name: None,
        default_payment_method: Some(card.to_owned()),
        deleted: false,
        livemode,
    };
    kassa_store::customers::upsert_customer(&mut tx, &record)
        .await
        .unwrap();
    let card = kassa_store::PaymentMethodRecord {
        id: card.to_owned(),
        customer_id: Some(customer.to_owned()),
        brand: Some("visa".into()),
        last4: Some("4242".into()),
        exp_month: Some(12),
        exp_year: Some(2030),
        attached: true,
        livemode: Some(livemode),
    };
    kassa_store::customers::upsert_payment_method(&mut tx, &card)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

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
