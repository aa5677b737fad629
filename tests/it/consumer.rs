//! The consumer's contract with RabbitMQ: ack after the handler (in shared frames, never before
//! the handler is done), the retry ladder, dead letters with their reason, and no message lost
//! when forwarding fails.

use crate::support::{eventually, init_test_logging, services};
use kassa_broker::consumer::{ATTEMPT_HEADER, REASON_HEADER, SOURCE_QUEUE_HEADER};
use kassa_broker::{
    run_consumer, Broker, BrokerConfig, ConsumerConfig, Incoming, MessageHandler, Outcome,
    OutgoingMessage, RetryRung, Topology, WorkQueue,
};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Fails each message a scripted number of times, then succeeds; records every attempt seen.
#[derive(Default)]
struct Scripted {
    transient_failures: u32,
    permanent: bool,
    /// Set once "the cause is removed": permanent failures stop.
    fixed: std::sync::atomic::AtomicBool,
    seen: Mutex<HashMap<String, Vec<u32>>>,
}

impl MessageHandler for Scripted {
    async fn handle(&self, message: Incoming) -> Outcome {
        let attempt = message.attempt;
        self.seen
            .lock()
            .unwrap()
            .entry(message.message_id.clone())
            .or_default()
            .push(attempt);
        if self.permanent && !self.fixed.load(std::sync::atomic::Ordering::SeqCst) {
            Outcome::DeadLetter("no such customer: cus_missing".into())
        } else if attempt < self.transient_failures {
            Outcome::Retry(format!("stripe 503 on attempt {attempt}"))
        } else {
            Outcome::Done
        }
    }
}

struct Rig {
    broker: Broker,
    topology: Topology,
    shutdown: CancellationToken,
    /// Stops the consumer's connection alone (closed as in a crash of the process, for the
    /// broker: what is not acked goes back to the queue).
    connection: CancellationToken,
    /// Stops the consumer alone, as a worker that is told to stop.
    consumer: CancellationToken,
    consuming: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn start<H: MessageHandler>(handler: Arc<H>) -> Self {
        Self::start_with(handler, 8, 4).await
    }

    async fn start_with<H: MessageHandler>(
        handler: Arc<H>,
        prefetch: u16,
        concurrency: usize,
    ) -> Self {
        init_test_logging();
        let ladder = vec![
            RetryRung {
                suffix: "r1".into(),
                delay: Duration::from_millis(200),
            },
            RetryRung {
                suffix: "r2".into(),
                delay: Duration::from_millis(300),
            },
        ];
        let topology = Topology::unique().with_retry_ladder(ladder);
        let mut config = BrokerConfig::new(services::amqp_url().await);
        config.topology = topology.clone();
        // Named after the topology, so a test can find its connection among RabbitMQ's.
        config.connection_name = format!("kassa-test-{}", topology.prefix());
        let shutdown = CancellationToken::new();
        let connection = shutdown.child_token();
        let broker = Broker::start(config, connection.clone());
        broker.wait_ready(Duration::from_secs(20)).await.unwrap();
        let consumer = ConsumerConfig {
            work: WorkQueue::Events,
            prefetch,
            concurrency,
            tag: "test".into(),
        };
        let stop = shutdown.child_token();
        let consuming = tokio::spawn(run_consumer(
            broker.clone(),
            consumer,
            handler,
            stop.clone(),
        ));
        Self {
            broker,
            topology,
            shutdown,
            connection,
            consumer: stop,
            consuming,
        }
    }

    /// Closes the consumer's connection and waits until RabbitMQ has put back what it had not
    /// been told was done; then takes (and acks) every message left in the work queue, on a
    /// connection of its own.
    async fn close_connection_and_drain_queue(&self) -> Vec<String> {
        self.connection.cancel();
        let url = self.broker.config().url.clone();
        let connection = kassa_broker::connection::connect_first(&url).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = self.topology.fulfillment_queue();
        // The close is asynchronous: wait until the queue has no consumer left.
        eventually(
            Duration::from_secs(20),
            "the consumer to be gone",
            || async {
                let declared = channel
                    .queue_declare(
                        queue.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        Default::default(),
                    )
                    .await
                    .unwrap();
                (declared.consumer_count() == 0).then_some(())
            },
        )
        .await;
        let mut left = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            let id = m.delivery.properties.message_id().as_ref().unwrap();
            left.push(id.to_string());
        }
        let _ = connection.close(200, "test done".into()).await;
        left
    }

    async fn publish_event(&self, id: &str) {
        self.broker
            .publisher()
            .publish(OutgoingMessage {
                exchange: &self.topology.events_exchange(),
                routing_key: "customer.updated",
                body: br#"{"id":"evt"}"#,
                message_id: id,
                kind: "customer.updated",
                headers: None,
            })
            .await
            .unwrap();
    }

    async fn dead_letters(&self) -> Vec<lapin::message::BasicGetMessage> {
        let channel = self.broker.open_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(
                self.topology.dead_letters_queue().as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            out.push(m);
        }
        out
    }

    async fn cleanup(self) {
        // Stop the consumer and its connection first, then delete on a connection of our own.
        let url = self.broker.config().url.clone();
        self.shutdown.cancel();
        self.topology.delete_at(&url).await.unwrap();
    }
}

