//! Back-office charges end to end: a saved card is charged once, however often its job is
//! delivered; a decline becomes a re-pay link and an alert, and the customer's new card completes
//! the charge as attempt 2; an unused link gets one reminder, then the charge fails. What happens
//! when Stripe's answers are lost, a day passes or installations share an account is in
//! `charge_attempts.rs`.

use crate::support::app::TestApp;
use crate::support::{eventually, key, record_customer_with_card, sim};
use kassa_core::charges::job_route;
use kassa_store::charges::{ChargeStatus, NewCharge};
use kassa_store::ChargeJob;
use serde_json::{json, Value};
use std::time::Duration;

/// A customer whose default card is the given test card, made the way Stripe allows.
pub(crate) async fn customer_with_card(app: &TestApp, test_card: &str) -> String {
    let stripe = app.stripe();
    let params = kassa_stripe::resources::CustomerParams {
        email: Some(format!("{}@example.com", uuid::Uuid::new_v4().simple())),
        ..Default::default()
    };
    let customer = stripe
        .customers()
        .create(&params, &key("customer"))
        .await
        .unwrap();
    let card = stripe
        .payment_methods()
        .attach(test_card, &customer.id, &key("attach"))
        .await
        .unwrap();
    stripe
        .customers()
        .set_default_payment_method(&customer.id, &card.id, &key("default"))
        .await
        .unwrap();
    customer.id
}

/// A back-office charge of `customer`'s default card under a fresh reference.
pub(crate) fn new_charge(customer: &str, amount: i64, currency: &str) -> NewCharge {
    NewCharge {
        reference: format!("inv-{}", uuid::Uuid::new_v4().simple()),
        customer_id: customer.into(),
        payment_method_id: None,
        amount,
        currency: currency.into(),
        description: Some("back-office test".into()),
        metadata: json!({}),
        livemode: false,
    }
}

/// Records the charge and queues its job, as the back-office API does; (record, whether new).
pub(crate) async fn submit(app: &TestApp, new: &NewCharge) -> (kassa_store::ChargeRecord, bool) {
    let route = job_route(&app.topology);
    app.store().submit_charge(&route, new).await.unwrap()
}

/// Submits a charge (twice: the second creates nothing) and returns its id.
pub(crate) async fn charge(app: &TestApp, customer: &str, amount: i64, currency: &str) -> i64 {
    let new = new_charge(customer, amount, currency);
    let (record, created) = submit(app, &new).await;
    assert!(created);
    let (again, created_again) = submit(app, &new).await;
    assert!(!created_again, "the same reference creates nothing new");
    assert_eq!(again.id, record.id);
    record.id
}

/// The PaymentIntent a settled charge names, as Stripe has it.
pub(crate) async fn paid_intent(
    app: &TestApp,
    charge: &kassa_store::ChargeRecord,
) -> kassa_stripe::objects::PaymentIntent {
    let id = charge
        .payment_intent_id
        .as_deref()
        .expect("a PaymentIntent");
    app.stripe()
        .payment_intents()
        .retrieve(id, &[])
        .await
        .unwrap()
}

/// Waits (up to `within`) until charge `id` is as `wanted` says, and returns it.
pub(crate) async fn charge_when(
    app: &TestApp,
    id: i64,
    within: Duration,
    what: &str,
    wanted: impl Fn(&kassa_store::ChargeRecord) -> bool,
) -> kassa_store::ChargeRecord {
    eventually(within, &format!("charge {id}: {what}"), || async {
        app.store().charge(id).await.unwrap().filter(&wanted)
    })
    .await
}

/// Waits until charge `id` has `status`, and returns it.
pub(crate) async fn settled(
    app: &TestApp,
    id: i64,
    status: ChargeStatus,
) -> kassa_store::ChargeRecord {
    let what = format!("to be {status}");
    charge_when(app, id, Duration::from_secs(30), &what, |c| {
        c.status == status
    })
    .await
}

