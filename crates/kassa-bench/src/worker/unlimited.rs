//! Phase B, unlimited: sessions/s and events/s end to end (simulator → webhook → ingress →
//! RabbitMQ → worker → Stripe → PostgreSQL) and where the time goes, against a bare client making
//! the same Stripe calls on a simulator of its own (whose webhooks go nowhere), with one
//! PostgreSQL transaction per session.

use super::rig::{wait_for_webhooks, Rig};
use super::WorkerBenchArgs;
use crate::procfs::{cpu_seconds, rabbitmq_pid, CpuByProcess};
use crate::report::{quantile, Phase};
use anyhow::Context;
use futures_util::future::join_all;
use kassa_core::fulfil::checkout_session::SESSION_EXPAND;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::{CreateCheckoutSession, CustomerParams};
use kassa_stripe::{Client, ClientConfig, IdempotencyKey};
use kassa_stripe_sim::{RecordedRequest, SimConfig, Simulator};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stripe requests per endpoint (`GET /v1/checkout/sessions/{id}`, …) divided by `units`.
pub type CallsPerUnit = BTreeMap<String, f64>;

/// Counts `requests` per endpoint as Stripe names it for rate limits, per unit of work.
pub fn calls_per_unit(requests: &[RecordedRequest], units: usize) -> CallsPerUnit {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.operation.clone()).or_insert(0.0) += 1.0;
    }
    for count in counts.values_mut() {
        *count /= units.max(1) as f64;
    }
    counts
}

/// Figures of the bare-client baseline.
pub struct Baseline {
    pub phase: Phase,
    pub calls_per_session: CallsPerUnit,
    /// CPU µs per session of this process (client + its simulator) and PostgreSQL (a lower bound).
    pub cpu_us: (f64, f64),
    /// Cores busy during the timed loop.
    pub busy: f64,
}

impl Baseline {
    /// CPU µs per session, every process together.
    pub fn cpu_us_per_session(&self) -> f64 {
        self.cpu_us.0 + self.cpu_us.1
    }
}

/// CPU seconds so far of this process, the local RabbitMQ node and every PostgreSQL process.
fn cpu_now(rabbit: Option<u32>) -> (f64, f64, CpuByProcess) {
    (
        cpu_seconds(std::process::id()).unwrap_or(0.0),
        rabbit.and_then(cpu_seconds).unwrap_or(0.0),
        CpuByProcess::of_all("postgres"),
    )
}

/// Figures of the unlimited phase.
pub struct Unlimited {
    pub baseline: Baseline,
    pub sessions: usize,
    pub events: i64,
    pub loaded: Duration,
    pub delivered: Duration,
    pub worker_time: Duration,
    /// Kassa's Stripe requests while the worker ran, per endpoint, per session (from the
    /// simulator's request log only).
    pub calls_per_session: CallsPerUnit,
    /// Claim → commit per `checkout.session.completed` (ms), p50 and p99.
    pub handling_ms: (f64, f64),
    /// CPU µs per event of this process (worker + simulator), RabbitMQ, PostgreSQL (a lower bound).
    pub cpu_us: (f64, f64, f64),
    /// Cores busy during the worker phase.
    pub busy: f64,
}

impl Unlimited {
    pub fn sessions_per_second(&self) -> f64 {
        self.sessions as f64 / self.worker_time.as_secs_f64()
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.worker_time.as_secs_f64()
    }

    pub fn events_per_session(&self) -> f64 {
        self.events as f64 / self.sessions.max(1) as f64
    }

    /// CPU µs per completed session, every process together (this process, RabbitMQ, PostgreSQL).
    pub fn cpu_us_per_session(&self) -> f64 {
        let (kassa, rabbit, postgres) = self.cpu_us;
        (kassa + rabbit + postgres) * self.events_per_session()
    }
}

/// Phase B: unlimited, end to end, against the bare-client baseline.
pub async fn run(rig: &Rig, args: &WorkerBenchArgs) -> anyhow::Result<Unlimited> {
    let store = rig.stack.store.as_ref().context("database")?;
    let baseline = bare_client_baseline(store.pool(), args.sessions, args.concurrency).await?;
    println!(
        "  baseline (bare client on its own simulator, {:.1} Stripe calls and one transaction per session, concurrency {}): {:.0} sessions/s",
        baseline.calls_per_session.values().sum::<f64>(),
        args.concurrency,
        baseline.phase.per_second
    );
    let started = Instant::now();
    let ids = rig.load(args.sessions, "open").await?;
    let loaded = started.elapsed();
    wait_for_webhooks(rig.sim(), ids.len()).await?;
    let delivered = started.elapsed();
    // Everything logged from here on is the worker's: the load's creates are before, and
    // completing a session is an in-process call that is never logged.
    let before = rig.sim().requests().len();
    let rabbit = rabbitmq_pid();
    let cpu = || cpu_now(rabbit);
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
    let calls = rig.sim().requests().split_off(before);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE processed_at IS NOT NULL")
            .fetch_one(store.pool())
            .await?;
    let mut handling_ms: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM processed_at - received_at) * 1000)::float8 FROM stripe_events WHERE processed_at IS NOT NULL AND type = 'checkout.session.completed'",
    )
    .fetch_all(store.pool())
    .await?;
    handling_ms.sort_by(f64::total_cmp);
    let per_event_us = |before: f64, after: f64| (after - before) / events.max(1) as f64 * 1e6;
    let postgres_seconds = cpu_after.2.since(&cpu_before.2);
    let figures = Unlimited {
        baseline,
        sessions: ids.len(),
        events,
        loaded,
        delivered,
        worker_time,
        calls_per_session: calls_per_unit(&calls, ids.len()),
        handling_ms: (quantile(&handling_ms, 0.5), quantile(&handling_ms, 0.99)),
        // Backends that ended during the phase are not counted: PostgreSQL's is a lower bound.
        cpu_us: (
            per_event_us(cpu_before.0, cpu_after.0),
            per_event_us(cpu_before.1, cpu_after.1),
            per_event_us(0.0, postgres_seconds),
        ),
        busy: (cpu_after.0 - cpu_before.0 + cpu_after.1 - cpu_before.1 + postgres_seconds)
            / worker_time.as_secs_f64(),
    };
    println!(
        "  pipeline: {} sessions ({events} events) handled in {:.2} s by the worker = {:.0} sessions/s, {:.0} events/s",
        figures.sessions,
        worker_time.as_secs_f64(),
        figures.sessions_per_second(),
        figures.events_per_second()
    );
    Ok(figures)
}

