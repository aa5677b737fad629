//! "The day after": charges whose creates Stripe carries out but whose answers never reach
//! Kassa (both workers SIGKILLed while they wait), their jobs dead-lettered because Stripe cannot
//! be asked about them, a day and an hour passing on Stripe's clock (every Idempotency-Key
//! forgotten), and every dead letter replayed as `kassa dlq replay --all` does.

use super::chaos::base_faults;
use super::checks::settle_state;
use super::cluster::{Launch, Proc};
use super::load::{lock, Run};
use super::SoakArgs;
use anyhow::{bail, Context};
use kassa_broker::Broker;
use kassa_store::ChargeStatus;
use kassa_stripe_sim::Faults;
use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A day and an hour, in seconds: past Stripe's 24 hours of Idempotency-Keys.
pub const DAY_AND_AN_HOUR: u32 = 25 * 60 * 60;

/// How long the answers of the phase's creates take to leave Stripe: the workers must be killed
/// before.
const ANSWER_DELAY: Duration = Duration::from_secs(60);

/// "The day after": charges whose creates Stripe carries out but whose answers never reach Kassa,
/// their jobs dead-lettered, and every dead letter replayed after 25 hours on Stripe's clock.
pub struct DayAfter<'a> {
    pub args: &'a SoakArgs,
    pub run: &'a Run,
    pub broker: &'a Broker,
    pub launch: &'a Launch,
    pub hold_webhooks: &'a AtomicBool,
    pub deadline: Instant,
}

/// What the day after did.
pub struct DayAfterReport {
    /// The charges of the phase.
    pub charges: Vec<i64>,
    /// Their jobs found in the dead letters before the replay.
    pub dead_lettered: usize,
    /// Idempotency-Keys Stripe forgot when the clock moved.
    pub keys_forgotten: usize,
    /// Wall time of the phase.
    pub seconds: f64,
}

