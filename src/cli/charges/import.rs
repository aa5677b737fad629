//! `kassa charges import FILE.csv`: the charges of a CSV file, row by row, validated and recorded
//! as `kassa charge` records one (kassa-core's `charges::submit`), streamed with a bounded number
//! of rows in flight, each bad row reported with its line, with a progress bar on a terminal.

use super::{submit, Outcome};
use anyhow::{bail, Context};
use futures_util::{stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kassa_core::charges::submit::ChargeRequest;
use kassa_core::fields::amount_from_text;
use kassa_store::{JobRoute, Store};
use kassa_stripe::Client;
use serde::Deserialize;
use std::io::IsTerminal;

/// One CSV row as written; every cell is text until validation says otherwise.
#[derive(Debug, Deserialize)]
struct CsvRow {
    customer: Option<String>,
    amount: Option<String>,
    currency: Option<String>,
    reference: Option<String>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl CsvRow {
    fn request(self) -> ChargeRequest {
        ChargeRequest {
            customer: self.customer,
            amount: self.amount.as_deref().map(amount_from_text),
            currency: self.currency,
            payment_method: self.payment_method,
            description: self.description,
            reference: self.reference,
            metadata: None,
        }
    }
}

const REQUIRED_COLUMNS: [&str; 4] = ["customer", "amount", "currency", "reference"];
const OPTIONAL_COLUMNS: [&str; 2] = ["payment_method", "description"];

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows recorded as new charges.
    pub created: u64,
    /// Rows whose reference was already recorded (for the same charge).
    pub existed: u64,
    /// Rows refused, each reported with its line.
    pub rejected: u64,
}

/// A row read from the file: its line and the request, or why it cannot be one.
type ReadRow = (u64, Result<ChargeRequest, String>);

/// Streams `file` record by record (at most `concurrency` rows in flight, reported in file
/// order) and records each good row; a database failure stops the import.
pub(super) async fn import(
    store: &Store,
    stripe: Option<&Client>,
    route: &JobRoute,
    file: &std::path::Path,
    quiet: bool,
    concurrency: usize,
) -> anyhow::Result<ImportSummary> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = opened.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size, quiet);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true) // a short or long row is reported as such, not as a parse error
        .trim(csv::Trim::All)
        .from_reader(bar.wrap_read(opened));
    let headers = reader
        .headers()
        .with_context(|| format!("reading the header row of {}", file.display()))?
        .clone();
    check_headers(&headers)?;

    let rows = reader.into_records().map(|record| -> ReadRow {
        match record {
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                (line, Err(format!("row: {}", csv_error_message(&e))))
            }
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                if record.len() != headers.len() {
                    return (
                        line,
                        Err(format!(
                            "row: {} columns, the header has {}",
                            record.len(),
                            headers.len()
                        )),
                    );
                }
                let row = record
                    .deserialize::<CsvRow>(Some(&headers))
                    .map(CsvRow::request)
                    .map_err(|e| format!("row: {}", csv_error_message(&e)));
                (line, row)
            }
        }
    });
    let mut outcomes = stream::iter(rows)
        .map(|(line, request)| async move {
            let outcome = match request {
                Ok(request) => submit(store, stripe, route, &request).await,
                Err(message) => Ok(Outcome::Rejected(message)),
            };
            (line, outcome)
        })
        .buffered(concurrency.max(1));

    let mut summary = ImportSummary::default();
    while let Some((line, outcome)) = outcomes.next().await {
        match outcome.with_context(|| format!("line {line}"))? {
            Outcome::Created(_) => summary.created += 1,
            Outcome::Existed(_) => summary.existed += 1,
            Outcome::Rejected(message) => {
                summary.rejected += 1;
                bar.suspend(|| eprintln!("line {line}: {message}"));
            }
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

fn check_headers(headers: &csv::StringRecord) -> anyhow::Result<()> {
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .into_iter()
        .filter(|c| !headers.iter().any(|h| h == *c))
        .collect();
    if !missing.is_empty() {
        bail!(
            "line 1: the header row lacks column(s) {} (expected {}, optionally {})",
            missing.join(", "),
            REQUIRED_COLUMNS.join(","),
            OPTIONAL_COLUMNS.join(",")
        );
    }
    if let Some(unknown) = headers
        .iter()
        .find(|h| !REQUIRED_COLUMNS.contains(h) && !OPTIONAL_COLUMNS.contains(h))
    {
        bail!(
            "line 1: unknown column {unknown:?} (expected {}, optionally {})",
            REQUIRED_COLUMNS.join(","),
            OPTIONAL_COLUMNS.join(",")
        );
    }
    Ok(())
}

/// A csv error without its position (the caller says the line).
fn csv_error_message(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
        csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
        _ => error.to_string(),
    }
}

/// Bytes read of the file's size, on stderr; hidden with `--quiet` or when stderr is not a
/// terminal (a log file or a pipe gets the bad rows and the summary only).
fn progress_bar(size: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar
}
