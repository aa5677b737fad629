//! Charging any customer of the Stripe account: customers Kassa never recorded (made before
//! Kassa was installed, or whose webhooks never came) are looked up on Stripe by `kassa charge`,
//! `POST /api/charges` and `kassa charges import`, and `kassa sync customers` backfills them all.
//! The simulator delivers no webhooks in these tests, so Kassa learns of these customers only
//! through the lookup and the sync.

use crate::support::app::TestApp;
use crate::support::binary::{charge_args, kassa, text};
use crate::support::{eventually, key, services, sim};
use futures_util::{stream, StreamExt};
use kassa_store::ChargeStatus;
use kassa_stripe::resources::{CustomerParams, InvoiceSettingsParams};
use kassa_stripe::{Client, ClientConfig};
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &str = "customers-test-admin-token-0123456789";
const API_KEY: &str = "sk_test_kassa_customers";

/// A card saved on Stripe directly (`POST /v1/payment_methods` with a test token).
async fn card(sim_base: &str) -> String {
    let card = [("type", "card"), ("card[token]", "tok_visa")];
    let created = sim::post_form(sim_base, "/v1/payment_methods", &card).await;
    created["id"].as_str().unwrap().to_owned()
}

/// A customer with a saved default card, made on Stripe itself (the Dashboard, another
/// integration), not through Kassa. Returns (customer, card).
async fn stripe_only_customer(stripe: &Client, sim_base: &str) -> (String, String) {
    let card = card(sim_base).await;
    let params = CustomerParams {
        email: Some(format!("{}@example.com", uuid::Uuid::new_v4().simple())),
        payment_method: Some(card.clone()),
        invoice_settings: Some(InvoiceSettingsParams {
            default_payment_method: Some(card.clone()),
        }),
        ..Default::default()
    };
    let customer = stripe
        .customers()
        .create(&params, &key("customer"))
        .await
        .unwrap();
    (customer.id, card)
}

fn client(sim_base: &str) -> Client {
    let mut config = ClientConfig::new(API_KEY.to_owned().into());
    config.api_base = sim_base.to_owned();
    Client::new(config).unwrap()
}

/// PaymentIntents Stripe created (not replays).
fn intents_created(app: &TestApp) -> Vec<kassa_stripe_sim::RecordedRequest> {
    app.calls("POST", "/v1/payment_intents")
        .into_iter()
        .filter(|r| r.path == "/v1/payment_intents" && r.status == 200 && !r.replayed)
        .collect()
}

/// Waits until the charge recorded under `reference` succeeded, and returns it.
async fn succeeded(app: &TestApp, reference: &str) -> kassa_store::ChargeRecord {
    let id = app
        .store()
        .charge_by_reference(reference)
        .await
        .unwrap()
        .unwrap()
        .id;
    eventually(
        Duration::from_secs(20),
        &format!("{reference} to succeed"),
        || async {
            app.store()
                .charge(id)
                .await
                .unwrap()
                .filter(|c| c.status == ChargeStatus::Succeeded)
        },
    )
    .await
}

async fn no_webhooks_app() -> TestApp {
    TestApp::builder()
        .admin_token(ADMIN)
        .dropping_webhooks()
        .spawn()
        .await
}