impl DayAfter<'_> {
    /// Runs the phase on the settled run; `workers` are killed and started again on the way.
    pub async fn run(&self, workers: &mut [Proc; 2]) -> anyhow::Result<DayAfterReport> {
        let started = Instant::now();
        let ids = self.answers_lost(workers).await?;
        let dead_lettered = self.dead_lettered(workers, &ids).await?;
        // A day and an hour later, on Stripe's side: every key is forgotten.
        self.run.sim.set_faults(Faults::default());
        let advanced = self.run.sim.advance_clock(DAY_AND_AN_HOUR);
        println!(
            "  the day after: {} charges whose answers were lost, {dead_lettered} jobs dead-lettered; \
             Stripe's clock +25 h ({} keys forgotten); `kassa dlq replay --all`",
            ids.len(),
            advanced.keys_forgotten
        );
        self.replay(&ids).await?;
        self.resume(workers).await?;
        Ok(DayAfterReport {
            charges: ids,
            dead_lettered,
            keys_forgotten: advanced.keys_forgotten,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The workers' launch with the events poller off.
    fn without_poller(&self) -> Launch {
        Launch {
            events_poll_interval: Some("off"),
            ..self.launch.clone()
        }
    }

    /// Submits the phase's charges while webhooks are held; Stripe carries out each create, and
    /// both workers die while the answers are on their way. Returns the charges' ids.
    async fn answers_lost(&self, workers: &mut [Proc; 2]) -> anyhow::Result<Vec<i64>> {
        let run = self.run;
        // The events poller is off from here until `resume`. It would publish the held webhooks'
        // events; their handlers wait for the locks of the charges in flight, holding the
        // workers' slots meanwhile, so later creates could go out after earlier answers arrived
        // (a charge that gets its answer is settled, not dead-lettered).
        let without_poller = self.without_poller();
        for worker in workers.iter_mut() {
            worker
                .kill_and_restart(&without_poller, Duration::ZERO)
                .await?;
        }
        let n = self
            .args
            .day_after_charges
            .min(2 * self.args.worker_concurrency as usize);
        // An ingress outage that Stripe retries through: the webhooks of these PaymentIntents
        // wait, so only the charge jobs (and their dead letters) settle the charges.
        self.hold_webhooks.store(true, Ordering::Relaxed);
        let since = run.sim.now();
        // Stripe carries out each create; its answer then takes a minute to leave.
        let sent = Instant::now();
        run.sim.set_faults(Faults {
            latency_after: ANSWER_DELAY,
            path_contains: Some("/v1/payment_intents".into()),
            ..Faults::default()
        });
        let route = kassa_core::charges::job_route(&run.topology);
        let first = lock(&run.charges).len();
        for k in 0..n {
            run.charge(self.args.charges + k, &route).await?;
        }
        let ids: Vec<i64> = lock(&run.charges)[first..]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        self.until("Stripe has made every PaymentIntent", || async {
            Ok(intents_since(run, since, &ids).await? >= ids.len())
        })
        .await?;
        for worker in workers.iter_mut() {
            worker.kill().await?;
        }
        // An answer that reached a worker before the kill settles its charge: the phase would
        // then wait for a dead letter that never comes.
        let waited = sent.elapsed();
        if waited >= ANSWER_DELAY {
            bail!(
                "the workers were killed {:.1} s after the first create, not before its answer \
                 ({} s): the phase's charges were not all sent in time",
                waited.as_secs_f64(),
                ANSWER_DELAY.as_secs()
            );
        }
        Ok(ids)
    }

    /// Starts the workers again while Stripe cannot be asked about PaymentIntents, until every
    /// job of `ids` is in the dead letters with its charge still open. Returns how many are.
    async fn dead_lettered(&self, workers: &mut [Proc; 2], ids: &[i64]) -> anyhow::Result<usize> {
        // Stripe cannot be asked about PaymentIntents now (a 400 no retry cures): each job,
        // redelivered, finds its attempt started, cannot look it up, and is dead-lettered with
        // its charge left open. The events poller is still off (a backstop that would find the
        // held events); it comes back with the workers' usual settings in `resume`.
        self.run.sim.set_faults(Faults {
            error_rate: 1.0,
            error_status: 400,
            path_contains: Some("/v1/payment_intents".into()),
            ..Faults::default()
        });
        let without_poller = self.without_poller();
        for worker in workers.iter_mut() {
            worker.start(&without_poller)?;
        }
        let wanted: HashSet<String> = ids.iter().map(|id| format!("charge:{id}:1")).collect();
        let dead_lettered = AtomicUsize::new(0);
        self.until("every job in the dead letters", || async {
            let letters = kassa_broker::dlq::list(self.broker, 100_000).await?;
            let found = letters
                .iter()
                .filter(|l| wanted.contains(&l.message_id))
                .count();
            dead_lettered.store(found, Ordering::Relaxed);
            Ok(found == wanted.len())
        })
        .await?;
        for id in ids {
            let charge = self
                .run
                .store
                .charge(*id)
                .await?
                .context("a day-after charge")?;
            if charge.status.is_final() {
                bail!(
                    "charge {id} is {} before its dead letter was replayed",
                    charge.status
                );
            }
        }
        Ok(dead_lettered.into_inner())
    }

    /// `kassa dlq replay --all`, then waits until every charge of `ids` is settled.
    async fn replay(&self, ids: &[i64]) -> anyhow::Result<()> {
        let replay = tokio::process::Command::new(&self.launch.exe)
            .args(["dlq", "replay", "--all"])
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("KASSA_AMQP_URL", &self.launch.amqp_url)
            .env("KASSA_AMQP_PREFIX", &self.launch.prefix)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running kassa dlq replay --all")?;
        if !replay.status.success() {
            bail!(
                "kassa dlq replay --all failed: {}",
                String::from_utf8_lossy(&replay.stderr)
            );
        }
        self.until("every replayed charge settled", || async {
            let mut open = 0;
            for id in ids {
                if !self.run.store.charge(*id).await?.is_some_and(|c| {
                    matches!(
                        c.status,
                        ChargeStatus::Succeeded
                            | ChargeStatus::RequiresRecheckout
                            | ChargeStatus::Failed
                    )
                }) {
                    open += 1;
                }
            }
            Ok(open == 0)
        })
        .await
    }

    /// The outage ends: the held webhooks arrive (Stripe's next retry), the workers run with
    /// their usual settings, and the run settles again.
    async fn resume(&self, workers: &mut [Proc; 2]) -> anyhow::Result<()> {
        self.hold_webhooks.store(false, Ordering::Relaxed);
        self.run.sim.set_faults(base_faults(self.args));
        for worker in workers.iter_mut() {
            worker.kill_and_restart(self.launch, Duration::ZERO).await?;
        }
        let settled = AtomicUsize::new(0);
        self.until("the run to settle again", || async {
            if settle_state(self.run).await?.settled() {
                Ok(settled.fetch_add(1, Ordering::Relaxed) + 1 >= 3)
            } else {
                settled.store(0, Ordering::Relaxed);
                Ok(false)
            }
        })
        .await
    }

    /// Polls `check` every 250 ms until it holds, or fails at the run's deadline.
    async fn until<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        loop {
            if check().await? {
                return Ok(());
            }
            if Instant::now() > self.deadline {
                bail!("waiting until {what}: past the deadline");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// How many of the charges `ids` have a PaymentIntent on Stripe created since `since`.
async fn intents_since(run: &Run, since: i64, ids: &[i64]) -> anyhow::Result<usize> {
    let wanted: HashSet<String> = ids.iter().map(i64::to_string).collect();
    let mut params = kassa_stripe::resources::ListPaymentIntents {
        created: Some(kassa_stripe::resources::RangeQuery {
            gte: Some(since),
            ..Default::default()
        }),
        limit: Some(100),
        ..Default::default()
    };
    let mut found = HashSet::new();
    loop {
        let page = run.client.payment_intents().list(&params).await?;
        for intent in &page.data {
            if let Some(id) = intent
                .metadata
                .get(kassa_core::keys::CHARGE_ID_METADATA)
                .filter(|id| wanted.contains(*id))
            {
                found.insert(id.clone());
            }
        }
        match page.next_starting_after() {
            Some(last) => params.starting_after = Some(last.to_owned()),
            None => return Ok(found.len()),
        }
    }
}
