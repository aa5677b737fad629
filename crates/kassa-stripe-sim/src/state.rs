//! The simulated account's data: one [`Store`] per mode ([`Accounts`]), each with every object by id,
//! creation order per kind and the events, and the execution context through which endpoints change
//! it (and so emit events).
//!
//! One `Mutex<Accounts>` guards it all; endpoints are synchronous functions run under that lock, never
//! across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::distr::Alphanumeric;
use rand::Rng;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::mode::Mode;

/// A stored object: an immutable snapshot shared by the store, the events that carry it and responses.
/// A change stores a new snapshot; earlier events keep theirs.
pub type Obj = Arc<Value>;

/// An event. Its `data.object` is the snapshot it was emitted with, shared, never copied.
///
/// Stripe's envelope: `id`, `object=event`, `api_version`, `created`, `data.object`,
/// `data.previous_attributes`, `livemode`, `pending_webhooks`, `request{id, idempotency_key}`, `type`
/// (docs: the Event object).
#[derive(Debug, Clone)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    /// Event type (`customer.created`, …).
    pub event_type: String,
    /// API version of the payload.
    pub api_version: String,
    /// Unix time.
    pub created: i64,
    /// The object as it was.
    pub object: Obj,
    /// Changed attributes with their previous values (update events).
    pub previous: Option<Value>,
    /// Endpoints that have not acknowledged it yet.
    pub pending_webhooks: u64,
    /// What caused it.
    pub origin: Origin,
    /// The mode it happened in (`livemode`).
    pub mode: Mode,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Data<'a>(&'a Event);
        impl Serialize for Data<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("object", &*self.0.object)?;
                if let Some(prev) = &self.0.previous {
                    m.serialize_entry("previous_attributes", prev)?;
                }
                m.end()
            }
        }
        struct Request<'a>(&'a Origin);
        impl Serialize for Request<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("id", &self.0.request_id)?;
                m.serialize_entry("idempotency_key", &self.0.idempotency_key)?;
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("object", "event")?;
        m.serialize_entry("api_version", &self.api_version)?;
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("data", &Data(self))?;
        m.serialize_entry("livemode", &self.mode.livemode())?;
        m.serialize_entry("pending_webhooks", &self.pending_webhooks)?;
        m.serialize_entry("request", &Request(&self.origin))?;
        m.serialize_entry("type", &self.event_type)?;
        m.end()
    }
}

impl Event {
    /// The envelope as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Every object of the simulated account.
#[derive(Debug, Default)]
pub struct Store {
    objects: HashMap<String, Obj>,
    order: HashMap<&'static str, Vec<String>>,
    events: Vec<Event>,
    event_index: HashMap<String, usize>,
    /// Line items of each Checkout Session (Stripe returns them only on request: `expand[]=line_items`).
    pub line_items: HashMap<String, Vec<Value>>,
    /// `payment_intent_data` of each payment-mode Checkout Session, used when the customer pays.
    pub payment_intent_data: HashMap<String, crate::params::Params>,
    /// Open Checkout Sessions by `expires_at`, for the clock.
    pub open_sessions: std::collections::BTreeSet<(i64, String)>,
    /// PaymentMethods that went through a setup (SetupIntent, or a payment with `setup_future_usage`).
    pub set_up_for_off_session: HashSet<String>,
    /// The mandate (`mandate_…`) a bank-debit PaymentMethod was accepted under, by PaymentMethod id.
    pub mandates: HashMap<String, String>,
    /// PaymentIntents `processing` a delayed debit, by the time it settles, for the clock.
    pub pending_debits: std::collections::BTreeSet<(i64, String)>,
}

impl Store {
    /// The object with this id, of any kind.
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id).map(|o| &**o)
    }

    /// Whether this id is one of the store's objects or events.
    pub fn holds(&self, id: &str) -> bool {
        self.objects.contains_key(id) || self.event_index.contains_key(id)
    }

    /// The shared snapshot of an object.
    pub fn get_obj(&self, id: &str) -> Option<&Obj> {
        self.objects.get(id)
    }

    /// Ids of one kind, oldest first.
    pub fn ids(&self, kind: &str) -> &[String] {
        self.order.get(kind).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every event, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// One event by id.
    pub fn event(&self, id: &str) -> Option<&Event> {
        self.event_index.get(id).and_then(|i| self.events.get(*i))
    }

    fn insert(&mut self, kind: &'static str, id: String, value: Obj) {
        if self.objects.insert(id.clone(), value).is_none() {
            self.order.entry(kind).or_default().push(id);
        }
    }

    fn replace(&mut self, id: &str, value: Obj) {
        if let Some(slot) = self.objects.get_mut(id) {
            *slot = value;
        }
    }

    /// Lowers `pending_webhooks` of an event once one endpoint acknowledged it.
    pub fn webhook_delivered(&mut self, event_id: &str) {
        if let Some(i) = self.event_index.get(event_id) {
            if let Some(e) = self.events.get_mut(*i) {
                e.pending_webhooks = e.pending_webhooks.saturating_sub(1);
            }
        }
    }
}

