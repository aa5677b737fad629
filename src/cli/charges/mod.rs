//! `kassa charge …`, `kassa charges list | show | import FILE.csv`: back-office charges from the
//! command line.
//!
//! These commands record charges the way `POST /api/charges` does (the same validation, the row
//! and its job in one transaction through the outbox); the worker executes them later. So they
//! need PostgreSQL and the topology prefix that names the job's exchange. Before recording,
//! `charge` and `charges import` check on RabbitMQ that this exchange exists (a passive declare,
//! which creates nothing): under a mistyped `KASSA_AMQP_PREFIX` the jobs would go to an exchange
//! no worker reads. With `KASSA_STRIPE_API_KEY` set, a customer Kassa has not recorded is looked
//! up on Stripe (with its saved cards) before it is refused; `charges resolve` asks Stripe too, to
//! check what a person says against what Stripe has.

mod import;

use crate::config::{ModeArgs, StoreArgs, StripeArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_broker::Topology;
use kassa_core::charges::charge_json;
use kassa_core::charges::review::Resolution;
use kassa_core::charges::submit::{
    submit_charge, ChargeMode, ChargeRequest, SubmitError, Submitted,
};
use kassa_core::fields::amount_from_text;
use kassa_store::{ChargeRecord, ChargeStatus, JobRoute, Store};
use kassa_stripe::Client;
use serde_json::Value;
use std::path::PathBuf;

/// Where charge jobs go: the prefix names the `kassa.charges` exchange, checked on RabbitMQ.
#[derive(Args, Clone, Debug)]
pub struct JobArgs {
    /// Prefix of every exchange and queue name; must match the worker's.
    #[arg(long, env = "KASSA_AMQP_PREFIX", default_value = "")]
    pub amqp_prefix: String,
    /// RabbitMQ URL, to check that the charges exchange exists before recording anything.
    #[arg(
        long,
        env = "KASSA_AMQP_URL",
        default_value = crate::config::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
}

impl JobArgs {
    fn route(&self) -> JobRoute {
        kassa_core::charges::job_route(&Topology::new(self.amqp_prefix.clone()))
    }

    /// The route, once RabbitMQ confirmed that its exchange exists (Kassa's workers declare it
    /// at start); refuses clearly otherwise, before anything is recorded.
    async fn checked_route(&self) -> anyhow::Result<JobRoute> {
        let route = self.route();
        let url = kassa_broker::connection::redact_url(&self.amqp_url);
        let exists = kassa_broker::probe::exchange_exists(&self.amqp_url, &route.exchange)
            .await
            .with_context(|| {
                format!(
                    "checking that exchange {} exists at KASSA_AMQP_URL={url}; nothing was recorded",
                    route.exchange
                )
            })?;
        if !exists {
            bail!(
                "RabbitMQ at KASSA_AMQP_URL={url} has no exchange {:?}, so no worker would ever \
                 run these charges. Check KASSA_AMQP_PREFIX (now {:?}) against the workers', and \
                 that a `kassa worker` or `kassa serve` has started there once (it declares the \
                 exchange). Nothing was recorded.",
                route.exchange,
                self.amqp_prefix
            );
        }
        Ok(route)
    }
}

/// The mode charges are recorded in (`--live`/`--test`, else the default mode; test without any
/// key) and, when a key is set, that mode's client: customers Kassa has not recorded are looked
/// up there (without one, an unrecorded customer is refused as unknown). A mode named with
/// `--live`/`--test` that has no key is refused when keys are configured.
fn stripe_for_lookup(
    stripe: &StripeArgs,
    mode: &ModeArgs,
) -> anyhow::Result<(kassa_stripe::Mode, Option<Client>)> {
    let chosen = stripe.mode_for(mode.mode())?;
    if stripe.target()?.is_none() {
        return Ok((chosen, None));
    }
    Ok((chosen, Some(stripe.client_for(Some(chosen))?)))
}

/// `kassa charge`: one charge of a saved card.
#[derive(Args)]
pub struct ChargeArgs {
    /// The customer, `cus_…`, with a saved card (looked up on Stripe when Kassa has not
    /// recorded it and KASSA_STRIPE_API_KEY is set).
    #[arg(long)]
    customer: String,
    /// Integer minor units: 1999 for $19.99, 1000 for ¥1,000.
    #[arg(long)]
    amount: String,
    /// ISO currency code, any case.
    #[arg(long)]
    currency: String,
    /// Your unique reference: the same reference again is the same charge.
    #[arg(long)]
    reference: String,
    /// A saved card of the customer (default: the customer's default card when the charge runs).
    #[arg(long)]
    payment_method: Option<String>,
    /// Shown in Stripe.
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    jobs: JobArgs,
    #[command(flatten)]
    stripe: StripeArgs,
    #[command(flatten)]
    mode: ModeArgs,
}

/// `kassa charges`.
#[derive(Args)]
pub struct ChargesArgs {
    #[command(subcommand)]
    command: ChargesCommand,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    jobs: JobArgs,
}

#[derive(Subcommand)]
enum ChargesCommand {
    /// List charges in id order.
    List {
        /// Only charges in this status (pending, processing, succeeded, requires_recheckout, retrying, failed, needs_review).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only charges with an id above this one (the next page).
        #[arg(long)]
        after: Option<i64>,
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// Show one charge, every field, by id or by reference.
    Show {
        /// The charge's id or its reference.
        charge: String,
    },
    /// Resolve a charge in needs_review after checking Stripe: paid by a PaymentIntent, failed,
    /// or back in line to be looked up again.
    ///
    /// A charge is in needs_review when its attempt was first sent more than 23 hours ago and
    /// Stripe could not be asked whether it was charged: Stripe has forgotten the attempt's key,
    /// so Kassa will not send it again, nor call it failed. Look on Stripe for the customer's
    /// PaymentIntents with metadata kassa_charge_id = the charge's id (`kassa charges show`
    /// prints the customer, the attempt and its key). Each resolution is checked against Stripe
    /// before it is recorded.
    #[command(group(clap::ArgGroup::new("resolution").required(true).args(["succeeded_by", "failed", "requeue"])))]
    Resolve {
        /// The charge's id or its reference.
        charge: String,
        /// The charge was paid by this PaymentIntent (`pi_…`): it must have succeeded, for the
        /// charge's customer, amount and currency.
        #[arg(long, value_name = "PI")]
        succeeded_by: Option<String>,
        /// Nothing was charged: the charge fails (`charge.failed` is announced). Refused while
        /// Stripe shows a paid or processing PaymentIntent for the attempt.
        #[arg(long)]
        failed: bool,
        /// Put the charge back in line: the worker looks the attempt up on Stripe again and
        /// settles from it, or sends it under a new key if Stripe has none.
        #[arg(long)]
        requeue: bool,
        #[command(flatten)]
        stripe: StripeArgs,
    },
    /// Record the charges of a CSV file, row by row.
    ///
    /// Columns (header row required): customer, amount, currency, reference, and optionally
    /// payment_method, description. Each bad row is reported on stderr as `line N: field:
    /// message` and the others go on; a reference already recorded creates nothing new.
    /// Exit status: 0 when every row was created or already existed, 1 when some rows were
    /// rejected (or the file or the database could not be used at all).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// No progress bar (it is never shown when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
        /// Rows in flight at once (each holds a database connection).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
        concurrency: u32,
        #[command(flatten)]
        stripe: StripeArgs,
        /// Every row's mode (`--live`/`--test`; default: the default mode).
        #[command(flatten)]
        mode: ModeArgs,
    },
}

/// Runs `kassa charge`.
pub async fn charge(args: ChargeArgs) -> anyhow::Result<()> {
    let route = args.jobs.checked_route().await?;
    let store = connect(&args.store, 2).await?;
    let (mode, stripe) = stripe_for_lookup(&args.stripe, &args.mode)?;
    let request = ChargeRequest {
        customer: Some(args.customer),
        amount: Some(amount_from_text(&args.amount)),
        currency: Some(args.currency),
        payment_method: args.payment_method,
        description: args.description,
        reference: Some(args.reference),
        metadata: None,
        livemode: Some(mode.is_live()),
    };
    let mode = ChargeMode {
        mode,
        stripe: stripe.as_ref(),
    };
    let result = submit(&store, mode, &route, &request).await;
    store.close().await;
    match result? {
        Outcome::Created(record) => {
            println!("created charge {} (queued for the worker)", record.id);
            print_charge(&record);
        }
        Outcome::Existed(record) => {
            println!(
                "charge {} already exists with reference {}; nothing new was created",
                record.id, record.reference
            );
            print_charge(&record);
        }
        Outcome::Rejected(message) => bail!(message),
    }
    Ok(())
}

/// Runs a `kassa charges` subcommand.
pub async fn charges(args: ChargesArgs) -> anyhow::Result<()> {
    match args.command {
        ChargesCommand::List {
            status,
            limit,
            after,
            mode,
        } => {
            let status = match status.as_deref() {
                None | Some("") => None,
                Some(s) => Some(s.parse::<ChargeStatus>().map_err(|_| {
                    anyhow::anyhow!("--status: {s:?} is not one of pending, processing, succeeded, requires_recheckout, retrying, failed, needs_review")
                })?),
            };
            let store = connect(&args.store, 1).await?;
            let listed = store
                .list_charges(status, mode.livemode(), limit, after)
                .await;
            store.close().await;
            list(&listed.context("listing charges")?, limit);
            Ok(())
        }
        ChargesCommand::Show { charge } => {
            let store = connect(&args.store, 1).await?;
            let found = find(&store, &charge).await;
            store.close().await;
            let record =
                found?.with_context(|| format!("no charge with id or reference {charge:?}"))?;
            print_charge(&record);
            Ok(())
        }
        ChargesCommand::Resolve {
            charge,
            succeeded_by,
            failed,
            requeue,
            stripe,
        } => {
            let resolution = match (succeeded_by, failed, requeue) {
                (Some(pi), false, false) => Resolution::SucceededBy(pi),
                (None, true, false) => Resolution::Failed,
                (None, false, true) => Resolution::Requeue,
                _ => bail!("give exactly one of --succeeded-by PI, --failed, --requeue"),
            };
            let store = connect(&args.store, 2).await?;
            let result = resolve(&store, &stripe, &args.jobs, &charge, &resolution).await;
            store.close().await;
            let record = result?;
            println!(
                "charge {} ({}) is {} now",
                record.id, record.reference, record.status
            );
            print_charge(&record);
            Ok(())
        }
        ChargesCommand::Import {
            file,
            quiet,
            concurrency,
            stripe,
            mode,
        } => {
            let route = args.jobs.checked_route().await?;
            let store = connect(&args.store, concurrency + 1).await?;
            let (mode, stripe) = stripe_for_lookup(&stripe, &mode)?;
            let imported = import::import(
                &store,
                ChargeMode {
                    mode,
                    stripe: stripe.as_ref(),
                },
                &route,
                &file,
                quiet,
                concurrency as usize,
            )
            .await;
            store.close().await;
            let summary = imported?;
            println!(
                "created {}, already existed {}, rejected {}",
                summary.created, summary.existed, summary.rejected
            );
            if summary.rejected > 0 {
                bail!(
                    "{} row(s) of {} rejected (reported above by line); the others were recorded",
                    summary.rejected,
                    file.display()
                );
            }
            Ok(())
        }
    }
}

async fn connect(args: &StoreArgs, connections: u32) -> anyhow::Result<Store> {
    Store::connect(
        &args.database_url,
        connections.min(args.database_max_connections.unwrap_or(u32::MAX)),
    )
    .await
    .with_context(|| {
        format!(
            "connecting to KASSA_DATABASE_URL={}",
            kassa_broker::connection::redact_url(&args.database_url)
        )
    })
}

/// What became of one charge request.
pub(super) enum Outcome {
    Created(ChargeRecord),
    Existed(ChargeRecord),
    /// A validation error, `field: message`.
    Rejected(String),
}

/// Validates `request` as the API does and records it with its job (kassa-core's
/// [`submit_charge`]).
///
/// A reference already recorded for a different customer, amount or currency is refused rather
/// than answered with the other charge: from a file, that is a typo or a reused invoice number,
/// and charging nothing for it silently would be the wrong answer.
pub(super) async fn submit(
    store: &Store,
    mode: ChargeMode<'_>,
    route: &JobRoute,
    request: &ChargeRequest,
) -> anyhow::Result<Outcome> {
    match submit_charge(store, mode, route, request).await {
        Ok(Submitted::Created(record)) => Ok(Outcome::Created(record)),
        Ok(Submitted::Existed(record)) => Ok(Outcome::Existed(record)),
        Err(e @ (SubmitError::Invalid(_) | SubmitError::ReferenceInUse { .. })) => {
            Ok(Outcome::Rejected(e.to_string()))
        }
        Err(e) => bail!("checking and recording the charge: {e}"),
    }
}

/// Resolves a charge, checked against Stripe with the key of the charge's own mode.
async fn resolve(
    store: &Store,
    stripe: &StripeArgs,
    jobs: &JobArgs,
    id_or_reference: &str,
    resolution: &Resolution,
) -> anyhow::Result<ChargeRecord> {
    let record = find(store, id_or_reference)
        .await?
        .with_context(|| format!("no charge with id or reference {id_or_reference:?}"))?;
    let stripe = stripe.client_for(Some(kassa_stripe::Mode::from_livemode(record.livemode)))?;
    let executor = kassa_core::charges::ChargeExecutor::new(
        stripe,
        store.clone(),
        Topology::new(jobs.amqp_prefix.clone()),
        kassa_core::charges::RecheckoutPages {
            public_url: String::new(),
        },
    );
    executor
        .resolve(record.id, resolution)
        .await
        .with_context(|| format!("resolving charge {} ({})", record.id, record.reference))
}

async fn find(store: &Store, id_or_reference: &str) -> anyhow::Result<Option<ChargeRecord>> {
    if let Ok(id) = id_or_reference.parse::<i64>() {
        if let Some(record) = store.charge(id).await.context("reading the charge")? {
            return Ok(Some(record));
        }
    }
    store
        .charge_by_reference(id_or_reference)
        .await
        .context("reading the charge")
}

fn list(charges: &[ChargeRecord], limit: u32) {
    if charges.is_empty() {
        println!("no charges");
        return;
    }
    println!(
        "{:>8}  {:<4}  {:<24}  {:<19}  {:>7}  {:>14}  customer",
        "id", "mode", "reference", "status", "attempt", "amount"
    );
    for charge in charges {
        let json = charge_json(charge);
        let amount = json["amount_display"].as_str().map_or_else(
            || format!("{} {}", charge.amount, charge.currency),
            str::to_owned,
        );
        println!(
            "{:>8}  {:<4}  {:<24}  {:<19}  {:>7}  {:>14}  {}",
            charge.id,
            kassa_stripe::Mode::from_livemode(charge.livemode),
            charge.reference,
            charge.status.as_str(),
            charge.attempt,
            amount,
            charge.customer_id
        );
    }
    if charges.len() == limit as usize {
        let last = charges.last().map_or(0, |c| c.id);
        println!("… more with `kassa charges list --after {last}`");
    }
}

/// Every field of `charge_json`, one per line (times in UTC with their age), and for a charge
/// in review what to check on Stripe and how to resolve it.
fn print_charge(charge: &ChargeRecord) {
    let now = kassa_store::OffsetDateTime::now_utc().unix_timestamp();
    if let Value::Object(fields) = charge_json(charge) {
        for (name, value) in fields {
            let shown = match value {
                Value::Null => "-".to_owned(),
                Value::String(s) => s,
                Value::Number(n) if name.ends_with("_at") => match n.as_i64() {
                    Some(unix) => time_for_people(unix, now),
                    None => n.to_string(),
                },
                other => other.to_string(),
            };
            println!("{:<25}{shown}", format!("{name}:"));
        }
    }
    if charge.status == ChargeStatus::NeedsReview {
        let since = charge
            .attempt_started_at
            .map(|t| t.unix_timestamp() - kassa_core::charges::lookup::CLOCK_MARGIN_SECS)
            .unwrap_or(0);
        println!();
        println!(
            "This charge needs review: Kassa could not ask Stripe whether attempt {} was charged, \
             and Stripe has forgotten its key, so Kassa will not send it again by itself.",
            charge.attempt
        );
        println!(
            "Check Stripe: the PaymentIntents of {} created since {} with metadata \
             kassa_charge_id={} and kassa_attempt={} (Dashboard, or \
             GET /v1/payment_intents?customer={}&created[gte]={since}). Then:",
            charge.customer_id,
            time_for_people(since, now),
            charge.id,
            charge.attempt,
            charge.customer_id
        );
        println!(
            "  kassa charges resolve {} --succeeded-by pi_…   one succeeded: record it",
            charge.reference
        );
        println!(
            "  kassa charges resolve {} --failed             none was paid: fail the charge",
            charge.reference
        );
        println!(
            "  kassa charges resolve {} --requeue            Stripe answers again: let Kassa look and settle (or send under a new key)",
            charge.reference
        );
    }
}

/// `2026-11-24 17:33:05 UTC (25 h ago)`.
pub(crate) fn time_for_people(unix: i64, now: i64) -> String {
    let Ok(t) = kassa_store::OffsetDateTime::from_unix_timestamp(unix) else {
        return unix.to_string();
    };
    let age = now - unix;
    let ago = match age {
        ..0 => "in the future".to_owned(),
        0..120 => format!("{age} s ago"),
        120..7200 => format!("{} min ago", age / 60),
        7200..172_800 => format!("{} h ago", age / 3600),
        _ => format!("{} days ago", age / 86_400),
    };
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC ({ago})",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
