//! Typed access to decoded request parameters, with Stripe's errors for values of the wrong kind.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The decoded parameters of one request (query and body merged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub Map<String, Value>);

/// Reads a value that may be a form string or a JSON scalar as text.
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses an integer the way Stripe reads `amount=1099`; `param` names it in the error.
pub fn int_value(v: &Value, param: &str) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| ApiError::invalid(format!("Invalid integer: {n}"), Some(param))),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| ApiError::invalid(format!("Invalid integer: {s}"), Some(param))),
        _ => Err(ApiError::invalid(
            format!("Invalid integer: {v}"),
            Some(param),
        )),
    }
}

/// Parses a boolean (`true`/`false`); `param` names it in the error.
pub fn bool_value(v: &Value, param: &str) -> Result<bool, ApiError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(ApiError::invalid(
            format!("Invalid boolean: {}", as_text(v).unwrap_or_default()),
            Some(param),
        )),
    }
}

impl Params {
    /// The raw value of a top-level parameter.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A text parameter; an empty string counts as absent (Stripe's way of unsetting).
    pub fn str(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(as_text).filter(|s| !s.is_empty())
    }

    /// A required text parameter.
    pub fn req_str(&self, key: &str) -> Result<String, ApiError> {
        self.str(key).ok_or_else(|| ApiError::missing(key))
    }

    /// An optional integer parameter.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => int_value(v, key).map(Some),
        }
    }

    /// An optional boolean parameter.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => bool_value(v, key).map(Some),
        }
    }

    /// A nested object parameter (`invoice_settings[...]`), empty when absent.
    pub fn obj(&self, key: &str) -> Result<Params, ApiError> {
        match self.0.get(key) {
            None => Ok(Params::default()),
            Some(Value::Object(m)) => Ok(Params(m.clone())),
            Some(Value::String(s)) if s.is_empty() => Ok(Params::default()),
            Some(_) => Err(ApiError::invalid(
                format!("Invalid object: {key} must be a hash"),
                Some(key),
            )),
        }
    }

    /// An array parameter (`expand[]`, `line_items[0]…`); a single value counts as a one-element array.
    pub fn array(&self, key: &str) -> Result<Vec<Value>, ApiError> {
        match self.0.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
            Some(v @ Value::String(_)) => Ok(vec![v.clone()]),
            Some(_) => Err(ApiError::invalid(
                format!("Invalid array: {key} must be an array"),
                Some(key),
            )),
        }
    }

    /// `metadata`: string values only; Stripe: "You can unset individual keys by posting an empty value".
    pub fn metadata(&self) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.0.get("metadata") {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(Some(Map::new())),
            Some(Value::Object(m)) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let text = as_text(v).ok_or_else(|| {
                        ApiError::invalid(
                            format!("Invalid value for metadata[{k}]: must be a string"),
                            Some("metadata"),
                        )
                    })?;
                    out.insert(k.clone(), Value::String(text));
                }
                Ok(Some(out))
            }
            Some(_) => Err(ApiError::invalid(
                "Invalid hash: metadata must be a hash",
                Some("metadata"),
            )),
        }
    }

    /// The `expand[]` paths of the request.
    pub fn expand(&self) -> Result<Vec<String>, ApiError> {
        self.array("expand")?
            .iter()
            .map(|v| {
                as_text(v).ok_or_else(|| {
                    ApiError::invalid("Invalid array: expand must contain strings", Some("expand"))
                })
            })
            .collect()
    }

    /// Fails with Stripe's `parameter_unknown` for any key outside `allowed` (plus `expand`).
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for k in self.0.keys() {
            if k != "expand" && !allowed.contains(&k.as_str()) {
                return Err(ApiError::unknown_param(k));
            }
        }
        Ok(())
    }
}

/// Applies a metadata update: keys with empty values are removed, an empty update clears all.
pub fn merge_metadata(target: &mut Value, update: Map<String, Value>) {
    let clear = update.is_empty();
    let Some(meta) = target.get_mut("metadata") else {
        return;
    };
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(m) = meta {
        if clear {
            m.clear();
        }
        for (k, v) in update {
            if v.as_str() == Some("") {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
    }
}
