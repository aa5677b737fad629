//! The transport against a scripted HTTP server on 127.0.0.1:0: headers sent, retries and their
//! limits, Stripe-Should-Retry, Retry-After, timeouts and network errors. Deterministic, no simulator.

use kassa_stripe::objects::Customer;
use kassa_stripe::{Client, ClientConfig, IdempotencyKey, StripeError, STRIPE_VERSION};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: String,
}

/// One scripted answer.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        headers: vec![("Request-Id", format!("req_{status}"))],
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

fn customer(id: &str) -> Reply {
    reply(
        200,
        serde_json::json!({"id": id, "object": "customer", "email": "jenny@example.com"}),
    )
}

fn stripe_error(status: u16, type_: &str, code: &str) -> Reply {
    reply(
        status,
        serde_json::json!({"error": {"type": type_, "code": code, "message": format!("{code} happened")}}),
    )
}

struct Scripted {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Serves the replies in order, one per connection; past the script, 500s.
    async fn start(replies: Vec<Reply>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, replies) = (log.clone(), replies.clone());
                tokio::spawn(async move {
                    let _ = answer(stream, &log, &replies).await;
                });
            }
        });
        Scripted { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self, max_retries: u32) -> Client {
        Client::new(ClientConfig {
            api_base: self.base.clone(),
            max_retries,
            initial_retry_delay: Duration::from_millis(1),
            max_retry_delay: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            ..ClientConfig::new("sk_test_transport".into())
        })
        .unwrap()
    }
}

