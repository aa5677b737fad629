//! Decoder of Stripe's form bodies (`application/x-www-form-urlencoded` with bracket nesting) into nested JSON.
//!
//! Stripe: "Bodies are form-encoded with bracket nesting: `metadata[k]=v`, `line_items[0][price]=…`,
//! `expand[]=…`" (docs: API reference, "Requests"). Leaves stay strings, as Stripe receives them;
//! [`crate::params`] converts them where an endpoint expects an integer or a boolean.
//! The decoder never panics: malformed keys are kept literally, malformed escapes are kept as text.

use serde_json::{Map, Value};

/// Most `key=value` pairs accepted in one body.
const MAX_PAIRS: usize = 10_000;
/// Most bracket levels in one key.
const MAX_DEPTH: usize = 16;

/// Why a body is not a usable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A key is used both as a value and as a nested object (`a=1&a[b]=2`).
    #[error("Invalid hash: the parameter {0} is given both as a value and as an object")]
    Conflict(String),
    /// More pairs or deeper nesting than a Stripe request ever has.
    #[error("The request has too many parameters or too deep a nesting")]
    TooLarge,
}

#[derive(Debug)]
enum Node {
    Leaf(String),
    Branch(Vec<(String, Node)>),
}

/// Decodes a form body (or a query string) into a JSON object.
pub fn decode(input: &[u8]) -> Result<Map<String, Value>, FormError> {
    let mut root: Vec<(String, Node)> = Vec::new();
    let mut pairs = 0usize;
    for pair in input.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        pairs += 1;
        if pairs > MAX_PAIRS {
            return Err(FormError::TooLarge);
        }
        let (raw_key, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let key = percent_decode(raw_key);
        if key.is_empty() {
            continue;
        }
        let value = percent_decode(raw_value);
        let segments = split_key(&key);
        if segments.len() > MAX_DEPTH {
            return Err(FormError::TooLarge);
        }
        insert(&mut root, &segments, value, &key)?;
    }
    let mut out = Map::new();
    for (k, node) in root {
        let v = to_value(node, &k);
        out.insert(k, v);
    }
    Ok(out)
}

/// Splits `a[b][]` into `["a", "b", ""]`; a key that is not well formed stays one literal segment.
fn split_key(key: &str) -> Vec<&str> {
    let Some(open) = key.find('[') else {
        return vec![key];
    };
    if open == 0 {
        return vec![key];
    }
    let mut segments = vec![&key[..open]];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return vec![key];
        };
        let Some(close) = inner.find(']') else {
            return vec![key];
        };
        segments.push(&inner[..close]);
        rest = &inner[close + 1..];
    }
    segments
}

fn insert(
    branch: &mut Vec<(String, Node)>,
    segments: &[&str],
    value: String,
    full_key: &str,
) -> Result<(), FormError> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(());
    };
    // `a[]=x` appends: its index is the number of entries already there.
    let name = if first.is_empty() {
        branch.len().to_string()
    } else {
        (*first).to_owned()
    };
    let existing = branch.iter_mut().position(|(k, _)| *k == name);
    if rest.is_empty() {
        match existing {
            Some(i) => match &mut branch[i].1 {
                Node::Leaf(v) => *v = value,
                Node::Branch(_) => return Err(FormError::Conflict(full_key.to_owned())),
            },
            None => branch.push((name, Node::Leaf(value))),
        }
        return Ok(());
    }
    let i = match existing {
        Some(i) => i,
        None => {
            branch.push((name, Node::Branch(Vec::new())));
            branch.len() - 1
        }
    };
    match &mut branch[i].1 {
        Node::Branch(children) => insert(children, rest, value, full_key),
        Node::Leaf(_) => Err(FormError::Conflict(full_key.to_owned())),
    }
}

/// A canonical array index: digits without a leading zero (or "0").
fn as_index(k: &str) -> Option<usize> {
    if k.is_empty() || (k.len() > 1 && k.starts_with('0')) || !k.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    k.parse().ok()
}

fn to_value(node: Node, key: &str) -> Value {
    match node {
        Node::Leaf(s) => Value::String(s),
        Node::Branch(children) => {
            // `metadata[0]=x` is a map with key "0", never an array: metadata keys are free text.
            let indexed: Option<Vec<usize>> = if key == "metadata" {
                None
            } else {
                children.iter().map(|(k, _)| as_index(k)).collect()
            };
            match indexed {
                Some(indices) if !children.is_empty() => {
                    let mut items: Vec<(usize, Value)> = indices
                        .into_iter()
                        .zip(children)
                        .map(|(i, (k, n))| (i, to_value(n, &k)))
                        .collect();
                    items.sort_by_key(|(i, _)| *i);
                    Value::Array(items.into_iter().map(|(_, v)| v).collect())
                }
                _ => Value::Object(
                    children
                        .into_iter()
                        .map(|(k, n)| {
                            let v = to_value(n, &k);
                            (k, v)
                        })
                        .collect(),
                ),
            }
        }
    }
}

