//! A charge attempt is found on Stripe before it is ever sent again: Stripe's answer lost to a
//! saved 500 or a crash, a day passing (Stripe forgets keys after 24 hours), a dead letter
//! replayed, the default card changed between tries, a re-pay with a new card, two
//! installations on one Stripe account, and an attempt Stripe cannot be asked about. In each,
//! money moves at most once and the charge ends as Stripe says.

use crate::charges::{
    alert, attempt_key, charge, charge_when, customer_with_card, intents_of, new_charge,
    paid_intent, settled, submit, tap_alerts,
};
use crate::support::app::TestApp;
use crate::support::{eventually, key, sim};
use kassa_store::charges::{ChargeStatus, NewCharge};
use kassa_stripe_sim::{Faults, SimConfig, Simulator};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const DAY_AND_AN_HOUR: u32 = 25 * 60 * 60;

/// Creates of PaymentIntents in the simulator's log (not other POSTs under the path).
fn creates(app: &TestApp) -> Vec<kassa_stripe_sim::RecordedRequest> {
    app.calls("POST", "/v1/payment_intents")
        .into_iter()
        .filter(|c| c.path == "/v1/payment_intents")
        .collect()
}

/// Faults on every PaymentIntent request: creates execute (the PaymentIntent is made and
/// confirmed) and are answered 500, an answer Stripe saves under the key and replays; lookups
/// are answered 500 too.
fn payment_intents_answer_500() -> Faults {
    Faults {
        error_rate: 1.0,
        error_status: 500,
        after_execution: true,
        path_contains: Some("/v1/payment_intents".into()),
        ..Faults::default()
    }
}

