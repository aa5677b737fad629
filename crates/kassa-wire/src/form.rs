//! Stripe's nested form encoding (`application/x-www-form-urlencoded` with bracket nesting).
//!
//! Params are any `Serialize` value, flattened through `serde_json::Value` the way Stripe's official
//! libraries do it (stripe-python `_api_encode`, stripe-go `form`):
//! - objects nest with brackets: `metadata[product_code]=A1`, `invoice_settings[default_payment_method]=pm_1`;
//! - arrays are indexed: `line_items[0][price_data][currency]=jpy`, `expand[0]=setup_intent`;
//! - booleans are `true` / `false`, numbers are written as JSON writes them;
//! - `null` is left out (a `None` sends nothing), while an empty string is sent as `key=`, which is
//!   how Stripe unsets a field (`description=`, `metadata[key]=`, or `metadata=` for every key);
//! - an empty array is sent as `key=` (stripe-go: "tells the Stripe API to zero the array");
//!   an empty object sends nothing.
//!
//! serde_qs was considered and not used: it writes an empty map as `key=`, which Stripe reads as
//! "clear all metadata", and a `None` inside an array as a bare key.

use serde::Serialize;
use serde_json::Value;

/// Why params could not be form-encoded.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    /// The value did not serialize (e.g. a map with non-string keys).
    #[error("params do not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The top level must be a struct or map of named params.
    #[error("params must be a struct or a map, not {0}")]
    NotAnObject(&'static str),
}

/// An ordered list of form fields, ready to send as a body or a query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Form::default()
    }

    /// Flattens params into bracket-notation fields; `()` and `None` give an empty form.
    pub fn from_params<T: Serialize + ?Sized>(params: &T) -> Result<Self, FormError> {
        Form::from_value(&serde_json::to_value(params)?)
    }

    /// Flattens a JSON object into bracket-notation fields; `null` gives an empty form.
    pub fn from_value(value: &Value) -> Result<Self, FormError> {
        let mut form = Form::new();
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, value) in map {
                    flatten(key.clone(), value, &mut form.pairs);
                }
            }
            Value::Bool(_) => return Err(FormError::NotAnObject("a boolean")),
            Value::Number(_) => return Err(FormError::NotAnObject("a number")),
            Value::String(_) => return Err(FormError::NotAnObject("a string")),
            Value::Array(_) => return Err(FormError::NotAnObject("an array")),
        }
        Ok(form)
    }

    /// Appends one field as is (the key already in bracket notation).
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Appends `expand[i]=path` for each path, numbering after any `expand` already present.
    pub fn expand<S: AsRef<str>>(&mut self, paths: &[S]) {
        let first = self
            .pairs
            .iter()
            .filter(|(key, _)| key.starts_with("expand["))
            .count();
        for (index, path) in (first..).zip(paths) {
            self.pairs
                .push((format!("expand[{index}]"), path.as_ref().to_owned()));
        }
    }

    /// The fields in order, keys not yet percent-encoded.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Percent-encodes the fields as `application/x-www-form-urlencoded` (brackets become `%5B`/`%5D`,
    /// as stripe-python sends them; Stripe decodes either form).
    pub fn encode(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.pairs)
            .finish()
    }
}

