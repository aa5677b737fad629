//! Reading what callers send — the API's JSON bodies and the command line's flags alike: the one
//! [`FieldError`] that names the field at fault, and the readers every request shares (amounts,
//! currencies, e-mail addresses, text, metadata). Validation happens here once, before anything
//! is sent to Stripe or recorded, so bad input creates nothing.

use kassa_stripe::money::{validate_amount, Currency};
use kassa_stripe::objects::Metadata;
use serde_json::Value;
use std::fmt::Display;

/// A request field Kassa refuses: its machine code (`invalid_field`, or a more precise one such
/// as `records_empty`), the field (`amount`, `records[2].unit_amount`) and what is wrong, for
/// people (`field: why`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// The field at fault.
    pub field: String,
    /// `field: why`.
    pub message: String,
}

/// `field` is refused because of `why` (code `invalid_field`).
pub fn field_error(field: impl Into<String>, why: impl Display) -> FieldError {
    let field = field.into();
    FieldError {
        code: "invalid_field",
        message: format!("{field}: {why}"),
        field,
    }
}

impl FieldError {
    /// The same refusal under a more precise code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

/// An id (`what`, e.g. "customer") that Kassa holds in `object_mode`, named by a call in
/// `call_mode`: an object id never crosses modes, so it is refused (code `mode_mismatch`)
/// before anything is sent to Stripe.
pub fn other_mode(
    field: &str,
    what: &str,
    id: &str,
    object_mode: kassa_stripe::Mode,
    call_mode: kassa_stripe::Mode,
) -> FieldError {
    field_error(
        field,
        format!("{what} {id} is a {object_mode}-mode {what}; this call is in {call_mode} mode (test and live never mix: set \"livemode\" to the {what}'s mode)"),
    )
    .with_code("mode_mismatch")
}

/// An amount in integer minor units (a JSON number without a fraction; not a string).
pub fn amount(value: Option<&Value>, field: &str) -> Result<i64, FieldError> {
    match value {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            field_error(
                field,
                "must be an integer number of minor units (e.g. 1999 for $19.99, 1000 for ¥1,000)",
            )
        }),
        Some(Value::Null) | None => Err(field_error(field, "required")),
        Some(_) => Err(field_error(
            field,
            "must be a JSON integer of minor units, not a string",
        )),
    }
}

/// An ISO currency code, any case.
pub fn currency(code: &str, field: &str) -> Result<Currency, FieldError> {
    Currency::parse(code).map_err(|e| field_error(field, e))
}

/// An amount that Stripe accepts in `currency` (its minimum and maximum, and the steps of
/// three-decimal currencies).
pub fn chargeable_amount(
    value: Option<&Value>,
    currency: &Currency,
    field: &str,
) -> Result<i64, FieldError> {
    let amount = amount(value, field)?;
    validate_amount(amount, currency).map_err(|e| field_error(field, e))?;
    Ok(amount)
}

/// An e-mail address: `local@domain.tld`, no spaces, at most 512 characters.
pub fn email(address: &str, field: &str) -> Result<(), FieldError> {
    let well_formed = address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !address.chars().any(char::is_whitespace)
        && address.len() <= 512;
    if well_formed {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{address:?} is not an e-mail address"),
        ))
    }
}

/// An optional text field: absent, null, blank (none) or a string (trimmed).
pub fn optional_text(value: &Option<Value>, field: &str) -> Result<Option<String>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(field_error(field, "must be a string")),
    }
}

/// `metadata`: an object of string (or number/boolean, sent as text) values, as Stripe stores.
pub fn metadata(value: &Option<Value>) -> Result<Metadata, FieldError> {
    let mut out = Metadata::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(field_error(
                            "metadata",
                            format!("{key}: values must be strings"),
                        ))
                    }
                };
                out.insert(key.clone(), text);
            }
        }
        Some(_) => return Err(field_error("metadata", "must be an object")),
    }
    Ok(out)
}

pub use kassa_wire::charge::amount_from_text;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_are_integers_of_minor_units() {
        assert_eq!(amount(Some(&json!(1999)), "amount"), Ok(1999));
        for bad in [json!(19.99), json!("1999"), Value::Null] {
            let error = amount(Some(&bad), "amount").unwrap_err();
            assert_eq!(
                (error.code, error.field.as_str()),
                ("invalid_field", "amount")
            );
        }
        assert_eq!(amount_from_text(" 1000 "), json!(1000));
        assert!(amount(Some(&amount_from_text("10.5")), "amount").is_err());
        assert!(amount(Some(&amount_from_text("ten")), "amount").is_err());
    }

    #[test]
    fn emails_metadata_and_text() {
        assert!(email("ada@example.com", "email").is_ok());
        for bad in ["not-an-email", "a@b", "@example.com", "a b@example.com"] {
            assert!(email(bad, "email").is_err(), "{bad}");
        }
        assert_eq!(
            metadata(&Some(json!({"a": 1, "b": true, "c": "x"})))
                .unwrap()
                .get("a")
                .map(String::as_str),
            Some("1")
        );
        assert!(metadata(&Some(json!({"a": []}))).is_err());
        assert_eq!(optional_text(&Some(json!("  ")), "name"), Ok(None));
        assert!(optional_text(&Some(json!(5)), "name").is_err());
    }
}
