//! Per-call options of the payment APIs: `custom_props` on `POST /api/payment-intents` passes an
//! allow-listed set of PaymentIntent parameters to Stripe and refuses any other by name;
//! `KASSA_DEFAULT_CURRENCY` is the currency of a request that names none.

use crate::support::app::TestApp;
use crate::support::assert_error;
use crate::support::binary::{kassa, run, text};
use crate::support::smtp_sink::{addressed_to, SmtpSink};
use serde_json::json;

const TOKEN: &str = "payment-options-admin-token-0123";

#[tokio::test]
async fn custom_props_reach_stripe_and_anything_else_is_refused_by_name() {
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .without_worker()
        .spawn()
        .await;
    let create = |body: serde_json::Value, key: &'static str| {
        app.post("/api/payment-intents")
            .token(Some(TOKEN))
            .idempotency_key(Some(key))
            .json(&body)
            .send()
    };
    let (status, body) = create(
        json!({
            "amount": 2500,
            "custom_props": {
                "description": "Order 2002",
                "metadata": {"order_id": "2002", "channel": "web"},
                "statement_descriptor_suffix": "ORDER 2002",
                "setup_future_usage": "off_session",
                "receipt_email": "buyer@example.com",
            },
        }),
        "custom-props-1",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let intent = app.sim_get(&format!("/v1/payment_intents/{id}"), &[]).await;
    assert_eq!(intent["description"], "Order 2002", "{intent}");
    assert_eq!(intent["metadata"]["order_id"], "2002", "{intent}");
    assert_eq!(intent["metadata"]["channel"], "web", "{intent}");
    assert_eq!(
        intent["metadata"]["kassa_source"], "api",
        "Kassa's own metadata stays: {intent}"
    );
    assert_eq!(
        intent["metadata"]["kassa_receipt_email"], "buyer@example.com",
        "{intent}"
    );
    assert_eq!(
        intent["statement_descriptor_suffix"], "ORDER 2002",
        "{intent}"
    );
    assert_eq!(intent["setup_future_usage"], "off_session", "{intent}");

    let posts_before = app.calls("POST", "/v1/payment_intents").len();
    for (props, field) in [
        (
            json!({"capture_method": "manual"}),
            "custom_props.capture_method",
        ),
        (
            json!({"application_fee_amount": 10}),
            "custom_props.application_fee_amount",
        ),
        (
            json!({"setup_future_usage": "sometimes"}),
            "custom_props.setup_future_usage",
        ),
        (
            json!({"statement_descriptor_suffix": "<script>"}),
            "custom_props.statement_descriptor_suffix",
        ),
        (
            json!({"metadata": {"kassa_source": "forged"}}),
            "custom_props.metadata.kassa_source",
        ),
        (
            json!({"receipt_email": "not-an-address"}),
            "custom_props.receipt_email",
        ),
        (json!("description"), "custom_props"),
    ] {
        let (status, body) = create(
            json!({"amount": 2500, "custom_props": props}),
            "custom-props-2",
        )
        .await;
        assert_eq!(status, 400, "{props}: {body}");
        assert_error(&body, "invalid_field", &props.to_string());
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    assert_eq!(
        app.calls("POST", "/v1/payment_intents").len(),
        posts_before,
        "nothing refused reached Stripe"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_without_a_currency_gets_the_default_currency_and_an_unknown_one_is_refused_at_start(
) {
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .default_currency("eur")
        .without_worker()
        .spawn()
        .await;
    let (status, body) = app
        .post("/api/payment-intents")
        .token(Some(TOKEN))
        .idempotency_key(Some("default-currency-1"))
        .json(&json!({"amount": 1500}))
        .send()
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["currency"], "eur", "{body}");
    let (status, body) = app
        .post("/api/payment-intents")
        .token(Some(TOKEN))
        .idempotency_key(Some("default-currency-2"))
        .json(&json!({"amount": 1500, "currency": "GBP"}))
        .send()
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["currency"], "gbp", "a named currency wins: {body}");
    app.cleanup().await;

    let mut command = kassa(&["serve"]);
    command.env("KASSA_DEFAULT_CURRENCY", "xyz");
    let out = run(command).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("KASSA_DEFAULT_CURRENCY=\"xyz\" is not"),
        "{stderr}"
    );
}

