//! Per-call options of the payment APIs: `custom_props` on `POST /api/payment-intents` passes an
//! allow-listed set of PaymentIntent parameters to Stripe and refuses any other by name;
//! `KASSA_DEFAULT_CURRENCY` is the currency of a request that names none.

use crate::support::app::TestApp;
use crate::support::assert_error;
use crate::support::binary::{kassa, run, text};
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
