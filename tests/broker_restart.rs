//! RabbitMQ restarted mid-stream loses nothing: events in the queue survive (durable quorum
//! queues, persistent messages), events in the worker's hands are redelivered, webhooks refused
//! with 503 while it is down are re-sent by Stripe, and each event is processed exactly once.
//!
//! This restarts the machine's RabbitMQ (`rabbitmqctl stop_app` / `start_app`), so it is a test
//! binary of its own: cargo runs test binaries one after another, never beside this one.

#[path = "it/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::process::Command;
use std::time::Duration;
use support::app::TestApp;
use support::eventually;

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect(
        "this test restarts the local RabbitMQ with rabbitmqctl (the broker at 127.0.0.1:5672 that CI starts)",
    );
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker's app again however the test ends (a failed assertion between stop and
/// start must not leave the machine without RabbitMQ).
struct StartAppOnDrop;

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[tokio::test]
async fn a_rabbitmq_restart_mid_stream_loses_no_event_and_doubles_none() {
    let url = support::services::amqp_url().await;
    assert!(
        url.contains("@127.0.0.1:5672/") || url.contains("@localhost:5672/"),
        "this test restarts the local RabbitMQ with rabbitmqctl; KASSA_AMQP_URL points elsewhere ({url}): \
         run the tests against the local broker"
    );
    // Stripe re-sends refused webhooks for days; the simulator's compressed schedule here
    // spans about a minute (0.5 s doubling, 8 attempts), longer than the restart.
    let app = TestApp::builder()
        .webhook_retries(Duration::from_millis(500), 8)
        .spawn()
        .await;
    let mut sessions = Vec::new();
    for i in 0..40 {
        sessions.push(
            app.create_setup_session(&format!(
                "restart{i}-{}@example.com",
                uuid::Uuid::new_v4().simple()
            ))
            .await,
        );
    }
    for session in &sessions[..20] {
        app.complete(session, "pm_card_visa");
    }

    // Mid-stream: the first twenty are in the ingress, the queue and the worker's hands.
    let _restart_guard = StartAppOnDrop;
    rabbitmqctl(&["stop_app"]);
    for session in &sessions[20..] {
        app.complete(session, "pm_card_visa");
    }
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    for session in &sessions {
        eventually(
            Duration::from_secs(120),
            &format!("{session} to be fulfilled"),
            || async {
                app.store()
                    .checkout_session(session)
                    .await
                    .ok()
                    .flatten()
                    .filter(|s| s.payment_method_id.is_some())
            },
        )
        .await;
    }
    let events = app.stripe_events("checkout.session.completed").await;
    assert_eq!(events.len(), 40);
    for event in &events {
        let stored = app.processed(event["id"].as_str().unwrap()).await;
        assert!(stored.processed_at.is_some());
    }
    let attaches = app
        .calls("POST", "/attach")
        .into_iter()
        .filter(|c| !c.replayed && c.status == 200)
        .count();
    assert_eq!(attaches, 40, "one effective attach per session");
    let customers = app
        .calls("POST", "/v1/customers")
        .into_iter()
        .filter(|c| c.path == "/v1/customers" && !c.replayed && c.status == 200)
        .count();
    assert_eq!(customers, 40, "one customer per session");
    app.cleanup().await;
}
