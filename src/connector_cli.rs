//! `kassa customers create|find`, `kassa products create`, `kassa legacy-charge`: the connector
//! actions of the admin API (`/api/customers`, `/api/products`, `/api/legacy-charges`) from the
//! command line. They call Stripe directly with KASSA_STRIPE_API_KEY / KASSA_STRIPE_API_BASE,
//! validate input the same way the API does, and print Stripe's object as JSON.

use crate::config::StripeArgs;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa::stack::StripeTarget;
use kassa_ingress::connector::{validate_legacy_charge, LegacyChargeRequest};
use kassa_ingress::idempotency;
use kassa_stripe::objects::Metadata;
use kassa_stripe::resources::{CustomerParams, ListCustomers, ProductParams};
use kassa_stripe::{Client, ClientConfig, IdempotencyKey};
use serde_json::{json, Value};

/// The Stripe client for a command that needs one.
pub fn stripe_client(args: &StripeArgs) -> anyhow::Result<Client> {
    let Some(StripeTarget::Api { key, api_base }) = args.target()? else {
        bail!("KASSA_STRIPE_API_KEY is required (a sk_test_/sk_live_ or rk_ key)");
    };
    let mut config = ClientConfig::new(key);
    config.api_base = api_base;
    config.max_requests_per_second = args.stripe_max_rps;
    Client::new(config).context("KASSA_STRIPE_API_KEY / KASSA_STRIPE_API_BASE")
}

/// The Idempotency-Key of a command: yours (`--idempotency-key`), or one derived from the
/// command's arguments, so re-running a command that timed out or whose answer was lost never
/// creates (or charges) twice.
#[derive(Args, Clone, Debug)]
pub struct KeyArgs {
    /// Idempotency key sent to Stripe (as `kassa:connector:ACTION:KEY`). Without it the key is a
    /// SHA-256 of the command's arguments: the same command run again within Stripe's 24 hours
    /// returns the first result instead of creating a second one. To create a second, identical
    /// one on purpose (a second charge of the same amount), give a new key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

impl KeyArgs {
    /// The key for `action`, from `--idempotency-key` or derived from `arguments`.
    fn key(
        &self,
        action: &str,
        arguments: &[(&str, Option<&str>)],
    ) -> anyhow::Result<IdempotencyKey> {
        let scope = format!("connector:{action}");
        let key = match &self.idempotency_key {
            Some(key) => idempotency::given(&scope, key)
                .map_err(|e| anyhow::anyhow!("--idempotency-key: {}", e.message))?,
            None => idempotency::derived(&scope, arguments)
                .map_err(|e| anyhow::anyhow!("deriving the idempotency key: {}", e.message))?,
        };
        eprintln!("Idempotency-Key: {key}");
        Ok(key)
    }
}

fn metadata(pairs: &[String]) -> anyhow::Result<Option<Metadata>> {
    let mut metadata = Metadata::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--metadata {pair:?}: expected key=value");
        };
        metadata.insert(key.trim().to_owned(), value.to_owned());
    }
    Ok(Some(metadata).filter(|m| !m.is_empty()))
}

fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `kassa customers`.
#[derive(Args)]
pub struct CustomersArgs {
    #[command(subcommand)]
    command: CustomersCommand,
    #[command(flatten)]
    stripe: StripeArgs,
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
        /// key=value, repeatable.
        #[arg(long)]
        metadata: Vec<String>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Find customers by exact e-mail (Stripe's customer list, which sees new customers at once).
    Find {
        /// The e-mail address, compared case-sensitively as Stripe does.
        #[arg(long)]
        email: String,
    },
}

/// Runs `kassa customers …`.
pub async fn customers(args: CustomersArgs) -> anyhow::Result<()> {
    let stripe = stripe_client(&args.stripe)?;
    match args.command {
        CustomersCommand::Create {
            email,
            name,
            metadata: pairs,
            key,
        } => {
            let metadata_args = pairs.join("\n");
            let key = key.key(
                "customer",
                &[
                    ("email", email.as_deref()),
                    ("name", name.as_deref()),
                    ("metadata", Some(&metadata_args)),
                ],
            )?;
            let params = CustomerParams {
                email,
                name,
                metadata: metadata(&pairs)?,
                ..Default::default()
            };
            let customer = stripe
                .customers()
                .create(&params, &key)
                .await
                .context("creating the customer")?;
            print(&customer)
        }
        CustomersCommand::Find { email } => {
            let list = stripe
                .customers()
                .list(&ListCustomers {
                    email: Some(email),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .context("listing customers by e-mail")?;
            print(&json!({"data": list.data, "has_more": list.has_more}))
        }
    }
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
    let stripe = stripe_client(&args.stripe)?;
    match args.command {
        ProductsCommand::Create {
            name,
            description,
            product_code,
            metadata: pairs,
            key,
        } => {
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let metadata_args = pairs.join("\n");
            let key = key.key(
                "product",
                &[
                    ("name", Some(&name)),
                    ("description", description.as_deref()),
                    ("product_code", product_code.as_deref()),
                    ("metadata", Some(&metadata_args)),
                ],
            )?;
            let mut metadata = metadata(&pairs)?.unwrap_or_default();
            if let Some(code) = product_code {
                metadata.insert("product_code".into(), code);
            }
            let params = ProductParams {
                name: Some(name),
                description,
                metadata: Some(metadata).filter(|m| !m.is_empty()),
                ..Default::default()
            };
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
    let amount = match args.amount.trim().parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => match args.amount.trim().parse::<f64>() {
            Ok(f) => json!(f),
            Err(_) => Value::String(args.amount.clone()),
        },
    };
    let request = LegacyChargeRequest {
        amount: Some(amount),
        currency: Some(Value::String(args.currency.clone())),
        source: args.source.clone().map(Value::String),
        customer: args.customer.clone().map(Value::String),
        description: args.description.clone().map(Value::String),
        metadata: None,
    };
    let params = validate_legacy_charge(&request).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let stripe = stripe_client(&args.stripe)?;
    // The validated parameters, not the raw flags: `--currency USD` and `--currency usd` are
    // the same charge.
    let amount = params.amount.to_string();
    let key = args.key.key(
        "legacy_charge",
        &[
            ("amount", Some(&amount)),
            ("currency", Some(&params.currency)),
            ("source", params.source.as_deref()),
            ("customer", params.customer.as_deref()),
            ("description", params.description.as_deref()),
        ],
    )?;
    let charge = stripe
        .charges()
        .create(&params, &key)
        .await
        .context("creating the charge (legacy Charges API)")?;
    print(&charge)
}
