use super::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An Event (`evt_…`) as sent to webhooks and listed by `GET /v1/events`.
///
/// `data.object` stays JSON: its type depends on `type`, and handlers re-fetch the object anyway
/// (events arrive out of order, so the payload's state is never trusted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`; the same event may be delivered more than once.
    pub id: String,
    /// e.g. `checkout.session.completed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Live mode or test mode event; must match the API key's mode.
    #[serde(default)]
    pub livemode: bool,
    /// Creation time; orders events only roughly.
    #[serde(default)]
    pub created: Timestamp,
    /// The API version `data.object` is rendered in.
    pub api_version: Option<String>,
    /// The object and what changed.
    pub data: EventData,
    /// The API request that caused the event, if any.
    pub request: Option<EventRequest>,
    /// Webhook deliveries still pending.
    #[serde(default)]
    pub pending_webhooks: u64,
    /// The connected account, for Connect events.
    pub account: Option<String>,
}

/// `data` of an Event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The object as it was when the event happened.
    pub object: Value,
    /// For `*.updated` events, the changed fields' old values.
    pub previous_attributes: Option<Value>,
}

/// `request` of an Event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRequest {
    /// `req_…`, or none for automatic events.
    pub id: Option<String>,
    /// The Idempotency-Key of that request.
    pub idempotency_key: Option<String>,
}

impl Event {
    /// The id of `data.object` (`cs_…`, `pi_…`, …), if it has one.
    pub fn object_id(&self) -> Option<&str> {
        self.data.object.get("id").and_then(Value::as_str)
    }

    /// The `object` name of `data.object` (`checkout.session`, `payment_intent`, …).
    pub fn object_type(&self) -> Option<&str> {
        self.data.object.get("object").and_then(Value::as_str)
    }

    /// `data.object` as a typed object.
    pub fn data_object<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data.object)
    }
}
