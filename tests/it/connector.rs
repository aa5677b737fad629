//! Connector actions over HTTP (`/api/customers`, `/api/products`, `/api/legacy-charges`) and
//! from the CLI (`kassa customers|products|legacy-charge`), against the simulator: what is
//! created, with which Idempotency-Key, and that bad input creates nothing.

use crate::support::app::TestApp;
use serde_json::{json, Value};

const ADMIN: &str = "connector-test-admin-token-0123456789";

async fn connector_app() -> TestApp {
    TestApp::builder()
        .admin_token(ADMIN)
        .without_worker()
        .spawn()
        .await
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Value) {
    let call = app
        .call(method, path)
        .token(token)
        .idempotency_key(idempotency_key);
    match body {
        Some(body) => call.json(&body).send().await,
        None => call.send().await,
    }
}

/// POSTs `body` with the admin token and a fresh Idempotency-Key, as a careful client does.
async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let key = uuid::Uuid::new_v4().to_string();
    call(
        app,
        reqwest::Method::POST,
        path,
        Some(ADMIN),
        Some(body),
        Some(&key),
    )
    .await
}

/// POSTs nothing at all (no body, no Content-Type) with the admin token.
async fn post_without_body(app: &TestApp, path: &str) -> (u16, Value) {
    call(app, reqwest::Method::POST, path, Some(ADMIN), None, None).await
}

/// POSTs the simulator executed (not replays) on `path`.
fn created(app: &TestApp, path: &str) -> usize {
    app.calls("POST", path)
        .into_iter()
        .filter(|r| r.path == path && r.status == 200 && !r.replayed)
        .count()
}

fn assert_field_error(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn every_connector_route_needs_the_admin_token_and_creates_nothing_without_it() {
    let app = connector_app().await;
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/customers",
            Some(json!({"email": "a@example.com"})),
        ),
        (
            reqwest::Method::GET,
            "/api/customers?email=a@example.com",
            None,
        ),
        (reqwest::Method::GET, "/api/customers/cus_anyone", None),
        (
            reqwest::Method::POST,
            "/api/products",
            Some(json!({"name": "Tea"})),
        ),
        (
            reqwest::Method::POST,
            "/api/legacy-charges",
            Some(json!({"amount": 100, "currency": "usd", "source": "tok_visa"})),
        ),
    ] {
        for token in [None, Some("wrong-token-wrong-token-wrong")] {
            let (status, answer) =
                call(&app, method.clone(), path, token, body.clone(), None).await;
            assert_eq!(status, 401, "{method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized");
        }
    }
    assert!(app.sim().requests().is_empty(), "nothing reached Stripe");
    app.cleanup().await;
}

#[tokio::test]
async fn customers_are_created_and_found_by_email_at_once() {
    let app = connector_app().await;
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, customer) = post(
        &app,
        "/api/customers",
        json!({"email": email, "name": "Ada Lovelace", "metadata": {"crm_id": "42"}}),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let id = customer["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("cus_"));
    assert_eq!(customer["email"], email.as_str());
    assert_eq!(customer["metadata"]["crm_id"], "42");
    let posts = app.calls("POST", "/v1/customers");
    assert_eq!(posts.len(), 1);
    assert!(posts[0]
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with(&format!(
            "kassa:{}:connector:customer:",
            app.store().installation_id()
        ))));

    // Found through the list (no search-index lag): right after creation.
    let (status, found) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/customers?email={email}"),
        Some(ADMIN),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let ids: Vec<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert!(app.calls("GET", "/v1/customers/search").is_empty());
    let (status, none) = call(
        &app,
        reqwest::Method::GET,
        "/api/customers?email=nobody@example.com",
        Some(ADMIN),
        None,
        None,
    )
    .await;
    assert_eq!((status, none["data"].as_array().unwrap().len()), (200, 0));

    // The caller's Idempotency-Key: the same key twice is one customer.
    let again = |name: &'static str| {
        let app = &app;
        async move {
            call(
                app,
                reqwest::Method::POST,
                "/api/customers",
                Some(ADMIN),
                Some(json!({"email": "same@example.com", "name": name})),
                Some("crm-sync-7"),
            )
            .await
        }
    };
    let (s1, first) = again("Same").await;
    let (s2, second) = again("Same").await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(created(&app, "/v1/customers"), 2, "the retry was a replay");
    // The same key with other parameters is a caller's mistake Stripe refuses.
    let (status, reused) = again("Other").await;
    assert_eq!(status, 409, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");

    // Bad input: 400 naming the field, and nothing created.
    let before = created(&app, "/v1/customers");
    let (status, body) = post(&app, "/api/customers", json!({"email": "not-an-email"})).await;
    assert_field_error(status, &body, "email");
    let (status, body) = post(&app, "/api/customers", json!({"name": 7})).await;
    assert_field_error(status, &body, "name");
    let (status, body) = post(&app, "/api/customers", json!({"metadata": ["x"]})).await;
    assert_field_error(status, &body, "metadata");
    let (status, body) = call(
        &app,
        reqwest::Method::GET,
        "/api/customers",
        Some(ADMIN),
        None,
        None,
    )
    .await;
    assert_field_error(status, &body, "email");
    assert_eq!(created(&app, "/v1/customers"), before);
    app.cleanup().await;
}