/// Moves charge `id`'s current attempt `hours` into the past on Kassa's side (when it was first
/// sent, and when its key was first used).
async fn attempt_sent_hours_ago(app: &TestApp, id: i64, hours: i32) {
    sqlx::query(
        "UPDATE charges SET attempt_started_at = attempt_started_at - make_interval(hours => $2),
             attempt_key_started_at = attempt_key_started_at - make_interval(hours => $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(hours)
    .execute(app.store().pool())
    .await
    .unwrap();
}

/// Waits until charge `id` needs review, and returns it.
async fn needs_review(app: &TestApp, id: i64) -> kassa_store::ChargeRecord {
    let what = "the charge to need review";
    charge_when(app, id, Duration::from_secs(90), what, |c| {
        c.status == ChargeStatus::NeedsReview
    })
    .await
}

/// Waits until a PaymentIntent create has reached Stripe.
async fn create_reached_stripe(app: &TestApp) {
    eventually(
        Duration::from_secs(20),
        "the create to reach Stripe",
        || async { (!creates(app).is_empty()).then_some(()) },
    )
    .await;
}

async fn no_dead_letters(app: &TestApp) {
    let letters = kassa_broker::dlq::list(&app.stack.broker, 10)
        .await
        .unwrap();
    assert!(letters.is_empty(), "no dead letter: {letters:?}");
}

#[tokio::test]
async fn a_saved_500_on_the_create_is_found_on_stripe_and_the_charge_succeeds_once() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // Stripe makes the PaymentIntent, then answers 500 and saves that answer under the key: the
    // same key gets the same 500 for 24 hours.
    app.sim().set_faults(Faults {
        max_faults: Some(1),
        ..payment_intents_answer_500()
    });
    let id = charge(&app, &customer, 2500, "usd").await;
    let done = settled(&app, id, ChargeStatus::Succeeded).await;

    let intents = intents_of(&app, &customer).await;
    assert_eq!(intents.len(), 1, "exactly one PaymentIntent: {intents:?}");
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(done.payment_intent_id.as_deref(), intents[0]["id"].as_str());
    assert_eq!(intents[0]["metadata"]["kassa_attempt"], "1");
    assert_eq!(
        intents[0]["metadata"]["kassa_installation"],
        app.store().installation_id()
    );
    let creates = creates(&app);
    assert!(
        creates.iter().all(|c| c.status == 500),
        "Stripe never answered the create with the PaymentIntent: it was found: {creates:?}"
    );
    assert!(creates
        .iter()
        .all(|c| c.idempotency_key.as_deref() == Some(attempt_key(&app, id, 1).as_str())));
    no_dead_letters(&app).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_while_stripe_charged_charges_once_even_a_day_later() {
    let app = TestApp::builder()
        .without_ingress()
        .without_worker()
        .spawn()
        .await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // Stripe creates the PaymentIntent and saves the result, then the answer takes 3 s to leave.
    app.sim().set_faults(Faults {
        latency_after: Duration::from_secs(3),
        path_contains: Some("/v1/payment_intents".into()),
        ..Faults::default()
    });
    let id = charge(&app, &customer, 4200, "usd").await;

    let mut worker = app.spawn_worker_process();
    eventually(
        Duration::from_secs(30),
        "Stripe to have created the PaymentIntent",
        || async { (!intents_of(&app, &customer).await.is_empty()).then_some(()) },
    )
    .await;
    worker.start_kill().unwrap(); // SIGKILL while the worker waits for Stripe's answer
    worker.wait().await.unwrap();
    let killed = app.store().charge(id).await.unwrap().unwrap();
    assert_eq!(
        killed.status,
        ChargeStatus::Pending,
        "no outcome was committed before the kill"
    );
    assert!(
        killed.attempt_started_at.is_some(),
        "but the attempt's start was, before the create went out"
    );
    assert_eq!(
        killed.attempt_key.as_deref(),
        Some(attempt_key(&app, id, 1).as_str())
    );

    // A day and an hour pass before the job comes back: Stripe has forgotten the key.
    app.sim().set_faults(Faults::default());
    let advanced = app.advance_stripe_clock(DAY_AND_AN_HOUR).await;
    assert!(
        advanced["keys_forgotten"].as_u64().unwrap() >= 1,
        "{advanced}"
    );
    let mut restarted = app.spawn_worker_process();
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    let intents = intents_of(&app, &customer).await;
    assert_eq!(
        intents.len(),
        1,
        "exactly one PaymentIntent in Stripe: {intents:?}"
    );
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(done.payment_intent_id.as_deref(), intents[0]["id"].as_str());
    // The killed worker's create never got its answer, so the log of answered requests does
    // not hold it: any create there would be a second one.
    assert_eq!(
        creates(&app),
        vec![],
        "the redelivered job found the PaymentIntent and sent nothing"
    );
    restarted.start_kill().unwrap();
    let _ = restarted.wait().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_dead_lettered_charge_replayed_a_day_later_is_paid_at_most_once() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // The create's answer is a saved 500 and every look at PaymentIntents fails, through the
    // whole retry ladder: the job ends in the dead letters.
    app.sim().set_faults(payment_intents_answer_500());
    let id = charge(&app, &customer, 3100, "eur").await;
    let letters = eventually(Duration::from_secs(90), "the job's dead letter", || async {
        let letters = kassa_broker::dlq::list(&app.stack.broker, 10)
            .await
            .unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].message_id, format!("charge:{id}:1"));
    let stuck = app.store().charge(id).await.unwrap().unwrap();
    assert_eq!(
        stuck.status,
        ChargeStatus::Pending,
        "never failed: {stuck:?}"
    );

    // After a weekend: Stripe answers again and has forgotten the key; the operator replays.
    app.sim().set_faults(Faults::default());
    app.advance_stripe_clock(DAY_AND_AN_HOUR).await;
    let replay = app.kassa(&["dlq", "replay", "--all"]).await;
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    let intents = intents_of(&app, &customer).await;
    let paid: Vec<&Value> = intents
        .iter()
        .filter(|pi| pi["status"] == "succeeded")
        .collect();
    assert_eq!(
        paid.len(),
        1,
        "at most one PaymentIntent succeeded: {intents:?}"
    );
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(done.payment_intent_id.as_deref(), paid[0]["id"].as_str());
    assert_eq!(creates(&app).iter().filter(|c| !c.replayed).count(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_default_card_changed_between_tries_never_fails_a_paid_charge() {
    let app = TestApp::builder().without_ingress().spawn().await;
    tap_alerts(&app).await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    let first_card = app.default_card(&customer).await;
    // The first create charges the first card, but its answer is lost (a saved 500), and the
    // lookups fail for a while.
    app.sim().set_faults(payment_intents_answer_500());
    let id = charge(&app, &customer, 1800, "usd").await;
    create_reached_stripe(&app).await;
    // Before the next try the customer's default card changes.
    let stripe = app.stripe();
    let second_card = stripe
        .payment_methods()
        .attach("pm_card_mastercard", &customer, &key("attach-2"))
        .await
        .unwrap()
        .id;
    stripe
        .customers()
        .set_default_payment_method(&customer, &second_card, &key("default-2"))
        .await
        .unwrap();
    app.sim().set_faults(Faults::default());

    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    let intents = intents_of(&app, &customer).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(intents[0]["payment_method"], first_card.as_str());
    assert_eq!(done.payment_intent_id.as_deref(), intents[0]["id"].as_str());
    assert_eq!(
        done.attempt_payment_method_id.as_deref(),
        Some(first_card.as_str())
    );
    assert!(
        creates(&app).iter().all(|c| c.status != 400),
        "the same key always carried the same card: no idempotency_error"
    );
    let alerts = crate::charges::alerts(&app).await;
    assert!(
        alerts.iter().all(|(k, _)| k != "charge.failed"),
        "{alerts:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_charge_on_an_explicit_card_is_retried_on_the_card_the_customer_just_saved() {
    let app = TestApp::spawn().await; // with ingress: the re-pay completion comes as a webhook
    let customer = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let declining = app.default_card(&customer).await;
    let new = NewCharge {
        payment_method_id: Some(declining.clone()),
        description: None,
        ..new_charge(&customer, 990, "usd")
    };
    let (record, _) = submit(&app, &new).await;
    let flagged = settled(&app, record.id, ChargeStatus::RequiresRecheckout).await;
    let session = flagged.recheckout_session_id.unwrap();

    app.complete(&session, "pm_card_visa");
    let done = settled(&app, record.id, ChargeStatus::Succeeded).await;
    assert_eq!(done.attempt, 2);
    let new_card = app.default_card(&customer).await;
    assert_ne!(new_card, declining);
    assert_eq!(done.payment_method_id.as_deref(), Some(new_card.as_str()));
    assert_eq!(
        done.attempt_payment_method_id.as_deref(),
        Some(new_card.as_str())
    );
    let pi = paid_intent(&app, &done).await;
    assert_eq!(
        pi.payment_method.map(|pm| pm.id().to_owned()),
        Some(new_card),
        "attempt 2 charged the card saved in the re-pay session"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn two_installations_on_one_stripe_account_never_share_a_key_or_a_charge() {
    let sim = Arc::new(
        Simulator::start(SimConfig {
            webhook_retry_base: Duration::from_millis(50),
            ..SimConfig::default()
        })
        .await
        .unwrap(),
    );
    let spawn = || TestApp::builder().shared_sim(sim.clone()).spawn();
    let a = spawn().await;
    let b = spawn().await;
    let (inst_a, inst_b) = (a.store().installation_id(), b.store().installation_id());
    assert_ne!(inst_a, inst_b, "each database made its own installation id");
    for (app, id) in [(&a, inst_a), (&b, inst_b)] {
        let status = app.kassa(&["status", "--json"]).await;
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let report: Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(report["installation"], id);
        assert_eq!(report["stripe"]["mode"], "test");
        assert_eq!(report["stripe"]["can_list_payment_intents"], true);
    }

    // The same charge id in both databases, the same customer and amount.
    let customer = customer_with_card(&a, "pm_card_visa").await;
    let id_a = charge(&a, &customer, 1500, "usd").await;
    let id_b = charge(&b, &customer, 1500, "usd").await;
    assert_eq!(id_a, id_b);
    let paid_a = settled(&a, id_a, ChargeStatus::Succeeded).await;
    let paid_b = settled(&b, id_b, ChargeStatus::Succeeded).await;
    assert_ne!(
        paid_a.payment_intent_id, paid_b.payment_intent_id,
        "two charges, two PaymentIntents"
    );
    assert_ne!(attempt_key(&a, id_a, 1), attempt_key(&b, id_b, 1));
    let intents = intents_of(&a, &customer).await;
    assert_eq!(
        intents
            .iter()
            .filter(|pi| pi["status"] == "succeeded")
            .count(),
        2,
        "{intents:?}"
    );
    for pi in &intents {
        let ours = if pi["id"].as_str() == paid_a.payment_intent_id.as_deref() {
            inst_a
        } else {
            inst_b
        };
        assert_eq!(pi["metadata"]["kassa_installation"], ours);
    }
    let keys: std::collections::HashSet<String> = creates(&a)
        .into_iter()
        .filter(|c| c.status == 200)
        .filter_map(|c| c.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 2, "distinct keys: {keys:?}");
    assert!(paid_a.livemode == paid_b.livemode && !paid_a.livemode);

    // Both have a declined charge under one id again; A's customer re-pays through A's link.
    let declining_a = customer_with_card(&a, "pm_card_chargeCustomerFail").await;
    let declining_b = customer_with_card(&b, "pm_card_chargeCustomerFail").await;
    let second_a = charge(&a, &declining_a, 700, "usd").await;
    let second_b = charge(&b, &declining_b, 700, "usd").await;
    assert_eq!(second_a, second_b);
    let link_a = settled(&a, second_a, ChargeStatus::RequiresRecheckout)
        .await
        .recheckout_session_id
        .unwrap();
    settled(&b, second_b, ChargeStatus::RequiresRecheckout).await;
    let session: Value = sim::get(
        &sim.base_url(),
        &format!("/v1/checkout/sessions/{link_a}"),
        &[],
    )
    .await;
    assert_eq!(session["metadata"]["kassa_installation"], inst_a);

    a.complete(&link_a, "pm_card_visa");
    let repaid = settled(&a, second_a, ChargeStatus::Succeeded).await;
    assert_eq!(repaid.attempt, 2);
    // B received the same completion (both endpoints get every event) and handled it...
    let completed = eventually(
        Duration::from_secs(20),
        "the session's completion event",
        || async {
            a.stripe_events("checkout.session.completed")
                .await
                .into_iter()
                .find(|e| e["data"]["object"]["id"] == link_a.as_str())
        },
    )
    .await;
    b.processed(completed["id"].as_str().unwrap()).await;
    // ...without touching its own charge of the same id.
    let untouched = b.store().charge(second_b).await.unwrap().unwrap();
    assert_eq!(
        (untouched.status, untouched.attempt),
        (ChargeStatus::RequiresRecheckout, 1),
        "{untouched:?}"
    );
    let recorded: Option<Option<i64>> =
        sqlx::query_scalar("SELECT charge_id FROM checkout_sessions WHERE id = $1")
            .bind(&link_a)
            .fetch_optional(b.store().pool())
            .await
            .unwrap();
    assert_eq!(
        recorded.flatten(),
        None,
        "B never ties A's session to a charge"
    );
    a.cleanup().await;
    b.cleanup().await;
    if let Ok(sim) = Arc::try_unwrap(sim) {
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn an_attempt_stripe_cannot_be_asked_about_after_23_hours_needs_review_and_is_never_sent_again(
) {
    let app = TestApp::builder().without_ingress().spawn().await;
    tap_alerts(&app).await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // The create reaches Stripe (which charges) but its answer is lost, and from then on Stripe
    // cannot be asked about PaymentIntents.
    app.sim().set_faults(payment_intents_answer_500());
    let id = charge(&app, &customer, 6400, "usd").await;
    create_reached_stripe(&app).await;
    // A day passes: on Kassa's side the attempt was first sent 25 hours ago, and Stripe has
    // forgotten its key.
    attempt_sent_hours_ago(&app, id, 25).await;
    app.advance_stripe_clock(DAY_AND_AN_HOUR).await;

    let review = needs_review(&app, id).await;
    let reason = review.review_reason.clone().unwrap();
    assert!(reason.contains("could not be asked"), "{reason}");
    let mut seen = Vec::new();
    let alerted = alert(&app, "charge.needs_review", &mut seen).await;
    assert_eq!(alerted["charge_id"], id);
    assert_eq!(alerted["installation"], app.store().installation_id());
    let first_key = attempt_key(&app, id, 1);
    let sent = creates(&app);
    assert!(
        sent.iter()
            .all(|c| c.idempotency_key.as_deref() == Some(first_key.as_str())),
        "never a second key, never a second create: {sent:?}"
    );
    assert_eq!(sent.iter().filter(|c| !c.replayed).count(), 1);
    no_dead_letters(&app).await;

    // `kassa charges show` says what to check and how to resolve it.
    let shown = app.kassa(&["charges", "show", &review.reference]).await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    for wanted in [
        "needs_review",
        first_key.as_str(),
        "kassa charges resolve",
        &customer,
    ] {
        assert!(shown.contains(wanted), "{wanted:?} in\n{shown}");
    }

    // Stripe answers again. A wrong word is refused; the PaymentIntent Stripe shows resolves it.
    app.sim().set_faults(Faults::default());
    let paid = intents_of(&app, &customer).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    let paid = paid[0]["id"].as_str().unwrap().to_owned();
    let refused = app
        .kassa(&["charges", "resolve", &review.reference, "--failed"])
        .await;
    assert!(!refused.status.success());
    let refusal = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(refusal.contains(&paid), "{refusal}");
    let resolved = app
        .kassa(&[
            "charges",
            "resolve",
            &review.reference,
            "--succeeded-by",
            &paid,
        ])
        .await;
    assert!(
        resolved.status.success(),
        "{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    let done = app.store().charge(id).await.unwrap().unwrap();
    assert_eq!(done.status, ChargeStatus::Succeeded);
    assert_eq!(done.payment_intent_id.as_deref(), Some(paid.as_str()));
    assert_eq!(creates(&app).iter().filter(|c| !c.replayed).count(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_requeued_charge_in_review_is_looked_up_and_sent_under_a_new_key_only_if_stripe_has_nothing(
) {
    let app = TestApp::builder().without_ingress().spawn().await;
    let customer = customer_with_card(&app, "pm_card_visa").await;
    // Every PaymentIntent request fails before Stripe acts: nothing is ever created.
    app.sim().set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        path_contains: Some("/v1/payment_intents".into()),
        ..Faults::default()
    });
    let id = charge(&app, &customer, 1200, "usd").await;
    charge_when(
        &app,
        id,
        Duration::from_secs(20),
        "the attempt to be recorded",
        |c| c.attempt_started_at.is_some(),
    )
    .await;
    attempt_sent_hours_ago(&app, id, 30).await;
    let review = needs_review(&app, id).await;
    assert!(
        creates(&app).iter().all(|c| c.status == 503),
        "Stripe refused every create before acting: nothing was charged"
    );

    // Stripe answers again; the operator puts the charge back in line.
    app.sim().set_faults(Faults::default());
    let requeued = app
        .kassa(&["charges", "resolve", &review.reference, "--requeue"])
        .await;
    assert!(
        requeued.status.success(),
        "{}",
        String::from_utf8_lossy(&requeued.stderr)
    );
    let done = settled(&app, id, ChargeStatus::Succeeded).await;
    let intents = intents_of(&app, &customer).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    let new_key = kassa_core::keys::charge_attempt(app.store().installation_id(), id, 1, 1)
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(done.attempt_key.as_deref(), Some(new_key.as_str()));
    assert_eq!(done.attempt_key_generation, 1);
    let paid_under: Vec<Option<String>> = creates(&app)
        .into_iter()
        .filter(|c| c.status == 200)
        .map(|c| c.idempotency_key)
        .collect();
    assert_eq!(
        paid_under,
        vec![Some(new_key)],
        "the old key, which Stripe may have forgotten, was never sent again"
    );
    app.cleanup().await;
}
