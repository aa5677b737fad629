//! The chaos controller: while the load runs and until the run has settled, it SIGKILLs a random
//! worker every few seconds (and starts it again), SIGKILLs an ingress once, injects the
//! permanent failures once, restarts RabbitMQ once (with `--cluster`: SIGKILLs two of its nodes,
//! one after the other), crashes PostgreSQL once (`--postgres-crash`), and has the simulator
//! rate-limit in bursts.

use super::checks::settle_state;
use super::cluster::{Cluster, Launch};
use super::load::{Load, Run};
use super::outages::{NodeKill, NodeKills, PgCrash, PostgresCrash};
use super::SoakArgs;
use anyhow::{bail, Context};
use kassa_broker::Broker;
use kassa_stripe_sim::Faults;
use rand::Rng;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The faults in force outside the rate-limit bursts.
pub fn base_faults(args: &SoakArgs) -> Faults {
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

/// What the chaos controller did.
#[derive(Default)]
pub struct Chaos {
    pub worker_kills: u32,
    pub ingress_kills: u32,
    pub rabbitmq_restarts: u32,
    pub rabbitmq_down_secs: f64,
    /// `--cluster`: the RabbitMQ nodes SIGKILLed and started again.
    pub node_kills: Vec<NodeKill>,
    /// `--postgres-crash`: what the crash showed.
    pub postgres: Option<PostgresCrash>,
    /// Why the run did not settle, if it did not.
    pub errors: Vec<String>,
    /// How long the load took to feed in.
    pub load_fed: Duration,
}

/// The controller's clock: when each one-off fault is due and where the repeating ones stand.
struct Controller<'a> {
    args: &'a SoakArgs,
    run: &'a Run,
    cluster: &'a mut Cluster,
    launch: &'a Launch,
    broker: &'a Broker,
    chaos: Chaos,
    /// `--cluster`: node kills instead of the app restart.
    node_kills: Option<NodeKills>,
    /// `--postgres-crash`.
    pg_crash: Option<PgCrash>,
    load_started: Instant,
    next_kill: Instant,
    ingress_kill_at: Instant,
    rabbit_restart_at: Instant,
    poison_at: Instant,
    poisoned: bool,
    burst_since: Option<Instant>,
    next_burst: Instant,
    load_done: bool,
}

/// Runs the chaos from `load_started` until the load is fed in, every one-off fault is done and everything sent is
/// processed (three checks in a row), or until `deadline` (recorded in [`Chaos::errors`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_until_settled(
    args: &SoakArgs,
    run: &Run,
    cluster: &mut Cluster,
    launch: &Launch,
    broker: &Broker,
    mut load: Load,
    load_started: Instant,
    deadline: Instant,
) -> anyhow::Result<Chaos> {
    let load_secs = args.load_secs.max(1) as f64;
    let at = |share: f64| load_started + Duration::from_secs_f64(load_secs * share);
    let mut controller = Controller {
        args,
        run,
        cluster,
        launch,
        broker,
        chaos: Chaos::default(),
        node_kills: args.cluster.then(|| {
            NodeKills::new(
                vec![at(0.35), at(0.7)],
                Duration::from_secs(args.node_down_secs),
            )
        }),
        pg_crash: args
            .postgres_crash
            .then(|| PgCrash::new(at(0.45), args.postgres_down_secs)),
        load_started,
        next_kill: Instant::now() + jitter(args.kill_every_ms),
        ingress_kill_at: at(0.3),
        rabbit_restart_at: at(0.55),
        poison_at: at(0.4),
        poisoned: false,
        burst_since: None,
        next_burst: Instant::now() + Duration::from_secs(5),
        load_done: false,
    };
    // A RabbitMQ stopped by this controller is started again however the run ends.
    let mut guard = StartAppOnDrop {
        node: args.rabbitmq_node.clone(),
        armed: false,
    };
    let mut settled_polls = 0;
    let mut last_progress = Instant::now();
    let mut polls: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        controller.cluster.sample_rss();
        if !controller.load_done && load.done().await? {
            controller.load_done = true;
            controller.chaos.load_fed = load_started.elapsed();
            println!(
                "  load fed in after {:.1} s",
                controller.chaos.load_fed.as_secs_f64()
            );
        }
        controller.step(&mut guard).await?;
        if Instant::now() > deadline {
            let error = format!("not settled within {} s", args.deadline_secs);
            controller.chaos.errors.push(error);
            break;
        }
        // Settled: load done, the one-off faults done, everything sent processed, three times in a row.
        polls += 1;
        if polls.is_multiple_of(4) && controller.one_offs_done() {
            let progress = settle_state(run).await?;
            if last_progress.elapsed() > Duration::from_secs(10) {
                println!(
                    "  t+{:.0} s: waiting to settle: {progress}",
                    load_started.elapsed().as_secs_f64()
                );
                last_progress = Instant::now();
            }
            settled_polls = if progress.settled() {
                settled_polls + 1
            } else {
                0
            };
            if settled_polls >= 3 {
                break;
            }
        }
    }
    let mut chaos = controller.chaos;
    if let Some(kills) = controller.node_kills {
        chaos.node_kills = kills.done;
    }
    chaos.postgres = controller
        .pg_crash
        .filter(PgCrash::finished)
        .map(|crash| crash.report);
    Ok(chaos)
}

