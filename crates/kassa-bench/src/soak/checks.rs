//! The checks: where the run stands while the chaos goes on ([`settle_state`]), and at the end,
//! with every process stopped, what Stripe, PostgreSQL and RabbitMQ say happened ([`check`]):
//! every event processed once, every charge paid at most once, nothing stranded, and only the
//! injected failures in the dead letters.

use super::load::{lock, Run};
use anyhow::Context;
use kassa_broker::Broker;
use kassa_stripe::objects::Event;
use kassa_stripe::resources::ListEvents;
use std::collections::{HashMap, HashSet};

/// Where the run stands while the chaos goes on.
pub struct Progress {
    sent: usize,
    processed: usize,
    charges_open: i64,
    outbox: i64,
}

impl Progress {
    /// Everything sent is processed, no charge open, nothing waiting in the outbox.
    pub fn settled(&self) -> bool {
        self.sent > 0 && self.processed >= self.sent && self.charges_open == 0 && self.outbox == 0
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} events sent processed, {} charges open, {} outbox rows unpublished",
            self.processed, self.sent, self.charges_open, self.outbox
        )
    }
}

/// Where the run stands now.
pub async fn settle_state(run: &Run) -> anyhow::Result<Progress> {
    let sent: HashSet<String> = run
        .sim
        .webhook_deliveries()
        .into_iter()
        .filter(|d| kassa_worker::events::handles(&d.event_type))
        .map(|d| d.event_id)
        .collect();
    let processed: Vec<String> =
        sqlx::query_scalar("SELECT id FROM stripe_events WHERE processed_at IS NOT NULL")
            .fetch_all(run.store.pool())
            .await?;
    let processed = processed.iter().filter(|id| sent.contains(*id)).count();
    let charges_open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM charges WHERE status NOT IN ('succeeded', 'failed', 'requires_recheckout')",
    )
    .fetch_one(run.store.pool())
    .await?;
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(run.store.pool())
        .await?;
    Ok(Progress {
        sent: sent.len(),
        processed,
        charges_open,
        outbox,
    })
}

/// The figures the checks compare.
#[derive(Default)]
pub struct Checks {
    pub events: usize,
    pub events_ignored: usize,
    pub events_processed: usize,
    pub unknown_inbox_rows: usize,
    pub unprocessed: usize,
    pub events_dead_lettered: usize,
    pub events_retried: usize,
    pub max_attempts: i32,
    pub sessions: usize,
    pub sessions_fulfilled: usize,
    pub customers_created: usize,
    pub cards_attached: usize,
    pub charges: usize,
    pub good_charges: usize,
    pub charges_paid_once: usize,
    pub charges_paid_twice: usize,
    pub declining_charges: usize,
    pub declined_ok: usize,
    pub charges_consistent: usize,
    /// The charges counted in `charges_consistent`.
    pub consistent_ids: HashSet<i64>,
    pub stranded_messages: u64,
    pub outbox_unpublished: i64,
    pub dead_letters: usize,
    pub poison: usize,
    pub poison_refused: usize,
    pub poison_in_dlq: usize,
    pub unexpected_dead_letters: usize,
}

/// What Stripe, PostgreSQL and RabbitMQ say happened, once every process has stopped.
pub async fn check(run: &Run, broker: &Broker) -> anyhow::Result<Checks> {
    let mut c = Checks::default();
    let mut events = stripe_events(run).await?;
    // Types Kassa does not handle (payment_intent.created, …) are acked without an inbox row.
    c.events_ignored = events
        .iter()
        .filter(|e| !kassa_worker::events::handles(&e.type_))
        .count();
    events.retain(|e| {
        kassa_worker::events::handles(&e.type_) || e.type_ == "payment_intent.succeeded"
    });
    c.events = events
        .iter()
        .filter(|e| kassa_worker::events::handles(&e.type_))
        .count();
    let poison: HashSet<String> = lock(&run.poison).iter().cloned().collect();
    c.poison = poison.len();
    check_inbox(run, &events, &poison, &mut c).await?;
    check_sessions(run, &mut c).await?;
    check_charges(run, &events, &mut c).await?;
    check_queues(run, broker, &poison, &mut c).await?;
    Ok(c)
}

/// Every event Stripe has, from its own list (newest first, 100 a page).
async fn stripe_events(run: &Run) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut starting_after = None;
    loop {
        let page = run
            .client
            .events()
            .list(&ListEvents {
                limit: Some(100),
                starting_after: starting_after.clone(),
                ..Default::default()
            })
            .await
            .context("listing the simulator's events")?;
        starting_after = page.data.last().map(|e| e.id.clone());
        let more = page.has_more;
        events.extend(page.data);
        if !more || starting_after.is_none() {
            return Ok(events);
        }
    }
}

