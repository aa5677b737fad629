//! Products and prices: create, update, retrieve, list; inline prices of Checkout's `price_data`.
//!
//! Stripe (docs: products, prices API): a product needs a `name`; an update changes only the parameters
//! given and merges `metadata`; `product.created`, `product.updated` and `price.created` events follow.
//! `unit_amount` is "a positive integer in cents (or 0 for a free price)" in the currency's minor unit.

use serde_json::{json, Value};

use super::metadata_or_empty;
use crate::currency;
use crate::error::ApiError;
use crate::list;
use crate::params::{merge_metadata, Params};
use crate::state::{new_id, Ctx, Obj};

const PRODUCT_PARAMS: &[&str] = &[
    "name",
    "active",
    "description",
    "id",
    "metadata",
    "images",
    "marketing_features",
    "package_dimensions",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "unit_label",
    "url",
    "default_price_data",
    "type",
    "default_price",
];

fn product_object(ctx: &Ctx, id: String, name: &str, p: &Params) -> Result<Value, ApiError> {
    Ok(json!({
        "id": id,
        "object": "product",
        "active": p.bool("active")?.unwrap_or(true),
        "created": ctx.now,
        "default_price": null,
        "description": p.str("description"),
        "images": p.array("images")?,
        "livemode": ctx.livemode(),
        "marketing_features": [],
        "metadata": metadata_or_empty(p)?,
        "name": name,
        "package_dimensions": null,
        "shippable": p.bool("shippable")?,
        "statement_descriptor": p.str("statement_descriptor"),
        "tax_code": p.str("tax_code"),
        "type": "service",
        "unit_label": p.str("unit_label"),
        "updated": ctx.now,
        "url": p.str("url")
    }))
}

/// `POST /v1/products`.
pub fn create_product(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(PRODUCT_PARAMS)?;
    let name = p.req_str("name")?;
    let id = match p.str("id") {
        Some(id) => {
            if ctx.store.get(&id).is_some() {
                return Err(ApiError::invalid_code(
                    "resource_already_exists",
                    "Product already exists.",
                    Some("id"),
                ));
            }
            id
        }
        None => new_id("prod_"),
    };
    let product = product_object(ctx, id.clone(), &name, p)?;
    let default_price = p.obj("default_price_data")?;
    let product = ctx.create("product", product, "product.created");
    if default_price.0.is_empty() {
        return Ok(product);
    }
    let mut data = default_price;
    data.0.insert("product".into(), json!(id));
    let price = price_from(ctx, &data, "default_price_data", true)?;
    let price = ctx.create("price", price, "price.created");
    let mut with_price = (*product).clone();
    with_price["default_price"] = price["id"].clone();
    Ok(ctx.update(&product, with_price, Some("product.updated")))
}

/// `POST /v1/products/{id}`.
pub fn update_product(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(PRODUCT_PARAMS)?;
    let old = ctx.fetch("product", "product", id, "id")?;
    let mut new = (*old).clone();
    for k in [
        "name",
        "description",
        "statement_descriptor",
        "tax_code",
        "unit_label",
        "url",
    ] {
        if p.get(k).is_some() {
            new[k] = p.str(k).map_or(Value::Null, Value::String);
        }
    }
    if let Some(a) = p.bool("active")? {
        new["active"] = json!(a);
    }
    if let Some(price) = p.str("default_price") {
        match ctx.store.get(&price) {
            Some(pr) if pr["object"] == "price" && pr["product"] == id => {
                new["default_price"] = json!(price)
            }
            _ => return Err(ApiError::no_such_param("price", &price, "default_price")),
        }
    }
    if let Some(m) = p.metadata()? {
        merge_metadata(&mut new, m);
    }
    if new != *old {
        new["updated"] = json!(ctx.now);
    }
    Ok(ctx.update(&old, new, Some("product.updated")))
}

