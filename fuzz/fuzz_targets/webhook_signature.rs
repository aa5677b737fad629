//! Any header and body: verification answers Ok or a SignatureError, never panics.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run webhook_signature -- -max_total_time=60` (from the repo root).
#![no_main]

use kassa_wire::webhook::{parse_signature_header, sign, WebhookVerifier};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fuzz_target!(|data: &[u8]| {
    // First line: the Stripe-Signature header; the rest: the body.
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let header = String::from_utf8_lossy(header);
    let verifier = WebhookVerifier::new(vec![
        SecretString::from("whsec_fuzz_a".to_owned()),
        SecretString::from("whsec_fuzz_b".to_owned()),
    ]);
    let now = 1_700_000_000;
    let _ = parse_signature_header(&header);
    let _ = verifier.verify(Some(&header), body, now);
    // A correctly signed copy of the same body must always verify.
    let good = sign("whsec_fuzz_b", now, body);
    assert!(verifier.verify(Some(&good), body, now).is_ok());
});
