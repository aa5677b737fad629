//! Checkout and payment endpoints: the checkout-session and payment-intent APIs with their bad
//! inputs, product upsert by product_code, JPY unscaled, and the merchant pages — the success
//! page and the webhook racing record each payment once, with one notification and one receipt.

use crate::support::app::TestApp;
use crate::support::smtp_sink::{addressed_to, SmtpSink};
use crate::support::{assert_error, sim};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "checkout-tests-admin-token-0123456789";
const NOTIFY: &str = "shop-owner@example.com";

async fn app() -> TestApp {
    TestApp::builder().admin_token(TOKEN).spawn().await
}

/// The app with its APIs, e-mailing the merchant (`NOTIFY`) and customers through an SMTP sink.
async fn shop_with_mail() -> (TestApp, SmtpSink) {
    let smtp = SmtpSink::start().await;
    let builder = TestApp::builder().admin_token(TOKEN).smtp(smtp.url());
    (builder.notify_email(NOTIFY).spawn().await, smtp)
}

fn base(app: &TestApp) -> String {
    app.stack.base_url().unwrap()
}

/// POSTs `body` with `token` and a fresh Idempotency-Key (these routes require one).
async fn post_api(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let key = uuid::Uuid::new_v4().to_string();
    app.post(path)
        .token(token)
        .idempotency_key(Some(&key))
        .json(&body)
        .send()
        .await
}

/// POSTs that reached the simulator and created something.
fn creates(app: &TestApp) -> usize {
    app.sim()
        .requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && (r.path.starts_with("/v1/checkout/sessions")
                    || r.path.starts_with("/v1/products")
                    || r.path.starts_with("/v1/payment_intents"))
        })
        .count()
}

