//! `kassa-bench ingress`: signed webhooks through a separate `kassa ingress` process against two
//! floors in the same run, same payloads, same concurrency, same broker: raw lapin
//! publish-with-confirms (no HTTP at all) and a minimal HTTP → AMQP bridge process
//! ([`crate::bridge`]: the same HTTP hop and publisher settings, none of Kassa's work). The bridge
//! and `kassa ingress` are measured in several rounds of alternating order, and Kassa ÷ bridge is
//! the median round's: one phase lasts seconds on a shared machine, so one pair says little. Then
//! two `kassa ingress` processes sharing the load, to show how throughput grows with processes.

use crate::procfs::{cpu_seconds, peak_rss_kib, rabbitmq_pid, rabbitmq_quorum_wal, MachineTicks};
use crate::report::{write_report, Phase};
use crate::scratch::{self, BrokerArgs};
use anyhow::{bail, Context};
use clap::Args;
use futures_util::future::join_all;
use kassa_broker::Topology;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Confirmation, Connection};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// `kassa-bench ingress`.
#[derive(Args)]
pub struct IngressBenchArgs {
    /// Messages per measured phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Requests (or publishes) in flight at once, the same for both sides.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds of one saturated bridge phase and one saturated `kassa ingress` phase, in
    /// alternating order; Kassa ÷ bridge is the median round's. RabbitMQ's cost per message moves
    /// between phases (a third and more within one run), so a median of few rounds moves too.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Stripe's fixtures, whose objects become the event payloads.
    #[arg(long, default_value = "../shared/stripe/fixtures3.json")]
    fixtures: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/ingress.json")]
    output: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
}

const BENCH_SECRET: &str = "whsec_kassa_bench";

/// One event body, split around its id so each request gets a fresh id cheaply.
struct Payload {
    kind: String,
    before_id: String,
    after_id: String,
}

impl Payload {
    fn body(&self, id: &str) -> Vec<u8> {
        format!("{}{id}{}", self.before_id, self.after_id).into_bytes()
    }
}

/// Wraps real Stripe objects from fixtures3.json into event envelopes of the types Kassa handles.
fn load_payloads(path: &PathBuf) -> anyhow::Result<Vec<Payload>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading Stripe fixtures from {} (set --fixtures)",
            path.display()
        )
    })?;
    let fixtures: Value = serde_json::from_str(&text).context("parsing the fixtures")?;
    let resources = &fixtures["resources"];
    let template = resources["event"].clone();
    let mut payloads = Vec::new();
    for (resource, kind) in [
        ("checkout.session", "checkout.session.completed"),
        ("setup_intent", "setup_intent.succeeded"),
        ("payment_intent", "payment_intent.succeeded"),
        ("payment_method", "payment_method.attached"),
        ("customer", "customer.updated"),
        ("charge", "charge.succeeded"),
        ("refund", "refund.created"),
    ] {
        let object = &resources[resource];
        if object.is_null() {
            bail!("fixtures have no {resource}");
        }
        let mut event = template.clone();
        event["id"] = json!("__KASSA_EVENT_ID__");
        event["type"] = json!(kind);
        event["api_version"] = json!("2025-12-15.clover");
        event["data"] = json!({"object": object});
        let text = serde_json::to_string(&event)?;
        let (before, after) = text
            .split_once("__KASSA_EVENT_ID__")
            .context("placing the event id")?;
        payloads.push(Payload {
            kind: kind.to_owned(),
            before_id: before.to_owned(),
            after_id: after.to_owned(),
        });
    }
    Ok(payloads)
}

