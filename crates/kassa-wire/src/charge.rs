//! A back-office charge request as callers write it: the JSON body of `POST /api/charges`, and
//! what the command line and the CSV importer ([`crate::charge_csv`]) build from text. Every
//! field is kept as given; kassa-core's validation judges it.

use serde::Deserialize;
use serde_json::Value;

/// A charge request, as `POST /api/charges` takes it (JSON) and the commands build it.
#[derive(Debug, Default, Deserialize)]
pub struct ChargeRequest {
    /// `cus_…`, a customer of the Stripe account with a saved card.
    pub customer: Option<String>,
    /// Minor units; must be an integer (JSON number without a fraction).
    pub amount: Option<Value>,
    /// ISO code, any case.
    pub currency: Option<String>,
    /// A card of that customer; default: the customer's default card at execution time.
    pub payment_method: Option<String>,
    /// Shown in Stripe.
    pub description: Option<String>,
    /// The caller's unique reference: the same reference twice is one charge.
    pub reference: Option<String>,
    /// Key-value pairs kept with the charge.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The charge's mode (`true`: live); absent, the deployment's default mode. The caller
    /// resolves it before submitting.
    #[serde(default)]
    pub livemode: Option<bool>,
}

/// A command-line amount as the API would receive it: an integer as a JSON number; a decimal
/// too, so that validation refuses it as a fraction of a minor unit; anything else as the
/// string it is, refused as not a number.
pub fn amount_from_text(raw: &str) -> Value {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<i64>() {
        return Value::from(n);
    }
    raw.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| Value::String(raw.to_owned()), Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn command_line_amounts_read_as_the_api_would_receive_them() {
        assert_eq!(amount_from_text(" 1000 "), json!(1000));
        assert_eq!(amount_from_text("10.5"), json!(10.5));
        assert_eq!(amount_from_text("ten"), json!("ten"));
    }
}
