//! The outages of `--cluster` and `--postgres-crash`: a RabbitMQ node's Erlang VM SIGKILLed (by
//! its pid, from `scripts/rabbitmq-cluster status`), left down, started again to rejoin; and the
//! PostgreSQL of `scripts/postgres-scratch` crashed (`pg_ctl stop -m immediate`), left down,
//! started again. Both run beside the load as state machines the chaos controller steps, so the
//! rest of the chaos goes on meanwhile (the worker kills pause while PostgreSQL is away: the
//! workers must come back by themselves).

use super::cluster::Cluster;
use anyhow::{bail, Context};
use kassa_broker::{Broker, Topology};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `scripts/NAME` of the source tree kassa-bench was built from, or of `KASSA_SCRIPTS_DIR`.
fn script(name: &str) -> PathBuf {
    match std::env::var_os("KASSA_SCRIPTS_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts")
            .join(name),
    }
}

fn script_command(name: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(script(name));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `scripts/NAME ARGS…` to its end (at most 5 minutes) and returns its standard output.
pub async fn run_script(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        script_command(name, args).output(),
    )
    .await
    .with_context(|| format!("scripts/{name} {args:?} did not finish within 5 minutes"))?
    .with_context(|| format!("running scripts/{name}"))?;
    if !output.status.success() {
        bail!(
            "scripts/{name} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One SIGKILLed RabbitMQ node.
#[derive(Clone, Debug)]
pub struct NodeKill {
    pub node: String,
    /// Seconds after the load started.
    pub at_secs: f64,
    /// From the SIGKILL to `scripts/rabbitmq-cluster start`.
    pub down_secs: f64,
    /// From that start until the script saw three running nodes again.
    pub rejoin_secs: f64,
}

enum NodePhase {
    Up,
    Down {
        node: String,
        killed: Instant,
        at_secs: f64,
    },
    Rejoining {
        node: String,
        killed: Instant,
        at_secs: f64,
        started: Instant,
        child: Box<tokio::process::Child>,
    },
}

/// Kills of cluster nodes: one at each of `at`, each a different node, the next only once the
/// previous one has rejoined (two nodes down of three leave no majority).
pub struct NodeKills {
    at: Vec<Instant>,
    down_for: Duration,
    phase: NodePhase,
    pub done: Vec<NodeKill>,
}

impl NodeKills {
    pub fn new(at: Vec<Instant>, down_for: Duration) -> Self {
        Self {
            at,
            down_for,
            phase: NodePhase::Up,
            done: Vec::new(),
        }
    }

    /// Every planned kill done and its node back.
    pub fn finished(&self) -> bool {
        self.done.len() == self.at.len() && matches!(self.phase, NodePhase::Up)
    }

    /// Whatever is due now.
    pub async fn step(&mut self, load_started: Instant) -> anyhow::Result<()> {
        let now = Instant::now();
        match &mut self.phase {
            NodePhase::Up => {
                if self.done.len() < self.at.len() && now >= self.at[self.done.len()] {
                    let spared: Vec<&str> = self.done.iter().map(|k| k.node.as_str()).collect();
                    let (node, pid) = pick_node(&spared).await?;
                    signal_kill(pid)?;
                    let at_secs = load_started.elapsed().as_secs_f64();
                    println!(
                        "  t+{at_secs:.1} s: RabbitMQ node {node} SIGKILLed (Erlang VM pid {pid})"
                    );
                    self.phase = NodePhase::Down {
                        node,
                        killed: now,
                        at_secs,
                    };
                }
            }
            NodePhase::Down {
                node,
                killed,
                at_secs,
            } => {
                if now.duration_since(*killed) >= self.down_for {
                    let child = script_command("rabbitmq-cluster", &["start"])
                        .spawn()
                        .context("running scripts/rabbitmq-cluster start")?;
                    self.phase = NodePhase::Rejoining {
                        node: node.clone(),
                        killed: *killed,
                        at_secs: *at_secs,
                        started: now,
                        child: Box::new(child),
                    };
                }
            }
            NodePhase::Rejoining {
                node,
                killed,
                at_secs,
                started,
                child,
            } => {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("scripts/rabbitmq-cluster start failed after {node} was killed ({status})");
                    }
                    let kill = NodeKill {
                        node: node.clone(),
                        at_secs: *at_secs,
                        down_secs: started.duration_since(*killed).as_secs_f64(),
                        rejoin_secs: started.elapsed().as_secs_f64(),
                    };
                    println!(
                        "  t+{:.1} s: {} started again and rejoined the cluster ({:.1} s)",
                        load_started.elapsed().as_secs_f64(),
                        kill.node,
                        kill.rejoin_secs
                    );
                    self.done.push(kill);
                    self.phase = NodePhase::Up;
                }
            }
        }
        Ok(())
    }
}

/// A running node not in `spared` (at random), and its Erlang VM's pid, from
/// `scripts/rabbitmq-cluster status` (`NAME running pid=PID amqp=… dist=…`).
async fn pick_node(spared: &[&str]) -> anyhow::Result<(String, u32)> {
    let status = run_script("rabbitmq-cluster", &["status"]).await?;
    let mut candidates = Vec::new();
    for line in status.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some("running"), Some(pid)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(pid) = pid.strip_prefix("pid=").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !spared.contains(&name) {
            candidates.push((name.to_owned(), pid));
        }
    }
    if candidates.len() < 2 {
        bail!("fewer than two running nodes to choose from:\n{status}");
    }
    let i = rand::random_range(0..candidates.len());
    Ok(candidates.swap_remove(i))
}

