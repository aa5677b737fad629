//! `kassa products create`, `kassa legacy-charge` (and, in [`super::customers`], `kassa
//! customers create|find`): the connector actions of the admin API (`/api/products`,
//! `/api/legacy-charges`, `/api/customers`) from the command line. They call Stripe directly with KASSA_STRIPE_API_KEY / KASSA_STRIPE_API_BASE,
//! validate input the same way the API does (kassa-core's `connector`), send keys that carry the
//! installation id (read from KASSA_DATABASE_URL), and print Stripe's object as JSON.

use crate::config::{ModeArgs, StoreArgs, StripeArgs};
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

/// A postal address from the command line (`--address-line1 …`, `--address-country DE`).
#[derive(Args, Clone, Debug, Default)]
pub struct AddressArgs {
    /// Street, PO box or company name.
    #[arg(long)]
    address_line1: Option<String>,
    /// Apartment, suite, unit or building.
    #[arg(long)]
    address_line2: Option<String>,
    /// City, district, suburb, town or village.
    #[arg(long)]
    address_city: Option<String>,
    /// State, county, province or region.
    #[arg(long)]
    address_state: Option<String>,
    /// ZIP or postal code.
    #[arg(long)]
    address_postal_code: Option<String>,
    /// Two-letter country code (ISO 3166-1 alpha-2), e.g. DE.
    #[arg(long)]
    address_country: Option<String>,
}

impl AddressArgs {
    /// The address as the API takes it, or `None` when no flag was given.
    pub(super) fn json(&self) -> Option<Value> {
        address_json([
            ("line1", &self.address_line1),
            ("line2", &self.address_line2),
            ("city", &self.address_city),
            ("state", &self.address_state),
            ("postal_code", &self.address_postal_code),
            ("country", &self.address_country),
        ])
    }
}

fn address_json(parts: [(&str, &Option<String>); 6]) -> Option<Value> {
    let map: Map<String, Value> = parts
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), Value::String(v))))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
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
    #[command(flatten)]
    mode: ModeArgs,
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
    let stripe = args.stripe.client_for(args.mode.mode())?;
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
                livemode: Some(stripe.mode().is_live()),
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
    /// Shipping: the recipient's name (required with any --shipping-* flag, as Stripe requires).
    #[arg(long)]
    shipping_name: Option<String>,
    /// Shipping: the recipient's phone.
    #[arg(long)]
    shipping_phone: Option<String>,
    /// Shipping address: street (required with any --shipping-* flag).
    #[arg(long)]
    shipping_line1: Option<String>,
    /// Shipping address: apartment, suite, unit or building.
    #[arg(long)]
    shipping_line2: Option<String>,
    /// Shipping address: city.
    #[arg(long)]
    shipping_city: Option<String>,
    /// Shipping address: state, county, province or region.
    #[arg(long)]
    shipping_state: Option<String>,
    /// Shipping address: ZIP or postal code.
    #[arg(long)]
    shipping_postal_code: Option<String>,
    /// Shipping address: two-letter country code.
    #[arg(long)]
    shipping_country: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    stripe: StripeArgs,
    #[command(flatten)]
    mode: ModeArgs,
}

impl LegacyChargeArgs {
    /// `shipping` as the API takes it, or `None` when no --shipping-* flag was given.
    fn shipping(&self) -> Option<Value> {
        let address = address_json([
            ("line1", &self.shipping_line1),
            ("line2", &self.shipping_line2),
            ("city", &self.shipping_city),
            ("state", &self.shipping_state),
            ("postal_code", &self.shipping_postal_code),
            ("country", &self.shipping_country),
        ]);
        let mut map = Map::new();
        if let Some(name) = &self.shipping_name {
            map.insert("name".into(), Value::String(name.clone()));
        }
        if let Some(phone) = &self.shipping_phone {
            map.insert("phone".into(), Value::String(phone.clone()));
        }
        if let Some(address) = address {
            map.insert("address".into(), address);
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }
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
        shipping: args.shipping(),
        livemode: args.mode.livemode(),
    };
    let params = validate_legacy_charge(&request).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stripe = args.stripe.client_for(args.mode.mode())?;
    // The validated parameters, not the raw flags: `--currency USD` and `--currency usd` are
    // the same charge.
    let amount = params.amount.to_string();
    let shipping = params
        .shipping
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
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
                ("shipping", shipping.as_deref()),
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
