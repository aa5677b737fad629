//! `kassa bench worker`: completed setup sessions through the whole pipeline.
//!
//! - Phase A, paced: the simulator limits `/v1` to L requests/s (429 `rate_limit` above, as
//!   Stripe does) and Kassa paces itself at L (`KASSA_STRIPE_MAX_RPS`). Figure: Stripe calls/s
//!   achieved ÷ L, and how many events failed because of a 429 (goal: ≥ 0.95 and zero).
//! - Phase B, unlimited: sessions/s and events/s end to end (simulator → webhook → ingress →
//!   RabbitMQ → worker → Stripe → PostgreSQL) and where the time goes.
//! - Baseline, same run: the same five Stripe calls per session made by a bare client at the
//!   same concurrency, with no queue, inbox or database. Ratio = pipeline ÷ baseline.

use crate::procfs::{cpu_seconds, cpu_seconds_of_all, rabbitmq_pid};
use crate::report::{write_report, Phase};
use crate::scratch::BrokerArgs;
use anyhow::{bail, Context};
use clap::Args;
use futures_util::future::join_all;
use kassa::stack::{Stack, StackConfig, StripeTarget};
use kassa_broker::Topology;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::{CreateCheckoutSession, CustomerParams};
use kassa_stripe::{Client, ClientConfig, IdempotencyKey};
use kassa_stripe_sim::{Faults, SimConfig, Simulator};
use kassa_worker::{Worker, WorkerConfig};
use secrecy::SecretString;
use serde_json::json;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `kassa bench worker`.
#[derive(Args)]
pub struct WorkerBenchArgs {
    /// Sessions in the paced phase.
    #[arg(long, default_value_t = 150)]
    paced_sessions: usize,
    /// The simulator's rate limit L in the paced phase (Stripe's test mode allows about 25/s).
    #[arg(long, default_value_t = 25)]
    rate_limit: u32,
    /// Sessions in the unlimited phase.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Back-office charges in the paced charge phase.
    #[arg(long, default_value_t = 150)]
    paced_charges: usize,
    /// Events the worker handles at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// PostgreSQL server; a scratch database `kassa_bench_…` is created on it and dropped after.
    #[arg(long, env = "KASSA_DATABASE_URL", default_value = kassa_store::DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/worker.json")]
    output: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
}

struct Rig {
    stack: Stack,
    topology: Topology,
    database_url: String,
}

impl Rig {
    async fn start(args: &WorkerBenchArgs) -> anyhow::Result<Rig> {
        let topology = Topology::new(format!("bench{:06x}.", rand::random::<u32>() & 0xff_ffff));
        let mut database_url = url::Url::parse(&args.database_url).context("KASSA_DATABASE_URL")?;
        database_url.set_path(&format!("/kassa_bench_{:08x}", rand::random::<u32>()));
        let broker = args.broker.config(topology.clone());
        let config = StackConfig {
            listen: Some("127.0.0.1:0".parse()?),
            webhooks: true,
            broker,
            database_url: Some(database_url.to_string()),
            db_max_connections: u32::try_from(args.concurrency + 8).unwrap_or(40),
            stripe: Some(StripeTarget::Embedded(Box::new(SimConfig {
                webhook_concurrency: 32,
                ..SimConfig::default()
            }))),
            stripe_max_rps: None,
            webhook_secrets: Vec::new(),
            webhook_tolerance: Duration::from_secs(300),
            worker: None, // started per phase, after the queue is loaded
            admin_token: None,
            public_url: "http://127.0.0.1:8080".into(),
            publishable_key: None,
        };
        let stack = Stack::start(config).await?;
        stack
            .broker
            .wait_ready(Duration::from_secs(15))
            .await
            .context("RabbitMQ at KASSA_AMQP_URL")?;
        Ok(Rig {
            stack,
            topology,
            database_url: database_url.to_string(),
        })
    }

    fn sim(&self) -> &Simulator {
        self.stack.sim.as_ref().expect("embedded simulator")
    }