#[tokio::test]
async fn kassa_charge_charges_a_customer_kassa_never_saw_exactly_once() {
    let app = no_webhooks_app().await;
    let base = app.sim().base_url();
    let (customer, card) = stripe_only_customer(app.stripe(), &base).await;
    assert!(
        app.store().customer(&customer).await.unwrap().is_none(),
        "Kassa has not recorded the customer"
    );

    let args = charge_args(&customer, "1999", "usd", "stripe-only-1");
    let out = app.kassa(&args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created charge"));
    let recorded = app.store().customer(&customer).await.unwrap().unwrap();
    assert_eq!(
        recorded.default_payment_method.as_deref(),
        Some(card.as_str())
    );
    let charge = succeeded(&app, "stripe-only-1").await;
    assert!(charge.payment_intent_id.is_some());

    // Run again (say, after a lost answer): the same charge, no second PaymentIntent.
    let out = app.kassa(&args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("already exists"));
    let intents = intents_created(&app);
    assert_eq!(intents.len(), 1, "one PaymentIntent for one charge");
    let pi = app
        .stripe()
        .payment_intents()
        .retrieve(charge.payment_intent_id.as_deref().unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(
        (
            pi.amount,
            pi.payment_method.as_ref().map(|pm| pm.id().to_owned())
        ),
        (1999, Some(card))
    );

    // A customer Stripe does not know, and one Stripe deleted, are still refused, clearly.
    let charge_of = |customer: String, reference: &'static str| {
        let app = &app;
        async move {
            app.kassa(&charge_args(&customer, "1999", "usd", reference))
                .await
        }
    };
    let out = charge_of("cus_NoSuchCustomer".into(), "stripe-only-2").await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("customer: unknown customer cus_NoSuchCustomer")
            && text(&out.stderr).contains("no such customer"),
        "{}",
        text(&out.stderr)
    );
    let (gone, _) = stripe_only_customer(app.stripe(), &base).await;
    sim::delete(&base, &format!("/v1/customers/{gone}")).await;
    let out = charge_of(gone.clone(), "stripe-only-3").await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("customer {gone} is deleted")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        app.store()
            .list_charges(None, None, 10, None)
            .await
            .unwrap()
            .len(),
        1,
        "refusals record nothing"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_api_and_the_csv_import_look_up_customers_kassa_never_saw() {
    let app = no_webhooks_app().await;
    let base = app.sim().base_url();
    let (for_api, _) = stripe_only_customer(app.stripe(), &base).await;
    let (for_csv, _) = stripe_only_customer(app.stripe(), &base).await;

    let post = |body: Value| {
        let app = &app;
        async move {
            let call = app.post("/api/charges").token(Some(ADMIN));
            call.json(&body).send().await
        }
    };
    let (status, created) = post(
        json!({"customer": for_api, "amount": 2500, "currency": "eur", "reference": "api-ext-1"}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let (status, refused) = post(json!({"customer": "cus_NoSuchCustomer", "amount": 2500, "currency": "eur", "reference": "api-ext-2"})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "customer");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such customer"),
        "{refused}"
    );

    let file = std::env::temp_dir().join(format!("kassa-import-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        format!("customer,amount,currency,reference\n{for_csv},1000,jpy,csv-ext-1\ncus_NoSuchCustomer,1000,jpy,csv-ext-2\n"),
    )
    .unwrap();
    let out = app
        .kassa(&["charges", "import", file.to_str().unwrap()])
        .await;
    std::fs::remove_file(&file).ok();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("created 1, already existed 0, rejected 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("line 3: customer: unknown customer cus_NoSuchCustomer"));

    for reference in ["api-ext-1", "csv-ext-1"] {
        succeeded(&app, reference).await;
    }
    assert_eq!(intents_created(&app).len(), 2);
    app.cleanup().await;
}

async fn sync_row(store: &kassa_store::Store) -> Option<kassa_store::SyncCursor> {
    store.customer_sync("customers").await.unwrap()
}

#[tokio::test]
async fn sync_customers_records_a_thousand_customers_with_their_cards_and_resumes_after_a_crash() {
    let sim = kassa_stripe_sim::Simulator::start(Default::default())
        .await
        .unwrap();
    let base = sim.base_url();
    let stripe = client(&base);
    // 1 000 customers with a default card; every 20th has a second card, every 100th none.
    let made: Vec<(String, usize)> = stream::iter(0..1000)
        .map(|i| {
            let (stripe, base) = (&stripe, &base);
            async move {
                if i % 100 == 99 {
                    let customer = stripe
                        .customers()
                        .create(&CustomerParams::default(), &key("customer"))
                        .await
                        .unwrap();
                    return (customer.id, 0);
                }
                let (customer, _) = stripe_only_customer(stripe, base).await;
                if i % 20 == 0 {
                    let second = card(base).await;
                    stripe
                        .payment_methods()
                        .attach(&second, &customer, &key("customer"))
                        .await
                        .unwrap();
                    return (customer, 2);
                }
                (customer, 1)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let cards: usize = made.iter().map(|(_, n)| n).sum();
    assert_eq!(cards, 1040);

    let database_url = services::fresh_database_url().await;
    let store = kassa_store::Store::connect(&database_url, 2).await.unwrap();
    let sync = |rps: Option<&str>| {
        let mut command = kassa(&["sync", "customers"]);
        command
            .env("KASSA_DATABASE_URL", &database_url)
            .env("KASSA_STRIPE_API_KEY", API_KEY)
            .env("KASSA_STRIPE_API_BASE", &base)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match rps {
            Some(rps) => command.env("KASSA_STRIPE_MAX_RPS", rps),
            None => command.env_remove("KASSA_STRIPE_MAX_RPS"),
        };
        command.spawn().unwrap()
    };

    // A paced sync, killed once it recorded a page or more: what it recorded is consistent.
    let mut first = sync(Some("150"));
    let cursor = eventually(
        Duration::from_secs(30),
        "the first page to be recorded",
        || async { sync_row(&store).await.filter(|c| c.counts.customers >= 100) },
    )
    .await;
    first.kill().await.unwrap();
    let cursor = sync_row(&store).await.unwrap_or(cursor);
    assert!(cursor.finished_at.is_none());
    assert!(cursor.counts.customers < 1000, "killed mid-way: {cursor:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        rows, cursor.counts.customers,
        "each page is recorded with the cursor, in one transaction"
    );

    // Run again: it continues after the last recorded page and finishes.
    let out = sync(None).wait_with_output().await.unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "resumed the sync interrupted after {}",
            cursor.starting_after.as_deref().unwrap()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("customers: 1000 (1000 new), cards: 1040 (1040 new), skipped: 0"),
        "{stdout}"
    );
    let count = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM customers").await, 1000);
    assert_eq!(
        count("SELECT count(*) FROM payment_methods WHERE attached AND brand = 'visa'").await,
        1040
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM customers c JOIN payment_methods pm
               ON pm.id = c.default_payment_method AND pm.customer_id = c.id AND pm.attached"
        )
        .await,
        990,
        "every customer with a card has its default card recorded"
    );

    // Once more: the same facts, nothing new, and it says so.
    let out = sync(None).wait_with_output().await.unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("resumed"), "{stdout}");
    assert!(
        stdout.contains("customers: 1000 (0 new), cards: 1040 (0 new), skipped: 0"),
        "{stdout}"
    );
    assert_eq!(count("SELECT count(*) FROM customers").await, 1000);

    store.close().await;
    services::drop_database(&database_url).await;
    sim.shutdown().await;
}
