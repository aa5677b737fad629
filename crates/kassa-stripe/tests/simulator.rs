//! The client against kassa-stripe-sim: retries under injected faults keep one idempotency key and
//! create one object, rate limits, declines, `expand`, and idempotent replays. Assertions read the
//! simulator's request log.

use kassa_stripe::objects::{
    CheckoutMode, CheckoutSessionStatus, PaymentIntentStatus, SetupIntentStatus,
};
use kassa_stripe::resources::{
    CreateCheckoutSession, CreatePaymentIntent, CustomerParams, ListCustomers,
};
use kassa_stripe::{Client, ClientConfig, IdempotencyKey, StripeError};
use kassa_stripe_sim::{Faults, RecordedRequest, SimConfig, Simulator};
use std::time::Duration;

async fn simulator() -> Simulator {
    Simulator::start(SimConfig::default())
        .await
        .expect("the simulator starts")
}

/// A client with fast retries: the tests exercise the retry logic, not the waiting.
fn client(sim: &Simulator, max_retries: u32) -> Client {
    Client::new(ClientConfig {
        api_base: sim.base_url(),
        max_retries,
        initial_retry_delay: Duration::from_millis(5),
        max_retry_delay: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
        ..ClientConfig::new("sk_test_kassa_client".into())
    })
    .expect("a valid config")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("a valid key")
}

fn jenny() -> CustomerParams {
    CustomerParams {
        email: Some("jenny@example.com".into()),
        name: Some("Jenny Rosen".into()),
        metadata: Some([("kassa_id".to_owned(), "7".to_owned())].into()),
        ..Default::default()
    }
}

fn posts_to<'a>(requests: &'a [RecordedRequest], path: &str) -> Vec<&'a RecordedRequest> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .collect()
}

#[tokio::test]
async fn injected_500s_are_retried_with_one_key_and_create_one_customer() {
    let sim = simulator().await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        max_faults: Some(2),
        ..Default::default()
    });
    let stripe = client(&sim, 3);

    let customer = stripe
        .customers()
        .create(&jenny(), &key("kassa:evt_1:create_customer"))
        .await
        .expect("created after two 500s");
    assert_eq!(customer.email.as_deref(), Some("jenny@example.com"));
    assert_eq!(customer.metadata["kassa_id"], "7");

    let requests = sim.requests();
    let posts = posts_to(&requests, "/v1/customers");
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(posts
        .iter()
        .all(|r| r.idempotency_key.as_deref() == Some("kassa:evt_1:create_customer")));

    let all = stripe
        .customers()
        .list(&ListCustomers::default())
        .await
        .unwrap();
    assert_eq!(all.data.len(), 1, "one customer, however many attempts");
    assert_eq!(all.data[0].id, customer.id);
    sim.shutdown().await;
}

