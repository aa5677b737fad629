//! `kassa-bench soak`: the crash soak. Setup sessions and back-office charges go through the
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
//!
//! `--cluster` runs it on the three RabbitMQ nodes of `scripts/rabbitmq-cluster` and SIGKILLs two
//! of them one after the other instead of the app restart; `--postgres-crash` runs it on the
//! PostgreSQL of `scripts/postgres-scratch` and crashes that once (`pg_ctl stop -m immediate`).
//!
//! Modules: [`cluster`] (the processes and the load balancer), [`load`] (sessions, charges and
//! injected failures), [`chaos`] (the kills, the broker restart, the rate-limit bursts),
//! [`outages`] (the cluster nodes killed, PostgreSQL crashed),
//! [`day_after`], [`checks`] (what Stripe, PostgreSQL and RabbitMQ say happened) and [`summary`]
//! (the tables and the JSON).

mod chaos;
mod checks;
mod cluster;
mod day_after;
mod load;
mod outages;
mod summary;

use crate::report::write_report;
use crate::scratch::{self, BrokerArgs, ScratchDatabase};
use anyhow::{bail, Context};
use chaos::base_faults;
use clap::Args;
use cluster::{Cluster, Launch, Role};
use day_after::DayAfter;
use kassa_broker::{Broker, Topology};
use kassa_store::Store;
use kassa_stripe::{Client, ClientConfig};
use kassa_stripe_sim::{SimConfig, Simulator};
use load::{Load, Run};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use summary::{Figures, Outcome};
use tokio_util::sync::CancellationToken;

/// Each ingress and worker process is started with this key against the simulator.
const SOAK_API_KEY: &str = "sk_test_kassa_soak";

