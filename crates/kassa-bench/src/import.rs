//! `kassa-bench import`: `kassa charges import` of a generated N-row CSV file.
//!
//! - Measured: the real command as a child process (this executable), against a scratch
//!   database: wall time, rows/s, and its peak RSS (`VmHWM` from /proc, polled every 10 ms while
//!   it runs). Goal: it streams, so RSS stays under 100 MiB whatever N.
//! - Baseline, same run and database: the same rows inserted in-process by plain `create_charge`
//!   calls (no validation, no outbox, one row per transaction), as many in flight as the import
//!   (`--concurrency`, each on its own pooled connection). Ratio = import ÷ baseline.
//! - Then the same file again: nothing new may be created.
//!
//! The import checks that its prefix's `kassa.charges` exchange exists, so the benchmark declares
//! that one exchange on `KASSA_AMQP_URL` for its scratch prefix and deletes it afterwards.

use crate::procfs;
use crate::report::write_report;
use crate::scratch::{self, ScratchDatabase};
use anyhow::{bail, Context};
use clap::Args;
use kassa_store::{CustomerRecord, NewCharge, PaymentMethodRecord, Store};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// `kassa-bench import`.
#[derive(Args)]
pub struct ImportBenchArgs {
    /// Rows in the generated CSV file.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Rows the baseline inserts (default: `--rows`); its rate is rows/s over those.
    #[arg(long)]
    baseline_rows: Option<u64>,
    /// Import the same file a second time (nothing new may be created) and report its rate.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    again: bool,
    /// Rows the import keeps in flight (`kassa charges import --concurrency`).
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// PostgreSQL server; a scratch database `kassa_bench_…` is created on it and dropped after.
    #[arg(long, env = "KASSA_DATABASE_URL", default_value = kassa_store::DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// RabbitMQ, where the scratch prefix's `kassa.charges` exchange is declared for the import.
    #[arg(
        long,
        env = "KASSA_AMQP_URL",
        default_value = scratch::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    amqp_url: String,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/import.json")]
    output: PathBuf,
}

const CUSTOMER: &str = "cus_bench_import";
const CARD: &str = "pm_bench_import";
const RSS_GOAL_MIB: f64 = 100.0;

/// One run of the import child: how long, how much memory, what it printed.
struct ChildRun {
    elapsed: Duration,
    peak_rss_kib: u64,
    summary: String,
}

/// Runs the benchmark.
pub async fn run(args: ImportBenchArgs, kassa: &Path) -> anyhow::Result<()> {
    let database = ScratchDatabase::on(&args.database_url, "bench", &scratch::run_id())?;
    let csv_path = std::env::temp_dir().join(format!(
        "kassa-bench-import-{:08x}.csv",
        rand::random::<u32>()
    ));
    println!(
        "kassa-bench import: {} rows, import concurrency {}",
        args.rows, args.concurrency
    );
    let result = measure(&args, kassa, database.url(), &csv_path).await;
    let _ = std::fs::remove_file(&csv_path);
    database.drop().await;
    result
}

async fn measure(
    args: &ImportBenchArgs,
    kassa: &Path,
    database_url: &str,
    csv_path: &Path,
) -> anyhow::Result<()> {
    // One connection per baseline task, as the import keeps `concurrency` rows in flight.
    let store = Store::connect(database_url, args.concurrency.max(1) + 1)
        .await
        .context("creating the scratch database")?;
    record_customer(&store).await?;
    let bytes = write_csv(csv_path, args.rows)?;
    println!(
        "  generated {} ({:.1} MiB)",
        csv_path.display(),
        bytes as f64 / 1048576.0
    );

    // Baseline first, then emptied, so that both insert into the same empty table.
    let baseline_rows = args.baseline_rows.unwrap_or(args.rows).min(args.rows);
    let baseline = baseline(&store, baseline_rows, args.concurrency).await?;
    sqlx::query("TRUNCATE charges RESTART IDENTITY CASCADE")
        .execute(store.pool())
        .await
        .context("emptying charges after the baseline")?;
    let baseline_per_second = baseline_rows as f64 / baseline.as_secs_f64();
    println!(
        "  baseline ({baseline_rows} rows by in-process create_charge, {} in flight, no validation, no outbox): {:.2} s = {baseline_per_second:.0} rows/s",
        args.concurrency,
        baseline.as_secs_f64()
    );

    let topology = scratch::topology("bench");
    let prefix = topology.prefix().to_owned();
    let exchange = topology.charges_exchange();
    charges_exchange(&args.amqp_url, &exchange, true).await?;
    let measured = import_twice(
        args,
        kassa,
        &store,
        database_url,
        &prefix,
        csv_path,
        (bytes, baseline_per_second, baseline_rows),
    )
    .await;
    charges_exchange(&args.amqp_url, &exchange, false).await?;
    measured
}

