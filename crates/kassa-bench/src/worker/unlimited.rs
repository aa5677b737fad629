//! Phase B, unlimited: sessions/s and events/s end to end (simulator → webhook → ingress →
//! RabbitMQ → worker → Stripe → PostgreSQL) and where the time goes, against the same Stripe
//! calls made by a bare client.

use super::rig::{wait_for_webhooks, Rig};
use super::WorkerBenchArgs;
use crate::procfs::{cpu_seconds, cpu_seconds_of_all, rabbitmq_pid};
use crate::report::{quantile, Phase};
use anyhow::Context;
use futures_util::future::join_all;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::{CreateCheckoutSession, CustomerParams};
use kassa_stripe::{Client, IdempotencyKey};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Figures of the unlimited phase.
pub struct Unlimited {
    pub baseline: Phase,
    pub sessions: usize,
    pub events: i64,
    pub loaded: Duration,
    pub delivered: Duration,
    pub worker_time: Duration,
    pub worker_calls: usize,
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
}

/// Phase B: unlimited, end to end, against the bare-client baseline.
pub async fn run(rig: &Rig, args: &WorkerBenchArgs) -> anyhow::Result<Unlimited> {
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
    let mut handling_ms: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM processed_at - received_at) * 1000)::float8 FROM stripe_events WHERE processed_at IS NOT NULL AND type = 'checkout.session.completed'",
    )
    .fetch_all(store.pool())
    .await?;
    handling_ms.sort_by(f64::total_cmp);
    let per_event_us = |before: f64, after: f64| (after - before) / events.max(1) as f64 * 1e6;
    let figures = Unlimited {
        baseline,
        sessions: ids.len(),
        events,
        loaded,
        delivered,
        worker_time,
        // Minus the load's create + complete of each session.
        worker_calls: rig.sim().requests().len() - before - 2 * args.sessions,
        handling_ms: (quantile(&handling_ms, 0.5), quantile(&handling_ms, 0.99)),
        // Backends that ended during the phase are not counted: PostgreSQL's is a lower bound.
        cpu_us: (
            per_event_us(cpu_before.0, cpu_after.0),
            per_event_us(cpu_before.1, cpu_after.1),
            per_event_us(cpu_before.2, cpu_after.2),
        ),
        busy: (cpu_after.0 - cpu_before.0 + cpu_after.1 - cpu_before.1 + cpu_after.2
            - cpu_before.2)
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
