//! Submitting a back-office charge on real PostgreSQL: the charge is recorded in its own mode, a
//! customer of the other mode is refused without asking Stripe, a refused field records nothing,
//! and a reference reused for another charge is reported instead of answered with the first.

use kassa_broker::Topology;
use kassa_core::charges::job_route;
use kassa_core::charges::submit::{
    submit_charge, ChargeMode, ChargeRequest, SubmitError, Submitted,
};
use kassa_store::{customers, CustomerRecord, PaymentMethodRecord, Store};
use kassa_stripe::{Client, ClientConfig, Mode};
use secrecy::SecretString;
use serde_json::json;
use sqlx::{Connection, PgConnection};

/// `KASSA_DATABASE_URL`'s server with database `name`.
fn database_url(name: &str) -> String {
    let configured = std::env::var("KASSA_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/".to_owned());
    let mut url = url::Url::parse(&configured).expect("KASSA_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops the test's database when dropped (pass or fail), from a thread of its own.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&database_url("postgres")).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
    }
}

/// A Stripe client of `key` that is never called here: the customer is recorded, so nothing is
/// looked up (an address nothing listens on makes any call fail loudly).
fn stripe(key: &str) -> Client {
    let mut config = ClientConfig::new(SecretString::from(key.to_owned()));
    config.api_base = "http://127.0.0.1:9".into();
    config.max_retries = 0;
    Client::new(config).expect("client")
}

fn request(reference: &str, amount: serde_json::Value) -> ChargeRequest {
    ChargeRequest {
        customer: Some("cus_recorded".into()),
        amount: Some(amount),
        currency: Some("EUR".into()),
        reference: Some(reference.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_charge_is_recorded_in_its_mode_and_cross_mode_or_bad_input_records_nothing() {
    let name = format!("kassa_test_{}", uuid::Uuid::new_v4().simple());
    let _drop = DropDatabase(name.clone());
    let store = Store::connect(&database_url(&name), 4)
        .await
        .expect("a fresh database");
    let mut tx = store.begin().await.unwrap();
    customers::upsert_customer(
        &mut tx,
        &CustomerRecord {
            id: "cus_recorded".into(),
            email: Some("ada@example.com".into()),
            name: None,
            default_payment_method: Some("pm_recorded".into()),
            deleted: false,
            livemode: true,
        },
    )
    .await
    .unwrap();
    customers::upsert_payment_method(
        &mut tx,
        &PaymentMethodRecord {
            id: "pm_recorded".into(),
            customer_id: Some("cus_recorded".into()),
            attached: true,
            livemode: Some(true),
            brand: Some("visa".into()),
            last4: Some("4242".into()),
            exp_month: Some(12),
            exp_year: Some(2030),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let route = job_route(&Topology::unique());

    let live_client = stripe("sk_live_kassa_core_submit_test");
    let live = ChargeMode {
        mode: Mode::Live,
        stripe: Some(&live_client),
    };
    let Submitted::Created(charge) =
        submit_charge(&store, live, &route, &request("inv-live", json!(1999)))
            .await
            .unwrap()
    else {
        panic!("a new reference is a new charge");
    };
    assert!(charge.livemode, "a live charge of a live customer: live");
    assert_eq!((charge.amount, charge.currency.as_str()), (1999, "eur"));

    // The customer is recorded in live mode: a test-mode charge naming it is refused by name,
    // without asking Stripe (the test client's address answers nothing: a call would be a
    // lookup failure, not a refusal).
    let test_client = stripe("sk_test_kassa_core_submit_test");
    let test = ChargeMode {
        mode: Mode::Test,
        stripe: Some(&test_client),
    };
    let crossed = submit_charge(&store, test, &route, &request("inv-test", json!(500)))
        .await
        .unwrap_err();
    assert!(
        matches!(crossed, SubmitError::Invalid(ref e) if e.field == "customer" && e.code == "mode_mismatch" && e.message.contains("live-mode customer") && e.message.contains("test mode")),
        "{crossed:?}"
    );
    assert!(store
        .charge_by_reference("inv-test")
        .await
        .unwrap()
        .is_none());

    let again = submit_charge(&store, live, &route, &request("inv-live", json!(1999)))
        .await
        .unwrap();
    assert!(
        matches!(again, Submitted::Existed(ref c) if c.id == charge.id),
        "the same reference is the same charge: {again:?}"
    );
    let reused = submit_charge(&store, live, &route, &request("inv-live", json!(501)))
        .await
        .unwrap_err();
    assert!(
        matches!(reused, SubmitError::ReferenceInUse { ref existing } if existing.id == charge.id),
        "{reused:?}"
    );

    for (amount, why) in [(json!("19.99"), "a string"), (json!(19.5), "a fraction")] {
        let refused = submit_charge(&store, live, &route, &request("inv-bad", amount))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, SubmitError::Invalid(ref e) if e.field == "amount"),
            "{why}: {refused:?}"
        );
    }
    assert!(
        store
            .charge_by_reference("inv-bad")
            .await
            .unwrap()
            .is_none(),
        "a refused charge is not recorded"
    );
    store.close().await;
}