fn header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(name)
        .cloned()
}

fn header_text(message: &lapin::message::BasicGetMessage, name: &str) -> String {
    match header(message, name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn transient_failures_climb_the_ladder_then_succeed_once() {
    let handler = Arc::new(Scripted {
        transient_failures: 2,
        permanent: false,
        ..Default::default()
    });
    let rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_retry_1").await;
    eventually(Duration::from_secs(10), "three attempts", || async {
        (handler
            .seen
            .lock()
            .unwrap()
            .get("evt_retry_1")
            .map(Vec::len)
            == Some(3))
        .then_some(())
    })
    .await;
    assert_eq!(handler.seen.lock().unwrap()["evt_retry_1"], vec![0, 1, 2]);
    assert!(rig.dead_letters().await.is_empty());
    rig.cleanup().await;
}

#[tokio::test]
async fn exhausted_retries_and_permanent_failures_are_dead_lettered_with_their_reason() {
    let handler = Arc::new(Scripted {
        transient_failures: 99,
        permanent: false,
        ..Default::default()
    });
    let rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_exhaust").await;
    let dead = eventually(Duration::from_secs(10), "a dead letter", || async {
        let dead = rig.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        handler.seen.lock().unwrap()["evt_exhaust"],
        vec![0, 1, 2],
        "one try per rung, plus the first"
    );
    let reason = header_text(&dead[0], REASON_HEADER);
    assert!(
        reason.contains("retries exhausted") && reason.contains("stripe 503"),
        "{reason}"
    );
    assert_eq!(
        header(&dead[0], ATTEMPT_HEADER),
        Some(AMQPValue::LongUInt(2))
    );
    assert_eq!(
        dead[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("evt_exhaust")
    );
    rig.cleanup().await;

    let handler = Arc::new(Scripted {
        transient_failures: 0,
        permanent: true,
        ..Default::default()
    });
    let rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_permanent").await;
    let dead = eventually(Duration::from_secs(10), "a dead letter", || async {
        let dead = rig.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(
        handler.seen.lock().unwrap()["evt_permanent"],
        vec![0],
        "permanent: no retry"
    );
    let reason = header_text(&dead[0], REASON_HEADER);
    assert!(reason.contains("no such customer"), "{reason}");
    let source = header_text(&dead[0], SOURCE_QUEUE_HEADER);
    assert_eq!(source, rig.topology.fulfillment_queue());
    rig.cleanup().await;
}

#[tokio::test]
async fn dlq_lists_without_removing_and_replay_puts_the_message_back_once() {
    let handler = Arc::new(Scripted {
        transient_failures: 0,
        permanent: true,
        ..Default::default()
    });
    let rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_dlq_a").await;
    rig.publish_event("evt_dlq_b").await;
    let listed = eventually(Duration::from_secs(10), "two dead letters", || async {
        let listed = kassa_broker::dlq::list(&rig.broker, 100).await.unwrap();
        (listed.len() == 2).then_some(listed)
    })
    .await;
    let a = listed
        .iter()
        .find(|l| l.message_id == "evt_dlq_a")
        .expect("evt_dlq_a listed");
    assert!(a.reason.contains("no such customer"), "{a:?}");
    assert_eq!(a.source_queue, rig.topology.fulfillment_queue());
    assert_eq!(a.kind, "customer.updated");
    assert!(a.dead_lettered_at.is_some());
    // Listing is not consuming.
    assert_eq!(
        kassa_broker::dlq::list(&rig.broker, 100)
            .await
            .unwrap()
            .len(),
        2
    );

    // Replaying while the cause is still there terminates: each message is replayed once, fails
    // again and is back in the dead-letter queue, not replayed in a loop.
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        kassa_broker::dlq::replay(&rig.broker, &kassa_broker::dlq::Selection::All),
    )
    .await
    .expect("replay --all terminates")
    .unwrap();
    assert_eq!(again.replayed.len(), 2, "{again:?}");
    eventually(
        Duration::from_secs(10),
        "both back in the dead-letter queue",
        || async {
            (kassa_broker::dlq::list(&rig.broker, 100)
                .await
                .unwrap()
                .len()
                == 2)
                .then_some(())
        },
    )
    .await;

    handler
        .fixed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let replayed = kassa_broker::dlq::replay(
        &rig.broker,
        &kassa_broker::dlq::Selection::Id("evt_dlq_a".into()),
    )
    .await
    .unwrap()
    .replayed;
    assert_eq!(replayed, vec!["evt_dlq_a".to_string()]);
    eventually(
        Duration::from_secs(10),
        "the replayed message to be handled",
        || async { (handler.seen.lock().unwrap()["evt_dlq_a"].len() == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        handler.seen.lock().unwrap()["evt_dlq_a"],
        vec![0, 0, 0],
        "replay resets the attempt count"
    );
    let left = kassa_broker::dlq::list(&rig.broker, 100).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|l| l.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt_dlq_b"]
    );
    rig.cleanup().await;
}

#[tokio::test]
async fn a_consumer_whose_queue_was_deleted_declares_it_again_and_goes_on() {
    let handler = Arc::new(Scripted::default());
    let rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_before_delete").await;
    eventually(Duration::from_secs(10), "the first event", || async {
        handler
            .seen
            .lock()
            .unwrap()
            .contains_key("evt_before_delete")
            .then_some(())
    })
    .await;

    let channel = rig.broker.open_channel().await.unwrap();
    channel
        .queue_delete(
            rig.topology.fulfillment_queue().as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    // Publishing confirms only once the queue is declared and bound again, which is the
    // consumer's doing; until then the mandatory publish comes back unroutable.
    eventually(
        Duration::from_secs(20),
        "the queue to be declared and bound again",
        || async {
            rig.broker
                .publisher()
                .publish(OutgoingMessage {
                    exchange: &rig.topology.events_exchange(),
                    routing_key: "customer.updated",
                    body: br#"{"id":"evt"}"#,
                    message_id: "evt_after_delete",
                    kind: "customer.updated",
                    headers: None,
                })
                .await
                .ok()
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the event after the queue came back",
        || async {
            handler
                .seen
                .lock()
                .unwrap()
                .contains_key("evt_after_delete")
                .then_some(())
        },
    )
    .await;
    rig.cleanup().await;
}

/// Done at once, except the message named `slow`, which waits until `release`; counts what it
/// finished.
#[derive(Default)]
struct Gated {
    slow: String,
    release: tokio::sync::Notify,
    finished: std::sync::atomic::AtomicUsize,
    seen: Mutex<Vec<String>>,
}

impl MessageHandler for Gated {
    async fn handle(&self, message: Incoming) -> Outcome {
        self.seen.lock().unwrap().push(message.message_id.clone());
        if message.message_id == self.slow {
            self.release.notified().await;
        } else {
            // Finish out of order: each message yields a number of times of its own.
            let spins = message.message_id.bytes().map(usize::from).sum::<usize>() % 7;
            for _ in 0..spins {
                tokio::task::yield_now().await;
            }
        }
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Outcome::Done
    }
}

#[tokio::test]
async fn a_message_still_being_handled_is_never_acked_with_the_later_ones_done_before_it() {
    let handler = Arc::new(Gated {
        slow: "evt_slow".into(),
        ..Default::default()
    });
    // Prefetch 8 for 4 handlers: up to 4 done messages may wait for the slow one.
    let rig = Rig::start_with(handler.clone(), 8, 4).await;
    rig.publish_event("evt_slow").await;
    for n in 0..12 {
        rig.publish_event(&format!("evt_fast_{n}")).await;
    }
    eventually(
        Duration::from_secs(20),
        "every message but the slow one handled",
        || async {
            (handler.finished.load(std::sync::atomic::Ordering::SeqCst) == 12).then_some(())
        },
    )
    .await;
    // The process "dies" while the slow message is still being handled.
    let left = rig.close_connection_and_drain_queue().await;
    handler.release.notify_one();
    assert!(
        left.contains(&"evt_slow".to_owned()),
        "the message being handled went back to the queue: {left:?}"
    );
    assert!(
        left.iter()
            .all(|id| id == "evt_slow" || id.starts_with("evt_fast_")),
        "{left:?}"
    );
    rig.cleanup().await;
}

#[tokio::test]
async fn messages_done_out_of_order_are_all_acked_and_none_comes_back() {
    let handler = Arc::new(Gated {
        slow: "none".into(),
        ..Default::default()
    });
    let mut rig = Rig::start_with(handler.clone(), 16, 4).await;
    let ids: Vec<String> = (0..40).map(|n| format!("evt_order_{n}")).collect();
    for id in &ids {
        rig.publish_event(id).await;
    }
    eventually(Duration::from_secs(20), "all 40 handled", || async {
        (handler.finished.load(std::sync::atomic::Ordering::SeqCst) == 40).then_some(())
    })
    .await;
    // A worker told to stop: it waits for its handlers, sends every ack still waiting, and only
    // then closes its channel.
    rig.consumer.cancel();
    (&mut rig.consuming).await.unwrap();
    let left = rig.close_connection_and_drain_queue().await;
    assert!(left.is_empty(), "every ack was sent: {left:?}");
    let mut seen = handler.seen.lock().unwrap().clone();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "each message handled once");
    rig.cleanup().await;
}

/// Panics on a message's first attempt (a bug in a handler), then handles it.
#[derive(Default)]
struct PanicsOnce {
    attempts: Mutex<Vec<u32>>,
}

impl MessageHandler for PanicsOnce {
    async fn handle(&self, message: Incoming) -> Outcome {
        self.attempts.lock().unwrap().push(message.attempt);
        if message.attempt == 0 {
            panic!("a bug in a handler");
        }
        Outcome::Done
    }
}

#[tokio::test]
async fn a_message_whose_handler_panics_is_retried_later_not_lost() {
    let handler = Arc::new(PanicsOnce::default());
    let mut rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_panics").await;
    eventually(
        Duration::from_secs(10),
        "the retry after the panic",
        || async { (handler.attempts.lock().unwrap().len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(*handler.attempts.lock().unwrap(), vec![0, 1]);
    assert!(rig.dead_letters().await.is_empty());
    rig.consumer.cancel();
    (&mut rig.consuming).await.unwrap();
    let left = rig.close_connection_and_drain_queue().await;
    assert!(left.is_empty(), "acked after the retry: {left:?}");
    rig.cleanup().await;
}

/// Holds the first delivery of `evt_held` until released; every delivery is counted by id.
#[derive(Default)]
struct HoldsTheFirst {
    release: tokio::sync::Notify,
    held: std::sync::atomic::AtomicBool,
    handled: Mutex<HashMap<String, u32>>,
}

impl MessageHandler for HoldsTheFirst {
    async fn handle(&self, message: Incoming) -> Outcome {
        let first_hold = message.message_id == "evt_held"
            && !self.held.swap(true, std::sync::atomic::Ordering::SeqCst);
        if first_hold {
            self.release.notified().await;
        }
        *self
            .handled
            .lock()
            .unwrap()
            .entry(message.message_id)
            .or_default() += 1;
        Outcome::Done
    }
}

/// Closes the named connection from RabbitMQ's side, as a node that drops its clients does.
fn close_connection_from_the_broker(name: &str) {
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--no-table-headers",
            "-q",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl lists the local broker's connections");
    let listing = String::from_utf8_lossy(&listed.stdout);
    let pid = listing
        .lines()
        .find_map(|line| {
            // The client-provided name is among the connection's client properties.
            let (pid, properties) = line.split_once('\t')?;
            properties
                .contains(&format!("\"{name}\""))
                .then(|| pid.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{listing}"));
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "closed by the test"])
        .output()
        .unwrap();
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
}

#[tokio::test]
async fn a_consumer_whose_connection_the_broker_closes_mid_delivery_consumes_again_and_loses_nothing(
) {
    let handler = Arc::new(HoldsTheFirst::default());
    let rig = Rig::start(handler.clone()).await;
    rig.publish_event("evt_held").await;
    eventually(
        Duration::from_secs(10),
        "evt_held in its handler",
        || async {
            handler
                .held
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        },
    )
    .await;

    // RabbitMQ drops the connection while evt_held is being handled.
    close_connection_from_the_broker(&rig.broker.config().connection_name);
    eventually(Duration::from_secs(20), "a new connection", || async {
        (rig.broker.connections_established() >= 2 && rig.broker.is_ready()).then_some(())
    })
    .await;
    // The handler finishes; its ack has no channel left, so RabbitMQ delivers evt_held again.
    handler.release.notify_one();
    rig.publish_event("evt_after").await;

    let handled = eventually(
        Duration::from_secs(30),
        "evt_held again and evt_after, on the new connection",
        || async {
            let handled = handler.handled.lock().unwrap().clone();
            (handled.get("evt_held") >= Some(&2) && handled.get("evt_after") == Some(&1))
                .then_some(handled)
        },
    )
    .await;
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert!(rig.dead_letters().await.is_empty());
    let left = rig.close_connection_and_drain_queue().await;
    assert!(
        left.is_empty(),
        "every message acked on the new connection: {left:?}"
    );
    rig.cleanup().await;
}
