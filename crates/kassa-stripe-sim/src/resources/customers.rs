//! Customers: create, retrieve, update (incl. `invoice_settings[default_payment_method]`), list, delete.

use serde_json::{json, Value};

use super::{metadata_or_empty, payment_methods};
use crate::cards;
use crate::error::ApiError;
use crate::list;
use crate::params::{merge_metadata, Params};
use crate::state::{new_id, random_suffix, Ctx, Obj};

const WRITABLE: &[&str] = &[
    "address",
    "balance",
    "cash_balance",
    "coupon",
    "description",
    "email",
    "invoice_prefix",
    "invoice_settings",
    "metadata",
    "name",
    "next_invoice_sequence",
    "payment_method",
    "phone",
    "preferred_locales",
    "promotion_code",
    "shipping",
    "source",
    "tax",
    "tax_exempt",
    "tax_id_data",
    "test_clock",
    "validate",
    "default_source",
];

fn fetch(ctx: &Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("customer", "customer", id, "id")
}

fn check_email(p: &Params) -> Result<(), ApiError> {
    if let Some(email) = p.str("email") {
        if !email.contains('@')
            || email.starts_with('@')
            || email.ends_with('@')
            || email.contains(' ')
        {
            return Err(ApiError::invalid_code(
                "email_invalid",
                format!("Invalid email address: {email}"),
                Some("email"),
            ));
        }
    }
    Ok(())
}

