//! The soak's verdict: a table of checks (each with what was expected and whether it passed), a
//! table of figures (what the chaos did, what it cost), and the same as JSON.

use super::chaos::Chaos;
use super::checks::Checks;
use super::cluster::{Cluster, Role};
use super::day_after::{DayAfterReport, DAY_AND_AN_HOUR};
use super::load::Run;
use super::SoakArgs;
use crate::procfs;
use kassa_stripe_sim::DeliveryOutcome;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the run measured besides the checks.
pub struct Figures {
    pub elapsed: Duration,
    pub processes_ready: Duration,
    pub settled_after: Duration,
    pub duplicates: usize,
    pub failed_deliveries: usize,
    pub gave_up: usize,
    pub failovers: u64,
    pub stripe_requests: usize,
    pub answered_500: usize,
    pub answered_429: usize,
    pub peak_rss_mib_ingress: f64,
    pub peak_rss_mib_worker: f64,
    pub peak_rss_mib_soak: f64,
    pub ingress_starts: u32,
    pub worker_starts: u32,
    pub clean_exits: usize,
}

impl Figures {
    /// Reads the simulator's logs and the processes' records; `elapsed` and the rest are timings.
    pub fn gather(
        run: &Run,
        cluster: &Cluster,
        clean_exits: usize,
        (elapsed, processes_ready, settled_after): (Duration, Duration, Duration),
    ) -> Figures {
        let requests = run.sim.requests();
        let deliveries = run.sim.webhook_deliveries();
        Figures {
            elapsed,
            processes_ready,
            settled_after,
            duplicates: deliveries
                .iter()
                .filter(|d| d.duplicate && d.attempt == 1)
                .count(),
            failed_deliveries: deliveries
                .iter()
                .filter(|d| d.outcome != DeliveryOutcome::Delivered)
                .count(),
            gave_up: deliveries
                .iter()
                .filter(|d| d.outcome == DeliveryOutcome::GaveUp)
                .count(),
            failovers: cluster.failovers.load(Ordering::Relaxed),
            stripe_requests: requests.len(),
            answered_500: requests.iter().filter(|r| r.status == 500).count(),
            answered_429: requests.iter().filter(|r| r.status == 429).count(),
            peak_rss_mib_ingress: cluster.peak_rss_mib(Role::Ingress),
            peak_rss_mib_worker: cluster.peak_rss_mib(Role::Worker),
            peak_rss_mib_soak: procfs::own_peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
            ingress_starts: cluster.starts(Role::Ingress),
            worker_starts: cluster.starts(Role::Worker),
            clean_exits,
        }
    }
}

/// Everything the verdict is drawn from.
pub struct Outcome<'a> {
    pub args: &'a SoakArgs,
    pub checks: Checks,
    pub chaos: Chaos,
    pub day_after: Option<DayAfterReport>,
    pub figures: Figures,
}

/// The checks table as it is printed; the failed rows are kept.
struct Table {
    failed: Vec<String>,
}

impl Table {
    fn row(&mut self, name: &str, result: String, expected: String, ok: bool) {
        println!(
            "| {name} | {result} | {expected} | {} |",
            if ok { "yes" } else { "NO" }
        );
        if !ok {
            self.failed
                .push(format!("{name}: {result} (expected {expected})"));
        }
    }
}

