//! PostgreSQL lost between Stripe's answer and the commit: a proxy in front of the database cuts
//! the worker's connection at the moment it sends `COMMIT`, after Stripe acted. The transaction
//! is rolled back, the message goes back on the retry ladder, and the next delivery finds on
//! Stripe what the first one did: one customer and one attach per completed session, one
//! succeeded PaymentIntent per charge, the event and the charge recorded once.

use crate::charges::{
    attempt_key, charge, customer_with_card, intents_of, settled, successful_intents,
};
use crate::support::app::TestApp;
use crate::support::eventually;
use crate::support::pg_proxy::PgCutProxy;
use crate::worker::assert_card_saved;
use kassa_store::charges::ChargeStatus;
use std::sync::Arc;
use std::time::Duration;

/// Stripe requests at `path` exactly (not a sub-path) that acted: answered 200, not replayed.
fn effective(app: &TestApp, method: &str, path: &str) -> usize {
    app.calls(method, path)
        .iter()
        .filter(|c| c.path == path && c.status == 200 && !c.replayed)
        .count()
}

#[tokio::test]
async fn a_session_whose_commit_is_cut_after_stripe_acted_is_fulfilled_once() {
    let proxy = Arc::new(PgCutProxy::in_front_of_test_server().await);
    let app = TestApp::builder()
        .without_ingress()
        .database_through(proxy.clone())
        .spawn()
        .await;
    let email = format!("c{}@example.com", uuid::Uuid::new_v4().simple());
    let session = app.create_setup_session(&email).await;
    app.complete(&session, "pm_card_visa");
    let completed = app
        .stripe_events("checkout.session.completed")
        .await
        .remove(0);
    let event_id = completed["id"].as_str().unwrap().to_owned();

    // The handler's transaction records the card after the Stripe calls; its COMMIT is cut.
    proxy.cut_commit_of("INSERT INTO payment_methods");
    app.publish_event(&completed).await;
    eventually(Duration::from_secs(20), "the commit to be cut", || async {
        (proxy.cuts() == 1).then_some(())
    })
    .await;
    let stored = app.store().event(&event_id).await.unwrap();
    assert!(
        stored.is_none_or(|e| e.processed_at.is_none()),
        "nothing of the cut transaction was committed"
    );
    let customer_posts = || effective(&app, "POST", "/v1/customers");
    let attach_path = |pm: &str| format!("/v1/payment_methods/{pm}/attach");
    assert_eq!(
        customer_posts(),
        1,
        "Stripe created the customer before the cut"
    );
    let attaches_at_cut = app.calls("POST", "/attach").len();
    assert!(
        attaches_at_cut >= 1,
        "Stripe attached the card before the cut"
    );

    // The retry ladder delivers the event again; it is processed once.
    let processed = app.processed(&event_id).await;
    assert!(processed.processed_at.is_some());
    let (customer_id, card_id) = assert_card_saved(&app, &session).await;
    let retrieves = app
        .calls("GET", "/v1/checkout/sessions/")
        .iter()
        .filter(|c| c.path.ends_with(&session))
        .count();
    assert!(
        retrieves >= 2,
        "handled again after the cut ({retrieves} retrieves)"
    );

    assert_eq!(customer_posts(), 1, "one customer created in Stripe");
    let with_email = app
        .stripe()
        .customers()
        .list(&kassa_stripe::resources::ListCustomers {
            email: Some(email.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with_email.data.len(), 1, "exactly one customer in Stripe");
    assert_eq!(with_email.data[0].id, customer_id);
    assert_eq!(
        effective(&app, "POST", &attach_path(&card_id)),
        1,
        "the card attached once: {:?}",
        app.calls("POST", "/attach")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_charge_whose_commit_is_cut_after_stripe_charged_is_paid_once() {
    let proxy = Arc::new(PgCutProxy::in_front_of_test_server().await);
    let app = TestApp::builder()
        .without_ingress()
        .database_through(proxy.clone())
        .spawn()
        .await;
    let customer = customer_with_card(&app, "pm_card_visa").await;

    // The executor's transaction marks the charge succeeded after Stripe's answer; its COMMIT is cut.
    proxy.cut_commit_of("SET status = 'succeeded'");
    let id = charge(&app, &customer, 2500, "usd").await;
    eventually(Duration::from_secs(20), "the commit to be cut", || async {
        (proxy.cuts() == 1).then_some(())
    })
    .await;
    assert_eq!(
        successful_intents(&app).len(),
        1,
        "Stripe charged the card before the cut"
    );
    let at_cut = app.store().charge(id).await.unwrap().unwrap();
    assert_ne!(
        at_cut.status,
        ChargeStatus::Succeeded,
        "the success was not committed"
    );

    // The job comes back from the retry ladder, finds the attempt's PaymentIntent and settles.
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    assert_eq!(done.attempt, 1, "settled as the first attempt");
    let intents = successful_intents(&app);
    assert_eq!(intents.len(), 1, "one PaymentIntent created: {intents:?}");
    assert_eq!(
        intents[0].idempotency_key.as_deref(),
        Some(attempt_key(&app, id, 1).as_str())
    );
    assert!(
        !app.calls("GET", "/v1/payment_intents").is_empty(),
        "the redelivered job looked the attempt up on Stripe"
    );
    let on_stripe = intents_of(&app, &customer).await;
    assert_eq!(
        on_stripe.len(),
        1,
        "one PaymentIntent for the customer: {on_stripe:?}"
    );
    assert_eq!(on_stripe[0]["status"], "succeeded");
    assert_eq!(
        done.payment_intent_id.as_deref(),
        on_stripe[0]["id"].as_str(),
        "the charge names the PaymentIntent Stripe has"
    );
    app.cleanup().await;
}