/// Runs the benchmark: the raw lapin baseline, then a `kassa ingress` process, same payloads,
/// same concurrency, same broker, each phase from an empty queue.
pub async fn run(args: IngressBenchArgs, kassa: &Path) -> anyhow::Result<()> {
    let payloads = Arc::new(load_payloads(&args.fixtures)?);
    let topology = scratch::topology("bench");
    let run_id = format!("{:08x}", rand::random::<u32>());
    println!(
        "kassa-bench ingress: {} events per phase, concurrency {}, {} confirm channels, topology prefix {}",
        args.events, args.concurrency, args.broker.publish_channels(), topology.prefix()
    );
    let connection = kassa_broker::connection::connect_first(&args.broker.amqp_url)
        .await
        .context("connecting to RabbitMQ (KASSA_AMQP_URL)")?;
    topology.declare(&connection).await?;
    let setup = connection.create_channel().await?;
    let measured = async {
        let baseline = raw_lapin(&args, &connection, &topology, &payloads, &run_id).await?;
        let ingress = through_kassa(&args, kassa, &setup, &topology, &payloads, &run_id).await?;
        anyhow::Ok((baseline, ingress))
    }
    .await;
    for queue in topology.queues() {
        let _ = setup
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in topology.exchanges() {
        let _ = setup
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "bench done".into()).await;
    let (baseline, ingress) = measured?;
    report(&args, &baseline, &ingress)?;
    if !ingress.clean_exit {
        bail!("the ingress did not exit cleanly on SIGTERM");
    }
    Ok(())
}

/// The baseline's figures: raw lapin publishes with confirms.
struct Baseline {
    phase: Phase,
    /// CPU µs per message of this process (the publisher) and of RabbitMQ.
    publisher_cpu_us: f64,
    rabbit_cpu_us: f64,
}

/// One round: a saturated phase of the bridge and one of `kassa ingress`, back to back.
struct Round {
    kassa: Phase,
    /// CPU µs per webhook: the ingress, this process (HTTP client, signing), RabbitMQ.
    kassa_cpu_us: [f64; 3],
    bridge: Phase,
    /// CPU µs per message: the bridge, the load generator, RabbitMQ.
    bridge_cpu_us: [f64; 3],
    /// The share of the machine's CPU time the hypervisor took during each phase (0–1); `None`
    /// where `/proc/stat` could not be read.
    kassa_stolen: Option<f64>,
    bridge_stolen: Option<f64>,
}

/// A round whose phases lost at least this share of the machine's CPU time to the hypervisor
/// is "stolen from": the two sides did not have the same machine.
const STOLEN_ROUND: f64 = 0.01;

impl Round {
    fn ratio(&self) -> f64 {
        self.kassa.per_second / self.bridge.per_second
    }

    /// Whether the hypervisor took at least [`STOLEN_ROUND`] in either phase; `None` when a
    /// phase's share is unknown and no known share reaches it.
    fn stolen_from(&self) -> Option<bool> {
        match (self.kassa_stolen, self.bridge_stolen) {
            (None, None) => None,
            (kassa, bridge) => {
                let most = kassa.unwrap_or(0.0).max(bridge.unwrap_or(0.0));
                if most >= STOLEN_ROUND {
                    Some(true)
                } else if kassa.is_none() || bridge.is_none() {
                    None
                } else {
                    Some(false)
                }
            }
        }
    }
}

/// The figures of the `kassa ingress` process.
struct IngressFigures {
    /// Every round, in the order run.
    rounds: Vec<Round>,
    /// Index in `rounds` of the round with the median Kassa ÷ bridge.
    median: usize,
    half_rate: f64,
    paced: Phase,
    /// The share of the machine's CPU the hypervisor took during the half-rate phase.
    half_rate_stolen: Option<f64>,
    /// How many times RabbitMQ's quorum write-ahead log rolled over during the half-rate phase
    /// ([`rabbitmq_quorum_wal`]); `None` where the node's files cannot be read.
    half_rate_wal_rollovers: Option<u64>,
    peak_rss_mib: f64,
    clean_exit: bool,
    /// Two `kassa ingress` processes sharing the load, and their CPU µs per message together.
    two_processes: Phase,
    two_processes_cpu_us: f64,
}

impl IngressFigures {
    fn median_round(&self) -> &Round {
        &self.rounds[self.median]
    }
}

/// `share` as a percentage, or "unknown".
fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "unknown".into(), |s| format!("{:.1} %", s * 100.0))
}

/// The median of `values` (the mean of the middle two for an even count); `None` for none.
fn median_value(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The index of the median of `values` (the lower one of the middle two for an even count).
fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[(values.len().saturating_sub(1)) / 2]
}

