//! The heart of Kassa end to end: a completed setup-mode Checkout Session becomes a customer
//! with a default card — in Stripe (the simulator) and in PostgreSQL — exactly once, whatever
//! the duplicates, the order, the faults.

use crate::stripe_calls::{handle, session_naming_a_customer, stripe_event};
use crate::support::app::TestApp;
use crate::support::{eventually, key, sim};
use futures_util::future::join_all;
use kassa_broker::dlq::{self, Selection};
use kassa_core::customers::{sync_customers, SyncOptions};
use kassa_core::records;
use kassa_stripe::resources::CustomerParams;
use kassa_stripe::IdempotencyKey;
use kassa_stripe_sim::Faults;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn email() -> String {
    format!("c{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A setup session the customer completed with a Visa card: its id and Stripe's
/// `checkout.session.completed` event about it.
async fn completed_session(app: &TestApp) -> (String, serde_json::Value) {
    let session = app.create_setup_session(&email()).await;
    app.complete(&session, "pm_card_visa");
    let completed = app
        .stripe_events("checkout.session.completed")
        .await
        .remove(0);
    (session, completed)
}

/// Asserts the end state both sides must agree on, and returns (customer, card).
pub(crate) async fn assert_card_saved(app: &TestApp, session_id: &str) -> (String, String) {
    let record = eventually(
        Duration::from_secs(20),
        "the session to be fulfilled",
        || async {
            app.store()
                .checkout_session(session_id)
                .await
                .unwrap()
                .filter(|s| s.status == "complete" && s.payment_method_id.is_some())
        },
    )
    .await;
    let customer_id = record.customer_id.clone().expect("session has a customer");
    let card_id = record.payment_method_id.clone().unwrap();
    let (customer, card) = app
        .store()
        .customer_with_default_card(&customer_id)
        .await
        .unwrap()
        .expect("customer recorded");
    let card = card.expect("default card recorded");
    assert_eq!(card.id, card_id);
    assert_eq!(
        (card.brand.as_deref(), card.last4.as_deref()),
        (Some("visa"), Some("4242"))
    );
    assert!(card.attached);
    assert_eq!(
        customer.default_payment_method.as_deref(),
        Some(card_id.as_str())
    );

    let in_stripe = app
        .stripe()
        .customers()
        .retrieve(&customer_id, &[])
        .await
        .unwrap();
    let default = in_stripe
        .invoice_settings
        .default_payment_method
        .as_ref()
        .map(|pm| pm.id().to_owned());
    assert_eq!(
        default.as_deref(),
        Some(card_id.as_str()),
        "Stripe's default card"
    );
    let pm = app
        .stripe()
        .payment_methods()
        .retrieve(&card_id, &[])
        .await
        .unwrap();
    assert_eq!(
        pm.customer.as_ref().map(|c| c.id().to_owned()).as_deref(),
        Some(customer_id.as_str()),
        "attached in Stripe"
    );
    (customer_id, card_id)
}

#[tokio::test]
async fn a_completed_setup_session_becomes_a_customer_with_a_default_card() {
    let app = TestApp::spawn().await;
    let email = email();
    let session = app.create_setup_session(&email).await;
    app.complete(&session, "pm_card_visa");

    let (customer_id, _) = assert_card_saved(&app, &session).await;
    let customer = app.store().customer(&customer_id).await.unwrap().unwrap();
    assert_eq!(
        customer.email.as_deref(),
        Some(email.as_str()),
        "created from customer_details"
    );
    // Every POST carried a key derived from the installation and the event
    // (kassa:{installation}:{evt}:{step}), the customer's creation one of the session's own,
    // the same on every path.
    let installation = app.store().installation_id();
    let event_id = app.stripe_events("checkout.session.completed").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, key) in [
        (
            "/v1/customers",
            format!("kassa:{installation}:checkout_session:{session}:create_customer"),
        ),
        (
            "/attach",
            format!("kassa:{installation}:{event_id}:attach_payment_method"),
        ),
    ] {
        let calls = app.calls("POST", path);
        assert!(
            calls
                .iter()
                .any(|c| c.idempotency_key.as_deref() == Some(key.as_str())),
            "{path}: {calls:?}"
        );
    }
    app.processed(&event_id).await;
    app.cleanup().await;
}

#[tokio::test]
async fn duplicates_delivered_twice_and_processed_concurrently_act_once() {
    let app = TestApp::builder().duplicating_webhooks().spawn().await;
    let session = app.create_setup_session(&email()).await;
    app.complete(&session, "pm_card_visa");
    assert_card_saved(&app, &session).await;
    let event = app
        .stripe_events("checkout.session.completed")
        .await
        .remove(0);
    let event_id = event["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "the duplicate webhook delivery",
        || async {
            let copies = app
                .sim()
                .webhook_deliveries()
                .iter()
                .filter(|d| d.event_id == event_id && d.status == Some(200))
                .count();
            (copies >= 2).then_some(())
        },
    )
    .await;

    // Two more copies at the same instant, straight onto the queue.
    join_all((0..2).map(|_| app.publish_event(&event))).await;
    app.drained(&app.topology.fulfillment_queue()).await;

    let stored = app.processed(&event_id).await;
    assert_eq!(stored.attempts, 1, "processed once");
    let attaches: Vec<_> = app
        .calls("POST", "/attach")
        .into_iter()
        .filter(|c| !c.replayed)
        .collect();
    assert_eq!(attaches.len(), 1, "one effective attach: {attaches:?}");
    let created: Vec<_> = app
        .calls("POST", "/v1/customers")
        .into_iter()
        .filter(|c| c.path == "/v1/customers" && !c.replayed)
        .collect();
    assert_eq!(created.len(), 1, "one customer created: {created:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn setup_intent_succeeded_before_the_session_event_still_ends_right() {
    // No ingress: the test delivers the events itself, in the worst order.
    let app = TestApp::builder().without_ingress().spawn().await;
    let session = app.create_setup_session(&email()).await;
    app.complete(&session, "pm_card_visa");
    let setup_succeeded = app.stripe_events("setup_intent.succeeded").await.remove(0);
    let completed = app
        .stripe_events("checkout.session.completed")
        .await
        .remove(0);

    app.publish_event(&setup_succeeded).await;
    app.processed(setup_succeeded["id"].as_str().unwrap()).await;
    app.publish_event(&completed).await;
    app.processed(completed["id"].as_str().unwrap()).await;
    let (_, card) = assert_card_saved(&app, &session).await;

    // And a late setup_intent.succeeded again, after everything: nothing changes.
    app.publish_event(&setup_succeeded).await;
    app.processed(setup_succeeded["id"].as_str().unwrap()).await;
    let pm = app.store().payment_method(&card).await.unwrap().unwrap();
    assert!(pm.attached);
    app.cleanup().await;
}

#[tokio::test]
async fn stripe_500s_on_attach_are_retried_with_the_same_key_and_attach_once() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let (session, completed) = completed_session(&app).await;
    app.sim().set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        max_faults: Some(2),
        path_contains: Some("/attach".into()),
        ..Faults::default()
    });
    app.publish_event(&completed).await;
    app.processed(completed["id"].as_str().unwrap()).await;
    assert_card_saved(&app, &session).await;

    let attaches = app.calls("POST", "/attach");
    let statuses: Vec<u16> = attaches.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        vec![500, 500, 200],
        "two injected 500s, then success"
    );
    let keys: std::collections::HashSet<_> =
        attaches.iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(
        keys.len(),
        1,
        "every retry carries the same Idempotency-Key"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_card_attached_to_another_customer_is_dead_lettered_with_the_reason() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let (session, completed) = completed_session(&app).await;
    let event_id = completed["id"].as_str().unwrap().to_owned();

    // Someone attached the new card to another customer first: no retry can fix that.
    let stored_session = app
        .stripe()
        .checkout_sessions()
        .retrieve(&session, &["setup_intent"])
        .await
        .unwrap();
    let card = match stored_session.setup_intent.unwrap() {
        kassa_stripe::Expandable::Object(si) => si.payment_method.unwrap().id().to_owned(),
        kassa_stripe::Expandable::Id(_) => panic!("setup_intent expanded"),
    };
    let key = |s: &str| IdempotencyKey::new(format!("test:{s}:{}", uuid::Uuid::new_v4())).unwrap();
    let other = app
        .stripe()
        .customers()
        .create(&Default::default(), &key("other"))
        .await
        .unwrap();
    app.stripe()
        .payment_methods()
        .attach(&card, &other.id, &key("attach"))
        .await
        .unwrap();

    app.publish_event(&completed).await;
    let letters = app.dead_letters().await;
    assert_eq!(letters[0].message_id, event_id);
    assert!(
        letters[0].reason.contains("attached to another customer"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        letters[0].attempts, 0,
        "permanent: dead-lettered at once, no retry"
    );
    let stored = app.store().event(&event_id).await.unwrap().unwrap();
    assert!(stored.processed_at.is_none());
    assert!(stored.dead_lettered_at.is_some());
    assert!(stored
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("attached to another customer"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_stripe_400_is_dead_lettered_then_replayed_after_the_cause_is_removed() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let (session, completed) = completed_session(&app).await;
    let event_id = completed["id"].as_str().unwrap().to_owned();
    app.sim().set_faults(Faults {
        error_rate: 1.0,
        error_status: 400,
        path_contains: Some("/attach".into()),
        ..Faults::default()
    });

    app.publish_event(&completed).await;
    let letters = app.dead_letters().await;
    assert_eq!(letters[0].message_id, event_id);
    assert!(letters[0].reason.contains("400"), "{}", letters[0].reason);
    assert_eq!(
        app.calls("POST", "/attach").len(),
        1,
        "a 400 is not retried"
    );

    // The cause is removed; the operator replays.
    app.sim().set_faults(Faults::default());
    assert_eq!(
        dlq::replay(&app.stack.broker, &Selection::Id(event_id.clone()))
            .await
            .unwrap()
            .replayed,
        vec![event_id.clone()]
    );
    app.processed(&event_id).await;
    assert_card_saved(&app, &session).await;
    assert!(dlq::list(&app.stack.broker, 10).await.unwrap().is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn an_event_of_a_mode_without_a_key_is_dead_lettered_and_unknown_types_are_acked() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let live_event = serde_json::json!({
        "id": "evt_live_1", "object": "event", "type": "checkout.session.completed", "livemode": true,
        "created": 1, "api_version": "2025-12-15.clover", "data": {"object": {"id": "cs_live_x", "object": "checkout.session"}}
    });
    let unknown = serde_json::json!({
        "id": "evt_unknown_1", "object": "event", "type": "invoice.paid", "livemode": false,
        "created": 1, "data": {"object": {"id": "in_1", "object": "invoice"}}
    });
    app.publish_event(&unknown).await;
    app.publish_event(&live_event).await;
    let letters = app.dead_letters().await;
    assert_eq!(
        letters.len(),
        1,
        "only the live event: the unknown type was acked"
    );
    assert_eq!(letters[0].message_id, "evt_live_1");
    assert!(
        letters[0]
            .reason
            .contains("live mode is not configured: this deployment has no live Stripe key"),
        "{}",
        letters[0].reason
    );
    assert!(
        app.sim().requests().is_empty(),
        "no Stripe call at all for a mode without a key"
    );
    let stored = app.store().event("evt_live_1").await.unwrap().unwrap();
    assert!(stored.dead_lettered_at.is_some());
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_between_a_stripe_call_and_the_commit_leaves_no_duplicate_effect() {
    let app = TestApp::builder().without_worker().spawn().await;
    let email = email();
    let session = app.create_setup_session(&email).await;
    // Slow Stripe down so the worker is surely between calls when it dies.
    app.sim().set_faults(Faults {
        latency: Duration::from_millis(700),
        ..Faults::default()
    });
    app.complete(&session, "pm_card_visa");

    let mut worker = app.spawn_worker_process();
    eventually(
        Duration::from_secs(30),
        "the worker to create the customer",
        || async { (!app.calls("POST", "/v1/customers").is_empty()).then_some(()) },
    )
    .await;
    worker.start_kill().unwrap(); // SIGKILL: no shutdown, no rollback of anything in Stripe
    worker.wait().await.unwrap();
    let event_id = app.stripe_events("checkout.session.completed").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = app.store().event(&event_id).await.unwrap();
    assert!(
        stored.is_none_or(|e| e.processed_at.is_none()),
        "nothing was committed before the kill"
    );

    app.sim().set_faults(Faults::default());
    let mut restarted = app.spawn_worker_process();
    let stored = app.processed(&event_id).await;
    assert_eq!(stored.attempts, 1, "processed once, after the restart");
    let (customer_id, _) = assert_card_saved(&app, &session).await;

    // The restarted worker did not create a second customer: it either repeated the creation with
    // the same key (Stripe replays it) or found the customer it had created for this session.
    let creations: Vec<_> = app
        .calls("POST", "/v1/customers")
        .into_iter()
        .filter(|c| c.path == "/v1/customers")
        .collect();
    assert_eq!(
        creations.iter().filter(|c| !c.replayed).count(),
        1,
        "one effective creation: {creations:?}"
    );
    let keys: std::collections::HashSet<_> = creations
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 1, "{creations:?}");
    assert!(
        creations.len() >= 2
            || app
                .calls("GET", "/v1/customers")
                .iter()
                .filter(|c| c.path == "/v1/customers")
                .count()
                >= 2,
        "after the restart the worker repeated or looked up the creation: {creations:?}"
    );
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
        app.calls("POST", "/attach")
            .iter()
            .filter(|c| !c.replayed)
            .count(),
        1
    );
    restarted.start_kill().unwrap();
    let _ = restarted.wait().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_500_stripe_saved_after_executing_is_replayed_to_the_same_key_and_the_next_attempt_gets_past_it(
) {
    let app = TestApp::builder().without_ingress().spawn().await;
    let (session, completed) = completed_session(&app).await;
    let event_id = completed["id"].as_str().unwrap().to_owned();
    // The attach happens, then Stripe answers 500 and saves that answer under the key.
    app.sim().set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        max_faults: Some(1),
        path_contains: Some("/attach".into()),
        after_execution: true,
        ..Faults::default()
    });
    app.publish_event(&completed).await;
    app.processed(&event_id).await;
    assert_card_saved(&app, &session).await;

    let attaches = app.calls("POST", "/attach");
    let first_key = format!(
        "kassa:{}:{event_id}:attach_payment_method",
        app.store().installation_id()
    );
    let with_first_key: Vec<_> = attaches
        .iter()
        .filter(|c| c.idempotency_key.as_deref() == Some(first_key.as_str()))
        .collect();
    assert!(
        with_first_key.len() >= 2,
        "the client retried the same key: {attaches:?}"
    );
    assert!(
        with_first_key.iter().all(|c| c.status == 500),
        "and Stripe replayed the saved 500 each time: {attaches:?}"
    );
    assert!(
        with_first_key[1..].iter().all(|c| c.replayed),
        "{attaches:?}"
    );
    // The retry from the ladder read the card's owner first: already attached, nothing to redo.
    assert!(
        attaches
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some(first_key.as_str())),
        "no second attach was needed: {attaches:?}"
    );
    let stored = app.store().event(&event_id).await.unwrap().unwrap();
    assert_eq!(
        stored.attempts, 2,
        "one failed attempt, then the one that committed"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn echoes_arriving_while_the_session_is_fulfilled_are_settled_after_its_commit_without_a_call(
) {
    let app = TestApp::spawn().await;
    // Stripe attaches the card, sends `payment_method.attached`, and only then does its answer
    // to Kassa's attach leave, 2 s later: that echo, and `customer.created` before it, reach the
    // worker while the fulfilment's transaction is still open.
    app.sim().set_faults(Faults {
        latency_after: Duration::from_secs(2),
        path_contains: Some("/attach".into()),
        ..Faults::default()
    });
    let session = app.create_setup_session(&email()).await;
    let from = app.sim().requests().len();
    app.complete(&session, "pm_card_visa");

    let installation = app.store().installation_id().to_owned();
    let completed = app.stripe_events("checkout.session.completed").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fulfilled = app.processed(&completed).await;
    let fulfilled_at = fulfilled.processed_at.unwrap();
    let echo_of = |kind: &'static str, key: String| {
        let app = &app;
        async move {
            let events = app.stripe_events(kind).await;
            let echo = events
                .iter()
                .find(|e| e["request"]["idempotency_key"].as_str() == Some(key.as_str()))
                .unwrap_or_else(|| panic!("a {kind} under {key}: {events:?}"));
            echo["id"].as_str().unwrap().to_owned()
        }
    };
    let echoes = [
        echo_of(
            "customer.created",
            format!("kassa:{installation}:checkout_session:{session}:create_customer"),
        )
        .await,
        echo_of(
            "payment_method.attached",
            format!("kassa:{installation}:{completed}:attach_payment_method"),
        )
        .await,
    ];
    for echo in &echoes {
        let settled = app.processed(echo).await;
        assert!(
            settled.received_at < fulfilled_at,
            "{echo} reached the worker while the fulfilment was in flight: {settled:?}, fulfilled at {fulfilled_at}"
        );
        assert!(
            settled.processed_at.unwrap() > fulfilled_at,
            "{echo} is settled only after the fulfilment committed: {settled:?}, fulfilled at {fulfilled_at}"
        );
        assert_eq!(
            (settled.attempts, settled.last_error.as_deref()),
            (1, None),
            "{echo} waited for the fulfilment instead of failing"
        );
    }
    let reads: Vec<String> = app.sim().requests()[from..]
        .iter()
        .filter(|r| {
            r.method == "GET"
                && (r.path.starts_with("/v1/customers")
                    || r.path.starts_with("/v1/payment_methods"))
        })
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(reads, Vec::<String>::new(), "no echo was re-fetched");
    assert_card_saved(&app, &session).await;
    app.cleanup().await;
}

/// Whether a connection to the app's database waits for a lock.
async fn someone_waits_for_a_lock(app: &TestApp) -> bool {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(app.store().pool())
    .await
    .unwrap();
    waiting > 0
}

#[tokio::test]
async fn a_card_updated_while_its_session_is_fulfilled_keeps_its_new_expiry() {
    // Webhooks are dropped: the test hands the events over in the order it tests.
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    let (customer, session) = session_naming_a_customer(&app).await;
    app.complete(&session, "pm_card_visa");
    let attached = app.stripe_events("payment_method.attached").await;
    let card = attached[0]["data"]["object"]["id"]
        .as_str()
        .expect("Stripe attached the session's card")
        .to_owned();

    // The fulfilment reads the session (the card expanded, with its first expiry), then waits
    // for the customer's lock, held here.
    let mut customer_lock = app.store().begin().await.unwrap();
    kassa_store::events::lock_stripe_object(&mut customer_lock, &customer)
        .await
        .unwrap();
    let completed = stripe_event(&app, "checkout.session.completed", &session).await;
    app.publish_event(&completed).await;
    eventually(
        Duration::from_secs(20),
        "the fulfilment to wait for the customer's lock",
        || async { someone_waits_for_a_lock(&app).await.then_some(()) },
    )
    .await;

    // Meanwhile the bank extends the card; its payment_method.updated is handled and commits.
    let updated = sim::post_form(
        &app.sim().base_url(),
        &format!("/v1/payment_methods/{card}"),
        &[("card[exp_month]", "7"), ("card[exp_year]", "2041")],
    )
    .await;
    assert_eq!(updated["card"]["exp_year"], 2041, "{updated}");
    handle(
        &app,
        &stripe_event(&app, "payment_method.updated", &card).await,
    )
    .await;
    let recorded = app.store().payment_method(&card).await.unwrap();
    assert_eq!(
        recorded.and_then(|c| c.exp_month.zip(c.exp_year)),
        Some((7, 2041))
    );
    let fulfilled = app.store().event(completed["id"].as_str().unwrap()).await;
    assert!(
        fulfilled.unwrap().is_none_or(|e| e.processed_at.is_none()),
        "the fulfilment still waits"
    );

    // The fulfilment goes on with the card it read before the update.
    customer_lock.commit().await.unwrap();
    app.processed(completed["id"].as_str().unwrap()).await;
    let (_, default) = app
        .store()
        .customer_with_default_card(&customer)
        .await
        .unwrap()
        .expect("the customer is recorded");
    let default = default.expect("its default card is recorded");
    assert_eq!(default.id, card);
    assert!(default.attached);
    assert_eq!(
        (default.exp_month, default.exp_year),
        (Some(7), Some(2041)),
        "the newer expiry stays"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_customer_sync_that_read_the_old_default_card_never_brings_it_back() {
    // Webhooks are dropped: the test hands the session's event over when it tests.
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    let stripe = app.stripe().clone();
    let (customer, session) = session_naming_a_customer(&app).await;
    // The customer already pays with another card, saved on Stripe directly.
    let old_card = stripe
        .payment_methods()
        .attach("pm_card_mastercard", &customer, &key("attach-old-card"))
        .await
        .unwrap()
        .id;
    stripe
        .customers()
        .set_default_payment_method(&customer, &old_card, &key("default-old-card"))
        .await
        .unwrap();
    // A newer customer, listed (newest first) and so recorded first by the sync. The test
    // inserts its row without committing: the sync, having read the whole page, waits for it.
    let newer = stripe
        .customers()
        .create(&CustomerParams::default(), &key("newer-customer"))
        .await
        .unwrap();
    let mut newer_row = app.store().begin().await.unwrap();
    kassa_store::customers::upsert_customer(&mut newer_row, &records::customer_record(&newer))
        .await
        .unwrap();

    let (options, shutdown) = (SyncOptions::default(), CancellationToken::new());
    let sync = sync_customers(&stripe, app.store(), &options, |_| {}, &shutdown);
    let meanwhile = async {
        eventually(
            Duration::from_secs(20),
            "the sync to wait for the newer customer's row",
            || async { someone_waits_for_a_lock(&app).await.then_some(()) },
        )
        .await;
        // The customer completes the setup session: its card becomes the default, recorded by
        // the fulfilment, which commits while the sync still holds its older read.
        app.complete(&session, "pm_card_visa");
        handle(
            &app,
            &stripe_event(&app, "checkout.session.completed", &session).await,
        )
        .await;
        newer_row.rollback().await.unwrap();
    };
    let (synced, ()) = tokio::join!(sync, meanwhile);
    let synced = synced.unwrap();
    assert!(synced.finished, "{synced:?}");
    assert_eq!(synced.counts.customers, 2, "{synced:?}");

    let new_card = app.default_card(&customer).await;
    assert_ne!(
        new_card, old_card,
        "Stripe has the session's card as the default"
    );
    let (recorded, default) = app
        .store()
        .customer_with_default_card(&customer)
        .await
        .unwrap()
        .expect("the customer is recorded");
    assert_eq!(
        recorded.default_payment_method.as_deref(),
        Some(new_card.as_str()),
        "the sync's older read does not bring the old card back"
    );
    assert_eq!(default.map(|card| card.id), Some(new_card));
    app.cleanup().await;
}

#[tokio::test]
async fn a_card_the_network_reissued_is_re_read_and_recorded_with_its_new_number_and_expiry() {
    let app = TestApp::spawn().await;
    let session = app.create_setup_session(&email()).await;
    app.complete(&session, "pm_card_visa");
    let (_, card_id) = assert_card_saved(&app, &session).await;
    let reads_before = app
        .calls("GET", &format!("/v1/payment_methods/{card_id}"))
        .len();

    // The bank reissues the card: the network updates it in place, with no request of Kassa's.
    let update = kassa_stripe_sim::NetworkUpdate {
        exp_month: Some(7),
        exp_year: Some(2034),
        last4: Some("0077".to_owned()),
    };
    app.sim().network_update_card(&card_id, &update).unwrap();
    let event = eventually(
        Duration::from_secs(10),
        "the network's payment_method.automatically_updated",
        || async {
            app.stripe_events("payment_method.automatically_updated")
                .await
                .into_iter()
                .find(|e| e["data"]["object"]["id"] == card_id.as_str())
        },
    )
    .await;
    assert!(event["request"]["idempotency_key"].is_null(), "{event}");
    let event_id = event["id"].as_str().unwrap();
    let stored = app.processed(event_id).await;
    assert!(stored.dead_lettered_at.is_none(), "{:?}", stored.last_error);

    // Not an echo of Kassa's own write: the card was read from Stripe again, once, and its new
    // number and expiry replaced the recorded ones.
    let card = app
        .store()
        .payment_method(&card_id)
        .await
        .unwrap()
        .expect("the card is recorded");
    assert_eq!(
        (card.last4.as_deref(), card.exp_month, card.exp_year),
        (Some("0077"), Some(7), Some(2034))
    );
    assert!(card.attached);
    let reads_after = app
        .calls("GET", &format!("/v1/payment_methods/{card_id}"))
        .len();
    assert_eq!(reads_after, reads_before + 1, "one re-read of the card");
    app.cleanup().await;
}
