//! `expand[]`: replaces object ids in a response with the objects, following dotted paths.
//!
//! Stripe: "You can expand recursively by specifying nested fields after a dot (.)" and "Expansions have a
//! maximum depth of four levels"; lists are expanded through `data` (`expand[]=data.customer`)
//! (docs: expanding responses).

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::Store;

/// Stripe's limit on the depth of one expansion path.
const MAX_DEPTH: usize = 4;

/// Applies every `expand[]` path to a response object.
pub fn apply(store: &Store, value: &mut Value, paths: &[String]) -> Result<(), ApiError> {
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() > MAX_DEPTH || segments.iter().any(|s| s.is_empty()) {
            return Err(ApiError::invalid(
                format!("You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}"),
                Some("expand"),
            ));
        }
        expand_path(store, value, &segments, path)?;
    }
    Ok(())
}

fn cannot(path: &str) -> ApiError {
    ApiError::invalid(
        format!("This property cannot be expanded ({path})."),
        Some("expand"),
    )
}

fn expand_path(
    store: &Store,
    value: &mut Value,
    segments: &[&str],
    path: &str,
) -> Result<(), ApiError> {
    let Some((field, rest)) = segments.split_first() else {
        return Ok(());
    };
    if let Value::Array(items) = value {
        for item in items {
            expand_path(store, item, segments, path)?;
        }
        return Ok(());
    }
    let Value::Object(obj) = value else {
        return Err(cannot(path));
    };
    // A Checkout Session's line items are never in the object until asked for (docs: Checkout Session
    // object, `line_items` "This field is not included by default").
    if *field == "line_items"
        && obj.get("object").and_then(Value::as_str) == Some("checkout.session")
    {
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let items = store.line_items.get(&id).cloned().unwrap_or_default();
        let mut list = json!({
            "object": "list",
            "data": items,
            "has_more": false,
            "url": format!("/v1/checkout/sessions/{id}/line_items"),
        });
        expand_path(store, &mut list, rest, path)?;
        obj.insert("line_items".to_owned(), list);
        return Ok(());
    }
    let Some(slot) = obj.get_mut(*field) else {
        return Err(cannot(path));
    };
    match slot {
        Value::Null => Ok(()),
        Value::String(id) => {
            let Some(found) = store.get(id) else {
                return Err(cannot(path));
            };
            let mut expanded = found.clone();
            expand_path(store, &mut expanded, rest, path)?;
            *slot = expanded;
            Ok(())
        }
        other => expand_path(store, other, rest, path),
    }
}
