//! `kassa dlq list | show ID | replay ID|--all`: what failed, why, and putting it back.

use crate::config::BrokerArgs;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_broker::dlq::{self, Selection};
use kassa_broker::Broker;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `kassa dlq`.
#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter: headers and body.
    Show {
        /// The message id (the Stripe event id, or the job id).
        id: String,
    },
    /// Put dead letters back on the queue they failed on, retry count reset.
    Replay {
        /// The message id to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// Runs a `dlq` subcommand.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let broker = Broker::start(args.broker.config()?, shutdown.clone());
    broker
        .wait_ready(Duration::from_secs(15))
        .await
        .context("RabbitMQ did not answer at KASSA_AMQP_URL")?;
    let result = match args.command {
        DlqCommand::List { limit } => list(&broker, limit).await,
        DlqCommand::Show { id } => show(&broker, &id).await,
        DlqCommand::Replay { id, all } => {
            let selection = match (id, all) {
                (_, true) => Selection::All,
                (Some(id), false) => Selection::Id(id),
                (None, false) => bail!("give a message id or --all"),
            };
            let done = dlq::replay(&broker, &selection).await?;
            for id in &done.replayed {
                println!("replayed {id}");
            }
            for id in &done.skipped {
                println!("skipped {id}: it does not say which queue it came from (left in the dead-letter queue)");
            }
            if done.replayed.is_empty() && done.skipped.is_empty() {
                bail!("no dead letter matched");
            }
            println!("{} message(s) back on their queue", done.replayed.len());
            Ok(())
        }
    };
    kassa::stack::stop_broker(&broker, &shutdown).await;
    result
}

async fn list(broker: &Broker, limit: usize) -> anyhow::Result<()> {
    let letters = dlq::list(broker, limit).await?;
    if letters.is_empty() {
        println!(
            "the dead-letter queue {} is empty",
            broker.topology().dead_letters_queue()
        );
        return Ok(());
    }
    println!(
        "{:<32} {:<30} {:>8}  {:<20}  reason",
        "message id", "type", "retries", "dead-lettered"
    );
    for letter in &letters {
        let when = letter
            .dead_lettered_at
            .map(|t| format!("{}s ago", unix_now() - t))
            .unwrap_or_else(|| "?".into());
        let reason: String = letter.reason.chars().take(100).collect();
        println!(
            "{:<32} {:<30} {:>8}  {:<20}  {}",
            letter.message_id, letter.kind, letter.attempts, when, reason
        );
    }
    println!(
        "{} dead letter(s); `kassa dlq show ID` for one, `kassa dlq replay ID|--all` to put back",
        letters.len()
    );
    Ok(())
}

async fn show(broker: &Broker, id: &str) -> anyhow::Result<()> {
    let letters = dlq::list(broker, usize::MAX).await?;
    let letter = letters
        .iter()
        .find(|l| l.message_id == id)
        .with_context(|| format!("no dead letter with message id {id}"))?;
    println!("message id:     {}", letter.message_id);
    println!("type:           {}", letter.kind);
    println!("from queue:     {}", letter.source_queue);
    println!("retries:        {}", letter.attempts);
    println!(
        "dead-lettered:  {}",
        letter
            .dead_lettered_at
            .map_or("?".into(), |t| t.to_string())
    );
    println!("reason:         {}", letter.reason);
    let body = serde_json::from_slice::<serde_json::Value>(&letter.body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(&letter.body).into_owned());
    println!("body:\n{body}");
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
