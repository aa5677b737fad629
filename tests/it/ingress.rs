//! The webhook ingress against a real RabbitMQ: a 200 means the event is on the queue, every
//! refusal publishes nothing, and a broker outage is a 503 that heals by itself.

use crate::support::proxy::TcpProxy;
use crate::support::{
    assert_error, event_body, event_id, eventually, now, services, TestIngress, SECRET,
};
use futures_util::future::join_all;
use kassa_stripe::webhook::sign;
use lapin::options::QueueBindOptions;
use lapin::types::FieldTable;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_signed_event_is_answered_200_after_exactly_one_message_with_its_id_and_raw_body() {
    let app = TestIngress::spawn().await;
    let id = event_id();
    let body = event_body(&id, "checkout.session.completed");

    let (status, answer) = app.post_signed(body.clone()).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({"received": true}));
    // The 200 came after the confirm, so the message is already in the queue: no waiting.
    let messages = app.drain_fulfillment().await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(
        message.delivery.data, body,
        "the raw body is passed on untouched"
    );
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(
        properties.kind().as_ref().map(|s| s.as_str()),
        Some("checkout.session.completed")
    );
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert!(properties.timestamp().is_some());
    assert_eq!(
        message.delivery.routing_key.as_str(),
        "checkout.session.completed"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn every_bad_request_gets_its_status_and_code_and_publishes_nothing() {
    let app = TestIngress::spawn().await;
    let body = event_body(&event_id(), "customer.updated");
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    let huge = {
        let mut b = b"{\"id\":\"evt_big\",\"pad\":\"".to_vec();
        b.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 1));
        b.extend(b"\"}");
        b
    };
    let not_json = b"this is not json".to_vec();
    let not_event = br#"{"id":"cus_123","object":"customer","email":"a@example.com"}"#.to_vec();
    let good = |b: &Vec<u8>| Some(sign(SECRET, now(), b));

    // (case, body, Stripe-Signature header, expected status, expected code)
    type Case = (&'static str, Vec<u8>, Option<String>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            tampered.clone(),
            good(&body),
            400,
            "signature_invalid",
        ),
        (
            "wrong secret",
            body.clone(),
            Some(sign("whsec_someone_else", now(), &body)),
            400,
            "signature_invalid",
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign(SECRET, now() - 301, &body)),
            400,
            "timestamp_out_of_tolerance",
        ),
        (
            "future timestamp",
            body.clone(),
            // Far outside the 300 s tolerance: the case list is built before the requests run, so a
            // timestamp only just outside could drift back inside on a loaded machine.
            Some(sign(SECRET, now() + 600, &body)),
            400,
            "timestamp_out_of_tolerance",
        ),
        (
            "missing header",
            body.clone(),
            None,
            400,
            "signature_missing",
        ),
        (
            "garbled header",
            body.clone(),
            Some("t=yesterday,v1=??".into()),
            400,
            "signature_malformed",
        ),
        (
            "only v0",
            body.clone(),
            Some(format!("t={},v0=abcdef", now())),
            400,
            "signature_no_v1",
        ),
        (
            "body over 1 MiB",
            huge.clone(),
            good(&huge),
            413,
            "payload_too_large",
        ),
        (
            "not JSON",
            not_json.clone(),
            good(&not_json),
            400,
            "payload_invalid_json",
        ),
        (
            "JSON that is not an event",
            not_event.clone(),
            good(&not_event),
            400,
            "payload_not_event",
        ),
    ];
    for (name, body, signature, want_status, want_code) in cases {
        let (status, answer) = app.post_webhook(body, signature).await;
        assert_eq!(status, want_status, "{name}: {answer}");
        assert_error(&answer, want_code, name);
    }

    // Nothing was published: the queue holds exactly the one good event sent now.
    let id = event_id();
    assert_eq!(
        app.post_signed(event_body(&id, "customer.updated")).await.0,
        200
    );
    let ids = app.drain_message_ids().await;
    assert_eq!(ids, vec![id]);
    app.cleanup().await;
}

#[tokio::test]
async fn during_a_secret_rotation_either_secret_verifies() {
    let app = TestIngress::builder()
        .secrets(&["whsec_old_secret", "whsec_new_secret"])
        .spawn()
        .await;
    for secret in ["whsec_old_secret", "whsec_new_secret"] {
        let body = event_body(&event_id(), "setup_intent.succeeded");
        let signature = sign(secret, now(), &body);
        let (status, answer) = app.post_webhook(body, Some(signature)).await;
        assert_eq!(status, 200, "{secret}: {answer}");
    }
    let body = event_body(&event_id(), "setup_intent.succeeded");
    let (status, _) = app
        .post_webhook(body.clone(), Some(sign(SECRET, now(), &body)))
        .await;
    assert_eq!(status, 400, "a secret that is not configured is refused");
    assert_eq!(app.drain_fulfillment().await.len(), 2);
    app.cleanup().await;
}

