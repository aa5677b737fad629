//! Live mode next to test mode on one simulator, over HTTP: each mode's objects, events, idempotency
//! keys and webhook endpoints are its own (Stripe: one account, two modes, objects never shared); an
//! id of the other mode is Stripe's 404 naming that mode; test cards are declined in live mode and
//! the simulator's live card pays there; the request log says which mode and key each request used.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use kassa_stripe_sim::{
    key_fingerprint, KeyKind, SimConfig, Simulator, DEFAULT_LIVE_WEBHOOK_SECRET,
    DEFAULT_WEBHOOK_SECRET,
};
use serde_json::{json, Value};
use sha2::Sha256;

const TEST: &str = "sk_test_kassa_modes";
const LIVE: &str = "sk_live_kassa_modes";

struct Sim {
    sim: Simulator,
    http: reqwest::Client,
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        Sim {
            sim: Simulator::start(config).await.expect("simulator starts"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, key: &str, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.sim.base_url()))
                .bearer_auth(key)
                .form(form),
        )
        .await
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.sim.base_url()))
                .bearer_auth(key),
        )
        .await
    }

    async fn control(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.sim.base_url()))
                .json(&body),
        )
        .await
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().expect("an id")
}

#[tokio::test]
async fn each_mode_has_its_own_objects_and_names_the_other_when_asked_for_its_ids() {
    let s = Sim::start(SimConfig::default()).await;
    let (_, test_cus) = s
        .post(TEST, "/v1/customers", &[("email", "t@example.com")])
        .await;
    let (status, live_cus) = s
        .post(LIVE, "/v1/customers", &[("email", "l@example.com")])
        .await;
    assert_eq!(status, 200, "{live_cus}");
    assert_eq!(test_cus["livemode"], false);
    assert_eq!(live_cus["livemode"], true);

    // Each key sees its own mode's objects, a restricted key like a secret one.
    let (status, got) = s
        .get(
            "rk_live_kassa_modes",
            &format!("/v1/customers/{}", id(&live_cus)),
        )
        .await;
    assert_eq!(
        (status, got["email"].as_str()),
        (200, Some("l@example.com"))
    );
    let (_, listed) = s.get(LIVE, "/v1/customers").await;
    let ids: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, vec![&live_cus["id"]]);

    // The other mode's id: 404 resource_missing in Stripe's words, both ways.
    let (status, e) = s
        .get(LIVE, &format!("/v1/customers/{}", id(&test_cus)))
        .await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "resource_missing");
    assert_eq!(
        e["error"]["message"],
        format!(
            "No such customer: '{}'; a similar object exists in test mode, but a live mode key was used to make this request.",
            id(&test_cus)
        )
    );
    let (status, e) = s
        .get(TEST, &format!("/v1/customers/{}", id(&live_cus)))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        e["error"]["message"],
        format!(
            "No such customer: '{}'; a similar object exists in live mode, but a test mode key was used to make this request.",
            id(&live_cus)
        )
    );
    // As a parameter too (400, as for any missing id given as a parameter).
    let (status, e) = s
        .post(
            LIVE,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("customer", id(&test_cus)),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("; a similar object exists in test mode, but a live mode key was used to make this request."),
        "{e}"
    );
    // An id neither mode has: the plain message.
    let (_, e) = s.get(LIVE, "/v1/customers/cus_nowhere").await;
    assert_eq!(e["error"]["message"], "No such customer: 'cus_nowhere'");

    // Live-style ids where Stripe has them, and per-mode idempotency keys: the same key in each
    // mode makes one object in each.
    let session_form = [
        ("mode", "setup"),
        ("currency", "usd"),
        ("success_url", "http://127.0.0.1/ok"),
    ];
    let live_session = s
        .send(
            s.http
                .post(format!("{}/v1/checkout/sessions", s.sim.base_url()))
                .bearer_auth(LIVE)
                .header("Idempotency-Key", "same-key")
                .form(&session_form),
        )
        .await
        .1;
    let test_session = s
        .send(
            s.http
                .post(format!("{}/v1/checkout/sessions", s.sim.base_url()))
                .bearer_auth(TEST)
                .header("Idempotency-Key", "same-key")
                .form(&session_form),
        )
        .await
        .1;
    assert!(id(&live_session).starts_with("cs_live_"), "{live_session}");
    assert!(id(&test_session).starts_with("cs_test_"), "{test_session}");
    assert_eq!(live_session["livemode"], true);

    // The clock ages both modes: the live session expires with a live event.
    let advanced = s.sim.advance_clock(25 * 3600);
    assert_eq!(advanced.sessions_expired, 2);
    let (_, expired) = s
        .get(LIVE, "/v1/events?type=checkout.session.expired")
        .await;
    assert_eq!(expired["data"].as_array().unwrap().len(), 1);
    assert_eq!(expired["data"][0]["livemode"], true);
    assert_eq!(
        expired["data"][0]["data"]["object"]["id"],
        live_session["id"]
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn test_cards_are_declined_in_live_mode_and_the_live_card_pays() {
    let s = Sim::start(SimConfig::default()).await;
    let pay = |key: &'static str, pm: &'static str| {
        let s = &s;
        async move {
            s.post(
                key,
                "/v1/payment_intents",
                &[
                    ("amount", "2500"),
                    ("currency", "eur"),
                    ("payment_method", pm),
                    ("confirm", "true"),
                ],
            )
            .await
        }
    };
    // A test card in live mode: Stripe's decline for it.
    let (status, e) = pay(LIVE, "pm_card_visa").await;
    assert_eq!(status, 402, "{e}");
    assert_eq!(e["error"]["type"], "card_error");
    assert_eq!(e["error"]["code"], "card_declined");
    assert_eq!(e["error"]["decline_code"], "testmode_decline");
    assert_eq!(
        e["error"]["message"],
        "Your card was declined. Your request was in live mode, but used a known test card."
    );
    assert_eq!(e["error"]["payment_intent"]["livemode"], true);
    assert_eq!(
        e["error"]["payment_intent"]["status"],
        "requires_payment_method"
    );
    // Typed as a number: the PaymentMethod is made, the payment declined.
    let (status, pm) = s
        .post(
            LIVE,
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242 4242 4242 4242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2099"),
                ("card[cvc]", "123"),
            ],
        )
        .await;
    assert_eq!((status, pm["livemode"].as_bool()), (200, Some(true)));
    let (status, e) = s
        .post(
            LIVE,
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "eur"),
                ("payment_method", id(&pm)),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(
        (status, e["error"]["decline_code"].as_str()),
        (402, Some("testmode_decline"))
    );

    // The simulator's live card pays in live mode, as id and as number…
    let (status, pi) = pay(LIVE, "pm_card_simulatorLive").await;
    assert_eq!(
        (status, pi["status"].as_str()),
        (200, Some("succeeded")),
        "{pi}"
    );
    assert_eq!(pi["livemode"], true);
    let (_, charge) = s
        .get(
            LIVE,
            &format!("/v1/charges/{}", pi["latest_charge"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        (charge["livemode"].as_bool(), charge["paid"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, pm) = s
        .post(
            LIVE,
            "/v1/payment_methods",
            &[("type", "card"), ("card[number]", "4000000000007775")],
        )
        .await;
    let (status, pi) = s
        .post(
            LIVE,
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "eur"),
                ("payment_method", id(&pm)),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!((status, pi["status"].as_str()), (200, Some("succeeded")));
    // …and is a "real" card in test mode.
    let (status, e) = pay(TEST, "pm_card_simulatorLive").await;
    assert_eq!(status, 402);
    assert_eq!(e["error"]["decline_code"], "test_mode_live_card");

    // Saving a card follows the same rule: attach, SetupIntents, Checkout.
    let (_, cus) = s.post(LIVE, "/v1/customers", &[]).await;
    let (status, e) = s
        .post(
            LIVE,
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", id(&cus))],
        )
        .await;
    assert_eq!(
        (status, e["error"]["decline_code"].as_str()),
        (402, Some("testmode_decline"))
    );
    let (status, si) = s
        .post(
            LIVE,
            "/v1/setup_intents",
            &[
                ("customer", id(&cus)),
                ("payment_method", "pm_card_simulatorLive"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(
        (status, si["status"].as_str()),
        (200, Some("succeeded")),
        "{si}"
    );
    let (_, session) = s
        .post(
            LIVE,
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "1500"),
                ("line_items[0][price_data][product_data][name]", "Tea"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "http://127.0.0.1/ok"),
            ],
        )
        .await;
    let complete = format!("/_sim/checkout/sessions/{}/complete", id(&session));
    let (status, e) = s
        .control(&complete, json!({"payment_method": "pm_card_visa"}))
        .await;
    assert_eq!(
        (status, e["error"]["decline_code"].as_str()),
        (402, Some("testmode_decline"))
    );
    let (status, done) = s
        .control(
            &complete,
            json!({"payment_method": "pm_card_simulatorLive"}),
        )
        .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("complete")),
        "{done}"
    );
    assert_eq!(done["payment_status"], "paid");
    // The hosted page of a live session says so and offers the live card first.
    let page = s
        .http
        .get(format!("{}/c/pay/{}", s.sim.base_url(), id(&session)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("live mode"), "{page}");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn everything_live_mode_makes_says_livemode_true() {
    let s = Sim::start(SimConfig::default()).await;
    let (_, cus) = s
        .post(LIVE, "/v1/customers", &[("source", "tok_simulatorLive")])
        .await;
    let (_, product) = s.post(LIVE, "/v1/products", &[("name", "Tea")]).await;
    let (status, price) = s
        .post(
            LIVE,
            "/v1/prices",
            &[
                ("product", id(&product)),
                ("unit_amount", "900"),
                ("currency", "usd"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{price}");
    let (_, session) = s
        .post(
            LIVE,
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price]", id(&price)),
                ("line_items[0][quantity]", "2"),
                ("success_url", "http://127.0.0.1/ok"),
            ],
        )
        .await;
    let (status, _) = s
        .control(
            &format!("/_sim/checkout/sessions/{}/complete", id(&session)),
            json!({"payment_method": "pm_card_simulatorLive"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, charge) = s
        .post(
            LIVE,
            "/v1/charges",
            &[
                ("amount", "700"),
                ("currency", "usd"),
                ("customer", id(&cus)),
            ],
        )
        .await;
    assert_eq!(charge["paid"], true, "{charge}");
    let (status, _) = s
        .post(LIVE, "/v1/refunds", &[("charge", id(&charge))])
        .await;
    assert_eq!(status, 200);
    let (_, si) = s
        .post(
            LIVE,
            "/v1/setup_intents",
            &[
                ("customer", id(&cus)),
                ("payment_method", "pm_card_simulatorLive"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(si["status"], "succeeded");
    let (_, sepa) = s
        .post(
            LIVE,
            "/v1/payment_methods",
            &[
                ("type", "sepa_debit"),
                ("sepa_debit[iban]", "DE89370400440532013000"),
                ("billing_details[name]", "Jenny Rosen"),
                ("billing_details[email]", "jenny@example.com"),
            ],
        )
        .await;
    let (status, debit) = s
        .post(
            LIVE,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "eur"),
                ("payment_method_types[]", "sepa_debit"),
                ("payment_method", id(&sepa)),
                ("confirm", "true"),
                ("mandate_data[customer_acceptance][type]", "offline"),
            ],
        )
        .await;
    assert_eq!(
        (status, debit["status"].as_str()),
        (200, Some("processing"))
    );
    s.sim.advance_clock(1);
    // Every event live mode made, and every object in them, says livemode: true.
    let (_, events) = s.get(LIVE, "/v1/events?limit=100").await;
    let events = events["data"].as_array().unwrap().clone();
    let types: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in [
        "customer.created",
        "product.created",
        "price.created",
        "checkout.session.completed",
        "charge.succeeded",
        "charge.refunded",
        "setup_intent.succeeded",
        "payment_intent.succeeded",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(text.contains("\"livemode\":true"));
    assert!(
        !text.contains("\"livemode\":false"),
        "a live event or object says livemode: false"
    );
    let (_, test_events) = s.get(TEST, "/v1/events").await;
    assert_eq!(test_events["data"], json!([]), "test mode saw none of it");
    s.sim.shutdown().await;
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let state = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/webhooks/stripe",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                state.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn verifies(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let sig = headers.get("stripe-signature").unwrap().to_str().unwrap();
    let t = sig.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let v1 = sig.split(',').find_map(|p| p.strip_prefix("v1=")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
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

#[tokio::test]
async fn events_and_webhooks_belong_to_their_mode() {
    // One URL, as Kassa has one ingress: a test endpoint and a live endpoint, each with its secret.
    let (url, got) = receiver().await;
    let s = Sim::start(SimConfig {
        webhook_endpoints: vec![url.clone()],
        live_webhook_endpoints: vec![url.clone()],
        ..SimConfig::default()
    })
    .await;
    let (_, test_cus) = s.post(TEST, "/v1/customers", &[]).await;
    let (_, live_cus) = s.post(LIVE, "/v1/customers", &[]).await;
    let received = wait_for("both customer.created webhooks", || {
        let got = got.lock().unwrap().clone();
        (got.len() == 2).then_some(got)
    })
    .await;
    for (headers, body) in &received {
        let event: Value = serde_json::from_slice(body).unwrap();
        let live = event["livemode"].as_bool().unwrap();
        let expected = if live { &live_cus } else { &test_cus };
        assert_eq!(event["data"]["object"]["id"], expected["id"]);
        assert_eq!(event["data"]["object"]["livemode"], live);
        let (own, other) = if live {
            (DEFAULT_LIVE_WEBHOOK_SECRET, DEFAULT_WEBHOOK_SECRET)
        } else {
            (DEFAULT_WEBHOOK_SECRET, DEFAULT_LIVE_WEBHOOK_SECRET)
        };
        assert!(
            verifies(own, headers, body),
            "signed with its mode's secret"
        );
        assert!(
            !verifies(other, headers, body),
            "never with the other mode's"
        );
    }
    let log = wait_for("both deliveries logged", || {
        let log = s.sim.webhook_deliveries();
        (log.len() == 2).then_some(log)
    })
    .await;
    assert_eq!(log.iter().filter(|d| d.livemode).count(), 1);

    // /v1/events lists the key's mode only; the other mode's event is a 404 naming its mode.
    let (_, test_events) = s.get(TEST, "/v1/events").await;
    let (_, live_events) = s.get(LIVE, "/v1/events").await;
    assert!(test_events["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["livemode"] == false));
    let live_list = live_events["data"].as_array().unwrap();
    assert_eq!(live_list.len(), 1);
    assert_eq!(live_list[0]["livemode"], true);
    let (status, e) = s
        .get(TEST, &format!("/v1/events/{}", id(&live_list[0])))
        .await;
    assert_eq!(status, 404);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a similar object exists in live mode"));

    // Controls take the mode: endpoints are listed per mode, deliveries filtered by it.
    let (status, endpoints) = s
        .control(
            "/_sim/webhook_endpoints",
            json!({"url": "http://127.0.0.1:9/other", "mode": "live"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(endpoints["endpoints"], json!([url]));
    let mut live_endpoints = vec!["http://127.0.0.1:9/other".to_owned(), url.clone()];
    live_endpoints.sort();
    assert_eq!(endpoints["live_endpoints"], json!(live_endpoints));
    let (status, _) = s
        .control(
            "/_sim/webhook_endpoints",
            json!({"url": "http://127.0.0.1:9/x", "mode": "staging"}),
        )
        .await;
    assert_eq!(status, 400);
    let (_, live_deliveries) = s
        .send(s.http.get(format!(
            "{}/_sim/webhook_deliveries?mode=live",
            s.sim.base_url()
        )))
        .await;
    let live_deliveries = live_deliveries.as_array().unwrap();
    assert_eq!(live_deliveries.len(), 1);
    assert_eq!(live_deliveries[0]["livemode"], true);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn the_request_log_names_each_requests_mode_and_key_never_the_key() {
    let s = Sim::start(SimConfig::default()).await;
    let restricted_live = "rk_live_kassa_modes_restricted";
    let publishable_live = "pk_live_kassa_modes";
    s.post(TEST, "/v1/customers", &[]).await;
    let (_, cus) = s.post(restricted_live, "/v1/customers", &[]).await;
    s.get(LIVE, &format!("/v1/customers/{}", id(&cus))).await;
    // Stripe.js's way: the publishable key as the `key` parameter.
    let (status, pm) = s
        .send(
            s.http
                .post(format!("{}/v1/payment_methods", s.sim.base_url()))
                .form(&[
                    ("key", publishable_live),
                    ("type", "card"),
                    ("card[number]", "4000000000007775"),
                ]),
        )
        .await;
    assert_eq!(
        (status, pm["livemode"].as_bool()),
        (200, Some(true)),
        "{pm}"
    );
    s.send(s.http.get(format!("{}/v1/customers", s.sim.base_url())))
        .await;

    let log = s.sim.requests();
    /// What the log says of one request: endpoint, mode, key kind, key fingerprint.
    type Seen<'a> = (&'a str, Option<bool>, Option<KeyKind>, Option<String>);
    let seen: Vec<Seen> = log
        .iter()
        .map(|r| {
            (
                r.operation.as_str(),
                r.livemode,
                r.key_kind,
                r.key_fingerprint.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "POST /v1/customers",
                Some(false),
                Some(KeyKind::Secret),
                Some(key_fingerprint(TEST))
            ),
            (
                "POST /v1/customers",
                Some(true),
                Some(KeyKind::Restricted),
                Some(key_fingerprint(restricted_live))
            ),
            (
                "GET /v1/customers/{id}",
                Some(true),
                Some(KeyKind::Secret),
                Some(key_fingerprint(LIVE))
            ),
            (
                "POST /v1/payment_methods",
                Some(true),
                Some(KeyKind::Publishable),
                Some(key_fingerprint(publishable_live))
            ),
            ("GET /v1/customers", None, None, None),
        ]
    );
    let (_, raw) = s
        .send(s.http.get(format!("{}/_sim/requests", s.sim.base_url())))
        .await;
    let text = raw.to_string();
    for key in [TEST, LIVE, restricted_live, publishable_live] {
        assert!(!text.contains(key), "the log must never hold a key");
    }
    assert_eq!(raw[1]["key_kind"], "restricted");
    let (_, live_only) = s
        .send(
            s.http
                .get(format!("{}/_sim/requests?mode=live", s.sim.base_url())),
        )
        .await;
    assert_eq!(live_only.as_array().unwrap().len(), 3);
    let (status, _) = s
        .send(
            s.http
                .get(format!("{}/_sim/requests?mode=both", s.sim.base_url())),
        )
        .await;
    assert_eq!(status, 400);
    s.sim.shutdown().await;
}
