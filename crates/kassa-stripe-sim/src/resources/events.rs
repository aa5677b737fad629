//! Events: list (`type`, `types[]`, `created[gte]`, `delivery_success`, pagination) and retrieve.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;
use crate::list;
use crate::params::{as_text, int_value, Params};
use crate::state::{Ctx, Event, Obj};

/// A `created` filter: `created=123` or `created[gt|gte|lt|lte]=123`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CreatedFilter {
    gt: Option<i64>,
    gte: Option<i64>,
    lt: Option<i64>,
    lte: Option<i64>,
}

impl CreatedFilter {
    /// Whether an object's `created` passes.
    pub fn matches(&self, v: &Value) -> bool {
        v.get("created")
            .and_then(Value::as_i64)
            .is_none_or(|c| self.contains(c))
    }

    /// Whether a time passes.
    pub fn contains(&self, c: i64) -> bool {
        self.gt.is_none_or(|x| c > x)
            && self.gte.is_none_or(|x| c >= x)
            && self.lt.is_none_or(|x| c < x)
            && self.lte.is_none_or(|x| c <= x)
    }
}

/// Reads the `created` filter of a list request.
pub fn created_filter(p: &Params) -> Result<CreatedFilter, ApiError> {
    let mut f = CreatedFilter::default();
    match p.get("created") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let param = format!("created[{k}]");
                let n = int_value(v, &param)?;
                match k.as_str() {
                    "gt" => f.gt = Some(n),
                    "gte" => f.gte = Some(n),
                    "lt" => f.lt = Some(n),
                    "lte" => f.lte = Some(n),
                    _ => return Err(ApiError::unknown_param(&param)),
                }
            }
        }
        Some(v) => {
            let n = int_value(v, "created")?;
            f.gte = Some(n);
            f.lte = Some(n);
        }
    }
    Ok(f)
}

/// Stripe: `type` "A string containing a specific event name, or group of events using * as a wildcard".
fn type_matches(pattern: &str, t: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => t.starts_with(prefix),
        None => pattern == t,
    }
}

/// `GET /v1/events`.
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "type",
        "types",
        "created",
        "delivery_success",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let single = p.str("type");
    let many: Vec<String> = p.array("types")?.iter().filter_map(as_text).collect();
    if single.is_some() && !many.is_empty() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: type, types.",
            Some("types"),
        ));
    }
    let created = created_filter(p)?;
    // Stripe: `delivery_success` "Filter events by whether all webhooks were successfully
    // delivered. If false, events which are still pending or have failed all delivery attempts to
    // a webhook endpoint will be returned" (API reference, list all events) — `pending_webhooks`
    // counts the endpoints that have not acknowledged the event yet.
    let delivery_success = p.bool("delivery_success")?;
    let store = &*ctx.store;
    let matching = store.events().iter().rev().filter(|e| {
        single
            .as_deref()
            .is_none_or(|s| type_matches(s, &e.event_type))
            && (many.is_empty() || many.iter().any(|s| type_matches(s, &e.event_type)))
            && created.contains(e.created)
            && delivery_success.is_none_or(|ok| ok == (e.pending_webhooks == 0))
    });
    let (page, has_more) = list::paginate(
        matching,
        |e| e.id.as_str(),
        |id| store.event(id).is_some(),
        "event",
        p,
    )?;
    Ok(list::list_object(
        page.into_iter().map(Event::to_value).collect(),
        has_more,
        "/v1/events",
    ))
}

/// `GET /v1/events/{id}`.
pub fn retrieve(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    match ctx.store.event(id) {
        Some(e) => Ok(Arc::new(e.to_value())),
        None => Err(ApiError::no_such("event", id, "id")),
    }
}
