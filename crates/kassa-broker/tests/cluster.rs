//! kassa-broker on a real three-node RabbitMQ cluster (`scripts/rabbitmq-cluster`, started here
//! when it is not running and stopped again afterwards): the quorum queues have a replica on
//! every node, and when the Erlang VM of the node Kassa is connected to is SIGKILLed (by its
//! pid) in the middle of a stream of confirmed publishes and consumes, no confirmed message is
//! lost and each is processed once; then the node is started again and rejoins.
//!
//! Run alone: `cargo test -p kassa-broker --test cluster -- --nocapture` (prints the figures).

use kassa_broker::{
    run_consumer, Broker, BrokerConfig, ConsumerConfig, Incoming, MessageHandler, Outcome,
    OutgoingMessage, Topology, WorkQueue,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Confirmed messages published in the test; the node is killed after a third of them.
const MESSAGES: usize = 3000;
/// Publishers at once (webhook deliveries in flight at the ingress).
const PUBLISHERS: usize = 8;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rabbitmq-cluster")
}

/// Runs `scripts/rabbitmq-cluster ARGS…` and returns its standard output.
fn cluster(args: &[&str]) -> String {
    let output = Command::new(script())
        .args(args)
        .output()
        .expect("run scripts/rabbitmq-cluster");
    assert!(
        output.status.success(),
        "scripts/rabbitmq-cluster {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One line of `scripts/rabbitmq-cluster status`.
#[derive(Debug, Clone)]
struct Node {
    index: usize,
    name: String,
    state: String,
    pid: Option<i32>,
    url: String,
}

fn status() -> Vec<Node> {
    cluster(&["status"])
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let value = |key: &str| {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix(key))
                    .unwrap_or_default()
                    .to_owned()
            };
            Node {
                index: i + 1,
                name: fields[0].to_owned(),
                state: fields[1].to_owned(),
                pid: value("pid=").parse().ok(),
                url: value("amqp="),
            }
        })
        .collect()
}

/// Starts the cluster unless it runs already; stops it on drop if it was started here.
struct ClusterGuard {
    started_here: bool,
}

impl ClusterGuard {
    fn ensure() -> Self {
        let running = status().iter().all(|node| node.state == "running");
        if !running {
            let started = Instant::now();
            cluster(&["start"]);
            println!(
                "cluster started in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Self {
            started_here: !running,
        }
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new(script()).arg("stop").output();
        }
    }
}

/// Queue name → the nodes holding a replica, from `rabbitmqctl list_queues name members`.
fn queue_members() -> HashMap<String, Vec<String>> {
    cluster(&[
        "ctl",
        "1",
        "-q",
        "list_queues",
        "name",
        "members",
        "--no-table-headers",
    ])
    .lines()
    .filter_map(|line| {
        let (name, members) = line.split_once(char::is_whitespace)?;
        let members = members
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        Some((name.to_owned(), members))
    })
    .collect()
}

/// Records every delivery; "processes" a message id once, like the worker's inbox.
#[derive(Default)]
struct Recorder {
    deliveries: Mutex<HashMap<String, usize>>,
    processed: Mutex<Vec<String>>,
}

impl MessageHandler for Recorder {
    async fn handle(&self, message: Incoming) -> Outcome {
        let first = {
            let mut deliveries = self.deliveries.lock().unwrap();
            let count = deliveries.entry(message.message_id.clone()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            self.processed.lock().unwrap().push(message.message_id);
        }
        Outcome::Done
    }
}

/// What one publish of one message id went through.
#[derive(Debug, Default)]
struct PublishLog {
    /// Ids whose publish was confirmed (each at most once here).
    confirmed: HashSet<String>,
    /// Failed attempts (answered 503 at the ingress; Stripe would re-send), by reason.
    failures: BTreeMap<&'static str, usize>,
    /// Instants of confirms, to find the gap around the kill.
    confirm_times: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmed_messages_survive_a_sigkill_of_the_connected_node() {
    let _cluster = ClusterGuard::ensure();
    let nodes = status();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let urls = nodes
        .iter()
        .map(|node| node.url.clone())
        .collect::<Vec<_>>()
        .join(",");

    let shutdown = CancellationToken::new();
    let topology = Topology::unique();
    let mut config = BrokerConfig::new(urls.clone());
    config.topology = topology.clone();
    config.confirm_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config.reconnect_backoff = (Duration::from_millis(50), Duration::from_secs(1));
    let broker = Broker::start(config, shutdown.clone());
    broker
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("connected to the cluster");

    // Every quorum queue of the topology has a replica on each of the three nodes.
    let members = queue_members();
    for queue in topology.queues() {
        let mut on = members
            .get(&queue)
            .unwrap_or_else(|| panic!("{queue} is not listed: {members:?}"))
            .clone();
        on.sort();
        let mut expected: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        expected.sort();
        assert_eq!(on, expected, "replicas of {queue}");
    }

    let recorder = Arc::new(Recorder::default());
    let consumer_shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        broker.clone(),
        ConsumerConfig {
            work: WorkQueue::Events,
            prefetch: 64,
            concurrency: 16,
            tag: "cluster-test".into(),
        },
        recorder.clone(),
        consumer_shutdown.clone(),
    ));