impl Outcome<'_> {
    /// Day-after charges the run should have: `--day-after-charges`, at most twice the concurrency.
    fn day_after_expected(&self) -> usize {
        self.args
            .day_after_charges
            .min(2 * self.args.worker_concurrency as usize)
    }

    /// Prints the checks table; returns the checks that failed (empty: the run passed).
    pub fn verdict(&self) -> Vec<String> {
        let mut table = Table { failed: Vec::new() };
        println!();
        println!("| check | result | expected | pass |");
        println!("|---|---|---|---|");
        self.events_and_charges(&mut table);
        self.leftovers_and_chaos(&mut table);
        for error in &self.chaos.errors {
            table.row("run", error.clone(), "settled".into(), false);
        }
        table.failed
    }

    fn events_and_charges(&self, t: &mut Table) {
        let c = &self.checks;
        t.row(
            "Stripe events of handled types processed exactly once (inbox rows processed / events)",
            format!("{} / {}", c.events_processed, c.events),
            format!("{0} / {0}", c.events),
            c.events_processed == c.events && c.events > 0,
        );
        t.row(
            "inbox rows for events Stripe never sent / not processed",
            format!("{} / {}", c.unknown_inbox_rows, c.unprocessed),
            "0 / 0".into(),
            c.unknown_inbox_rows == 0 && c.unprocessed == 0,
        );
        t.row(
            "completed sessions fulfilled / customers created in Stripe / cards attached",
            format!(
                "{} / {} / {}",
                c.sessions_fulfilled, c.customers_created, c.cards_attached
            ),
            format!("{0} / {0} / {0}", c.sessions),
            c.sessions_fulfilled == c.sessions
                && c.customers_created == c.sessions
                && c.cards_attached == c.sessions,
        );
        t.row(
            "charges with exactly one succeeded PaymentIntent (good cards)",
            format!("{} of {}", c.charges_paid_once, c.good_charges),
            format!("{0} of {0}", c.good_charges),
            c.charges_paid_once == c.good_charges,
        );
        t.row(
            "charges with two or more succeeded PaymentIntents",
            c.charges_paid_twice.to_string(),
            "0".into(),
            c.charges_paid_twice == 0,
        );
        t.row(
            "declining-card charges: no PaymentIntent succeeded, charge needs re-pay",
            format!("{} of {}", c.declined_ok, c.declining_charges),
            format!("{0} of {0}", c.declining_charges),
            c.declined_ok == c.declining_charges,
        );
        let expected_charges = self.args.charges + self.day_after_expected();
        t.row(
            "charges in a final state, status as Stripe says",
            format!("{} of {}", c.charges_consistent, c.charges),
            format!("{0} of {0}", c.charges),
            c.charges_consistent == c.charges && c.charges == expected_charges,
        );
        let expected = self.day_after_expected();
        if expected > 0 {
            let (dead, settled) = self.day_after.as_ref().map_or((0, 0), |d| {
                (d.dead_lettered, self.settled_as_stripe_says(d))
            });
            t.row(
                "the day after: answers lost, jobs dead-lettered, replayed after 25 h on Stripe's clock (dead-lettered / then as Stripe says, paid at most once)",
                format!("{dead} / {settled} of {expected}"),
                format!("{0} / {0} of {0}", expected),
                dead == expected && settled == expected,
            );
        }
    }

    fn leftovers_and_chaos(&self, t: &mut Table) {
        let (c, chaos) = (&self.checks, &self.chaos);
        t.row(
            "messages stranded in work/retry queues; outbox rows unpublished",
            format!("{} ; {}", c.stranded_messages, c.outbox_unpublished),
            "0 ; 0".into(),
            c.stranded_messages == 0 && c.outbox_unpublished == 0,
        );
        t.row(
            "dead letters: injected permanent failures in the DLQ (inbox: refused) / any other",
            format!(
                "{} of {} ({}) / {}",
                c.poison_in_dlq,
                c.poison,
                c.poison_refused,
                c.unexpected_dead_letters + c.events_dead_lettered
            ),
            format!("{0} of {0} ({0}) / 0", c.poison),
            c.poison_in_dlq == c.poison
                && c.poison_refused == c.poison
                && c.unexpected_dead_letters == 0
                && c.events_dead_lettered == 0,
        );
        t.row(
            "webhook deliveries Stripe gave up on",
            self.figures.gave_up.to_string(),
            "0".into(),
            self.figures.gave_up == 0,
        );
        if self.args.cluster {
            let nodes: Vec<&str> = chaos.node_kills.iter().map(|k| k.node.as_str()).collect();
            let distinct = nodes.iter().collect::<std::collections::HashSet<_>>().len();
            t.row(
                "chaos done: worker kills / ingress kills / RabbitMQ nodes SIGKILLed and rejoined (distinct)",
                format!(
                    "{} / {} / {} ({distinct})",
                    chaos.worker_kills,
                    chaos.ingress_kills,
                    nodes.len()
                ),
                "≥ 1 / 1 / 2 (2)".into(),
                chaos.worker_kills >= 1
                    && chaos.ingress_kills == 1
                    && nodes.len() == 2
                    && distinct == 2,
            );
        } else {
            t.row(
                "chaos done: worker kills / ingress kills / RabbitMQ restarts",
                format!(
                    "{} / {} / {}",
                    chaos.worker_kills, chaos.ingress_kills, chaos.rabbitmq_restarts
                ),
                "≥ 1 / 1 / 1".into(),
                chaos.worker_kills >= 1 && chaos.ingress_kills == 1 && chaos.rabbitmq_restarts == 1,
            );
        }
        if self.args.postgres_crash {
            let pg = chaos.postgres.clone().unwrap_or_default();
            let yes = |b: bool| if b { "yes" } else { "no" };
            t.row(
                "PostgreSQL crashed and back / a worker's /readyz said \"database\": \"disconnected\" meanwhile / messages waited in RabbitMQ / same ingress and worker processes after",
                format!(
                    "{} / {} / {} / {}",
                    u8::from(chaos.postgres.is_some()),
                    yes(pg.readyz_said_unavailable),
                    pg.most_messages_waiting,
                    yes(pg.same_processes)
                ),
                "1 / yes / > 0 / yes".into(),
                chaos.postgres.is_some()
                    && pg.readyz_said_unavailable
                    && pg.most_messages_waiting > 0
                    && pg.same_processes,
            );
        }
    }

    /// Day-after charges that ended as Stripe says, paid at most once.
    fn settled_as_stripe_says(&self, d: &DayAfterReport) -> usize {
        d.charges
            .iter()
            .filter(|id| self.checks.consistent_ids.contains(id))
            .count()
    }

    /// Prints the figures table.
    pub fn print_figures(&self) {
        let (c, chaos, f) = (&self.checks, &self.chaos, &self.figures);
        println!();
        println!("| figure | value |");
        println!("|---|---|");
        println!(
            "| sessions / charges (declining cards) | {} / {} ({}) |",
            c.sessions, c.charges, c.declining_charges
        );
        println!(
            "| Stripe events: handled types / other types (acked, no effect) | {} / {} |",
            c.events, c.events_ignored
        );
        println!(
            "| wall time: total / processes ready / load fed (--load-secs) / settled after load start | {:.1} s / {:.1} s / {:.1} s ({:.0} s) / {:.1} s |",
            f.elapsed.as_secs_f64(),
            f.processes_ready.as_secs_f64(),
            chaos.load_fed.as_secs_f64(),
            self.load_secs(),
            f.settled_after.as_secs_f64()
        );
        if self.args.cluster {
            let kills: Vec<String> = chaos
                .node_kills
                .iter()
                .map(|k| {
                    format!(
                        "{} at t+{:.0} s, down {:.1} s, rejoined in {:.1} s",
                        k.node, k.at_secs, k.down_secs, k.rejoin_secs
                    )
                })
                .collect();
            println!(
                "| worker SIGKILLs / ingress SIGKILLs / RabbitMQ nodes SIGKILLed | {} / {} / {} ({}) |",
                chaos.worker_kills,
                chaos.ingress_kills,
                chaos.node_kills.len(),
                kills.join("; ")
            );
        } else {
            println!(
                "| worker SIGKILLs / ingress SIGKILLs / RabbitMQ restarts (app down) | {} / {} / {} ({:.1} s) |",
                chaos.worker_kills, chaos.ingress_kills, chaos.rabbitmq_restarts, chaos.rabbitmq_down_secs
            );
        }
        if let Some(pg) = &chaos.postgres {
            println!(
                "| PostgreSQL crash: at / down (stop -m immediate → accepting again) / workers ready again after / most messages waiting in RabbitMQ | t+{:.0} s / {:.1} s / {:.1} s / {} |",
                pg.at_secs, pg.down_secs, pg.ready_again_secs, pg.most_messages_waiting
            );
        }
        println!(
            "| process starts: ingress / worker | {} / {} |",
            f.ingress_starts, f.worker_starts
        );
        println!(
            "| webhooks: duplicate copies sent / failed attempts (retried) / load-balancer failovers | {} / {} / {} |",
            f.duplicates, f.failed_deliveries, f.failovers
        );
        println!(
            "| Stripe API: requests / answered 500 / answered 429 | {} / {} / {} |",
            f.stripe_requests, f.answered_500, f.answered_429
        );
        println!(
            "| events with a failed attempt recorded (retried through the ladder) / most attempts | {} / {} |",
            c.events_retried, c.max_attempts
        );
        println!(
            "| peak RSS: ingress / worker / soak process (simulator, load balancer) | {:.0} / {:.0} / {:.0} MiB |",
            f.peak_rss_mib_ingress, f.peak_rss_mib_worker, f.peak_rss_mib_soak
        );
        if let Some(d) = &self.day_after {
            println!(
                "| the day after: charges / jobs dead-lettered and replayed / keys Stripe forgot at +25 h / phase time | {} / {} / {} / {:.1} s |",
                d.charges.len(),
                d.dead_lettered,
                d.keys_forgotten,
                d.seconds
            );
        }
        println!(
            "| clean exits at the end (SIGTERM) | {} of 4 |",
            f.clean_exits
        );
    }

    fn load_secs(&self) -> f64 {
        self.args.load_secs.max(1) as f64
    }

    /// The JSON report (`target/bench/soak.json`).
    pub fn json(&self, failed: &[String]) -> serde_json::Value {
        let (args, c, chaos, f) = (self.args, &self.checks, &self.chaos, &self.figures);
        json!({
            "benchmark": "soak",
            "passed": failed.is_empty(),
            "failed_checks": failed,
            "size": {"events_target": args.events, "sessions": c.sessions, "charges": c.charges,
                     "declining_charges": c.declining_charges, "events": c.events + c.events_ignored},
            "seconds": {"total": f.elapsed.as_secs_f64(), "processes_ready": f.processes_ready.as_secs_f64(),
                        "load_nominal": self.load_secs(), "load_fed": chaos.load_fed.as_secs_f64(),
                        "settled_after_load_start": f.settled_after.as_secs_f64()},
            "chaos": {"worker_kills": chaos.worker_kills, "ingress_kills": chaos.ingress_kills,
                      "rabbitmq_restarts": chaos.rabbitmq_restarts, "rabbitmq_down_seconds": chaos.rabbitmq_down_secs,
                      "ingress_starts": f.ingress_starts, "worker_starts": f.worker_starts,
                      "rabbitmq_node_kills": chaos.node_kills.iter().map(|k| json!({
                          "node": k.node, "at_seconds": k.at_secs, "down_seconds": k.down_secs,
                          "rejoin_seconds": k.rejoin_secs})).collect::<Vec<_>>(),
                      "postgres_crash": chaos.postgres.as_ref().map(|pg| json!({
                          "at_seconds": pg.at_secs, "down_seconds": pg.down_secs,
                          "workers_ready_again_seconds": pg.ready_again_secs,
                          "readyz_said_unavailable": pg.readyz_said_unavailable,
                          "most_messages_waiting": pg.most_messages_waiting,
                          "same_processes": pg.same_processes}))},
            "faults": {"duplicate_webhooks_sent": f.duplicates, "failed_delivery_attempts": f.failed_deliveries,
                       "deliveries_given_up": f.gave_up, "load_balancer_failovers": f.failovers,
                       "stripe_requests": f.stripe_requests, "answered_500": f.answered_500, "answered_429": f.answered_429,
                       "error_rate": args.error_rate, "rate_limit_in_bursts": args.rate_limit},
            "checks": {
                "events": c.events, "events_ignored_types": c.events_ignored, "events_processed": c.events_processed,
                "unknown_inbox_rows": c.unknown_inbox_rows, "unprocessed": c.unprocessed,
                "sessions_fulfilled": c.sessions_fulfilled, "customers_created": c.customers_created,
                "cards_attached": c.cards_attached,
                "good_charges": c.good_charges, "charges_paid_once": c.charges_paid_once,
                "charges_paid_twice": c.charges_paid_twice, "declining_charges": c.declining_charges,
                "declined_ok": c.declined_ok, "charges_consistent": c.charges_consistent,
                "stranded_messages": c.stranded_messages, "outbox_unpublished": c.outbox_unpublished,
                "dead_letters": c.dead_letters, "dead_letter_ids_injected": c.poison,
                "injected_in_dlq": c.poison_in_dlq, "injected_refused_in_inbox": c.poison_refused,
                "unexpected_dead_letters": c.unexpected_dead_letters,
                "events_dead_lettered": c.events_dead_lettered,
                "events_retried": c.events_retried, "max_attempts": c.max_attempts,
            },
            "peak_rss_mib": {"ingress": f.peak_rss_mib_ingress, "worker": f.peak_rss_mib_worker,
                             "soak_process": f.peak_rss_mib_soak},
            "clean_exits": f.clean_exits,
            "day_after": self.day_after.as_ref().map(|d| json!({
                "charges": d.charges.len(),
                "dead_lettered_and_replayed": d.dead_lettered,
                "settled_as_stripe_says": self.settled_as_stripe_says(d),
                "keys_forgotten": d.keys_forgotten,
                "stripe_clock_advanced_seconds": DAY_AND_AN_HOUR,
                "seconds": d.seconds,
            })),
            "worker_concurrency": args.worker_concurrency,
            "cluster": args.cluster,
        })
    }
}
