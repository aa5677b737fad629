//! The `/v1` endpoints, one module per resource family, and the table that routes a request to them.

pub mod charges;
pub mod checkout;
pub mod customers;
pub mod events;
pub mod payment_intents;
pub mod payment_methods;
pub mod products;
pub mod search;
pub mod setup_intents;

use serde_json::Value;

use crate::error::ApiError;
use crate::params::Params;
use crate::state::{Ctx, Obj};

/// Runs the endpoint for `method` and the path segments after `/v1/`.
pub fn dispatch(
    ctx: &mut Ctx,
    method: &str,
    segments: &[&str],
    p: &Params,
) -> Result<Obj, ApiError> {
    match (method, segments) {
        ("POST", ["customers"]) => customers::create(ctx, p),
        ("GET", ["customers"]) => customers::list(ctx, p),
        ("GET", ["customers", "search"]) => search::run(ctx, search::CUSTOMERS, p),
        ("GET", ["customers", id]) => customers::retrieve(ctx, id),
        ("POST", ["customers", id]) => customers::update(ctx, id, p),
        ("DELETE", ["customers", id]) => customers::delete(ctx, id),
        ("GET", ["customers", id, "payment_methods"]) => {
            payment_methods::list_for_customer(ctx, id, p)
        }

        ("POST", ["payment_methods"]) => payment_methods::create(ctx, p),
        ("GET", ["payment_methods"]) => payment_methods::list(ctx, p),
        ("GET", ["payment_methods", id]) => payment_methods::retrieve(ctx, id),
        ("POST", ["payment_methods", id]) => payment_methods::update(ctx, id, p),
        ("POST", ["payment_methods", id, "attach"]) => payment_methods::attach(ctx, id, p),
        ("POST", ["payment_methods", id, "detach"]) => payment_methods::detach(ctx, id, p),

        ("POST", ["setup_intents"]) => setup_intents::create(ctx, p),
        ("GET", ["setup_intents"]) => setup_intents::list(ctx, p),
        ("GET", ["setup_intents", id]) => setup_intents::retrieve(ctx, id, p),
        ("POST", ["setup_intents", id, "confirm"]) => setup_intents::confirm(ctx, id, p),
        ("POST", ["setup_intents", id, "cancel"]) => setup_intents::cancel(ctx, id, p),

        ("POST", ["payment_intents"]) => payment_intents::create(ctx, p),
        ("GET", ["payment_intents"]) => payment_intents::list(ctx, p),
        ("GET", ["payment_intents", "search"]) => search::run(ctx, search::PAYMENT_INTENTS, p),
        ("GET", ["payment_intents", id]) => payment_intents::retrieve(ctx, id, p),
        ("POST", ["payment_intents", id]) => payment_intents::update(ctx, id, p),
        ("POST", ["payment_intents", id, "confirm"]) => payment_intents::confirm(ctx, id, p),
        ("POST", ["payment_intents", id, "cancel"]) => payment_intents::cancel(ctx, id, p),
        ("POST", ["payment_intents", id, "capture"]) => payment_intents::capture(ctx, id, p),
        ("GET", ["mandates", id]) => payment_intents::retrieve_mandate(ctx, id),

        ("POST", ["checkout", "sessions"]) => checkout::create(ctx, p),
        ("GET", ["checkout", "sessions"]) => checkout::list(ctx, p),
        ("GET", ["checkout", "sessions", id]) => checkout::retrieve(ctx, id),
        ("GET", ["checkout", "sessions", id, "line_items"]) => checkout::line_items(ctx, id, p),
        ("POST", ["checkout", "sessions", id, "expire"]) => checkout::expire(ctx, id),
        ("GET", ["payment_pages", id]) => checkout::payment_page(ctx, id),
        ("POST", ["payment_pages", id, "confirm"]) => checkout::confirm_payment_page(ctx, id, p),

        ("POST", ["products"]) => products::create_product(ctx, p),
        ("GET", ["products"]) => products::list_products(ctx, p),
        ("GET", ["products", "search"]) => search::run(ctx, search::PRODUCTS, p),
        ("GET", ["products", id]) => products::retrieve_product(ctx, id),
        ("POST", ["products", id]) => products::update_product(ctx, id, p),
        ("DELETE", ["products", id]) => products::delete_product(ctx, id),
        ("POST", ["prices"]) => products::create_price(ctx, p),
        ("GET", ["prices"]) => products::list_prices(ctx, p),
        ("GET", ["prices", "search"]) => search::run(ctx, search::PRICES, p),
        ("GET", ["prices", id]) => products::retrieve_price(ctx, id),
        ("POST", ["prices", id]) => products::update_price(ctx, id, p),

        ("POST", ["charges"]) => charges::create(ctx, p),
        ("GET", ["charges"]) => charges::list(ctx, p),
        ("GET", ["charges", id]) => charges::retrieve(ctx, id),
        ("POST", ["refunds"]) => charges::create_refund(ctx, p),
        ("GET", ["refunds"]) => charges::list_refunds(ctx, p),
        ("GET", ["refunds", id]) => charges::retrieve_refund(ctx, id),
        ("POST", ["refunds", id]) => charges::update_refund(ctx, id, p),

        ("GET", ["events"]) => events::list(ctx, p),
        ("GET", ["events", id]) => events::retrieve(ctx, id),

        _ => Err(ApiError::unrecognized(
            method,
            &format!("/v1/{}", segments.join("/")),
        )),
    }
}