#[tokio::test]
async fn too_many_injected_errors_exhaust_the_retries() {
    let sim = simulator().await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        ..Default::default()
    });
    let err = client(&sim, 2)
        .customers()
        .create(&jenny(), &key("kassa:evt_2:create_customer"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StripeError::Api { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.request_id().is_some());
    assert_eq!(posts_to(&sim.requests(), "/v1/customers").len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_are_retried_until_the_bucket_refills() {
    let sim = simulator().await;
    // One request a second: the second call is refused with 429 until a token comes back.
    sim.set_faults(Faults {
        rate_limit_per_sec: Some(1),
        ..Default::default()
    });
    let patient = Client::new(ClientConfig {
        api_base: sim.base_url(),
        max_retries: 8,
        initial_retry_delay: Duration::from_millis(100),
        max_retry_delay: Duration::from_millis(400),
        ..ClientConfig::new("sk_test_kassa_client".into())
    })
    .unwrap();
    patient
        .customers()
        .create(&jenny(), &key("rl:1"))
        .await
        .unwrap();
    patient
        .customers()
        .create(&jenny(), &key("rl:2"))
        .await
        .unwrap();

    let requests = sim.requests();
    let second: Vec<u16> = requests
        .iter()
        .filter(|r| r.idempotency_key.as_deref() == Some("rl:2"))
        .map(|r| r.status)
        .collect();
    assert!(second.len() >= 2, "{second:?}");
    assert!(
        second[..second.len() - 1].iter().all(|s| *s == 429),
        "{second:?}"
    );
    assert_eq!(second.last(), Some(&200));
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_past_the_retries_are_rate_limited_errors() {
    let sim = simulator().await;
    sim.set_faults(Faults {
        rate_limit_per_sec: Some(1),
        ..Default::default()
    });
    let stripe = client(&sim, 1);
    stripe
        .customers()
        .create(&jenny(), &key("rl:a"))
        .await
        .unwrap();
    let err = stripe
        .customers()
        .create(&jenny(), &key("rl:b"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StripeError::RateLimited {
                lock_timeout: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    let attempts = sim
        .requests()
        .iter()
        .filter(|r| r.idempotency_key.as_deref() == Some("rl:b"))
        .count();
    assert_eq!(attempts, 2, "1 attempt + 1 retry");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_off_session_decline_is_a_card_error_with_the_payment_intent() {
    let sim = simulator().await;
    let stripe = client(&sim, 3);
    let customer = stripe
        .customers()
        .create(&jenny(), &key("decline:customer"))
        .await
        .unwrap();

    let err = stripe
        .payment_intents()
        .create(
            &CreatePaymentIntent {
                amount: 1500,
                currency: "jpy".into(),
                customer: Some(customer.id.clone()),
                payment_method: Some("pm_card_visa_chargeDeclined".into()),
                off_session: Some(true),
                confirm: Some(true),
                ..Default::default()
            },
            &key("kassa:charge:1:1"),
        )
        .await
        .unwrap_err();
    let StripeError::Card {
        code,
        decline_code,
        payment_intent,
        request_id,
        ..
    } = &err
    else {
        panic!("expected a card error, got {err:?}")
    };
    assert_eq!(code.as_deref(), Some("card_declined"));
    assert_eq!(decline_code.as_deref(), Some("generic_decline"));
    assert!(request_id.is_some());
    let pi = payment_intent
        .as_ref()
        .expect("the PaymentIntent comes with the error");
    assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
    assert_eq!(pi.amount, 1500);
    assert_eq!(
        pi.last_payment_error
            .as_ref()
            .and_then(|e| e.code.as_deref()),
        Some("card_declined")
    );
    assert!(!err.is_transient());
    assert_eq!(
        posts_to(&sim.requests(), "/v1/payment_intents").len(),
        1,
        "a decline is not retried"
    );

    // The client and Stripe agree on what the PaymentIntent now is.
    let fetched = stripe
        .payment_intents()
        .retrieve(&pi.id, &[])
        .await
        .unwrap();
    assert_eq!(fetched.status, PaymentIntentStatus::RequiresPaymentMethod);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_off_session_charge_of_a_good_card_succeeds() {
    let sim = simulator().await;
    let stripe = client(&sim, 3);
    let pi = stripe
        .payment_intents()
        .create(
            &CreatePaymentIntent {
                amount: 1500,
                currency: "jpy".into(),
                payment_method: Some("pm_card_visa".into()),
                confirm: Some(true),
                ..Default::default()
            },
            &key("kassa:charge:2:1"),
        )
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    assert_eq!((pi.amount, pi.currency.as_str()), (1500, "jpy"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_completed_setup_session_expands_its_setup_intent() {
    let sim = simulator().await;
    let stripe = client(&sim, 3);
    let customer = stripe
        .customers()
        .create(&jenny(), &key("setup:customer"))
        .await
        .unwrap();
    let session = stripe
        .checkout_sessions()
        .create(
            &CreateCheckoutSession {
                mode: CheckoutMode::Setup,
                customer: Some(customer.id.clone()),
                currency: Some("jpy".into()),
                success_url: Some(
                    "https://shop.example/ok?session_id={CHECKOUT_SESSION_ID}".into(),
                ),
                cancel_url: Some("https://shop.example/cancel".into()),
                metadata: Some([("charge_id".to_owned(), "42".to_owned())].into()),
                ..Default::default()
            },
            &key("setup:session"),
        )
        .await
        .unwrap();
    assert_eq!(session.mode, CheckoutMode::Setup);
    assert_eq!(session.status, Some(CheckoutSessionStatus::Open));
    assert!(session.url.is_some());
    assert_eq!(session.metadata["charge_id"], "42");

    sim.complete_checkout_session(&session.id, "pm_card_visa")
        .expect("the customer completes the session");

    let completed = stripe
        .checkout_sessions()
        .retrieve(&session.id, &["setup_intent"])
        .await
        .unwrap();
    assert_eq!(completed.status, Some(CheckoutSessionStatus::Complete));
    let setup_intent = completed
        .setup_intent
        .as_ref()
        .and_then(|si| si.as_object())
        .expect("setup_intent expanded into the object");
    assert_eq!(setup_intent.status, SetupIntentStatus::Succeeded);
    let pm_id = setup_intent
        .payment_method
        .as_ref()
        .expect("the saved card")
        .id();
    assert!(pm_id.starts_with("pm_"), "{pm_id}");

    // Without expand, the same field is only the id.
    let plain = stripe
        .checkout_sessions()
        .retrieve(&session.id, &[])
        .await
        .unwrap();
    let plain_si = plain.setup_intent.expect("a setup intent");
    assert!(plain_si.as_object().is_none());
    assert_eq!(plain_si.id(), setup_intent.id);

    // The card the session saved can be read back with its details.
    let pm = stripe.payment_methods().retrieve(pm_id, &[]).await.unwrap();
    assert_eq!(pm.card.map(|c| c.last4), Some("4242".to_owned()));

    // The query carried `expand[0]=setup_intent`: the simulator logs GETs without their query,
    // so the proof is the expanded object above.
    sim.shutdown().await;
}

#[tokio::test]
async fn the_same_key_and_params_replay_the_same_object() {
    let sim = simulator().await;
    let stripe = client(&sim, 0);
    let k = key("kassa:evt_9:create_customer");
    let first = stripe.customers().create(&jenny(), &k).await.unwrap();
    let second = stripe.customers().create(&jenny(), &k).await.unwrap();
    assert_eq!(first, second);

    let requests = sim.requests();
    let posts = posts_to(&requests, "/v1/customers");
    assert_eq!(posts.len(), 2);
    assert!(!posts[0].replayed);
    assert!(posts[1].replayed, "the second answer is Stripe's saved one");
    let all = stripe
        .customers()
        .list(&ListCustomers::default())
        .await
        .unwrap();
    assert_eq!(all.data.len(), 1);

    // The same key with other params is a bug in the caller: permanent.
    let other = CustomerParams {
        email: Some("someone.else@example.com".into()),
        ..jenny()
    };
    let err = stripe.customers().create(&other, &k).await.unwrap_err();
    assert!(
        matches!(err, StripeError::Idempotency { status: 400, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    sim.shutdown().await;
}

#[tokio::test]
async fn attach_and_make_default_then_a_missing_customer() {
    let sim = simulator().await;
    let stripe = client(&sim, 3);
    let customer = stripe
        .customers()
        .create(&jenny(), &key("attach:customer"))
        .await
        .unwrap();
    let pm = stripe
        .payment_methods()
        .attach("pm_card_visa", &customer.id, &key("attach:pm"))
        .await
        .unwrap();
    assert_eq!(
        pm.customer.as_ref().map(kassa_stripe::Expandable::id),
        Some(customer.id.as_str())
    );

    let updated = stripe
        .customers()
        .expand(&["invoice_settings.default_payment_method"])
        .set_default_payment_method(&customer.id, &pm.id, &key("attach:default"))
        .await
        .unwrap();
    let default = updated
        .invoice_settings
        .default_payment_method
        .expect("a default card");
    assert_eq!(default.id(), pm.id);
    assert!(default.as_object().is_some(), "expanded through the handle");

    let err = stripe
        .customers()
        .retrieve("cus_does_not_exist", &[])
        .await
        .unwrap_err();
    assert!(err.is_resource_missing(), "{err:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_publishable_key_never_reaches_the_network() {
    let sim = simulator().await;
    let refused = Client::new(ClientConfig {
        api_base: sim.base_url(),
        ..ClientConfig::new("pk_test_abc".into())
    });
    assert!(refused.is_err());
    assert!(sim.requests().is_empty());
    sim.shutdown().await;
}
