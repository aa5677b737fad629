//! List answers: `{object: "list", data, has_more, url}` with `limit`, `starting_after` and `ending_before`.
//!
//! Stripe: lists are "sorted by creation date, with the most recently created appearing first"; `limit`
//! "can range between 1 and 100, and the default is 10" (docs: pagination).

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::state::Store;

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

/// Lists objects of `kind` (newest first) that pass `keep`, paginated by the request's parameters.
pub fn page(
    store: &Store,
    kind: &str,
    noun: &str,
    url: &str,
    p: &Params,
    keep: impl Fn(&Value) -> bool,
) -> Result<Value, ApiError> {
    let limit = limit(p)?;
    let starting_after = p.str("starting_after");
    let ending_before = p.str("ending_before");
    for (param, cursor) in [
        ("starting_after", &starting_after),
        ("ending_before", &ending_before),
    ] {
        if let Some(id) = cursor {
            if store.get(id).is_none() {
                return Err(ApiError::no_such(noun, id, param));
            }
        }
    }
    let matching = store
        .ids(kind)
        .iter()
        .rev()
        .filter_map(|id| store.get(id))
        .filter(|v| keep(v));
    let (data, has_more): (Vec<Value>, bool) = if let Some(cursor) = ending_before {
        // The objects newer than the cursor, the `limit` closest to it, still newest first.
        let newer: Vec<&Value> = matching
            .take_while(|v| v.get("id").and_then(Value::as_str) != Some(&cursor))
            .collect();
        let skip = newer.len().saturating_sub(limit);
        (
            newer[skip..].iter().map(|v| (*v).clone()).collect(),
            skip > 0,
        )
    } else {
        let mut rest: Box<dyn Iterator<Item = &Value>> = Box::new(matching);
        if let Some(cursor) = starting_after {
            let mut found = false;
            rest = Box::new(rest.skip_while(move |v| {
                if found {
                    return false;
                }
                found = v.get("id").and_then(Value::as_str) == Some(&cursor);
                true
            }));
        }
        let mut data: Vec<Value> = rest.by_ref().take(limit).cloned().collect();
        let has_more = rest.next().is_some();
        data.shrink_to_fit();
        (data, has_more)
    };
    Ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}
