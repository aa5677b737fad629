//! `kassa status`: what this installation is and whether its parts answer — the installation id
//! (in every Idempotency-Key and in the metadata of Kassa's Stripe objects), PostgreSQL, RabbitMQ
//! (and the dead letters waiting), Stripe (the key's mode, and whether it may list PaymentIntents,
//! which charge lookups need), and the charges by status. Exit status 1 when a part does not
//! answer, so a script or a probe can use it.

use crate::config::{BrokerArgs, StoreArgs, StripeArgs};
use anyhow::Context;
use clap::Args;
use kassa_broker::connection::redact_url;
use kassa_broker::Broker;
use kassa_store::Store;
use kassa_stripe::resources::ListPaymentIntents;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `kassa status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    stripe: StripeArgs,
}

/// How long each part gets to answer.
const PART_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `kassa status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mut report = serde_json::Map::new();
    let mut healthy = database(&args, &mut report).await;
    healthy &= broker(&args, &mut report).await?;
    healthy &= stripe(&args, &mut report).await?;
    let report = Value::Object(report);
    if args.json {
        println!("{report}");
    } else {
        print!("{}", for_people(&report));
    }
    if !healthy {
        anyhow::bail!("a part of Kassa does not answer (see above)");
    }
    Ok(())
}

/// The installation id, the database and the charges by status, into `report`; whether the
/// database answered.
async fn database(args: &StatusArgs, report: &mut serde_json::Map<String, Value>) -> bool {
    let mut healthy = true;
    let database = redact_url(&args.store.database_url);
    // Inspect only: a missing or unmigrated database is reported, never created here.
    let connected = Store::connect_existing(&args.store.database_url, 1);
    match tokio::time::timeout(PART_TIMEOUT, connected).await {
        Ok(Ok(store)) => {
            let counts = store.charge_counts().await;
            let applied: Result<i64, _> = sqlx::query_scalar(
                "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
            )
            .fetch_one(store.pool())
            .await;
            report.insert(
                "installation".into(),
                json!(store.installation_id().to_owned()),
            );
            report.insert(
                "database".into(),
                json!({"url": database, "reachable": true, "schema_version": applied.ok()}),
            );
            match counts {
                Ok(counts) => {
                    let counts: serde_json::Map<String, Value> = counts
                        .into_iter()
                        .map(|(status, n)| (status.as_str().to_owned(), json!(n)))
                        .collect();
                    report.insert("charges".into(), Value::Object(counts));
                }
                Err(error) => {
                    healthy = false;
                    report.insert(
                        "charges".into(),
                        json!({"error": format!("counting charges: {error}")}),
                    );
                }
            }
            store.close().await;
        }
        Ok(Err(error)) => {
            healthy = false;
            report.insert("installation".into(), Value::Null);
            report.insert(
                "database".into(),
                json!({"url": database, "reachable": false,
                       "error": format!("{} (not created and migrated by `kassa migrate` yet?)", chain(&error))}),
            );
        }
        Err(_) => {
            healthy = false;
            report.insert("installation".into(), Value::Null);
            report.insert(
                "database".into(),
                json!({"url": database, "reachable": false, "error": format!("no answer within {PART_TIMEOUT:?}")}),
            );
        }
    }

    healthy
}