async fn products_with_code(app: &TestApp, code: &str) -> Vec<kassa_stripe::objects::Product> {
    let all = app
        .stripe()
        .products()
        .list(&kassa_stripe::resources::ListProducts {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    all.data
        .into_iter()
        .filter(|p| p.metadata.get("product_code").map(String::as_str) == Some(code))
        .collect()
}

/// `payment.succeeded` alerts queued in the outbox: one per payment announced.
async fn announced_payments(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE message_type = 'payment.succeeded'")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn checkout_session_api_creates_a_24h_session_from_records() {
    let app = app().await;
    let (status, body) = post_api(
        &app,
        "/api/checkout-sessions",
        Some(TOKEN),
        json!({
            "records": [
                {"name": "Espresso beans 1 kg", "unit_amount": 2450, "quantity": 2, "product_code": "BEANS-1KG"},
                {"name": "Gift wrap", "unit_amount": 300, "quantity": 1}
            ],
            "customer_email": "buyer@example.com"
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    assert!(
        id.starts_with("cs_test_") || id.starts_with("cs_"),
        "{body}"
    );
    assert!(body["url"].as_str().unwrap().contains(id), "{body}");
    let expires_at = body["expires_at"].as_i64().unwrap();
    let in_24h = crate::support::now() + 24 * 3600;
    assert!((expires_at - in_24h).abs() < 120, "valid for 24 h: {body}");
    assert_eq!(
        body["amount_total"], 5200,
        "default currency usd, cents: {body}"
    );

    let session = app
        .stripe()
        .checkout_sessions()
        .retrieve(id, &[])
        .await
        .unwrap();
    assert_eq!(session.currency.as_deref(), Some("usd"));
    assert_eq!(session.amount_total, Some(5200));
    assert_eq!(
        session.success_url.as_deref(),
        Some(format!("{}/success?session_id={{CHECKOUT_SESSION_ID}}", base(&app)).as_str())
    );
    let items = app
        .stripe()
        .checkout_sessions()
        .list_line_items(id, &Default::default())
        .await
        .unwrap();
    assert_eq!(items.data.len(), 2);
    let beans = products_with_code(&app, "BEANS-1KG").await;
    assert_eq!(beans.len(), 1, "a product for the product_code");
    assert_eq!(beans[0].name, "Espresso beans 1 kg");
    app.cleanup().await;
}

#[tokio::test]
async fn product_upsert_by_product_code_creates_once_then_updates() {
    let app = app().await;
    let record = |name: &str| json!({"records": [{"name": name, "unit_amount": 1200, "quantity": 1, "product_code": "MUG-01"}]});
    let (status, body) = post_api(&app, "/api/checkout-sessions", Some(TOKEN), record("Mug")).await;
    assert_eq!(status, 201, "{body}");
    let first = products_with_code(&app, "MUG-01").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].name, "Mug");

    // Same code, same name: reused as is.
    let (status, _) = post_api(&app, "/api/checkout-sessions", Some(TOKEN), record("Mug")).await;
    assert_eq!(status, 201);
    // Same code, new name: the same product, renamed.
    let (status, body) = post_api(
        &app,
        "/api/checkout-sessions",
        Some(TOKEN),
        record("Mug, large"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let after = products_with_code(&app, "MUG-01").await;
    assert_eq!(after.len(), 1, "never a second product for one code");
    assert_eq!(after[0].id, first[0].id);
    assert_eq!(after[0].name, "Mug, large");
    assert_eq!(
        app.calls("POST", "/v1/products").len(),
        2,
        "one create and one update, nothing for the unchanged call"
    );
    // Renamed back and forth within seconds: each rename takes effect.
    for name in ["Mug", "Mug, large"] {
        let (status, body) =
            post_api(&app, "/api/checkout-sessions", Some(TOKEN), record(name)).await;
        assert_eq!(status, 201, "{body}");
        let now = products_with_code(&app, "MUG-01").await;
        assert_eq!((now.len(), now[0].name.as_str()), (1, name));
    }
    app.cleanup().await;
}

#[tokio::test]
async fn jpy_amounts_go_to_stripe_unscaled() {
    let app = app().await;
    let (status, body) = post_api(
        &app,
        "/api/checkout-sessions",
        Some(TOKEN),
        json!({"currency": "JPY", "records": [{"name": "Matcha", "unit_amount": 1000, "quantity": 3}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["amount_total"], 3000, "¥3,000, not ¥300,000: {body}");
    let session = app
        .stripe()
        .checkout_sessions()
        .retrieve(body["id"].as_str().unwrap(), &["line_items"])
        .await
        .unwrap();
    assert_eq!(session.currency.as_deref(), Some("jpy"));
    assert_eq!(session.amount_total, Some(3000));

    let (status, body) = post_api(
        &app,
        "/api/payment-intents",
        Some(TOKEN),
        json!({"amount": 1000, "currency": "jpy"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let intent = app
        .stripe()
        .payment_intents()
        .retrieve(body["id"].as_str().unwrap(), &[])
        .await
        .unwrap();
    assert_eq!((intent.amount, intent.currency.as_str()), (1000, "jpy"));
    app.cleanup().await;
}

/// One bad request: path, Bearer token, body, expected status, error code and field.
type BadCase<'a> = (
    &'a str,
    Option<&'a str>,
    Value,
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test]
async fn bad_inputs_are_4xx_json_and_create_nothing() {
    let app = app().await;
    let good = json!({"records": [{"name": "Tea", "unit_amount": 500, "quantity": 1}]});
    let cases: Vec<BadCase> = vec![
        (
            "/api/checkout-sessions",
            None,
            good.clone(),
            401,
            "unauthorized",
            None,
        ),
        (
            "/api/checkout-sessions",
            Some("wrong-token-wrong-token"),
            good.clone(),
            401,
            "unauthorized",
            None,
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"records": []}),
            400,
            "records_empty",
            Some("records"),
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({}),
            400,
            "records_empty",
            Some("records"),
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"records": [{"name": "Tea", "unit_amount": 500}, {"name": "Cake", "unit_amount": 4.5}]}),
            400,
            "invalid_field",
            Some("records[1].unit_amount"),
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"records": [{"name": "Tea", "unit_amount": "500"}]}),
            400,
            "invalid_field",
            Some("records[0].unit_amount"),
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"currency": "xyz", "records": [{"name": "Tea", "unit_amount": 500}]}),
            400,
            "invalid_field",
            Some("currency"),
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"customer": "cus_doesnotexist", "records": [{"name": "Tea", "unit_amount": 500, "product_code": "TEA"}]}),
            400,
            "invalid_field",
            Some("customer"),
        ),
        (
            "/api/payment-intents",
            None,
            json!({"amount": 1000}),
            401,
            "unauthorized",
            None,
        ),
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({"amount": 10.5}),
            400,
            "invalid_field",
            Some("amount"),
        ),
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({"amount": "1000"}),
            400,
            "invalid_field",
            Some("amount"),
        ),
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({}),
            400,
            "invalid_field",
            Some("amount"),
        ),
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({"amount": 1000, "currency": "abc"}),
            400,
            "invalid_field",
            Some("currency"),
        ),
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({"amount": 10}),
            400,
            "invalid_field",
            Some("amount"),
        ),
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({"amount": 1000, "customer": "cus_nobody"}),
            400,
            "invalid_field",
            Some("customer"),
        ),
        (
            "/api/payment-intents/pi_x/confirmation",
            None,
            json!({}),
            401,
            "unauthorized",
            None,
        ),
        // A typo must not quietly become the default (a $10.00 charge instead of ¥1,000).
        (
            "/api/payment-intents",
            Some(TOKEN),
            json!({"amount": 1000, "curency": "jpy"}),
            400,
            "invalid_json",
            None,
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"curency": "jpy", "records": [{"name": "Tea", "unit_amount": 500}]}),
            400,
            "invalid_json",
            None,
        ),
        (
            "/api/checkout-sessions",
            Some(TOKEN),
            json!({"records": [{"name": "Tea", "unit_amount": 500, "qty": 3}]}),
            400,
            "invalid_field",
            Some("records[0].qty"),
        ),
    ];
    for (path, token, body, status, code, field) in cases {
        let (got, answer) = post_api(&app, path, token, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert_error(&answer, code, &format!("{path} {body}"));
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{path} {body}: {answer}");
        }
    }
    // Malformed JSON is a 400 JSON error too.
    let response = app
        .http
        .post(format!("{}/api/checkout-sessions", base(&app)))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "malformed-json-1")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "invalid_json");

    // Unknown routes, wrong methods and bad query strings answer JSON too.
    for (method, path, status, code) in [
        (reqwest::Method::GET, "/api/no-such-route", 404, "not_found"),
        (
            reqwest::Method::GET,
            "/api/checkout-sessions",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::GET,
            "/api/charges?limit=many",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/api/charges?livemode=maybe",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/api/widgets?livemode=maybe",
            400,
            "invalid_query",
        ),
    ] {
        let response = app
            .http
            .request(method, format!("{}{path}", base(&app)))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{path}: {answer}");
    }

    assert_eq!(creates(&app), 0, "nothing was created at Stripe");
    assert!(products_with_code(&app, "TEA").await.is_empty());
    assert_eq!(app.store().count_payments().await.unwrap(), 0);
    app.cleanup().await;
}