/// The Stripe side of fulfilment without Kassa, on a simulator of its own so that the events of
/// its writes never reach the pipeline's ingress: completed setup sessions, then for each, timed, the
/// calls Kassa makes at the floor (the session read with its card expanded, create customer,
/// attach, set default) and one PostgreSQL transaction recording the result, at the same
/// concurrency, with no queue, inbox or re-fetch.
async fn bare_client_baseline(
    pool: &sqlx::PgPool,
    sessions: usize,
    concurrency: usize,
) -> anyhow::Result<Baseline> {
    let sim = Simulator::start(SimConfig::default())
        .await
        .context("starting the baseline's simulator")?;
    let mut config = ClientConfig::new(SecretString::from("sk_test_kassa_bench_base".to_owned()));
    config.api_base = sim.base_url();
    let client = Client::new(config)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_baseline_cards (session_id text PRIMARY KEY, \
         customer_id text NOT NULL, payment_method_id text NOT NULL, saved_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await?;
    let mut ids = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let params = CreateCheckoutSession {
            mode: CheckoutMode::Setup,
            currency: Some("usd".into()),
            customer_email: Some(format!("base-{i}@example.com")),
            success_url: Some("http://127.0.0.1/s".into()),
            ..Default::default()
        };
        let id = client
            .checkout_sessions()
            .create(&params, &IdempotencyKey::new(format!("base:{i}"))?)
            .await?
            .id;
        sim.complete_checkout_session(&id, "pm_card_visa")
            .map_err(|e| anyhow::anyhow!("completing {id}: {e}"))?;
        ids.push(id);
    }
    let before = sim.requests().len();
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_now(None);
    let started = Instant::now();
    let tasks = (0..concurrency).map(|_| {
        let (client, ids, next, pool) = (client.clone(), ids.clone(), next.clone(), pool.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return anyhow::Ok(latencies);
                };
                let t = Instant::now();
                let session = client.checkout_sessions().retrieve(id, SESSION_EXPAND).await?;
                let card = session
                    .setup_intent
                    .as_ref()
                    .and_then(|intent| intent.as_object())
                    .and_then(|intent| intent.payment_method.as_ref())
                    .map(|card| card.id().to_owned())
                    .with_context(|| format!("{id} has no card"))?;
                let customer = client
                    .customers()
                    .create(
                        &CustomerParams {
                            email: session.customer_details.as_ref().and_then(|d| d.email.clone()),
                            ..CustomerParams::default()
                        },
                        &IdempotencyKey::new(format!("base:{i}:c"))?,
                    )
                    .await?;
                client
                    .payment_methods()
                    .attach(&card, &customer.id, &IdempotencyKey::new(format!("base:{i}:a"))?)
                    .await?;
                client
                    .customers()
                    .set_default_payment_method(
                        &customer.id,
                        &card,
                        &IdempotencyKey::new(format!("base:{i}:d"))?,
                    )
                    .await?;
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO bench_baseline_cards (session_id, customer_id, payment_method_id) VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(&customer.id)
                .bind(&card)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                latencies.push(t.elapsed());
            }
        })
    });
    let mut latencies = Vec::new();
    for task in join_all(tasks).await {
        latencies.extend(task??);
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu_now(None);
    let phase = Phase::new(latencies, elapsed);
    let calls = sim.requests().split_off(before);
    sim.shutdown().await;
    let per_session_us = |before: f64, after: f64| (after - before) / sessions.max(1) as f64 * 1e6;
    let postgres_seconds = cpu_after.2.since(&cpu_before.2);
    Ok(Baseline {
        phase,
        calls_per_session: calls_per_unit(&calls, sessions),
        cpu_us: (
            per_session_us(cpu_before.0, cpu_after.0),
            per_session_us(0.0, postgres_seconds),
        ),
        busy: (cpu_after.0 - cpu_before.0 + postgres_seconds) / elapsed.as_secs_f64(),
    })
}
