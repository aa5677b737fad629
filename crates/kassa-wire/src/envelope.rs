//! The few envelope fields the ingress reads from a Stripe event; the rest of the body is
//! passed on untouched.

use serde::Deserialize;
use std::borrow::Cow;

/// `id`, `type`, `livemode`, `created` (and `api_version`) of a Stripe event. `id` and `type` are
/// borrowed from the body where their JSON strings have no escapes (always, for Stripe's ids and
/// types) and unescaped copies otherwise; the optional fields are copies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventEnvelope<'a> {
    /// `evt_…`
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Always `"event"` when present.
    #[serde(default, borrow)]
    pub object: Option<Cow<'a, str>>,
    /// The event type, e.g. `checkout.session.completed`; the routing key.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Whether the event comes from live mode.
    pub livemode: bool,
    /// Unix time the event was created.
    pub created: i64,
    /// API version the payload was rendered with.
    #[serde(default, borrow)]
    pub api_version: Option<Cow<'a, str>>,
}

/// Why a verified body is still not a Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an event envelope.
    #[error("the body is not a Stripe event: {0}")]
    NotEvent(String),
}

impl EnvelopeError {
    /// A stable code for HTTP answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::NotJson(_) => "payload_invalid_json",
            EnvelopeError::NotEvent(_) => "payload_not_event",
        }
    }
}

/// Reads and checks the envelope of `body`.
pub fn read_envelope(body: &[u8]) -> Result<EventEnvelope<'_>, EnvelopeError> {
    // One pass straight into the envelope: unknown fields (the whole `data`) are skipped without
    // building a tree. serde_json's error category tells "not JSON" from "JSON, not an event".
    let envelope: EventEnvelope<'_> =
        serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => EnvelopeError::NotEvent(e.to_string()),
            _ => EnvelopeError::NotJson(e.to_string()),
        })?;
    if !envelope.id.starts_with("evt_") || envelope.id.len() > 255 {
        return Err(EnvelopeError::NotEvent("id must start with evt_".into()));
    }
    if envelope.object.as_deref().is_some_and(|o| o != "event") {
        return Err(EnvelopeError::NotEvent("object is not \"event\"".into()));
    }
    let valid_type = !envelope.kind.is_empty()
        && envelope.kind.len() <= 255
        && envelope
            .kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if !valid_type {
        return Err(EnvelopeError::NotEvent("type is not an event type".into()));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stripe_event() {
        let body = br#"{"id":"evt_1","object":"event","type":"checkout.session.completed","livemode":false,"created":1,"api_version":"2024-06-20","data":{"object":{}}}"#;
        let envelope = read_envelope(body).unwrap();
        assert_eq!(envelope.id, "evt_1");
        assert_eq!(envelope.kind, "checkout.session.completed");
        assert!(!envelope.livemode);
        // Read in place, not copied.
        assert!(matches!(envelope.id, Cow::Borrowed(_)));
        assert!(matches!(envelope.kind, Cow::Borrowed(_)));
    }

    #[test]
    fn reads_fields_whose_json_strings_have_escapes() {
        // Borrowed where the string has no escapes; owned (unescaped) where it has.
        let body = br#"{"id":"evt_\u0031","type":"customer.updated","livemode":true,"created":1}"#;
        let envelope = read_envelope(body).unwrap();
        assert_eq!(envelope.id, "evt_1");
        assert_eq!(envelope.kind, "customer.updated");
        assert!(envelope.livemode);
    }

    #[test]
    fn tells_non_json_from_non_events() {
        assert_eq!(
            read_envelope(b"not json").unwrap_err().code(),
            "payload_invalid_json"
        );
        for body in [
            &br#"{"hello":"world"}"#[..],
            br#"[1,2]"#,
            br#"{"id":"cus_1","type":"x","livemode":false,"created":1}"#,
            br#"{"id":"evt_1","object":"customer","type":"x","livemode":false,"created":1}"#,
            br#"{"id":"evt_1","type":"a b#","livemode":false,"created":1}"#,
            br#"{"id":"evt_1","type":"x","livemode":"no","created":1}"#,
        ] {
            assert_eq!(
                read_envelope(body).unwrap_err().code(),
                "payload_not_event",
                "{body:?}"
            );
        }
    }
}
