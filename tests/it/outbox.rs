//! The outbox relay with a message that can never be published (its exchange does not exist,
//! as after `kassa charges import` under a wrong prefix): the messages behind it are published
//! within seconds, the broker connection is never torn down, and `kassa outbox` shows the bad
//! message and drops it.

use crate::support::app::TestApp;
use crate::support::eventually;
use kassa_store::outbox::enqueue;
use kassa_store::OutboxMessage;
use serde_json::json;
use std::time::Duration;

fn message(exchange: &str, id: &str) -> OutboxMessage {
    OutboxMessage {
        exchange: exchange.to_owned(),
        routing_key: "customer.outbox_test".to_owned(),
        message_id: id.to_owned(),
        message_type: "customer.outbox_test".to_owned(),
        body: json!({"id": id}),
        headers: json!({}),
    }
}

async fn enqueue_all(app: &TestApp, messages: &[OutboxMessage]) {
    let mut tx = app.store().begin().await.unwrap();
    for message in messages {
        assert!(enqueue(&mut tx, message).await.unwrap());
    }
    tx.commit().await.unwrap();
}

async fn published(app: &TestApp, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE message_id LIKE $1 AND published_at IS NOT NULL",
    )
    .bind(format!("{prefix}%"))
    .fetch_one(app.store().pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_poison_outbox_message_delays_nothing_but_itself_and_the_connection_stays_up() {
    let app = TestApp::builder().without_ingress().spawn().await;
    let alerts = app.topology.alerts_exchange();
    let tap = app.tap(&alerts).await;
    let missing = format!("{}kassa.no-such-exchange", app.topology.prefix());
    assert_eq!(app.stack.broker.connections_established(), 1);

    // The poison message first (lowest id, the relay takes it first), then good ones.
    let mut batch = vec![message(&missing, "poison-1")];
    batch.extend((0..20).map(|i| message(&alerts, &format!("good-a-{i}"))));
    enqueue_all(&app, &batch).await;
    eventually(
        Duration::from_secs(5),
        "the messages behind the poison one to be published",
        || async { (published(&app, "good-a-").await == 20).then_some(()) },
    )
    .await;

    // It is retried on its own schedule (1 s, then 2 s) while more messages go out.
    eventually(
        Duration::from_secs(10),
        "the poison message to be tried again",
        || async {
            let pending = app.store().pending_outbox(10).await.unwrap();
            pending
                .into_iter()
                .find(|p| p.message_id == "poison-1" && p.attempts >= 2)
        },
    )
    .await;
    enqueue_all(
        &app,
        &(0..5)
            .map(|i| message(&alerts, &format!("good-b-{i}")))
            .collect::<Vec<_>>(),
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "messages enqueued after the poison one failed to be published",
        || async { (published(&app, "good-b-").await == 5).then_some(()) },
    )
    .await;
    let tapped = app.take_tapped(&tap).await;
    assert_eq!(
        tapped.len(),
        25,
        "every good message reached its queue once"
    );

    // The closed channel was a channel fault: the connection was never re-established.
    assert_eq!(
        app.stack.broker.connections_established(),
        1,
        "the broker connection did not reconnect"
    );
    assert!(app.stack.broker.is_ready());
    let poison = app
        .store()
        .pending_outbox(10)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.message_id == "poison-1")
        .expect("the poison message is still pending");
    let error = poison.last_error.clone().unwrap_or_default();
    assert!(error.contains("NOT_FOUND"), "{error}");
    assert!(
        poison.next_attempt_at.is_some(),
        "it waits for its next attempt"
    );

    // An operator sees it and drops it.
    let list = app.kassa(&["outbox", "list"]).await;
    let stdout = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success(), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.contains("poison-1"))
        .unwrap_or_else(|| panic!("the poison message is listed:\n{stdout}"));
    assert!(row.contains(&missing) && row.contains("NOT_FOUND"), "{row}");
    let dropped = app.kassa(&["outbox", "drop", &poison.id.to_string()]).await;
    assert!(
        dropped.status.success(),
        "{}",
        String::from_utf8_lossy(&dropped.stderr)
    );
    assert!(app.store().pending_outbox(10).await.unwrap().is_empty());
    let list = app.kassa(&["outbox", "list"]).await;
    assert!(String::from_utf8_lossy(&list.stdout).contains("the outbox is empty"));
    app.cleanup().await;
}
