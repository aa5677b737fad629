//! Search endpoints (`/v1/products/search?query=…`, customers, prices, payment_intents) and the Search
//! Query Language they take.
//!
//! Stripe (docs: search query language): a query is clauses `field:'value'` (exact match, case-insensitive
//! for strings), `field~'value'` (substring, at least 3 characters), `field>10`/`<`/`>=`/`<=` on numbers,
//! `-` before a clause negates it, `metadata['key']:'value'` matches metadata, and clauses are joined with
//! `AND` or `OR` — "You can't combine AND and OR in the same query". Results are
//! `{object: "search_result", data, has_more, next_page, url}`, paged with `page` and `limit`.
//! Stripe's search index lags writes by up to a minute; the simulator's is immediate.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::list;
use crate::params::{as_text, Params};
use crate::state::{Ctx, Obj};

/// A searchable resource: its kind, URL and query fields.
pub struct Resource {
    kind: &'static str,
    url: &'static str,
    fields: &'static [&'static str],
    numeric: &'static [&'static str],
}

/// `/v1/products/search`.
pub const PRODUCTS: Resource = Resource {
    kind: "product",
    url: "/v1/products/search",
    fields: &[
        "active",
        "description",
        "name",
        "shippable",
        "url",
        "created",
    ],
    numeric: &["created"],
};
/// `/v1/customers/search`.
pub const CUSTOMERS: Resource = Resource {
    kind: "customer",
    url: "/v1/customers/search",
    fields: &["email", "name", "phone", "created"],
    numeric: &["created"],
};
/// `/v1/prices/search`.
pub const PRICES: Resource = Resource {
    kind: "price",
    url: "/v1/prices/search",
    fields: &[
        "active",
        "currency",
        "lookup_key",
        "product",
        "type",
        "created",
    ],
    numeric: &["created"],
};
/// `/v1/payment_intents/search`.
pub const PAYMENT_INTENTS: Resource = Resource {
    kind: "payment_intent",
    url: "/v1/payment_intents/search",
    fields: &["amount", "currency", "customer", "status", "created"],
    numeric: &["amount", "created"],
};

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Attr(String),
    Metadata(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Contains,
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    negate: bool,
    field: Field,
    op: Op,
    value: String,
}