/// Declares (or deletes) the scratch prefix's charges exchange, as a worker would declare it.
async fn charges_exchange(url: &str, name: &str, declare: bool) -> anyhow::Result<()> {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to KASSA_AMQP_URL")?;
    let channel = connection.create_channel().await?;
    if declare {
        let options = lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                name.into(),
                lapin::ExchangeKind::Direct,
                options,
                Default::default(),
            )
            .await
            .with_context(|| format!("declaring {name}"))?;
    } else {
        let _ = channel
            .exchange_delete(name.into(), Default::default())
            .await;
    }
    let _ = connection.close(200, "bench import".into()).await;
    Ok(())
}

/// The import, then the same file again; checks the counts and reports.
async fn import_twice(
    args: &ImportBenchArgs,
    kassa: &Path,
    store: &Store,
    database_url: &str,
    prefix: &str,
    csv_path: &Path,
    (bytes, baseline_per_second, baseline_rows): (u64, f64, u64),
) -> anyhow::Result<()> {
    let first = run_import(args, kassa, database_url, prefix, csv_path).await?;
    let (charges, jobs) = counts(store).await?;
    if charges != args.rows as i64 || jobs != args.rows as i64 {
        bail!(
            "after the import: {charges} charges and {jobs} queued jobs, expected {} of each",
            args.rows
        );
    }
    let import_per_second = args.rows as f64 / first.elapsed.as_secs_f64();
    let peak_mib = first.peak_rss_kib as f64 / 1024.0;
    println!(
        "  kassa charges import: {:.2} s = {import_per_second:.0} rows/s, peak RSS {peak_mib:.1} MiB ({})",
        first.elapsed.as_secs_f64(),
        first.summary
    );

    let again = if args.again {
        let again = run_import(args, kassa, database_url, prefix, csv_path).await?;
        let (charges_after, jobs_after) = counts(store).await?;
        if charges_after != charges || jobs_after != jobs {
            bail!("importing the same file again changed the counts: {charges_after} charges, {jobs_after} jobs");
        }
        let per_second = args.rows as f64 / again.elapsed.as_secs_f64();
        println!(
            "  the same file again: {:.2} s = {per_second:.0} rows/s, peak RSS {:.1} MiB ({})",
            again.elapsed.as_secs_f64(),
            again.peak_rss_kib as f64 / 1024.0,
            again.summary
        );
        Some((again, per_second))
    } else {
        None
    };
    store.close().await;

    let ratio = import_per_second / baseline_per_second;
    println!();
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| `kassa charges import`, {} rows: rows/s | {import_per_second:.0} | |",
        args.rows
    );
    println!(
        "| baseline: plain `create_charge` of {baseline_rows} rows, {} in flight, rows/s | {baseline_per_second:.0} | |",
        args.concurrency
    );
    println!("| **import ÷ baseline** | **{ratio:.2}** | |");
    println!("| import peak RSS (MiB) | {peak_mib:.1} | < {RSS_GOAL_MIB} |");
    if let Some((_, again_per_second)) = &again {
        println!("| same file again (nothing new): rows/s | {again_per_second:.0} | |");
    }
    let report = json!({
        "benchmark": "import",
        "rows": args.rows,
        "file_bytes": bytes,
        "concurrency": args.concurrency,
        "import": {"seconds": first.elapsed.as_secs_f64(), "rows_per_second": import_per_second,
                   "peak_rss_mib": peak_mib, "summary": first.summary},
        "reimport": again.as_ref().map(|(again, per_second)| json!({"seconds": again.elapsed.as_secs_f64(), "rows_per_second": per_second,
                     "peak_rss_mib": again.peak_rss_kib as f64 / 1024.0, "summary": again.summary})),
        "baseline_create_charge": {"in_flight": args.concurrency, "rows": baseline_rows, "rows_per_second": baseline_per_second},
        "import_over_baseline": ratio,
        "goals": {"peak_rss_mib_max": RSS_GOAL_MIB},
    });
    write_report(&args.output, &report)?;
    if peak_mib >= RSS_GOAL_MIB {
        bail!("peak RSS {peak_mib:.1} MiB is over the {RSS_GOAL_MIB} MiB goal");
    }
    Ok(())
}