/// The inbox: one processed row per Stripe event, the injected failures refused.
async fn check_inbox(
    run: &Run,
    events: &[Event],
    poison: &HashSet<String>,
    c: &mut Checks,
) -> anyhow::Result<()> {
    let inbox: Vec<(String, bool, bool, i32)> = sqlx::query_as(
        "SELECT id, processed_at IS NOT NULL, dead_lettered_at IS NOT NULL, attempts FROM stripe_events",
    )
    .fetch_all(run.store.pool())
    .await?;
    let stripe_ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    for (id, processed, dead, attempts) in &inbox {
        if poison.contains(id) {
            if *dead && !processed {
                c.poison_refused += 1;
            }
            continue;
        }
        if !stripe_ids.contains(id.as_str()) {
            c.unknown_inbox_rows += 1;
        } else if *processed {
            c.events_processed += 1;
        }
        if !processed {
            c.unprocessed += 1;
        }
        if *dead {
            c.events_dead_lettered += 1;
        }
        if *attempts > 1 {
            c.events_retried += 1;
        }
        c.max_attempts = c.max_attempts.max(*attempts);
    }
    Ok(())
}

/// Sessions: each fulfilled once, one customer and one attach in Stripe's request log.
async fn check_sessions(run: &Run, c: &mut Checks) -> anyhow::Result<()> {
    let session_ids: Vec<String> = lock(&run.sessions).iter().map(|s| s.id.clone()).collect();
    c.sessions = session_ids.len();
    let fulfilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM checkout_sessions WHERE id = ANY($1) AND payment_method_id IS NOT NULL AND customer_id IS NOT NULL",
    )
    .bind(&session_ids)
    .fetch_one(run.store.pool())
    .await?;
    c.sessions_fulfilled = usize::try_from(fulfilled).unwrap_or(0);
    let requests = run.sim.requests();
    let effective = |r: &&kassa_stripe_sim::RecordedRequest| {
        r.method == "POST" && r.status == 200 && !r.replayed
    };
    c.customers_created = requests
        .iter()
        .filter(effective)
        .filter(|r| r.path == "/v1/customers")
        .count();
    c.cards_attached = requests
        .iter()
        .filter(effective)
        .filter(|r| r.path.ends_with("/attach"))
        .count();
    Ok(())
}

/// Charges: succeeded PaymentIntents per charge, from Stripe's events, against each charge's status.
async fn check_charges(run: &Run, events: &[Event], c: &mut Checks) -> anyhow::Result<()> {
    let mut succeeded: HashMap<i64, usize> = HashMap::new();
    for event in events
        .iter()
        .filter(|e| e.type_ == "payment_intent.succeeded")
    {
        if let Some(id) = event.data.object["metadata"][kassa_core::keys::CHARGE_ID_METADATA]
            .as_str()
            .and_then(|s| s.parse().ok())
        {
            *succeeded.entry(id).or_default() += 1;
        }
    }
    let charges = lock(&run.charges).clone();
    c.charges = charges.len();
    for (id, declining) in charges {
        let paid = succeeded.get(&id).copied().unwrap_or(0);
        let record = run
            .store
            .charge(id)
            .await?
            .with_context(|| format!("charge {id} is gone"))?;
        let status = record.status.as_str();
        if paid >= 2 {
            c.charges_paid_twice += 1;
        }
        let consistent = if declining {
            c.declining_charges += 1;
            if paid == 0 && status == "requires_recheckout" {
                c.declined_ok += 1;
            }
            paid == 0 && (status == "requires_recheckout" || status == "failed")
        } else {
            c.good_charges += 1;
            if paid == 1 {
                c.charges_paid_once += 1;
            }
            paid == 1 && status == "succeeded"
        };
        if consistent {
            c.charges_consistent += 1;
            c.consistent_ids.insert(id);
        }
    }
    Ok(())
}

/// Nothing stranded: the work and retry queues are empty once the workers have stopped, the
/// outbox is published, and the dead letters are the injected failures.
async fn check_queues(
    run: &Run,
    broker: &Broker,
    poison: &HashSet<String>,
    c: &mut Checks,
) -> anyhow::Result<()> {
    let channel = broker.open_channel().await?;
    for queue in run.topology.queues() {
        if queue == run.topology.dead_letters_queue() {
            continue;
        }
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .with_context(|| format!("inspecting {queue}"))?;
        c.stranded_messages += u64::from(declared.message_count());
    }
    let _ = channel.close(200, "checked".into()).await;
    c.outbox_unpublished =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(run.store.pool())
            .await?;
    let letters = kassa_broker::dlq::list(broker, 100_000).await?;
    c.dead_letters = letters.len();
    let ids: HashSet<&str> = letters.iter().map(|l| l.message_id.as_str()).collect();
    c.poison_in_dlq = ids.iter().filter(|id| poison.contains(**id)).count();
    c.unexpected_dead_letters = ids.iter().filter(|id| !poison.contains(**id)).count();
    Ok(())
}