/// The words of `/v1` paths that are not ids (everything the dispatch table above matches literally).
const PATH_WORDS: &[&str] = &[
    "attach",
    "cancel",
    "capture",
    "charges",
    "checkout",
    "confirm",
    "customers",
    "detach",
    "events",
    "expire",
    "line_items",
    "mandates",
    "payment_intents",
    "payment_methods",
    "payment_pages",
    "prices",
    "products",
    "refunds",
    "search",
    "sessions",
    "setup_intents",
];

/// The named API operation a request is, as Stripe counts endpoints for rate limits: "Stripe treats
/// each named API operation as a separate endpoint (for example, `POST /v1/payment_intents` and
/// `GET /v1/payment_intents/{id}` are separate endpoints). Requests to `GET /v1/payment_intents/{id}`
/// for different PaymentIntent IDs count toward the same endpoint limit" (docs: rate limits).
pub fn operation(method: &str, segments: &[&str]) -> String {
    let mut name = format!("{method} /v1");
    for s in segments {
        name.push('/');
        if PATH_WORDS.contains(s) {
            name.push_str(s);
        } else {
            name.push_str("{id}");
        }
    }
    name
}

/// Whether `name` is written as an operation name: `GET`, `POST` or `DELETE`, a space, then a `/v1/`
/// path whose segments are path words or `{id}`.
pub fn is_operation_name(name: &str) -> bool {
    let Some((method, path)) = name.split_once(' ') else {
        return false;
    };
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    ["GET", "POST", "DELETE"].contains(&method)
        && rest
            .split('/')
            .all(|s| s == "{id}" || PATH_WORDS.contains(&s))
}

/// A live (not deleted) customer named by the `param` parameter, or Stripe's 400 `resource_missing`.
pub fn customer_param(ctx: &Ctx, id: &str, param: &str) -> Result<Obj, ApiError> {
    match ctx.store.get_obj(id) {
        Some(c) if c["object"] == "customer" && c.get("deleted").is_none() => Ok(c.clone()),
        _ => Err(ApiError::no_such_param("customer", id, param)),
    }
}

/// `metadata` of a request, or `{}`.
pub fn metadata_or_empty(p: &Params) -> Result<Value, ApiError> {
    Ok(Value::Object(p.metadata()?.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_name_the_endpoint_whatever_the_id() {
        assert_eq!(
            operation("GET", &["customers", "cus_123"]),
            "GET /v1/customers/{id}"
        );
        assert_eq!(
            operation("GET", &["customers", "cus_456"]),
            operation("GET", &["customers", "cus_123"])
        );
        assert_eq!(
            operation("POST", &["payment_intents"]),
            "POST /v1/payment_intents"
        );
        assert_eq!(
            operation("POST", &["payment_methods", "pm_1", "attach"]),
            "POST /v1/payment_methods/{id}/attach"
        );
        assert_eq!(
            operation(
                "GET",
                &["checkout", "sessions", "cs_test_a1b", "line_items"]
            ),
            "GET /v1/checkout/sessions/{id}/line_items"
        );
        assert_eq!(
            operation("GET", &["customers", "search"]),
            "GET /v1/customers/search"
        );
        assert!(is_operation_name("GET /v1/customers/{id}"));
        assert!(is_operation_name("POST /v1/payment_intents"));
        assert!(!is_operation_name("GET /v1/customers/cus_1"));
        assert!(!is_operation_name("PATCH /v1/customers"));
        assert!(!is_operation_name("/v1/customers"));
    }
}
