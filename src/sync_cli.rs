//! `kassa sync customers`: records every customer of the Stripe account and its saved cards,
//! so charges can name customers that existed before Kassa was installed. Paged, resumable
//! (the cursor is in PostgreSQL), paced by KASSA_STRIPE_MAX_RPS, with a progress bar.

use crate::config::{StoreArgs, StripeArgs};
use crate::connector_cli::stripe_client;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kassa_store::{Store, SyncCounts};
use kassa_worker::customer_sync::{sync_customers, SyncOptions};
use std::io::IsTerminal;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `kassa sync`.
#[derive(Args)]
pub struct SyncArgs {
    #[command(subcommand)]
    what: SyncCommand,
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Record every customer of the Stripe account and its saved cards.
    ///
    /// Walks Stripe's customer list page by page (100 a page) and each customer's card payment
    /// methods, recording them as the webhooks would. Every page is recorded with the sync's
    /// cursor in PostgreSQL: stopped by Ctrl-C or a crash, the next run continues after the last
    /// recorded page (--restart starts over). Running it again after it finished records
    /// everything again, which changes nothing that is already true. Requests are paced by
    /// KASSA_STRIPE_MAX_RPS (Stripe allows about 100/s live, 25/s in test mode, shared with the
    /// running workers) and 429s are retried with backoff.
    Customers {
        /// Start from the first page even if an interrupted sync could be resumed.
        #[arg(long)]
        restart: bool,
        /// Customers whose cards are read at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=32))]
        concurrency: u32,
        /// No progress bar (it is never shown when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        stripe: StripeArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs `kassa sync …`.
pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    match args.what {
        SyncCommand::Customers {
            restart,
            concurrency,
            quiet,
            stripe,
            store,
        } => customers(restart, concurrency, quiet, &stripe, &store).await,
    }
}

async fn customers(
    restart: bool,
    concurrency: u32,
    quiet: bool,
    stripe: &StripeArgs,
    store_args: &StoreArgs,
) -> anyhow::Result<()> {
    let stripe = stripe_client(stripe)?;
    let store = Store::connect(&store_args.database_url, 2)
        .await
        .with_context(|| {
            format!(
                "connecting to KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&store_args.database_url)
            )
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::config::cancel_on_signal(shutdown.clone()));
    let bar = progress_bar(quiet);
    let options = SyncOptions {
        restart,
        concurrency: concurrency as usize,
    };
    let synced = sync_customers(
        &stripe,
        &store,
        &options,
        |counts| {
            bar.set_position(counts.customers.try_into().unwrap_or(0));
            bar.set_message(format!(
                "{} cards, {} skipped",
                counts.cards, counts.skipped
            ));
        },
        &shutdown,
    )
    .await;
    bar.finish_and_clear();
    store.close().await;
    let report = synced.context(
        "syncing customers from Stripe (what was recorded stays; run it again to continue)",
    )?;
    if let Some((after, before)) = &report.resumed {
        println!(
            "resumed the sync interrupted after {after} ({} customers were recorded before)",
            before.customers
        );
    }
    println!("{}", summary(&report.counts));
    if !report.finished {
        bail!("interrupted; run `kassa sync customers` again to continue after the last recorded page");
    }
    Ok(())
}

/// One line: what the whole sync recorded.
fn summary(counts: &SyncCounts) -> String {
    format!(
        "customers: {} ({} new), cards: {} ({} new), skipped: {} (deleted at Stripe while syncing)",
        counts.customers, counts.new_customers, counts.cards, counts.new_cards, counts.skipped
    )
}

/// Customers recorded so far, on stderr; hidden with `--quiet` or when stderr is not a terminal.
fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {pos} customers recorded ({per_sec}), {msg} [{elapsed}]",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