    // Publishers: each message is published until confirmed, as Stripe re-sends a webhook
    // answered 503. Ids are shared out so that PUBLISHERS publishes are in flight at once.
    let log = Arc::new(Mutex::new(PublishLog::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let exchange = topology.events_exchange();
    let publish_deadline = Instant::now() + Duration::from_secs(90);
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let (broker, log, next, exchange) =
            (broker.clone(), log.clone(), next.clone(), exchange.clone());
        publishers.push(tokio::spawn(async move {
            let publisher = broker.publisher();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= MESSAGES {
                    return;
                }
                let id = format!("evt_cluster_{i:05}");
                let body = format!(r#"{{"id":"{id}","object":"event","type":"test.cluster"}}"#);
                loop {
                    assert!(Instant::now() < publish_deadline, "{id} never confirmed");
                    let result = publisher
                        .publish(OutgoingMessage {
                            exchange: &exchange,
                            routing_key: "test.cluster",
                            body: body.as_bytes(),
                            message_id: &id,
                            kind: "test.cluster",
                            headers: None,
                        })
                        .await;
                    {
                        let mut log = log.lock().unwrap();
                        match result {
                            Ok(()) => {
                                log.confirmed.insert(id.clone());
                                log.confirm_times.push(Instant::now());
                                break;
                            }
                            Err(error) => {
                                *log.failures.entry(error.reason()).or_default() += 1;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // A third of the way in, SIGKILL the Erlang VM of the node this broker is connected to.
    let kill_deadline = Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().confirmed.len() < MESSAGES / 3 {
        assert!(Instant::now() < kill_deadline, "publishing is too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connected = broker.connected_address().expect("connected");
    let victim = nodes
        .iter()
        .find(|node| kassa_broker::connection::redact_url(&node.url) == connected)
        .unwrap_or_else(|| panic!("{connected} is none of {nodes:?}"))
        .clone();
    let pid = victim.pid.expect("the victim's VM pid");
    let confirmed_before = log.lock().unwrap().confirmed.len();
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the node's Erlang VM");

    // Kassa moves to another node by itself.
    let reconnect_deadline = Instant::now() + Duration::from_secs(30);
    let new_address = loop {
        match broker.connected_address() {
            Some(address) if address != connected => break address,
            _ => {
                assert!(
                    Instant::now() < reconnect_deadline,
                    "no reconnection to another node within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let reconnected_after = killed_at.elapsed();

    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.confirmed.len(), MESSAGES, "every message confirmed");

    // Every confirmed message reaches the consumer and is processed once.
    let consume_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let processed = recorder.processed.lock().unwrap().len();
        if processed >= MESSAGES {
            break;
        }
        assert!(
            Instant::now() < consume_deadline,
            "only {processed} of {MESSAGES} confirmed messages consumed after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let processed = recorder.processed.lock().unwrap().clone();
    let unique: HashSet<&String> = processed.iter().collect();
    assert_eq!(
        unique.len(),
        processed.len(),
        "a message was processed twice"
    );
    let missing: Vec<&String> = log
        .confirmed
        .iter()
        .filter(|id| !unique.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "confirmed but never delivered: {missing:?}"
    );
    let deliveries = recorder.deliveries.lock().unwrap().clone();
    let redelivered = deliveries.values().filter(|n| **n > 1).count();

    // The longest stretch without a confirm around the kill: what webhooks saw as 503s.
    let mut times = log.confirm_times.clone();
    times.sort();
    let gap = times
        .windows(2)
        .filter(|w| w[1] >= killed_at && w[0] <= killed_at + Duration::from_secs(30))
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "failover: killed {} (pid {pid}) after {confirmed_before} confirms; reconnected to {new_address} after {:.0} ms; \
         longest gap between confirms {:.0} ms; failed publish attempts {:?}; {} of {MESSAGES} ids delivered more than once, each processed once",
        victim.name,
        reconnected_after.as_secs_f64() * 1000.0,
        gap.as_secs_f64() * 1000.0,
        log.failures,
        redelivered,
    );

    consumer_shutdown.cancel();
    consumer.await.expect("consumer stops");

    // The node comes back and rejoins: three running nodes, every queue with its three replicas.
    let restarted = Instant::now();
    cluster(&["start"]);
    let rejoined = status();
    assert!(
        rejoined.iter().all(|node| node.state == "running"),
        "{rejoined:?}"
    );
    assert_ne!(
        rejoined[victim.index - 1].pid,
        Some(pid),
        "a new VM for {}",
        victim.name
    );
    let members = queue_members();
    for queue in topology.queues() {
        assert_eq!(
            members.get(&queue).map(Vec::len),
            Some(3),
            "replicas of {queue} after {} rejoined",
            victim.name
        );
    }
    println!(
        "{} restarted and rejoined in {:.1} s",
        victim.name,
        restarted.elapsed().as_secs_f64()
    );

    let _ = topology.delete_at(&urls).await;
    shutdown.cancel();
}