/// Creates a PaymentIntent with a receipt address, pays it on the simulator as Stripe.js
/// would, and confirms it with `options`; returns the confirmation's answer.
async fn pay_and_confirm(
    app: &TestApp,
    receipt: &str,
    options: serde_json::Value,
) -> serde_json::Value {
    let (status, body) = app
        .post("/api/payment-intents")
        .token(Some(TOKEN))
        .idempotency_key(Some(&uuid::Uuid::new_v4().to_string()))
        .json(&json!({"amount": 1999, "receipt_email": receipt}))
        .send()
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let paid = crate::support::sim::post_form(
        &app.sim().base_url(),
        &format!("/v1/payment_intents/{id}/confirm"),
        &[("payment_method", "pm_card_visa")],
    )
    .await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let (status, body) = app
        .post(&format!("/api/payment-intents/{id}/confirmation"))
        .token(Some(TOKEN))
        .json(&options)
        .send()
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded_now"], true, "{body}");
    body
}

#[tokio::test]
async fn receipts_and_notifications_go_where_each_confirmation_says_through_its_connection() {
    let default_sink = SmtpSink::start().await;
    let billing_sink = SmtpSink::start().await;
    // Webhooks are dropped, so each confirmation is the call that records its payment.
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .smtp(default_sink.url())
        .smtp_connection("billing", billing_sink.url())
        .notify_email("owner@example.com")
        .dropping_webhooks()
        .spawn()
        .await;

    // Refused before anything: an unknown option, a bad address, a bad connection name.
    for body in [
        json!({"send_receipt": true}),
        json!({"notify_email": "not-an-address"}),
        json!({"mail_connection": "bill ing"}),
    ] {
        let (status, answer) = app
            .post("/api/payment-intents/pi_unknown/confirmation")
            .token(Some(TOKEN))
            .json(&body)
            .send()
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }

    // Through the billing connection, the notification to another address.
    let answer = pay_and_confirm(
        &app,
        "buyer1@example.com",
        json!({"notify_email": "ops@example.com", "mail_connection": "billing"}),
    )
    .await;
    assert_eq!(answer["mail_options_applied"], true, "{answer}");
    let billing = billing_sink.wait_for(2).await;
    assert_eq!(
        addressed_to(&billing, "buyer1@example.com"),
        1,
        "the receipt"
    );
    assert_eq!(
        addressed_to(&billing, "ops@example.com"),
        1,
        "the notification"
    );
    assert_eq!(
        addressed_to(&billing, "owner@example.com"),
        0,
        "instead of KASSA_NOTIFY_EMAIL"
    );

    // No receipt: only the notification, through the default connection.
    pay_and_confirm(&app, "buyer2@example.com", json!({"email_customer": false})).await;
    // No notification: only the receipt.
    pay_and_confirm(
        &app,
        "buyer3@example.com",
        json!({"send_notification": false}),
    )
    .await;
    // Defaults: both.
    pay_and_confirm(&app, "buyer4@example.com", json!({})).await;
    let default_mail = default_sink.wait_for(4).await;
    assert_eq!(
        addressed_to(&default_mail, "buyer2@example.com"),
        0,
        "email_customer: false"
    );
    assert_eq!(addressed_to(&default_mail, "buyer3@example.com"), 1);
    assert_eq!(addressed_to(&default_mail, "buyer4@example.com"), 1);
    assert_eq!(
        addressed_to(&default_mail, "owner@example.com"),
        2,
        "payments 2 and 4 notify the owner"
    );
    assert_eq!(
        addressed_to(&default_mail, "buyer1@example.com"),
        0,
        "payment 1 went through billing"
    );
    assert_eq!(
        billing_sink.received.lock().unwrap().len(),
        2,
        "billing carried payment 1 only"
    );
    app.cleanup().await;
}