/// CPU µs per message between two readings of a process's CPU seconds.
fn cpu_us_per_message(before: Option<f64>, after: Option<f64>, messages: usize) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => (a - b) / messages as f64 * 1e6,
        _ => f64::NAN,
    }
}

/// (a) Baseline: raw lapin, publish with confirms, same payloads, same concurrency.
async fn raw_lapin(
    args: &IngressBenchArgs,
    connection: &Connection,
    topology: &Topology,
    payloads: &Arc<Vec<Payload>>,
    run_id: &str,
) -> anyhow::Result<Baseline> {
    let mut lapin_channels = Vec::new();
    for _ in 0..args.broker.publish_channels() {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        lapin_channels.push(channel);
    }
    let lapin_channels = Arc::new(lapin_channels);
    let exchange = Arc::new(topology.events_exchange());
    let rabbit = rabbitmq_pid();
    let cpu_before = (
        cpu_seconds(std::process::id()),
        rabbit.and_then(cpu_seconds),
    );
    let publish = {
        let (payloads, channels, exchange, run_id) = (
            payloads.clone(),
            lapin_channels.clone(),
            exchange.clone(),
            run_id.to_owned(),
        );
        Arc::new(move |i: usize| {
            let payload = &payloads[i % payloads.len()];
            let id = format!("evt_raw_{run_id}_{i}");
            let body = payload.body(&id);
            let kind = payload.kind.clone();
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into())
                .with_type(kind.as_str().into());
            let (channel, exchange) = (channels[i % channels.len()].clone(), exchange.clone());
            async move {
                let t = Instant::now();
                let options = BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                };
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        kind.as_str().into(),
                        options,
                        &body,
                        properties,
                    )
                    .await?
                    .await?;
                if !matches!(confirm, Confirmation::Ack(None)) {
                    bail!("raw publish not confirmed: {confirm:?}");
                }
                Ok(t.elapsed())
            }
        })
    };
    let phase = closed_loop(publish, 0, args.events, args.concurrency).await?;
    let cpu_after = (
        cpu_seconds(std::process::id()),
        rabbit.and_then(cpu_seconds),
    );
    println!(
        "  raw lapin publish+confirm: {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms",
        phase.per_second, phase.p50_ms, phase.p99_ms
    );
    Ok(Baseline {
        phase,
        publisher_cpu_us: cpu_us_per_message(cpu_before.0, cpu_after.0, args.events),
        rabbit_cpu_us: cpu_us_per_message(cpu_before.1, cpu_after.1, args.events),
    })
}

/// A server process the load generator sends webhooks to.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    base: String,
}

impl Server {
    /// Sends SIGTERM and waits up to 10 s: whether it exited with status 0.
    async fn terminate(mut self) -> anyhow::Result<bool> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .context("stopping a server process")?;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(matches!(status, Ok(Ok(s)) if s.success()))
    }
}

/// Starts a `kassa ingress` process on a free port.
fn spawn_kassa(
    args: &IngressBenchArgs,
    kassa: &Path,
    topology: &Topology,
) -> anyhow::Result<Server> {
    let port = scratch::free_port()?;
    let child = tokio::process::Command::new(kassa)
        .arg("ingress")
        .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
        // Several processes on one machine: each its own metrics port.
        .env("KASSA_METRICS_LISTEN", "127.0.0.1:0")
        .env("KASSA_AMQP_URL", &args.broker.amqp_url)
        .env("KASSA_AMQP_PREFIX", topology.prefix())
        .env(
            "KASSA_PUBLISH_CHANNELS",
            args.broker.publish_channels().to_string(),
        )
        .env("KASSA_STRIPE_WEBHOOK_SECRETS", BENCH_SECRET)
        .env("RUST_LOG", "error")
        .env_remove("KASSA_STRIPE_API_KEY")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `kassa ingress`")?;
    let pid = child.id().context("reading the ingress's pid")?;
    Ok(Server {
        child,
        pid,
        base: format!("http://127.0.0.1:{port}"),
    })
}

