//! `kassa reconcile --since 24h`: one pass of the events poller over Stripe's `/v1/events` of every
//! configured mode, each listed with its own key — the events of the window that Kassa handles but
//! whose webhooks never reached the inbox are published to `kassa.events` (the worker then handles
//! each once), and listed here.

use crate::config::{parse_duration, parse_lookback, BrokerArgs, StoreArgs, StripeArgs};
use anyhow::Context;
use clap::Args;
use kassa_broker::Broker;
use kassa_worker::poller::{poll_once, unix_now, PollReport};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `kassa reconcile`.
#[derive(Args)]
pub struct ReconcileArgs {
    /// How far back to look (`90m`, `24h`, `7d`; at most 30d, Stripe's event retention).
    #[arg(long, default_value = "24h", value_parser = parse_lookback)]
    since: Duration,
    /// Leave events younger than this alone: their webhooks are probably still on the way.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    settle: Duration,
    #[command(flatten)]
    stripe: StripeArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Runs `kassa reconcile`.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let stripe = args.stripe.modes()?;
    let store = kassa_store::Store::connect(&args.store.database_url, 2)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&args.store.database_url)
            )
        })?;
    let shutdown = CancellationToken::new();
    let broker = Broker::start(args.broker.config()?, shutdown.clone());
    broker
        .wait_ready(Duration::from_secs(15))
        .await
        .context("RabbitMQ did not answer at KASSA_AMQP_URL")?;
    let now = unix_now();
    let since = now - i64::try_from(args.since.as_secs()).unwrap_or(0);
    let until = now - i64::try_from(args.settle.as_secs()).unwrap_or(0);
    let mut result = Ok(PollReport::default());
    for (mode, client) in stripe.iter() {
        let pass = poll_once(client, &store, &broker, since, until)
            .await
            .with_context(|| format!("reconciling {mode}-mode Stripe events with the inbox"));
        result = match (result, pass) {
            (Ok(mut report), Ok(pass)) => {
                report.listed += pass.listed;
                report.handled += pass.handled;
                report.missing.extend(pass.missing);
                Ok(report)
            }
            (Err(error), _) | (_, Err(error)) => Err(error),
        };
        if result.is_err() {
            break;
        }
    }
    kassa::stack::stop_broker(&broker, &shutdown).await;
    store.close().await;
    let report = result?;
    let modes = match stripe.iter().count() {
        1 => String::new(),
        _ => " (test and live mode)".to_owned(),
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Stripe events of the last {}{modes}: {} listed, {} of types Kassa handles, {} missing from the inbox",
        humanize(args.since),
        report.listed,
        report.handled,
        report.missing.len()
    );
    if report.missing.is_empty() {
        let _ = writeln!(out, "Nothing was missing.");
    } else {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<32} {:<34} {:>9}  {:<32} ACTION",
            "EVENT", "TYPE", "AGE", "OBJECT"
        );
        for event in &report.missing {
            let age = Duration::from_secs(u64::try_from(now - event.created).unwrap_or(0));
            let _ = writeln!(
                out,
                "{:<32} {:<34} {:>9}  {:<32} published",
                event.id,
                event.kind,
                humanize(age),
                event.object_id.as_deref().unwrap_or("-"),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Published {} event(s) to {}; the worker handles each once (the inbox drops duplicates).",
            report.missing.len(),
            broker.topology().events_exchange()
        );
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("writing the report")
        }
        _ => Ok(()),
    }
}

/// `90s`, `15m`, `24h`, `3d`.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
