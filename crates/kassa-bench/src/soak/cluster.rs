//! The deployment under test: two `kassa ingress` and two `kassa worker` processes, each started
//! again after every kill, behind a small round-robin load balancer that the simulator delivers
//! webhooks to.

use super::SOAK_API_KEY;
use crate::procfs;
use crate::scratch;
use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Ingress or worker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Ingress,
    Worker,
}

impl Role {
    /// The `kassa` subcommand, and the name of its log files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Worker => "worker",
        }
    }
}

/// Everything a child process is started with.
#[derive(Clone)]
pub struct Launch {
    pub exe: PathBuf,
    pub amqp_url: String,
    pub prefix: String,
    pub database_url: String,
    pub sim_base: String,
    pub webhook_secret: String,
    pub worker_concurrency: u32,
    pub log_dir: PathBuf,
    /// `KASSA_EVENTS_POLL_INTERVAL` of workers (`None`: the default).
    pub events_poll_interval: Option<&'static str>,
}

/// One `kassa ingress` or `kassa worker` process, started again after each kill.
pub struct Proc {
    pub role: Role,
    index: usize,
    port: u16,
    child: tokio::process::Child,
    /// How many times it was started.
    pub starts: u32,
    /// The largest resident set size seen over all its lives.
    pub peak_rss_kib: u64,
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

    /// Its pid (`None` once it has exited).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The port of its HTTP listener (`/readyz`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Notes the resident set size now.
    pub fn sample_rss(&mut self) {
        if let Some(kib) = self.pid().and_then(procfs::rss_kib) {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
    }

    /// SIGKILL, wait for the exit, start again on the same port.
    pub async fn kill_and_restart(
        &mut self,
        launch: &Launch,
        pause: Duration,
    ) -> anyhow::Result<()> {
        self.kill().await?;
        tokio::time::sleep(pause).await;
        self.start(launch)
    }

    /// SIGKILL and wait for the exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.sample_rss();
        if let Some(pid) = self.pid() {
            signal(pid, nix::sys::signal::Signal::SIGKILL)?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }

    /// Starts the process again on the same port.
    pub fn start(&mut self, launch: &Launch) -> anyhow::Result<()> {
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
        // Several processes on one machine: each its own metrics port.
        .env("KASSA_METRICS_LISTEN", "127.0.0.1:0")
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

/// The two ingresses, the two workers and the load balancer in front of the ingresses.
pub struct Cluster {
    pub ingresses: [Proc; 2],
    pub workers: [Proc; 2],
    /// Where the simulator delivers webhooks: the load balancer.
    pub webhook_url: String,
    /// Requests the load balancer sent to the other ingress because the first refused.
    pub failovers: Arc<AtomicU64>,
    /// While set, the load balancer answers every webhook 503 (an ingress outage).
    pub hold_webhooks: Arc<AtomicBool>,
}

impl Cluster {
    /// Starts the load balancer (on the ports the processes will listen on, before they do).
    pub async fn balancer(shutdown: CancellationToken) -> anyhow::Result<(Balancer, [u16; 2])> {
        let ports = [scratch::free_port()?, scratch::free_port()?];
        let upstreams = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/webhooks/stripe"))
            .collect();
        Ok((Balancer::start(upstreams, shutdown).await?, ports))
    }

    /// Starts the four processes behind `balancer` and waits until each is ready.
    pub async fn start(
        launch: &Launch,
        balancer: Balancer,
        ingress_ports: [u16; 2],
        http: &reqwest::Client,
    ) -> anyhow::Result<Cluster> {
        let worker_ports = [scratch::free_port()?, scratch::free_port()?];
        let cluster = Cluster {
            ingresses: [
                Proc::spawn(launch, Role::Ingress, 0, ingress_ports[0])?,
                Proc::spawn(launch, Role::Ingress, 1, ingress_ports[1])?,
            ],
            workers: [
                Proc::spawn(launch, Role::Worker, 0, worker_ports[0])?,
                Proc::spawn(launch, Role::Worker, 1, worker_ports[1])?,
            ],
            webhook_url: balancer.url,
            failovers: balancer.failovers,
            hold_webhooks: balancer.hold,
        };
        for port in ingress_ports.iter().chain(&worker_ports) {
            wait_ready(http, *port).await?;
        }
        Ok(cluster)
    }

    /// The pid of every process (ingresses, then workers).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.ingresses
            .iter()
            .chain(&self.workers)
            .map(Proc::pid)
            .collect()
    }

    /// Every process.
    fn processes(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.ingresses.iter_mut().chain(self.workers.iter_mut())
    }

    /// Notes every process's resident set size now.
    pub fn sample_rss(&mut self) {
        self.processes().for_each(Proc::sample_rss);
    }

    /// Stops every process gracefully (unacked messages go back to their queues); how many
    /// exited cleanly.
    pub async fn stop(&mut self) -> usize {
        let mut clean_exits = 0;
        for p in self.processes() {
            if p.stop().await {
                clean_exits += 1;
            }
        }
        clean_exits
    }

    /// The largest resident set size of any process of `role`, in MiB.
    pub fn peak_rss_mib(&self, role: Role) -> f64 {
        self.of(role).map(|p| p.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }

    /// How many times processes of `role` were started.
    pub fn starts(&self, role: Role) -> u32 {
        self.of(role).map(|p| p.starts).sum()
    }

    fn of(&self, role: Role) -> impl Iterator<Item = &Proc> {
        self.ingresses
            .iter()
            .chain(&self.workers)
            .filter(move |p| p.role == role)
    }
}

/// The load balancer in front of the two ingresses: round robin, and a request whose upstream
/// refuses the connection goes to the other one (as nginx's `proxy_next_upstream error` does).
/// With both down it answers 502 and Stripe retries later.
#[derive(Clone)]
pub struct Balancer {
    url: String,
    upstreams: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    failovers: Arc<AtomicU64>,
    /// While set, every webhook is answered 503 (an ingress outage): Stripe retries it later.
    hold: Arc<AtomicBool>,
    http: reqwest::Client,
}

impl Balancer {
    async fn start(upstreams: Vec<String>, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let lb = Balancer {
            url: format!("http://{address}/webhooks/stripe"),
            upstreams: Arc::new(upstreams),
            next: Arc::new(AtomicUsize::new(0)),
            failovers: Arc::new(AtomicU64::new(0)),
            hold: Arc::new(AtomicBool::new(false)),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()?,
        };
        let app = axum::Router::new()
            .route("/webhooks/stripe", axum::routing::post(balance))
            .with_state(lb.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Ok(lb)
    }

    /// Where it listens for webhooks.
    pub fn url(&self) -> &str {
        &self.url
    }
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