/// Starts the minimal HTTP → AMQP bridge (this executable's `bridge` subcommand) on a free port.
fn spawn_bridge(args: &IngressBenchArgs, topology: &Topology) -> anyhow::Result<Server> {
    let port = scratch::free_port()?;
    let exe = std::env::current_exe().context("locating kassa-bench for the bridge")?;
    let child = tokio::process::Command::new(exe)
        .arg("bridge")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--exchange")
        .arg(topology.events_exchange())
        .arg("--channels")
        .arg(args.broker.publish_channels().to_string())
        .env("KASSA_AMQP_URL", &args.broker.amqp_url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the bridge")?;
    let pid = child.id().context("reading the bridge's pid")?;
    Ok(Server {
        child,
        pid,
        base: format!("http://127.0.0.1:{port}"),
    })
}

/// A saturated phase against `servers` (requests spread evenly): its figures and CPU µs per
/// message of the servers together, this process (HTTP client, signing) and RabbitMQ.
async fn saturate(
    args: &IngressBenchArgs,
    servers: &[&Server],
    setup: &lapin::Channel,
    topology: &Topology,
    payloads: &Arc<Vec<Payload>>,
    run_id: &str,
    offset: usize,
) -> anyhow::Result<(Phase, [f64; 3], Option<f64>)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    for base in &bases {
        wait_ready(&http, base).await?;
    }
    let send = signed_webhooks(http, &bases, payloads, run_id);
    // Warm-up (connections, allocator) is not measured.
    closed_loop(
        send.clone(),
        offset,
        1_000.min(args.events),
        args.concurrency,
    )
    .await?;
    // Every phase starts from an empty queue: a quorum queue holding earlier messages costs
    // RabbitMQ more per message, which would bias the comparison against later phases.
    purge(setup, topology).await?;
    let rabbit = rabbitmq_pid();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let cpu = || {
        (
            pids.iter().map(|&p| cpu_seconds(p)).sum::<Option<f64>>(),
            cpu_seconds(std::process::id()),
            rabbit.and_then(cpu_seconds),
        )
    };
    let (ticks_before, before) = (MachineTicks::now(), cpu());
    let phase = closed_loop(send, offset + 100_000_000, args.events, args.concurrency).await?;
    let (after, ticks_after) = (cpu(), MachineTicks::now());
    let stolen = match (ticks_before, ticks_after) {
        (Some(before), Some(after)) => Some(after.stolen_since(&before)),
        _ => None,
    };
    purge(setup, topology).await?;
    Ok((
        phase,
        [
            cpu_us_per_message(before.0, after.0, args.events),
            cpu_us_per_message(before.1, after.1, args.events),
            cpu_us_per_message(before.2, after.2, args.events),
        ],
        stolen,
    ))
}

