//! `kassa demo`: the whole flow once, on `serve`'s stack with the embedded simulator — a
//! setup-mode Checkout Session completed with `pm_card_visa` becomes a customer with a default
//! card in PostgreSQL — printing each hop and its time. Exits 0 only if every hop happened.

use crate::config::ServeArgs;
use anyhow::{bail, Context};
use kassa::stack::{Stack, StripeTarget};
use kassa_broker::Topology;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::CreateCheckoutSession;
use kassa_stripe::IdempotencyKey;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs the demo.
pub async fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    // Its own port and queue names, so a `kassa serve` running beside it is not disturbed.
    args.ingress.listen = "127.0.0.1:0".parse()?;
    args.ingress.metrics_listen = "127.0.0.1:0".parse()?;
    let topology = Topology::new(format!("demo{:06x}.", rand::random::<u32>() & 0xff_ffff));
    args.ingress.broker.amqp_prefix = topology.prefix().to_owned();
    let config = args.stack_config()?;
    if !matches!(config.stripe, Some(StripeTarget::Embedded(_))) {
        bail!("kassa demo runs on the embedded Stripe simulator: unset KASSA_STRIPE_API_KEY");
    }
    println!("kassa demo: starting the stack (embedded Stripe simulator, RabbitMQ, PostgreSQL, ingress, worker)");
    let stack = Stack::start(config).await?;
    let result = walk_through(&stack).await;
    stack.stop().await;
    if let Err(error) = topology.delete_at(&args.ingress.broker.amqp_url).await {
        tracing::warn!(%error, "could not remove the demo's queues");
    }
    result
}

async fn walk_through(stack: &Stack) -> anyhow::Result<()> {
    let sim = stack
        .sim
        .as_ref()
        .context("the embedded simulator is running")?;
    let stripe = stack
        .stripe
        .as_ref()
        .context("the Stripe client is configured")?;
    let store = stack.store.as_ref().context("the database is connected")?;
    let base = stack.base_url().context("the ingress listens")?;
    stack
        .broker
        .wait_ready(Duration::from_secs(15))
        .await
        .context("RabbitMQ did not answer at KASSA_AMQP_URL")?;

    let started = Instant::now();
    let run = format!("{:08x}", rand::random::<u32>());
    let params = CreateCheckoutSession {
        mode: CheckoutMode::Setup,
        currency: Some("usd".into()),
        customer_email: Some(format!("demo-{run}@example.com")),
        success_url: Some(format!("{base}/success?session_id={{CHECKOUT_SESSION_ID}}")),
        cancel_url: Some(format!("{base}/cancel")),
        ..Default::default()
    };
    let key = IdempotencyKey::new(format!("kassa:demo:{run}:create_session"))?;
    let session = stripe
        .checkout_sessions()
        .create(&params, &key)
        .await
        .context("creating the Checkout Session")?;
    let created = started.elapsed();
    hop(
        1,
        &format!(
            "Checkout Session created, mode=setup: {}",
            short(&session.id)
        ),
        ms(created),
    );
    if let Some(url) = &session.url {
        println!("   a person would open {url}");
    }

    let t = Instant::now();
    sim.complete_checkout_session(&session.id, "pm_card_visa")
        .map_err(|e| anyhow::anyhow!("completing the session in the simulator: {e}"))?;
    let completed_at = wall_now();
    hop(
        2,
        "the customer saves pm_card_visa (Visa 4242) on the hosted page",
        ms(t.elapsed()),
    );

    let t = Instant::now();
    let delivery = wait_for(
        "the checkout.session.completed webhook to be accepted by the ingress",
        || async {
            sim.webhook_deliveries()
                .into_iter()
                .find(|d| d.event_type == "checkout.session.completed" && d.status == Some(200))
        },
    )
    .await?;
    let accepted_at = wall_now();
    hop(
        3,
        &format!(
            "Stripe signs {} → ingress → RabbitMQ confirm → 200",
            delivery.event_id
        ),
        ms(t.elapsed()),
    );

    let event = wait_for("the worker to process the event", || async {
        store
            .event(&delivery.event_id)
            .await
            .ok()
            .flatten()
            .filter(|e| e.processed_at.is_some())
    })
    .await?;
    let claimed = event.received_at;
    let processed = event.processed_at.context("processed")?;
    let queue_to_claim = (claimed - time_of(accepted_at)).as_seconds_f64().max(0.0) * 1000.0;
    hop(
        4,
        "RabbitMQ → worker claims the event in the inbox (stripe_events)",
        queue_to_claim,
    );
    hop(
        5,
        "worker: re-fetch, create customer, attach, set default, commit",
        (processed - claimed).as_seconds_f64() * 1000.0,
    );

    let total_ms = (processed - time_of(completed_at)).as_seconds_f64() * 1000.0;
    show_outcome(stack, &session.id, total_ms).await
}

/// Checks that the database and Stripe agree on the saved card, and prints the customer, the
/// card, the time it took and every Stripe call Kassa made.
async fn show_outcome(stack: &Stack, session_id: &str, total_ms: f64) -> anyhow::Result<()> {
    let sim = stack
        .sim
        .as_ref()
        .context("the embedded simulator is running")?;
    let stripe = stack
        .stripe
        .as_ref()
        .context("the Stripe client is configured")?;
    let store = stack.store.as_ref().context("the database is connected")?;
    let record = store
        .checkout_session(session_id)
        .await?
        .context("the session is recorded")?;
    let customer_id = record.customer_id.context("the session has a customer")?;
    let (customer, card) = store
        .customer_with_default_card(&customer_id)
        .await?
        .context("the customer is recorded")?;
    let card = card.context("the customer has a default card")?;
    // Kassa's calls, before the demo's own check below adds one.
    let calls = sim.requests();
    let from_stripe = stripe.customers().retrieve(&customer_id, &[]).await?;
    let default_in_stripe = from_stripe
        .invoice_settings
        .default_payment_method
        .as_ref()
        .map(|pm| pm.id().to_owned());
    if default_in_stripe.as_deref() != Some(card.id.as_str()) {
        bail!(
            "Stripe's default payment method {default_in_stripe:?} differs from the database's {}",
            card.id
        );
    }
    println!();
    println!(
        "customer in PostgreSQL: {} <{}>",
        customer.id,
        customer.email.as_deref().unwrap_or("-")
    );
    println!(
        "default card:           {} {} •••• {} exp {:02}/{}  (also the default in Stripe)",
        card.id,
        card.brand.as_deref().unwrap_or("?"),
        card.last4.as_deref().unwrap_or("????"),
        card.exp_month.unwrap_or(0),
        card.exp_year.unwrap_or(0)
    );
    println!("customer completed checkout → card saved and committed: {total_ms:.1} ms");
    println!("Stripe API calls made by Kassa: {}", calls.len());
    for call in calls {
        println!(
            "   {} {} {} {}",
            call.status,
            call.method,
            call.path,
            call.idempotency_key
                .map(|k| format!("(Idempotency-Key {k})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn hop(n: u32, what: &str, millis: f64) {
    println!("{n}. {what:<72} {millis:>7.1} ms");
}

/// A long Stripe id shortened for the table (the full id is printed elsewhere when needed).
fn short(id: &str) -> String {
    if id.len() > 24 {
        format!("{}…", &id[..24])
    } else {
        id.to_owned()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn wall_now() -> SystemTime {
    SystemTime::now()
}

fn time_of(t: SystemTime) -> kassa_store::OffsetDateTime {
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    kassa_store::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(kassa_store::OffsetDateTime::UNIX_EPOCH)
}