/// The account: test mode's objects and live mode's, never shared (docs: API keys, "objects in one
/// mode aren't accessible to the other").
#[derive(Debug, Default)]
pub struct Accounts {
    /// Test mode.
    pub test: Store,
    /// Live mode.
    pub live: Store,
}

impl Accounts {
    /// One mode's store.
    pub fn store(&self, mode: Mode) -> &Store {
        match mode {
            Mode::Test => &self.test,
            Mode::Live => &self.live,
        }
    }

    /// One mode's store, to change.
    pub fn store_mut(&mut self, mode: Mode) -> &mut Store {
        match mode {
            Mode::Test => &mut self.test,
            Mode::Live => &mut self.live,
        }
    }

    /// One mode's store, to change, with the other mode's to look at.
    pub fn split(&mut self, mode: Mode) -> (&mut Store, &Store) {
        match mode {
            Mode::Test => (&mut self.test, &self.live),
            Mode::Live => (&mut self.live, &self.test),
        }
    }

    /// The mode whose store holds this object id, if any.
    pub fn mode_of(&self, id: &str) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| self.store(*m).get(id).is_some())
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
    /// The simulator's clock (the wall clock, moved forward by `/_sim/clock/advance`).
    pub clock: std::sync::Arc<crate::clock::Clock>,
}

/// What identifies the API request that caused a change (`request` on events).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `req_…` of the API request; `None` for changes made by the customer (Checkout) or by time.
    pub request_id: Option<String>,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

fn id_of(value: &Value) -> String {
    value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// One endpoint's execution: the store of the request's mode, the simulator's clock, and the events
/// emitted so far.
pub struct Ctx<'a> {
    /// The data of the request's mode.
    pub store: &'a mut Store,
    /// The other mode's data: only to say that an id missing here exists there.
    pub other: &'a Store,
    /// The request's mode.
    pub mode: Mode,
    /// The request came with a publishable key: intents demand their `client_secret`.
    pub via_publishable_key: bool,
    /// Unix time of the request on the simulator's clock.
    pub now: i64,
    /// Instance facts.
    pub env: &'a Env,
    /// The request behind this execution.
    pub origin: Origin,
    /// The `enabled_events` of each webhook endpoint of this mode configured now (an event's
    /// initial `pending_webhooks` counts those that include its type).
    pub endpoints: Vec<crate::webhooks::EnabledEvents>,
    /// Events emitted, in order, to deliver as webhooks once the lock is released (none are kept when
    /// no endpoint is configured).
    pub emitted: Vec<Event>,
    /// Whether anything changed: Stripe saves an idempotent result only once an endpoint began executing.
    pub mutated: bool,
}

impl<'a> Ctx<'a> {
    /// A context for one execution in `mode`.
    pub fn new(
        accounts: &'a mut Accounts,
        mode: Mode,
        env: &'a Env,
        origin: Origin,
        endpoints: Vec<crate::webhooks::EnabledEvents>,
    ) -> Self {
        let (store, other) = accounts.split(mode);
        Ctx {
            store,
            other,
            mode,
            via_publishable_key: false,
            now: env.clock.now(),
            env,
            origin,
            endpoints,
            emitted: Vec::new(),
            mutated: false,
        }
    }