fn flatten(key: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push((key, b.to_string())),
        Value::Number(n) => out.push((key, n.to_string())),
        Value::String(s) => out.push((key, s.clone())),
        Value::Array(items) if items.is_empty() => out.push((key, String::new())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(format!("{key}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (sub, item) in map {
                flatten(format!("{key}[{sub}]"), item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The fields, sorted: object keys come out in struct order or alphabetically depending on
    /// serde_json's `preserve_order` feature, which another crate in the build may switch on.
    fn fields(value: Value) -> Vec<(String, String)> {
        let mut pairs = Form::from_value(&value).unwrap().pairs().to_vec();
        pairs.sort();
        pairs
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn metadata_and_nested_objects_use_brackets() {
        assert_eq!(
            fields(json!({"metadata": {"product_code": "A1"}})),
            [pair("metadata[product_code]", "A1")]
        );
        assert_eq!(
            fields(json!({"invoice_settings": {"default_payment_method": "pm_1"}})),
            [pair("invoice_settings[default_payment_method]", "pm_1")]
        );
    }

    #[test]
    fn checkout_line_items_are_indexed_like_stripe_python() {
        let value = json!({
            "mode": "payment",
            "line_items": [
                {"price_data": {"currency": "jpy", "unit_amount": 500, "product_data": {"name": "T-shirt"}}, "quantity": 2},
                {"price": "price_1", "quantity": 1},
            ],
        });
        assert_eq!(
            fields(value),
            [
                pair("line_items[0][price_data][currency]", "jpy"),
                pair("line_items[0][price_data][product_data][name]", "T-shirt"),
                pair("line_items[0][price_data][unit_amount]", "500"),
                pair("line_items[0][quantity]", "2"),
                pair("line_items[1][price]", "price_1"),
                pair("line_items[1][quantity]", "1"),
                pair("mode", "payment"),
            ]
        );
    }

    #[test]
    fn expand_is_indexed_and_continues_after_existing_entries() {
        let mut form = Form::new();
        form.expand(&["setup_intent", "setup_intent.payment_method"]);
        assert_eq!(
            form.pairs(),
            [
                pair("expand[0]", "setup_intent"),
                pair("expand[1]", "setup_intent.payment_method")
            ]
        );
        let mut form = Form::from_value(&json!({"expand": ["customer"]})).unwrap();
        form.expand(&["payment_intent"]);
        assert_eq!(
            form.pairs(),
            [
                pair("expand[0]", "customer"),
                pair("expand[1]", "payment_intent")
            ]
        );
    }

    #[test]
    fn scalars_nulls_and_unsetting() {
        assert_eq!(
            fields(json!({"off_session": true, "confirm": false, "amount": 1099, "rate": 1.5})),
            [
                pair("amount", "1099"),
                pair("confirm", "false"),
                pair("off_session", "true"),
                pair("rate", "1.5"),
            ]
        );
        // null sends nothing; "" unsets; [] zeroes a list; {} sends nothing.
        assert_eq!(
            fields(json!({"name": null, "description": "", "tags": [], "metadata": {}})),
            [pair("description", ""), pair("tags", "")]
        );
        assert_eq!(
            fields(json!({"metadata": {"old": ""}})),
            [pair("metadata[old]", "")]
        );
        assert!(Form::from_params(&()).unwrap().is_empty());
        assert!(Form::from_params(&None::<u8>).unwrap().is_empty());
    }

    #[test]
    fn typed_params_skip_none_fields() {
        #[derive(Serialize)]
        struct Params {
            customer: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            email: Option<String>,
            created: Range,
        }
        #[derive(Serialize)]
        struct Range {
            gte: i64,
        }
        let form = Form::from_params(&Params {
            customer: "cus_1",
            email: None,
            created: Range { gte: 1700000000 },
        })
        .unwrap();
        let mut pairs = form.pairs().to_vec();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                pair("created[gte]", "1700000000"),
                pair("customer", "cus_1")
            ]
        );
    }

    #[test]
    fn top_level_must_be_an_object() {
        assert!(matches!(
            Form::from_value(&json!(["a"])),
            Err(FormError::NotAnObject("an array"))
        ));
        assert!(matches!(
            Form::from_value(&json!("a")),
            Err(FormError::NotAnObject(_))
        ));
    }

    #[test]
    fn percent_encoding_of_brackets_spaces_and_reserved_characters() {
        let encoded = |value: Value| Form::from_value(&value).unwrap().encode();
        assert_eq!(
            encoded(json!({"metadata": {"order id": "a&b=c"}})),
            "metadata%5Border+id%5D=a%26b%3Dc"
        );
        assert_eq!(
            encoded(json!({"email": "jenny+test@example.com"})),
            "email=jenny%2Btest%40example.com"
        );
        assert_eq!(
            encoded(json!({"name": "Jürgen 山田"})),
            "name=J%C3%BCrgen+%E5%B1%B1%E7%94%B0"
        );
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_pairs_survive_percent_encoding(
            pairs in proptest::collection::vec((any::<String>(), any::<String>()), 0..8)
        ) {
            let mut form = Form::new();
            for (k, v) in &pairs {
                form.push(k.clone(), v.clone());
            }
            let decoded: Vec<(String, String)> = form_urlencoded::parse(form.encode().as_bytes())
                .into_owned()
                .collect();
            prop_assert_eq!(decoded, pairs);
        }

        #[test]
        fn nested_metadata_round_trips(
            metadata in proptest::collection::btree_map("[^\\[\\]]{1,40}", any::<String>(), 0..8)
        ) {
            let form = Form::from_params(&serde_json::json!({ "metadata": metadata })).unwrap();
            let decoded: Vec<(String, String)> = form_urlencoded::parse(form.encode().as_bytes())
                .into_owned()
                .collect();
            let expected: Vec<(String, String)> = metadata
                .iter()
                .map(|(k, v)| (format!("metadata[{k}]"), v.clone()))
                .collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn every_leaf_becomes_exactly_one_field(
            items in proptest::collection::vec(leaf(), 1..6)
        ) {
            let form = Form::from_value(&serde_json::json!({ "list": items })).unwrap();
            prop_assert_eq!(form.pairs().len(), items.len());
            for (i, (key, _)) in form.pairs().iter().enumerate() {
                prop_assert_eq!(key, &format!("list[{i}]"));
            }
        }
    }
}
