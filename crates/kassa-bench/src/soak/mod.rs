//! `kassa bench soak`: the crash soak. Setup sessions and back-office charges go through the
//! Stripe simulator → a small load balancer → two `kassa ingress` processes → RabbitMQ → two
//! `kassa worker` processes, while a controller SIGKILLs a random worker every few seconds (and
//! starts it again), SIGKILLs an ingress once, and restarts RabbitMQ once; the simulator delivers
//! every webhook twice and out of order, answers some requests 500 and rate-limits in bursts (429).
//!
//! When everything has settled (every event the simulator sent is in the inbox, every charge is
//! final, the outbox is empty), "the day after" runs: a batch of charges whose creates Stripe
//! carries out but whose answers never come back (both workers SIGKILLed while they wait), jobs
//! that then end in the dead letters because Stripe cannot be asked about them, a day and an hour
//! passing on Stripe's clock (it forgets every Idempotency-Key), and every dead letter replayed as
//! `kassa dlq replay --all` does. Then the processes are stopped and the run is checked:
//! - every Stripe event is processed exactly once (one inbox row, processed; one customer and one
//!   card attach per completed session in Stripe's request log);
//! - every charge has exactly one succeeded PaymentIntent in Stripe (none for declining cards),
//!   over the whole run, the replays after the day included;
//! - no message is left in a work or retry queue, nothing is left unpublished in the outbox;
//! - the dead-letter queue holds exactly the injected permanent failures: signed live-mode
//!   events sent to this test-mode deployment, which Kassa must refuse (and nothing else).
//!
//! It prints a table, writes JSON, and exits nonzero if a check fails.

use crate::report::write_report;
use crate::scratch::BrokerArgs;
use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use kassa_broker::{Broker, Topology};
use kassa_store::{ChargeStatus, NewCharge, Store};
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::{CreateCheckoutSession, ListEvents};
use kassa_stripe::{Client, ClientConfig, IdempotencyKey};
use kassa_stripe_sim::{DeliveryOutcome, Faults, SimConfig, Simulator};
use rand::Rng;
use secrecy::SecretString;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Webhook events Stripe sends for one completed setup session and Kassa's handling of it
/// (session created, setup intent, completion, customer, attach, default card), measured on the
/// simulator; used only to size the run from `--events`.
const EVENTS_PER_SESSION: usize = 6;
/// Events of one successful off-session charge (PaymentIntent created and succeeded, charge succeeded).
const EVENTS_PER_CHARGE: usize = 3;
/// The card that attaches but declines every charge (Stripe's `pm_card_chargeCustomerFail`).
const DECLINING_CARD: &str = "pm_card_chargeCustomerFail";
/// Each ingress and worker process is started with this key against the simulator.
const SOAK_API_KEY: &str = "sk_test_kassa_soak";

/// `kassa bench soak`.
#[derive(Args)]
pub struct SoakArgs {
    /// Stripe events to produce, about (setup sessions are sized from it and `--charges`).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Back-office charges to submit.
    #[arg(long, default_value_t = 200)]
    charges: usize,
    /// Seconds over which sessions and charges are fed in (the kills happen during and after).
    #[arg(long, default_value_t = 40)]
    load_secs: u64,
    /// Milliseconds between two worker SIGKILLs (each ± 50 %).
    #[arg(long, default_value_t = 4000)]
    kill_every_ms: u64,
    /// Fraction of Stripe API requests the simulator answers 500.
    #[arg(long, default_value_t = 0.03)]
    error_rate: f64,
    /// Requests/s the simulator allows during its rate-limit bursts (2 s in every 10 s; 429 above).
    #[arg(long, default_value_t = 10)]
    rate_limit: u32,
    /// Share of customers saving a card that declines every charge (their charges must not succeed).
    #[arg(long, default_value_t = 0.05)]
    declining_share: f64,
    /// Permanent failures to inject (signed live-mode events a test-mode Kassa must refuse):
    /// exactly these, and nothing else, must end in the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    poison_events: usize,
    /// Charges of "the day after": their creates' answers are lost, their jobs dead-lettered and
    /// replayed after 25 simulated hours (at most twice --worker-concurrency; 0 skips the phase).
    #[arg(long, default_value_t = 12)]
    day_after_charges: usize,
    /// Events (and charges) each worker process handles at once.
    #[arg(long, default_value_t = 8)]
    worker_concurrency: u32,
    /// Give up (and fail) if the run has not settled after this many seconds.
    #[arg(long, default_value_t = 900)]
    deadline_secs: u64,
    /// The RabbitMQ node to restart with `rabbitmqctl -n NODE` (empty: rabbitmqctl's default,
    /// the local broker). It must be the broker at KASSA_AMQP_URL.
    #[arg(long, env = "KASSA_SOAK_RABBITMQ_NODE", default_value = "")]
    rabbitmq_node: String,
    /// PostgreSQL server; a scratch database `kassa_soak_…` is created on it and dropped after.
    #[arg(long, env = "KASSA_DATABASE_URL", default_value = kassa_store::DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/soak.json")]
    output: PathBuf,
    /// Where the ingress and worker processes write their logs.
    #[arg(long, default_value = "target/bench/soak-logs")]
    log_dir: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Ingress or worker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Ingress,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Worker => "worker",
        }
    }
}

/// Everything a child process is started with.
#[derive(Clone)]
struct Launch {
    exe: PathBuf,
    amqp_url: String,
    prefix: String,
    database_url: String,
    sim_base: String,
    webhook_secret: String,
    worker_concurrency: u32,
    log_dir: PathBuf,
    /// `KASSA_EVENTS_POLL_INTERVAL` of workers (`None`: the default).
    events_poll_interval: Option<&'static str>,
}

/// One `kassa ingress` or `kassa worker` process, started again after each kill.
struct Proc {
    role: Role,
    index: usize,
    port: u16,
    child: tokio::process::Child,
    starts: u32,
    peak_rss_kib: u64,
}