/// `application/x-www-form-urlencoded` unescaping: `+` is a space, `%XX` a byte; anything else is kept.
pub fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                input.get(i + 1).and_then(hex),
                input.get(i + 2).and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn d(s: &str) -> Value {
        Value::Object(decode(s.as_bytes()).unwrap())
    }

    #[test]
    fn flat_and_escaped_values() {
        assert_eq!(
            d("email=a%40b.c&name=Jenny+Rosen"),
            json!({"email": "a@b.c", "name": "Jenny Rosen"})
        );
        assert_eq!(d("a=&b"), json!({"a": "", "b": ""}));
        assert_eq!(d("a=1&a=2"), json!({"a": "2"}));
    }

    #[test]
    fn maps_and_arrays() {
        assert_eq!(
            d("metadata[product_code]=A1&metadata[k]=v"),
            json!({"metadata": {"product_code": "A1", "k": "v"}})
        );
        assert_eq!(
            d("expand[]=a&expand[]=b.c"),
            json!({"expand": ["a", "b.c"]})
        );
        assert_eq!(d("expand[0]=a&expand[1]=b"), json!({"expand": ["a", "b"]}));
        assert_eq!(
            d("line_items[0][price_data][currency]=jpy&line_items[0][quantity]=2&line_items[1][price]=price_1"),
            json!({"line_items": [{"price_data": {"currency": "jpy"}, "quantity": "2"}, {"price": "price_1"}]})
        );
        // Out of order indices are sorted; escaped brackets decode the same.
        assert_eq!(d("a[1]=y&a[0]=x"), json!({"a": ["x", "y"]}));
        assert_eq!(d("a%5B0%5D%5Bb%5D=y"), json!({"a": [{"b": "y"}]}));
    }

    #[test]
    fn metadata_with_numeric_keys_stays_a_map() {
        assert_eq!(
            d("metadata[0]=x&metadata[7]=y"),
            json!({"metadata": {"0": "x", "7": "y"}})
        );
        assert_eq!(d("a[01]=x"), json!({"a": {"01": "x"}}));
    }

    #[test]
    fn malformed_keys_are_literal() {
        assert_eq!(d("a[b=1"), json!({"a[b": "1"}));
        assert_eq!(d("[x]=1"), json!({"[x]": "1"}));
        assert_eq!(d("a[b]c=1"), json!({"a[b]c": "1"}));
        assert_eq!(d("%zz=%4"), json!({"%zz": "%4"}));
    }

    #[test]
    fn conflicts_are_errors() {
        assert!(matches!(decode(b"a=1&a[b]=2"), Err(FormError::Conflict(_))));
        assert!(matches!(decode(b"a[b]=2&a=1"), Err(FormError::Conflict(_))));
    }

    #[test]
    fn too_deep_is_an_error() {
        let key = format!("a{}", "[b]".repeat(40));
        assert_eq!(
            decode(format!("{key}=1").as_bytes()),
            Err(FormError::TooLarge)
        );
    }

    fn encode_into(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| encode_into(&format!("{prefix}[{}]", esc(k)), v, out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| encode_into(&format!("{prefix}[{i}]"), v, out)),
            Value::String(s) => out.push(format!("{prefix}={}", esc(s))),
            _ => {}
        }
    }

    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn encode(m: &Map<String, Value>) -> String {
        let mut out = Vec::new();
        for (k, v) in m {
            encode_into(&esc(k), v, &mut out);
        }
        out.join("&")
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,6}"
    }

    fn leaf() -> impl Strategy<Value = Value> {
        any::<String>().prop_map(Value::String)
    }

    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 1..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(input in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&input);
        }

        #[test]
        fn never_panics_on_bracket_soup(input in "[a-z\\[\\]=&%0-9+]{0,80}") {
            let _ = decode(input.as_bytes());
        }

        #[test]
        fn round_trips_stripe_shaped_params(m in prop::collection::btree_map(key(), tree(), 0..5)) {
            let m: Map<String, Value> = m.into_iter().filter(|(k, _)| k != "metadata").collect();
            let decoded = decode(encode(&m).as_bytes()).unwrap();
            prop_assert_eq!(Value::Object(decoded), Value::Object(m));
        }
    }
}