#[tokio::test]
async fn products_are_created_with_their_product_code() {
    let app = connector_app().await;
    let (status, product) = post(
        &app,
        "/api/products",
        json!({"name": "Green tea", "description": "Sencha, 100 g", "product_code": "TEA-1"}),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    assert!(product["id"].as_str().unwrap().starts_with("prod_"));
    assert_eq!(product["name"], "Green tea");
    assert_eq!(product["description"], "Sencha, 100 g");
    assert_eq!(product["metadata"]["product_code"], "TEA-1");
    let stored = app
        .stripe()
        .products()
        .retrieve(product["id"].as_str().unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(
        stored.metadata.get("product_code").map(String::as_str),
        Some("TEA-1")
    );

    let (status, body) = post(&app, "/api/products", json!({"description": "no name"})).await;
    assert_field_error(status, &body, "name");
    let (status, body) = post(&app, "/api/products", json!({"name": "  "})).await;
    assert_field_error(status, &body, "name");
    let (status, body) = post_without_body(&app, "/api/products").await;
    // No body and no Content-Type: 415, as JSON.
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    assert_eq!(created(&app, "/v1/products"), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn legacy_charges_charge_a_token_or_a_customer_and_refuse_bad_input() {
    let app = connector_app().await;
    let (status, charge) = post(
        &app,
        "/api/legacy-charges",
        json!({"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "legacy"}),
    )
    .await;
    assert_eq!(status, 201, "{charge}");
    assert!(charge["id"].as_str().unwrap().starts_with("ch_"));
    assert_eq!(charge["amount"], 1999);
    assert_eq!(charge["currency"], "usd");
    assert_eq!(charge["status"], "succeeded");
    let posts = app.calls("POST", "/v1/charges");
    assert!(posts[0]
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with(&format!(
            "kassa:{}:connector:legacy_charge:",
            app.store().installation_id()
        ))));

    // JPY is zero-decimal: ¥5,000 is 5000, sent unscaled.
    let (status, yen) = post(
        &app,
        "/api/legacy-charges",
        json!({"amount": 5000, "currency": "jpy", "source": "tok_visa"}),
    )
    .await;
    assert_eq!((status, yen["amount"].as_i64()), (201, Some(5000)), "{yen}");

    // A retry with the caller's key is the same charge, never a second one.
    let retry = || {
        call(
            &app,
            reqwest::Method::POST,
            "/api/legacy-charges",
            Some(ADMIN),
            Some(json!({"amount": 700, "currency": "eur", "source": "tok_visa"})),
            Some("order-77"),
        )
    };
    let (_, first) = retry().await;
    let (_, second) = retry().await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(created(&app, "/v1/charges"), 3);

    // Bad input: refused before Stripe, nothing created.
    for (body, field) in [
        (
            json!({"amount": 12.5, "currency": "usd", "source": "tok_visa"}),
            "amount",
        ),
        (
            json!({"amount": "100", "currency": "usd", "source": "tok_visa"}),
            "amount",
        ),
        (
            json!({"amount": 0, "currency": "usd", "source": "tok_visa"}),
            "amount",
        ),
        (json!({"currency": "usd", "source": "tok_visa"}), "amount"),
        (
            json!({"amount": 100, "currency": "xyz", "source": "tok_visa"}),
            "currency",
        ),
        (json!({"amount": 100, "source": "tok_visa"}), "currency"),
        (json!({"amount": 100, "currency": "usd"}), "source"),
        (
            json!({"amount": 10, "currency": "usd", "source": "tok_visa"}),
            "amount",
        ),
    ] {
        let (status, answer) = post(&app, "/api/legacy-charges", body.clone()).await;
        assert_field_error(status, &answer, field);
    }
    let charges_before = app.calls("POST", "/v1/charges").len();
    assert_eq!(
        charges_before, 4,
        "only the four good requests reached Stripe"
    );

    // An unknown customer: Stripe refuses it, the API says which field, nothing is charged.
    let (status, answer) = post(
        &app,
        "/api/legacy-charges",
        json!({"amount": 100, "currency": "usd", "customer": "cus_doesnotexist"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "resource_missing");
    assert_eq!(answer["error"]["field"], "customer");
    // A declined card: 402, Stripe's reason.
    let (status, answer) = post(
        &app,
        "/api/legacy-charges",
        json!({"amount": 100, "currency": "usd", "source": "tok_chargeDeclined"}),
    )
    .await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(answer["error"]["code"], "card_declined");

    let list = app.sim_get("/v1/charges", &[("limit", "100")]).await;
    let succeeded: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 3, "{list}");
    app.cleanup().await;
}

/// Every route that can move money refuses a request without `Idempotency-Key` before Stripe
/// is called, and a request repeated with its key makes one Stripe object.
#[tokio::test]
async fn money_moving_routes_require_an_idempotency_key_and_a_retry_creates_nothing_new() {
    let app = connector_app().await;
    let routes = [
        (
            "/api/legacy-charges",
            json!({"amount": 1999, "currency": "usd", "source": "tok_visa"}),
            "/v1/charges",
        ),
        (
            "/api/payment-intents",
            json!({"amount": 1999, "currency": "usd"}),
            "/v1/payment_intents",
        ),
        (
            "/api/checkout-sessions",
            json!({"records": [{"name": "Tea", "unit_amount": 500}]}),
            "/v1/checkout/sessions",
        ),
    ];
    for (path, body, _) in &routes {
        let (status, answer) = call(
            &app,
            reqwest::Method::POST,
            path,
            Some(ADMIN),
            Some(body.clone()),
            None,
        )
        .await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(
            answer["error"]["code"], "idempotency_key_required",
            "{path}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{answer}"
        );
        let (status, answer) = call(
            &app,
            reqwest::Method::POST,
            path,
            Some(ADMIN),
            Some(body.clone()),
            Some("two words"),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_idempotency_key")),
            "{path}: {answer}"
        );
    }
    assert!(
        app.sim().requests().is_empty(),
        "nothing reached Stripe: {:?}",
        app.sim().requests()
    );

    for (path, body, stripe_path) in &routes {
        let key = format!("order-{}", uuid::Uuid::new_v4().simple());
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (status, answer) = call(
                &app,
                reqwest::Method::POST,
                path,
                Some(ADMIN),
                Some(body.clone()),
                Some(&key),
            )
            .await;
            assert_eq!(status, 201, "{path}: {answer}");
            ids.push(answer["id"].clone());
        }
        assert_eq!(ids[0], ids[1], "{path}: the retry answers the first object");
        assert_eq!(
            created(&app, stripe_path),
            1,
            "{path}: one {stripe_path} object for one key"
        );
    }
    app.cleanup().await;
}

fn json_out(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[tokio::test]
async fn the_cli_creates_and_finds_customers_makes_products_and_legacy_charges() {
    let app = connector_app().await;
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let customer = json_out(
        &app.kassa(&[
            "customers",
            "create",
            "--email",
            &email,
            "--name",
            "Grace",
            "--metadata",
            "tier=gold",
        ])
        .await,
    );
    let id = customer["id"].as_str().unwrap();
    assert_eq!(customer["metadata"]["tier"], "gold");
    let found = json_out(&app.kassa(&["customers", "find", "--email", &email]).await);
    assert_eq!(found["data"][0]["id"], id);

    let product = json_out(
        &app.kassa(&[
            "products",
            "create",
            "--name",
            "Mug",
            "--product-code",
            "MUG-1",
        ])
        .await,
    );
    assert_eq!(product["metadata"]["product_code"], "MUG-1");

    let args = [
        "legacy-charge",
        "--amount",
        "1500",
        "--currency",
        "gbp",
        "--source",
        "tok_visa",
        "--idempotency-key",
        "cli-1",
    ];
    let charge = json_out(&app.kassa(&args).await);
    assert_eq!(
        (charge["amount"].as_i64(), charge["currency"].as_str()),
        (Some(1500), Some("gbp"))
    );
    let again = json_out(&app.kassa(&args).await);
    assert_eq!(again["id"], charge["id"], "the same key is the same charge");

    // Without --idempotency-key the key comes from the arguments: the same command run again
    // (say, after its answer was lost) is the same charge; another amount is another charge.
    let derived = |amount: &'static str| {
        [
            "legacy-charge",
            "--amount",
            amount,
            "--currency",
            "usd",
            "--source",
            "tok_visa",
        ]
    };
    let first = app.kassa(&derived("2500")).await;
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(
        stderr.contains(&format!(
            "Idempotency-Key: kassa:{}:connector:legacy_charge:args-",
            app.store().installation_id()
        )),
        "the command says which key it sent: {stderr}"
    );
    let first = json_out(&first);
    let rerun = json_out(&app.kassa(&derived("2500")).await);
    assert_eq!(
        rerun["id"], first["id"],
        "re-running the command charges once"
    );
    let other = json_out(&app.kassa(&derived("2600")).await);
    assert_ne!(other["id"], first["id"]);

    let bad = app
        .kassa(&[
            "legacy-charge",
            "--amount",
            "12.5",
            "--currency",
            "usd",
            "--source",
            "tok_visa",
        ])
        .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("amount"));
    assert_eq!(
        created(&app, "/v1/charges"),
        3,
        "three distinct charges; every repeat was a replay"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_customer_is_found_by_id_with_its_phone_and_address_and_an_unknown_id_is_404() {
    let app = connector_app().await;
    let (status, customer) = post(
        &app,
        "/api/customers",
        json!({
            "email": "ada@example.com",
            "name": "Ada",
            "phone": "+49 30 1234567",
            "address": {"line1": "Unter den Linden 1", "postal_code": "10117", "city": "Berlin", "country": "de"}
        }),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let id = customer["id"].as_str().unwrap();

    let (status, found) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/customers/{id}"),
        Some(ADMIN),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], id);
    assert_eq!(found["phone"], "+49 30 1234567");
    assert_eq!(found["address"]["line1"], "Unter den Linden 1");
    assert_eq!(found["address"]["city"], "Berlin");
    assert_eq!(
        found["address"]["country"], "DE",
        "country codes are upper case"
    );
    // What Stripe holds, not only what the API echoed.
    let stored = app.sim_get(&format!("/v1/customers/{id}"), &[]).await;
    assert_eq!(stored["address"]["postal_code"], "10117");

    for unknown in ["cus_doesnotexist", "not-a-customer-id"] {
        let (status, answer) = call(
            &app,
            reqwest::Method::GET,
            &format!("/api/customers/{unknown}"),
            Some(ADMIN),
            None,
            None,
        )
        .await;
        assert_eq!(status, 404, "{unknown}: {answer}");
        assert_eq!(answer["error"]["code"], "customer_not_found");
    }

    let by_id = json_out(&app.kassa(&["customers", "find", "--id", id]).await);
    assert_eq!(by_id["address"]["city"], "Berlin");
    let missing = app
        .kassa(&["customers", "find", "--id", "cus_doesnotexist"])
        .await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn shipping_needs_its_name_and_street_and_unknown_fields_are_refused_by_name() {
    let app = connector_app().await;
    let charge = |shipping: Value| json!({"amount": 1200, "currency": "usd", "source": "tok_visa", "shipping": shipping});
    for (shipping, field) in [
        (json!({"address": {"line1": "1 Main St"}}), "shipping.name"),
        (json!({"name": "Ada"}), "shipping.address.line1"),
        (
            json!({"name": "Ada", "address": {"city": "Berlin"}}),
            "shipping.address.line1",
        ),
        (
            json!({"name": "Ada", "address": {"line1": "1 Main St", "zip": "1"}}),
            "shipping.address.zip",
        ),
        (json!({"name": "Ada", "adress": {}}), "shipping.adress"),
    ] {
        let (status, answer) = post(&app, "/api/legacy-charges", charge(shipping.clone())).await;
        assert_field_error(status, &answer, field);
    }
    for (path, body, field) in [
        (
            "/api/customers",
            json!({"email": "a@example.com", "adress": {"line1": "x"}}),
            "adress",
        ),
        (
            "/api/products",
            json!({"name": "Tea", "price": 100}),
            "price",
        ),
        (
            "/api/legacy-charges",
            json!({"amount": 100, "currency": "usd", "source": "tok_visa", "capture": false}),
            "capture",
        ),
        (
            "/api/customers",
            json!({"address": {"country": "Germany"}}),
            "address.country",
        ),
    ] {
        let (status, answer) = post(&app, path, body).await;
        assert_field_error(status, &answer, field);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field.rsplit('.').next().unwrap()),
            "the message names the field: {answer}"
        );
    }
    assert!(
        app.sim().requests().is_empty(),
        "nothing refused reached Stripe"
    );

    let (status, paid) = post(
        &app,
        "/api/legacy-charges",
        charge(json!({"name": "Ada", "phone": "+1 555 0100", "address": {"line1": "1 Main St", "city": "Springfield", "country": "US"}})),
    )
    .await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!(paid["shipping"]["name"], "Ada");
    assert_eq!(paid["shipping"]["address"]["line1"], "1 Main St");
    let stored = app
        .sim_get(
            &format!("/v1/charges/{}", paid["id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(stored["shipping"]["address"]["city"], "Springfield");

    let cli = app
        .kassa(&[
            "legacy-charge",
            "--amount",
            "700",
            "--currency",
            "usd",
            "--source",
            "tok_visa",
            "--shipping-line1",
            "1 Main St",
        ])
        .await;
    assert!(!cli.status.success());
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("shipping.name"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    app.cleanup().await;
}
