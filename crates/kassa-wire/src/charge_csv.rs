//! The CSV form of back-office charges, as `kassa charges import FILE.csv` reads it: a header
//! row naming `customer,amount,currency,reference` and optionally `payment_method,description`
//! (any order), then one charge per row. [`reader`] reads the file, [`check_headers`] judges the header row; [`read_row`]
//! turns one record into the [`ChargeRequest`] that kassa-core validates like any other,
//! or says why the row is not one. Every cell is text until validation says otherwise. Pure
//! (no I/O), so the importer streams it and the fuzzer feeds it anything.

use crate::charge::{amount_from_text, ChargeRequest};
use csv::StringRecord;
use serde::Deserialize;

/// The columns every file has.
pub const REQUIRED_COLUMNS: [&str; 4] = ["customer", "amount", "currency", "reference"];
/// The columns a file may have.
pub const OPTIONAL_COLUMNS: [&str; 2] = ["payment_method", "description"];

/// Why a header row or a row is refused; its text is the message shown after `line N: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvRowError {
    /// The header row lacks required columns.
    #[error("the header row lacks column(s) {} (expected {}, optionally {})", .0.join(", "), REQUIRED_COLUMNS.join(","), OPTIONAL_COLUMNS.join(","))]
    MissingColumns(Vec<String>),
    /// The header row names a column Kassa does not know.
    #[error("unknown column {column:?} (expected {required}, optionally {optional})", column = .0, required = REQUIRED_COLUMNS.join(","), optional = OPTIONAL_COLUMNS.join(","))]
    UnknownColumn(String),
    /// A row with more or fewer cells than the header.
    #[error("row: {cells} columns, the header has {header}")]
    Width {
        /// Cells in the row.
        cells: usize,
        /// Columns in the header.
        header: usize,
    },
    /// A row the CSV reader or the cell decoding refused.
    #[error("row: {0}")]
    Unreadable(String),
}

/// One CSV row as written.
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
            // The file's mode is the command's (`--live`/`--test`), not a column.
            livemode: None,
        }
    }
}

/// A CSV reader as the importer reads: a header row, cells trimmed, and rows of any width
/// (a short or long row is reported by [`read_row`] as such, not as a parse error).
pub fn reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input)
}

/// The header row names every required column and nothing unknown.
pub fn check_headers(headers: &StringRecord) -> Result<(), CsvRowError> {
    let missing: Vec<String> = REQUIRED_COLUMNS
        .into_iter()
        .filter(|c| !headers.iter().any(|h| h == *c))
        .map(str::to_owned)
        .collect();
    if !missing.is_empty() {
        return Err(CsvRowError::MissingColumns(missing));
    }
    if let Some(unknown) = headers
        .iter()
        .find(|h| !REQUIRED_COLUMNS.contains(h) && !OPTIONAL_COLUMNS.contains(h))
    {
        return Err(CsvRowError::UnknownColumn(unknown.to_owned()));
    }
    Ok(())
}

/// The charge request of `record` under `headers` (checked with [`check_headers`]).
pub fn read_row(
    headers: &StringRecord,
    record: &StringRecord,
) -> Result<ChargeRequest, CsvRowError> {
    if record.len() != headers.len() {
        return Err(CsvRowError::Width {
            cells: record.len(),
            header: headers.len(),
        });
    }
    record
        .deserialize::<CsvRow>(Some(headers))
        .map(CsvRow::request)
        .map_err(|e| CsvRowError::Unreadable(csv_error_message(&e)))
}

/// A CSV reader's error as a row's refusal (the caller says the line).
pub fn unreadable(error: &csv::Error) -> CsvRowError {
    CsvRowError::Unreadable(csv_error_message(error))
}

/// A csv error without its position.
fn csv_error_message(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
        csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_become_requests_and_bad_ones_say_why() {
        let headers = StringRecord::from(vec!["reference", "customer", "amount", "currency"]);
        check_headers(&headers).unwrap();
        let request = read_row(
            &headers,
            &StringRecord::from(vec!["inv-1", "cus_1", "1999", "usd"]),
        )
        .unwrap();
        assert_eq!(request.amount, Some(json!(1999)));
        assert_eq!(request.reference.as_deref(), Some("inv-1"));
        assert_eq!(
            read_row(&headers, &StringRecord::from(vec!["inv-1", "cus_1"]))
                .unwrap_err()
                .to_string(),
            "row: 2 columns, the header has 4"
        );
        let missing = check_headers(&StringRecord::from(vec!["customer", "amount"])).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("the header row lacks column(s) currency, reference"),
            "{missing}"
        );
        let unknown = check_headers(&StringRecord::from(vec![
            "customer",
            "amount",
            "currency",
            "reference",
            "memo",
        ]))
        .unwrap_err();
        assert_eq!(unknown, CsvRowError::UnknownColumn("memo".into()));
    }
}