/// `kassa-bench soak`.
#[derive(Args)]
pub struct SoakArgs {
    /// Stripe events to produce, about (setup sessions are sized from it and `--charges`).
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    /// Back-office charges to submit.
    #[arg(long, default_value_t = 200)]
    pub charges: usize,
    /// Seconds over which sessions and charges are fed in (the kills happen during and after).
    #[arg(long, default_value_t = 40)]
    pub load_secs: u64,
    /// Milliseconds between two worker SIGKILLs (each ± 50 %).
    #[arg(long, default_value_t = 4000)]
    pub kill_every_ms: u64,
    /// Fraction of Stripe API requests the simulator answers 500.
    #[arg(long, default_value_t = 0.03)]
    pub error_rate: f64,
    /// Requests/s the simulator allows during its rate-limit bursts (2 s in every 10 s; 429 above).
    #[arg(long, default_value_t = 10)]
    pub rate_limit: u32,
    /// Share of customers saving a card that declines every charge (their charges must not succeed).
    #[arg(long, default_value_t = 0.05)]
    pub declining_share: f64,
    /// Permanent failures to inject (signed live-mode events a test-mode Kassa must refuse):
    /// exactly these, and nothing else, must end in the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    pub poison_events: usize,
    /// Charges of "the day after": their creates' answers are lost, their jobs dead-lettered and
    /// replayed after 25 simulated hours (at most twice --worker-concurrency; 0 skips the phase).
    #[arg(long, default_value_t = 12)]
    pub day_after_charges: usize,
    /// Events (and charges) each worker process handles at once.
    #[arg(long, default_value_t = 8)]
    pub worker_concurrency: u32,
    /// Give up (and fail) if the run has not settled after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub deadline_secs: u64,
    /// The RabbitMQ node to restart with `rabbitmqctl -n NODE` (empty: rabbitmqctl's default,
    /// the local broker). It must be the broker at KASSA_AMQP_URL.
    #[arg(long, env = "KASSA_SOAK_RABBITMQ_NODE", default_value = "")]
    pub rabbitmq_node: String,
    /// Run against the three RabbitMQ nodes of `scripts/rabbitmq-cluster` (started if they are
    /// not running; KASSA_AMQP_URL becomes their URLs) and, instead of the app restart, SIGKILL
    /// one node's Erlang VM at 35 % of the load and another's at 70 %, each left down
    /// --node-down-secs, then started again to rejoin.
    #[arg(long)]
    pub cluster: bool,
    /// Seconds a SIGKILLed cluster node stays down before it is started again.
    #[arg(long, default_value_t = 10)]
    pub node_down_secs: u64,
    /// Run on the PostgreSQL of `scripts/postgres-scratch` (started if it is not running;
    /// KASSA_DATABASE_URL is not used) and crash it once at 45 % of the load: `pg_ctl stop -m
    /// immediate`, --postgres-down-secs down, started again.
    #[arg(long)]
    pub postgres_crash: bool,
    /// Seconds the crashed PostgreSQL stays down.
    #[arg(long, default_value_t = 5)]
    pub postgres_down_secs: u64,
    /// PostgreSQL server; a scratch database `kassa_soak_…` is created on it and dropped after.
    #[arg(long, env = "KASSA_DATABASE_URL", default_value = kassa_store::DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/soak.json")]
    pub output: PathBuf,
    /// Where the ingress and worker processes write their logs.
    #[arg(long, default_value = "target/bench/soak-logs")]
    pub log_dir: PathBuf,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Runs the soak: a scratch database and topology, the run, then both removed again.
pub async fn run(mut args: SoakArgs, kassa: &Path) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.declining_share) {
        bail!("--declining-share must be within 0..=1");
    }
    let started = Instant::now();
    if args.cluster {
        outages::run_script("rabbitmq-cluster", &["start"]).await?;
        args.broker.amqp_url = outages::run_script("rabbitmq-cluster", &["urls"])
            .await?
            .trim()
            .to_owned();
    }
    if args.postgres_crash {
        outages::run_script("postgres-scratch", &["start"]).await?;
        args.database_url = outages::run_script("postgres-scratch", &["url"])
            .await?
            .trim()
            .to_owned();
    }
    println!(
        "kassa-bench soak: {} setup sessions and {} charges over {} s (about {} events); \
         2 ingress + 2 worker processes; a worker SIGKILLed every ~{} ms, an ingress SIGKILLed once, \
         {}{}",
        load::sessions_wanted(&args),
        args.charges,
        args.load_secs,
        args.events,
        args.kill_every_ms,
        if args.cluster {
            "two of the three RabbitMQ cluster nodes SIGKILLed, one after the other".to_owned()
        } else if args.rabbitmq_node.is_empty() {
            "RabbitMQ restarted once".to_owned()
        } else {
            format!("RabbitMQ restarted once (node {})", args.rabbitmq_node)
        },
        if args.postgres_crash {
            ", PostgreSQL crashed once"
        } else {
            ""
        }
    );
    let run_id = scratch::run_id();
    let topology = Topology::new(format!("soak{run_id}."));
    let database = ScratchDatabase::on(&args.database_url, "soak", &run_id)?;
    let store = Store::connect(database.url(), 8)
        .await
        .context("creating the soak database")?;
    let broker_shutdown = CancellationToken::new();
    let broker = Broker::start(
        args.broker.config(topology.clone()),
        broker_shutdown.clone(),
    );
    let scene = Scene {
        args: &args,
        topology: &topology,
        broker: &broker,
        database_url: database.url(),
        kassa,
        started,
    };
    let result = async {
        broker
            .wait_ready(Duration::from_secs(20))
            .await
            .context("RabbitMQ at KASSA_AMQP_URL")?;
        scene.play(store.clone()).await
    }
    .await;
    broker_shutdown.cancel();
    store.close().await;
    let _ = topology.delete_at(&args.broker.amqp_url).await;
    database.drop().await;
    let (report, failed) = result?;
    write_report(&args.output, &report)?;
    if !failed.is_empty() {
        bail!("soak checks failed: {}", failed.join("; "));
    }
    Ok(())
}

/// What one run plays on.
struct Scene<'a> {
    args: &'a SoakArgs,
    topology: &'a Topology,
    broker: &'a Broker,
    database_url: &'a str,
    kassa: &'a Path,
    started: Instant,
}

