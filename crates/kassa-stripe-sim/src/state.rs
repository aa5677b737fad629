//! The simulated account's data: every object by id, creation order per kind, and the execution context
//! through which endpoints change it (and so emit events).
//!
//! One `Mutex<Store>` guards it all; endpoints are synchronous functions run under that lock, never across
//! an `.await`.

use std::collections::{HashMap, HashSet};

use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Every object of the simulated account.
#[derive(Debug, Default)]
pub struct Store {
    objects: HashMap<String, Value>,
    order: HashMap<&'static str, Vec<String>>,
    /// Line items of each Checkout Session (Stripe returns them only on request: `expand[]=line_items`).
    pub line_items: HashMap<String, Vec<Value>>,
    /// `payment_intent_data` of each payment-mode Checkout Session, used when the customer pays.
    pub payment_intent_data: HashMap<String, crate::params::Params>,
    /// PaymentMethods that went through a setup (SetupIntent, or a payment with `setup_future_usage`).
    pub set_up_for_off_session: HashSet<String>,
}

impl Store {
    /// The object with this id, of any kind.
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id)
    }

    /// Ids of one kind, oldest first.
    pub fn ids(&self, kind: &str) -> &[String] {
        self.order.get(kind).map(Vec::as_slice).unwrap_or(&[])
    }

    fn insert(&mut self, kind: &'static str, id: String, value: Value) {
        if self.objects.insert(id.clone(), value).is_none() {
            self.order.entry(kind).or_default().push(id);
        }
    }

    fn replace(&mut self, id: &str, value: Value) {
        if let Some(slot) = self.objects.get_mut(id) {
            *slot = value;
        }
    }

    /// Lowers `pending_webhooks` of an event once one endpoint acknowledged it.
    pub fn webhook_delivered(&mut self, event_id: &str) {
        if let Some(Value::Number(n)) = self
            .objects
            .get_mut(event_id)
            .and_then(|e| e.get_mut("pending_webhooks"))
        {
            let left = n.as_u64().unwrap_or(0).saturating_sub(1);
            *n = left.into();
        }
    }
}

/// A new Stripe-style id: the prefix and 24 random alphanumerics (`cus_…`, `pi_…`).
pub fn new_id(prefix: &str) -> String {
    random_suffix(prefix, 24)
}

/// The prefix followed by `n` random alphanumerics.
pub fn random_suffix(prefix: &str, n: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + n);
    s.push_str(prefix);
    s.extend(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(n)
            .map(char::from),
    );
    s
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Facts about the running instance that endpoints need.
#[derive(Debug, Clone)]
pub struct Env {
    /// API version stamped on events.
    pub api_version: String,
    /// Base of hosted checkout URLs.
    pub public_url: String,
}

/// What identifies the API request that caused a change (`request` on events).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `req_…` of the API request; `None` for changes made by the customer (Checkout) or by time.
    pub request_id: Option<String>,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// One endpoint's execution: the store, the clock, and the events emitted so far.
pub struct Ctx<'a> {
    /// The account's data.
    pub store: &'a mut Store,
    /// Unix time of the request.
    pub now: i64,
    /// Instance facts.
    pub env: &'a Env,
    /// The request behind this execution.
    pub origin: Origin,
    /// Webhook endpoints configured now (an event's initial `pending_webhooks`).
    pub endpoints: usize,
    /// Events emitted, in order, to deliver as webhooks once the lock is released (none are kept when
    /// no endpoint is configured).
    pub emitted: Vec<Value>,
    /// Whether anything changed: Stripe saves an idempotent result only once an endpoint began executing.
    pub mutated: bool,
}

impl<'a> Ctx<'a> {
    /// A context for one execution.
    pub fn new(store: &'a mut Store, env: &'a Env, origin: Origin, endpoints: usize) -> Self {
        Ctx {
            store,
            now: unix_now(),
            env,
            origin,
            endpoints,
            emitted: Vec::new(),
            mutated: false,
        }
    }

    /// A clone of an object of the expected `object` type, or Stripe's 404 naming `noun` and `param`.
    pub fn fetch(
        &self,
        object: &str,
        noun: &str,
        id: &str,
        param: &str,
    ) -> Result<Value, ApiError> {
        match self.store.get(id) {
            Some(v) if v.get("object").and_then(Value::as_str) == Some(object) => Ok(v.clone()),
            _ => Err(ApiError::no_such(noun, id, param)),
        }
    }

    /// Stores a new object (no event).
    pub fn insert(&mut self, kind: &'static str, value: Value) {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.mutated = true;
        self.store.insert(kind, id, value);
    }

    /// Stores a new object and emits `{kind}.created`-style `event_type` for it.
    pub fn create(&mut self, kind: &'static str, value: Value, event_type: &str) {
        self.insert(kind, value.clone());
        self.emit(event_type, value, None);
    }

    /// Replaces an object without an event.
    pub fn put(&mut self, value: Value) {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.mutated = true;
        self.store.replace(&id, value);
    }

    /// Replaces an object and, when it changed, emits `event_type` with `previous_attributes`.
    pub fn update(&mut self, old: &Value, new: Value, event_type: Option<&str>) {
        let previous = diff(old, &new);
        self.put(new.clone());
        if let (Some(t), Some(prev)) = (event_type, previous) {
            self.emit(t, new, Some(prev));
        }
    }

    /// Emits an event: stored for `/v1/events` and delivered as a webhook.
    ///
    /// Stripe's envelope: `id`, `object=event`, `api_version`, `created`, `data.object`,
    /// `data.previous_attributes`, `livemode`, `pending_webhooks`, `request{id, idempotency_key}`, `type`
    /// (docs: the Event object).
    pub fn emit(&mut self, event_type: &str, object: Value, previous: Option<Value>) {
        let mut data = Map::new();
        data.insert("object".into(), object);
        if let Some(prev) = previous {
            data.insert("previous_attributes".into(), prev);
        }
        let event = json!({
            "id": new_id("evt_"),
            "object": "event",
            "api_version": self.env.api_version,
            "created": self.now,
            "data": data,
            "livemode": false,
            "pending_webhooks": self.endpoints,
            "request": {"id": self.origin.request_id, "idempotency_key": self.origin.idempotency_key},
            "type": event_type,
        });
        if self.endpoints > 0 {
            self.emitted.push(event.clone());
        }
        self.insert("event", event);
    }
}

/// Stripe's `previous_attributes`: "the names of the attributes that have changed, and their previous
/// values" — nested hashes list only their changed keys. `None` when nothing changed.
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov @ Value::Object(_)) if nv.is_object() => {
                        if let Some(d) = diff(ov, nv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    Some(ov) => {
                        out.insert(k.clone(), ov.clone());
                    }
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ if old == new => None,
        _ => Some(old.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_attributes_keep_only_changes() {
        let old = json!({"email": "a@x", "name": "A", "invoice_settings": {"default_payment_method": null, "footer": null}, "metadata": {"k": "1"}});
        let new = json!({"email": "b@x", "name": "A", "invoice_settings": {"default_payment_method": "pm_1", "footer": null}, "metadata": {"k": "1", "j": "2"}});
        assert_eq!(
            diff(&old, &new),
            Some(
                json!({"email": "a@x", "invoice_settings": {"default_payment_method": null}, "metadata": {"j": null}})
            )
        );
        assert_eq!(diff(&old, &old), None);
    }

    #[test]
    fn ids_have_prefix_and_length() {
        let id = new_id("cus_");
        assert!(id.starts_with("cus_"));
        assert_eq!(id.len(), 28);
        assert_ne!(id, new_id("cus_"));
    }
}
