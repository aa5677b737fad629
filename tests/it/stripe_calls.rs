//! What one unit of work costs in Stripe calls, counted in the simulator's request log per
//! endpoint: a completed setup session (4 calls when Kassa creates the customer, 2 when Stripe
//! attached the card to the session's customer and the session is handled first), the events
//! that echo Kassa's own writes (none), an event caused by anyone else or newer than what Kassa
//! read (re-fetched), one back-office charge (1 call), and the per-endpoint pace (a burst meets
//! Stripe's endpoint limit with no 429).

use crate::charges::{charge, customer_with_card, settled};
use crate::support::app::TestApp;
use crate::support::{eventually, key, record_customer_with_card};
use kassa_store::charges::ChargeStatus;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::{CreateCheckoutSession, CustomerParams};
use kassa_stripe_sim::{Faults, RecordedRequest};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// Requests counted per endpoint (`GET /v1/customers/{id}`, …).
fn per_endpoint(requests: &[RecordedRequest]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.operation.clone()).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// Waits until every delivered event of a type Kassa handles is processed, `wanted` among them;
/// returns the delivered (event id, type) pairs.
async fn all_handled_events_processed(app: &TestApp, wanted: &[&str]) -> Vec<(String, String)> {
    eventually(
        Duration::from_secs(30),
        &format!("the events {wanted:?} to be delivered and processed"),
        || async {
            let delivered: Vec<(String, String)> = app
                .sim()
                .webhook_deliveries()
                .into_iter()
                .filter(|d| kassa_worker::events::handles(&d.event_type))
                .map(|d| (d.event_id, d.event_type))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let types: HashSet<&str> = delivered.iter().map(|(_, t)| t.as_str()).collect();
            if !wanted.iter().all(|w| types.contains(w)) {
                return None;
            }
            for (id, _) in &delivered {
                let stored = app.store().event(id).await.unwrap();
                stored.filter(|e| e.processed_at.is_some())?;
            }
            Some(delivered)
        },
    )
    .await
}