impl Controller<'_> {
    /// One tick: whatever fault is due now.
    async fn step(&mut self, guard: &mut StartAppOnDrop) -> anyhow::Result<()> {
        let now = Instant::now();
        self.rate_limit_bursts(now);
        // PostgreSQL, once: the worker kills pause until every worker is ready again, so the
        // workers that lived through the crash are the ones that must recover.
        if let Some(crash) = &mut self.pg_crash {
            crash
                .step(
                    self.load_started,
                    self.cluster,
                    &self.run.http,
                    self.broker,
                    &self.run.topology,
                )
                .await?;
            if crash.in_progress() {
                self.next_kill = Instant::now() + jitter(self.args.kill_every_ms);
            }
        }
        // Cluster nodes, one after the other.
        if let Some(kills) = &mut self.node_kills {
            kills.step(self.load_started).await?;
        }
        // A random worker, every few seconds, until the run settles.
        if now >= self.next_kill {
            let victim = rand::rng().random_range(0..self.cluster.workers.len());
            self.cluster.workers[victim]
                .kill_and_restart(self.launch, Duration::ZERO)
                .await?;
            self.chaos.worker_kills += 1;
            self.next_kill = Instant::now() + jitter(self.args.kill_every_ms);
        }
        // One ingress, once.
        if self.chaos.ingress_kills == 0 && now >= self.ingress_kill_at {
            let victim = rand::rng().random_range(0..self.cluster.ingresses.len());
            self.cluster.ingresses[victim]
                .kill_and_restart(self.launch, Duration::from_secs(1))
                .await?;
            self.chaos.ingress_kills += 1;
            println!(
                "  t+{:.1} s: ingress {victim} SIGKILLed and started again",
                self.load_started.elapsed().as_secs_f64()
            );
        }
        // The permanent failures, once.
        if !self.poisoned && now >= self.poison_at {
            for n in 0..self.args.poison_events {
                self.run.inject_poison(n).await?;
            }
            self.poisoned = true;
        }
        // RabbitMQ, once (a single node: its cluster mode kills nodes instead).
        if self.node_kills.is_none()
            && self.chaos.rabbitmq_restarts == 0
            && now >= self.rabbit_restart_at
        {
            self.restart_rabbitmq(guard).await?;
        }
        Ok(())
    }

    /// Rate-limit bursts while the load runs: 2 s in every 10 s.
    fn rate_limit_bursts(&mut self, now: Instant) {
        match self.burst_since {
            Some(since) if now.duration_since(since) >= Duration::from_secs(2) => {
                self.run.sim.set_faults(base_faults(self.args));
                self.burst_since = None;
                self.next_burst = now + Duration::from_secs(8);
            }
            None if now >= self.next_burst && !self.load_done => {
                self.run.sim.set_faults(Faults {
                    // Stripe: "If you send many requests in quick succession, you might receive
                    // 429 error responses" (docs: rate limits).
                    rate_limit_per_sec: Some(self.args.rate_limit.max(1)),
                    ..base_faults(self.args)
                });
                self.burst_since = Some(now);
            }
            _ => {}
        }
    }

    async fn restart_rabbitmq(&mut self, guard: &mut StartAppOnDrop) -> anyhow::Result<()> {
        let node = &self.args.rabbitmq_node;
        let down = Instant::now();
        guard.armed = true;
        rabbitmqctl(node, &["stop_app"]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rabbitmqctl(node, &["start_app"]).await?;
        rabbitmqctl(node, &["await_startup"]).await?;
        guard.armed = false;
        self.chaos.rabbitmq_restarts += 1;
        self.chaos.rabbitmq_down_secs = down.elapsed().as_secs_f64();
        println!(
            "  t+{:.1} s: RabbitMQ restarted (app down {:.1} s)",
            self.load_started.elapsed().as_secs_f64(),
            self.chaos.rabbitmq_down_secs
        );
        Ok(())
    }

    fn one_offs_done(&self) -> bool {
        let broker_done = match &self.node_kills {
            Some(kills) => kills.finished(),
            None => self.chaos.rabbitmq_restarts == 1,
        };
        self.poisoned
            && self.load_done
            && broker_done
            && self.pg_crash.as_ref().is_none_or(PgCrash::finished)
            && self.chaos.ingress_kills == 1
    }
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

/// `every_ms` ± 50 %, at least 100 ms.
fn jitter(every_ms: u64) -> Duration {
    let every = every_ms.max(100);
    Duration::from_millis(rand::rng().random_range(every / 2..=every + every / 2))
}
