//! `kassa customers create|find|link|revoke-link|sync`: customers of the Stripe account from the
//! command line.
//!
//! - `create` and `find` are the connector actions of `/api/customers`: they call Stripe
//!   directly, validate input the same way the API does, and print Stripe's object as JSON.
//! - `link` makes a save-card link (kassa-core's `save_card`), as
//!   `POST /api/customers/{id}/save-card-links` does; `revoke-link` withdraws one.
//! - `sync` records every customer of the Stripe account and its saved cards, so charges can
//!   name customers that existed before Kassa was installed (kassa-core's `customers`). Paged,
//!   resumable (the cursor is in PostgreSQL), paced by KASSA_STRIPE_MAX_RPS, with a progress bar.
//!   `kassa sync customers` is the same command under its former name.

use super::connector::{metadata, print, text, AddressArgs, KeyArgs};
use crate::config::{ModeArgs, StoreArgs, StripeArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kassa_core::connector::{customer_params, CustomerRequest};
use kassa_core::customers::{sync_customers, SyncOptions};
use kassa_store::{Store, SyncCounts};
use kassa_stripe::resources::ListCustomers;
use kassa_stripe::StripeError;
use serde_json::json;
use std::io::IsTerminal;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `kassa customers`.
#[derive(Args)]
pub struct CustomersArgs {
    #[command(subcommand)]
    command: CustomersCommand,
}

#[derive(Subcommand)]
enum CustomersCommand {
    /// Create a customer.
    Create {
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Full name.
        #[arg(long)]
        name: Option<String>,
        /// Phone number.
        #[arg(long)]
        phone: Option<String>,
        /// Free text, not shown to the customer.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        address: Box<AddressArgs>,
        /// key=value, repeatable.
        #[arg(long)]
        metadata: Vec<String>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        stripe: StripeArgs,
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// Find customers by exact e-mail (Stripe's customer list, which sees new customers at once),
    /// or one customer by its id (exit code 1 and "not found" when there is none).
    Find {
        /// The e-mail address, compared case-sensitively as Stripe does.
        #[arg(long, required_unless_present = "id", conflicts_with = "id")]
        email: Option<String>,
        /// The customer's id (`cus_…`).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        stripe: StripeArgs,
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// A save-card link for a customer: `{KASSA_PUBLIC_URL}/save-card/{token}`, which opens a
    /// fresh setup-mode Checkout Session each time until it expires or is revoked.
    Link {
        /// The Stripe customer (`cus_…`).
        customer: String,
        /// How long the link works: 7d, 12h, 30m (at most 90d).
        #[arg(long, default_value = "7d")]
        expires: String,
        /// Where customers reach Kassa (the link's base).
        #[arg(long, env = "KASSA_PUBLIC_URL")]
        public_url: String,
        #[command(flatten)]
        stripe: StripeArgs,
        #[command(flatten)]
        mode: ModeArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Withdraw a save-card link (`scl_…`): opening it then shows that it was withdrawn.
    RevokeLink {
        /// The link's id (`scl_…`, printed by `kassa customers link`).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Record every customer of the Stripe account and its saved cards.
    ///
    /// Walks Stripe's customer list page by page (100 a page) and each customer's card payment
    /// methods, recording them as the webhooks would. Every page is recorded with the sync's
    /// cursor in PostgreSQL: stopped by Ctrl-C or a crash, the next run continues after the last
    /// recorded page (--restart starts over). Running it again after it finished records
    /// everything again, which changes nothing that is already true. Requests are paced by
    /// KASSA_STRIPE_MAX_RPS (Stripe allows about 100/s live, 25/s in test mode, shared with the
    /// running workers) and 429s are retried with backoff.
    Sync(SyncCustomersArgs),
}

/// Runs `kassa customers …`.
pub async fn run(args: CustomersArgs) -> anyhow::Result<()> {
    match args.command {
        CustomersCommand::Create {
            email,
            name,
            phone,
            description,
            address,
            metadata: pairs,
            key,
            stripe,
            mode,
        } => {
            let stripe = stripe.client_for(mode.mode())?;
            let metadata_args = pairs.join("\n");
            let params = customer_params(&CustomerRequest {
                email: text(email.clone()),
                name: text(name.clone()),
                phone: text(phone),
                description: text(description),
                address: address.json(),
                metadata: metadata(&pairs)?,
                livemode: Some(stripe.mode().is_live()),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let address_arg = params
                .address
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?;
            let key = key
                .key(
                    "customer",
                    &[
                        ("email", email.as_deref()),
                        ("name", name.as_deref()),
                        ("metadata", Some(&metadata_args)),
                        ("phone", params.phone.as_deref()),
                        ("description", params.description.as_deref()),
                        ("address", address_arg.as_deref()),
                    ],
                )
                .await?;
            let customer = stripe
                .customers()
                .create(&params, &key)
                .await
                .context("creating the customer")?;
            print(&customer)
        }
        CustomersCommand::Find {
            id: Some(id),
            stripe,
            mode,
            ..
        } => {
            let stripe = stripe.client_for(mode.mode())?;
            match stripe.customers().retrieve(&id, &[]).await {
                Ok(customer) if !customer.deleted => print(&customer),
                Ok(_) => bail!("customer {id} not found (it was deleted)"),
                Err(StripeError::InvalidRequest { status: 404, .. }) => {
                    bail!("customer {id} not found in this Stripe account")
                }
                Err(error) => Err(error).context("retrieving the customer"),
            }
        }
        CustomersCommand::Find {
            email,
            stripe,
            mode,
            ..
        } => {
            let stripe = stripe.client_for(mode.mode())?;
            let list = stripe
                .customers()
                .list(&ListCustomers {
                    email,
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .context("listing customers by e-mail")?;
            print(&json!({"data": list.data, "has_more": list.has_more}))
        }
        CustomersCommand::Link {
            customer,
            expires,
            public_url,
            stripe,
            mode,
            store,
        } => {
            let ttl = kassa_core::save_card::parse_ttl(&expires, "--expires")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let stripe = stripe.client_for(mode.mode())?;
            let store = connect_store(&store).await?;
            let link =
                kassa_core::save_card::create_link(&stripe, &store, &public_url, &customer, ttl)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"));
            store.close().await;
            let link = link?;
            print(&json!({
                "id": link.record.id,
                "url": link.url,
                "customer": link.record.customer_id,
                "mode": if link.record.livemode { "live" } else { "test" },
                "expires_at": link.record.expires_at.unix_timestamp(),
            }))
        }
        CustomersCommand::RevokeLink { id, store } => {
            let store = connect_store(&store).await?;
            let found = store.revoke_save_card_link(&id).await;
            store.close().await;
            if !found.context("revoking the link")? {
                bail!("no save-card link {id}");
            }
            print(&json!({"id": id, "revoked": true}))
        }
        CustomersCommand::Sync(args) => sync(args).await,
    }
}

async fn connect_store(store: &StoreArgs) -> anyhow::Result<Store> {
    Store::connect(&store.database_url, 2)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&store.database_url)
            )
        })
}

/// `kassa customers sync`.
#[derive(Args)]
pub struct SyncCustomersArgs {
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
    /// The mode whose customers are recorded (`--live`/`--test`; default: the default mode).
    #[command(flatten)]
    mode: ModeArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// `kassa sync`: the former name of `kassa customers sync`.
#[derive(Args)]
pub struct SyncArgs {
    #[command(subcommand)]
    what: SyncCommand,
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Record every customer of the Stripe account and its saved cards (`kassa customers sync`).
    Customers(SyncCustomersArgs),
}

/// Runs `kassa sync customers`, the same as `kassa customers sync`.
pub async fn run_sync_alias(args: SyncArgs) -> anyhow::Result<()> {
    match args.what {
        SyncCommand::Customers(args) => sync(args).await,
    }
}

/// Runs `kassa customers sync`.
async fn sync(args: SyncCustomersArgs) -> anyhow::Result<()> {
    let SyncCustomersArgs {
        restart,
        concurrency,
        quiet,
        stripe,
        mode,
        store: store_args,
    } = args;
    let stripe = stripe.client_for(mode.mode())?;
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
        bail!("interrupted; run `kassa customers sync` again to continue after the last recorded page");
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