#[tokio::test]
async fn a_setup_session_costs_four_calls_and_the_echoes_of_its_writes_none() {
    let app = TestApp::spawn().await;
    let email = format!("c{}@example.com", uuid::Uuid::new_v4().simple());
    let session = app.create_setup_session(&email).await;
    let from = app.sim().requests().len();
    app.complete(&session, "pm_card_visa");

    let delivered = all_handled_events_processed(
        &app,
        &[
            "setup_intent.succeeded",
            "checkout.session.completed",
            "customer.created",
            "payment_method.attached",
            "customer.updated",
        ],
    )
    .await;
    let kassas = app.sim().requests()[from..].to_vec();
    eprintln!(
        "one setup session, Kassa creating the customer: {:?}",
        per_endpoint(&kassas)
    );
    assert_eq!(
        per_endpoint(&kassas),
        counts(&[
            ("GET /v1/checkout/sessions/{id}", 1),
            ("POST /v1/customers", 1),
            ("POST /v1/payment_methods/{id}/attach", 1),
            ("POST /v1/customers/{id}", 1),
        ]),
        "retrieve (expanded), create, attach, set default; no re-fetch for {delivered:?}"
    );
    let record = app
        .store()
        .checkout_session(&session)
        .await
        .unwrap()
        .unwrap();
    let customer_id = record.customer_id.expect("a customer");
    let (customer, card) = app
        .store()
        .customer_with_default_card(&customer_id)
        .await
        .unwrap()
        .expect("the customer is recorded");
    assert_eq!(customer.email.as_deref(), Some(email.as_str()));
    let card = card.expect("its default card is recorded");
    assert_eq!(Some(card.id), record.payment_method_id);
    assert_eq!(card.last4.as_deref(), Some("4242"));

    // A change made by someone else (the Dashboard, another program) is re-fetched.
    let from = app.sim().requests().len();
    let rename = CustomerParams {
        name: Some("Renamed Elsewhere".into()),
        ..Default::default()
    };
    app.stripe()
        .customers()
        .update(&customer_id, &rename, &key("rename"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the foreign change to be recorded",
        || async {
            let customer = app.store().customer(&customer_id).await.unwrap()?;
            (customer.name.as_deref() == Some("Renamed Elsewhere")).then_some(())
        },
    )
    .await;
    let after = app.sim().requests()[from..].to_vec();
    assert_eq!(
        per_endpoint(&after),
        counts(&[
            ("POST /v1/customers/{id}", 1),
            ("GET /v1/customers/{id}", 1)
        ]),
        "the test's update, then Kassa's re-fetch of it"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_event_under_an_own_key_whose_answer_kassa_never_recorded_is_re_fetched() {
    let app = TestApp::spawn().await;
    // A write under one of this installation's keys whose record never committed (as when the
    // transaction that sent it rolled back): its event is not an echo of anything recorded.
    let installation = app.store().installation_id().to_owned();
    let own_key = kassa_stripe::IdempotencyKey::new(format!(
        "kassa:{installation}:evt_rolled_back:create_customer"
    ))
    .unwrap();
    let email = format!("c{}@example.com", uuid::Uuid::new_v4().simple());
    let customer = app
        .stripe()
        .customers()
        .create(
            &CustomerParams {
                email: Some(email.clone()),
                ..Default::default()
            },
            &own_key,
        )
        .await
        .unwrap();
    let from = app.sim().requests().len();
    let delivered = all_handled_events_processed(&app, &["customer.created"]).await;
    let recorded = app.store().customer(&customer.id).await.unwrap();
    assert_eq!(
        recorded.and_then(|c| c.email).as_deref(),
        Some(email.as_str()),
        "recorded from the re-fetch"
    );
    assert_eq!(
        per_endpoint(&app.sim().requests()[from..]),
        counts(&[("GET /v1/customers/{id}", 1)]),
        "re-fetched: {delivered:?}"
    );
    app.cleanup().await;
}

/// A customer made by the test (not by Kassa) and an open setup session naming it.
pub(crate) async fn session_naming_a_customer(app: &TestApp) -> (String, String) {
    let customer = app
        .stripe()
        .customers()
        .create(
            &CustomerParams {
                email: Some(format!("c{}@example.com", uuid::Uuid::new_v4().simple())),
                ..Default::default()
            },
            &key("customer"),
        )
        .await
        .unwrap();
    let params = CreateCheckoutSession {
        mode: CheckoutMode::Setup,
        currency: Some("usd".into()),
        customer: Some(customer.id.clone()),
        success_url: Some("http://127.0.0.1/success".into()),
        cancel_url: Some("http://127.0.0.1/cancel".into()),
        ..Default::default()
    };
    let session = app
        .stripe()
        .checkout_sessions()
        .create(&params, &key("session"))
        .await
        .unwrap()
        .id;
    (customer.id, session)
}

/// Stripe's event of `kind` about `object_id` (the simulator's `/v1/events`).
pub(crate) async fn stripe_event(app: &TestApp, kind: &str, object_id: &str) -> serde_json::Value {
    app.stripe_events(kind)
        .await
        .into_iter()
        .find(|e| e["data"]["object"]["id"] == object_id)
        .unwrap_or_else(|| panic!("a {kind} event about {object_id}"))
}

/// Kassa's requests since `from`: the test's own reads of `/v1/events` left out (the events
/// poller is off in these tests, so Kassa makes none).
fn kassas_since(app: &TestApp, from: usize) -> BTreeMap<String, usize> {
    let mut calls = per_endpoint(&app.sim().requests()[from..]);
    calls.remove("GET /v1/events");
    calls
}

/// Hands `event` to the worker, as the ingress would, and waits until it is processed.
pub(crate) async fn handle(app: &TestApp, event: &serde_json::Value) {
    app.publish_event(event).await;
    app.processed(event["id"].as_str().unwrap()).await;
}

/// The card Stripe attached to the session's customer, as recorded: attached, the default.
async fn assert_default_card(app: &TestApp, customer: &str, card: &str) {
    let (recorded, default) = app
        .store()
        .customer_with_default_card(customer)
        .await
        .unwrap()
        .expect("the customer is recorded");
    assert!(!recorded.deleted);
    let default = default.expect("its default card is recorded");
    assert_eq!(default.id, card);
    assert!(default.attached);
    assert_eq!(default.last4.as_deref(), Some("4242"));
}

#[tokio::test]
async fn a_session_whose_customer_stripe_attached_the_card_to_costs_two_calls() {
    // Webhooks are dropped: the test hands the session's events over in the order it tests.
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    let (customer, session) = session_naming_a_customer(&app).await;
    app.complete(&session, "pm_card_visa");
    let from = app.sim().requests().len();

    // The session first: its read (card expanded) shows the card attached to the customer.
    handle(
        &app,
        &stripe_event(&app, "checkout.session.completed", &session).await,
    )
    .await;
    let card = app
        .store()
        .checkout_session(&session)
        .await
        .unwrap()
        .and_then(|s| s.payment_method_id)
        .expect("the session's card is recorded");
    // Then Checkout's attach (not Kassa's write): the record, from Stripe's answer after the
    // attach, already holds it. The set-default's echo and the SetupIntent need nothing either.
    handle(
        &app,
        &stripe_event(&app, "payment_method.attached", &card).await,
    )
    .await;
    handle(
        &app,
        &stripe_event(&app, "customer.updated", &customer).await,
    )
    .await;
    let intent = app.stripe_events("setup_intent.succeeded").await;
    handle(&app, intent.first().expect("a setup_intent.succeeded")).await;

    let kassas = kassas_since(&app, from);
    eprintln!("one setup session naming a customer: {kassas:?}");
    assert_eq!(
        kassas,
        counts(&[
            ("GET /v1/checkout/sessions/{id}", 1),
            ("POST /v1/customers/{id}", 1),
        ]),
        "the fulfilment: retrieve (card expanded) and set default; nothing for its events"
    );
    assert_default_card(&app, &customer, &card).await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_attachment_handled_before_kassa_read_the_card_is_re_fetched() {
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    let (customer, session) = session_naming_a_customer(&app).await;
    app.complete(&session, "pm_card_visa");
    let from = app.sim().requests().len();

    // Checkout's attach first: Kassa holds no answer of Stripe's given after it, so the event
    // is newer than anything Kassa read about the card: re-fetched.
    let attached = app.stripe_events("payment_method.attached").await;
    let attached = attached
        .into_iter()
        .find(|e| e["data"]["object"]["customer"] == customer.as_str())
        .expect("Checkout's payment_method.attached");
    let card = attached["data"]["object"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    handle(&app, &attached).await;
    assert_eq!(
        kassas_since(&app, from),
        counts(&[("GET /v1/payment_methods/{id}", 1)]),
        "the attachment is re-fetched"
    );
    handle(
        &app,
        &stripe_event(&app, "checkout.session.completed", &session).await,
    )
    .await;

    assert_eq!(
        kassas_since(&app, from),
        counts(&[
            ("GET /v1/payment_methods/{id}", 1),
            ("GET /v1/checkout/sessions/{id}", 1),
            ("POST /v1/customers/{id}", 1),
        ]),
        "the re-fetch, then the fulfilment"
    );
    assert_default_card(&app, &customer, &card).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_back_office_charge_of_a_recorded_default_card_costs_one_call() {
    let app = TestApp::spawn().await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // The customer's own events (created by the test, not by Kassa) are re-fetched and recorded
    // before counting starts.
    all_handled_events_processed(&app, &["customer.updated", "payment_method.attached"]).await;
    let card = app.default_card(&customer).await;
    record_customer_with_card(app.store(), &customer, &card, None).await;
    let from = app.sim().requests().len();
    let id = charge(&app, &customer, 1999, "usd").await;
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    assert_eq!(done.attempt, 1);
    let delivered =
        all_handled_events_processed(&app, &["payment_intent.succeeded", "charge.succeeded"]).await;
    let kassas = app.sim().requests()[from..].to_vec();
    let calls = per_endpoint(&kassas);
    eprintln!("one back-office charge, with its events: {calls:?}");
    assert_eq!(
        calls,
        counts(&[
            // The charge job: the create with confirm=true, off_session=true, nothing else.
            ("POST /v1/payment_intents", 1),
            // charge.succeeded, announced as a new charge from Stripe's own record of it.
            ("GET /v1/charges/{id}", 1),
        ]),
        "payment_intent.succeeded echoes the create and costs nothing: {delivered:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_burst_of_charges_meets_the_endpoint_limit_without_a_429() {
    const LIMIT: u32 = 10;
    const CHARGES: usize = 40;
    let app = TestApp::builder()
        .without_ingress()
        .stripe_endpoint_rps(LIMIT)
        .spawn()
        .await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    let card = app.default_card(&customer).await;
    record_customer_with_card(app.store(), &customer, &card, None).await;
    // Stripe's endpoint limit, enforced by the simulator from here on.
    app.sim().set_faults(Faults {
        endpoint_rate_limit_per_sec: Some(LIMIT),
        ..Faults::default()
    });
    let from = app.sim().requests().len();
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..CHARGES {
        ids.push(charge(&app, &customer, 500, "usd").await);
    }
    for id in ids {
        settled(&app, id, ChargeStatus::Succeeded).await;
    }
    let elapsed = started.elapsed();
    let creates: Vec<_> = app.sim().requests()[from..]
        .iter()
        .filter(|r| r.operation == "POST /v1/payment_intents")
        .cloned()
        .collect();
    let limited: Vec<_> = creates.iter().filter(|r| r.status == 429).collect();
    assert!(limited.is_empty(), "no 429: {limited:?}");
    assert_eq!(creates.len(), CHARGES, "one create per charge");
    // Evenly spaced at LIMIT/s: the first goes at once, the rest 1/LIMIT s apart.
    let floor = Duration::from_secs_f64((CHARGES - 1) as f64 / f64::from(LIMIT));
    assert!(
        elapsed >= floor.mul_f64(0.9),
        "{CHARGES} charges at {LIMIT}/s took {elapsed:?}, less than {floor:?}"
    );
    assert!(
        elapsed < floor * 3,
        "{CHARGES} charges at {LIMIT}/s took {elapsed:?}, far more than {floor:?}"
    );
    eprintln!(
        "{CHARGES} charges, endpoint limit {LIMIT}/s: {:.2} s (floor {:.2} s), 0 × 429",
        elapsed.as_secs_f64(),
        floor.as_secs_f64()
    );
    app.cleanup().await;
}

/// The sum of `kassa_settle_batch_size` (events settled in batches) on the app's `/metrics`, if
/// it is there. The recorder is the process's: tests running beside this one may add to it.
async fn events_settled_in_batches(app: &TestApp) -> Option<f64> {
    let metrics = app
        .http
        .get(app.stack.metrics_url().expect("a metrics listener"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kassa_settle_batch_size_sum "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn copies_of_the_events_that_need_no_call_delivered_at_once_are_settled_once_in_batches() {
    const COPIES: usize = 4;
    // Webhooks are dropped: the test delivers the session's events itself, several copies at once
    // (Stripe delivers at least once; its retries and the events poller can overlap).
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    let email = format!("c{}@example.com", uuid::Uuid::new_v4().simple());
    let session = app.create_setup_session(&email).await;
    app.complete(&session, "pm_card_visa");
    handle(
        &app,
        &stripe_event(&app, "checkout.session.completed", &session).await,
    )
    .await;
    let from = app.sim().requests().len();
    let batched_before = events_settled_in_batches(&app).await.unwrap_or(0.0);

    // The echoes of Kassa's three writes and the SetupIntent's event.
    let mut events = Vec::new();
    for kind in [
        "setup_intent.succeeded",
        "customer.created",
        "payment_method.attached",
        "customer.updated",
    ] {
        let of_kind = app.stripe_events(kind).await;
        assert!(!of_kind.is_empty(), "a {kind} event");
        events.extend(of_kind);
    }
    let copies: Vec<_> = events
        .iter()
        .flat_map(|event| std::iter::repeat_n(event, COPIES))
        .collect();
    futures_util::future::join_all(copies.iter().map(|event| app.publish_event(event))).await;

    for event in &events {
        let stored = app.processed(event["id"].as_str().unwrap()).await;
        assert_eq!(stored.attempts, 1, "{} processed once", stored.kind);
    }
    app.drained(&app.topology.fulfillment_queue()).await;
    // A drained queue has no ready message, but copies may still be in flight: every copy goes
    // through a batch, and the checks below see all of them once it has.
    eventually(
        Duration::from_secs(10),
        &format!(
            "every one of the {} copies to go through a batch",
            copies.len()
        ),
        || async {
            let batched = events_settled_in_batches(&app).await?;
            (batched - batched_before >= copies.len() as f64).then_some(())
        },
    )
    .await;
    assert_eq!(
        kassas_since(&app, from),
        counts(&[]),
        "no copy of an event that needs no call was re-fetched"
    );
    let letters = kassa_broker::dlq::list(&app.stack.broker, 10)
        .await
        .unwrap();
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
    app.cleanup().await;
}
