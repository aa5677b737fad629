//! The ingress's envelope reader on any bytes (the body of a webhook whose signature verified):
//! it answers an envelope or an EnvelopeError, never panics, and what it accepts is what the
//! ingress relies on — an `evt_` id of at most 255 bytes, a routing-key-safe type of at most 255
//! bytes, `object` "event" when given. An accepted envelope reads the same again from its own JSON.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run event_envelope fuzz/corpus/event_envelope fuzz/seeds/event_envelope -- -max_total_time=60`
//! (from the repo root).
#![no_main]

use kassa_wire::envelope::{read_envelope, EnvelopeError};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    match read_envelope(data) {
        Ok(envelope) => {
            assert!(envelope.id.starts_with("evt_") && envelope.id.len() <= 255);
            assert!(!envelope.kind.is_empty() && envelope.kind.len() <= 255);
            assert!(envelope
                .kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'));
            assert!(envelope.object.as_deref().is_none_or(|o| o == "event"));
            let again = json!({
                "id": envelope.id,
                "object": envelope.object,
                "type": envelope.kind,
                "livemode": envelope.livemode,
                "created": envelope.created,
                "api_version": envelope.api_version,
            });
            let bytes = serde_json::to_vec(&again).expect("an envelope serialises");
            assert_eq!(read_envelope(&bytes), Ok(envelope));
        }
        Err(error) => {
            // Every refusal has a stable code for the 400 answer and the metric.
            assert!(matches!(
                error.code(),
                "payload_invalid_json" | "payload_not_event"
            ));
            // Well-formed JSON that is refused is refused as no event, never as no JSON.
            if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
                assert!(matches!(error, EnvelopeError::NotEvent(_)), "{error}");
            }
        }
    }
});