/// A queue of the test's own bound to `kassa.alerts` (as a merchant's consumer would have).
pub(crate) async fn tap_alerts(app: &TestApp) {
    app.tap(&app.topology.alerts_exchange()).await;
}

/// Alerts Kassa published on `kassa.alerts` since the tap was set.
pub(crate) async fn alerts(app: &TestApp) -> Vec<(String, Value)> {
    let queue = app.tap_queue(&app.topology.alerts_exchange());
    app.take_tapped(&queue)
        .await
        .into_iter()
        .map(|(key, _, body)| (key, body))
        .collect()
}

/// Waits for an alert matching `wanted`, keeping every alert read in `seen`.
pub(crate) async fn alert_where(
    app: &TestApp,
    seen: &mut Vec<(String, Value)>,
    what: &str,
    wanted: impl Fn(&str, &Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        seen.extend(alerts(app).await);
        if let Some((_, body)) = seen.iter().rev().find(|(k, b)| wanted(k, b)) {
            return body.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn alert(
    app: &TestApp,
    routing_key: &str,
    seen: &mut Vec<(String, Value)>,
) -> Value {
    alert_where(app, seen, routing_key, |k, _| k == routing_key).await
}

async fn expire(app: &TestApp, session: &str) {
    app.stripe()
        .checkout_sessions()
        .expire(session, &key("expire"))
        .await
        .unwrap();
}

/// The first Idempotency-Key of `attempt` of charge `id` in this app's installation.
pub(crate) fn attempt_key(app: &TestApp, id: i64, attempt: i32) -> String {
    kassa_core::keys::charge_attempt(app.store().installation_id(), id, attempt, 0)
        .unwrap()
        .as_str()
        .to_owned()
}

/// The customer's PaymentIntents as Stripe has them, newest first.
pub(crate) async fn intents_of(app: &TestApp, customer: &str) -> Vec<Value> {
    let base = app.sim().base_url();
    sim::list(&base, "/v1/payment_intents", &[("customer", customer)]).await
}

pub(crate) fn successful_intents(app: &TestApp) -> Vec<kassa_stripe_sim::RecordedRequest> {
    app.calls("POST", "/v1/payment_intents")
        .into_iter()
        .filter(|c| c.path == "/v1/payment_intents" && c.status == 200 && !c.replayed)
        .collect()
}

#[tokio::test]
async fn a_saved_card_is_charged_once_however_often_the_job_is_delivered() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    let id = charge(&app, &customer, 1999, "usd").await;
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    assert_eq!(done.attempt, 1);

    // The same job again, twice at once (a duplicate delivery, a replay): nothing more happens.
    let job = ChargeJob {
        charge_id: id,
        attempt: 1,
    }
    .message(&job_route(&app.topology));
    let body = serde_json::to_vec(&job.body).unwrap();
    let (first, second) = (app.stack.broker.publisher(), app.stack.broker.publisher());
    let message = kassa_broker::OutgoingMessage {
        exchange: &job.exchange,
        routing_key: &job.routing_key,
        body: &body,
        message_id: &job.message_id,
        kind: "charge.execute",
        headers: None,
    };
    let (a, b) = tokio::join!(first.publish(message.clone()), second.publish(message));
    a.unwrap();
    b.unwrap();
    app.drained(&app.topology.charges_queue()).await;
    let intents = successful_intents(&app);
    assert_eq!(
        intents.len(),
        1,
        "exactly one successful PaymentIntent: {intents:?}"
    );
    assert_eq!(
        intents[0].idempotency_key.as_deref(),
        Some(attempt_key(&app, id, 1).as_str())
    );
    let pi = paid_intent(&app, &done).await;
    assert_eq!((pi.amount, pi.currency.as_str()), (1999, "usd"));
    app.cleanup().await;
}

async fn decline_then_repay(test_card: &str, expected_code: &str) {
    let app = TestApp::spawn().await; // with ingress: the re-checkout completion arrives as a webhook
    tap_alerts(&app).await;
    let customer = customer_with_card(&app, test_card).await;
    let id = charge(&app, &customer, 1000, "jpy").await;
    let flagged = settled(&app, id, ChargeStatus::RequiresRecheckout).await;
    assert_eq!(
        flagged.failure_code.as_deref(),
        Some(expected_code),
        "{flagged:?}"
    );
    let session = flagged
        .recheckout_session_id
        .clone()
        .expect("a re-pay session");

    let mut seen = Vec::new();
    let repay = alert(&app, "customer.repay_requested", &mut seen).await;
    assert_eq!(repay["charge_id"], id);
    assert_eq!(repay["amount"], 1000, "JPY is zero-decimal: never ×100");
    assert_eq!(repay["currency"], "jpy");
    assert_eq!(repay["amount_display"], "¥1,000", "formatted for people");
    assert!(
        repay["reason_in_words"]
            .as_str()
            .is_some_and(|r| !r.is_empty() && !r.contains('_')),
        "{repay}"
    );
    assert_eq!(
        repay["url"],
        flagged.recheckout_url.clone().unwrap().as_str()
    );
    assert!(repay["email"].as_str().unwrap().ends_with("@example.com"));
    let stripe_session = app
        .stripe()
        .checkout_sessions()
        .retrieve(&session, &[])
        .await
        .unwrap();
    assert_eq!(
        stripe_session
            .metadata
            .get("kassa_charge_id")
            .map(String::as_str),
        Some(id.to_string().as_str())
    );

    // The customer opens the link and saves a working card.
    app.complete(&session, "pm_card_visa");
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    assert_eq!(done.attempt, 2, "charged again automatically, as attempt 2");
    let created: Vec<_> = app
        .calls("POST", "/v1/payment_intents")
        .into_iter()
        .filter(|c| c.path == "/v1/payment_intents" && !c.replayed)
        .map(|c| (c.status, c.idempotency_key.unwrap_or_default()))
        .collect();
    assert_eq!(
        created,
        vec![
            (402, attempt_key(&app, id, 1)),
            (200, attempt_key(&app, id, 2))
        ],
        "one PaymentIntent per attempt: declined (402), then paid with the new card"
    );
    let pi = paid_intent(&app, &done).await;
    assert_eq!(format!("{:?}", pi.status), "Succeeded");
    app.cleanup().await;
}

#[tokio::test]
async fn a_declined_card_gets_a_repay_link_and_the_new_card_completes_the_charge() {
    decline_then_repay("pm_card_chargeCustomerFail", "card_declined").await;
}

#[tokio::test]
async fn authentication_required_off_session_goes_the_same_way() {
    decline_then_repay("pm_card_authenticationRequired", "authentication_required").await;
}

#[tokio::test]
async fn an_unused_link_gets_one_reminder_then_the_charge_fails() {
    let app = TestApp::spawn().await;
    tap_alerts(&app).await;
    let customer = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let id = charge(&app, &customer, 2500, "eur").await;
    let first = settled(&app, id, ChargeStatus::RequiresRecheckout)
        .await
        .recheckout_session_id
        .unwrap();
    expire(&app, &first).await;
    let reminded = charge_when(
        &app,
        id,
        Duration::from_secs(20),
        "a reminder with a new link",
        |c| c.reminders_sent == 1,
    )
    .await;
    let second = reminded.recheckout_session_id.clone().unwrap();
    assert_ne!(second, first, "a new link");
    let mut seen = Vec::new();
    let reminder = alert_where(&app, &mut seen, "the reminder alert", |k, b| {
        k == "customer.repay_requested" && b["reminder"] == 1
    })
    .await;
    assert_eq!(reminder["checkout_session"], second.as_str());

    expire(&app, &second).await;
    let failed = settled(&app, id, ChargeStatus::Failed).await;
    assert_eq!(failed.failure_code.as_deref(), Some("recheckout_expired"));
    let failure = alert(&app, "charge.failed", &mut seen).await;
    assert_eq!(failure["charge_id"], id);
    assert_eq!(successful_intents(&app).len(), 0, "never charged");
    app.cleanup().await;
}

#[tokio::test]
async fn the_customer_receives_the_repay_link_by_e_mail() {
    let sink = crate::support::smtp_sink::SmtpSink::start().await;
    let app = TestApp::builder()
        .without_ingress()
        .smtp(sink.url())
        .spawn()
        .await;
    // Declining test cards fail already when attached (as in Stripe); this one attaches, then
    // every charge of it is declined.
    let customer = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let email = app
        .stripe()
        .customers()
        .retrieve(&customer, &[])
        .await
        .unwrap()
        .email
        .unwrap();
    let id = charge(&app, &customer, 1999, "usd").await;
    let flagged = settled(&app, id, ChargeStatus::RequiresRecheckout).await;
    let url = flagged.recheckout_url.unwrap();

    let received = sink.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec![email]);
    let message = mail_parser::MessageParser::default()
        .parse(&received[0].data)
        .expect("a MIME message");
    let text = message.body_text(0).expect("a plain-text part").to_string();
    let html = message.body_html(0).expect("an HTML part").to_string();
    assert!(
        text.contains(&url) && html.contains(&url),
        "the link in both parts:\n{text}"
    );
    assert!(text.contains("$19.99"), "the amount for people:\n{text}");
    assert!(
        text.contains("Your bank declined the payment."),
        "the reason in words:\n{text}"
    );
    app.cleanup().await;
}

const ADMIN: &str = "test-admin-token-0123456789";

/// A customer recorded by Kassa with a default card: the way the setup flow leaves one.
async fn recorded_customer_with_card(app: &TestApp, test_card: &str) -> String {
    let customer = customer_with_card(app, test_card).await;
    let default = app.default_card(&customer).await;
    record_customer_with_card(app.store(), &customer, &default, None).await;
    customer
}

async fn api(app: &TestApp, token: Option<&str>, body: Value) -> (u16, Value) {
    app.post("/api/charges")
        .token(token)
        .json(&body)
        .send()
        .await
}

#[tokio::test]
async fn the_back_office_api_validates_records_once_and_charges() {
    let app = TestApp::builder().admin_token(ADMIN).spawn().await;
    let customer = recorded_customer_with_card(&app, "pm_card_visa").await;
    // A customer without a card: refused whether Kassa has recorded it (no saved card) or not yet.
    let cardless = app
        .stripe()
        .customers()
        .create(&Default::default(), &key("cardless"))
        .await
        .unwrap()
        .id;
    let good = json!({"customer": customer, "amount": 1999, "currency": "USD", "reference": "inv-1001", "description": "March"});

    assert_eq!(api(&app, None, good.clone()).await.0, 401);
    assert_eq!(
        api(&app, Some("wrong-token-0123456789"), good.clone())
            .await
            .0,
        401
    );
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    for (body, field) in [
        (with("amount", json!(19.99)), "amount"),
        (with("amount", json!("1999")), "amount"),
        (with("amount", json!(0)), "amount"),
        (with("amount", json!(-5)), "amount"),
        (with("amount", json!(49)), "amount"),
        (with("currency", json!("xyz")), "currency"),
        (with("customer", json!("cus_nobody")), "customer"),
        (with("customer", json!(cardless)), "customer"),
        (with("reference", json!("")), "reference"),
        (
            with("payment_method", json!("pm_not_theirs")),
            "payment_method",
        ),
        // Stripe's length limits, checked at submission rather than at execution.
        (with("reference", json!("r".repeat(256))), "reference"),
        (with("description", json!("d".repeat(1001))), "description"),
        (
            with("metadata", json!({"note": "v".repeat(501)})),
            "metadata.note",
        ),
        (with("metadata", json!({"k".repeat(41): "v"})), "metadata"),
        (
            with(
                "metadata",
                Value::Object((0..51).map(|i| (format!("k{i}"), json!("v"))).collect()),
            ),
            "metadata",
        ),
    ] {
        let (status, answer) = api(&app, Some(ADMIN), body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{answer}"
        );
    }
    assert!(
        app.store()
            .list_charges(None, None, 10, None)
            .await
            .unwrap()
            .is_empty(),
        "bad requests create nothing"
    );

    let (status, created) = api(&app, Some(ADMIN), good.clone()).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(
        (
            created["amount_display"].as_str(),
            created["currency"].as_str()
        ),
        (Some("$19.99"), Some("usd"))
    );
    let (status, again) = api(&app, Some(ADMIN), good.clone()).await;
    assert_eq!(status, 200, "the same reference: the existing charge");
    assert_eq!(again["id"], created["id"]);
    let (status, conflict) = api(&app, Some(ADMIN), with("amount", json!(2999))).await;
    assert_eq!(
        (status, conflict["error"]["field"].as_str()),
        (409, Some("reference")),
        "a reused reference for another charge: {conflict}"
    );

    let id = created["id"].as_i64().unwrap();
    settled(&app, id, ChargeStatus::Succeeded).await;
    let admin = Some(ADMIN);
    let (_, shown) = app
        .get(&format!("/api/charges/{id}"))
        .token(admin)
        .send()
        .await;
    assert_eq!(shown["status"], "succeeded");
    assert!(shown["payment_intent"].as_str().unwrap().starts_with("pi_"));
    let (_, listed) = app
        .get("/api/charges?status=succeeded")
        .token(admin)
        .send()
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let (missing, _) = app.get("/api/charges/999999").token(admin).send().await;
    assert_eq!(missing, 404);
    let (bad_status, _) = app
        .get("/api/charges?status=paid")
        .token(admin)
        .send()
        .await;
    assert_eq!(bad_status, 400);
    assert_eq!(successful_intents(&app).len(), 1, "charged once");
    app.cleanup().await;
}

#[tokio::test]
async fn stripe_500s_and_429s_are_retried_with_the_same_key_and_charge_when() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // Two 500s on PaymentIntent creation, then Stripe's rate limit at 2 requests/s for a burst of charges.
    app.sim().set_faults(kassa_stripe_sim::Faults {
        error_rate: 1.0,
        error_status: 500,
        max_faults: Some(2),
        path_contains: Some("/v1/payment_intents".into()),
        ..Default::default()
    });
    let first = charge(&app, &customer, 500, "usd").await;
    settled(&app, first, ChargeStatus::Succeeded).await;
    app.sim().set_faults(kassa_stripe_sim::Faults {
        rate_limit_per_sec: Some(2),
        ..Default::default()
    });
    let mut ids = Vec::new();
    for amount in [600, 700, 800, 900, 1000] {
        ids.push(charge(&app, &customer, amount, "usd").await);
    }
    for id in &ids {
        settled(&app, *id, ChargeStatus::Succeeded).await;
    }

    let calls = app.calls("POST", "/v1/payment_intents");
    let statuses: std::collections::HashSet<u16> = calls.iter().map(|c| c.status).collect();
    assert!(statuses.contains(&500), "500s were injected: {calls:?}");
    assert!(statuses.contains(&429), "429s were answered: {calls:?}");
    for id in std::iter::once(first).chain(ids) {
        let key = attempt_key(&app, id, 1);
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| c.idempotency_key.as_deref() == Some(key.as_str()))
            .collect();
        assert_eq!(
            mine.iter()
                .filter(|c| c.status == 200 && !c.replayed)
                .count(),
            1,
            "charge {id} paid once: {mine:?}"
        );
        assert_eq!(mine.last().map(|c| c.status), Some(200));
    }
    assert_eq!(successful_intents(&app).len(), 6);
    app.cleanup().await;
}