/// (b) Kassa and (c) the bridge: a separate `kassa ingress` process and the bridge process, both
/// started first, then `--rounds` rounds of one saturated phase each, in alternating order (so
/// that whatever drifts during the run — RabbitMQ's files, the machine's other load — favours
/// neither); then `kassa ingress` at half its median saturated rate (the median of its rounds'
/// rates); (d) two `kassa ingress` processes at saturation.
async fn through_kassa(
    args: &IngressBenchArgs,
    kassa: &Path,
    setup: &lapin::Channel,
    topology: &Topology,
    payloads: &Arc<Vec<Payload>>,
    run_id: &str,
) -> anyhow::Result<IngressFigures> {
    let server = spawn_kassa(args, kassa, topology)?;
    let bridge = spawn_bridge(args, topology)?;
    let (kassa_servers, bridge_servers) = ([&server], [&bridge]);
    let mut rounds = Vec::new();
    let mut failed = None;
    for round in 0..args.rounds.max(1) {
        // Event ids stay unique over the whole run: each phase gets its own range.
        let offset = |side: usize| 1_000_000_000 + (2 * round + side) * 200_000_000;
        let kassa_phase = |side| {
            saturate(
                args,
                &kassa_servers,
                setup,
                topology,
                payloads,
                run_id,
                offset(side),
            )
        };
        let bridge_phase = |side| {
            saturate(
                args,
                &bridge_servers,
                setup,
                topology,
                payloads,
                run_id,
                offset(side),
            )
        };
        let measured = if round % 2 == 0 {
            match bridge_phase(0).await {
                Ok(b) => kassa_phase(1).await.map(|k| (k, b)),
                Err(error) => Err(error),
            }
        } else {
            match kassa_phase(0).await {
                Ok(k) => bridge_phase(1).await.map(|b| (k, b)),
                Err(error) => Err(error),
            }
        };
        match measured {
            Ok(((kassa, kassa_cpu_us, kassa_stolen), (bridge, bridge_cpu_us, bridge_stolen))) => {
                let round = Round {
                    kassa,
                    kassa_cpu_us,
                    bridge,
                    bridge_cpu_us,
                    kassa_stolen,
                    bridge_stolen,
                };
                println!(
                    "  round {}: bridge {:>8.0}/s, kassa ingress {:>8.0}/s, Kassa ÷ bridge {:.2}; CPU µs per message, server: {:.0} / {:.0}; stolen by the hypervisor: {} / {}",
                    rounds.len() + 1,
                    round.bridge.per_second,
                    round.kassa.per_second,
                    round.ratio(),
                    round.bridge_cpu_us[0],
                    round.kassa_cpu_us[0],
                    percent(round.bridge_stolen),
                    percent(round.kassa_stolen),
                );
                rounds.push(round);
            }
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    let _ = bridge.terminate().await;
    if let Some(error) = failed {
        let _ = server.terminate().await;
        return Err(error);
    }
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let median = median_index(&ratios);
    let median_kassa_rate = {
        let rates: Vec<f64> = rounds.iter().map(|r| r.kassa.per_second).collect();
        rates[median_index(&rates)]
    };

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let send = signed_webhooks(http, std::slice::from_ref(&server.base), payloads, run_id);
    let half_rate = (median_kassa_rate / 2.0).max(1.0);
    let paced_count = ((half_rate * 5.0) as usize).clamp(500, args.events);
    let rabbit = rabbitmq_pid();
    let (ticks_before, wal_before) = (MachineTicks::now(), rabbit.and_then(rabbitmq_quorum_wal));
    let paced = open_loop(send, 200_000_000, paced_count, half_rate).await?;
    let half_rate_stolen = ticks_before
        .zip(MachineTicks::now())
        .map(|(before, after)| after.stolen_since(&before));
    let half_rate_wal_rollovers = wal_before
        .zip(rabbit.and_then(rabbitmq_quorum_wal))
        .map(|(before, after)| after.saturating_sub(before));
    purge(setup, topology).await?;
    println!(
        "  kassa ingress at {:.0}/s:    {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms; stolen by the hypervisor: {}; RabbitMQ WAL roll-overs: {}",
        half_rate,
        paced.per_second,
        paced.p50_ms,
        paced.p99_ms,
        percent(half_rate_stolen),
        half_rate_wal_rollovers.map_or_else(|| "unknown".into(), |n| n.to_string())
    );
    let peak_rss_kib = peak_rss_kib(server.pid).unwrap_or(0);
    let clean_exit = server.terminate().await?;

    let (first, second) = (
        spawn_kassa(args, kassa, topology)?,
        spawn_kassa(args, kassa, topology)?,
    );
    let two = saturate(
        args,
        &[&first, &second],
        setup,
        topology,
        payloads,
        run_id,
        600_000_000,
    )
    .await;
    let _ = first.terminate().await;
    let _ = second.terminate().await;
    let (two_phase, [two_cpu_us, _, _], _) = two?;
    println!(
        "  two kassa ingress processes: {:>7.0}/s  p50 {:.2} ms  p99 {:.2} ms",
        two_phase.per_second, two_phase.p50_ms, two_phase.p99_ms
    );
    Ok(IngressFigures {
        rounds,
        median,
        half_rate,
        paced,
        half_rate_stolen,
        half_rate_wal_rollovers,
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        clean_exit,
        two_processes: two_phase,
        two_processes_cpu_us: two_cpu_us,
    })
}

/// Request `i`: a fresh event id, signed now, POSTed to the ingress; its latency.
fn signed_webhooks(
    http: reqwest::Client,
    bases: &[String],
    payloads: &Arc<Vec<Payload>>,
    run_id: &str,
) -> Arc<impl Fn(usize) -> SendFuture + Send + Sync + 'static> {
    let urls: Vec<String> = bases
        .iter()
        .map(|b| format!("{b}/webhooks/stripe"))
        .collect();
    let (payloads, run_id) = (payloads.clone(), run_id.to_owned());
    Arc::new(move |i: usize| -> SendFuture {
        let url = &urls[i % urls.len()];
        let payload = &payloads[i % payloads.len()];
        let body = payload.body(&format!("evt_in_{run_id}_{i}"));
        let header = kassa_stripe::webhook::sign(BENCH_SECRET, unix_now(), &body);
        let request = http
            .post(url)
            .header("Stripe-Signature", header)
            .header("Content-Type", "application/json")
            .body(body);
        Box::pin(async move {
            let t = Instant::now();
            let response = request.send().await.context("sending a webhook")?;
            if response.status() != reqwest::StatusCode::OK {
                bail!("ingress answered {}", response.status());
            }
            Ok(t.elapsed())
        })
    })
}

/// One request's latency, or why it failed.
type SendFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Duration>> + Send>>;

/// Prints the table and writes the JSON report.
fn report(
    args: &IngressBenchArgs,
    baseline: &Baseline,
    ingress: &IngressFigures,
) -> anyhow::Result<()> {
    let round = ingress.median_round();
    let (saturated, paced, bridge) = (&round.kassa, &ingress.paced, &round.bridge);
    let bridge_ratio = round.ratio();
    let ratios: Vec<f64> = ingress.rounds.iter().map(Round::ratio).collect();
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let met = ratios.iter().filter(|&&r| r >= 0.9).count();
    let unstolen: Vec<f64> = ingress
        .rounds
        .iter()
        .filter(|r| r.stolen_from() == Some(false))
        .map(Round::ratio)
        .collect();
    let unknown = ingress
        .rounds
        .iter()
        .filter(|r| r.stolen_from().is_none())
        .count();
    let unstolen_median = median_value(&unstolen);
    let ratio = saturated.per_second / baseline.phase.per_second;
    let growth = ingress.two_processes.per_second / saturated.per_second;
    println!();
    println!(
        "Kassa ÷ bridge over {} rounds: {} (median {bridge_ratio:.2}, lowest {lowest:.2}, highest {highest:.2}; ≥ 0.9 in {met} of {}); the table shows the median round",
        ratios.len(),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" / "),
        ratios.len(),
    );
    let stolen_rounds = ratios.len() - unstolen.len() - unknown;
    match unstolen_median {
        _ if unknown > 0 => println!(
            "the hypervisor's share of the machine's CPU is unknown for {unknown} of {} rounds (/proc/stat could not be read)",
            ratios.len()
        ),
        Some(median) if stolen_rounds > 0 => println!(
            "the hypervisor took ≥ {:.0} % of the machine's CPU in a phase of {stolen_rounds} of {} rounds; median of the other {}: {median:.2}",
            STOLEN_ROUND * 100.0,
            ratios.len(),
            unstolen.len()
        ),
        Some(_) => println!(
            "the hypervisor took < {:.0} % of the machine's CPU in every phase",
            STOLEN_ROUND * 100.0
        ),
        None => println!(
            "the hypervisor took ≥ {:.0} % of the machine's CPU in a phase of every round: these rates do not compare",
            STOLEN_ROUND * 100.0
        ),
    }
    println!();
    println!("| measure | raw lapin | HTTP→AMQP bridge | kassa ingress | ratio / goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| messages/s, concurrency {} | {:.0} | {:.0} | {:.0} | **Kassa ÷ bridge {bridge_ratio:.2}** (median of {} rounds; goal ≥ 0.9); Kassa ÷ raw lapin {ratio:.2} |",
        args.concurrency, baseline.phase.per_second, bridge.per_second, saturated.per_second, ratios.len()
    );
    println!(
        "| p50 / p99 at saturation (ms) | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | |",
        baseline.phase.p50_ms,
        baseline.phase.p99_ms,
        bridge.p50_ms,
        bridge.p99_ms,
        saturated.p50_ms,
        saturated.p99_ms
    );
    println!(
        "| p50 / p99 at half the median saturated kassa ingress rate, {:.0}/s (ms); stolen; RabbitMQ WAL roll-overs | | | {:.2} / {:.2}; {}; {} | p99 goal < 10 ms |",
        ingress.half_rate,
        paced.p50_ms,
        paced.p99_ms,
        percent(ingress.half_rate_stolen),
        ingress
            .half_rate_wal_rollovers
            .map_or_else(|| "unknown".into(), |n| n.to_string())
    );
    println!(
        "| two kassa ingress processes, messages/s | | | {:.0} | {growth:.2} × one process |",
        ingress.two_processes.per_second
    );
    println!(
        "| ingress peak RSS (MiB) | | | {:.1} | goal < 64 |",
        ingress.peak_rss_mib
    );
    println!(
        "| ingress exit on SIGTERM after the load | | | {} | |",
        if ingress.clean_exit {
            "0 (clean)"
        } else {
            "NOT clean"
        }
    );
    println!();
    println!(
        "CPU µs per message at saturation, median round (2 cores shared by all): server / load generator / RabbitMQ — \
         kassa ingress {:.0} / {:.0} / {:.0}; bridge {:.0} / {:.0} / {:.0}; raw lapin publisher {:.0} / — / {:.0}; \
         two kassa ingress processes together {:.0}",
        round.kassa_cpu_us[0],
        round.kassa_cpu_us[1],
        round.kassa_cpu_us[2],
        round.bridge_cpu_us[0],
        round.bridge_cpu_us[1],
        round.bridge_cpu_us[2],
        baseline.publisher_cpu_us,
        baseline.rabbit_cpu_us,
        ingress.two_processes_cpu_us
    );
    let rounds: Vec<Value> = ingress
        .rounds
        .iter()
        .map(|r| {
            json!({
                "bridge": r.bridge,
                "kassa_ingress": r.kassa,
                "ratio_to_bridge": r.ratio(),
                "cpu_us_per_message_bridge": {"bridge": r.bridge_cpu_us[0], "load_generator": r.bridge_cpu_us[1], "rabbitmq": r.bridge_cpu_us[2]},
                "cpu_us_per_webhook_ingress": {"ingress": r.kassa_cpu_us[0], "load_generator": r.kassa_cpu_us[1], "rabbitmq": r.kassa_cpu_us[2]},
                "stolen_share": {"bridge": r.bridge_stolen, "kassa_ingress": r.kassa_stolen},
            })
        })
        .collect();
    let report = json!({
        "benchmark": "ingress",
        "events_per_phase": args.events,
        "concurrency": args.concurrency,
        "confirm_channels": args.broker.publish_channels(),
        "rounds": rounds,
        "median_round": ingress.median + 1,
        "ratio_to_bridge_per_round": ratios,
        "rounds_meeting_ratio_goal": met,
        "stolen_round_min_share": STOLEN_ROUND,
        "rounds_stolen_from": stolen_rounds,
        "rounds_stolen_share_unknown": unknown,
        "ratio_to_bridge_median_of_rounds_not_stolen_from": unstolen_median,
        "baseline_raw_lapin": baseline.phase,
        "baseline_http_amqp_bridge": bridge,
        "ingress_saturated": saturated,
        "ingress_half_rate": paced,
        "half_rate_per_second": ingress.half_rate,
        "half_rate_stolen_share": ingress.half_rate_stolen,
        "half_rate_rabbitmq_wal_rollovers": ingress.half_rate_wal_rollovers,
        "ingress_two_processes": ingress.two_processes,
        "two_processes_over_one": growth,
        "ratio_to_bridge": bridge_ratio,
        "ratio_to_raw_lapin": ratio,
        "ingress_peak_rss_mib": ingress.peak_rss_mib,
        "ingress_clean_exit": ingress.clean_exit,
        "cpu_us_per_webhook_at_saturation": {"ingress": round.kassa_cpu_us[0], "load_generator": round.kassa_cpu_us[1], "rabbitmq": round.kassa_cpu_us[2]},
        "cpu_us_per_message_bridge": {"bridge": round.bridge_cpu_us[0], "load_generator": round.bridge_cpu_us[1], "rabbitmq": round.bridge_cpu_us[2]},
        "cpu_us_per_message_two_ingress_processes": ingress.two_processes_cpu_us,
        "cpu_us_per_message_baseline": {"publisher": baseline.publisher_cpu_us, "rabbitmq": baseline.rabbit_cpu_us},
        "goals": {"ratio_to_bridge_min": 0.9, "p99_ms_at_half_rate_max": 10.0, "rss_mib_max": 64.0},
    });
    write_report(&args.output, &report)
}