/// A parsed query: clauses and whether they are joined by OR (else AND).
#[derive(Debug, Clone, PartialEq)]
struct Query {
    clauses: Vec<Clause>,
    any: bool,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, String> {
        let Some(&q) = self.s.get(self.i).filter(|b| **b == b'\'' || **b == b'"') else {
            return Err(format!("expected a quoted value at position {}", self.i));
        };
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err("unterminated quoted value".to_owned()),
                Some(b'\\') if self.s.get(self.i + 1).is_some() => {
                    out.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                Some(b) if *b == q => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b) => {
                    out.push(*b);
                    self.i += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Option<String> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
}

fn parse(q: &str, r: &Resource) -> Result<Query, String> {
    let mut lx = Lexer {
        s: q.as_bytes(),
        i: 0,
    };
    let mut clauses = Vec::new();
    let mut joiner: Option<bool> = None;
    loop {
        lx.skip_ws();
        let negate = lx.eat("-");
        let field = if lx.eat("metadata[") {
            let key = lx.quoted()?;
            if !lx.eat("]") {
                return Err("expected ] after the metadata key".to_owned());
            }
            Field::Metadata(key)
        } else {
            let name = lx
                .ident()
                .ok_or_else(|| format!("expected a field name at position {}", lx.i))?;
            if !r.fields.contains(&name.as_str()) {
                return Err(format!(
                    "the field `{name}` is not supported for search on {}s",
                    r.kind
                ));
            }
            Field::Attr(name)
        };
        let op = if lx.eat(">=") {
            Op::Ge
        } else if lx.eat("<=") {
            Op::Le
        } else if lx.eat(">") {
            Op::Gt
        } else if lx.eat("<") {
            Op::Lt
        } else if lx.eat(":") {
            Op::Eq
        } else if lx.eat("~") {
            Op::Contains
        } else {
            return Err(format!(
                "expected :, ~, >, <, >= or <= at position {}",
                lx.i
            ));
        };
        let numeric = matches!(&field, Field::Attr(f) if r.numeric.contains(&f.as_str()));
        if matches!(op, Op::Gt | Op::Lt | Op::Ge | Op::Le) && !numeric {
            return Err("range comparisons only apply to numeric fields".to_owned());
        }
        let value = if numeric && !matches!(lx.s.get(lx.i), Some(b'\'' | b'"')) {
            lx.number()
                .ok_or_else(|| format!("expected a number at position {}", lx.i))?
        } else {
            lx.quoted()?
        };
        if op == Op::Contains && value.chars().count() < 3 {
            return Err("substring matches (~) need at least 3 characters".to_owned());
        }
        clauses.push(Clause {
            negate,
            field,
            op,
            value,
        });
        lx.skip_ws();
        if lx.i >= lx.s.len() {
            break;
        }
        let or = if lx.eat("AND") {
            false
        } else if lx.eat("OR") {
            true
        } else {
            return Err(format!("expected AND or OR at position {}", lx.i));
        };
        if joiner.is_some_and(|j| j != or) {
            return Err("you can't combine AND and OR in the same query".to_owned());
        }
        joiner = Some(or);
    }
    Ok(Query {
        clauses,
        any: joiner.unwrap_or(false),
    })
}

fn matches(obj: &Value, c: &Clause) -> bool {
    let actual = match &c.field {
        Field::Metadata(k) => obj["metadata"].get(k),
        Field::Attr(f) => obj.get(f),
    };
    let hit = match (actual.and_then(as_text), c.op) {
        (None, _) => false,
        (Some(a), Op::Eq) => a.eq_ignore_ascii_case(&c.value),
        (Some(a), Op::Contains) => a.to_lowercase().contains(&c.value.to_lowercase()),
        (Some(a), op) => match (a.parse::<f64>(), c.value.parse::<f64>()) {
            (Ok(a), Ok(v)) => match op {
                Op::Gt => a > v,
                Op::Lt => a < v,
                Op::Ge => a >= v,
                _ => a <= v,
            },
            _ => false,
        },
    };
    hit != c.negate
}

/// `GET /v1/{resource}/search?query=…&limit=…&page=…`.
pub fn run(ctx: &mut Ctx, r: Resource, p: &Params) -> Result<Obj, ApiError> {
    p.only(&["query", "limit", "page"])?;
    let q = p.req_str("query")?;
    let query = parse(&q, &r).map_err(|why| {
        ApiError::invalid(
            format!("Invalid search query: {why}. See https://stripe.com/docs/search#search-query-language for the syntax."),
            Some("query"),
        )
    })?;
    let limit = list::limit(p)?;
    let offset = match p.str("page") {
        None => 0,
        Some(token) => token
            .strip_prefix("page_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid(format!("Invalid page: {token}"), Some("page")))?,
    };
    let hits: Vec<&Value> = ctx
        .store
        .ids(r.kind)
        .iter()
        .rev()
        .filter_map(|id| ctx.store.get(id))
        .filter(|o| o.get("deleted").is_none())
        .filter(|o| {
            if query.any {
                query.clauses.iter().any(|c| matches(o, c))
            } else {
                query.clauses.iter().all(|c| matches(o, c))
            }
        })
        .collect();
    let data: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|v| (*v).clone())
        .collect();
    let has_more = hits.len() > offset + limit;
    Ok(std::sync::Arc::new(json!({
        "object": "search_result",
        "data": data,
        "has_more": has_more,
        "next_page": if has_more { json!(format!("page_{}", offset + limit)) } else { Value::Null },
        "url": r.url
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_documented_forms() {
        let q = parse(
            "metadata['product_code']:'A1' AND name:\"T-shirt\" AND active:'true'",
            &PRODUCTS,
        )
        .unwrap();
        assert_eq!(q.clauses.len(), 3);
        assert!(!q.any);
        assert_eq!(q.clauses[0].field, Field::Metadata("product_code".into()));
        let o = json!({"name": "t-shirt", "active": true, "metadata": {"product_code": "A1"}});
        assert!(q.clauses.iter().all(|c| matches(&o, c)));
        let q = parse("amount>=1000 OR -status:'succeeded'", &PAYMENT_INTENTS).unwrap();
        assert!(q.any);
        assert!(matches(&json!({"amount": 1500}), &q.clauses[0]));
        assert!(matches(&json!({"status": "canceled"}), &q.clauses[1]));
        assert!(parse("name~'shi'", &PRODUCTS).is_ok());
    }

    #[test]
    fn rejects_bad_queries() {
        for q in [
            "",
            "name:'a' AND active:'true' OR name:'b'",
            "nope:'x'",
            "name:x",
            "name~'ab'",
            "metadata['k':'v'",
            "name:'x' name:'y'",
        ] {
            assert!(parse(q, &PRODUCTS).is_err(), "{q}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(q in "\\PC{0,60}") {
            let _ = parse(&q, &PRODUCTS);
        }
    }
}