/// `DELETE /v1/products/{id}` → `{id, object: "product", deleted: true}`, event `product.deleted`.
/// Stripe: "Delete a product. Deleting a product is only possible if it has no prices associated with
/// it" (docs: delete a product).
pub fn delete_product(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    let old = ctx.fetch("product", "product", id, "id")?;
    let has_prices = ctx
        .store
        .ids("price")
        .iter()
        .filter_map(|p| ctx.store.get(p))
        .any(|p| p["product"] == id && p["active"] == true);
    if has_prices {
        return Err(ApiError::invalid(
            "This product cannot be deleted because it has one or more user-created prices.",
            None,
        ));
    }
    // Stripe answers the deleted product's id with `deleted: true`; the product is gone after that.
    let deleted = json!({"id": id, "object": "product", "deleted": true});
    let deleted = ctx.put(deleted);
    ctx.emit("product.deleted", old, None);
    Ok(deleted)
}

/// `GET /v1/products/{id}`.
pub fn retrieve_product(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("product", "product", id, "id")
}

/// `GET /v1/products?active=…`.
pub fn list_products(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "active",
        "ids",
        "shippable",
        "url",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let active = p.bool("active")?;
    let ids: Vec<String> = p
        .array("ids")?
        .iter()
        .filter_map(crate::params::as_text)
        .collect();
    list::page(ctx.store, "product", "product", "/v1/products", p, |pr| {
        active.is_none_or(|a| pr["active"] == a)
            && (ids.is_empty() || ids.iter().any(|i| pr["id"].as_str() == Some(i)))
    })
}

/// Builds a price from `currency`, `unit_amount`/`unit_amount_decimal`, `product`/`product_data`,
/// `recurring`; creates the product for `product_data`. `param` prefixes error params.
fn price_from(
    ctx: &mut Ctx,
    d: &Params,
    param: &str,
    emit_product: bool,
) -> Result<Value, ApiError> {
    let at = |k: &str| {
        if param.is_empty() {
            k.to_owned()
        } else {
            format!("{param}[{k}]")
        }
    };
    let currency = currency::check_currency(
        &d.str("currency")
            .ok_or_else(|| ApiError::missing(&at("currency")))?,
        &at("currency"),
    )?;
    let unit_amount = match (
        d.int("unit_amount").map_err(|mut e| {
            e.error["param"] = json!(at("unit_amount"));
            e
        })?,
        d.str("unit_amount_decimal"),
    ) {
        (Some(a), _) => a,
        (None, Some(dec)) => dec
            .split('.')
            .next()
            .and_then(|w| w.parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("Invalid decimal: {dec}"),
                    Some(&at("unit_amount_decimal")),
                )
            })?,
        (None, None) => return Err(ApiError::missing(&at("unit_amount"))),
    };
    if unit_amount < 0 {
        return Err(ApiError::invalid(
            "This value must be greater than or equal to 0.",
            Some(&at("unit_amount")),
        ));
    }
    let product = match (d.str("product"), d.get("product_data")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                format!(
                    "You may only specify one of these parameters: {}, {}.",
                    at("product"),
                    at("product_data")
                ),
                Some(&at("product")),
            ))
        }
        (Some(id), None) => {
            if ctx.store.get(&id).is_none_or(|v| v["object"] != "product") {
                return Err(ApiError::no_such_param("product", &id, &at("product")));
            }
            id
        }
        (None, Some(_)) => {
            let pd = d.obj("product_data")?;
            let name = pd
                .str("name")
                .ok_or_else(|| ApiError::missing(&format!("{}[name]", at("product_data"))))?;
            let product = product_object(ctx, new_id("prod_"), &name, &pd)?;
            let id = product["id"].as_str().unwrap_or_default().to_owned();
            if emit_product {
                ctx.create("product", product, "product.created");
            } else {
                ctx.insert("product", product);
            }
            id
        }
        (None, None) => return Err(ApiError::missing(&at("product"))),
    };
    let recurring = d.obj("recurring")?;
    let recurring_value = match recurring.str("interval") {
        Some(interval) => {
            if !["day", "week", "month", "year"].contains(&interval.as_str()) {
                return Err(ApiError::invalid(
                    "Invalid recurring[interval]: must be one of day, week, month, or year",
                    Some(&at("recurring[interval]")),
                ));
            }
            json!({"interval": interval, "interval_count": recurring.int("interval_count")?.unwrap_or(1), "meter": null, "trial_period_days": null, "usage_type": "licensed"})
        }
        None => Value::Null,
    };
    Ok(json!({
        "id": new_id("price_"),
        "object": "price",
        "active": d.bool("active")?.unwrap_or(true),
        "billing_scheme": "per_unit",
        "created": ctx.now,
        "currency": currency,
        "custom_unit_amount": null,
        "livemode": ctx.livemode(),
        "lookup_key": d.str("lookup_key"),
        "metadata": metadata_or_empty(d)?,
        "nickname": d.str("nickname"),
        "product": product,
        "recurring": recurring_value,
        "tax_behavior": d.str("tax_behavior").unwrap_or_else(|| "unspecified".to_owned()),
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring_value.is_null() { "one_time" } else { "recurring" },
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount.to_string()
    }))
}