/// The merchant page's flow: Buy → 303 to Checkout; paying there sends the customer to the
/// success page while Stripe sends the webhook. Both fulfil; each payment is recorded once and
/// announced once (one notification to the merchant, one receipt to the customer).
#[tokio::test]
async fn success_page_and_webhook_racing_fulfil_each_payment_once() {
    let (app, smtp) = shop_with_mail().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let shop = app
        .http
        .get(format!("{}/", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(shop.status(), StatusCode::OK);
    let page = shop.text().await.unwrap();
    assert!(
        page.contains("id=\"buy\"") && page.contains("$20.00"),
        "{page}"
    );

    const BUYERS: usize = 4;
    let mut sessions = Vec::new();
    for i in 0..BUYERS {
        let bought = no_redirects
            .post(format!("{}/create-checkout-session", base(&app)))
            .form(&[
                ("email", format!("buyer{i}@example.com")),
                ("quantity", "2".into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(bought.status(), StatusCode::SEE_OTHER);
        let location = bought.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(&app.sim().base_url()), "{location}");
        let id = location.rsplit('/').next().unwrap().to_owned();
        assert!(id.starts_with("cs_"), "{location}");
        sessions.push(id);
    }
    assert_eq!(
        products_with_code(&app, "kassa-notebook").await.len(),
        1,
        "four Buy clicks, one product"
    );

    // Pay all four, and hit each success page right away: the webhooks are in flight.
    let mut pages = tokio::task::JoinSet::new();
    for id in &sessions {
        app.complete(id, "pm_card_visa");
        let url = format!("{}/success?session_id={id}", base(&app));
        let http = app.http.clone();
        pages.spawn(async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        });
    }
    while let Some(page) = pages.join_next().await {
        let (status, body) = page.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("data-status=\"paid\""), "{body}");
        assert!(body.contains("$40.00"), "two notebooks: {body}");
    }

    // Wait for every webhook to be processed too, then count.
    for id in &sessions {
        let events = app.stripe_events("checkout.session.completed").await;
        let event = events
            .iter()
            .find(|e| e["data"]["object"]["id"] == id.as_str())
            .expect("a completed event for the session");
        app.processed(event["id"].as_str().unwrap()).await;
    }
    for event in app.stripe_events("payment_intent.succeeded").await {
        app.processed(event["id"].as_str().unwrap()).await;
    }
    assert_eq!(app.store().count_payments().await.unwrap(), BUYERS as i64);
    for id in &sessions {
        let payment = app.store().payment_by_session(id).await.unwrap().unwrap();
        assert_eq!((payment.amount, payment.currency.as_str()), (4000, "usd"));
        assert!(payment.receipt_email.unwrap().ends_with("@example.com"));
    }
    let announced = announced_payments(&app).await;
    assert_eq!(
        announced, BUYERS as i64,
        "one payment.succeeded per payment"
    );

    let mail = smtp.wait_for(2 * BUYERS).await;
    app.drained(&app.topology.alerts_email_queue()).await;
    let mail = {
        let all = smtp.received.lock().unwrap().clone();
        assert_eq!(all.len(), mail.len().max(2 * BUYERS), "no e-mail twice");
        all
    };
    assert_eq!(
        addressed_to(&mail, NOTIFY),
        BUYERS,
        "one notification per payment"
    );
    for i in 0..BUYERS {
        let receipts = addressed_to(&mail, &format!("buyer{i}@"));
        assert_eq!(receipts, 1, "one receipt for buyer {i}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn payment_intent_api_and_confirmation_record_the_payment_once() {
    let (app, smtp) = shop_with_mail().await;
    let (status, body) = post_api(
        &app,
        "/api/payment-intents",
        Some(TOKEN),
        json!({"amount": 1999, "description": "Order 1001", "receipt_email": "payer@example.com"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let client_secret = body["client_secret"].as_str().unwrap().to_owned();
    assert!(body["client_secret"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{id}_secret_")));
    assert!(
        body["publishable_key"]
            .as_str()
            .unwrap()
            .starts_with("pk_test_"),
        "the publishable key of the secret key's mode: {body}"
    );
    assert_eq!(
        (body["amount"].as_i64(), body["currency"].as_str()),
        (Some(1999), Some("usd"))
    );

    // Not paid yet: nothing is recorded.
    let confirmation = format!("/api/payment-intents/{id}/confirmation");
    let (status, body) = post_api(&app, &confirmation, Some(TOKEN), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], false, "{body}");
    assert_eq!(app.store().count_payments().await.unwrap(), 0);

    // The customer pays on the merchant's form (Stripe.js confirms the intent).
    let confirm = format!("/v1/payment_intents/{id}/confirm");
    let card = [("payment_method", "pm_card_visa")];
    let paid = sim::post_form(&app.sim().base_url(), &confirm, &card).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");

    // A browser holding only the client secret may confirm, but not choose where the
    // merchant's e-mails go: refused before anything is recorded.
    let (status, refused) = post_api(
        &app,
        &confirmation,
        None,
        json!({"client_secret": client_secret, "notify_email": "attacker@example.com"}),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "admin_token_required");
    assert_eq!(app.store().count_payments().await.unwrap(), 0);

    // The page's confirmation and the webhook race; twice more for good measure.
    let mut recorded_now = 0;
    for _ in 0..3 {
        let (status, body) = post_api(&app, &confirmation, Some(TOKEN), json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "succeeded", "{body}");
        assert_eq!(body["recorded"], true, "{body}");
        if body["recorded_now"] == true {
            recorded_now += 1;
        }
    }
    assert!(recorded_now <= 1, "recorded once at most by the page");
    for event in app.stripe_events("payment_intent.succeeded").await {
        app.processed(event["id"].as_str().unwrap()).await;
    }
    assert_eq!(app.store().count_payments().await.unwrap(), 1);
    let payment = app.store().payment_by_intent(&id).await.unwrap().unwrap();
    assert_eq!(payment.amount, 1999);
    assert_eq!(payment.description.as_deref(), Some("Order 1001"));
    assert_eq!(payment.receipt_email.as_deref(), Some("payer@example.com"));
    // Kassa sends the receipt; Stripe's own receipt_email stays unset, or Stripe would send a
    // second one in live mode.
    let intent = app
        .stripe()
        .payment_intents()
        .retrieve(&id, &[])
        .await
        .unwrap();
    assert_eq!(intent.receipt_email, None);

    let mail = smtp.wait_for(2).await;
    app.drained(&app.topology.alerts_email_queue()).await;
    assert_eq!(smtp.received.lock().unwrap().len(), 2, "{mail:?}");
    let text: Vec<String> = mail
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect();
    assert!(
        text.iter().any(|t| t.contains("Payment received: $19.99")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("Your receipt: $19.99")),
        "{text:?}"
    );

    // A PaymentIntent that does not exist.
    let (status, body) = post_api(
        &app,
        "/api/payment-intents/pi_nonexistent/confirmation",
        Some(TOKEN),
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    app.cleanup().await;
}

#[tokio::test]
async fn success_page_without_a_session_and_cancel_page() {
    let app = app().await;
    let response = app
        .http
        .get(format!("{}/success", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app
        .http
        .get(format!("{}/success?session_id=cs_test_unknown", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app
        .http
        .get(format!("{}/cancel", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Nothing was charged"));
    // An open, unpaid session: not paid, nothing recorded.
    let (_, body) = post_api(
        &app,
        "/api/checkout-sessions",
        Some(TOKEN),
        json!({"records": [{"name": "Tea", "unit_amount": 500}]}),
    )
    .await;
    let page = app
        .http
        .get(format!(
            "{}/success?session_id={}",
            base(&app),
            body["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-status=\"not_paid\""), "{page}");
    assert_eq!(app.store().count_payments().await.unwrap(), 0);
    app.cleanup().await;
}

#[test]
fn publishable_key_of_the_other_mode_is_refused() {
    use kassa::stack::check_publishable_key;
    use kassa_stripe::Mode;
    assert!(check_publishable_key("pk_test_abc", Mode::Test).is_ok());
    assert!(check_publishable_key("pk_live_abc", Mode::Live).is_ok());
    let error = check_publishable_key("pk_live_abc", Mode::Test).unwrap_err();
    assert!(error.to_string().contains("never mix"), "{error}");
    assert!(check_publishable_key("pk_test_abc", Mode::Live).is_err());
    assert!(check_publishable_key("sk_test_abc", Mode::Test).is_err());
}

/// When `payment_intent.succeeded` reaches Kassa before `checkout.session.completed` (Stripe
/// does not promise an order), the payment is recorded from the intent with what its session
/// knows — the session id and the customer's e-mail for the receipt — and the session's event
/// that comes later is a no-op.
#[tokio::test]
async fn payment_intent_webhook_first_records_the_checkout_payment_with_its_receipt_address() {
    // Every webhook is lost: the test hands the two events to the worker itself, in order.
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .dropping_webhooks()
        .spawn()
        .await;
    let (status, session) = post_api(
        &app,
        "/api/checkout-sessions",
        Some(TOKEN),
        json!({
            "records": [{"name": "Tea", "unit_amount": 1200, "quantity": 1}],
            "customer_email": "first-intent@example.com"
        }),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["id"].as_str().unwrap().to_owned();
    app.complete(&session_id, "pm_card_visa");

    let intent_event = app
        .stripe_events("payment_intent.succeeded")
        .await
        .pop()
        .expect("a payment_intent.succeeded event");
    app.publish_event(&intent_event).await;
    app.processed(intent_event["id"].as_str().unwrap()).await;
    let payment = app
        .store()
        .payment_by_session(&session_id)
        .await
        .unwrap()
        .expect("recorded from the intent, under its session");
    assert_eq!(payment.amount, 1200);
    assert_eq!(
        payment.receipt_email.as_deref(),
        Some("first-intent@example.com")
    );

    let session_event = app
        .stripe_events("checkout.session.completed")
        .await
        .pop()
        .expect("a checkout.session.completed event");
    app.publish_event(&session_event).await;
    app.processed(session_event["id"].as_str().unwrap()).await;
    assert_eq!(app.store().count_payments().await.unwrap(), 1);
    let announced = announced_payments(&app).await;
    assert_eq!(announced, 1, "one payment, announced once");
    app.cleanup().await;
}

/// Payments on the same Stripe account that neither Kassa's pages nor its API made (an invoice,
/// a Payment Link, another integration) are not recorded or announced as Kassa's.
#[tokio::test]
async fn payments_not_made_through_kassa_are_not_recorded() {
    let app = app().await;
    let intent = app
        .stripe()
        .payment_intents()
        .create(
            &kassa_stripe::resources::CreatePaymentIntent {
                amount: 2500,
                currency: "usd".into(),
                payment_method: Some("pm_card_visa".into()),
                confirm: Some(true),
                payment_method_types: Some(vec!["card".into()]),
                ..Default::default()
            },
            &kassa_stripe::IdempotencyKey::new("kassa-test-foreign-payment").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        intent.status,
        kassa_stripe::objects::PaymentIntentStatus::Succeeded
    );
    let event = crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the payment_intent.succeeded event",
        || async {
            app.stripe_events("payment_intent.succeeded")
                .await
                .into_iter()
                .find(|e| e["data"]["object"]["id"] == intent.id.as_str())
        },
    )
    .await;
    app.processed(event["id"].as_str().unwrap()).await;
    let (status, body) = post_api(
        &app,
        &format!("/api/payment-intents/{}/confirmation", intent.id),
        Some(TOKEN),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], false, "{body}");
    assert_eq!(app.store().count_payments().await.unwrap(), 0);
    let announced = announced_payments(&app).await;
    assert_eq!(announced, 0);
    app.cleanup().await;
}

/// A flood of success-page requests for a session Kassa created (each one calls Stripe while
/// holding a database connection) is bounded: beyond the pages' in-flight limit the answer is
/// 503 "try again", so the flood cannot take every pooled connection, and the page works again
/// once it has passed.
#[tokio::test]
async fn a_flood_of_success_pages_is_shed_with_503_and_the_page_recovers() {
    let app = app().await;
    let (status, session) = post_api(
        &app,
        "/api/checkout-sessions",
        Some(TOKEN),
        json!({"records": [{"name": "Tea", "unit_amount": 500}]}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let url = format!(
        "{}/success?session_id={}",
        base(&app),
        session["id"].as_str().unwrap()
    );
    app.sim().set_faults(kassa_stripe_sim::Faults {
        latency: std::time::Duration::from_millis(400),
        ..kassa_stripe_sim::Faults::default()
    });
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..(kassa_api::PAGE_CALLS_IN_FLIGHT * 3) {
        let (url, http) = (url.clone(), app.http.clone());
        requests.spawn(async move { http.get(url).send().await.unwrap().status().as_u16() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = requests.join_next().await {
        statuses.push(status.unwrap());
    }
    let shed = statuses.iter().filter(|&&s| s == 503).count();
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert!(shed > 0, "some requests were shed: {statuses:?}");
    assert!(
        served >= kassa_api::PAGE_CALLS_IN_FLIGHT / 2,
        "the rest were served (an open session: not paid yet): {statuses:?}"
    );
    assert_eq!(shed + served, statuses.len(), "{statuses:?}");

    app.sim().set_faults(kassa_stripe_sim::Faults::default());
    let after = app.http.get(&url).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::OK, "served again");
    app.cleanup().await;
}

/// `/success` with ids Kassa never created costs Stripe nothing, and one address flooding the
/// public pages is cut off with 429 JSON beyond its limit (counted on /metrics), while the
/// authenticated APIs and the webhook stay unlimited.
#[tokio::test]
async fn made_up_session_ids_never_reach_stripe_and_a_flood_is_rate_limited() {
    const BURST: u32 = 10;
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .without_worker()
        .public_rate_limit(1, BURST)
        .spawn()
        .await;
    let stripe_calls_before = app.sim().requests().len();
    let mut statuses = Vec::new();
    let mut limited = Vec::new();
    for i in 0..60 {
        let response = app
            .http
            .get(format!(
                "{}/success?session_id=cs_test_made_up_{i}",
                base(&app)
            ))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 429 {
            assert!(
                response.headers().contains_key("retry-after"),
                "{:?}",
                response.headers()
            );
            limited.push(response.json::<Value>().await.unwrap());
        }
        statuses.push(status);
    }
    assert_eq!(
        app.sim().requests().len(),
        stripe_calls_before,
        "no made-up session id reached Stripe: {:?}",
        &app.sim().requests()[stripe_calls_before..]
    );
    let not_found = statuses.iter().filter(|&&s| s == 404).count();
    assert!(
        not_found >= BURST as usize && not_found <= BURST as usize + 2,
        "the burst is served (unknown: 404), about one a second after it: {statuses:?}"
    );
    assert_eq!(
        not_found + limited.len(),
        statuses.len(),
        "the rest is refused 429: {statuses:?}"
    );
    for answer in &limited {
        crate::support::assert_error(answer, "rate_limited", "a flooded /success");
    }
    // Other public pages share the address's budget; the APIs and the webhook do not.
    let (shop, _) = app.get("/").send().await;
    assert_eq!(shop, 429, "the shop page shares the limit");
    let (api, _) = app.get("/api/charges").token(Some(TOKEN)).send().await;
    assert_eq!(api, 200, "the authenticated API is not limited");
    let (webhook, _) = app.post("/webhooks/stripe").send().await;
    assert_eq!(webhook, 400, "the webhook is not limited (unsigned: 400)");

    let metrics = app
        .http
        .get(app.stack.metrics_url().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kassa_public_requests_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the counter is on /metrics:\n{metrics}"));
    // The recorder is the process's: other tests running beside this one may add to it.
    assert!(
        counted >= (limited.len() + 1) as f64,
        "{counted} < {}",
        limited.len() + 1
    );
    app.cleanup().await;
}
