//! Payment widgets: the admin API and `kassa widgets`, the public endpoints a customer's browser
//! calls (one PaymentIntent per page load, amounts only from the server, client secrets checked,
//! rate limits), and the widget paying in headless Chromium on a merchant page of another origin
//! — with the Visa test card, a declined card then another on the same PaymentIntent, and 3-D
//! Secure completed or failed.

use crate::browser::{chromium, outcome, screenshot};
use crate::support::app::TestApp;
use crate::support::smtp_sink::{addressed_to, SmtpSink};
use crate::support::{assert_error, eventually};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "widget-admin-token";
const NOTIFY: &str = "merchant@example.com";
const BUYER: &str = "buyer@example.com";

async fn app_with_mail() -> (TestApp, SmtpSink) {
    let smtp = SmtpSink::start().await;
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .smtp(smtp.url())
        .notify_email(NOTIFY)
        .spawn()
        .await;
    (app, smtp)
}

async fn create_widget(app: &TestApp, body: Value) -> Value {
    let (status, widget) = app
        .post("/api/widgets")
        .token(Some(TOKEN))
        .json(&body)
        .send()
        .await;
    assert_eq!(status, 201, "{widget}");
    widget
}

/// A public request as widget.js sends it: JSON in a `text/plain` body.
async fn public_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}{path}", app.stack.base_url().unwrap()))
        .header("Content-Type", "text/plain;charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .expect("the app answers");
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*"),
        "{path}: readable by the merchant page's script"
    );
    (status, response.json().await.unwrap_or(Value::Null))
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[tokio::test]
async fn widgets_are_created_listed_and_shown_with_the_amount_the_server_keeps() {
    let app = TestApp::builder().admin_token(TOKEN).spawn().await;
    let widget = create_widget(
        &app,
        json!({"amount": 1500, "currency": "EUR", "description": "Concert ticket",
               "collect_email": true, "success_url": "https://shop.example/thanks"}),
    )
    .await;
    let id = widget["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wid_"), "{widget}");
    assert_eq!(widget["mode"], "test");
    assert_eq!(widget["amount_display"], "€15.00");
    assert_eq!(widget["send_receipt"], true);
    assert_eq!(widget["notify_merchant"], true);

    let (status, shown) = app
        .get(&format!("/api/widgets/{id}"))
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!((status, &shown), (200, &widget));
    let (status, list) = app.get("/api/widgets").token(Some(TOKEN)).send().await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], id.as_str());

    // Refusals name their field; without the token, nothing.
    for (body, field) in [
        (json!({"description": "x"}), "amount"),
        (json!({"amount": 500}), "description"),
        (
            json!({"amount": 500, "description": "x", "mode": "prod"}),
            "mode",
        ),
        (
            json!({"description": "x", "products": [{"name": "A", "amount": 10}]}),
            "products[0].amount",
        ),
    ] {
        let (status, answer) = app
            .post("/api/widgets")
            .token(Some(TOKEN))
            .json(&body)
            .send()
            .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = app.get("/api/widgets").send().await;
    assert_eq!(status, 401);
    assert_error(&answer, "unauthorized", "no token");
    let (status, answer) = app
        .get("/api/widgets/wid_doesnotexist0")
        .token(Some(TOKEN))
        .send()
        .await;
    assert_eq!(status, 404);
    assert_error(&answer, "widget_not_found", "unknown widget");

    // The command line stores the same widgets and prints the snippet that embeds one.
    let output = app
        .kassa(&[
            "widgets",
            "create",
            "--description",
            "Coffee",
            "--product",
            "Small=300",
            "--product",
            "Large=450",
            "--collect-email",
            "--public-url",
            "https://pay.example",
        ])
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let coffee = created["id"].as_str().unwrap();
    assert_eq!(created["products"][1]["amount"], 450);
    assert!(
        created["embed"].as_str().unwrap().contains(&format!(
            "<script src=\"https://pay.example/widget.js\" async></script>\n<div data-kassa-widget=\"{coffee}\"></div>"
        )),
        "{created}"
    );
    let output = app.kassa(&["widgets", "show", coffee]).await;
    assert!(output.status.success());
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["description"], "Coffee");
    let output = app.kassa(&["widgets", "list"]).await;
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    let output = app
        .kassa(&[
            "widgets",
            "create",
            "--description",
            "Bad",
            "--amount",
            "12.50",
        ])
        .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("amount"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_page_load_gets_one_payment_intent_and_only_the_server_sets_its_amount() {
    let app = TestApp::builder().admin_token(TOKEN).spawn().await;
    let widget = create_widget(
        &app,
        json!({"description": "Coffee", "products": [{"name": "Small", "amount": 300},
                                                     {"name": "Large", "amount": 450}]}),
    )
    .await;
    let id = widget["id"].as_str().unwrap();
    let page = token();
    let start = format!("/widgets/{id}/payment-intent");
    let (status, first) = public_post(&app, &start, json!({"token": page})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["amount"], 300,
        "the first product until the customer picks"
    );
    assert_eq!(first["publishable_key"], "pk_test_kassa_embedded_simulator");
    assert_eq!(
        first["stripe_js"],
        format!("{}/v3", app.sim().base_url()),
        "the simulator's Stripe.js stand-in"
    );
    assert!(first["return_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/pay/{id}/thanks")));
    assert_eq!(first["widget"]["products"][1]["amount_display"], "$4.50");
    let pi = first["payment_intent"].as_str().unwrap().to_owned();
    let secret = first["client_secret"].as_str().unwrap().to_owned();

    // The same page load again (a retry, the script loaded twice): the same PaymentIntent.
    let (_, again) = public_post(&app, &start, json!({"token": page})).await;
    assert_eq!(again["payment_intent"], pi.as_str());
    // Another page load: another.
    let (_, other) = public_post(&app, &start, json!({"token": token()})).await;
    assert_ne!(other["payment_intent"], pi.as_str());
    // An amount from the browser is refused, not used.
    let (status, answer) = public_post(&app, &start, json!({"token": token(), "amount": 1})).await;
    assert_eq!(status, 400, "{answer}");

    // The customer picks Large: the server's price for it.
    let details = format!("/widgets/{id}/payment-intents/{pi}/details");
    let (status, answer) = public_post(
        &app,
        &details,
        json!({"client_secret": secret, "product": 1}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["amount"], 450);
    let intent = app
        .stripe()
        .payment_intents()
        .retrieve(&pi, &[])
        .await
        .unwrap();
    assert_eq!(intent.amount, 450);
    assert_eq!(
        intent.metadata.get("kassa_widget").map(String::as_str),
        Some(id)
    );
    // Without the client secret, or with another intent's, nothing changes.
    let other_secret = other["client_secret"].as_str().unwrap();
    for body in [
        json!({"product": 0}),
        json!({"client_secret": other_secret, "product": 0}),
    ] {
        let (status, answer) = public_post(&app, &details, body).await;
        assert_eq!(status, 403, "{answer}");
        assert_error(&answer, "client_secret_mismatch", "foreign secret");
    }
    let (status, _) = public_post(
        &app,
        &details,
        json!({"client_secret": secret, "product": 7}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        app.stripe()
            .payment_intents()
            .retrieve(&pi, &[])
            .await
            .unwrap()
            .amount,
        450
    );

    // The confirmation without the admin token: only with the PaymentIntent's client secret.
    let confirmation = format!("/api/payment-intents/{pi}/confirmation");
    let (status, answer) = public_post(&app, &confirmation, json!({})).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) =
        public_post(&app, &confirmation, json!({"client_secret": other_secret})).await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = public_post(&app, &confirmation, json!({"client_secret": secret})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["recorded"], false, "not paid yet: {answer}");

    // Unknown widgets are JSON 404s.
    let (status, answer) = public_post(
        &app,
        "/widgets/wid_nosuchwidget0/payment-intent",
        json!({"token": page}),
    )
    .await;
    assert_eq!(status, 404);
    assert_error(&answer, "widget_not_found", "unknown widget");
    app.cleanup().await;
}

#[tokio::test]
async fn public_widget_endpoints_are_rate_limited_per_client_ip() {
    let app = TestApp::builder().admin_token(TOKEN).spawn().await;
    let widget = create_widget(&app, json!({"description": "Tea", "amount": 500})).await;
    let path = format!("/widgets/{}/payment-intent", widget["id"].as_str().unwrap());
    let burst = kassa_api::widgets::PER_IP_BURST as usize;
    let mut statuses = Vec::new();
    // Malformed bodies: counted, answered at once, nothing sent to Stripe.
    for _ in 0..burst + 5 {
        statuses.push(public_post(&app, &path, json!({"token": "short"})).await);
    }
    assert!(
        statuses[..burst].iter().all(|(status, _)| *status == 400),
        "{statuses:?}"
    );
    let (status, answer) = statuses.last().unwrap();
    assert_eq!(*status, 429, "{answer}");
    assert_error(answer, "rate_limited", "past the burst");
    app.cleanup().await;
}

/// A merchant's page on an origin of its own, embedding the widget with the snippet from the
/// README and styling it with CSS variables.
async fn merchant_page(kassa: &str, widget: &str) -> String {
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Riverside Concerts</title>
<style>body{{font-family:Georgia,serif;margin:1rem;color:#222}}.tickets{{--kassa-color-primary:#6b3fa0;--kassa-border-radius:10px}}</style>
</head><body><h1>Riverside Concerts</h1><p>Saturday, 8 pm. Doors open at 7.</p>
<div class="tickets">
<script src="{kassa}/widget.js" async></script>
<div data-kassa-widget="{widget}"></div>
</div></body></html>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn field(
    browser: &Client,
    name: &str,
) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
    browser
        .find(Locator::Css(&format!(
            "[data-kassa-widget] input[name='{name}']"
        )))
        .await
}

/// Types a card into the widget's Payment Element, replacing what was there.
async fn type_card(browser: &Client, number: &str) -> Result<(), fantoccini::error::CmdError> {
    for (name, value) in [
        ("cardnumber", number),
        ("exp-date", "12 / 34"),
        ("cvc", "123"),
    ] {
        let input = field(browser, name).await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    Ok(())
}

async fn open_widget(browser: &Client, url: &str) -> Result<(), fantoccini::error::CmdError> {
    browser.goto(url).await?;
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("[data-kassa-widget] input[name='cardnumber']"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_widget_pays_with_the_visa_test_card_on_a_merchant_page() {
    let (app, smtp) = app_with_mail().await;
    let kassa = app.stack.base_url().unwrap();
    let widget = create_widget(
        &app,
        json!({"amount": 1500, "currency": "usd", "description": "Concert ticket",
               "collect_email": true}),
    )
    .await;
    let id = widget["id"].as_str().unwrap().to_owned();
    let shop = merchant_page(&kassa, &id).await;
    let session = chromium("360,900").await;
    let browser = &session.browser;

    let flow = async {
        open_widget(browser, &format!("{shop}/")).await?;
        // Every input of the form has a label a screen reader reads.
        let unlabelled = browser
            .execute(
                "return [...document.querySelectorAll('[data-kassa-widget] input')]\
                 .filter(i => !(document.querySelector(`label[for='${i.id}']`) || {}).textContent)\
                 .map(i => i.name)",
                vec![],
            )
            .await?;
        let width = browser
            .execute("return document.documentElement.clientWidth", vec![])
            .await?;
        let overflows = browser
            .execute(
                "return document.documentElement.scrollWidth > document.documentElement.clientWidth",
                vec![],
            )
            .await?;
        screenshot(browser, "widget-1-form").await?;
        field(browser, "email").await?.send_keys(BUYER).await?;
        type_card(browser, "4242 4242 4242 4242").await?;
        screenshot(browser, "widget-2-filled").await?;
        // Keyboard only: Enter in the last field pays.
        field(browser, "cvc")
            .await?
            .send_keys(&fantoccini::key::Key::Enter.to_string())
            .await?;
        let outcome = outcome(browser).await?;
        screenshot(browser, "widget-3-paid").await?;
        let landed = browser.current_url().await?;
        Ok::<_, fantoccini::error::CmdError>((
            unlabelled,
            width,
            overflows,
            landed,
            outcome.attr("data-status").await?,
            outcome.text().await?,
        ))
    }
    .await;
    session.close().await;
    let (unlabelled, width, overflows, landed, status, text) = flow.expect("the browser flow");
    assert_eq!(unlabelled, json!([]), "inputs without a label");
    assert_eq!(width, json!(360));
    assert_eq!(overflows, json!(false), "nothing wider than 360 px");

    // On the widget's success URL, the payment recorded once.
    assert_eq!(landed.path(), format!("/pay/{id}/thanks"), "{landed}");
    assert_eq!(status.as_deref(), Some("paid"), "{text}");
    assert!(text.contains("$15.00"), "{text}");
    let pi = landed
        .query_pairs()
        .find(|(k, _)| k == "payment_intent")
        .map(|(_, v)| v.into_owned())
        .expect("the success URL names the PaymentIntent");
    let payment = app
        .store()
        .payment_by_intent(&pi)
        .await
        .unwrap()
        .expect("the payment is recorded");
    assert_eq!((payment.amount, payment.currency.as_str()), (1500, "usd"));
    assert_eq!(payment.receipt_email.as_deref(), Some(BUYER));

    // One receipt to the buyer, one notification to the merchant.
    let mails = smtp.wait_for(2).await;
    assert_eq!(
        (addressed_to(&mails, BUYER), addressed_to(&mails, NOTIFY)),
        (1, 1),
        "{mails:?}"
    );

    // Stripe's webhook arrives too and finds it recorded: still one payment, no more e-mail.
    let event = eventually(
        Duration::from_secs(20),
        "payment_intent.succeeded",
        || async {
            app.stripe_events("payment_intent.succeeded")
                .await
                .into_iter()
                .find(|e| e["data"]["object"]["id"] == pi.as_str())
        },
    )
    .await;
    app.processed(event["id"].as_str().unwrap()).await;
    assert_eq!(app.store().count_payments().await.unwrap(), 1);
    assert_eq!(smtp.received.lock().unwrap().len(), 2);
    app.cleanup().await;
}

/// The widget's inline message, once it says something.
async fn message(browser: &Client) -> Result<String, fantoccini::error::CmdError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = browser
            .find(Locator::Css(".kassa-widget__message"))
            .await?
            .text()
            .await?;
        if !text.trim().is_empty() || std::time::Instant::now() > deadline {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click_pay(browser: &Client) -> Result<(), fantoccini::error::CmdError> {
    browser
        .find(Locator::Css(".kassa-widget__pay"))
        .await?
        .click()
        .await
}

/// Answers the 3-D Secure challenge in its frame (a screenshot of the page with the challenge
/// open first).
async fn authenticate(
    browser: &Client,
    button: &str,
    shot: &str,
) -> Result<(), fantoccini::error::CmdError> {
    let frame = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("iframe[title='3D Secure authentication']"))
        .await?;
    frame.enter_frame().await?;
    let answer = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id(button))
        .await?;
    // A screenshot is of the whole page, the frame included.
    screenshot(browser, shot).await?;
    answer.click().await?;
    browser.enter_parent_frame().await?;
    Ok(())
}

#[tokio::test]
async fn a_declined_card_then_another_and_3d_secure_in_the_widget() {
    let app = TestApp::builder().admin_token(TOKEN).spawn().await;
    let kassa = app.stack.base_url().unwrap();
    let widget = create_widget(
        &app,
        json!({"amount": 2500, "currency": "usd", "description": "Workshop seat"}),
    )
    .await;
    let id = widget["id"].as_str().unwrap().to_owned();
    let page = format!("{kassa}/pay/{id}");
    let session = chromium("360,900").await;
    let browser = &session.browser;
    let flow = async {
        // A declined card: Stripe's message inline, then the Visa card on the same form.
        open_widget(browser, &page).await?;
        type_card(browser, "4000 0000 0000 0002").await?;
        click_pay(browser).await?;
        let declined = message(browser).await?;
        screenshot(browser, "widget-4-declined").await?;
        type_card(browser, "4242 4242 4242 4242").await?;
        click_pay(browser).await?;
        let paid = outcome(browser).await?.attr("data-status").await?;
        let after_decline = browser.current_url().await?;

        // 3-D Secure, completed.
        open_widget(browser, &page).await?;
        type_card(browser, "4000 0027 6000 3184").await?;
        click_pay(browser).await?;
        authenticate(browser, "complete", "widget-5-3ds-challenge").await?;
        let authenticated = outcome(browser).await?.attr("data-status").await?;
        screenshot(browser, "widget-6-3ds-paid").await?;

        // 3-D Secure, failed: the message, no payment.
        open_widget(browser, &page).await?;
        type_card(browser, "4000 0027 6000 3184").await?;
        click_pay(browser).await?;
        authenticate(browser, "fail", "widget-7-3ds-challenge").await?;
        let failed = message(browser).await?;
        screenshot(browser, "widget-8-3ds-failed").await?;
        Ok::<_, fantoccini::error::CmdError>((declined, paid, after_decline, authenticated, failed))
    }
    .await;
    session.close().await;
    let (declined, paid, after_decline, authenticated, failed) = flow.expect("the browser flow");
    assert_eq!(declined, "Your card was declined.");
    assert_eq!(paid.as_deref(), Some("paid"));
    assert_eq!(authenticated.as_deref(), Some("paid"));
    assert!(
        failed.contains("We are unable to authenticate your payment method."),
        "{failed}"
    );

    // Three page loads, three PaymentIntents: the retry after the decline used the same one.
    let intents = app
        .sim_get("/v1/payment_intents", &[("limit", "100")])
        .await;
    let ours: Vec<&Value> = intents["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pi| pi["metadata"]["kassa_widget"] == id.as_str())
        .collect();
    assert_eq!(ours.len(), 3, "{intents}");
    let statuses: Vec<&str> = ours
        .iter()
        .map(|pi| pi["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["requires_payment_method", "succeeded", "succeeded"],
        "newest first: failed challenge, 3-D Secure paid, declined then paid"
    );
    let first = ours[2]["id"].as_str().unwrap();
    let paid_after_decline = after_decline
        .query_pairs()
        .find(|(k, _)| k == "payment_intent")
        .map(|(_, v)| v.into_owned());
    assert_eq!(paid_after_decline.as_deref(), Some(first));
    assert_eq!(
        app.store().count_payments().await.unwrap(),
        2,
        "no payment for the failed challenge"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_widget_without_notification_or_receipt_sends_only_what_it_says() {
    let (app, smtp) = app_with_mail().await;
    let quiet = create_widget(
        &app,
        json!({"amount": 800, "description": "Quiet", "collect_email": true,
               "notify_merchant": false}),
    )
    .await;
    let no_receipt = create_widget(
        &app,
        json!({"amount": 900, "description": "No receipt", "collect_email": true,
               "send_receipt": false}),
    )
    .await;
    let tap = app.tap(&app.topology.alerts_exchange()).await;
    // Each paid as the browser does: the page load's intent, the details, a confirmation at
    // Stripe, then Kassa's confirmation with the client secret.
    let mut intents = Vec::new();
    for widget in [&quiet, &no_receipt] {
        let id = widget["id"].as_str().unwrap();
        let (_, start) = public_post(
            &app,
            &format!("/widgets/{id}/payment-intent"),
            json!({"token": token()}),
        )
        .await;
        let pi = start["payment_intent"].as_str().unwrap();
        let secret = start["client_secret"].as_str().unwrap();
        let (status, answer) = public_post(
            &app,
            &format!("/widgets/{id}/payment-intents/{pi}/details"),
            json!({"client_secret": secret, "email": BUYER}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let paid = crate::support::sim::post_form(
            &app.sim().base_url(),
            &format!("/v1/payment_intents/{pi}/confirm"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
        assert_eq!(paid["status"], "succeeded", "{paid}");
        let (status, answer) = public_post(
            &app,
            &format!("/api/payment-intents/{pi}/confirmation"),
            json!({"client_secret": secret}),
        )
        .await;
        // Recorded (by this call or by the webhook, whichever came first).
        assert_eq!(
            (status, &answer["recorded"]),
            (200, &json!(true)),
            "{answer}"
        );
        intents.push(pi.to_owned());
    }
    // What the mailer is told: the quiet payment's receipt without a notification, the other's
    // notification without a receipt address.
    let mut announced = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while announced.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both payment alerts: {announced:?}"
        );
        announced.extend(app.take_tapped(&tap).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = |pi: &str| {
        announced
            .iter()
            .find(|(_, _, body)| body["payment_intent"] == pi)
            .map(|(_, _, body)| body.clone())
            .unwrap()
    };
    let (quiet_alert, loud_alert) = (body(&intents[0]), body(&intents[1]));
    assert_eq!(
        (
            &quiet_alert["notify_merchant"],
            &quiet_alert["receipt_email"]
        ),
        (&json!(false), &json!(BUYER))
    );
    assert_eq!(
        (&loud_alert["notify_merchant"], &loud_alert["receipt_email"]),
        (&json!(true), &Value::Null)
    );
    // The quiet widget's receipt, and the other's notification: two e-mails, no more.
    let mails = smtp.wait_for(2).await;
    assert_eq!(
        (addressed_to(&mails, BUYER), addressed_to(&mails, NOTIFY)),
        (1, 1),
        "{mails:?}"
    );
    assert_eq!(app.store().count_payments().await.unwrap(), 2);
    app.cleanup().await;
}
