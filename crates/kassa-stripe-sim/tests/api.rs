//! The simulator over HTTP: idempotency, 402 bodies, expand, webhooks (checked with an independent HMAC),
//! fault injection, amounts, the hosted checkout page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use kassa_stripe_sim::{DeliveryOutcome, Faults, SimConfig, Simulator, DEFAULT_WEBHOOK_SECRET};
use serde_json::Value;
use sha2::Sha256;

const KEY: &str = "sk_test_kassa";

struct Sim {
    sim: Simulator,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        let sim = Simulator::start(config).await.expect("simulator starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Sim { sim, http }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(KEY)
            .form(form);
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        self.send(rb).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            self.http
                .get(format!("{}{path}", self.sim.base_url()))
                .bearer_auth(KEY),
        )
        .await
    }
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

const PI: &[(&str, &str)] = &[("amount", "1099"), ("currency", "usd")];

#[tokio::test]
async fn idempotent_results_are_replayed_and_mismatches_refused() {
    let s = Sim::start(SimConfig::default()).await;
    let first = s.post("/v1/payment_intents", PI, Some("k1")).await;
    assert_eq!(first.status, 200);
    let again = s.post("/v1/payment_intents", PI, Some("k1")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("original-request"), first.header("request-id"));
    assert_ne!(again.header("request-id"), first.header("request-id"));

    let other = s
        .post(
            "/v1/payment_intents",
            &[("amount", "2000"), ("currency", "usd")],
            Some("k1"),
        )
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.body["error"]["type"], "idempotency_error");

    // Keys belong to the account and its mode: another test-mode key (a restricted one, say) meets
    // the same key, while live mode has keys of its own.
    let rb = s
        .http
        .post(format!("{}/v1/payment_intents", s.sim.base_url()))
        .bearer_auth("rk_test_other")
        .header("Idempotency-Key", "k1")
        .form(&[("amount", "2000"), ("currency", "usd")]);
    assert_eq!(s.send(rb).await.status, 400);
    let rb = s
        .http
        .post(format!("{}/v1/payment_intents", s.sim.base_url()))
        .bearer_auth("sk_live_other")
        .header("Idempotency-Key", "k1")
        .form(&[("amount", "2000"), ("currency", "usd")]);
    assert_eq!(s.send(rb).await.status, 200);

    // A validation failure is not saved: the same key then executes.
    assert_eq!(
        s.post(
            "/v1/payment_intents",
            &[("amount", "10"), ("currency", "usd")],
            Some("k2")
        )
        .await
        .status,
        400
    );
    assert_eq!(
        s.post("/v1/payment_intents", PI, Some("k2")).await.status,
        200
    );

    // A decline is saved (the PaymentIntent exists) and replayed with its 402.
    let decline = [
        ("amount", "1099"),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa_chargeDeclined"),
        ("confirm", "true"),
    ];
    let d1 = s.post("/v1/payment_intents", &decline, Some("k3")).await;
    let d2 = s.post("/v1/payment_intents", &decline, Some("k3")).await;
    assert_eq!((d1.status, d2.status), (402, 402));
    assert_eq!(d1.body, d2.body);
    assert_eq!(d2.header("idempotent-replayed"), Some("true"));

    let log = s.sim.requests();
    let k1: Vec<(u16, bool)> = log
        .iter()
        .filter(|r| r.idempotency_key.as_deref() == Some("k1"))
        .map(|r| (r.status, r.replayed))
        .collect();
    assert_eq!(
        k1,
        vec![
            (200, false),
            (200, true),
            (400, false),
            (400, false),
            (200, false)
        ]
    );
    let created = log
        .iter()
        .filter(|r| r.path == "/v1/payment_intents" && r.status == 200 && !r.replayed)
        .count();
    assert_eq!(created, 3);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_key_still_executing_answers_409() {
    let s = Sim::start(SimConfig::default()).await;
    // The key is held while the first request executes (1 s of latency): whichever of the two
    // concurrent requests arrives first executes, and the other must get 409.
    s.sim.set_faults(Faults {
        latency: Duration::from_millis(1000),
        ..Faults::default()
    });
    let (a, b) = tokio::join!(
        s.post("/v1/payment_intents", PI, Some("same")),
        s.post("/v1/payment_intents", PI, Some("same"))
    );
    let (done, conflict) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!((done.status, conflict.status), (200, 409));
    assert_eq!(conflict.body["error"]["type"], "idempotency_error");
    assert_eq!(conflict.body["error"]["code"], "idempotency_key_in_use");
    // The conflict was not saved; the first result was.
    s.sim.set_faults(Faults::default());
    let c = s.post("/v1/payment_intents", PI, Some("same")).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["id"], done.body["id"]);
    assert_eq!(c.header("idempotent-replayed"), Some("true"));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn declines_answer_402_with_the_failed_payment_intent() {
    let s = Sim::start(SimConfig::default()).await;
    let cus = s
        .post("/v1/customers", &[("email", "a@example.com")], None)
        .await
        .body;
    let cus_id = cus["id"].as_str().unwrap();
    let r = s
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "5000"),
                ("currency", "eur"),
                ("customer", cus_id),
                (
                    "payment_method",
                    "pm_card_visa_chargeDeclinedInsufficientFunds",
                ),
                ("off_session", "true"),
                ("confirm", "true"),
            ],
            Some("charge-1"),
        )
        .await;
    assert_eq!(r.status, 402);
    let e = &r.body["error"];
    assert_eq!(e["type"], "card_error");
    assert_eq!(e["code"], "card_declined");
    assert_eq!(e["decline_code"], "insufficient_funds");
    assert_eq!(e["message"], "Your card has insufficient funds.");
    assert!(e["charge"].as_str().unwrap().starts_with("ch_"));
    let pi = &e["payment_intent"];
    assert_eq!(pi["status"], "requires_payment_method");
    assert_eq!(
        pi["last_payment_error"]["decline_code"],
        "insufficient_funds"
    );
    assert_eq!(pi["customer"], cus_id);
    let stored = s
        .get(&format!(
            "/v1/payment_intents/{}",
            pi["id"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(stored["status"], "requires_payment_method");
    let failed = s
        .get("/v1/events?type=payment_intent.payment_failed")
        .await
        .body;
    assert_eq!(failed["data"][0]["data"]["object"]["id"], pi["id"]);
    assert_eq!(failed["data"][0]["request"]["idempotency_key"], "charge-1");

    // pm_card_chargeCustomerFail attaches, then every charge is declined.
    let pm = s
        .post(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", cus_id)],
            None,
        )
        .await;
    assert_eq!(pm.status, 200);
    let pm_id = pm.body["id"].as_str().unwrap();
    let r = s
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "5000"),
                ("currency", "eur"),
                ("customer", cus_id),
                ("payment_method", pm_id),
                ("off_session", "true"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (402, Some("card_declined"))
    );

    // 3155 needs authentication off-session until it has been set up; then it succeeds.
    let off = |pm: &str| {
        let form = [
            ("amount", "5000".to_owned()),
            ("currency", "eur".to_owned()),
            ("customer", cus_id.to_owned()),
            ("payment_method", pm.to_owned()),
            ("off_session", "true".to_owned()),
            ("confirm", "true".to_owned()),
        ];
        s.http
            .post(format!("{}/v1/payment_intents", s.sim.base_url()))
            .bearer_auth(KEY)
            .form(&form)
    };
    let r = s.send(off("pm_card_authenticationRequiredOnSetup")).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (402, Some("authentication_required"))
    );
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[("mode", "setup"), ("currency", "eur"), ("customer", cus_id)],
            None,
        )
        .await
        .body;
    let done = s
        .sim
        .complete_checkout_session(
            session["id"].as_str().unwrap(),
            "pm_card_authenticationRequiredOnSetup",
        )
        .unwrap();
    let si = s
        .get(&format!(
            "/v1/setup_intents/{}",
            done["setup_intent"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(si["status"], "succeeded");
    let r = s.send(off(si["payment_method"].as_str().unwrap())).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("succeeded"))
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn expand_follows_dotted_paths() {
    let s = Sim::start(SimConfig::default()).await;
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "setup"),
                ("currency", "usd"),
                ("customer_email", "x@example.com"),
                ("success_url", "https://x.example/ok"),
            ],
            None,
        )
        .await
        .body;
    let id = session["id"].as_str().unwrap();
    s.sim.complete_checkout_session(id, "pm_card_visa").unwrap();
    let r = s
        .get(&format!(
            "/v1/checkout/sessions/{id}?expand[]=setup_intent.payment_method"
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["setup_intent"]["object"], "setup_intent");
    assert_eq!(
        r.body["setup_intent"]["payment_method"]["card"]["last4"],
        "4242"
    );
    // Setup mode without a customer: Stripe creates none; the e-mail is in customer_details.
    assert_eq!(r.body["customer"], Value::Null);
    assert_eq!(r.body["customer_details"]["email"], "x@example.com");
    // Expand on POST too, and through lists.
    let cus = s
        .post("/v1/customers", &[("email", "e@example.com")], None)
        .await
        .body;
    let pi = s
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("customer", cus["id"].as_str().unwrap()),
                ("expand[]", "customer"),
            ],
            None,
        )
        .await;
    assert_eq!(pi.body["customer"]["email"], "e@example.com");
    let list = s
        .get("/v1/payment_intents?expand[]=data.customer")
        .await
        .body;
    assert_eq!(list["data"][0]["customer"]["object"], "customer");
    let bad = s
        .get(&format!("/v1/checkout/sessions/{id}?expand[]=mode"))
        .await;
    assert_eq!(bad.status, 400);
    s.sim.shutdown().await;
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook endpoint that answers 500 to the first delivery of each event, then 200.
async fn flaky_receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let state = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let mut seen = state.lock().unwrap();
                let id = serde_json::from_slice::<Value>(&body).unwrap()["id"].clone();
                let first = !seen
                    .iter()
                    .any(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()["id"] == id);
                seen.push((headers, body));
                if first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let sig = headers.get("stripe-signature").unwrap().to_str().unwrap();
    let t = sig.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let v1 = sig.split(',').find_map(|p| p.strip_prefix("v1=")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(DEFAULT_WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_logged() {
    let (url, got) = flaky_receiver().await;
    let s = Sim::start(SimConfig {
        webhook_endpoints: vec![url.clone()],
        webhook_retry_base: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    let cus = s
        .post(
            "/v1/customers",
            &[("email", "w@example.com")],
            Some("cus-1"),
        )
        .await
        .body;
    let updated = s
        .post(
            &format!("/v1/customers/{}", cus["id"].as_str().unwrap()),
            &[("name", "W")],
            None,
        )
        .await;
    assert_eq!(updated.status, 200);
    wait_for("two events delivered on their second attempt", || {
        let d = s.sim.webhook_deliveries();
        (d.iter()
            .filter(|d| d.outcome == DeliveryOutcome::Delivered)
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let log = s.sim.webhook_deliveries();
    assert_eq!(
        log.iter()
            .filter(|d| d.outcome == DeliveryOutcome::Failed && d.status == Some(500))
            .count(),
        2
    );
    assert!(log.iter().all(|d| d.endpoint == url));
    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 4);
    for (headers, body) in &received {
        assert!(verify(headers, body), "signature does not verify");
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        assert!(!verify(headers, &tampered));
    }
    let event: Value = serde_json::from_slice(&received[0].1).unwrap();
    assert_eq!(event["type"], "customer.created");
    assert_eq!(event["object"], "event");
    assert_eq!(event["livemode"], false);
    assert_eq!(event["request"]["idempotency_key"], "cus-1");
    assert_eq!(event["data"]["object"]["id"], cus["id"]);
    let update: Value = received
        .iter()
        .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap())
        .find(|e| e["type"] == "customer.updated")
        .unwrap();
    assert_eq!(
        update["data"]["previous_attributes"],
        serde_json::json!({"name": null})
    );
    // Delivered: no webhook is pending any more.
    let stored = s
        .get(&format!("/v1/events/{}", event["id"].as_str().unwrap()))
        .await
        .body;
    assert_eq!(stored["pending_webhooks"], 0);
    s.sim.shutdown().await;
}

/// Stripe: an endpoint's `enabled_events` lists the types it is sent (`['*']`: all); an event's
/// `pending_webhooks` counts the endpoints it is sent to.
#[tokio::test]
async fn endpoints_are_sent_only_their_enabled_events() {
    let (url, got) = flaky_receiver().await;
    let s = Sim::start(SimConfig {
        webhook_endpoints: vec![url],
        webhook_enabled_events: vec!["customer.updated".to_owned()],
        webhook_retry_base: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    let cus = s
        .post("/v1/customers", &[("email", "e@example.com")], None)
        .await
        .body;
    let id = cus["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.post(&format!("/v1/customers/{id}"), &[("name", "E")], None)
            .await
            .status,
        200
    );
    wait_for("the update delivered", || {
        s.sim
            .webhook_deliveries()
            .iter()
            .any(|d| d.outcome == DeliveryOutcome::Delivered)
            .then_some(())
    })
    .await;
    let log = s.sim.webhook_deliveries();
    assert!(
        log.iter().all(|d| d.event_type == "customer.updated"),
        "only the enabled type is sent: {log:?}"
    );
    let received = got.lock().unwrap().clone();
    assert!(received.iter().all(|(_, body)| {
        serde_json::from_slice::<Value>(body).unwrap()["type"] == "customer.updated"
    }));
    // The creation's event is still listed, with no endpoint to wait for.
    let events = s.get("/v1/events?type=customer.created").await.body;
    assert_eq!(events["data"][0]["data"]["object"]["id"], id.as_str());
    assert_eq!(events["data"][0]["pending_webhooks"], 0);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn delivery_faults_drop_and_duplicate() {
    let (url, got) = flaky_receiver().await;
    let s = Sim::start(SimConfig {
        webhook_endpoints: vec![url],
        webhook_retry_base: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    s.sim.set_faults(Faults {
        drop_webhook_rate: 1.0,
        ..Faults::default()
    });
    s.post("/v1/customers", &[("email", "d@example.com")], None)
        .await;
    wait_for("a dropped delivery", || {
        s.sim
            .webhook_deliveries()
            .iter()
            .any(|d| d.outcome == DeliveryOutcome::Dropped)
            .then_some(())
    })
    .await;
    assert_eq!(
        s.get("/v1/events").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "dropped events stay listed"
    );
    s.sim.set_faults(Faults {
        duplicate_webhooks: true,
        ..Faults::default()
    });
    let cus = s
        .post("/v1/customers", &[("email", "e@example.com")], None)
        .await
        .body;
    wait_for("both copies delivered", || {
        (s.sim
            .webhook_deliveries()
            .iter()
            .filter(|d| d.outcome == DeliveryOutcome::Delivered)
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let copies = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| {
            serde_json::from_slice::<Value>(b).unwrap()["data"]["object"]["id"] == cus["id"]
        })
        .count();
    assert!(copies >= 2, "{copies}");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn fault_injection_counts_and_rate_limits() {
    let s = Sim::start(SimConfig::default()).await;
    s.sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        max_faults: Some(3),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = s.post("/v1/payment_intents", PI, Some("retry-me")).await;
        if r.status == 503 {
            assert_eq!(r.header("stripe-should-retry"), Some("true"));
            assert_eq!(r.body["error"]["type"], "api_error");
        }
        statuses.push(r.status);
    }
    // Injected errors precede execution: the same key then executes once, and replays.
    assert_eq!(statuses, vec![503, 503, 503, 200, 200]);
    assert_eq!(s.sim.injected_faults(), 3);
    let executed: Vec<bool> = s
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.replayed)
        .collect();
    assert_eq!(executed, vec![false, true]);

    // JSON control route, and the rate limiter.
    let r = s
        .http
        .post(format!("{}/_sim/faults", s.sim.base_url()))
        .json(&serde_json::json!({"rate_limit_per_sec": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut limited = 0;
    for _ in 0..40 {
        let r = s.get("/v1/customers").await;
        if r.status == 429 {
            assert_eq!(r.body["error"]["code"], "rate_limit");
            assert_eq!(r.header("stripe-rate-limited-reason"), Some("global-rate"));
            limited += 1;
        }
    }
    assert!(limited >= 10, "{limited} of 40 rate limited");
    let bad = s
        .http
        .post(format!("{}/_sim/faults", s.sim.base_url()))
        .json(&serde_json::json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn endpoint_rate_limits_answer_429_per_endpoint_and_are_counted() {
    // Stripe: besides the account's limit, "individual API endpoints" allow about 25 requests a
    // second, each named operation being one endpoint whatever the ids (docs: rate limits). A low
    // limit makes it visible at test speed.
    let s = Sim::start(SimConfig {
        faults: Faults {
            endpoint_rate_limit_per_sec: Some(2),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let started = std::time::Instant::now();
    let mut replies = Vec::new();
    for i in 0..20 {
        replies.push(s.get(&format!("/v1/customers/cus_{i}")).await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    let passed = replies.len() - limited.len();
    // A bucket of two a second holding at most two: no more pass than that allows.
    assert!(
        (passed as f64) <= 2.0 + 2.0 * elapsed + 1.0,
        "{passed} passed in {elapsed:.2} s"
    );
    assert!(!limited.is_empty());
    for r in &limited {
        assert_eq!(r.body["error"]["code"], "rate_limit");
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
        assert_eq!(
            r.header("stripe-rate-limited-reason"),
            Some("endpoint-rate")
        );
    }
    // Another endpoint, and the same endpoint in live mode, have budgets of their own.
    assert_eq!(s.post("/v1/customers", &[], None).await.status, 200);
    let live = s
        .send(
            s.http
                .get(format!("{}/v1/customers/cus_0", s.sim.base_url()))
                .bearer_auth("sk_live_kassa"),
        )
        .await;
    assert_eq!(live.status, 404);
    // Counted per endpoint in /_sim/faults, named in the request log.
    let faults = s.get("/_sim/faults").await.body;
    let count = limited.len() as u64;
    assert_eq!(faults["rate_limited"]["endpoint"], count);
    assert_eq!(faults["rate_limited"]["global"], 0);
    assert_eq!(
        faults["rate_limited"]["by_endpoint"],
        serde_json::json!({"GET /v1/customers/{id}": count})
    );
    assert_eq!(s.sim.rate_limited().endpoint, count);
    assert!(s
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.operation == "GET /v1/customers/{id}"));

    // One endpoint's own limit (as Stripe documents for some) through the control route.
    let set = s
        .http
        .post(format!("{}/_sim/faults", s.sim.base_url()))
        .json(&serde_json::json!({"endpoint_rate_limits": {"POST /v1/customers": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(s.post("/v1/customers", &[], None).await.status);
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        s.get("/v1/customers/cus_1").await.status,
        404,
        "others unlimited now"
    );
    let bad = s
        .http
        .post(format!("{}/_sim/faults", s.sim.base_url()))
        .json(&serde_json::json!({"endpoint_rate_limits": {"GET /v1/customers/cus_1": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn amounts_follow_currency_rules() {
    let s = Sim::start(SimConfig::default()).await;
    let r = s
        .post(
            "/v1/payment_intents",
            &[("amount", "49"), ("currency", "usd")],
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "amount_too_small");
    assert_eq!(r.body["error"]["param"], "amount");
    assert_eq!(
        s.post(
            "/v1/payment_intents",
            &[("amount", "29"), ("currency", "gbp")],
            None
        )
        .await
        .status,
        400
    );
    let jpy = s
        .post(
            "/v1/payment_intents",
            &[("amount", "50"), ("currency", "JPY")],
            None,
        )
        .await;
    assert_eq!(
        (
            jpy.status,
            jpy.body["amount"].as_i64(),
            jpy.body["currency"].as_str()
        ),
        (200, Some(50), Some("jpy"))
    );
    assert_eq!(
        s.post(
            "/v1/payment_intents",
            &[("amount", "1235"), ("currency", "kwd")],
            None
        )
        .await
        .status,
        400
    );
    assert_eq!(
        s.post(
            "/v1/payment_intents",
            &[("amount", "1230"), ("currency", "kwd")],
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        s.post(
            "/v1/payment_intents",
            &[("amount", "ten"), ("currency", "usd")],
            None
        )
        .await
        .status,
        400
    );
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "jpy"),
                ("line_items[0][price_data][unit_amount]", "980"),
                ("line_items[0][price_data][product_data][name]", "Sencha"),
                ("line_items[0][quantity]", "3"),
            ],
            None,
        )
        .await;
    assert_eq!(session.body["amount_total"], 2940);
    let too_soon = (kassa_stripe_sim::state::unix_now() + 600).to_string();
    let r = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "setup"),
                ("currency", "usd"),
                ("expires_at", &too_soon),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["param"].as_str()),
        (400, Some("expires_at"))
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn keys_errors_and_malformed_bodies() {
    let s = Sim::start(SimConfig::default()).await;
    let r = s
        .send(s.http.get(format!("{}/v1/customers", s.sim.base_url())))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    assert_eq!(
        s.send(
            s.http
                .get(format!("{}/v1/customers", s.sim.base_url()))
                .bearer_auth("pk_test_x")
        )
        .await
        .status,
        403
    );
    assert_eq!(
        s.send(
            s.http
                .get(format!("{}/v1/customers", s.sim.base_url()))
                .basic_auth(KEY, None::<&str>)
        )
        .await
        .status,
        200
    );
    let missing = s.get("/v1/customers/cus_nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body["error"]["message"],
        "No such customer: 'cus_nope'"
    );
    assert_eq!(missing.body["error"]["param"], "id");
    let conflict = s
        .send(
            s.http
                .post(format!("{}/v1/customers", s.sim.base_url()))
                .bearer_auth(KEY)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("a=1&a[b]=2"),
        )
        .await;
    assert_eq!(conflict.status, 400);
    let unknown = s
        .post("/v1/customers", &[("emial", "x@example.com")], None)
        .await;
    assert_eq!(unknown.body["error"]["code"], "parameter_unknown");
    let garbage = s
        .send(
            s.http
                .post(format!("{}/v1/customers", s.sim.base_url()))
                .bearer_auth(KEY)
                .body(vec![0xff, b'%', b'[', 0, b'=', b'&']),
        )
        .await;
    assert!(garbage.status < 500);
    assert_eq!(s.get("/v1/nothing_here").await.status, 404);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn hosted_checkout_page_pays_and_redirects() {
    let s = Sim::start(SimConfig::default()).await;
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                (
                    "success_url",
                    "https://shop.example/done?session_id={CHECKOUT_SESSION_ID}",
                ),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "1250"),
                ("line_items[0][price_data][product_data][name]", "Book <1>"),
                ("line_items[0][quantity]", "2"),
            ],
            None,
        )
        .await
        .body;
    let id = session["id"].as_str().unwrap();
    let url = session["url"].as_str().unwrap();
    let page = s.http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Book &lt;1&gt;")
            && page.contains("Pay 25.00 USD")
            && page.contains("pm_card_visa_chargeDeclined"),
        "{page}"
    );
    let declined = s
        .http
        .post(url)
        .form(&[
            ("payment_method", "pm_card_visa_chargeDeclined"),
            ("email", "p@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 402);
    assert!(declined
        .text()
        .await
        .unwrap()
        .contains("Your card was declined."));
    let paid = s
        .http
        .post(url)
        .form(&[
            ("payment_method", "pm_card_visa"),
            ("email", "p@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    assert_eq!(
        paid.headers()["location"],
        format!("https://shop.example/done?session_id={id}").as_str()
    );
    let done = s
        .get(&format!(
            "/v1/checkout/sessions/{id}?expand[]=payment_intent"
        ))
        .await
        .body;
    assert_eq!(
        (done["status"].as_str(), done["payment_status"].as_str()),
        (Some("complete"), Some("paid"))
    );
    assert_eq!(done["payment_intent"]["status"], "succeeded");
    assert_eq!(done["payment_intent"]["amount"], 2500);
    let completed = s
        .get("/v1/events?type=checkout.session.completed")
        .await
        .body;
    assert_eq!(completed["data"][0]["request"]["id"], Value::Null);
    let setup = s
        .post(
            "/v1/checkout/sessions",
            &[("mode", "setup"), ("currency", "usd")],
            None,
        )
        .await
        .body;
    let page = s
        .http
        .get(setup["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Save card"));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn random_bodies_never_break_an_endpoint() {
    let s = Sim::start(SimConfig::default()).await;
    let cus = s
        .post("/v1/customers", &[("email", "r@example.com")], None)
        .await
        .body;
    let cus_id = cus["id"].as_str().unwrap().to_owned();
    let paths = [
        "/v1/customers".to_owned(),
        format!("/v1/customers/{cus_id}"),
        "/v1/payment_intents".to_owned(),
        "/v1/setup_intents".to_owned(),
        "/v1/checkout/sessions".to_owned(),
        "/v1/products".to_owned(),
        "/v1/prices".to_owned(),
        "/v1/charges".to_owned(),
        "/v1/refunds".to_owned(),
        "/v1/payment_methods/pm_card_visa/attach".to_owned(),
        "/v1/events".to_owned(),
        "/v1/products/search".to_owned(),
    ];
    let pieces = [
        "amount",
        "currency",
        "usd",
        "jpy",
        "customer",
        &cus_id,
        "line_items",
        "[0]",
        "[]",
        "[price_data]",
        "[quantity]",
        "mode",
        "setup",
        "payment",
        "metadata",
        "[k]",
        "expand",
        "query",
        "'",
        "=",
        "&",
        "%",
        "%5B",
        "-1",
        "99999999999999999999",
        "true",
        "pm_card_visa",
        "confirm",
        "off_session",
        "limit",
        "starting_after",
        "created",
        "[gte]",
        "\u{e9}",
        "",
    ];
    // A small deterministic generator keeps the test reproducible.
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..400 {
        let path = &paths[(next() % paths.len() as u64) as usize];
        let body: String = (0..(next() % 12))
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let url = format!("{}{path}", s.sim.base_url());
        let rb = if next() % 3 == 0 {
            s.http.get(format!("{url}?{body}"))
        } else {
            s.http.post(url).body(body.clone())
        };
        let r = s.send(rb.bearer_auth(KEY)).await;
        assert!(
            r.status < 500,
            "{path} with {body:?} answered {}: {}",
            r.status,
            r.body
        );
        assert!(
            r.body.get("error").is_some() || r.status == 200,
            "{path} with {body:?}: {}",
            r.body
        );
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn the_clock_ages_keys_sessions_and_timestamps() {
    let s = Sim::start(SimConfig::default()).await;
    let clock = s.get("/_sim/clock").await;
    assert_eq!(clock.status, 200);
    assert_eq!(clock.body["offset_seconds"], 0);
    let start = clock.body["now"].as_i64().unwrap();

    let first = s.post("/v1/payment_intents", PI, Some("day-old")).await;
    assert_eq!(first.status, 200);
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "setup"),
                ("currency", "usd"),
                ("success_url", "http://127.0.0.1/ok"),
            ],
            Some("session-1"),
        )
        .await
        .body;
    assert_eq!(session["status"], "open");
    let expires_at = session["expires_at"].as_i64().unwrap();
    assert!(expires_at > start + 23 * 3600, "open for 24 h by default");

    // 23 hours later: the key is still remembered (a replay), the session still open.
    let advanced = s
        .http
        .post(format!("{}/_sim/clock/advance", s.sim.base_url()))
        .json(&serde_json::json!({"seconds": 23 * 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(advanced.status(), 200);
    let advanced: Value = advanced.json().await.unwrap();
    assert_eq!(advanced["offset_seconds"], 23 * 3600);
    assert_eq!(
        (
            advanced["keys_forgotten"].as_u64(),
            advanced["sessions_expired"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let replay = s.post("/v1/payment_intents", PI, Some("day-old")).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body["id"], first.body["id"]);

    // Two more hours (form-encoded this time): Stripe forgets keys at least 24 hours old, so the
    // same key is a new request, and the session's expires_at has passed.
    let advanced = s
        .send(
            s.http
                .post(format!("{}/_sim/clock/advance", s.sim.base_url()))
                .form(&[("seconds", "7200")]),
        )
        .await;
    assert_eq!(advanced.status, 200);
    assert!(advanced.body["keys_forgotten"].as_u64().unwrap() >= 2);
    assert_eq!(advanced.body["sessions_expired"], 1);
    let session_now = s
        .get(&format!(
            "/v1/checkout/sessions/{}",
            session["id"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(session_now["status"], "expired");
    let expired_events = s.get("/v1/events?type=checkout.session.expired").await.body;
    assert_eq!(
        expired_events["data"][0]["data"]["object"]["id"],
        session["id"]
    );

    let second = s.post("/v1/payment_intents", PI, Some("day-old")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_ne!(second.body["id"], first.body["id"], "a new PaymentIntent");
    // Objects and events carry the simulator's time.
    let created = second.body["created"].as_i64().unwrap();
    assert!(
        (start + 25 * 3600..start + 25 * 3600 + 60).contains(&created),
        "created {created} follows the clock (start {start})"
    );
    let later = s
        .get(&format!(
            "/v1/payment_intents?created[gte]={}",
            start + 24 * 3600
        ))
        .await
        .body;
    let ids: Vec<&Value> = later["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pi| &pi["id"])
        .collect();
    assert_eq!(ids, vec![&second.body["id"]], "list filters use the clock");
    let event = &s.get("/v1/events?type=payment_intent.created").await.body["data"][0];
    assert!(event["created"].as_i64().unwrap() >= start + 25 * 3600);
    assert_eq!(s.sim.now() / 60, (start + 25 * 3600) / 60);

    // The clock only moves forward, by a whole number of seconds.
    for bad in [
        serde_json::json!({"seconds": -5}),
        serde_json::json!({"seconds": 0}),
        serde_json::json!({"seconds": 1.5}),
        serde_json::json!({"seconds": "soon"}),
        serde_json::json!({}),
    ] {
        let refused = s
            .send(
                s.http
                    .post(format!("{}/_sim/clock/advance", s.sim.base_url()))
                    .json(&bad),
            )
            .await;
        assert_eq!(refused.status, 400, "{bad}: {:?}", refused.body);
        assert_eq!(refused.body["error"]["type"], "invalid_request_error");
    }
    assert_eq!(s.get("/_sim/clock").await.body["offset_seconds"], 25 * 3600);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn legacy_charge_shipping_needs_name_and_line1() {
    let s = Sim::start(SimConfig::default()).await;
    let base = [
        ("amount", "1000"),
        ("currency", "usd"),
        ("source", "tok_visa"),
    ];
    for (extra, param) in [
        (
            vec![("shipping[address][line1]", "1 Main St")],
            "shipping[name]",
        ),
        (vec![("shipping[name]", "Ada")], "shipping[address]"),
        (
            vec![
                ("shipping[name]", "Ada"),
                ("shipping[address][city]", "Paris"),
            ],
            "shipping[address][line1]",
        ),
    ] {
        let params: Vec<_> = base.iter().copied().chain(extra).collect();
        let r = s.post("/v1/charges", &params, None).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "parameter_missing");
        assert_eq!(r.body["error"]["param"], param);
    }
    let params: Vec<_> = base
        .iter()
        .copied()
        .chain([
            ("shipping[name]", "Ada"),
            ("shipping[address][line1]", "1 Main St"),
            ("shipping[address][country]", "US"),
        ])
        .collect();
    let ok = s.post("/v1/charges", &params, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["shipping"]["name"], "Ada");
    assert_eq!(ok.body["shipping"]["address"]["country"], "US");
}

/// A new customer with `pm_card_visa` attached: (customer id, PaymentMethod id).
async fn customer_with_a_saved_card(s: &Sim) -> (String, String) {
    let customer = s.post("/v1/customers", &[], None).await.body;
    let customer = customer["id"].as_str().unwrap().to_owned();
    let attached = s
        .post(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", customer.as_str())],
            None,
        )
        .await
        .body;
    (customer, attached["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_card_s_expiry_is_updated_with_its_event() {
    let s = Sim::start(SimConfig::default()).await;
    let (_, pm) = customer_with_a_saved_card(&s).await;
    let pm = pm.as_str();
    let path = format!("/v1/payment_methods/{pm}");

    let r = s
        .post(
            &path,
            &[("card[exp_month]", "7"), ("card[exp_year]", "2041")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let card = &s.get(&path).await.body["card"];
    assert_eq!(
        (card["exp_month"].clone(), card["exp_year"].clone()),
        (7.into(), 2041.into())
    );
    assert_eq!(card["last4"], "4242");
    let events = s.get("/v1/events?type=payment_method.updated").await.body;
    assert_eq!(
        events["data"][0]["data"]["object"]["card"]["exp_year"],
        2041
    );

    let r = s.post(&path, &[("card[exp_month]", "13")], None).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.body["error"]["code"], "invalid_expiry_month");
}

#[tokio::test]
async fn the_card_network_updates_a_saved_card_over_the_control_route() {
    let s = Sim::start(SimConfig::default()).await;
    let (customer, pm) = customer_with_a_saved_card(&s).await;
    let (customer, pm) = (customer.as_str(), pm.as_str());
    let control = format!("/_sim/payment_methods/{pm}/network_update");

    // A reissued card: new number and expiry, the same PaymentMethod and customer.
    let r = s
        .post(
            &control,
            &[("exp_month", "3"), ("exp_year", "2044"), ("last4", "1881")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], pm);
    let read = s.get(&format!("/v1/payment_methods/{pm}")).await.body;
    assert_eq!(read["customer"], customer);
    let card = &read["card"];
    assert_eq!(
        (
            card["exp_month"].clone(),
            card["exp_year"].clone(),
            card["last4"].clone()
        ),
        (3.into(), 2044.into(), "1881".into())
    );
    // Its event carries the new card and names no request: the network made the change.
    let events = s
        .get("/v1/events?type=payment_method.automatically_updated")
        .await
        .body;
    let events = events["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["object"]["card"]["last4"], "1881");
    assert_eq!(
        events[0]["request"],
        serde_json::json!({"id": null, "idempotency_key": null})
    );

    // Bad input is refused with Stripe's error body and changes nothing.
    for (form, param) in [
        (&[("exp_month", "13")][..], "exp_month"),
        (&[("last4", "12a4")][..], "last4"),
        // One good field with a bad one: nothing of it is applied.
        (&[("exp_month", "5"), ("last4", "12a4")][..], "last4"),
    ] {
        let r = s.post(&control, form, None).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
        assert_eq!(r.body["error"]["param"], param);
    }
    let r = s
        .post("/_sim/payment_methods/pm_missing/network_update", &[], None)
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "resource_missing");
    let card = &s.get(&format!("/v1/payment_methods/{pm}")).await.body["card"];
    assert_eq!(card["last4"], "1881");
    assert_eq!(card["exp_month"], 3);
    let events = s
        .get("/v1/events?type=payment_method.automatically_updated")
        .await
        .body;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(1));
}