impl Proc {
    fn spawn(launch: &Launch, role: Role, index: usize, port: u16) -> anyhow::Result<Proc> {
        let mut proc = Proc {
            role,
            index,
            port,
            child: start_child(launch, role, index, port)?,
            starts: 1,
            peak_rss_kib: 0,
        };
        proc.sample_rss();
        Ok(proc)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn sample_rss(&mut self) {
        if let Some(kib) = self.pid().and_then(rss_kib) {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
    }

    /// SIGKILL, wait for the exit, start again on the same port.
    async fn kill_and_restart(&mut self, launch: &Launch, pause: Duration) -> anyhow::Result<()> {
        self.kill().await?;
        tokio::time::sleep(pause).await;
        self.start(launch)
    }

    /// SIGKILL and wait for the exit.
    async fn kill(&mut self) -> anyhow::Result<()> {
        self.sample_rss();
        if let Some(pid) = self.pid() {
            signal(pid, nix::sys::signal::Signal::SIGKILL)?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }

    /// Starts the process again on the same port.
    fn start(&mut self, launch: &Launch) -> anyhow::Result<()> {
        self.child = start_child(launch, self.role, self.index, self.port)?;
        self.starts += 1;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit (in-flight work commits or rolls back).
    async fn stop(&mut self) -> bool {
        self.sample_rss();
        if let Some(pid) = self.pid() {
            let _ = signal(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = self.child.kill().await;
                false
            }
        }
    }
}

fn start_child(
    launch: &Launch,
    role: Role,
    index: usize,
    port: u16,
) -> anyhow::Result<tokio::process::Child> {
    let log_path = launch.log_dir.join(format!("{}-{index}.log", role.name()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = tokio::process::Command::new(&launch.exe);
    command
        .arg(role.name())
        // Only what the soak sets: nothing from the caller's environment leaks in.
        .env_clear()
        .env("RUST_LOG", "warn,lapin=error")
        .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KASSA_AMQP_URL", &launch.amqp_url)
        .env("KASSA_AMQP_PREFIX", &launch.prefix)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    match role {
        Role::Ingress => {
            command.env("KASSA_STRIPE_WEBHOOK_SECRETS", &launch.webhook_secret);
        }
        Role::Worker => {
            command
                .env("KASSA_DATABASE_URL", &launch.database_url)
                .env(
                    "KASSA_DATABASE_MAX_CONNECTIONS",
                    (2 * launch.worker_concurrency + 4).to_string(),
                )
                .env("KASSA_STRIPE_API_KEY", SOAK_API_KEY)
                .env("KASSA_STRIPE_API_BASE", &launch.sim_base)
                .env(
                    "KASSA_WORKER_CONCURRENCY",
                    launch.worker_concurrency.to_string(),
                )
                .env(
                    "KASSA_WORKER_PREFETCH",
                    (2 * launch.worker_concurrency).to_string(),
                );
            if let Some(interval) = launch.events_poll_interval {
                command.env("KASSA_EVENTS_POLL_INTERVAL", interval);
            }
        }
    }
    command
        .spawn()
        .with_context(|| format!("starting `kassa {}`", role.name()))
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("sending {signal} to {pid}"))
}

/// Resident set size of a process now, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process, from /proc.
fn own_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?.port())
}

/// The load balancer in front of the two ingresses: round robin, and a request whose upstream
/// refuses the connection goes to the other one (as nginx's `proxy_next_upstream error` does).
/// With both down it answers 502 and Stripe retries later.
#[derive(Clone)]
struct Balancer {
    upstreams: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    failovers: Arc<AtomicU64>,
    /// While set, every webhook is answered 503 (an ingress outage): Stripe retries it later.
    hold: Arc<AtomicBool>,
    http: reqwest::Client,
}

async fn balance(
    State(lb): State<Balancer>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    if lb.hold.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"held"));
    }
    let first = lb.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..lb.upstreams.len() {
        let url = &lb.upstreams[(first + k) % lb.upstreams.len()];
        let mut request = lb.http.post(url).body(body.clone());
        for name in ["stripe-signature", "content-type", "user-agent"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        match request.send().await {
            Ok(response) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let body = response.bytes().await.unwrap_or_default();
                return (status, body);
            }
            Err(_) => {
                lb.failovers.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    (StatusCode::BAD_GATEWAY, Bytes::from_static(b"no upstream"))
}

async fn start_balancer(
    upstreams: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<(String, Arc<AtomicU64>, Arc<AtomicBool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let failovers = Arc::new(AtomicU64::new(0));
    let hold = Arc::new(AtomicBool::new(false));
    let lb = Balancer {
        upstreams: Arc::new(upstreams),
        next: Arc::new(AtomicUsize::new(0)),
        failovers: failovers.clone(),
        hold: hold.clone(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()?,
    };
    let app = axum::Router::new()
        .route("/webhooks/stripe", axum::routing::post(balance))
        .with_state(lb);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((format!("http://{address}/webhooks/stripe"), failovers, hold))
}

/// `rabbitmqctl [-n NODE] ARGS`, always under a time limit.
async fn rabbitmqctl(node: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new("timeout");
    command.arg("60").arg("rabbitmqctl");
    if !node.is_empty() {
        command.arg("-n").arg(node);
    }
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running rabbitmqctl (this soak restarts RabbitMQ with it)")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Starts the broker's app again however the soak ends, so a failure between stop and start
/// never leaves the machine without RabbitMQ.
struct StartAppOnDrop {
    node: String,
    armed: bool,
}

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let mut command = std::process::Command::new("timeout");
            command.arg("60").arg("rabbitmqctl");
            if !self.node.is_empty() {
                command.arg("-n").arg(&self.node);
            }
            let _ = command.arg("start_app").stdin(Stdio::null()).output();
        }
    }
}

/// What the chaos controller did.
#[derive(Default)]
struct Chaos {
    worker_kills: u32,
    ingress_kills: u32,
    rabbitmq_restarts: u32,
    rabbitmq_down_secs: f64,
    errors: Vec<String>,
}

/// A session the soak created and completed, and the card it saved.
struct Session {
    id: String,
    declining: bool,
}

/// Shared between the load, the chaos controller and the checks.
struct Run {
    sim: Simulator,
    client: Client,
    store: Store,
    topology: Topology,
    sessions: Mutex<Vec<Session>>,
    charges: Mutex<Vec<(i64, bool)>>,
    /// Ids of the injected permanent failures: the only events allowed in the dead letters.
    poison: Mutex<Vec<String>>,
    lb_url: String,
    webhook_secret: String,
    http: reqwest::Client,
}

impl Run {
    /// The injected permanent failure: a correctly signed live-mode event reaching this
    /// test-mode deployment (a webhook endpoint configured in the wrong mode). Kassa refuses
    /// to act on it ever ("test and live never mix") and dead-letters it at once.
    async fn inject_poison(&self, n: usize) -> anyhow::Result<()> {
        let id = format!("evt_soakpoison{:08x}{n}", rand::random::<u32>());
        let body = json!({
            "id": id, "object": "event", "type": "customer.updated", "livemode": true,
            "created": unix_now(), "api_version": kassa_stripe_sim::DEFAULT_API_VERSION,
            "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
            "data": {"object": {"id": format!("cus_soakpoison{n}"), "object": "customer", "livemode": true}},
        })
        .to_string();
        self.poison
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let signature =
                kassa_stripe::webhook::sign(&self.webhook_secret, unix_now(), body.as_bytes());
            let sent = self
                .http
                .post(&self.lb_url)
                .header("Stripe-Signature", signature)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the injected event {id} was not accepted within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates a setup session through the API (retrying what the injected faults refuse, with
    /// the same Idempotency-Key) and completes it as the customer would.
    async fn session(&self, i: usize, declining: bool) -> anyhow::Result<()> {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            currency: Some("usd".into()),
            customer_email: Some(format!("soak-{i}@example.com")),
            success_url: Some("http://127.0.0.1/success".into()),
            ..Default::default()
        };
        let key = IdempotencyKey::new(format!("soak:session:{i}"))?;
        let mut tries = 0;
        let id = loop {
            match self.client.checkout_sessions().create(&params, &key).await {
                Ok(session) => break session.id,
                Err(error) if tries < 20 => {
                    tries += 1;
                    tracing::debug!(%error, "creating a soak session; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error).context("creating a setup session"),
            }
        };
        let card = if declining {
            DECLINING_CARD
        } else {
            "pm_card_visa"
        };
        self.sim
            .complete_checkout_session(&id, card)
            .map_err(|e| anyhow::anyhow!("completing {id}: {e}"))?;
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Session { id, declining });
        Ok(())
    }

    /// Customers Kassa has saved a card for (their session fulfilled), with whether it declines.
    async fn saved_cards(&self) -> anyhow::Result<Vec<(String, String, bool)>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, customer_id, payment_method_id FROM checkout_sessions \
             WHERE purpose = 'setup' AND customer_id IS NOT NULL AND payment_method_id IS NOT NULL",
        )
        .fetch_all(self.store.pool())
        .await?;
        let declining: HashSet<String> = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|s| s.declining)
            .map(|s| s.id.clone())
            .collect();
        Ok(rows
            .into_iter()
            .map(|(session, customer, card)| {
                let d = declining.contains(&session);
                (customer, card, d)
            })
            .collect())
    }

    /// Submits charge `i` for a random customer with a saved card, as the back-office API does
    /// (`POST /api/charges` calls the same `submit_charge`).
    async fn charge(&self, i: usize, route: &kassa_store::JobRoute) -> anyhow::Result<()> {
        let cards = loop {
            let cards = self.saved_cards().await?;
            if !cards.is_empty() {
                break cards;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (customer, card, declining) = cards[rand::rng().random_range(0..cards.len())].clone();
        let charge = NewCharge {
            reference: format!("soak-{i}"),
            customer_id: customer,
            payment_method_id: Some(card),
            amount: 500 + i as i64,
            currency: "usd".into(),
            description: Some("soak".into()),
            metadata: json!({}),
            livemode: false,
        };
        let (record, _) = self.store.submit_charge(route, &charge).await?;
        self.charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((record.id, declining));
        Ok(())
    }
}

/// Runs the soak.
pub async fn run(args: SoakArgs, kassa: &Path) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.declining_share) {
        bail!("--declining-share must be within 0..=1");
    }
    let started = Instant::now();
    let sessions_wanted = args
        .events
        .saturating_sub(args.charges * EVENTS_PER_CHARGE)
        .div_ceil(EVENTS_PER_SESSION)
        .max(10);
    println!(
        "kassa bench soak: {sessions_wanted} setup sessions and {} charges over {} s (about {} events); \
         2 ingress + 2 worker processes; a worker SIGKILLed every ~{} ms, an ingress SIGKILLed once, \
         RabbitMQ restarted once{}",
        args.charges,
        args.load_secs,
        args.events,
        args.kill_every_ms,
        if args.rabbitmq_node.is_empty() {
            String::new()
        } else {
            format!(" (node {})", args.rabbitmq_node)
        }
    );

    // Scratch database and queue names for this run.
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let topology = Topology::new(format!("soak{run_id}."));
    let mut database_url = url::Url::parse(&args.database_url).context("KASSA_DATABASE_URL")?;
    database_url.set_path(&format!("/kassa_soak_{run_id}"));
    let database_url = database_url.to_string();
    let store = Store::connect(&database_url, 8)
        .await
        .context("creating the soak database")?;
    let broker_shutdown = CancellationToken::new();
    let broker_config = args.broker.config(topology.clone());
    let broker = Broker::start(broker_config, broker_shutdown.clone());
    broker
        .wait_ready(Duration::from_secs(20))
        .await
        .context("RabbitMQ at KASSA_AMQP_URL")?;

    let result = soak(
        &args,
        &topology,
        store.clone(),
        &broker,
        &database_url,
        kassa,
        started,
    )
    .await;

    broker_shutdown.cancel();
    store.close().await;
    let _ = topology.delete_at(&args.broker.amqp_url).await;
    drop_database(&database_url).await;
    let (report, failed) = result?;
    write_report(&args.output, &report)?;
    if !failed.is_empty() {
        bail!("soak checks failed: {}", failed.join("; "));
    }
    Ok(())
}

async fn drop_database(database_url: &str) {
    let Ok(mut maintenance) = url::Url::parse(database_url) else {
        return;
    };
    let name = maintenance.path().trim_start_matches('/').to_owned();
    maintenance.set_path("/postgres");
    if let Ok(pool) = sqlx::PgPool::connect(maintenance.as_str()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// The faults in force outside the rate-limit bursts.
fn base_faults(args: &SoakArgs) -> Faults {
    Faults {
        // Stripe: 5xx "indicate an error with Stripe's servers" (docs: error handling).
        error_rate: args.error_rate,
        error_status: 500,
        // Stripe: webhooks are delivered at least once and in no particular order (docs: webhooks).
        duplicate_webhooks: true,
        shuffle_webhooks: true,
        ..Faults::default()
    }
}

/// A day and an hour, in seconds: past Stripe's 24 hours of Idempotency-Keys.
const DAY_AND_AN_HOUR: u32 = 25 * 60 * 60;

/// "The day after": charges whose creates Stripe carries out but whose answers never reach Kassa,
/// their jobs dead-lettered, and every dead letter replayed after 25 hours on Stripe's clock.
struct DayAfter<'a> {
    args: &'a SoakArgs,
    run: &'a Run,
    broker: &'a Broker,
    launch: &'a Launch,
    hold_webhooks: &'a AtomicBool,
    deadline: Instant,
}

/// What the day after did.
struct DayAfterReport {
    /// The charges of the phase.
    charges: Vec<i64>,
    /// Their jobs found in the dead letters before the replay.
    dead_lettered: usize,
    /// Idempotency-Keys Stripe forgot when the clock moved.
    keys_forgotten: usize,
    /// Wall time of the phase.
    seconds: f64,
}

impl DayAfter<'_> {
    async fn run(&self, workers: &mut [Proc; 2]) -> anyhow::Result<DayAfterReport> {
        let started = Instant::now();
        let run = self.run;
        let n = self
            .args
            .day_after_charges
            .min(2 * self.args.worker_concurrency as usize);
        // An ingress outage that Stripe retries through: the webhooks of these PaymentIntents
        // wait, so only the charge jobs (and their dead letters) settle the charges.
        self.hold_webhooks.store(true, Ordering::Relaxed);
        let since = run.sim.now();
        // Stripe carries out each create; its answer then takes a minute to leave.
        run.sim.set_faults(Faults {
            latency_after: Duration::from_secs(60),
            path_contains: Some("/v1/payment_intents".into()),
            ..Faults::default()
        });
        let route = kassa_worker::charges::job_route(&run.topology);
        let first = run
            .charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        for k in 0..n {
            run.charge(self.args.charges + k, &route).await?;
        }
        let ids: Vec<i64> = run
            .charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[first..]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        self.until("Stripe has made every PaymentIntent", || async {
            Ok(intents_since(run, since, &ids).await? >= ids.len())
        })
        .await?;
        // Both workers die while the answers are on their way.
        for worker in workers.iter_mut() {
            worker.kill().await?;
        }
        // Stripe cannot be asked about PaymentIntents now (a 400 no retry cures): each job,
        // redelivered, finds its attempt started, cannot look it up, and is dead-lettered with
        // its charge left open. The events poller is off meanwhile (a backstop that would find
        // the held events); it comes back with the workers' usual settings below.
        run.sim.set_faults(Faults {
            error_rate: 1.0,
            error_status: 400,
            path_contains: Some("/v1/payment_intents".into()),
            ..Faults::default()
        });
        let quiet = Launch {
            events_poll_interval: Some("off"),
            ..self.launch.clone()
        };
        for worker in workers.iter_mut() {
            worker.start(&quiet)?;
        }
        let wanted: HashSet<String> = ids.iter().map(|id| format!("charge:{id}:1")).collect();
        let dead_lettered = AtomicUsize::new(0);
        self.until("every job in the dead letters", || async {
            let letters = kassa_broker::dlq::list(self.broker, 100_000).await?;
            let found = letters
                .iter()
                .filter(|l| wanted.contains(&l.message_id))
                .count();
            dead_lettered.store(found, Ordering::Relaxed);
            Ok(found == wanted.len())
        })
        .await?;
        let dead_lettered = dead_lettered.into_inner();
        for id in &ids {
            let charge = run.store.charge(*id).await?.context("a day-after charge")?;
            if charge.status.is_final() {
                bail!(
                    "charge {id} is {} before its dead letter was replayed",
                    charge.status
                );
            }
        }
        // A day and an hour later, on Stripe's side: every key is forgotten.
        run.sim.set_faults(Faults::default());
        let advanced = run.sim.advance_clock(DAY_AND_AN_HOUR);
        println!(
            "  the day after: {n} charges whose answers were lost, {dead_lettered} jobs dead-lettered; \
             Stripe's clock +25 h ({} keys forgotten); `kassa dlq replay --all`",
            advanced.keys_forgotten
        );
        let replay = tokio::process::Command::new(&self.launch.exe)
            .args(["dlq", "replay", "--all"])
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("KASSA_AMQP_URL", &self.launch.amqp_url)
            .env("KASSA_AMQP_PREFIX", &self.launch.prefix)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running kassa dlq replay --all")?;
        if !replay.status.success() {
            bail!(
                "kassa dlq replay --all failed: {}",
                String::from_utf8_lossy(&replay.stderr)
            );
        }
        self.until("every replayed charge settled", || async {
            let mut open = 0;
            for id in &ids {
                if !run.store.charge(*id).await?.is_some_and(|c| {
                    matches!(
                        c.status,
                        ChargeStatus::Succeeded
                            | ChargeStatus::RequiresRecheckout
                            | ChargeStatus::Failed
                    )
                }) {
                    open += 1;
                }
            }
            Ok(open == 0)
        })
        .await?;
        // The outage ends: the held webhooks arrive (Stripe's next retry), the workers run
        // with their usual settings, and the run settles again.
        self.hold_webhooks.store(false, Ordering::Relaxed);
        run.sim.set_faults(base_faults(self.args));
        for worker in workers.iter_mut() {
            worker.kill_and_restart(self.launch, Duration::ZERO).await?;
        }
        let settled = AtomicUsize::new(0);
        self.until("the run to settle again", || async {
            if settle_state(run).await?.settled() {
                Ok(settled.fetch_add(1, Ordering::Relaxed) + 1 >= 3)
            } else {
                settled.store(0, Ordering::Relaxed);
                Ok(false)
            }
        })
        .await?;
        Ok(DayAfterReport {
            charges: ids,
            dead_lettered,
            keys_forgotten: advanced.keys_forgotten,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Polls `check` every 250 ms until it holds, or fails at the run's deadline.
    async fn until<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        loop {
            if check().await? {
                return Ok(());
            }
            if Instant::now() > self.deadline {
                bail!("waiting until {what}: past the deadline");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// How many of the charges `ids` have a PaymentIntent on Stripe created since `since`.
async fn intents_since(run: &Run, since: i64, ids: &[i64]) -> anyhow::Result<usize> {
    let wanted: HashSet<String> = ids.iter().map(i64::to_string).collect();
    let mut params = kassa_stripe::resources::ListPaymentIntents {
        created: Some(kassa_stripe::resources::RangeQuery {
            gte: Some(since),
            ..Default::default()
        }),
        limit: Some(100),
        ..Default::default()
    };
    let mut found = HashSet::new();
    loop {
        let page = run.client.payment_intents().list(&params).await?;
        for intent in &page.data {
            if let Some(id) = intent
                .metadata
                .get(kassa_worker::keys::CHARGE_ID_METADATA)
                .filter(|id| wanted.contains(*id))
            {
                found.insert(id.clone());
            }
        }
        match page.next_starting_after() {
            Some(last) => params.starting_after = Some(last.to_owned()),
            None => return Ok(found.len()),
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn soak(
    args: &SoakArgs,
    topology: &Topology,
    store: Store,
    broker: &Broker,
    database_url: &str,
    kassa: &Path,
    started: Instant,
) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating {}", args.log_dir.display()))?;
    // Each run's logs start empty; a restarted process appends to its predecessor's.
    for role in [Role::Ingress, Role::Worker] {
        for index in 0..2 {
            let _ = std::fs::remove_file(args.log_dir.join(format!("{}-{index}.log", role.name())));
        }
    }
    let shutdown = CancellationToken::new();
    let ingress_ports = [free_port()?, free_port()?];
    let worker_ports = [free_port()?, free_port()?];
    let (lb_url, failovers, hold_webhooks) = start_balancer(
        ingress_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/webhooks/stripe"))
            .collect(),
        shutdown.clone(),
    )
    .await?;
    let webhook_secret = format!("whsec_{:032x}", rand::random::<u128>());
    let sim = Simulator::start(SimConfig {
        webhook_endpoints: vec![lb_url.clone()],
        webhook_secret: webhook_secret.clone(),
        // Stripe retries failed deliveries for days; compressed here: 0.5 s doubling, 10
        // attempts (about four minutes), longer than any outage the soak causes.
        webhook_retry_base: Duration::from_millis(500),
        webhook_max_attempts: 10,
        webhook_concurrency: 16,
        faults: base_faults(args),
        ..SimConfig::default()
    })
    .await
    .context("starting the Stripe simulator")?;
    let mut client_config = ClientConfig::new(SecretString::from(SOAK_API_KEY.to_owned()));
    client_config.api_base = sim.base_url();
    let client = Client::new(client_config)?;
    let launch = Launch {
        exe: kassa.to_owned(),
        amqp_url: args.broker.amqp_url.clone(),
        prefix: topology.prefix().to_owned(),
        database_url: database_url.to_owned(),
        sim_base: sim.base_url(),
        webhook_secret,
        worker_concurrency: args.worker_concurrency,
        log_dir: args.log_dir.clone(),
        events_poll_interval: None,
    };
    let mut ingresses = [
        Proc::spawn(&launch, Role::Ingress, 0, ingress_ports[0])?,
        Proc::spawn(&launch, Role::Ingress, 1, ingress_ports[1])?,
    ];
    let mut workers = [
        Proc::spawn(&launch, Role::Worker, 0, worker_ports[0])?,
        Proc::spawn(&launch, Role::Worker, 1, worker_ports[1])?,
    ];
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()?;
    for port in ingress_ports.iter().chain(&worker_ports) {
        wait_ready(&http, *port).await?;
    }
    let processes_ready = started.elapsed();
    println!(
        "  processes ready after {:.1} s; logs in {}",
        processes_ready.as_secs_f64(),
        args.log_dir.display()
    );

    let run = Arc::new(Run {
        sim,
        client,
        store: store.clone(),
        topology: topology.clone(),
        sessions: Mutex::new(Vec::new()),
        charges: Mutex::new(Vec::new()),
        poison: Mutex::new(Vec::new()),
        lb_url: lb_url.clone(),
        webhook_secret: launch.webhook_secret.clone(),
        http: http.clone(),
    });
    let load_started = Instant::now();
    let load_secs = args.load_secs.max(1) as f64;

    // The load: sessions and charges spread evenly over --load-secs.
    let sessions_wanted = args
        .events
        .saturating_sub(args.charges * EVENTS_PER_CHARGE)
        .div_ceil(EVENTS_PER_SESSION)
        .max(10);
    let declining_every = if args.declining_share > 0.0 {
        (1.0 / args.declining_share).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let session_load = {
        let run = run.clone();
        tokio::spawn(async move {
            let gap = Duration::from_secs_f64(load_secs * 0.8 / sessions_wanted as f64);
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..sessions_wanted {
                let run = run.clone();
                // Every n-th customer (not the first: charges need good cards early) declines.
                let declining = i % declining_every == declining_every - 1;
                tasks.spawn(async move { run.session(i, declining).await });
                tokio::time::sleep(gap).await;
            }
            while let Some(result) = tasks.join_next().await {
                result??;
            }
            anyhow::Ok(())
        })
    };
    let charge_load = {
        let run = run.clone();
        let charges = args.charges;
        let route = kassa_worker::charges::job_route(topology);
        tokio::spawn(async move {
            // Charges start once the first customers have cards, and end with the load.
            tokio::time::sleep(Duration::from_secs_f64(load_secs * 0.15)).await;
            let gap = Duration::from_secs_f64(load_secs * 0.85 / charges.max(1) as f64);
            for i in 0..charges {
                run.charge(i, &route).await?;
                tokio::time::sleep(gap).await;
            }
            anyhow::Ok(())
        })
    };

    // The chaos controller, until the run has settled after the load.
    let mut chaos = Chaos::default();
    let mut guard = StartAppOnDrop {
        node: args.rabbitmq_node.clone(),
        armed: false,
    };
    let deadline = started + Duration::from_secs(args.deadline_secs);
    let mut next_kill = Instant::now() + jitter(args.kill_every_ms);
    let ingress_kill_at = load_started + Duration::from_secs_f64(load_secs * 0.3);
    let rabbit_restart_at = load_started + Duration::from_secs_f64(load_secs * 0.55);
    let poison_at = load_started + Duration::from_secs_f64(load_secs * 0.4);
    let mut poisoned = false;
    let mut burst_since: Option<Instant> = None;
    let mut next_burst = Instant::now() + Duration::from_secs(5);
    let mut settled_polls = 0;
    let mut load_done = false;
    let mut session_load = Some(session_load);
    let mut charge_load = Some(charge_load);
    let mut last_progress = Instant::now();
    let mut polls: u64 = 0;
    let mut load_fed = Duration::ZERO;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        for p in ingresses.iter_mut().chain(workers.iter_mut()) {
            p.sample_rss();
        }
        // The load tasks finishing; one that failed ends the run (the other may wait for it for ever).
        for task in [&mut session_load, &mut charge_load] {
            if task.as_ref().is_some_and(|t| t.is_finished()) {
                if let Some(handle) = task.take() {
                    handle
                        .await
                        .context("a load task panicked")?
                        .context("feeding the load failed")?;
                }
            }
        }
        if !load_done && session_load.is_none() && charge_load.is_none() {
            load_done = true;
            load_fed = load_started.elapsed();
            println!("  load fed in after {:.1} s", load_fed.as_secs_f64());
        }
        // Rate-limit bursts: 2 s in every 10 s.
        match burst_since {
            Some(since) if now.duration_since(since) >= Duration::from_secs(2) => {
                run.sim.set_faults(base_faults(args));
                burst_since = None;
                next_burst = now + Duration::from_secs(8);
            }
            None if now >= next_burst && !load_done => {
                run.sim.set_faults(Faults {
                    // Stripe: "If you send many requests in quick succession, you might receive
                    // 429 error responses" (docs: rate limits).
                    rate_limit_per_sec: Some(args.rate_limit.max(1)),
                    ..base_faults(args)
                });
                burst_since = Some(now);
            }
            _ => {}
        }
        // A random worker, every few seconds, until the run settles.
        if now >= next_kill {
            let victim = rand::rng().random_range(0..workers.len());
            workers[victim]
                .kill_and_restart(&launch, Duration::ZERO)
                .await?;
            chaos.worker_kills += 1;
            next_kill = Instant::now() + jitter(args.kill_every_ms);
        }
        // One ingress, once.
        if chaos.ingress_kills == 0 && now >= ingress_kill_at {
            let victim = rand::rng().random_range(0..ingresses.len());
            ingresses[victim]
                .kill_and_restart(&launch, Duration::from_secs(1))
                .await?;
            chaos.ingress_kills += 1;
            println!(
                "  t+{:.1} s: ingress {victim} SIGKILLed and started again",
                load_started.elapsed().as_secs_f64()
            );
        }
        // The permanent failures, once.
        if !poisoned && now >= poison_at {
            for n in 0..args.poison_events {
                run.inject_poison(n).await?;
            }
            poisoned = true;
        }
        // RabbitMQ, once.
        if chaos.rabbitmq_restarts == 0 && now >= rabbit_restart_at {
            let down = Instant::now();
            guard.armed = true;
            rabbitmqctl(&args.rabbitmq_node, &["stop_app"]).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            rabbitmqctl(&args.rabbitmq_node, &["start_app"]).await?;
            rabbitmqctl(&args.rabbitmq_node, &["await_startup"]).await?;
            guard.armed = false;
            chaos.rabbitmq_restarts += 1;
            chaos.rabbitmq_down_secs = down.elapsed().as_secs_f64();
            println!(
                "  t+{:.1} s: RabbitMQ restarted (app down {:.1} s)",
                load_started.elapsed().as_secs_f64(),
                chaos.rabbitmq_down_secs
            );
        }
        if Instant::now() > deadline {
            chaos
                .errors
                .push(format!("not settled within {} s", args.deadline_secs));
            break;
        }
        // Settled: load done, both one-off faults done, everything sent is processed, twice in a row.
        polls += 1;
        if polls % 4 == 0
            && poisoned
            && load_done
            && chaos.rabbitmq_restarts == 1
            && chaos.ingress_kills == 1
        {
            let progress = settle_state(&run).await?;
            if last_progress.elapsed() > Duration::from_secs(10) {
                println!(
                    "  t+{:.0} s: waiting to settle: {progress}",
                    load_started.elapsed().as_secs_f64()
                );
                last_progress = Instant::now();
            }
            if progress.settled() {
                settled_polls += 1;
                if settled_polls >= 3 {
                    break;
                }
            } else {
                settled_polls = 0;
            }
        }
    }
    let settled_after = load_started.elapsed();
    let day_after_expected = args
        .day_after_charges
        .min(2 * args.worker_concurrency as usize);
    let day_after = if chaos.errors.is_empty() && args.day_after_charges > 0 {
        let phase = DayAfter {
            args,
            run: &run,
            broker,
            launch: &launch,
            hold_webhooks: &hold_webhooks,
            deadline,
        };
        match phase.run(&mut workers).await {
            Ok(report) => Some(report),
            Err(error) => {
                chaos.errors.push(format!("the day after: {error:#}"));
                None
            }
        }
    } else {
        None
    };
    run.sim.set_faults(Faults::default());

    // Stop everything gracefully: unacked messages go back to their queues.
    let mut clean_exits = 0;
    for p in ingresses.iter_mut().chain(workers.iter_mut()) {
        if p.stop().await {
            clean_exits += 1;
        }
    }
    shutdown.cancel();
    let checks = check(&run, broker).await?;
    let elapsed = started.elapsed();

    let requests = run.sim.requests();
    let answered_500 = requests.iter().filter(|r| r.status == 500).count();
    let answered_429 = requests.iter().filter(|r| r.status == 429).count();
    let deliveries = run.sim.webhook_deliveries();
    let duplicates = deliveries
        .iter()
        .filter(|d| d.duplicate && d.attempt == 1)
        .count();
    let failed_deliveries = deliveries
        .iter()
        .filter(|d| d.outcome != DeliveryOutcome::Delivered)
        .count();
    let gave_up = deliveries
        .iter()
        .filter(|d| d.outcome == DeliveryOutcome::GaveUp)
        .count();
    let peak = |role: Role| {
        ingresses
            .iter()
            .chain(&workers)
            .filter(|p| p.role == role)
            .map(|p| p.peak_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    };
    let starts = |role: Role| {
        ingresses
            .iter()
            .chain(&workers)
            .filter(|p| p.role == role)
            .map(|p| p.starts)
            .sum::<u32>()
    };

    let mut failed = Vec::new();
    println!();
    println!("| check | result | expected | pass |");
    println!("|---|---|---|---|");
    let mut row = |name: &str, result: String, expected: String, ok: bool| {
        println!(
            "| {name} | {result} | {expected} | {} |",
            if ok { "yes" } else { "NO" }
        );
        if !ok {
            failed.push(format!("{name}: {result} (expected {expected})"));
        }
    };
    row(
        "Stripe events of handled types processed exactly once (inbox rows processed / events)",
        format!("{} / {}", checks.events_processed, checks.events),
        format!("{0} / {0}", checks.events),
        checks.events_processed == checks.events && checks.events > 0,
    );
    row(
        "inbox rows for events Stripe never sent / not processed",
        format!("{} / {}", checks.unknown_inbox_rows, checks.unprocessed),
        "0 / 0".into(),
        checks.unknown_inbox_rows == 0 && checks.unprocessed == 0,
    );
    row(
        "completed sessions fulfilled / customers created in Stripe / cards attached",
        format!(
            "{} / {} / {}",
            checks.sessions_fulfilled, checks.customers_created, checks.cards_attached
        ),
        format!("{0} / {0} / {0}", checks.sessions),
        checks.sessions_fulfilled == checks.sessions
            && checks.customers_created == checks.sessions
            && checks.cards_attached == checks.sessions,
    );
    row(
        "charges with exactly one succeeded PaymentIntent (good cards)",
        format!("{} of {}", checks.charges_paid_once, checks.good_charges),
        format!("{0} of {0}", checks.good_charges),
        checks.charges_paid_once == checks.good_charges,
    );
    row(
        "charges with two or more succeeded PaymentIntents",
        checks.charges_paid_twice.to_string(),
        "0".into(),
        checks.charges_paid_twice == 0,
    );
    row(
        "declining-card charges: no PaymentIntent succeeded, charge needs re-pay",
        format!("{} of {}", checks.declined_ok, checks.declining_charges),
        format!("{0} of {0}", checks.declining_charges),
        checks.declined_ok == checks.declining_charges,
    );
    row(
        "charges in a final state, status as Stripe says",
        format!("{} of {}", checks.charges_consistent, checks.charges),
        format!("{0} of {0}", checks.charges),
        checks.charges_consistent == checks.charges
            && checks.charges == args.charges + day_after_expected,
    );
    if day_after_expected > 0 {
        let (dead, settled) = day_after.as_ref().map_or((0, 0), |d| {
            let settled = d
                .charges
                .iter()
                .filter(|id| checks.consistent_ids.contains(id))
                .count();
            (d.dead_lettered, settled)
        });
        row(
            "the day after: answers lost, jobs dead-lettered, replayed after 25 h on Stripe's clock (dead-lettered / then as Stripe says, paid at most once)",
            format!("{dead} / {settled} of {day_after_expected}"),
            format!("{0} / {0} of {0}", day_after_expected),
            dead == day_after_expected && settled == day_after_expected,
        );
    }
    row(
        "messages stranded in work/retry queues; outbox rows unpublished",
        format!(
            "{} ; {}",
            checks.stranded_messages, checks.outbox_unpublished
        ),
        "0 ; 0".into(),
        checks.stranded_messages == 0 && checks.outbox_unpublished == 0,
    );
    row(
        "dead letters: injected permanent failures in the DLQ (inbox: refused) / any other",
        format!(
            "{} of {} ({}) / {}",
            checks.poison_in_dlq,
            checks.poison,
            checks.poison_refused,
            checks.unexpected_dead_letters + checks.events_dead_lettered
        ),
        format!("{0} of {0} ({0}) / 0", checks.poison),
        checks.poison_in_dlq == checks.poison
            && checks.poison_refused == checks.poison
            && checks.unexpected_dead_letters == 0
            && checks.events_dead_lettered == 0,
    );
    row(
        "webhook deliveries Stripe gave up on",
        gave_up.to_string(),
        "0".into(),
        gave_up == 0,
    );
    row(
        "chaos done: worker kills / ingress kills / RabbitMQ restarts",
        format!(
            "{} / {} / {}",
            chaos.worker_kills, chaos.ingress_kills, chaos.rabbitmq_restarts
        ),
        "≥ 1 / 1 / 1".into(),
        chaos.worker_kills >= 1 && chaos.ingress_kills == 1 && chaos.rabbitmq_restarts == 1,
    );
    for error in &chaos.errors {
        row("run", error.clone(), "settled".into(), false);
    }
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| sessions / charges (declining cards) | {} / {} ({}) |",
        checks.sessions, checks.charges, checks.declining_charges
    );
    println!(
        "| Stripe events: handled types / other types (acked, no effect) | {} / {} |",
        checks.events, checks.events_ignored
    );
    println!(
        "| wall time: total / processes ready / load fed (--load-secs) / settled after load start | {:.1} s / {:.1} s / {:.1} s ({:.0} s) / {:.1} s |",
        elapsed.as_secs_f64(),
        processes_ready.as_secs_f64(),
        load_fed.as_secs_f64(),
        load_secs,
        settled_after.as_secs_f64()
    );
    println!(
        "| worker SIGKILLs / ingress SIGKILLs / RabbitMQ restarts (app down) | {} / {} / {} ({:.1} s) |",
        chaos.worker_kills, chaos.ingress_kills, chaos.rabbitmq_restarts, chaos.rabbitmq_down_secs
    );
    println!(
        "| process starts: ingress / worker | {} / {} |",
        starts(Role::Ingress),
        starts(Role::Worker)
    );
    println!(
        "| webhooks: duplicate copies sent / failed attempts (retried) / load-balancer failovers | {duplicates} / {failed_deliveries} / {} |",
        failovers.load(Ordering::Relaxed)
    );
    println!(
        "| Stripe API: requests / answered 500 / answered 429 | {} / {answered_500} / {answered_429} |",
        requests.len()
    );
    println!(
        "| events with a failed attempt recorded (retried through the ladder) / most attempts | {} / {} |",
        checks.events_retried, checks.max_attempts
    );
    println!(
        "| peak RSS: ingress / worker / soak process (simulator, load balancer) | {:.0} / {:.0} / {:.0} MiB |",
        peak(Role::Ingress),
        peak(Role::Worker),
        own_peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    if let Some(d) = &day_after {
        println!(
            "| the day after: charges / jobs dead-lettered and replayed / keys Stripe forgot at +25 h / phase time | {} / {} / {} / {:.1} s |",
            d.charges.len(),
            d.dead_lettered,
            d.keys_forgotten,
            d.seconds
        );
    }
    println!("| clean exits at the end (SIGTERM) | {clean_exits} of 4 |");

    let report = json!({
        "benchmark": "soak",
        "passed": failed.is_empty(),
        "failed_checks": failed,
        "size": {"events_target": args.events, "sessions": checks.sessions, "charges": checks.charges,
                 "declining_charges": checks.declining_charges, "events": checks.events + checks.events_ignored},
        "seconds": {"total": elapsed.as_secs_f64(), "processes_ready": processes_ready.as_secs_f64(),
                    "load_nominal": load_secs, "load_fed": load_fed.as_secs_f64(), "settled_after_load_start": settled_after.as_secs_f64()},
        "chaos": {"worker_kills": chaos.worker_kills, "ingress_kills": chaos.ingress_kills,
                  "rabbitmq_restarts": chaos.rabbitmq_restarts, "rabbitmq_down_seconds": chaos.rabbitmq_down_secs,
                  "ingress_starts": starts(Role::Ingress), "worker_starts": starts(Role::Worker)},
        "faults": {"duplicate_webhooks_sent": duplicates, "failed_delivery_attempts": failed_deliveries,
                   "deliveries_given_up": gave_up, "load_balancer_failovers": failovers.load(Ordering::Relaxed),
                   "stripe_requests": requests.len(), "answered_500": answered_500, "answered_429": answered_429,
                   "error_rate": args.error_rate, "rate_limit_in_bursts": args.rate_limit},
        "checks": {
            "events": checks.events, "events_ignored_types": checks.events_ignored, "events_processed": checks.events_processed,
            "unknown_inbox_rows": checks.unknown_inbox_rows, "unprocessed": checks.unprocessed,
            "sessions_fulfilled": checks.sessions_fulfilled, "customers_created": checks.customers_created,
            "cards_attached": checks.cards_attached,
            "good_charges": checks.good_charges, "charges_paid_once": checks.charges_paid_once,
            "charges_paid_twice": checks.charges_paid_twice, "declining_charges": checks.declining_charges,
            "declined_ok": checks.declined_ok, "charges_consistent": checks.charges_consistent,
            "stranded_messages": checks.stranded_messages, "outbox_unpublished": checks.outbox_unpublished,
            "dead_letters": checks.dead_letters, "dead_letter_ids_injected": checks.poison,
            "injected_in_dlq": checks.poison_in_dlq, "injected_refused_in_inbox": checks.poison_refused,
            "unexpected_dead_letters": checks.unexpected_dead_letters,
            "events_dead_lettered": checks.events_dead_lettered,
            "events_retried": checks.events_retried, "max_attempts": checks.max_attempts,
        },
        "peak_rss_mib": {"ingress": peak(Role::Ingress), "worker": peak(Role::Worker),
                         "soak_process": own_peak_rss_kib().unwrap_or(0) as f64 / 1024.0},
        "clean_exits": clean_exits,
        "day_after": day_after.as_ref().map(|d| json!({
            "charges": d.charges.len(),
            "dead_lettered_and_replayed": d.dead_lettered,
            "settled_as_stripe_says": d.charges.iter().filter(|id| checks.consistent_ids.contains(id)).count(),
            "keys_forgotten": d.keys_forgotten,
            "stripe_clock_advanced_seconds": DAY_AND_AN_HOUR,
            "seconds": d.seconds,
        })),
        "worker_concurrency": args.worker_concurrency,
    });
    Ok((report, failed))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn jitter(every_ms: u64) -> Duration {
    let every = every_ms.max(100);
    Duration::from_millis(rand::rng().random_range(every / 2..=every + every / 2))
}

async fn wait_ready(http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(&url).timeout(Duration::from_secs(2)).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} not ready within 60 s (see the process logs)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the run stands while the chaos goes on.
struct Progress {
    sent: usize,
    processed: usize,
    charges_open: i64,
    outbox: i64,
}

impl Progress {
    fn settled(&self) -> bool {
        self.sent > 0 && self.processed >= self.sent && self.charges_open == 0 && self.outbox == 0
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} events sent processed, {} charges open, {} outbox rows unpublished",
            self.processed, self.sent, self.charges_open, self.outbox
        )
    }
}

async fn settle_state(run: &Run) -> anyhow::Result<Progress> {
    let sent: HashSet<String> = run
        .sim
        .webhook_deliveries()
        .into_iter()
        .filter(|d| kassa_worker::events::handles(&d.event_type))
        .map(|d| d.event_id)
        .collect();
    let processed: Vec<String> =
        sqlx::query_scalar("SELECT id FROM stripe_events WHERE processed_at IS NOT NULL")
            .fetch_all(run.store.pool())
            .await?;
    let processed = processed.iter().filter(|id| sent.contains(*id)).count();
    let charges_open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM charges WHERE status NOT IN ('succeeded', 'failed', 'requires_recheckout')",
    )
    .fetch_one(run.store.pool())
    .await?;
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(run.store.pool())
        .await?;
    Ok(Progress {
        sent: sent.len(),
        processed,
        charges_open,
        outbox,
    })
}

/// The figures the checks compare.
#[derive(Default)]
struct Checks {
    events: usize,
    events_ignored: usize,
    events_processed: usize,
    unknown_inbox_rows: usize,
    unprocessed: usize,
    events_dead_lettered: usize,
    events_retried: usize,
    max_attempts: i32,
    sessions: usize,
    sessions_fulfilled: usize,
    customers_created: usize,
    cards_attached: usize,
    charges: usize,
    good_charges: usize,
    charges_paid_once: usize,
    charges_paid_twice: usize,
    declining_charges: usize,
    declined_ok: usize,
    charges_consistent: usize,
    /// The charges counted in `charges_consistent`.
    consistent_ids: HashSet<i64>,
    stranded_messages: u64,
    outbox_unpublished: i64,
    dead_letters: usize,
    poison: usize,
    poison_refused: usize,
    poison_in_dlq: usize,
    unexpected_dead_letters: usize,
}

async fn check(run: &Run, broker: &Broker) -> anyhow::Result<Checks> {
    let mut c = Checks::default();
    // Every event Stripe has, from its own list (newest first, 100 a page).
    let mut events = Vec::new();
    let mut starting_after = None;
    loop {
        let page = run
            .client
            .events()
            .list(&ListEvents {
                limit: Some(100),
                starting_after: starting_after.clone(),
                ..Default::default()
            })
            .await
            .context("listing the simulator's events")?;
        starting_after = page.data.last().map(|e| e.id.clone());
        let more = page.has_more;
        events.extend(page.data);
        if !more || starting_after.is_none() {
            break;
        }
    }
    // Types Kassa does not handle (payment_intent.created, …) are acked without an inbox row.
    c.events_ignored = events
        .iter()
        .filter(|e| !kassa_worker::events::handles(&e.type_))
        .count();
    events.retain(|e| {
        kassa_worker::events::handles(&e.type_) || e.type_ == "payment_intent.succeeded"
    });
    c.events = events
        .iter()
        .filter(|e| kassa_worker::events::handles(&e.type_))
        .count();
    let inbox: Vec<(String, bool, bool, i32)> = sqlx::query_as(
        "SELECT id, processed_at IS NOT NULL, dead_lettered_at IS NOT NULL, attempts FROM stripe_events",
    )
    .fetch_all(run.store.pool())
    .await?;
    let stripe_ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let poison: HashSet<String> = run
        .poison
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    c.poison = poison.len();
    for (id, processed, dead, attempts) in &inbox {
        if poison.contains(id) {
            if *dead && !processed {
                c.poison_refused += 1;
            }
            continue;
        }
        if !stripe_ids.contains(id.as_str()) {
            c.unknown_inbox_rows += 1;
        } else if *processed {
            c.events_processed += 1;
        }
        if !processed {
            c.unprocessed += 1;
        }
        if *dead {
            c.events_dead_lettered += 1;
        }
        if *attempts > 1 {
            c.events_retried += 1;
        }
        c.max_attempts = c.max_attempts.max(*attempts);
    }

    // Sessions: each fulfilled once, one customer and one attach in Stripe's request log.
    let session_ids: Vec<String> = run
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|s| s.id.clone())
        .collect();
    c.sessions = session_ids.len();
    let fulfilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM checkout_sessions WHERE id = ANY($1) AND payment_method_id IS NOT NULL AND customer_id IS NOT NULL",
    )
    .bind(&session_ids)
    .fetch_one(run.store.pool())
    .await?;
    c.sessions_fulfilled = usize::try_from(fulfilled).unwrap_or(0);
    let requests = run.sim.requests();
    let effective = |r: &&kassa_stripe_sim::RecordedRequest| {
        r.method == "POST" && r.status == 200 && !r.replayed
    };
    c.customers_created = requests
        .iter()
        .filter(effective)
        .filter(|r| r.path == "/v1/customers")
        .count();
    c.cards_attached = requests
        .iter()
        .filter(effective)
        .filter(|r| r.path.ends_with("/attach"))
        .count();

    // Charges: succeeded PaymentIntents per charge, from Stripe's events.
    let mut succeeded: HashMap<i64, usize> = HashMap::new();
    for event in events
        .iter()
        .filter(|e| e.type_ == "payment_intent.succeeded")
    {
        if let Some(id) = event.data.object["metadata"][kassa_worker::setup::CHARGE_ID_METADATA]
            .as_str()
            .and_then(|s| s.parse().ok())
        {
            *succeeded.entry(id).or_default() += 1;
        }
    }
    let charges = run
        .charges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    c.charges = charges.len();
    for (id, declining) in charges {
        let paid = succeeded.get(&id).copied().unwrap_or(0);
        let record = run
            .store
            .charge(id)
            .await?
            .with_context(|| format!("charge {id} is gone"))?;
        let status = record.status.as_str();
        if paid >= 2 {
            c.charges_paid_twice += 1;
        }
        if declining {
            c.declining_charges += 1;
            if paid == 0 && status == "requires_recheckout" {
                c.declined_ok += 1;
            }
            if paid == 0 && (status == "requires_recheckout" || status == "failed") {
                c.charges_consistent += 1;
                c.consistent_ids.insert(id);
            }
        } else {
            c.good_charges += 1;
            if paid == 1 {
                c.charges_paid_once += 1;
            }
            if paid == 1 && status == "succeeded" {
                c.charges_consistent += 1;
                c.consistent_ids.insert(id);
            }
        }
    }

    // Nothing stranded: the work and retry queues are empty once the workers have stopped.
    let channel = broker.open_channel().await?;
    for queue in run.topology.queues() {
        if queue == run.topology.dead_letters_queue() {
            continue;
        }
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
            .with_context(|| format!("inspecting {queue}"))?;
        c.stranded_messages += u64::from(declared.message_count());
    }
    let _ = channel.close(200, "checked".into()).await;
    c.outbox_unpublished =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(run.store.pool())
            .await?;
    let letters = kassa_broker::dlq::list(broker, 100_000).await?;
    c.dead_letters = letters.len();
    let ids: HashSet<&str> = letters.iter().map(|l| l.message_id.as_str()).collect();
    c.poison_in_dlq = ids.iter().filter(|id| poison.contains(**id)).count();
    c.unexpected_dead_letters = ids.iter().filter(|id| !poison.contains(**id)).count();
    Ok(c)
}