async fn record_customer(store: &Store) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    kassa_store::customers::upsert_customer(
        &mut tx,
        &CustomerRecord {
            id: CUSTOMER.into(),
            email: Some("bench@example.com".into()),
            name: None,
            default_payment_method: Some(CARD.into()),
            deleted: false,
            livemode: false,
        },
    )
    .await?;
    kassa_store::customers::upsert_payment_method(
        &mut tx,
        &PaymentMethodRecord {
            id: CARD.into(),
            customer_id: Some(CUSTOMER.into()),
            brand: Some("visa".into()),
            last4: Some("4242".into()),
            exp_month: Some(12),
            exp_year: Some(2030),
            attached: true,
            livemode: Some(false),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Row `i`: the same in the file and in the baseline.
fn row(i: u64) -> NewCharge {
    NewCharge {
        reference: format!("bench-inv-{i:08}"),
        customer_id: CUSTOMER.into(),
        payment_method_id: None,
        amount: 500 + (i % 10_000) as i64,
        currency: "usd".into(),
        description: Some(format!("Benchmark invoice {i}")),
        metadata: json!({}),
        livemode: false,
    }
}

fn write_csv(path: &Path, rows: u64) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "customer,amount,currency,reference,description")?;
    for i in 0..rows {
        let charge = row(i);
        writeln!(
            out,
            "{},{},{},{},{}",
            charge.customer_id,
            charge.amount,
            charge.currency,
            charge.reference,
            charge.description.unwrap_or_default()
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// `concurrency` tasks, each on its own connection, taking the next row until all are inserted.
async fn baseline(store: &Store, rows: u64, concurrency: u32) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks = (0..concurrency.max(1)).map(|_| {
        let (pool, next) = (store.pool().clone(), next.clone());
        tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rows {
                    return anyhow::Ok(());
                }
                kassa_store::charges::create_charge(&mut conn, &row(i)).await?;
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task??;
    }
    Ok(started.elapsed())
}

/// Runs `kassa charges import` as a child, polling its peak RSS until it exits.
async fn run_import(
    args: &ImportBenchArgs,
    kassa: &Path,
    database_url: &str,
    prefix: &str,
    csv_path: &Path,
) -> anyhow::Result<ChildRun> {
    let started = Instant::now();
    let mut child = Command::new(kassa)
        .args(["charges", "import", "--quiet", "--concurrency"])
        .arg(args.concurrency.to_string())
        .arg(csv_path)
        .env("KASSA_DATABASE_URL", database_url)
        .env("KASSA_AMQP_PREFIX", prefix)
        .env("KASSA_AMQP_URL", &args.amqp_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting kassa charges import")?;
    let pid = child.id().context("reading the import's pid")?;
    let mut peak_rss_kib = 0;
    // VmHWM is the high-water mark, so sampling it just before exit misses at most the last
    // 10 ms of growth; once the child exits its memory (and VmHWM) is gone.
    let status = loop {
        if let Some(kib) = procfs::peak_rss_kib(pid) {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = started.elapsed();
    let mut summary = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut summary).await?;
    }
    let summary = summary.lines().last().unwrap_or_default().trim().to_owned();
    if !status.success() {
        bail!("kassa charges import failed ({status}): {summary}");
    }
    Ok(ChildRun {
        elapsed,
        peak_rss_kib,
        summary,
    })
}

async fn counts(store: &Store) -> anyhow::Result<(i64, i64)> {
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM charges")
        .fetch_one(store.pool())
        .await?;
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE message_type = 'charge.execute'")
            .fetch_one(store.pool())
            .await?;
    Ok((charges, jobs))
}
