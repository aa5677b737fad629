//! `kassa charges import FILE.csv`: the charges of a CSV file, row by row, validated and recorded
//! as `kassa charge` records one (kassa-core's `charges::submit`), streamed with a bounded number
//! of rows in flight, each bad row reported with its line, with a progress bar on a terminal.

use super::{submit, Outcome};
use anyhow::{bail, Context};
use futures_util::{stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kassa_core::charges::csv_rows::{self, check_headers, read_row, unreadable};
use kassa_core::charges::submit::{ChargeMode, ChargeRequest};
use kassa_store::{JobRoute, Store};
use std::io::IsTerminal;

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
    mode: ChargeMode<'_>,
    route: &JobRoute,
    file: &std::path::Path,
    quiet: bool,
    concurrency: usize,
) -> anyhow::Result<ImportSummary> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = opened.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size, quiet);
    let mut reader = csv_rows::reader(bar.wrap_read(opened));
    let headers = reader
        .headers()
        .with_context(|| format!("reading the header row of {}", file.display()))?
        .clone();
    if let Err(refused) = check_headers(&headers) {
        bail!("line 1: {refused}");
    }

    let rows = reader.into_records().map(|record| -> ReadRow {
        match record {
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                (line, Err(unreadable(&e).to_string()))
            }
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                let row = read_row(&headers, &record).map_err(|e| e.to_string());
                (line, row)
            }
        }
    });
    let mut outcomes = stream::iter(rows)
        .map(|(line, request)| async move {
            let outcome = match request {
                Ok(request) => submit(store, mode, route, &request).await,
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