async fn closed_loop<F, Fut>(
    send: Arc<F>,
    offset: usize,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks = (0..concurrency).map(|_| {
        let (next, send) = (next.clone(), send.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                latencies.push(send(offset + i).await?);
            }
        })
    });
    let results = join_all(tasks).await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    for result in results {
        latencies.extend(result??);
    }
    Ok(Phase::new(latencies, elapsed))
}

/// Sends `count` requests at a fixed `rate`, whatever the answers' latency (open loop).
async fn open_loop<F, Fut>(
    send: Arc<F>,
    offset: usize,
    count: usize,
    rate: f64,
) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(1024));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let request = send(offset + i);
        tasks.push(tokio::spawn(async move {
            let latency = request.await;
            drop(permit);
            latency
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok(Phase::new(latencies, started.elapsed()))
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the ingress was not ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn purge(channel: &lapin::Channel, topology: &Topology) -> anyhow::Result<()> {
    channel
        .queue_purge(
            topology.fulfillment_queue().as_str().into(),
            Default::default(),
        )
        .await
        .context("purging the bench queue between phases")?;
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{median_index, median_value, Round, STOLEN_ROUND};
    use crate::report::Phase;
    use std::time::Duration;

    fn round(kassa_stolen: Option<f64>, bridge_stolen: Option<f64>) -> Round {
        let phase = || Phase::new(vec![Duration::from_millis(1)], Duration::from_secs(1));
        Round {
            kassa: phase(),
            kassa_cpu_us: [0.0; 3],
            bridge: phase(),
            bridge_cpu_us: [0.0; 3],
            kassa_stolen,
            bridge_stolen,
        }
    }

    #[test]
    fn a_round_is_stolen_from_when_either_phase_lost_enough_and_unknown_when_unread() {
        let little = Some(STOLEN_ROUND / 2.0);
        let enough = Some(STOLEN_ROUND);
        assert_eq!(round(little, little).stolen_from(), Some(false));
        assert_eq!(round(little, enough).stolen_from(), Some(true));
        assert_eq!(round(enough, little).stolen_from(), Some(true));
        assert_eq!(round(enough, None).stolen_from(), Some(true));
        assert_eq!(round(little, None).stolen_from(), None);
        assert_eq!(round(None, None).stolen_from(), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(
            median_value(&[0.86, 0.81, 0.9, 0.7]),
            Some((0.81 + 0.86) / 2.0)
        );
        assert_eq!(median_value(&[0.9, 0.7, 0.8]), Some(0.8));
        assert_eq!(median_value(&[]), None);
    }

    #[test]
    fn the_median_round_is_the_middle_one_by_ratio_not_by_order() {
        assert_eq!(median_index(&[0.88, 0.62, 0.94, 0.87, 0.92]), 0);
        assert_eq!(median_index(&[1.14, 0.89, 0.88, 0.95, 0.86]), 1);
        // An even count takes the lower of the middle two: never the better-looking one.
        assert_eq!(median_index(&[0.9, 0.7, 0.8, 1.0]), 2);
        assert_eq!(median_index(&[0.5]), 0);
    }
}
