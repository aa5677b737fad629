//! The mode per call in one deployment with both key pairs: each API call, page and command is
//! served in the mode it names (`"livemode"`, `--live`/`--test`, the preview's test mode) or the
//! default mode; every Stripe request about an object is made with the key of the object's mode
//! (the simulator's request log says which key each request used), rows say their mode,
//! listings filter by it, and an id of one mode named by a call of the other is refused before
//! anything is sent to Stripe.

use crate::support::app::TestApp;
use crate::support::binary::{run, text};
use crate::support::sim::{card_of, fingerprint_of};
use crate::support::sim::{LIVE_API_KEY, LIVE_PUBLISHABLE_KEY, TEST_API_KEY, TEST_PUBLISHABLE_KEY};
use crate::support::{assert_error, eventually};
use kassa_store::ChargeStatus;
use kassa_stripe::Mode;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "mode-per-call-admin-token-0123456789";

/// A customer of `mode` on the simulator with a default card (see
/// [`TestApp::customer_with_card`]): its id.
async fn customer_with_card(app: &TestApp, mode: Mode) -> String {
    app.customer_with_card(mode).await.0.id
}

/// Every request the simulator was sent whose path names `id`.
fn requests_about(app: &TestApp, id: &str) -> Vec<kassa_stripe_sim::RecordedRequest> {
    app.sim()
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(id))
        .collect()
}

async fn succeeded(app: &TestApp, id: i64) -> kassa_store::ChargeRecord {
    eventually(Duration::from_secs(30), "the charge to succeed", || async {
        app.store()
            .charge(id)
            .await
            .unwrap()
            .filter(|c| c.status == ChargeStatus::Succeeded)
    })
    .await
}

