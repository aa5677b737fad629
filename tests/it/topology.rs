//! Declaring the topology against what a broker already has, and connecting through a list of
//! broker addresses.

use crate::support::services;
use kassa_broker::connection::connect_first;
use kassa_broker::topology::QUORUM_GROUP_SIZE_ARGUMENT;
use kassa_broker::{Broker, BrokerConfig, BrokerError, OutgoingMessage, Topology};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Declares every queue of `topology` as a Kassa without `x-quorum-initial-group-size` did.
async fn declare_queues_without_group_size(url: &str, topology: &Topology) {
    let connection = connect_first(url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    for queue in topology.definitions().queues {
        let mut arguments = FieldTable::default();
        for (key, value) in queue.arguments {
            if key == QUORUM_GROUP_SIZE_ARGUMENT {
                continue;
            }
            let value = match value {
                kassa_broker::topology::QueueArgument::String(s) => {
                    AMQPValue::LongString(LongString::from(s.as_str()))
                }
                kassa_broker::topology::QueueArgument::Integer(i) => AMQPValue::LongLongInt(i),
            };
            arguments.insert(key.into(), value);
        }
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.name.as_str().into(), options, arguments)
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn queues_created_before_the_group_size_was_declared_are_kept() {
    let url = services::amqp_url().await;
    let topology = Topology::unique();
    declare_queues_without_group_size(&url, &topology).await;

    let shutdown = CancellationToken::new();
    let mut config = BrokerConfig::new(url.clone());
    config.topology = topology.clone();
    let broker = Broker::start(config, shutdown.clone());
    broker
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("the topology declares over queues created without a group size");
    broker
        .publisher()
        .publish(OutgoingMessage {
            exchange: &topology.events_exchange(),
            routing_key: "customer.updated",
            body: b"{}",
            message_id: "evt_group_size",
            kind: "customer.updated",
            headers: None,
        })
        .await
        .expect("the old queue still takes events");
    shutdown.cancel();
    topology.delete_at(&url).await.unwrap();
}

#[tokio::test]
async fn another_group_size_for_existing_queues_is_refused_by_name() {
    let url = services::amqp_url().await;
    let topology = Topology::unique();
    let connection = connect_first(&url).await.unwrap();
    topology.declare(&connection).await.unwrap();
    topology
        .declare(&connection)
        .await
        .expect("declaring twice changes nothing");

    let error = topology
        .clone()
        .with_quorum_group_size(5)
        .declare(&connection)
        .await
        .expect_err("RabbitMQ refuses another group size for an existing queue");
    assert!(
        matches!(&error, BrokerError::GroupSizeMismatch { size: 5, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("rabbitmq-queues"), "{error}");
    let _ = connection.close(200, "done".into()).await;
    topology.delete_at(&url).await.unwrap();
}

#[tokio::test]
async fn a_stopped_broker_has_closed_its_connection_before_it_says_so() {
    let url = services::amqp_url().await;
    let topology = Topology::unique();
    let shutdown = CancellationToken::new();
    let mut config = BrokerConfig::new(url.clone());
    config.topology = topology.clone();
    let broker = Broker::start(config, shutdown.clone());
    broker.wait_ready(Duration::from_secs(20)).await.unwrap();
    let channel = broker.open_channel().await.unwrap();
    assert!(channel.status().connected());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), broker.stopped())
            .await
            .is_err(),
        "a running broker is not stopped"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), broker.stopped())
        .await
        .expect("the broker stops within its close time-out once shut down");
    // RabbitMQ answered the connection's close: its channels are closed, not left on a socket
    // that the process's exit would drop.
    assert!(!channel.status().connected());
    assert!(!broker.is_ready());
    topology.delete_at(&url).await.unwrap();
}

#[tokio::test]
async fn a_node_that_does_not_answer_is_skipped() {
    let url = services::amqp_url().await;
    // Port 1 on loopback refuses connections at once: a node that is down.
    let dead = "amqp://guest:secret-password@127.0.0.1:1/%2f";
    let topology = Topology::unique();
    let shutdown = CancellationToken::new();
    let mut config = BrokerConfig::new(format!("{dead}, {url}"));
    config.topology = topology.clone();
    config.reconnect_backoff = (Duration::from_millis(20), Duration::from_millis(200));
    let broker = Broker::start(config, shutdown.clone());
    broker
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("connected through the node that answers");
    assert_eq!(
        broker.connected_address(),
        Some(kassa_broker::connection::redact_url(&url))
    );
    assert!(!format!("{broker:?}").contains("secret-password"));
    shutdown.cancel();
    topology.delete_at(&format!("{dead},{url}")).await.unwrap();
}
