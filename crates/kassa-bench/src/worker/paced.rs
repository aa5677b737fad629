//! Phase A, paced: the simulator limits `/v1` to L requests/s (429 above, as Stripe does) and
//! Kassa paces itself at L. Completed sessions through the worker, then back-office charges
//! through the charge executor.

use super::rig::{wait_for_webhooks, Pace, Rig};
use super::WorkerBenchArgs;
use anyhow::{bail, Context};
use kassa_stripe::resources::CustomerParams;
use kassa_stripe::IdempotencyKey;
use kassa_stripe_sim::Faults;
use serde_json::json;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Figures of the paced session phase.
pub struct PacedSessions {
    pub limit: NonZeroU32,
    pub endpoint_limit: NonZeroU32,
    /// The busiest endpoint's calls/s ÷ the endpoint limit.
    pub endpoint_ratio: f64,
    pub served: usize,
    pub limited: usize,
    pub seconds: f64,
    pub achieved: f64,
    pub ratio: f64,
    pub failed_by_429: i64,
    pub dead: usize,
}

/// Phase A: completed sessions, the worker paced at L against a simulator limited to L.
pub async fn sessions(
    rig: &Rig,
    args: &WorkerBenchArgs,
    pace: Pace,
) -> anyhow::Result<PacedSessions> {
    let limit = pace.global;
    let ids = rig.load(args.paced_sessions, "paced").await?;
    wait_for_webhooks(rig.sim(), ids.len()).await?;
    let before = rig.sim().requests().len();
    rig.sim().set_faults(pace.faults());
    let elapsed = rig
        .drain(
            rig.client(Some(pace))?,
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
    let achieved = served as f64 / elapsed.as_secs_f64();
    let (ratio, endpoint_ratio) = pace.ratios(&calls, elapsed.as_secs_f64());
    rig.sim().set_faults(Faults::default());
    println!(
        "  paced: {served} Stripe calls in {:.1} s = {achieved:.2}/s against L = {limit}/s → ratio {ratio:.3}, busiest endpoint ÷ E = {}/s {endpoint_ratio:.3}; {limited} answered 429; {failed_by_429} events failed by 429; {dead} dead letters",
        elapsed.as_secs_f64(), pace.endpoint
    );
    Ok(PacedSessions {
        limit,
        endpoint_limit: pace.endpoint,
        endpoint_ratio,
        served,
        limited,
        seconds: elapsed.as_secs_f64(),
        achieved,
        ratio,
        failed_by_429,
        dead,
    })
}

/// Figures of the paced charge phase.
pub struct ChargePhase {
    pub charges: usize,
    /// The account limit L and the endpoint limit E the phase ran against.
    pub limit: NonZeroU32,
    pub endpoint_limit: NonZeroU32,
    /// Stripe calls/s ÷ L, and the busiest endpoint's calls/s ÷ E.
    pub global_ratio: f64,
    pub endpoint_ratio: f64,
    /// Stripe calls answered (not 429) per charge, per endpoint.
    pub calls_per_charge: super::unlimited::CallsPerUnit,
    pub seconds: f64,
    pub per_second: f64,
    pub ratio: f64,
    pub answered_429: usize,
    pub failed: i64,
}

/// Back-office charges of one saved card, the executor paced at L and E against a simulator
/// limited to L per account and E per endpoint: charges executed per second ÷ min(L, E) (all
/// charges use one endpoint, `POST /v1/payment_intents`, so E binds whenever E < L). The card is given with each charge, so each charge is
/// exactly one Stripe call (the PaymentIntent); only the charge consumer and the outbox relay
/// run, so event handling does not share the budget.
pub async fn charges(rig: &Rig, args: &WorkerBenchArgs, pace: Pace) -> anyhow::Result<ChargePhase> {
    let store = submit_charges(rig, args.paced_charges).await?;
    let before = rig.sim().requests().len();
    rig.sim().set_faults(pace.faults());
    let shutdown = CancellationToken::new();
    let executor = kassa_worker::ChargeJobs::new(
        rig.client(Some(pace))?,
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
    let (global_ratio, endpoint_ratio) = pace.ratios(&calls, seconds);
    rig.sim().set_faults(Faults::default());
    Ok(ChargePhase {
        charges: args.paced_charges,
        limit: pace.global,
        endpoint_limit: pace.endpoint,
        global_ratio,
        endpoint_ratio,
        calls_per_charge: super::unlimited::calls_per_unit(
            &calls
                .iter()
                .filter(|c| c.status != 429)
                .cloned()
                .collect::<Vec<_>>(),
            args.paced_charges,
        ),
        seconds,
        per_second,
        ratio: per_second / f64::from(pace.global.get().min(pace.endpoint.get())),
        answered_429: calls.iter().filter(|c| c.status == 429).count(),
        failed: settled("failed").await?,
    })
}

/// Saves one card for one customer and submits `n` charges of it, each naming the card.
async fn submit_charges(rig: &Rig, n: usize) -> anyhow::Result<kassa_store::Store> {
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
    let route = kassa_core::charges::job_route(&rig.topology);
    for i in 0..n {
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
    Ok(store)
}