impl Scene<'_> {
    /// The run from start to verdict: the cluster under load and chaos until it settles, the
    /// day after, a graceful stop, the checks. Returns the JSON report and the failed checks.
    async fn play(&self, store: Store) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
        let args = self.args;
        self.fresh_logs()?;
        let shutdown = CancellationToken::new();
        let (balancer, ingress_ports) = Cluster::balancer(shutdown.clone()).await?;
        let webhook_secret = format!("whsec_{:032x}", rand::random::<u128>());
        let (sim, client) = self.simulator(balancer.url(), &webhook_secret).await?;
        let launch = Launch {
            exe: self.kassa.to_owned(),
            amqp_url: args.broker.amqp_url.clone(),
            prefix: self.topology.prefix().to_owned(),
            database_url: self.database_url.to_owned(),
            sim_base: sim.base_url(),
            webhook_secret: webhook_secret.clone(),
            worker_concurrency: args.worker_concurrency,
            log_dir: args.log_dir.clone(),
            events_poll_interval: None,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()?;
        let mut cluster = Cluster::start(&launch, balancer, ingress_ports, &http).await?;
        let processes_ready = self.started.elapsed();
        println!(
            "  processes ready after {:.1} s; logs in {}",
            processes_ready.as_secs_f64(),
            args.log_dir.display()
        );
        let run = Arc::new(Run {
            sim,
            client,
            store,
            topology: self.topology.clone(),
            sessions: Mutex::new(Vec::new()),
            charges: Mutex::new(Vec::new()),
            poison: Mutex::new(Vec::new()),
            webhook_url: cluster.webhook_url.clone(),
            webhook_secret,
            http,
        });
        let load_started = Instant::now();
        let load = Load::start(&run, args, args.load_secs.max(1) as f64);
        let deadline = self.started + Duration::from_secs(args.deadline_secs);
        let mut chaos = chaos::run_until_settled(
            args,
            &run,
            &mut cluster,
            &launch,
            self.broker,
            load,
            load_started,
            deadline,
        )
        .await?;
        let settled_after = load_started.elapsed();
        let day_after = if chaos.errors.is_empty() && args.day_after_charges > 0 {
            let phase = DayAfter {
                args,
                run: &run,
                broker: self.broker,
                launch: &launch,
                hold_webhooks: &cluster.hold_webhooks,
                deadline,
            };
            match phase.run(&mut cluster.workers).await {
                Ok(report) => Some(report),
                Err(error) => {
                    chaos.errors.push(format!("the day after: {error:#}"));
                    None
                }
            }
        } else {
            None
        };
        run.sim.set_faults(kassa_stripe_sim::Faults::default());
        let clean_exits = cluster.stop().await;
        shutdown.cancel();
        let checks = checks::check(&run, self.broker).await?;
        let timings = (self.started.elapsed(), processes_ready, settled_after);
        let outcome = Outcome {
            args,
            checks,
            chaos,
            day_after,
            figures: Figures::gather(&run, &cluster, clean_exits, timings),
        };
        let failed = outcome.verdict();
        outcome.print_figures();
        Ok((outcome.json(&failed), failed))
    }

    /// Each run's logs start empty; a restarted process appends to its predecessor's.
    fn fresh_logs(&self) -> anyhow::Result<()> {
        let dir = &self.args.log_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for role in [Role::Ingress, Role::Worker] {
            for index in 0..2 {
                let _ = std::fs::remove_file(dir.join(format!("{}-{index}.log", role.name())));
            }
        }
        Ok(())
    }

    /// The simulator, delivering webhooks to `webhook_url`, and a client of its API.
    async fn simulator(
        &self,
        webhook_url: &str,
        webhook_secret: &str,
    ) -> anyhow::Result<(Simulator, Client)> {
        let sim = Simulator::start(SimConfig {
            webhook_endpoints: vec![webhook_url.to_owned()],
            webhook_secret: webhook_secret.to_owned(),
            // Stripe retries failed deliveries for days; compressed here: 0.5 s doubling, 10
            // attempts (about four minutes), longer than any outage the soak causes.
            webhook_retry_base: Duration::from_millis(500),
            webhook_max_attempts: 10,
            webhook_concurrency: 16,
            faults: base_faults(self.args),
            ..SimConfig::default()
        })
        .await
        .context("starting the Stripe simulator")?;
        let mut client_config = ClientConfig::new(SecretString::from(SOAK_API_KEY.to_owned()));
        client_config.api_base = sim.base_url();
        let client = Client::new(client_config)?;
        Ok((sim, client))
    }
}
