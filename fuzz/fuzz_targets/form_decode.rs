//! The simulator's form decoder on any bytes: it answers a map or a FormError, never panics, and
//! every leaf is a string (Stripe receives strings). What Kassa's own client encodes
//! (`kassa_wire::form::Form`, which kassa-stripe sends) decodes back to the same fields, whatever the values hold
//! (`&`, `=`, `+`, `%`, brackets, any Unicode).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run form_decode fuzz/corpus/form_decode fuzz/seeds/form_decode -- -max_total_time=60`
//! (from the repo root).
#![no_main]

use kassa_wire::form::Form;
use kassa_stripe_sim::form::decode;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fn leaves_are_strings(value: &Value, depth: usize) -> bool {
    assert!(depth <= 17, "nesting deeper than the decoder's limit");
    match value {
        Value::String(_) => true,
        Value::Object(map) => map.values().all(|v| leaves_are_strings(v, depth + 1)),
        Value::Array(items) => items.iter().all(|v| leaves_are_strings(v, depth + 1)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes.
    if let Ok(map) = decode(data) {
        assert!(leaves_are_strings(&Value::Object(map), 0));
    }

    // 2. Round trip of what the client sends: the input's NUL-separated pieces become values
    //    (and a metadata key) of a Stripe-shaped request.
    let text = String::from_utf8_lossy(data);
    let mut pieces = text.split('\0');
    let mut next = || pieces.next().unwrap_or("").to_owned();
    let (amount, description, key, value) = (next(), next(), next(), next());
    let mut metadata = Map::new();
    // Keys with brackets are not representable in bracket notation; Stripe refuses empty keys.
    if !key.is_empty() && !key.contains(['[', ']']) {
        metadata.insert(key, Value::String(value));
    }
    let sent = json!({
        "amount": amount,
        "description": description,
        "metadata": metadata,
    });
    let body = Form::from_value(&sent).expect("an object encodes").encode();
    let received = decode(body.as_bytes()).expect("the client's body decodes");
    let mut expected = sent.as_object().unwrap().clone();
    if metadata_is_empty(&expected) {
        // An empty object sends no field at all.
        expected.remove("metadata");
    }
    assert_eq!(
        Value::Object(received),
        Value::Object(expected),
        "body: {body}"
    );
});

fn metadata_is_empty(map: &Map<String, Value>) -> bool {
    map["metadata"].as_object().is_some_and(Map::is_empty)
}
