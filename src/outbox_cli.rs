//! `kassa outbox list | retry ID|--all | drop ID`: messages the outbox relay could not publish
//! yet — charge jobs, alerts, notifications — with their attempts and last error.

use crate::config::StoreArgs;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_store::{PendingOutboxEntry, Store};

/// `kassa outbox`.
#[derive(Args)]
pub struct OutboxArgs {
    #[command(subcommand)]
    command: OutboxCommand,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// List unpublished messages, those that failed most often first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Publish a failing message at once instead of after its backoff (attempts are kept).
    Retry {
        /// The message's id (the first column of `kassa outbox list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every unpublished message.
        #[arg(long)]
        all: bool,
    },
    /// Delete an unpublished message: it is never published. A dropped charge job leaves its
    /// charge pending; a dropped alert is never e-mailed.
    Drop {
        /// The message's id (the first column of `kassa outbox list`).
        id: i64,
    },
}

/// Runs a `kassa outbox` subcommand.
pub async fn run(args: OutboxArgs) -> anyhow::Result<()> {
    let store = Store::connect(&args.store.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "connecting to KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&args.store.database_url)
            )
        })?;
    let result = command(&store, args.command).await;
    store.close().await;
    result
}

async fn command(store: &Store, command: OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::List { limit } => {
            let pending = store
                .pending_outbox(limit)
                .await
                .context("reading the outbox")?;
            list(&pending);
        }
        OutboxCommand::Retry { id, all } => {
            let id = if all { None } else { id };
            let changed = store
                .retry_outbox(id)
                .await
                .context("updating the outbox")?;
            match (id, changed) {
                (Some(id), 0) => bail!("no unpublished outbox message {id}"),
                (Some(id), _) => println!("message {id} is due now; the relay publishes it next"),
                (None, n) => println!("{n} unpublished message(s) due now"),
            }
        }
        OutboxCommand::Drop { id } => {
            let dropped = store.drop_outbox(id).await.context("updating the outbox")?;
            let Some(entry) = dropped else {
                bail!("no unpublished outbox message {id}");
            };
            tracing::warn!(outbox_id = entry.id, message_id = %entry.message_id, exchange = %entry.exchange, attempts = entry.attempts, "outbox message dropped by hand");
            println!(
                "dropped message {} ({} to {} / {}, {} failed attempts); it will never be published",
                entry.id, entry.message_id, entry.exchange, entry.routing_key, entry.attempts
            );
        }
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn list(pending: &[PendingOutboxEntry]) {
    if pending.is_empty() {
        println!("the outbox is empty: every message was published");
        return;
    }
    println!(
        "{:>8}  {:<36}  {:<28}  {:>8}  {:<12}  last error",
        "id", "message id", "exchange", "attempts", "next attempt"
    );
    for entry in pending {
        let next = match entry
            .next_attempt_at
            .map(|t| t.unix_timestamp() - unix_now())
        {
            Some(seconds) if seconds > 0 => format!("in {seconds} s"),
            _ => "now".to_owned(),
        };
        println!(
            "{:>8}  {:<36}  {:<28}  {:>8}  {:<12}  {}",
            entry.id,
            entry.message_id,
            entry.exchange,
            entry.attempts,
            next,
            entry.last_error.as_deref().unwrap_or("-")
        );
    }
}