#[tokio::test]
async fn live_and_test_charges_are_paid_with_their_own_keys_listed_by_mode_and_never_cross() {
    let app = TestApp::builder()
        .two_modes()
        .admin_token(TOKEN)
        .spawn()
        .await;
    let test_customer = customer_with_card(&app, Mode::Test).await;
    let live_customer = customer_with_card(&app, Mode::Live).await;
    let unique = uuid::Uuid::new_v4().simple().to_string();

    let (status, live) = app
        .post("/api/charges")
        .token(Some(TOKEN))
        .json(&json!({
            "customer": live_customer, "amount": 2500, "currency": "usd",
            "reference": format!("live-{unique}"), "livemode": true,
        }))
        .send()
        .await;
    assert_eq!(status, 202, "{live}");
    assert_eq!(live["livemode"], true, "{live}");
    // No livemode: the default mode (test here).
    let (status, test) = app
        .post("/api/charges")
        .token(Some(TOKEN))
        .json(&json!({
            "customer": test_customer, "amount": 1500, "currency": "usd",
            "reference": format!("test-{unique}"),
        }))
        .send()
        .await;
    assert_eq!(status, 202, "{test}");
    assert_eq!(test["livemode"], false, "{test}");

    let live_row = succeeded(&app, live["id"].as_i64().unwrap()).await;
    let test_row = succeeded(&app, test["id"].as_i64().unwrap()).await;
    assert!(live_row.livemode && !test_row.livemode);
    // One PaymentIntent each, made (and every later read of it) with its own mode's key.
    let creates = app.calls("POST", "/v1/payment_intents");
    assert_eq!(creates.len(), 2, "{creates:?}");
    for (row, mode) in [(&live_row, Mode::Live), (&test_row, Mode::Test)] {
        let intent = row.payment_intent_id.as_deref().expect("a PaymentIntent");
        let created: Vec<_> = creates
            .iter()
            .filter(|r| r.idempotency_key == row.attempt_key)
            .cloned()
            .collect();
        assert_eq!(created.len(), 1, "the {mode} charge's create: {creates:?}");
        for request in created.into_iter().chain(requests_about(&app, intent)) {
            assert_eq!(
                (request.livemode, request.key_fingerprint.as_deref()),
                (Some(mode.is_live()), Some(fingerprint_of(mode).as_str())),
                "{} {} about the {mode} charge",
                request.method,
                request.path
            );
        }
        let customer = app.store().customer(&row.customer_id).await.unwrap();
        assert_eq!(customer.map(|c| c.livemode), Some(mode.is_live()));
    }
    let refused: Vec<_> = app
        .sim()
        .requests()
        .into_iter()
        .filter(|r| r.status >= 400)
        .collect();
    assert!(refused.is_empty(), "no request crossed modes: {refused:?}");

    // Listings filter by mode; without a filter both modes, each row saying its own.
    let references = |page: &Value| -> Vec<(String, bool)> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["reference"].as_str().unwrap().to_owned(),
                    c["livemode"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let (status, only_live) = app
        .get("/api/charges?livemode=true")
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(status, 200, "{only_live}");
    assert_eq!(references(&only_live), [(format!("live-{unique}"), true)]);
    let (_, only_test) = app
        .get("/api/charges?livemode=false")
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(references(&only_test), [(format!("test-{unique}"), false)]);
    let (_, both) = app.get("/api/charges").token(Some(TOKEN)).send().await;
    assert_eq!(
        references(&both),
        [
            (format!("live-{unique}"), true),
            (format!("test-{unique}"), false)
        ]
    );

    // A live charge naming the customer Kassa holds in test mode: refused by name, nothing
    // recorded, no Stripe request at all.
    let before = app.sim().requests().len();
    let (status, crossed) = app
        .post("/api/charges")
        .token(Some(TOKEN))
        .json(&json!({
            "customer": test_customer, "amount": 900, "currency": "usd",
            "reference": format!("crossed-{unique}"), "livemode": true,
        }))
        .send()
        .await;
    assert_eq!(status, 400, "{crossed}");
    assert_error(
        &crossed,
        "mode_mismatch",
        "a test customer in a live charge",
    );
    assert_eq!(crossed["error"]["field"], "customer", "{crossed}");
    let message = crossed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&test_customer)
            && message.contains("test-mode customer")
            && message.contains("live mode"),
        "{message}"
    );
    assert_eq!(app.sim().requests().len(), before, "no Stripe call");
    assert!(app
        .store()
        .charge_by_reference(&format!("crossed-{unique}"))
        .await
        .unwrap()
        .is_none());
    // The same for a PaymentIntent and a save-card link.
    let (status, crossed) = app
        .post("/api/payment-intents")
        .token(Some(TOKEN))
        .idempotency_key(Some(&format!("crossed-pi-{unique}")))
        .json(&json!({"amount": 900, "customer": test_customer, "livemode": true}))
        .send()
        .await;
    assert_eq!(status, 400, "{crossed}");
    assert_error(
        &crossed,
        "mode_mismatch",
        "a test customer in a live PaymentIntent",
    );
    let (status, crossed) = app
        .post(&format!("/api/customers/{live_customer}/save-card-links"))
        .token(Some(TOKEN))
        .json(&json!({"livemode": false}))
        .send()
        .await;
    assert_eq!(status, 400, "{crossed}");
    assert_error(&crossed, "mode_mismatch", "a live customer in a test link");
    let (status, crossed) = app
        .post("/api/legacy-charges")
        .token(Some(TOKEN))
        .idempotency_key(Some(&format!("crossed-legacy-{unique}")))
        .json(&json!({"amount": 900, "currency": "usd", "customer": live_customer, "livemode": false}))
        .send()
        .await;
    assert_eq!(status, 400, "{crossed}");
    assert_error(
        &crossed,
        "mode_mismatch",
        "a live customer in a test legacy charge",
    );
    let (status, crossed) = app
        .get(&format!("/api/customers/{test_customer}?livemode=true"))
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(status, 404, "{crossed}");
    assert_error(
        &crossed,
        "customer_not_found",
        "a test customer looked up in live mode",
    );
    assert_eq!(app.sim().requests().len(), before, "no Stripe call");
    let (status, found) = app
        .get(&format!("/api/customers/{test_customer}?livemode=false"))
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(
        (status, found["id"].as_str()),
        (200, Some(test_customer.as_str()))
    );

    // The command line: `charges list --live` shows the live charge only, with its mode;
    // `charge --live` records a live charge of the live customer, refused for the test one.
    let cli = |args: &[&str]| {
        let mut command = app.kassa_command(args);
        command
            .env_remove("KASSA_STRIPE_API_KEY")
            .env("KASSA_STRIPE_TEST_SECRET_KEY", TEST_API_KEY)
            .env("KASSA_STRIPE_LIVE_SECRET_KEY", LIVE_API_KEY)
            .env("KASSA_DEFAULT_MODE", "test");
        command
    };
    let listed = run(cli(&["charges", "list", "--live"])).await;
    let stdout = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        stdout.contains(&format!("live-{unique}")) && !stdout.contains(&format!("test-{unique}")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&format!("live-{unique}")) && l.contains(" live ")),
        "each row shows its mode: {stdout}"
    );
    let charged = run(cli(&[
        "charge",
        "--live",
        "--customer",
        &live_customer,
        "--amount",
        "700",
        "--currency",
        "usd",
        "--reference",
        &format!("cli-live-{unique}"),
    ]))
    .await;
    assert!(charged.status.success(), "{}", text(&charged.stderr));
    let cli_row = app
        .store()
        .charge_by_reference(&format!("cli-live-{unique}"))
        .await
        .unwrap()
        .expect("recorded");
    assert!(cli_row.livemode, "--live: a live charge");
    let paid = succeeded(&app, cli_row.id).await;
    let created: Vec<_> = app
        .calls("POST", "/v1/payment_intents")
        .into_iter()
        .filter(|r| r.idempotency_key == paid.attempt_key)
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    for request in created {
        assert_eq!(
            request.key_fingerprint.as_deref(),
            Some(fingerprint_of(Mode::Live).as_str())
        );
    }
    let refused = run(cli(&[
        "charge",
        "--live",
        "--customer",
        &test_customer,
        "--amount",
        "700",
        "--currency",
        "usd",
        "--reference",
        &format!("cli-crossed-{unique}"),
    ]))
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("test-mode customer"),
        "{}",
        text(&refused.stderr)
    );
    let both = run(cli(&["charge", "--live", "--test", "--customer", "x"])).await;
    assert!(!both.status.success());
    assert!(
        text(&both.stderr).contains("cannot be used with"),
        "{}",
        text(&both.stderr)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_payment_intent_answers_with_the_publishable_key_of_its_own_mode() {
    let app = TestApp::builder()
        .two_modes()
        .admin_token(TOKEN)
        .without_worker()
        .spawn()
        .await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    for (livemode, mode, publishable) in [
        (Some(true), Mode::Live, LIVE_PUBLISHABLE_KEY),
        (Some(false), Mode::Test, TEST_PUBLISHABLE_KEY),
        (None, Mode::Test, TEST_PUBLISHABLE_KEY),
    ] {
        let mut body = json!({"amount": 1200, "currency": "usd"});
        if let Some(livemode) = livemode {
            body["livemode"] = json!(livemode);
        }
        let (status, intent) = app
            .post("/api/payment-intents")
            .token(Some(TOKEN))
            .idempotency_key(Some(&format!("pi-{livemode:?}-{unique}")))
            .json(&body)
            .send()
            .await;
        assert_eq!(status, 201, "{intent}");
        assert_eq!(intent["publishable_key"], publishable, "{intent}");
        assert_eq!(intent["livemode"], mode.is_live(), "{intent}");
        let id = intent["id"].as_str().unwrap();
        let created = app
            .stripe_in(mode)
            .payment_intents()
            .retrieve(id, &[])
            .await;
        assert_eq!(created.map(|pi| pi.livemode).ok(), Some(mode.is_live()));
        let creates: Vec<_> = app
            .calls("POST", "/v1/payment_intents")
            .into_iter()
            .filter(|r| {
                r.idempotency_key
                    .as_deref()
                    .is_some_and(|k| k.contains(&unique))
            })
            .filter(|r| r.key_fingerprint.as_deref() == Some(fingerprint_of(mode).as_str()))
            .collect();
        assert!(!creates.is_empty(), "created with the {mode} key");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_mode_without_keys_is_refused_naming_it_before_anything_is_sent() {
    // The embedded simulator: test mode only.
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .without_worker()
        .spawn()
        .await;
    let before = app.sim().requests().len();
    for (path, body) in [
        (
            "/api/payment-intents",
            json!({"amount": 500, "livemode": true}),
        ),
        (
            "/api/checkout-sessions",
            json!({"records": [{"name": "Tea", "unit_amount": 500}], "livemode": true}),
        ),
        (
            "/api/charges",
            json!({"customer": "cus_x", "amount": 500, "currency": "usd", "reference": "r-1", "livemode": true}),
        ),
        (
            "/api/customers",
            json!({"email": "a@example.com", "livemode": true}),
        ),
    ] {
        let (status, answer) = app
            .post(path)
            .token(Some(TOKEN))
            .idempotency_key(Some(&format!("no-live-{}", uuid::Uuid::new_v4())))
            .json(&body)
            .send()
            .await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_error(&answer, "mode_not_configured", path);
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("live mode is not configured")
                && message.contains("KASSA_STRIPE_LIVE_SECRET_KEY"),
            "{path}: {message}"
        );
    }
    assert_eq!(app.sim().requests().len(), before, "nothing sent to Stripe");
    app.cleanup().await;
}

/// Every Checkout Session create the simulator was sent, in order.
fn session_creates(app: &TestApp) -> Vec<kassa_stripe_sim::RecordedRequest> {
    app.calls("POST", "/v1/checkout/sessions")
        .into_iter()
        .filter(|r| r.path == "/v1/checkout/sessions")
        .collect()
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The Checkout Session id a 303 to the simulator's hosted page names.
fn session_of(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    let id = location.rsplit('/').next().unwrap().to_owned();
    assert!(id.starts_with("cs_"), "{location}");
    id
}

#[tokio::test]
async fn the_preview_creates_test_sessions_while_the_live_pages_create_live_ones() {
    let app = TestApp::builder()
        .two_modes()
        .default_mode(Mode::Live)
        .admin_token(TOKEN)
        .spawn()
        .await;
    let base = app.stack.base_url().unwrap();
    let http = no_redirects();

    // The preview's shop, in test mode although the default is live.
    let page = http.get(format!("{base}/preview/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("action=\"/preview/create-checkout-session\"")
            && html.contains("test mode: no real money moves"),
        "{html}"
    );
    let bought = http
        .post(format!("{base}/preview/create-checkout-session"))
        .form(&[("quantity", "1")])
        .send()
        .await
        .unwrap();
    let preview_session = session_of(&bought);
    let recorded = app
        .store()
        .checkout_session(&preview_session)
        .await
        .unwrap()
        .expect("recorded");
    assert!(!recorded.livemode, "a preview's session is a test-mode one");
    let created = session_creates(&app);
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        created[0].key_fingerprint.as_deref(),
        Some(fingerprint_of(Mode::Test).as_str())
    );
    // It sends the customer back to the preview's pages.
    let session = app
        .stripe_in(Mode::Test)
        .checkout_sessions()
        .retrieve(&preview_session, &[])
        .await
        .unwrap();
    assert!(
        session
            .success_url
            .as_deref()
            .is_some_and(|u| u.starts_with(&format!("{base}/preview/success"))),
        "{:?}",
        session.success_url
    );

    // The merchant's own pages are live: the demo shop is not offered in live mode, and a
    // customer's page (a save-card link, made without "livemode": the default) opens a live
    // session made with the live key.
    let shop = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(shop.status(), 404, "no demo shop in live mode");
    let live_customer = customer_with_card(&app, Mode::Live).await;
    let (status, link) = app
        .post(&format!("/api/customers/{live_customer}/save-card-links"))
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["livemode"], true, "{link}");
    let opened = http
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let live_session = session_of(&opened);
    let recorded = app
        .store()
        .checkout_session(&live_session)
        .await
        .unwrap()
        .expect("recorded");
    assert!(recorded.livemode, "the live page's session is a live one");
    let created = session_creates(&app);
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(
        created[1].key_fingerprint.as_deref(),
        Some(fingerprint_of(Mode::Live).as_str())
    );

    // Paid and back: each success page reads its session with the session's own key; the
    // preview's success page does not show a live session.
    app.complete(&preview_session, card_of(Mode::Test));
    let page = http
        .get(format!(
            "{base}/preview/success?session_id={preview_session}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("data-status=\"paid\""), "{html}");
    let live_on_preview = http
        .get(format!("{base}/preview/success?session_id={live_session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(live_on_preview.status(), 404);
    for request in requests_about(&app, &preview_session) {
        assert_eq!(
            request.key_fingerprint.as_deref(),
            Some(fingerprint_of(Mode::Test).as_str()),
            "{} {}",
            request.method,
            request.path
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn without_test_keys_the_preview_says_so_and_a_test_call_is_refused() {
    let app = TestApp::builder()
        .live_only()
        .admin_token(TOKEN)
        .without_worker()
        .spawn()
        .await;
    let base = app.stack.base_url().unwrap();
    let http = no_redirects();
    for (method, path) in [
        (reqwest::Method::GET, "/preview/"),
        (
            reqwest::Method::GET,
            "/preview/success?session_id=cs_test_1",
        ),
        (reqwest::Method::POST, "/preview/create-checkout-session"),
    ] {
        let page = http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404, "{method} {path}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("The preview uses Stripe&#39;s test mode")
                && html.contains("KASSA_STRIPE_TEST_SECRET_KEY"),
            "{method} {path}: {html}"
        );
    }
    assert!(
        session_creates(&app).is_empty(),
        "no session, and never with the live key"
    );
    // The default is live: a PaymentIntent naming no mode is a live one with the live
    // publishable key; one asking for test mode is refused by name.
    let (status, intent) = app
        .post("/api/payment-intents")
        .token(Some(TOKEN))
        .idempotency_key(Some(&format!("live-only-{}", uuid::Uuid::new_v4())))
        .json(&json!({"amount": 800, "currency": "usd"}))
        .send()
        .await;
    assert_eq!(status, 201, "{intent}");
    assert_eq!(
        (
            intent["livemode"].as_bool(),
            intent["publishable_key"].as_str()
        ),
        (Some(true), Some(LIVE_PUBLISHABLE_KEY))
    );
    let before = app.sim().requests().len();
    let (status, refused) = app
        .post("/api/payment-intents")
        .token(Some(TOKEN))
        .idempotency_key(Some(&format!("test-refused-{}", uuid::Uuid::new_v4())))
        .json(&json!({"amount": 800, "currency": "usd", "livemode": false}))
        .send()
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_error(&refused, "mode_not_configured", "test mode without keys");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("test mode is not configured"));
    assert_eq!(app.sim().requests().len(), before, "nothing sent to Stripe");
    app.cleanup().await;
}