/// The price of a Checkout line item's `price_data`: made on the fly (with its `product_data` product),
/// inactive, without events.
pub fn inline_price(ctx: &mut Ctx, data: &Params, param: &str) -> Result<Value, ApiError> {
    let mut price = price_from(ctx, data, param, false)?;
    price["active"] = json!(false);
    ctx.insert("price", price.clone());
    Ok(price)
}

/// `POST /v1/prices`.
pub fn create_price(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "currency",
        "unit_amount",
        "unit_amount_decimal",
        "product",
        "product_data",
        "recurring",
        "nickname",
        "lookup_key",
        "metadata",
        "active",
        "tax_behavior",
        "billing_scheme",
        "currency_options",
        "custom_unit_amount",
        "tiers",
        "tiers_mode",
        "transfer_lookup_key",
        "transform_quantity",
    ])?;
    let price = price_from(ctx, p, "", true)?;
    Ok(ctx.create("price", price, "price.created"))
}

/// `POST /v1/prices/{id}`: `active`, `metadata`, `nickname`, `lookup_key`, `tax_behavior` — Stripe
/// lets nothing else of a price change (docs: update a price); event `price.updated`.
pub fn update_price(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "active",
        "metadata",
        "nickname",
        "lookup_key",
        "tax_behavior",
        "transfer_lookup_key",
        "currency_options",
    ])?;
    let old = ctx.fetch("price", "price", id, "price")?;
    let mut new = (*old).clone();
    if let Some(a) = p.bool("active")? {
        new["active"] = json!(a);
    }
    for k in ["nickname", "lookup_key", "tax_behavior"] {
        if p.get(k).is_some() {
            new[k] = p.str(k).map_or(Value::Null, Value::String);
        }
    }
    if let Some(m) = p.metadata()? {
        merge_metadata(&mut new, m);
    }
    Ok(ctx.update(&old, new, Some("price.updated")))
}

/// `GET /v1/prices/{id}`.
pub fn retrieve_price(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("price", "price", id, "price")
}

/// `GET /v1/prices?product=…&active=…&currency=…`.
pub fn list_prices(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "active",
        "currency",
        "product",
        "type",
        "lookup_keys",
        "recurring",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let active = p.bool("active")?;
    let product = p.str("product");
    let cur = p.str("currency");
    let kind = p.str("type");
    list::page(ctx.store, "price", "price", "/v1/prices", p, |pr| {
        active.is_none_or(|a| pr["active"] == a)
            && product
                .as_deref()
                .is_none_or(|x| pr["product"].as_str() == Some(x))
            && cur
                .as_deref()
                .is_none_or(|x| pr["currency"].as_str() == Some(x))
            && kind
                .as_deref()
                .is_none_or(|x| pr["type"].as_str() == Some(x))
    })
}