    /// An object of the expected `object` type, or Stripe's 404 naming `noun` and `param`.
    pub fn fetch(&self, object: &str, noun: &str, id: &str, param: &str) -> Result<Obj, ApiError> {
        match self.store.get_obj(id) {
            Some(v) if v.get("object").and_then(Value::as_str) == Some(object) => Ok(Arc::clone(v)),
            _ => Err(ApiError::no_such(noun, id, param)),
        }
    }

    /// Whether the request is in live mode (`livemode` of what it creates).
    pub fn livemode(&self) -> bool {
        self.mode.livemode()
    }

    /// Stores a new object (no event); an object with a `livemode` field gets the request's mode.
    pub fn insert(&mut self, kind: &'static str, mut value: Value) -> Obj {
        if let Some(livemode) = value.get_mut("livemode") {
            *livemode = Value::Bool(self.mode.livemode());
        }
        let obj = Arc::new(value);
        self.mutated = true;
        self.store.insert(kind, id_of(&obj), Arc::clone(&obj));
        obj
    }

    /// Stores a new object and emits `event_type` (`customer.created`, …) for it.
    pub fn create(&mut self, kind: &'static str, value: Value, event_type: &str) -> Obj {
        let obj = self.insert(kind, value);
        self.emit(event_type, Arc::clone(&obj), None);
        obj
    }

    /// Replaces an object without an event.
    pub fn put(&mut self, value: Value) -> Obj {
        let obj = Arc::new(value);
        self.mutated = true;
        self.store.replace(&id_of(&obj), Arc::clone(&obj));
        obj
    }

    /// Replaces an object and, when it changed, emits `event_type` with `previous_attributes`.
    pub fn update(&mut self, old: &Value, new: Value, event_type: Option<&str>) -> Obj {
        let previous = diff(old, &new);
        let obj = self.put(new);
        if let (Some(t), Some(prev)) = (event_type, previous) {
            self.emit(t, Arc::clone(&obj), Some(prev));
        }
        obj
    }

    /// Emits an event: stored for `/v1/events` and delivered as a webhook.
    pub fn emit(&mut self, event_type: &str, object: Obj, previous: Option<Value>) {
        let event = Event {
            id: new_id("evt_"),
            event_type: event_type.to_owned(),
            api_version: self.env.api_version.clone(),
            created: self.now,
            object,
            previous,
            pending_webhooks: self
                .endpoints
                .iter()
                .filter(|e| e.includes(event_type))
                .count() as u64,
            origin: self.origin.clone(),
            mode: self.mode,
        };
        if event.pending_webhooks > 0 {
            self.emitted.push(event.clone());
        }
        self.mutated = true;
        self.store
            .event_index
            .insert(event.id.clone(), self.store.events.len());
        self.store.events.push(event);
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
    use serde_json::json;

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
    fn events_serialize_as_stripe_envelopes() {
        let e = Event {
            id: "evt_1".into(),
            event_type: "customer.updated".into(),
            api_version: "2025-03-31.basil".into(),
            created: 7,
            object: Arc::new(json!({"id": "cus_1", "object": "customer"})),
            previous: Some(json!({"name": null})),
            pending_webhooks: 1,
            origin: Origin {
                request_id: Some("req_1".into()),
                idempotency_key: None,
            },
            mode: Mode::Test,
        };
        assert_eq!(
            e.to_value(),
            json!({"id": "evt_1", "object": "event", "api_version": "2025-03-31.basil", "created": 7,
                   "data": {"object": {"id": "cus_1", "object": "customer"}, "previous_attributes": {"name": null}},
                   "livemode": false, "pending_webhooks": 1, "request": {"id": "req_1", "idempotency_key": null},
                   "type": "customer.updated"})
        );
    }

    #[test]
    fn ids_have_prefix_and_length() {
        let id = new_id("cus_");
        assert!(id.starts_with("cus_"));
        assert_eq!(id.len(), 28);
        assert_ne!(id, new_id("cus_"));
    }
}