fn address(p: &Params) -> Result<Option<Value>, ApiError> {
    if p.get("address").is_none() {
        return Ok(None);
    }
    let a = p.obj("address")?;
    let mut out = json!({"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null});
    for k in ["city", "country", "line1", "line2", "postal_code", "state"] {
        if let Some(v) = a.str(k) {
            out[k] = json!(v);
        }
    }
    Ok(Some(out))
}

/// `POST /v1/customers`.
pub fn create(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(WRITABLE)?;
    check_email(p)?;
    let id = new_id("cus_");
    let mut c = json!({
        "id": id,
        "object": "customer",
        "address": address(p)?,
        "balance": p.int("balance")?.unwrap_or(0),
        "created": ctx.now,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": p.str("description"),
        "discount": null,
        "email": p.str("email"),
        "invoice_prefix": random_suffix("", 8).to_uppercase(),
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": ctx.livemode(),
        "metadata": metadata_or_empty(p)?,
        "name": p.str("name"),
        "next_invoice_sequence": 1,
        "phone": p.str("phone"),
        "preferred_locales": p.array("preferred_locales")?,
        "shipping": null,
        "tax_exempt": p.str("tax_exempt").unwrap_or_else(|| "none".to_owned()),
        "test_clock": null
    });
    // A legacy card source (`source=tok_visa`) is validated before anything is created.
    let source = match p.str("source") {
        Some(tok) => Some(new_card_source(ctx, &tok, &id)?),
        None => None,
    };
    let default_pm = p.obj("invoice_settings")?.str("default_payment_method");
    let attach_pm = p.str("payment_method");
    if let Some(pm) = &attach_pm {
        // Checked before the customer exists so that a failed create changes nothing.
        payment_methods::check_attachable(ctx, pm)?;
    }
    if let Some(card) = &source {
        c["default_source"] = card["id"].clone();
    }
    ctx.create("customer", c.clone(), "customer.created");
    if let Some(card) = source {
        ctx.insert("card", card);
    }
    if let Some(pm) = attach_pm {
        payment_methods::attach_to(ctx, &pm, &id)?;
    }
    if let Some(pm) = default_pm {
        let old = fetch(ctx, &id)?;
        let mut new = (*old).clone();
        new["invoice_settings"]["default_payment_method"] = json!(check_own_pm(ctx, &pm, &id)?);
        ctx.update(&old, new, Some("customer.updated"));
    }
    fetch(ctx, &id)
}

/// A card object made from a test token, attached to `customer` — Stripe's legacy Sources flow.
fn new_card_source(ctx: &Ctx, token: &str, customer: &str) -> Result<Value, ApiError> {
    let Some(card) = cards::by_token(token) else {
        return Err(ApiError::no_such_param("token", token, "source"));
    };
    if let cards::Behaviour::Declined(d) = cards::behaviour_in(card, ctx.mode) {
        return Err(payment_methods::setup_decline(&d));
    }
    let hash = cards::card_hash(card, ctx.now);
    Ok(json!({
        "id": new_id("card_"),
        "object": "card",
        "address_city": null, "address_country": null, "address_line1": null, "address_line1_check": null,
        "address_line2": null, "address_state": null, "address_zip": null, "address_zip_check": null,
        "brand": brand_name(card.brand),
        "country": "US",
        "customer": customer,
        "cvc_check": "pass",
        "dynamic_last4": null,
        "exp_month": hash["exp_month"],
        "exp_year": hash["exp_year"],
        "fingerprint": hash["fingerprint"],
        "funding": "credit",
        "last4": hash["last4"],
        "metadata": {},
        "name": null,
        "tokenization_method": null,
        "wallet": null
    }))
}

/// Card objects spell brands as people do ("Visa"), PaymentMethods as codes ("visa").
pub fn brand_name(code: &str) -> &'static str {
    match code {
        "mastercard" => "MasterCard",
        "amex" => "American Express",
        _ => "Visa",
    }
}

/// Stripe: the default payment method "must be attached to the customer".
fn check_own_pm(ctx: &Ctx, pm: &str, customer: &str) -> Result<String, ApiError> {
    let param = "invoice_settings[default_payment_method]";
    match ctx.store.get(pm) {
        Some(v) if v["object"] == "payment_method" && v["customer"] == customer => Ok(pm.to_owned()),
        Some(v) if v["object"] == "payment_method" => Err(ApiError::invalid(
            format!("The customer does not have a payment method with the ID {pm}. The payment method must be attached to the customer."),
            Some(param),
        )),
        _ => Err(ApiError::no_such_param("PaymentMethod", pm, param)),
    }
}

/// `GET /v1/customers/{id}` — Stripe returns `{id, object, deleted: true}` for a deleted customer.
pub fn retrieve(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    fetch(ctx, id)
}

/// `POST /v1/customers/{id}`.
pub fn update(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(WRITABLE)?;
    let old = fetch(ctx, id)?;
    if old.get("deleted").is_some() {
        return Err(ApiError::no_such("customer", id, "id"));
    }
    check_email(p)?;
    let mut new = (*old).clone();
    for k in ["email", "name", "description", "phone", "tax_exempt"] {
        if p.get(k).is_some() {
            new[k] = p.str(k).map_or(Value::Null, Value::String);
        }
    }
    if let Some(a) = address(p)? {
        new["address"] = a;
    }
    if let Some(m) = p.metadata()? {
        merge_metadata(&mut new, m);
    }
    let settings = p.obj("invoice_settings")?;
    if settings.get("default_payment_method").is_some() {
        new["invoice_settings"]["default_payment_method"] =
            match settings.str("default_payment_method") {
                Some(pm) => json!(check_own_pm(ctx, &pm, id)?),
                None => Value::Null,
            };
    }
    if let Some(src) = p.str("default_source") {
        match ctx.store.get(&src) {
            Some(card) if card["customer"] == id => new["default_source"] = json!(src),
            _ => return Err(ApiError::no_such_param("source", &src, "default_source")),
        }
    }
    let mut source_card = None;
    if let Some(tok) = p.str("source") {
        let card = new_card_source(ctx, &tok, id)?;
        new["default_source"] = card["id"].clone();
        source_card = Some(card);
    }
    if let Some(card) = source_card {
        ctx.insert("card", card);
    }
    if let Some(pm) = p.str("payment_method") {
        payment_methods::attach_to(ctx, &pm, id)?;
    }
    Ok(ctx.update(&old, new, Some("customer.updated")))
}

/// `DELETE /v1/customers/{id}` → `{id, object: "customer", deleted: true}`. Stripe: "Permanently deletes
/// a customer… Returns an object with a deleted parameter on success" (docs: delete a customer).
pub fn delete(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    let old = fetch(ctx, id)?;
    if old.get("deleted").is_some() {
        return Err(ApiError::no_such("customer", id, "id"));
    }
    let deleted = json!({"id": id, "object": "customer", "deleted": true});
    let deleted = ctx.put(deleted);
    ctx.emit("customer.deleted", old, None);
    Ok(deleted)
}

/// `GET /v1/customers` with `email` — Stripe: "A case-sensitive filter on the list based on the customer's
/// email field."
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "email",
        "created",
        "limit",
        "starting_after",
        "ending_before",
        "test_clock",
    ])?;
    let email = p.str("email");
    let created = super::events::created_filter(p)?;
    list::page(ctx.store, "customer", "customer", "/v1/customers", p, |c| {
        c.get("deleted").is_none()
            && email
                .as_deref()
                .is_none_or(|e| c["email"].as_str() == Some(e))
            && created.matches(c)
    })
}
