//! The charge CSV importer's parsing on any file: kassa-wire's reader, header check and row
//! reader (what `kassa charges import` runs before submitting a row) never panic; every row is
//! a charge request or a refusal with a message, line numbers never go back, and a request carries
//! exactly the cells of its row (trimmed).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run csv_row fuzz/corpus/csv_row fuzz/seeds/csv_row -- -max_total_time=60`
//! (from the repo root).
#![no_main]

use kassa_wire::charge_csv::{check_headers, read_row, reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut csv = reader(data);
    let Ok(headers) = csv.headers().cloned() else {
        return;
    };
    if let Err(refused) = check_headers(&headers) {
        assert!(!refused.to_string().is_empty());
        return;
    }
    let column = |name: &str| headers.iter().position(|h| h == name);
    let mut last_line = 1;
    for record in csv.records() {
        let Ok(record) = record else {
            continue;
        };
        let line = record.position().map_or(0, |p| p.line());
        // Lines count `\n`: rows ended by a bare `\r` share one, so never fewer.
        assert!(
            line >= last_line || line == 0,
            "line {line} after {last_line}"
        );
        last_line = line.max(last_line);
        match read_row(&headers, &record) {
            Ok(request) => {
                let cell = |name: &str| column(name).and_then(|i| record.get(i));
                let kept = |value: &Option<String>, name: &str| match value {
                    Some(value) => Some(value.as_str()) == cell(name),
                    // An empty cell may read as no value.
                    None => cell(name).is_none_or(str::is_empty),
                };
                assert!(kept(&request.customer, "customer"));
                assert!(kept(&request.currency, "currency"));
                assert!(kept(&request.reference, "reference"));
                assert!(kept(&request.description, "description"));
                assert!(request.metadata.is_none());
            }
            Err(refused) => assert!(refused.to_string().starts_with("row: ")),
        }
    }
});