#[tokio::test]
async fn broker_outage_is_a_503_within_the_timeout_and_heals_without_a_restart() {
    let real = url::Url::parse(&services::amqp_url().await).unwrap();
    let upstream = format!(
        "{}:{}",
        real.host_str().unwrap(),
        real.port().unwrap_or(5672)
    );
    let mut proxy = TcpProxy::start(&upstream).await;
    let confirm_timeout = Duration::from_secs(4);
    let app = TestIngress::builder()
        .broker_url(proxy.amqp_url())
        .confirm_timeout(confirm_timeout)
        .spawn()
        .await;
    let before = event_id();
    assert_eq!(
        app.post_signed(event_body(&before, "charge.succeeded"))
            .await
            .0,
        200
    );
    let ready = app
        .http
        .get(format!("{}/readyz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    proxy.down().await;
    let lost = event_id();
    let started = Instant::now();
    let (status, answer) = app.post_signed(event_body(&lost, "charge.succeeded")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "broker_unavailable");
    assert!(
        started.elapsed() <= confirm_timeout + Duration::from_secs(1),
        "answered in {:?}",
        started.elapsed()
    );
    // Once the loss is noticed, readiness says so and further webhooks fail fast.
    eventually(
        Duration::from_secs(10),
        "readyz to report the outage",
        || async {
            let r = app
                .http
                .get(format!("{}/readyz", app.base_url))
                .send()
                .await
                .ok()?;
            (r.status() == 503).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    assert_eq!(
        app.post_signed(event_body(&event_id(), "charge.succeeded"))
            .await
            .0,
        503
    );
    assert!(
        started.elapsed() < confirm_timeout / 4,
        "fail fast while down: {:?}",
        started.elapsed()
    );

    proxy.up().await;
    // Stripe re-sends the refused event; once the broker is back it is accepted, same process.
    eventually(
        Duration::from_secs(15),
        "the ingress to accept events again",
        || async {
            let (status, _) = app.post_signed(event_body(&lost, "charge.succeeded")).await;
            (status == 200).then_some(())
        },
    )
    .await;
    let ids: HashSet<String> = app.drain_message_ids().await.into_iter().collect();
    assert!(ids.contains(&before) && ids.contains(&lost), "{ids:?}");
    app.cleanup().await;
    proxy.down().await;
}

#[tokio::test]
async fn an_unroutable_event_is_a_503_not_a_silent_loss() {
    let app = TestIngress::spawn().await;
    let (queue, exchange) = (
        app.topology.fulfillment_queue(),
        app.topology.events_exchange(),
    );
    app.inspector
        .queue_unbind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (status, answer) = app
        .post_signed(event_body(&event_id(), "refund.created"))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "broker_unavailable");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unroutable"),
        "{answer}"
    );

    app.inspector
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        app.post_signed(event_body(&event_id(), "refund.created"))
            .await
            .0,
        200
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_thousand_concurrent_webhooks_become_a_thousand_messages() {
    let app = TestIngress::spawn().await;
    let ids: Vec<String> = (0..1000).map(|_| event_id()).collect();
    let kinds = [
        "checkout.session.completed",
        "payment_intent.succeeded",
        "customer.updated",
    ];
    let requests = ids
        .iter()
        .enumerate()
        .map(|(i, id)| app.post_signed(event_body(id, kinds[i % kinds.len()])));
    let answers = join_all(requests).await;
    let failures: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 1000 failed: {:?}",
        failures.len(),
        failures.first()
    );

    let received = app.drain_message_ids().await;
    assert_eq!(received.len(), 1000, "one message per accepted webhook");
    let received: HashSet<_> = received.into_iter().collect();
    let sent: HashSet<_> = ids.into_iter().collect();
    assert_eq!(received, sent);
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_count_outcomes_and_verify_failures() {
    let app = TestIngress::spawn().await;
    assert_eq!(
        app.post_signed(event_body(&event_id(), "customer.updated"))
            .await
            .0,
        200
    );
    assert_eq!(app.post_webhook(b"{}".to_vec(), None).await.0, 400);
    let metrics = app
        .http
        .get(&app.metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"kassa_webhook_requests_total{outcome="accepted"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kassa_webhook_signature_failures_total{reason="signature_missing"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kassa_publish_confirm_seconds_bucket"),
        "{metrics}"
    );
    let health = app
        .http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let public = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "the webhook port does not show the metrics"
    );
    app.cleanup().await;
}