fn signal_kill(pid: u32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("SIGKILL to {pid}"))
}

/// What the PostgreSQL crash showed.
#[derive(Clone, Debug, Default)]
pub struct PostgresCrash {
    /// Seconds after the load started.
    pub at_secs: f64,
    /// From the crash until the server accepted connections again.
    pub down_secs: f64,
    /// From the server's return until every worker's `/readyz` answered 200 again.
    pub ready_again_secs: f64,
    /// A worker's `/readyz` answered 503 with `"database": "disconnected"` while it was down.
    pub readyz_said_unavailable: bool,
    /// Most messages ready in the events queue while it was down (they waited in RabbitMQ).
    pub most_messages_waiting: u32,
    /// The same worker and ingress processes before and after (none restarted).
    pub same_processes: bool,
}

enum PgPhase {
    Before,
    Down {
        started: Instant,
        child: Box<tokio::process::Child>,
        pids: Vec<Option<u32>>,
    },
    Recovering {
        back: Instant,
        pids: Vec<Option<u32>>,
    },
    Done,
}

/// The PostgreSQL crash, once, at `at`.
pub struct PgCrash {
    at: Instant,
    down_secs: u64,
    phase: PgPhase,
    pub report: PostgresCrash,
}

impl PgCrash {
    pub fn new(at: Instant, down_secs: u64) -> Self {
        Self {
            at,
            down_secs,
            phase: PgPhase::Before,
            report: PostgresCrash::default(),
        }
    }

    /// Done: crashed, back, and every worker ready again.
    pub fn finished(&self) -> bool {
        matches!(self.phase, PgPhase::Done)
    }

    /// While PostgreSQL is away or the workers not ready again (worker kills pause meanwhile).
    pub fn in_progress(&self) -> bool {
        matches!(
            self.phase,
            PgPhase::Down { .. } | PgPhase::Recovering { .. }
        )
    }

    /// Whatever is due now.
    pub async fn step(
        &mut self,
        load_started: Instant,
        cluster: &Cluster,
        http: &reqwest::Client,
        broker: &Broker,
        topology: &Topology,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        match &mut self.phase {
            PgPhase::Before if now >= self.at => {
                let down = self.down_secs.to_string();
                let child = script_command("postgres-scratch", &["crash", &down])
                    .spawn()
                    .context("running scripts/postgres-scratch crash")?;
                self.report.at_secs = load_started.elapsed().as_secs_f64();
                println!(
                    "  t+{:.1} s: PostgreSQL crashed (pg_ctl stop -m immediate), down {down} s",
                    self.report.at_secs
                );
                self.phase = PgPhase::Down {
                    started: now,
                    child: Box::new(child),
                    pids: cluster.pids(),
                };
            }
            PgPhase::Before | PgPhase::Done => {}
            PgPhase::Down {
                started,
                child,
                pids,
            } => {
                let waiting = ready_messages(broker, &topology.fulfillment_queue()).await;
                self.report.most_messages_waiting = self.report.most_messages_waiting.max(waiting);
                if !self.report.readyz_said_unavailable {
                    let port = cluster.workers[0].port();
                    if let Some((503, body)) = readyz(http, port).await {
                        self.report.readyz_said_unavailable = body["database"] == "disconnected";
                    }
                }
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("scripts/postgres-scratch crash failed ({status})");
                    }
                    self.report.down_secs = started.elapsed().as_secs_f64();
                    self.phase = PgPhase::Recovering {
                        back: now,
                        pids: std::mem::take(pids),
                    };
                }
            }
            PgPhase::Recovering { back, pids } => {
                let mut all_ready = true;
                for worker in &cluster.workers {
                    all_ready &= matches!(readyz(http, worker.port()).await, Some((200, _)));
                }
                if all_ready {
                    self.report.ready_again_secs = back.elapsed().as_secs_f64();
                    self.report.same_processes = *pids == cluster.pids();
                    println!(
                        "  t+{:.1} s: PostgreSQL back after {:.1} s, every worker ready again {:.1} s later ({} messages waited at most; same processes: {})",
                        load_started.elapsed().as_secs_f64(),
                        self.report.down_secs,
                        self.report.ready_again_secs,
                        self.report.most_messages_waiting,
                        self.report.same_processes
                    );
                    self.phase = PgPhase::Done;
                }
            }
        }
        Ok(())
    }
}

/// `/readyz` of the process on `port`: its status and JSON body.
async fn readyz(http: &reqwest::Client, port: u16) -> Option<(u16, serde_json::Value)> {
    let answer = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.ok()?))
}

/// Messages ready in `queue` (0 when it cannot be asked).
async fn ready_messages(broker: &Broker, queue: &str) -> u32 {
    let Ok(channel) = broker.open_channel().await else {
        return 0;
    };
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = channel
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .map_or(0, |q| q.message_count());
    let _ = channel.close(200, "done".into()).await;
    count
}
