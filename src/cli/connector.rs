//! `kassa products create`, `kassa legacy-charge` (and, in [`super::customers`], `kassa
//! customers create|find`): the connector actions of the admin API (`/api/products`,
//! `/api/legacy-charges`, `/api/customers`) from the command line. They call Stripe directly with KASSA_STRIPE_API_KEY / KASSA_STRIPE_API_BASE,
//! validate input the same way the API does (kassa-core's `connector`), send keys that carry the
//! installation id (read from KASSA_DATABASE_URL), and print Stripe's object as JSON.

use crate::config::{StoreArgs, StripeArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_core::connector::{
    product_params, validate_legacy_charge, LegacyChargeRequest, ProductRequest,
};
use kassa_core::keys;
use kassa_store::Store;
use kassa_stripe::IdempotencyKey;
use serde_json::{Map, Value};

/// The Idempotency-Key of a command: yours (`--idempotency-key`), or one derived from the
/// command's arguments, so re-running a command that timed out or whose answer was lost never
/// creates (or charges) twice. Either way it carries this installation's id, read from the
/// database.
#[derive(Args, Clone, Debug)]
pub struct KeyArgs {
    /// Idempotency key sent to Stripe (as `kassa:INSTALLATION:connector:ACTION:KEY`). Without it
    /// the key is a SHA-256 of the command's arguments: the same command run again within
    /// Stripe's 24 hours returns the first result instead of creating a second one. To create a
    /// second, identical one on purpose (a second charge of the same amount), give a new key.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

impl KeyArgs {
    /// The key for `action`, from `--idempotency-key` or derived from `arguments`.
    pub(super) async fn key(
        &self,
        action: &str,
        arguments: &[(&str, Option<&str>)],
    ) -> anyhow::Result<IdempotencyKey> {
        let installation = installation_id(&self.store).await?;
        let scope = format!("connector:{action}");
        let key = match &self.idempotency_key {
            Some(key) => keys::caller(&installation, &scope, key)
                .map_err(|e| anyhow::anyhow!("--idempotency-key: {e}"))?,
            None => keys::derived(&installation, &scope, arguments)
                .map_err(|e| anyhow::anyhow!("deriving the idempotency key: {e}"))?,
        };
        eprintln!("Idempotency-Key: {key}");
        Ok(key)
    }
}

/// This installation's id, from the database (created and migrated if missing, like every
/// command's).
async fn installation_id(store: &StoreArgs) -> anyhow::Result<String> {
    let connected = Store::connect(&store.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "reading the installation id at KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&store.database_url)
            )
        })?;
    let id = connected.installation_id().to_owned();
    connected.close().await;
    Ok(id)
}

/// `--metadata key=value` flags as the API's `metadata` object.
pub(super) fn metadata(pairs: &[String]) -> anyhow::Result<Option<Value>> {
    let mut metadata = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--metadata {pair:?}: expected key=value");
        };
        metadata.insert(key.trim().to_owned(), Value::String(value.to_owned()));
    }
    Ok(Some(Value::Object(metadata)))
}

pub(super) fn text(value: Option<String>) -> Option<Value> {
    value.map(Value::String)
}

pub(super) fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `kassa products`.
#[derive(Args)]
pub struct ProductsArgs {
    #[command(subcommand)]
    command: ProductsCommand,
    #[command(flatten)]
    stripe: StripeArgs,
}

#[derive(Subcommand)]
enum ProductsCommand {
    /// Create a product.
    Create {
        /// The name shown to customers.
        #[arg(long)]
        name: String,
        /// Shown to customers.
        #[arg(long)]
        description: Option<String>,
        /// Your code for it, kept as metadata.product_code (what /api/checkout-sessions upserts by).
        #[arg(long)]
        product_code: Option<String>,
        /// key=value, repeatable.
        #[arg(long)]
        metadata: Vec<String>,
        #[command(flatten)]
        key: KeyArgs,
    },
}

/// Runs `kassa products …`.
pub async fn products(args: ProductsArgs) -> anyhow::Result<()> {
    let stripe = args.stripe.client()?;
    match args.command {
        ProductsCommand::Create {
            name,
            description,
            product_code,
            metadata: pairs,
            key,
        } => {
            let params = product_params(&ProductRequest {
                name: text(Some(name.clone())),
                description: text(description.clone()),
                product_code: text(product_code.clone()),
                metadata: metadata(&pairs)?,
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let metadata_args = pairs.join("\n");
            let key = key
                .key(
                    "product",
                    &[
                        ("name", Some(&name)),
                        ("description", description.as_deref()),
                        ("product_code", product_code.as_deref()),
                        ("metadata", Some(&metadata_args)),
                    ],
                )
                .await?;
            let product = stripe
                .products()
                .create(&params, &key)
                .await
                .context("creating the product")?;
            print(&product)
        }
    }
}

/// `kassa legacy-charge`: a charge with the legacy Charges API (`POST /v1/charges`). Stripe
/// recommends PaymentIntents for new integrations (`kassa charge` uses them); this is for tokens
/// and sources of existing integrations.
#[derive(Args)]
pub struct LegacyChargeArgs {
    /// Integer minor units: 1999 for $19.99, 1000 for ¥1,000.
    #[arg(long)]
    amount: String,
    /// ISO currency code, any case.
    #[arg(long)]
    currency: String,
    /// A token such as tok_visa, or a card of --customer.
    #[arg(long)]
    source: Option<String>,
    /// `cus_…`: charged on their default source unless --source is given.
    #[arg(long)]
    customer: Option<String>,
    /// Shown in Stripe.
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    stripe: StripeArgs,
}

/// Runs `kassa legacy-charge`.
pub async fn legacy_charge(args: LegacyChargeArgs) -> anyhow::Result<()> {
    // The API's validation, so both refuse the same input with the same words.
    let request = LegacyChargeRequest {
        amount: Some(kassa_core::fields::amount_from_text(&args.amount)),
        currency: Some(Value::String(args.currency.clone())),
        source: args.source.clone().map(Value::String),
        customer: args.customer.clone().map(Value::String),
        description: args.description.clone().map(Value::String),
        metadata: None,
    };
    let params = validate_legacy_charge(&request).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stripe = args.stripe.client()?;
    // The validated parameters, not the raw flags: `--currency USD` and `--currency usd` are
    // the same charge.
    let amount = params.amount.to_string();
    let key = args
        .key
        .key(
            "legacy_charge",
            &[
                ("amount", Some(&amount)),
                ("currency", Some(&params.currency)),
                ("source", params.source.as_deref()),
                ("customer", params.customer.as_deref()),
                ("description", params.description.as_deref()),
            ],
        )
        .await?;
    let charge = stripe
        .charges()
        .create(&params, &key)
        .await
        .context("creating the charge (legacy Charges API)")?;
    print(&charge)
}