/// The broker and its dead letters, into `report`; whether RabbitMQ answered (a malformed
/// KASSA_AMQP_URL is an error).
async fn broker(
    args: &StatusArgs,
    report: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<bool> {
    let mut healthy = true;
    let shutdown = CancellationToken::new();
    let broker = Broker::start(args.broker.config()?, shutdown.clone());
    let amqp = redact_url(&args.broker.amqp_url);
    match broker.wait_ready(PART_TIMEOUT).await {
        Ok(()) => {
            let dead = dead_letters(&broker).await;
            report.insert(
                "broker".into(),
                json!({"url": amqp, "prefix": args.broker.amqp_prefix, "reachable": true, "dead_letters": dead.ok()}),
            );
        }
        Err(error) => {
            healthy = false;
            report.insert(
                "broker".into(),
                json!({"url": amqp, "prefix": args.broker.amqp_prefix, "reachable": false, "error": error.to_string()}),
            );
        }
    }
    kassa::stack::stop_broker(&broker, &shutdown).await;

    Ok(healthy)
}

/// Stripe: each configured key's mode and whether it may list PaymentIntents, into `report`;
/// whether Stripe answered every key (or no key is set).
async fn stripe(
    args: &StatusArgs,
    report: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<bool> {
    let mut healthy = true;
    match args.stripe.target()? {
        None => {
            report.insert(
                "stripe".into(),
                json!({"configured": false, "note": "no Stripe key is set (KASSA_STRIPE_API_KEY, KASSA_STRIPE_TEST_SECRET_KEY, KASSA_STRIPE_LIVE_SECRET_KEY)"}),
            );
        }
        Some(_) => {
            // Each configured mode's key is checked on its own; the top-level fields are the
            // default mode's.
            let modes = args.stripe.modes()?;
            let mut per_mode = serde_json::Map::new();
            for (mode, client) in modes.iter() {
                let (reachable, check) = check_key(client, &args.stripe.stripe_api_base).await;
                healthy &= reachable;
                per_mode.insert(mode.to_string(), check);
            }
            let mut summary = per_mode
                .get(&modes.default_mode().to_string())
                .cloned()
                .unwrap_or_else(|| json!({}));
            if let Some(summary) = summary.as_object_mut() {
                summary.insert(
                    "default_mode".into(),
                    json!(modes.default_mode().to_string()),
                );
                summary.insert("modes".into(), Value::Object(per_mode));
            }
            report.insert("stripe".into(), summary);
        }
    }

    Ok(healthy)
}

/// Whether `client`'s key may list PaymentIntents, and what `kassa status` says of it.
async fn check_key(client: &kassa_stripe::Client, api_base: &str) -> (bool, Value) {
    let key = client.api_key();
    let params = ListPaymentIntents {
        limit: Some(1),
        ..Default::default()
    };
    let answered = tokio::time::timeout(PART_TIMEOUT, client.payment_intents().list(&params)).await;
    let (reachable, error) = match answered {
        Ok(Ok(_)) => (true, None),
        Ok(Err(error)) => (false, Some(error.to_string())),
        Err(_) => (false, Some(format!("no answer within {PART_TIMEOUT:?}"))),
    };
    let check = json!({
        "configured": true,
        "mode": client.mode().to_string(),
        "restricted_key": key.restricted,
        "api_base": api_base,
        "can_list_payment_intents": reachable,
        "error": error,
    });
    (reachable, check)
}

/// An error and its causes, `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Messages in the dead-letter queue, by a passive declare (reads nothing).
async fn dead_letters(broker: &Broker) -> anyhow::Result<u32> {
    let channel = broker.open_channel().await?;
    let queue = broker.topology().dead_letters_queue();
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .with_context(|| format!("inspecting {queue}"))?;
    let _ = channel.close(200, "status".into()).await;
    Ok(declared.message_count())
}

/// The report as aligned lines.
fn for_people(report: &Value) -> String {
    let mut out = String::new();
    let mut line = |name: &str, text: String| out.push_str(&format!("{name:<14}{text}\n"));
    line(
        "installation",
        report["installation"].as_str().map_or_else(
            || "unknown (database unreachable)".to_owned(),
            str::to_owned,
        ),
    );
    let db = &report["database"];
    line(
        "database",
        if db["reachable"] == true {
            format!(
                "{}: reachable, schema version {}",
                db["url"].as_str().unwrap_or(""),
                db["schema_version"]
            )
        } else {
            format!(
                "{}: NOT reachable: {}",
                db["url"].as_str().unwrap_or(""),
                db["error"].as_str().unwrap_or("")
            )
        },
    );
    let broker = &report["broker"];
    line(
        "broker",
        if broker["reachable"] == true {
            format!(
                "{}: reachable, prefix {:?}, dead letters {}",
                broker["url"].as_str().unwrap_or(""),
                broker["prefix"].as_str().unwrap_or(""),
                broker["dead_letters"]
            )
        } else {
            format!(
                "{}: NOT reachable: {}",
                broker["url"].as_str().unwrap_or(""),
                broker["error"].as_str().unwrap_or("")
            )
        },
    );
    let stripe = &report["stripe"];
    line(
        "stripe",
        if stripe["configured"] != true {
            "not configured (KASSA_STRIPE_API_KEY is not set)".to_owned()
        } else {
            let kind = if stripe["restricted_key"] == true {
                "restricted key"
            } else {
                "secret key"
            };
            let reach = if stripe["can_list_payment_intents"] == true {
                "reachable, may list PaymentIntents".to_owned()
            } else {
                format!("NOT usable: {}", stripe["error"].as_str().unwrap_or(""))
            };
            format!(
                "{} mode, {kind}, {}: {reach}",
                stripe["mode"].as_str().unwrap_or(""),
                stripe["api_base"].as_str().unwrap_or("")
            )
        },
    );
    if let Some(charges) = report["charges"].as_object() {
        let text = if charges.is_empty() {
            "none".to_owned()
        } else {
            charges
                .iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("charges", text);
        if charges.get("needs_review").and_then(Value::as_i64) > Some(0) {
            line(
                "",
                "charges need review: `kassa charges list --status needs_review`".to_owned(),
            );
        }
    }
    out
}
