//! `kassa widgets create|list|show`: payment widgets from the command line, stored in
//! PostgreSQL as `POST /api/widgets` stores them (the same checks, kassa-core's `widgets`), and
//! printed as JSON with the snippet that embeds them.

use super::connector::print;
use crate::config::{ModeArgs, StoreArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kassa_core::fields::amount_from_text;
use kassa_core::widgets::{plan_widget, widget_json, WidgetRequest};
use kassa_store::{Store, WidgetRecord};
use kassa_stripe::Mode;
use serde_json::{json, Value};

/// `kassa widgets`.
#[derive(Args)]
pub struct WidgetsArgs {
    #[command(subcommand)]
    command: WidgetsCommand,
}

#[derive(Subcommand)]
enum WidgetsCommand {
    /// Define a payment widget: a fixed amount, or products the customer picks from.
    Create(CreateArgs),
    /// The newest widgets.
    List {
        /// How many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        #[command(flatten)]
        store: StoreArgs,
        /// Only live (`--live`) or test (`--test`) widgets; default both.
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// One widget, with the HTML that embeds it.
    Show {
        /// `wid_…`.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `kassa widgets create`.
#[derive(Args)]
struct CreateArgs {
    /// Shown to the customer and on the PaymentIntent.
    #[arg(long)]
    description: String,
    /// A fixed amount in minor units (1999 = $19.99; 1000 = ¥1,000).
    #[arg(long, conflicts_with = "product")]
    amount: Option<String>,
    /// A product to pick, `NAME=AMOUNT` in minor units; repeatable (instead of --amount).
    #[arg(long)]
    product: Vec<String>,
    /// ISO currency code.
    #[arg(long, default_value = "usd")]
    currency: String,
    /// test or live (the mode of the Stripe key that will serve it); default test. `--live` or
    /// `--test` say the same.
    #[arg(long)]
    mode: Option<String>,
    #[command(flatten)]
    live_or_test: ModeArgs,
    /// Ask the customer for an e-mail address.
    #[arg(long)]
    collect_email: bool,
    /// Send no receipt e-mail to the customer.
    #[arg(long)]
    no_receipt: bool,
    /// Do not e-mail the merchant (KASSA_NOTIFY_EMAIL) about each payment.
    #[arg(long)]
    no_notification: bool,
    /// Where the customer goes after paying (default: Kassa's own thank-you page).
    #[arg(long)]
    success_url: Option<String>,
    /// KASSA_PUBLIC_URL, for the embed snippet printed.
    #[arg(long, env = "KASSA_PUBLIC_URL", default_value = "")]
    public_url: String,
    #[command(flatten)]
    store: StoreArgs,
}

async fn connect(store: &StoreArgs) -> anyhow::Result<Store> {
    Store::connect(&store.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at KASSA_DATABASE_URL={}",
                kassa_broker::connection::redact_url(&store.database_url)
            )
        })
}

/// The widget and the HTML that embeds it.
fn with_snippet(widget: &WidgetRecord, public_url: &str) -> Value {
    let base = match public_url.trim_end_matches('/') {
        "" => "{KASSA_PUBLIC_URL}",
        url => url,
    };
    let mut shown = widget_json(widget);
    if let Some(object) = shown.as_object_mut() {
        object.insert(
            "embed".into(),
            json!(format!(
                "<script src=\"{base}/widget.js\" async></script>\n<div data-kassa-widget=\"{}\"></div>",
                widget.id
            )),
        );
        object.insert("link".into(), json!(format!("{base}/pay/{}", widget.id)));
    }
    shown
}

/// Runs `kassa widgets …`.
pub async fn run(args: WidgetsArgs) -> anyhow::Result<()> {
    match args.command {
        WidgetsCommand::Create(args) => {
            let mut products = Vec::new();
            for product in &args.product {
                let Some((name, amount)) = product.rsplit_once('=') else {
                    bail!("--product {product:?}: expected NAME=AMOUNT (minor units)");
                };
                products.push(json!({"name": name, "amount": amount_from_text(amount)}));
            }
            let request = WidgetRequest {
                amount: args.amount.as_deref().map(amount_from_text),
                currency: Some(args.currency),
                products: (!products.is_empty()).then_some(products),
                description: Some(args.description),
                mode: args.mode,
                livemode: args.live_or_test.livemode(),
                collect_email: Some(args.collect_email),
                send_receipt: Some(!args.no_receipt),
                notify_merchant: Some(!args.no_notification),
                success_url: args.success_url,
            };
            let widget = plan_widget(&request, Mode::Test).map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = connect(&args.store).await?;
            let record = store
                .insert_widget(&widget)
                .await
                .context("storing the widget")?;
            store.close().await;
            print(&with_snippet(&record, &args.public_url))
        }
        WidgetsCommand::List { limit, store, mode } => {
            let store = connect(&store).await?;
            let widgets = store
                .widgets(mode.livemode(), limit)
                .await
                .context("listing widgets")?;
            store.close().await;
            print(&json!({"data": widgets.iter().map(widget_json).collect::<Vec<_>>()}))
        }
        WidgetsCommand::Show { id, store } => {
            let connected = connect(&store).await?;
            let widget = connected.widget(&id).await.context("reading the widget")?;
            connected.close().await;
            let Some(widget) = widget else {
                bail!("no widget {id}");
            };
            let public_url = std::env::var("KASSA_PUBLIC_URL").unwrap_or_default();
            print(&with_snippet(&widget, &public_url))
        }
    }
}