    fn client(&self, max_rps: Option<NonZeroU32>) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(SecretString::from("sk_test_kassa_bench".to_owned()));
        config.api_base = self.sim().base_url();
        config.max_requests_per_second = max_rps;
        Ok(Client::new(config)?)
    }

    /// Creates and completes `n` setup sessions; returns when their webhooks are all accepted.
    async fn load(&self, n: usize, tag: &str) -> anyhow::Result<Vec<String>> {
        let client = Arc::new(self.client(None)?);
        let ids = join_all((0..n).map(|i| {
            let client = client.clone();
            let tag = tag.to_owned();
            async move {
                let params = CreateCheckoutSession {
                    mode: CheckoutMode::Setup,
                    currency: Some("usd".into()),
                    customer_email: Some(format!("bench-{tag}-{i}@example.com")),
                    success_url: Some("http://127.0.0.1/success".into()),
                    ..Default::default()
                };
                let key = IdempotencyKey::new(format!("bench:{tag}:{i}"))?;
                anyhow::Ok(client.checkout_sessions().create(&params, &key).await?.id)
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            self.sim()
                .complete_checkout_session(id, "pm_card_visa")
                .map_err(|e| anyhow::anyhow!("completing {id}: {e}"))?;
        }
        Ok(ids)
    }

    async fn fulfilled(&self, ids: &[String]) -> anyhow::Result<usize> {
        let store = self.stack.store.as_ref().context("database")?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM checkout_sessions WHERE id = ANY($1) AND payment_method_id IS NOT NULL")
            .bind(ids)
            .fetch_one(store.pool())
            .await?;
        Ok(count as usize)
    }

    async fn queue_empty(&self) -> bool {
        let Ok(channel) = self.stack.broker.open_channel().await else {
            return false;
        };
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(
                self.topology.fulfillment_queue().as_str().into(),
                options,
                Default::default(),
            )
            .await;
        let _ = channel.close(200, "checked".into()).await;
        declared.is_ok_and(|q| q.message_count() == 0)
    }

    /// Runs a worker until every session is fulfilled and the queue is drained.
    async fn drain(
        &self,
        worker_client: Client,
        ids: &[String],
        concurrency: usize,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let store = self.stack.store.clone().context("database")?;
        let shutdown = CancellationToken::new();
        let worker = Worker::new(
            worker_client,
            store,
            self.stack.broker.clone(),
            WorkerConfig {
                prefetch: (concurrency * 2) as u16,
                concurrency,
                ..WorkerConfig::default()
            },
        );
        let started = Instant::now();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        loop {
            if self.fulfilled(ids).await? == ids.len() && self.queue_empty().await {
                break;
            }
            if started.elapsed() > deadline {
                shutdown.cancel();
                bail!(
                    "not done within {deadline:?}: {} of {} sessions fulfilled",
                    self.fulfilled(ids).await?,
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        shutdown.cancel();
        let _ = running.await;
        Ok(elapsed)
    }

    async fn stop(self) {
        let amqp_url = self.stack.broker.config().url.clone();
        self.stack.stop().await;
        let _ = self.topology.delete_at(&amqp_url).await;
        let mut maintenance = url::Url::parse(&self.database_url).expect("parsed before");
        let name = maintenance.path().trim_start_matches('/').to_owned();
        maintenance.set_path("/postgres");
        if let Ok(pool) = sqlx::PgPool::connect(maintenance.as_str()).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&pool)
                .await;
        }
    }
}

/// Runs the benchmark.
pub async fn run(args: WorkerBenchArgs) -> anyhow::Result<()> {
    let limit = NonZeroU32::new(args.rate_limit).context("--rate-limit must be at least 1")?;
    println!(
        "kassa bench worker: paced {} sessions at L = {}/s, then {} sessions unlimited, worker concurrency {}",
        args.paced_sessions, limit, args.sessions, args.concurrency
    );

    // Phase A: paced against a rate-limited simulator.
    let rig = Rig::start(&args).await?;
    let ids = rig.load(args.paced_sessions, "paced").await?;
    wait_for_webhooks(rig.sim(), ids.len()).await?;
    let before = rig.sim().requests().len();
    rig.sim().set_faults(Faults {
        rate_limit_per_sec: Some(limit.get()),
        ..Faults::default()
    });
    let elapsed_a = rig
        .drain(
            rig.client(Some(limit))?,
            &ids,
            args.concurrency,
            Duration::from_secs(3600),
        )
        .await?;
    let calls = rig.sim().requests().split_off(before);
    let served = calls.iter().filter(|c| c.status != 429).count();
    let limited = calls.iter().filter(|c| c.status == 429).count();
    let failed_by_429: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE last_error LIKE '%rate limit%' OR last_error LIKE '%429%'")
        .fetch_one(rig.stack.store.as_ref().context("database")?.pool())
        .await?;
    let dead = kassa_broker::dlq::list(&rig.stack.broker, 1000)
        .await?
        .len();
    let achieved = served as f64 / elapsed_a.as_secs_f64();
    let paced_ratio = achieved / f64::from(limit.get());
    rig.sim().set_faults(Faults::default());
    println!(
        "  paced: {served} Stripe calls in {:.1} s = {achieved:.2}/s against L = {limit}/s → ratio {paced_ratio:.3}; {limited} answered 429; {failed_by_429} events failed by 429; {dead} dead letters",
        elapsed_a.as_secs_f64()
    );
    let charges = paced_charges(&rig, &args, limit).await?;
    println!(
        "  paced charges: {} charges in {:.1} s = {:.2}/s against L = {limit}/s → ratio {:.3}; {} answered 429; {} failed",
        charges.charges, charges.seconds, charges.per_second, charges.ratio, charges.answered_429, charges.failed
    );
    rig.stop().await;

    // Phase B: unlimited, end to end, against the bare-client baseline.
    let rig = Rig::start(&args).await?;
    let baseline =
        bare_client_baseline(&rig.client(None)?, args.sessions, args.concurrency).await?;
    println!(
        "  baseline (bare client, 5 Stripe calls per session, concurrency {}): {:.0} sessions/s",
        args.concurrency, baseline.per_second
    );
    let before = rig.sim().requests().len();
    let started = Instant::now();
    let ids = rig.load(args.sessions, "open").await?;
    let loaded = started.elapsed();
    wait_for_webhooks(rig.sim(), ids.len()).await?;
    let delivered = started.elapsed();
    let rabbit = rabbitmq_pid();
    let cpu = || {
        (
            cpu_seconds(std::process::id()).unwrap_or(0.0),
            rabbit.and_then(cpu_seconds).unwrap_or(0.0),
            cpu_seconds_of_all("postgres"),
        )
    };
    let cpu_before = cpu();
    let worker_time = rig
        .drain(
            rig.client(None)?,
            &ids,
            args.concurrency,
            Duration::from_secs(600),
        )
        .await?;
    let cpu_after = cpu();
    let store = rig.stack.store.as_ref().context("database")?;
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE processed_at IS NOT NULL")
            .fetch_one(store.pool())
            .await?;
    let handling_ms: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM processed_at - received_at) * 1000)::float8 FROM stripe_events WHERE processed_at IS NOT NULL AND type = 'checkout.session.completed'",
    )
    .fetch_all(store.pool())
    .await?;
    let worker_calls = rig.sim().requests().len() - before - 2 * args.sessions; // minus the load's create + complete
    let sessions_per_second = ids.len() as f64 / worker_time.as_secs_f64();
    let events_per_second = events as f64 / worker_time.as_secs_f64();
    let ratio = sessions_per_second / baseline.per_second;
    let (p50, p99) = percentiles(handling_ms);
    let per_event_us = |before: f64, after: f64| (after - before) / events.max(1) as f64 * 1e6;
    let kassa_us = per_event_us(cpu_before.0, cpu_after.0);
    let rabbit_us = per_event_us(cpu_before.1, cpu_after.1);
    // Backends that ended during the phase are not counted: a lower bound.
    let postgres_us = per_event_us(cpu_before.2, cpu_after.2);
    let busy = (cpu_after.0 - cpu_before.0 + cpu_after.1 - cpu_before.1 + cpu_after.2
        - cpu_before.2)
        / worker_time.as_secs_f64();
    println!(
        "  pipeline: {} sessions ({events} events) handled in {:.2} s by the worker = {sessions_per_second:.0} sessions/s, {events_per_second:.0} events/s",
        ids.len(),
        worker_time.as_secs_f64()
    );
    println!();
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!("| paced: Stripe calls/s ÷ simulator limit L={limit} | {paced_ratio:.3} ({achieved:.2}/s) | ≥ 0.95 |");
    println!("| paced: events failed by 429 / requests answered 429 / dead letters | {failed_by_429} / {limited} / {dead} | 0 failed |");
    println!(
        "| paced: charges executed/s ÷ L (one PaymentIntent per charge) | {:.3} ({:.2}/s) | ≥ 0.95 |",
        charges.ratio, charges.per_second
    );
    println!(
        "| paced: charges failed / answered 429 | {} / {} | 0 failed |",
        charges.failed, charges.answered_429
    );
    println!("| unlimited: completed sessions/s through the worker | {sessions_per_second:.0} | |");
    println!("| unlimited: events/s through the worker (all types) | {events_per_second:.0} | |");
    println!(
        "| baseline: bare Stripe calls, sessions/s | {:.0} | |",
        baseline.per_second
    );
    println!("| pipeline ÷ baseline | {ratio:.2} | |");
    println!(
        "| Stripe calls per completed session (worker, all events) | {:.1} | |",
        worker_calls as f64 / ids.len() as f64
    );
    println!(
        "| claim → commit per checkout.session.completed, p50 / p99 (ms) | {p50:.1} / {p99:.1} | |"
    );
    println!(
        "| load: create+complete {} sessions / all webhooks accepted (s) | {:.2} / {:.2} | |",
        ids.len(),
        loaded.as_secs_f64(),
        delivered.as_secs_f64()
    );
    println!();
    println!(
        "CPU per event in the worker phase: PostgreSQL ≥ {postgres_us:.0} µs, kassa process (worker + in-process \
         simulator) {kassa_us:.0} µs, RabbitMQ {rabbit_us:.0} µs; {busy:.2} of {} cores busy",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let report = json!({
        "benchmark": "worker",
        "paced": {"sessions": args.paced_sessions, "rate_limit": limit.get(), "stripe_calls": served, "seconds": elapsed_a.as_secs_f64(),
                  "calls_per_second": achieved, "ratio_to_limit": paced_ratio, "answered_429": limited, "events_failed_by_429": failed_by_429, "dead_letters": dead},
        "unlimited": {"sessions": ids.len(), "events": events, "worker_seconds": worker_time.as_secs_f64(), "sessions_per_second": sessions_per_second,
                      "events_per_second": events_per_second, "stripe_calls_per_session": worker_calls as f64 / ids.len() as f64,
                      "claim_to_commit_p50_ms": p50, "claim_to_commit_p99_ms": p99,
                      "cpu_us_per_event": {"kassa_with_simulator": kassa_us, "rabbitmq": rabbit_us, "postgres_at_least": postgres_us}, "cores_busy": busy},
        "paced_charges": {"charges": charges.charges, "seconds": charges.seconds, "per_second": charges.per_second,
                          "ratio_to_limit": charges.ratio, "answered_429": charges.answered_429, "failed": charges.failed},
        "baseline_bare_client": baseline,
        "pipeline_over_baseline": ratio,
        "concurrency": args.concurrency,
        "goals": {"paced_ratio_min": 0.95, "events_failed_by_429": 0},
    });
    rig.stop().await;
    write_report(&args.output, &report)?;
    if charges.failed > 0 {
        bail!(
            "{} charges failed in the paced charge phase",
            charges.failed
        );
    }
    if failed_by_429 > 0 || dead > 0 {
        bail!(
            "{failed_by_429} events failed by 429 and {dead} were dead-lettered in the paced phase"
        );
    }
    Ok(())
}

/// Figures of the paced charge phase.
struct ChargePhase {
    charges: usize,
    seconds: f64,
    per_second: f64,
    ratio: f64,
    answered_429: usize,
    failed: i64,
}

/// Back-office charges of one saved card, the executor paced at L against a simulator limited
/// to L: charges executed per second ÷ L. The card is given with each charge, so each charge is
/// exactly one Stripe call (the PaymentIntent); only the charge consumer and the outbox relay
/// run, so event handling does not share the budget.
async fn paced_charges(
    rig: &Rig,
    args: &WorkerBenchArgs,
    limit: NonZeroU32,
) -> anyhow::Result<ChargePhase> {
    rig.sim().set_faults(Faults::default());
    let setup = rig.client(None)?;
    let customer = setup
        .customers()
        .create(
            &CustomerParams::default(),
            &IdempotencyKey::new("bench:charges:customer")?,
        )
        .await?;
    let card = setup
        .payment_methods()
        .attach(
            "pm_card_visa",
            &customer.id,
            &IdempotencyKey::new("bench:charges:card")?,
        )
        .await?;
    let store = rig.stack.store.clone().context("database")?;
    let route = kassa_worker::charges::job_route(&rig.topology);
    for i in 0..args.paced_charges {
        let charge = kassa_store::NewCharge {
            reference: format!("bench-{i}"),
            customer_id: customer.id.clone(),
            payment_method_id: Some(card.id.clone()),
            amount: 1000 + i as i64,
            currency: "usd".into(),
            description: None,
            metadata: json!({}),
            livemode: false,
        };
        store.submit_charge(&route, &charge).await?;
    }
    let before = rig.sim().requests().len();
    rig.sim().set_faults(Faults {
        rate_limit_per_sec: Some(limit.get()),
        ..Faults::default()
    });
    let shutdown = CancellationToken::new();
    let executor = kassa_worker::ChargeExecutor::new(
        rig.client(Some(limit))?,
        store.clone(),
        rig.topology.clone(),
        kassa_worker::RecheckoutPages {
            public_url: "http://127.0.0.1:8080".into(),
        },
        u32::try_from(rig.topology.retry_ladder().len()).unwrap_or(5),
    );
    let consumer = kassa_broker::ConsumerConfig {
        work: kassa_broker::WorkQueue::Charges,
        prefetch: (args.concurrency * 2) as u16,
        concurrency: args.concurrency,
        tag: "bench-charges".into(),
    };
    let started = Instant::now();
    let running = tokio::spawn(kassa_broker::run_consumer(
        rig.stack.broker.clone(),
        consumer,
        Arc::new(executor),
        shutdown.clone(),
    ));
    let relay = tokio::spawn(kassa_worker::relay::run_outbox_relay(
        store.clone(),
        rig.stack.broker.clone(),
        Default::default(),
        shutdown.clone(),
    ));
    let settled = |status: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM charges WHERE status = $1")
                .bind(status)
                .fetch_one(&pool)
                .await
        }
    };
    loop {
        let done = settled("succeeded").await? + settled("failed").await?;
        if done as usize >= args.paced_charges {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "charges not done within an hour: {done} of {}",
                args.paced_charges
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = tokio::join!(running, relay);
    let calls = rig.sim().requests().split_off(before);
    let per_second = args.paced_charges as f64 / seconds;
    rig.sim().set_faults(Faults::default());
    Ok(ChargePhase {
        charges: args.paced_charges,
        seconds,
        per_second,
        ratio: per_second / f64::from(limit.get()),
        answered_429: calls.iter().filter(|c| c.status == 429).count(),
        failed: settled("failed").await?,
    })
}

/// The Stripe side of fulfilment without Kassa: for each session the worker's five calls
/// (retrieve session, create customer, retrieve card, attach, set default), at the same concurrency.
async fn bare_client_baseline(
    client: &Client,
    sessions: usize,
    concurrency: usize,
) -> anyhow::Result<Phase> {
    let mut ids = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            currency: Some("usd".into()),
            success_url: Some("http://127.0.0.1/s".into()),
            ..Default::default()
        };
        let id = client
            .checkout_sessions()
            .create(&params, &IdempotencyKey::new(format!("base:{i}"))?)
            .await?
            .id;
        ids.push(id);
    }
    let sim_ids = Arc::new(ids);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks = (0..concurrency).map(|_| {
        let (client, ids, next) = (client.clone(), sim_ids.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return anyhow::Ok(latencies);
                };
                let t = Instant::now();
                let session = client
                    .checkout_sessions()
                    .retrieve(id, &["setup_intent"])
                    .await?;
                let customer = client
                    .customers()
                    .create(
                        &CustomerParams::default(),
                        &IdempotencyKey::new(format!("base:{i}:c"))?,
                    )
                    .await?;
                // An open session has no card yet: use a test card id for the card calls.
                let card = client
                    .payment_methods()
                    .retrieve("pm_card_visa", &[])
                    .await?;
                let attached = client
                    .payment_methods()
                    .attach(
                        &card.id,
                        &customer.id,
                        &IdempotencyKey::new(format!("base:{i}:a"))?,
                    )
                    .await?;
                client
                    .customers()
                    .set_default_payment_method(
                        &customer.id,
                        &attached.id,
                        &IdempotencyKey::new(format!("base:{i}:d"))?,
                    )
                    .await?;
                let _ = session;
                latencies.push(t.elapsed());
            }
        })
    });
    let mut latencies = Vec::new();
    for task in join_all(tasks).await {
        latencies.extend(task??);
    }
    Ok(Phase::new(latencies, started.elapsed()))
}

async fn wait_for_webhooks(sim: &Simulator, sessions: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let accepted = sim
            .webhook_deliveries()
            .iter()
            .filter(|d| d.event_type == "checkout.session.completed" && d.status == Some(200))
            .count();
        if accepted >= sessions {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {accepted} of {sessions} checkout.session.completed webhooks accepted");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
        values.get(i).copied().unwrap_or(0.0)
    };
    (at(0.5), at(0.99))
}
