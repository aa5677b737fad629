//! `kassa-bench worker`: completed setup sessions through the whole pipeline.
//!
//! - Phase A, paced: the simulator limits `/v1` to L requests/s per account and E per endpoint
//!   (429 `rate_limit` above, as Stripe does) and Kassa paces itself at L and E
//!   (`KASSA_STRIPE_MAX_RPS`, `KASSA_STRIPE_ENDPOINT_RPS`). Figures: Stripe calls/s achieved ÷ L,
//!   the busiest endpoint's calls/s ÷ E, and how many events failed because of a 429 (goal:
//!   ≥ 0.95 and zero). Back-office charges then run against a live-mode account limit with the
//!   same E: all are `POST /v1/payment_intents`, so E binds.
//! - Phase B, unlimited: sessions/s and events/s end to end (simulator → webhook → ingress →
//!   RabbitMQ → worker → Stripe → PostgreSQL) and where the time goes.
//! - Baseline, same run: the Stripe calls Kassa makes per session (the session read with its card
//!   expanded, create customer, attach, set default) made by a bare client on a simulator of its
//!   own, plus one PostgreSQL transaction per session, at the same concurrency, with no queue or
//!   inbox. Ratio = pipeline ÷ baseline (goal ≥ 0.4). Stripe calls are counted from each
//!   simulator's request log only, per endpoint.
//!
//! Modules: [`rig`] (the in-process stack a phase runs on), [`paced`] (phase A: sessions and
//! charges against a rate-limited simulator), [`unlimited`] (phase B and its baseline).

mod paced;
mod rig;
mod unlimited;

use crate::report::write_report;
use crate::scratch::BrokerArgs;
use anyhow::{bail, Context};
use clap::Args;
use paced::{ChargePhase, PacedSessions};
use rig::{Pace, Rig};
use serde_json::json;
use std::num::NonZeroU32;
use std::path::PathBuf;
use unlimited::Unlimited;