async fn answer(
    mut stream: TcpStream,
    log: &Mutex<Vec<Seen>>,
    replies: &Mutex<VecDeque<Reply>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    log.lock().unwrap().push(Seen {
        method,
        target,
        headers,
        body,
    });

    let next = replies.lock().unwrap().pop_front();
    let reply = next.unwrap_or_else(|| stripe_error(500, "api_error", "script_exhausted"));
    tokio::time::sleep(reply.delay).await;
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

async fn create_customer(client: &Client, k: &str) -> Result<Customer, StripeError> {
    client
        .post(
            "/v1/customers",
            &serde_json::json!({"email": "jenny@example.com", "metadata": {"kassa_id": "7"}}),
            &key(k),
            &[],
        )
        .await
}

#[tokio::test]
async fn post_sends_auth_version_form_and_the_callers_key() {
    let server = Scripted::start(vec![customer("cus_1")]).await;
    let created = create_customer(&server.client(0), "kassa:evt_1:create_customer")
        .await
        .unwrap();
    assert_eq!(created.id, "cus_1");

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/v1/customers")
    );
    assert_eq!(request.headers["authorization"], "Bearer sk_test_transport");
    assert_eq!(request.headers["stripe-version"], STRIPE_VERSION);
    assert_eq!(
        request.headers["idempotency-key"],
        "kassa:evt_1:create_customer"
    );
    assert_eq!(
        request.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let mut fields: Vec<&str> = request.body.split('&').collect();
    fields.sort();
    assert_eq!(
        fields,
        ["email=jenny%40example.com", "metadata%5Bkassa_id%5D=7"]
    );
}

#[tokio::test]
async fn get_puts_params_and_expand_in_the_query_and_sends_no_key() {
    let server = Scripted::start(vec![reply(
        200,
        serde_json::json!({"id": "cs_test_1", "object": "checkout.session", "mode": "setup",
            "setup_intent": {"id": "seti_1", "object": "setup_intent", "status": "succeeded", "payment_method": "pm_1"}}),
    )])
    .await;
    let session = server
        .client(0)
        .checkout_sessions()
        .retrieve("cs_test_1", &["setup_intent"])
        .await
        .unwrap();
    let si = session.setup_intent.unwrap().into_object().unwrap();
    assert_eq!(si.payment_method.unwrap().id(), "pm_1");

    let seen = server.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].target,
        "/v1/checkout/sessions/cs_test_1?expand%5B0%5D=setup_intent"
    );
    assert!(!seen[0].headers.contains_key("idempotency-key"));
    assert_eq!(seen[0].headers["stripe-version"], STRIPE_VERSION);
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_key_and_body() {
    let server = Scripted::start(vec![
        stripe_error(500, "api_error", "oops"),
        stripe_error(503, "api_error", "oops"),
        customer("cus_2"),
    ])
    .await;
    let created = create_customer(&server.client(3), "kassa:evt_2:create_customer")
        .await
        .unwrap();
    assert_eq!(created.id, "cus_2");

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.headers["idempotency-key"] == "kassa:evt_2:create_customer"));
    assert!(seen.iter().all(|r| r.body == seen[0].body));
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_is_returned() {
    let server = Scripted::start(vec![
        stripe_error(429, "invalid_request_error", "rate_limit"),
        stripe_error(429, "invalid_request_error", "rate_limit"),
        stripe_error(429, "invalid_request_error", "lock_timeout"),
    ])
    .await;
    let err = create_customer(&server.client(2), "k1").await.unwrap_err();
    assert!(
        matches!(
            err,
            StripeError::RateLimited {
                lock_timeout: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(err.request_id(), Some("req_429"));
    assert_eq!(server.seen().len(), 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn conflicts_409_are_retried() {
    let server = Scripted::start(vec![
        stripe_error(409, "invalid_request_error", "idempotency_key_in_use"),
        customer("cus_3"),
    ])
    .await;
    assert_eq!(
        create_customer(&server.client(3), "k2").await.unwrap().id,
        "cus_3"
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn stripe_should_retry_false_stops_at_once() {
    let server = Scripted::start(vec![
        stripe_error(500, "api_error", "oops").header("Stripe-Should-Retry", "false"),
        customer("cus_never"),
    ])
    .await;
    let err = create_customer(&server.client(3), "k3").await.unwrap_err();
    assert!(
        matches!(err, StripeError::Api { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn stripe_should_retry_true_retries_even_a_400() {
    let server = Scripted::start(vec![
        stripe_error(400, "invalid_request_error", "whatever")
            .header("Stripe-Should-Retry", "true"),
        customer("cus_4"),
    ])
    .await;
    assert_eq!(
        create_customer(&server.client(3), "k4").await.unwrap().id,
        "cus_4"
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let server = Scripted::start(vec![
        stripe_error(400, "invalid_request_error", "parameter_missing"),
        customer("cus_never"),
    ])
    .await;
    let err = create_customer(&server.client(3), "k5").await.unwrap_err();
    assert!(matches!(
        err,
        StripeError::InvalidRequest { status: 400, .. }
    ));
    assert!(!err.is_transient());
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_capped() {
    // Asked 0.15 s, under the 1 s cap: honoured.
    let server = Scripted::start(vec![
        stripe_error(429, "invalid_request_error", "rate_limit").header("Retry-After", "0.15"),
        customer("cus_5"),
    ])
    .await;
    let client = Client::new(ClientConfig {
        api_base: server.base.clone(),
        initial_retry_delay: Duration::from_millis(1),
        max_retry_delay: Duration::from_secs(1),
        ..ClientConfig::new("sk_test_transport".into())
    })
    .unwrap();
    let started = Instant::now();
    create_customer(&client, "k6").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Asked an hour, capped at max_retry_delay (20 ms in `Scripted::client`).
    let server = Scripted::start(vec![
        stripe_error(503, "api_error", "busy").header("Retry-After", "3600"),
        customer("cus_6"),
    ])
    .await;
    let started = Instant::now();
    create_customer(&server.client(1), "k7").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn timeouts_are_transport_errors_and_retried() {
    let server = Scripted::start(vec![
        customer("cus_slow").delayed(Duration::from_secs(3)),
        customer("cus_7"),
    ])
    .await;
    let client = Client::new(ClientConfig {
        api_base: server.base.clone(),
        timeout: Duration::from_millis(200),
        initial_retry_delay: Duration::from_millis(1),
        ..ClientConfig::new("sk_test_transport".into())
    })
    .unwrap();
    assert_eq!(create_customer(&client, "k8").await.unwrap().id, "cus_7");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].headers["idempotency-key"],
        seen[1].headers["idempotency-key"]
    );

    let server = Scripted::start(vec![customer("cus_slow").delayed(Duration::from_secs(3))]).await;
    let client = Client::new(ClientConfig {
        api_base: server.base.clone(),
        timeout: Duration::from_millis(200),
        max_retries: 0,
        ..ClientConfig::new("sk_test_transport".into())
    })
    .unwrap();
    let err = create_customer(&client, "k9").await.unwrap_err();
    assert!(matches!(err, StripeError::Transport(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        err.outcome_unknown(),
        "the request reached Stripe: it may have acted"
    );
}

#[tokio::test]
async fn connection_refused_is_a_transient_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::new(ClientConfig {
        api_base: base,
        max_retries: 2,
        initial_retry_delay: Duration::from_millis(1),
        ..ClientConfig::new("sk_test_transport".into())
    })
    .unwrap();
    let err = create_customer(&client, "k10").await.unwrap_err();
    assert!(matches!(err, StripeError::Transport(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(!format!("{err:?}").contains("sk_test_transport"));
}

#[tokio::test]
async fn a_decline_is_a_card_error_with_its_payment_intent_and_request_id() {
    let server = Scripted::start(vec![reply(
        402,
        serde_json::json!({"error": {"type": "card_error", "code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds.",
            "payment_intent": {"id": "pi_9", "object": "payment_intent", "amount": 500, "currency": "jpy",
                "status": "requires_payment_method"}}}),
    )])
    .await;
    let err = server
        .client(3)
        .payment_intents()
        .create(
            &kassa_stripe::resources::CreatePaymentIntent {
                amount: 500,
                currency: "jpy".into(),
                customer: Some("cus_1".into()),
                payment_method: Some("pm_card_visa_chargeDeclinedInsufficientFunds".into()),
                off_session: Some(true),
                confirm: Some(true),
                ..Default::default()
            },
            &key("kassa:charge:1:1"),
        )
        .await
        .unwrap_err();
    let StripeError::Card {
        decline_code,
        payment_intent,
        request_id,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(payment_intent.as_ref().unwrap().id, "pi_9");
    assert_eq!(request_id.as_deref(), Some("req_402"));
    assert_eq!(server.seen().len(), 1, "a decline is not retried");
    let body = &server.seen()[0].body;
    assert!(
        body.contains("off_session=true") && body.contains("confirm=true"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unexpected_success_body_is_a_decode_error() {
    let server = Scripted::start(vec![reply(
        200,
        serde_json::json!(["not", "a", "customer"]),
    )])
    .await;
    let err = create_customer(&server.client(3), "k11").await.unwrap_err();
    assert!(
        matches!(err, StripeError::Decode { status: 200, .. }),
        "{err:?}"
    );
    assert!(
        err.outcome_unknown() && !err.is_timeout(),
        "Stripe acted; what it did is unread: {err:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn ids_that_would_change_the_path_are_refused_before_sending() {
    let server = Scripted::start(vec![]).await;
    let err = server
        .client(0)
        .customers()
        .retrieve("..", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::InvalidParams(_)));
    assert!(server.seen().is_empty());
}
