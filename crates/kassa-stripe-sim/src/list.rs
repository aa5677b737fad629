//! List answers: `{object: "list", data, has_more, url}` with `limit`, `starting_after` and `ending_before`.
//!
//! Stripe: lists are "sorted by creation date, with the most recently created appearing first"; `limit`
//! "can range between 1 and 100, and the default is 10" (docs: pagination).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::state::{Obj, Store};

/// The page size asked for, validated like Stripe.
pub fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.int("limit")? {
        None => Ok(10),
        Some(n) if n < 1 => Err(ApiError::invalid(
            "This value must be greater than or equal to 1.",
            Some("limit"),
        )),
        Some(n) if n > 100 => Err(ApiError::invalid(
            "This value must be less than or equal to 100.",
            Some("limit"),
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(10)),
    }
}

/// One page of `items` (already newest first): the request's `limit`, after `starting_after` or before
/// `ending_before`. `exists` tells whether a cursor id names an object (else Stripe's 404 naming `noun`).
pub fn paginate<T>(
    items: impl Iterator<Item = T>,
    id: impl Fn(&T) -> &str,
    exists: impl Fn(&str) -> bool,
    noun: &str,
    p: &Params,
) -> Result<(Vec<T>, bool), ApiError> {
    let limit = limit(p)?;
    let starting_after = p.str("starting_after");
    let ending_before = p.str("ending_before");
    for (param, cursor) in [
        ("starting_after", &starting_after),
        ("ending_before", &ending_before),
    ] {
        if let Some(c) = cursor {
            if !exists(c) {
                return Err(ApiError::no_such(noun, c, param));
            }
        }
    }
    if let Some(cursor) = ending_before {
        // The items newer than the cursor, the `limit` closest to it, still newest first.
        let mut newer: Vec<T> = items.take_while(|v| id(v) != cursor).collect();
        let skip = newer.len().saturating_sub(limit);
        return Ok((newer.split_off(skip), skip > 0));
    }
    let mut rest = items.peekable();
    if let Some(cursor) = starting_after {
        for v in rest.by_ref() {
            if id(&v) == cursor {
                break;
            }
        }
    }
    let data: Vec<T> = rest.by_ref().take(limit).collect();
    let has_more = rest.peek().is_some();
    Ok((data, has_more))
}

/// The list object Stripe answers.
pub fn list_object(data: Vec<Value>, has_more: bool, url: &str) -> Obj {
    Arc::new(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}

/// Lists stored objects of `kind` (newest first) that pass `keep`, paginated by the request's parameters.
pub fn page(
    store: &Store,
    kind: &str,
    noun: &str,
    url: &str,
    p: &Params,
    keep: impl Fn(&Value) -> bool,
) -> Result<Obj, ApiError> {
    let matching = store
        .ids(kind)
        .iter()
        .rev()
        .filter_map(|id| store.get(id))
        .filter(|v| keep(v));
    let (data, has_more) = paginate(
        matching,
        |v| v.get("id").and_then(Value::as_str).unwrap_or_default(),
        |id| store.get(id).is_some(),
        noun,
        p,
    )?;
    Ok(list_object(
        data.into_iter().cloned().collect(),
        has_more,
        url,
    ))
}