/// `kassa-bench worker`.
#[derive(Args)]
pub struct WorkerBenchArgs {
    /// Sessions in the paced phase.
    #[arg(long, default_value_t = 150)]
    paced_sessions: usize,
    /// The simulator's rate limit L in the paced phase (Stripe's test mode allows about 25/s).
    #[arg(long, default_value_t = 25)]
    rate_limit: u32,
    /// The simulator's per-endpoint limit E in the paced phases (Stripe: about 25/s per endpoint).
    #[arg(long, default_value_t = 25)]
    endpoint_rate_limit: u32,
    /// The account limit L in the paced charge phase (Stripe's live mode allows about 100/s).
    #[arg(long, default_value_t = 100)]
    charge_rate_limit: u32,
    /// Sessions in the unlimited phase (and in its baseline).
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
/// Runs the benchmark.
pub async fn run(args: WorkerBenchArgs) -> anyhow::Result<()> {
    let limit = NonZeroU32::new(args.rate_limit).context("--rate-limit must be at least 1")?;
    let endpoint = NonZeroU32::new(args.endpoint_rate_limit)
        .context("--endpoint-rate-limit must be at least 1")?;
    let charge_limit = NonZeroU32::new(args.charge_rate_limit)
        .context("--charge-rate-limit must be at least 1")?;
    println!(
        "kassa-bench worker: paced {} sessions at L = {}/s, then {} sessions unlimited, worker concurrency {}",
        args.paced_sessions, limit, args.sessions, args.concurrency
    );
    let rig = Rig::start(&args).await?;
    let paced = async {
        let sessions = paced::sessions(
            &rig,
            &args,
            Pace {
                global: limit,
                endpoint,
            },
        )
        .await?;
        let pace = Pace {
            global: charge_limit,
            endpoint,
        };
        let charges = paced::charges(&rig, &args, pace).await?;
        anyhow::Ok((sessions, charges))
    }
    .await;
    rig.stop().await;
    let (paced, charges) = paced?;
    println!(
        "  paced charges: {} charges in {:.1} s = {:.2}/s against L = {}/s, E = {}/s → ratio to min(L, E) {:.3}; {} answered 429; {} failed",
        charges.charges, charges.seconds, charges.per_second, charges.limit, charges.endpoint_limit, charges.ratio, charges.answered_429, charges.failed
    );
    let rig = Rig::start(&args).await?;
    let unlimited = unlimited::run(&rig, &args).await;
    rig.stop().await;
    let unlimited = unlimited?;
    report(&args, &paced, &charges, &unlimited)?;
    if charges.failed > 0 {
        bail!(
            "{} charges failed in the paced charge phase",
            charges.failed
        );
    }
    if paced.failed_by_429 > 0 || paced.dead > 0 {
        bail!(
            "{} events failed by 429 and {} were dead-lettered in the paced phase",
            paced.failed_by_429,
            paced.dead
        );
    }
    Ok(())
}
/// Prints the table and writes the JSON report.
fn report(
    args: &WorkerBenchArgs,
    paced: &PacedSessions,
    charges: &ChargePhase,
    unlimited: &Unlimited,
) -> anyhow::Result<()> {
    let PacedSessions {
        limit,
        endpoint_limit,
        endpoint_ratio,
        served,
        limited,
        seconds,
        achieved,
        ratio: paced_ratio,
        failed_by_429,
        dead,
    } = *paced;
    let u = unlimited;
    let (sessions_per_second, events_per_second) = (u.sessions_per_second(), u.events_per_second());
    let ratio = sessions_per_second / u.baseline.phase.per_second;
    let calls_per_session: f64 = u.calls_per_session.values().sum();
    let baseline_calls: f64 = u.baseline.calls_per_session.values().sum();
    let (p50, p99) = u.handling_ms;
    let (kassa_us, rabbit_us, postgres_us) = u.cpu_us;
    println!();
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!("| paced sessions: Stripe calls/s ÷ account limit L={limit} | {paced_ratio:.3} ({achieved:.2}/s) | ≥ 0.95 |");
    println!("| paced sessions: busiest endpoint's calls/s ÷ endpoint limit E={endpoint_limit} | {endpoint_ratio:.3} | ≤ 1 |");
    println!("| paced: events failed by 429 / requests answered 429 / dead letters | {failed_by_429} / {limited} / {dead} | 0 failed |");
    println!(
        "| paced charges (L={}, E={}): charges executed/s ÷ min(L, E) (one PaymentIntent per charge) | {:.3} ({:.2}/s) | ≥ 0.95 |",
        charges.limit, charges.endpoint_limit, charges.ratio, charges.per_second
    );
    println!(
        "| paced charges: Stripe calls/s ÷ L / busiest endpoint ÷ E | {:.3} / {:.3} | |",
        charges.global_ratio, charges.endpoint_ratio
    );
    for (endpoint, per_charge) in &charges.calls_per_charge {
        println!("| — `{endpoint}` per charge | {per_charge:.2} | |");
    }
    println!(
        "| paced: charges failed / answered 429 | {} / {} | 0 failed |",
        charges.failed, charges.answered_429
    );
    println!(
        "| unlimited: completed sessions/s through the worker ({} sessions) | {sessions_per_second:.0} | |",
        u.sessions
    );
    println!("| unlimited: events/s through the worker (all types) | {events_per_second:.0} | |");
    println!(
        "| unlimited: events per session | {:.2} | |",
        u.events_per_session()
    );
    println!(
        "| baseline: same calls + one transaction per session, own simulator, sessions/s | {:.0} | |",
        u.baseline.phase.per_second
    );
    println!("| **pipeline ÷ baseline** | **{ratio:.2}** | ≥ 0.4 |");
    println!(
        "| Stripe calls per completed session, Kassa / baseline | {calls_per_session:.2} / {baseline_calls:.2} | ≤ 4 |"
    );
    for (endpoint, per_session) in &u.calls_per_session {
        let base = u
            .baseline
            .calls_per_session
            .get(endpoint)
            .copied()
            .unwrap_or(0.0);
        println!(
            "| — `{endpoint}` per session, Kassa / baseline | {per_session:.2} / {base:.2} | |"
        );
    }
    for (endpoint, base) in &u.baseline.calls_per_session {
        if !u.calls_per_session.contains_key(endpoint) {
            println!("| — `{endpoint}` per session, Kassa / baseline | 0.00 / {base:.2} | |");
        }
    }
    println!(
        "| claim → commit per checkout.session.completed, p50 / p99 (ms) | {p50:.1} / {p99:.1} | |"
    );
    println!(
        "| load: create+complete {} sessions / all webhooks accepted (s) | {:.2} / {:.2} | |",
        u.sessions,
        u.loaded.as_secs_f64(),
        u.delivered.as_secs_f64()
    );
    println!();
    println!(
        "CPU per event in the worker phase: PostgreSQL ≥ {postgres_us:.0} µs, kassa process (worker + in-process \
         simulator) {kassa_us:.0} µs, RabbitMQ {rabbit_us:.0} µs; {:.2} of {} cores busy",
        u.busy,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let (base_process_us, base_postgres_us) = u.baseline.cpu_us;
    let base_cpu = u.baseline.cpu_us_per_session();
    let pipeline_cpu = u.cpu_us_per_session();
    let rabbit_per_session = rabbit_us * u.events_per_session();
    // The throughput ratio both would reach if each used the same cores fully: load on the
    // machine moves each phase's rate, but much less what a session costs.
    let cpu_ratio = base_cpu / pipeline_cpu.max(1e-9);
    // Were Kassa's process and PostgreSQL to cost no more than the baseline's, RabbitMQ's CPU per
    // session alone would leave this ratio.
    let rabbit_bound = base_cpu / (base_cpu + rabbit_per_session).max(1e-9);
    println!(
        "CPU per session: pipeline {pipeline_cpu:.0} µs (RabbitMQ {rabbit_per_session:.0}), baseline {base_cpu:.0} µs \
         (process {base_process_us:.0}, PostgreSQL ≥ {base_postgres_us:.0}; {:.2} cores busy) → baseline ÷ pipeline \
         {cpu_ratio:.2}; with RabbitMQ's share alone added to the baseline: {rabbit_bound:.2}",
        u.baseline.busy
    );
    let report = json!({
        "benchmark": "worker",
        "paced": {"sessions": args.paced_sessions, "rate_limit": limit.get(), "stripe_calls": served, "seconds": seconds,
                  "calls_per_second": achieved, "ratio_to_limit": paced_ratio,
                  "endpoint_rate_limit": endpoint_limit.get(), "busiest_endpoint_ratio_to_endpoint_limit": endpoint_ratio, "answered_429": limited, "events_failed_by_429": failed_by_429, "dead_letters": dead},
        "unlimited": {"sessions": u.sessions, "events": u.events, "events_per_session": u.events_per_session(),
                      "worker_seconds": u.worker_time.as_secs_f64(), "sessions_per_second": sessions_per_second,
                      "events_per_second": events_per_second, "stripe_calls_per_session": calls_per_session,
                      "stripe_calls_per_session_by_endpoint": u.calls_per_session,
                      "claim_to_commit_p50_ms": p50, "claim_to_commit_p99_ms": p99,
                      "cpu_us_per_event": {"kassa_with_simulator": kassa_us, "rabbitmq": rabbit_us, "postgres_at_least": postgres_us}, "cores_busy": u.busy},
        "paced_charges": {"charges": charges.charges, "rate_limit": charges.limit.get(), "endpoint_rate_limit": charges.endpoint_limit.get(),
                          "calls_ratio_to_limit": charges.global_ratio, "stripe_calls_per_charge_by_endpoint": charges.calls_per_charge, "busiest_endpoint_ratio_to_endpoint_limit": charges.endpoint_ratio, "seconds": charges.seconds, "per_second": charges.per_second,
                          "ratio_to_min_limit": charges.ratio, "answered_429": charges.answered_429, "failed": charges.failed},
        "baseline_bare_client": {"phase": u.baseline.phase, "stripe_calls_per_session": baseline_calls,
                                 "stripe_calls_per_session_by_endpoint": u.baseline.calls_per_session,
                                 "postgres_transactions_per_session": 1,
                                 "cpu_us_per_session": {"process_with_simulator": base_process_us, "postgres_at_least": base_postgres_us},
                                 "cores_busy": u.baseline.busy},
        "cpu_us_per_session": {"pipeline": pipeline_cpu, "pipeline_rabbitmq": rabbit_per_session, "baseline": base_cpu,
                               "baseline_over_pipeline": cpu_ratio, "bound_from_rabbitmq_alone": rabbit_bound},
        "pipeline_over_baseline": ratio,
        "concurrency": args.concurrency,
        "goals": {"paced_ratio_min": 0.95, "events_failed_by_429": 0, "pipeline_over_baseline_min": 0.4, "stripe_calls_per_session_max": 4},
    });
    write_report(&args.output, &report)
}
