//! The "new charge" / "new refund" triggers on `kassa.notifications`: one message per charge or
//! refund whether its event came by webhook, by the `/v1/events` poller, by both, or by
//! `kassa reconcile` — deduplicated by the inbox.

use crate::support::app::TestApp;
use crate::support::{eventually, key};
use kassa_stripe::resources::{CreateCharge, CreateRefund};
use kassa_stripe_sim::DeliveryOutcome;
use kassa_worker::poller::{poll_once as backfill_once, unix_now, PollerConfig};
use serde_json::{json, Value};
use std::time::Duration;

/// Binds a queue of the test's own to the test topology's `kassa.notifications`, as a
/// merchant's consumer would.
async fn tap_notifications(app: &TestApp) {
    app.tap(&app.topology.notifications_exchange()).await;
}

/// Takes every notification now in the tap: (routing key, message_id, body).
async fn take_notifications(app: &TestApp) -> Vec<(String, String, Value)> {
    let queue = app.tap_queue(&app.topology.notifications_exchange());
    app.take_tapped(&queue).await
}

/// Waits until notifications about `object_id` arrived, keeping all read in `seen`.
async fn notified(
    app: &TestApp,
    seen: &mut Vec<(String, String, Value)>,
    routing_key: &str,
    object_id: &str,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        seen.extend(take_notifications(app).await);
        if let Some((_, _, body)) = seen
            .iter()
            .find(|(k, _, b)| k == routing_key && b["id"] == object_id)
        {
            return body.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {routing_key} of {object_id}; seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every outbox message is published (so nothing is still on its way to the tap).
async fn outbox_flushed(app: &TestApp) {
    eventually(Duration::from_secs(20), "the outbox to flush", || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(app.store().pool())
                .await
                .unwrap();
        (left == 0).then_some(())
    })
    .await;
}

async fn legacy_charge(app: &TestApp, amount: i64, currency: &str) -> String {
    app.stripe()
        .charges()
        .create(
            &CreateCharge {
                amount,
                currency: currency.into(),
                source: Some("tok_visa".into()),
                ..Default::default()
            },
            &key("charge"),
        )
        .await
        .unwrap()
        .id
}

/// A legacy charge of a test token, and the id of Stripe's `charge.succeeded` event about it.
async fn charged(app: &TestApp, amount: i64, currency: &str) -> (String, String) {
    let charge = legacy_charge(app, amount, currency).await;
    let event = event_about(app, "charge.succeeded", &charge).await;
    (charge, event["id"].as_str().unwrap().to_owned())
}

/// The id of the event of `kind` about `object_id`, from Stripe's own list.
async fn event_about(app: &TestApp, kind: &str, object_id: &str) -> Value {
    app.stripe_events(kind)
        .await
        .into_iter()
        .find(|e| e["data"]["object"]["id"] == object_id)
        .unwrap_or_else(|| panic!("no {kind} event about {object_id}"))
}

fn count(seen: &[(String, String, Value)], routing_key: &str, object_id: &str) -> usize {
    seen.iter()
        .filter(|(k, _, b)| k == routing_key && b["id"] == object_id)
        .count()
}

#[tokio::test]
async fn a_charge_and_its_refund_by_webhook_notify_once_each_even_when_delivered_twice() {
    let app = TestApp::builder().duplicating_webhooks().spawn().await;
    tap_notifications(&app).await;
    let mut seen = Vec::new();

    let charge = legacy_charge(&app, 1999, "usd").await;
    let body = notified(&app, &mut seen, "charge.created", &charge).await;
    let event = event_about(&app, "charge.succeeded", &charge).await;
    assert_eq!(body["amount"], 1999);
    assert_eq!(body["currency"], "usd");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["livemode"], false);
    assert_eq!(body["event_id"], event["id"]);
    assert!(body["created"].as_i64().unwrap() > 0);

    let refund = app
        .stripe()
        .refunds()
        .create(
            &CreateRefund {
                charge: Some(charge.clone()),
                amount: Some(500),
                ..Default::default()
            },
            &key("refund"),
        )
        .await
        .unwrap();
    let body = notified(&app, &mut seen, "refund.created", &refund.id).await;
    assert_eq!(body["amount"], 500);
    assert_eq!(body["charge"], charge.as_str());
    assert_eq!(body["currency"], "usd");
    assert_eq!(body["status"], "succeeded");

    // Every delivery (each webhook came twice) is handled, and every message published.
    let refund_event = event_about(&app, "refund.created", &refund.id).await;
    app.processed(event["id"].as_str().unwrap()).await;
    app.processed(refund_event["id"].as_str().unwrap()).await;
    eventually(Duration::from_secs(20), "both copies delivered", || async {
        let ok = app
            .sim()
            .webhook_deliveries()
            .iter()
            .filter(|d| d.event_id == event["id"] && d.status == Some(200))
            .count()
            >= 2;
        ok.then_some(())
    })
    .await;
    app.drained(&app.topology.fulfillment_queue()).await;
    outbox_flushed(&app).await;
    seen.extend(take_notifications(&app).await);
    assert_eq!(count(&seen, "charge.created", &charge), 1, "{seen:?}");
    assert_eq!(count(&seen, "refund.created", &refund.id), 1, "{seen:?}");
    assert_eq!(
        seen.len(),
        2,
        "charge.refunded is no second trigger: {seen:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_webhook_dropped_on_the_way_is_found_by_the_poller_and_published_once() {
    let app = TestApp::builder()
        .dropping_webhooks()
        .events_poller(PollerConfig {
            interval: Duration::from_millis(200),
            first_lookback: Duration::from_secs(3600),
            settle: Duration::ZERO,
        })
        .spawn()
        .await;
    tap_notifications(&app).await;
    let mut seen = Vec::new();

    let charge = legacy_charge(&app, 5000, "jpy").await;
    let event = event_about(&app, "charge.succeeded", &charge).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let body = notified(&app, &mut seen, "charge.created", &charge).await;
    assert_eq!(body["amount"], 5000, "JPY is zero-decimal: unscaled");
    assert_eq!(body["event_id"], event_id.as_str());
    // The webhook really was dropped: only the poller can have brought it.
    let deliveries: Vec<_> = app
        .sim()
        .webhook_deliveries()
        .into_iter()
        .filter(|d| d.event_id == event_id)
        .collect();
    assert!(
        !deliveries.is_empty()
            && deliveries
                .iter()
                .all(|d| d.outcome == DeliveryOutcome::Dropped),
        "{deliveries:?}"
    );
    app.processed(&event_id).await;
    // Stripe knows it was never delivered: `delivery_success=false` lists it.
    let undelivered = app
        .sim_get(
            "/v1/events",
            &[("delivery_success", "false"), ("limit", "100")],
        )
        .await;
    assert!(
        undelivered["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == event_id.as_str()),
        "{undelivered}"
    );

    // The test mode's cursor is saved, and later polls (which list the same second again)
    // publish nothing new.
    let cursor = eventually(Duration::from_secs(10), "the poll cursor", || async {
        app.store()
            .poll_cursor(kassa_worker::poller::cursor_name(kassa_stripe::Mode::Test))
            .await
            .unwrap()
    })
    .await;
    assert!(cursor.last_created >= event["created"].as_i64().unwrap());
    let polls = app.calls("GET", "/v1/events").len();
    eventually(Duration::from_secs(20), "three more polls", || async {
        (app.calls("GET", "/v1/events").len() >= polls + 3).then_some(())
    })
    .await;
    app.drained(&app.topology.fulfillment_queue()).await;
    outbox_flushed(&app).await;
    seen.extend(take_notifications(&app).await);
    assert_eq!(count(&seen, "charge.created", &charge), 1, "{seen:?}");
    let stored = app.store().event(&event_id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1, "handled once");
    app.cleanup().await;
}

#[tokio::test]
async fn an_event_brought_by_both_the_webhook_and_the_poller_notifies_once() {
    // No worker in the app: the webhook's copy waits in the queue while the poller's pass runs,
    // so both copies are surely there when a worker starts.
    let app = TestApp::builder().without_worker().spawn().await;
    tap_notifications(&app).await;
    let (charge, event_id) = charged(&app, 2500, "eur").await;
    eventually(
        Duration::from_secs(10),
        "the webhook to be taken",
        || async {
            app.sim()
                .webhook_deliveries()
                .iter()
                .any(|d| d.event_id == event_id && d.status == Some(200))
                .then_some(())
        },
    )
    .await;

    let now = unix_now();
    let report = backfill_once(
        app.stripe(),
        app.store(),
        &app.stack.broker,
        now - 3600,
        now,
    )
    .await
    .unwrap();
    assert!(
        report.missing.iter().any(|m| m.id == event_id),
        "not in the inbox yet, so the poller publishes it too: {report:?}"
    );

    let mut worker = app.spawn_worker_process();
    let mut seen = Vec::new();
    notified(&app, &mut seen, "charge.created", &charge).await;
    app.processed(&event_id).await;
    app.drained(&app.topology.fulfillment_queue()).await;
    outbox_flushed(&app).await;
    seen.extend(take_notifications(&app).await);
    assert_eq!(count(&seen, "charge.created", &charge), 1, "{seen:?}");

    // A pass now finds nothing missing: the inbox has it.
    let now = unix_now();
    let again = backfill_once(
        app.stripe(),
        app.store(),
        &app.stack.broker,
        now - 3600,
        now,
    )
    .await
    .unwrap();
    assert!(again.missing.is_empty(), "{again:?}");
    worker.kill().await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn kassa_reconcile_reports_and_publishes_the_missing_event() {
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    tap_notifications(&app).await;
    let (charge, event_id) = charged(&app, 1234, "usd").await;

    let reconcile = || app.kassa(&["reconcile", "--since", "1h", "--settle", "0s"]);
    // Delivered webhooks: `delivery_success=true` lists only events every endpoint took.
    let delivered = app
        .sim_get("/v1/events", &[("delivery_success", "true")])
        .await;
    assert_eq!(
        delivered["data"].as_array().unwrap().len(),
        0,
        "{delivered}"
    );

    let out = reconcile().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 missing from the inbox"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&event_id))
        .unwrap_or_else(|| panic!("{event_id} not reported: {stdout}"));
    assert!(
        line.contains("charge.succeeded") && line.contains(&charge) && line.contains("published")
    );

    let mut seen = Vec::new();
    let body = notified(&app, &mut seen, "charge.created", &charge).await;
    assert_eq!(body["event_id"], event_id.as_str());
    app.processed(&event_id).await;

    // Run again: nothing is missing any more, nothing is published twice.
    let out = reconcile().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 missing from the inbox"), "{stdout}");
    assert!(stdout.contains("Nothing was missing."), "{stdout}");
    app.drained(&app.topology.fulfillment_queue()).await;
    outbox_flushed(&app).await;
    seen.extend(take_notifications(&app).await);
    assert_eq!(count(&seen, "charge.created", &charge), 1, "{seen:?}");
    app.cleanup().await;
}

/// A charge that is born `pending` (bank debits, some cards) is announced by `charge.pending`;
/// its later `charge.succeeded` is the same charge and no second trigger. The simulator's test
/// cards settle at once, so the `charge.pending` event is handed to the worker as Stripe would
/// deliver it, about a real charge that the worker re-fetches.
#[tokio::test]
async fn a_pending_charge_is_announced_once_when_it_later_succeeds() {
    // Only the events this test hands over reach the worker, in the order it chooses.
    let app = TestApp::builder().dropping_webhooks().spawn().await;
    tap_notifications(&app).await;
    let charge = legacy_charge(&app, 4200, "eur").await;
    let succeeded = event_about(&app, "charge.succeeded", &charge).await;
    let mut pending = succeeded.clone();
    pending["id"] = json!(format!("evt_pending_{}", uuid::Uuid::new_v4().simple()));
    pending["type"] = json!("charge.pending");
    pending["data"]["object"]["status"] = json!("pending");

    app.publish_event(&pending).await;
    app.processed(pending["id"].as_str().unwrap()).await;
    let mut seen = Vec::new();
    let body = notified(&app, &mut seen, "charge.created", &charge).await;
    assert_eq!(body["event_type"], "charge.pending");
    assert_eq!(
        (body["amount"].as_i64(), body["currency"].as_str()),
        (Some(4200), Some("eur"))
    );

    app.publish_event(&succeeded).await;
    app.processed(succeeded["id"].as_str().unwrap()).await;
    outbox_flushed(&app).await;
    seen.extend(take_notifications(&app).await);
    assert_eq!(count(&seen, "charge.created", &charge), 1, "{seen:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn two_workers_poll_as_one_and_the_other_takes_over_when_the_leaders_connection_dies() {
    let app = TestApp::builder().without_worker().spawn().await;
    let config = PollerConfig {
        interval: Duration::from_millis(100),
        first_lookback: Duration::from_secs(3600),
        settle: Duration::ZERO,
    };
    // Two worker processes: each its own Stripe key (told apart in the simulator's log) and its
    // own pool on the shared database.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut fingerprints = Vec::new();
    for name in ["a", "b"] {
        let key = format!("sk_test_poller_{name}");
        fingerprints.push(kassa_stripe_sim::key_fingerprint(&key));
        let mut stripe = kassa_stripe::ClientConfig::new(key.into());
        stripe.api_base = app.sim().base_url();
        let stripe = kassa_stripe::Client::new(stripe).unwrap();
        let store = kassa_store::Store::connect(&app.database_url, 4)
            .await
            .unwrap();
        tokio::spawn(kassa_worker::poller::run_poller(
            stripe,
            store,
            app.stack.broker.clone(),
            config.clone(),
            shutdown.clone(),
        ));
    }
    let polls_by = |fingerprint: &str| {
        app.calls("GET", "/v1/events")
            .iter()
            .filter(|c| c.key_fingerprint.as_deref() == Some(fingerprint))
            .count()
    };
    eventually(Duration::from_secs(20), "ten polls", || async {
        (polls_by(&fingerprints[0]) + polls_by(&fingerprints[1]) >= 10).then_some(())
    })
    .await;
    let counts = [polls_by(&fingerprints[0]), polls_by(&fingerprints[1])];
    assert!(
        counts.contains(&0),
        "one process polls, the other waits: {counts:?}"
    );
    let (leader, follower) = if counts[0] > 0 { (0, 1) } else { (1, 0) };

    // The leader's PostgreSQL session ends (its process died, or the network cut it).
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(app.store().pool())
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one leadership lock was held");
    eventually(
        Duration::from_secs(20),
        "the other process to take over",
        || async { (polls_by(&fingerprints[follower]) >= 3).then_some(()) },
    )
    .await;
    let before = polls_by(&fingerprints[leader]);
    let after_takeover = polls_by(&fingerprints[follower]);
    eventually(Duration::from_secs(20), "five more polls", || async {
        (polls_by(&fingerprints[follower]) >= after_takeover + 5).then_some(())
    })
    .await;
    assert_eq!(
        polls_by(&fingerprints[leader]),
        before,
        "the old leader found the lock taken and stopped polling"
    );
    shutdown.cancel();
    app.cleanup().await;
}
