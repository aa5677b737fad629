//! Checkout Sessions: create (payment and setup modes), retrieve, list, expire, line items, and completion
//! as a customer would do it on the hosted page.

use serde_json::{json, Value};

use super::payment_intents::{self, ConfirmOptions};
use super::{customer_param, metadata_or_empty, payment_methods, products, setup_intents};
use crate::cards;
use crate::currency;
use crate::error::ApiError;
use crate::list;
use crate::params::{as_text, int_value, Params};
use crate::state::{new_id, random_suffix, Ctx, Obj};

const CREATE_PARAMS: &[&str] = &[
    "mode",
    "success_url",
    "cancel_url",
    "customer",
    "customer_email",
    "line_items",
    "currency",
    "metadata",
    "client_reference_id",
    "expires_at",
    "payment_method_types",
    "payment_intent_data",
    "setup_intent_data",
    "customer_creation",
    "locale",
    "submit_type",
    "billing_address_collection",
    "allow_promotion_codes",
    "automatic_tax",
    "consent_collection",
    "custom_fields",
    "custom_text",
    "customer_update",
    "discounts",
    "invoice_creation",
    "payment_method_collection",
    "payment_method_options",
    "phone_number_collection",
    "return_url",
    "saved_payment_method_options",
    "shipping_address_collection",
    "shipping_options",
    "tax_id_collection",
    "ui_mode",
    "redirect_on_completion",
    "after_expiration",
    "payment_method_configuration",
];

/// Stripe: `expires_at` "can be anywhere from 30 minutes to 24 hours after Checkout Session creation. By
/// default, this value is 24 hours from creation." (docs: Checkout Session create).
const MIN_EXPIRY: i64 = 30 * 60;
const MAX_EXPIRY: i64 = 24 * 60 * 60;

fn fetch(ctx: &Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("checkout.session", "checkout.session", id, "session")
}

/// The hosted page of a session.
pub fn session_url(public_url: &str, id: &str) -> String {
    format!("{public_url}/c/pay/{id}")
}

/// Parses one `line_items[i]` into a Checkout line item (`object: "item"`), creating inline prices/products.
fn line_item(ctx: &mut Ctx, i: usize, raw: &Value, mode: &str) -> Result<Value, ApiError> {
    let prefix = format!("line_items[{i}]");
    let Value::Object(m) = raw else {
        return Err(ApiError::invalid(
            format!("Invalid object: {prefix} must be a hash"),
            Some(&prefix),
        ));
    };
    let item = Params(m.clone());
    let quantity = match item.get("quantity") {
        Some(v) => int_value(v, &format!("{prefix}[quantity]"))?,
        None => {
            return Err(ApiError::invalid_code(
                "parameter_missing",
                format!("Quantity is required. Add `quantity` to `{prefix}`"),
                Some(&format!("{prefix}[quantity]")),
            ))
        }
    };
    if quantity < 1 {
        return Err(ApiError::invalid(
            "This value must be greater than or equal to 1.",
            Some(&format!("{prefix}[quantity]")),
        ));
    }
    let price = match (item.str("price"), item.get("price_data")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                format!("You may only specify one of these parameters: {prefix}[price], {prefix}[price_data]."),
                Some(&prefix),
            ))
        }
        (Some(id), None) => {
            let param = format!("{prefix}[price]");
            let price = ctx
                .store
                .get(&id)
                .filter(|p| p["object"] == "price")
                .cloned()
                .ok_or_else(|| ApiError::no_such_param("price", &id, &param))?;
            if price["type"] == "recurring" && mode != "subscription" {
                return Err(ApiError::invalid(
                    "You must be in `subscription` mode to use recurring prices.",
                    Some(&param),
                ));
            }
            price
        }
        (None, Some(_)) => {
            let data = item.obj("price_data")?;
            products::inline_price(ctx, &data, &format!("{prefix}[price_data]"))?
        }
        (None, None) => {
            return Err(ApiError::invalid(
                format!("You must specify either `price` or `price_data` in `{prefix}`."),
                Some(&prefix),
            ))
        }
    };
    let unit = price["unit_amount"].as_i64().unwrap_or(0);
    let total = unit.saturating_mul(quantity);
    let description = price["product"]
        .as_str()
        .and_then(|p| ctx.store.get(p))
        .and_then(|p| p["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    Ok(json!({
        "id": new_id("li_"),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": total,
        "amount_tax": 0,
        "amount_total": total,
        "currency": price["currency"],
        "description": description,
        "price": price,
        "quantity": quantity
    }))
}

/// `POST /v1/checkout/sessions`.
pub fn create(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(CREATE_PARAMS)?;
    let mode = p.req_str("mode")?;
    if mode != "payment" && mode != "setup" {
        return Err(ApiError::invalid(
            format!("The simulator supports mode=payment and mode=setup, not mode={mode}."),
            Some("mode"),
        ));
    }
    let customer = p.str("customer");
    let customer_email = p.str("customer_email");
    if customer.is_some() && customer_email.is_some() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: customer, customer_email.",
            Some("customer_email"),
        ));
    }
    if let Some(c) = &customer {
        customer_param(ctx, c, "customer")?;
    }
    let expires_at = p.int("expires_at")?.unwrap_or(ctx.now + MAX_EXPIRY);
    if expires_at < ctx.now + MIN_EXPIRY {
        return Err(ApiError::invalid("The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.", Some("expires_at")));
    }
    if expires_at > ctx.now + MAX_EXPIRY {
        return Err(ApiError::invalid(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            Some("expires_at"),
        ));
    }
    let customer_creation = p.str("customer_creation");
    if let Some(cc) = &customer_creation {
        if cc != "always" && cc != "if_required" {
            return Err(ApiError::invalid(
                "Invalid customer_creation: must be one of always or if_required",
                Some("customer_creation"),
            ));
        }
    }
    let raw_items = p.array("line_items")?;
    if mode == "setup" && !raw_items.is_empty() {
        return Err(ApiError::invalid(
            "You can not pass `line_items` in `setup` mode.",
            Some("line_items"),
        ));
    }
    if mode == "payment" && raw_items.is_empty() {
        return Err(ApiError::invalid(
            "`line_items` is required in `payment` mode.",
            Some("line_items"),
        ));
    }
    let pm_types = p.array("payment_method_types")?;
    let mut types: Vec<String> = Vec::new();
    for t in &pm_types {
        match as_text(t).as_deref() {
            Some(t @ ("card" | "sepa_debit")) => types.push(t.to_owned()),
            _ => {
                return Err(ApiError::invalid(
                    "The simulator supports payment_method_types card and sepa_debit.",
                    Some("payment_method_types"),
                ))
            }
        }
    }
    if types.is_empty() {
        types.push("card".to_owned());
    }
    let mut currency = match p.str("currency") {
        Some(c) => Some(currency::check_currency(&c, "currency")?),
        None => None,
    };
    if mode == "setup" && currency.is_none() && pm_types.is_empty() {
        // Stripe: `currency` is "Required in `setup` mode when `payment_method_types` is not set".
        return Err(ApiError::missing("currency"));
    }
    let metadata = metadata_or_empty(p)?;
    let pi_data = p.obj("payment_intent_data")?;
    let si_data = p.obj("setup_intent_data")?;
    // Line items may create inline prices and products: validate all before creating anything visible.
    let mut items = Vec::new();
    for (i, raw) in raw_items.iter().enumerate() {
        items.push(line_item(ctx, i, raw, &mode)?);
    }
    let mut total = 0i64;
    for (i, item) in items.iter().enumerate() {
        let c = item["currency"].as_str().unwrap_or_default().to_owned();
        match &currency {
            Some(cur) if *cur != c => {
                return Err(ApiError::invalid(
                    format!("All line items must use the same currency; line_items[{i}] is in {c}, the session in {cur}."),
                    Some(&format!("line_items[{i}]")),
                ))
            }
            Some(_) => {}
            None => currency = Some(c),
        }
        total = total.saturating_add(item["amount_total"].as_i64().unwrap_or(0));
    }
    if mode == "payment" {
        currency::check_charge_amount(total, currency.as_deref().unwrap_or("usd"), "line_items")?;
    }
    // Stripe: SEPA Direct Debit in Checkout needs "Prices for all line items … expressed in Euro"
    // (docs: SEPA Direct Debit, accept a payment with Checkout).
    if types.iter().any(|t| t == "sepa_debit") && currency.as_deref() != Some("eur") {
        return Err(ApiError::invalid(
            "The payment method `sepa_debit` can only be used with currency `eur`.",
            Some("payment_method_types"),
        ));
    }
    if pi_data.get("shipping").is_some() {
        payment_intents::shipping(&pi_data)?;
    }
    // Stripe's Checkout Session ids say their mode: `cs_test_…`, `cs_live_…`.
    let id = random_suffix(&format!("cs_{}_a1", ctx.mode.name()), 56);
    let setup_intent = if mode == "setup" {
        let si = setup_intents::new_setup_intent(
            ctx,
            customer.clone(),
            None,
            Value::Object(si_data.metadata()?.unwrap_or_default()),
            "off_session",
        );
        si["id"].clone()
    } else {
        Value::Null
    };
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": if mode == "payment" { json!(total) } else { Value::Null },
        "amount_total": if mode == "payment" { json!(total) } else { Value::Null },
        "automatic_tax": {"enabled": false, "liability": null, "status": null},
        "billing_address_collection": null,
        "cancel_url": p.str("cancel_url"),
        "client_reference_id": p.str("client_reference_id"),
        "client_secret": null,
        "consent": null,
        "consent_collection": null,
        "created": ctx.now,
        "currency": currency,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer": customer,
        "customer_creation": if customer.is_none() { json!(customer_creation.unwrap_or_else(|| "if_required".to_owned())) } else { Value::Null },
        "customer_details": null,
        "customer_email": customer_email,
        "expires_at": expires_at,
        "invoice": null,
        "invoice_creation": null,
        "livemode": ctx.livemode(),
        "locale": p.str("locale"),
        "metadata": metadata,
        "mode": mode,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "always",
        "payment_method_configuration_details": null,
        "payment_method_options": {},
        "payment_method_types": types,
        "payment_status": if mode == "payment" { "unpaid" } else { "no_payment_required" },
        "phone_number_collection": {"enabled": false},
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": setup_intent,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": p.str("success_url"),
        "total_details": if mode == "payment" { json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}) } else { Value::Null },
        "ui_mode": "hosted",
        "url": session_url(&ctx.env.public_url, &id)
    });
    let session = ctx.insert("checkout.session", session);
    ctx.store.open_sessions.insert((expires_at, id.clone()));
    ctx.store.line_items.insert(id.clone(), items);
    // Kept aside for completion: what the PaymentIntent is to carry.
    ctx.store.payment_intent_data.insert(id, pi_data);
    Ok(session)
}

/// `GET /v1/checkout/sessions/{id}` (open sessions past `expires_at` are expired by the simulator's clock).
pub fn retrieve(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    fetch(ctx, id)
}

/// `GET /v1/checkout/sessions/{id}/line_items`.
pub fn line_items(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    fetch(ctx, id)?;
    let limit = list::limit(p)?;
    let items = ctx.store.line_items.get(id).cloned().unwrap_or_default();
    let has_more = items.len() > limit;
    let data: Vec<Value> = items.into_iter().take(limit).collect();
    Ok(list::list_object(
        data,
        has_more,
        &format!("/v1/checkout/sessions/{id}/line_items"),
    ))
}

/// `GET /v1/checkout/sessions?customer=…&payment_intent=…&status=…`.
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "customer",
        "payment_intent",
        "status",
        "created",
        "limit",
        "starting_after",
        "ending_before",
        "payment_link",
        "subscription",
        "customer_details",
    ])?;
    let customer = p.str("customer");
    let pi = p.str("payment_intent");
    let status = p.str("status");
    list::page(
        ctx.store,
        "checkout.session",
        "checkout.session",
        "/v1/checkout/sessions",
        p,
        |s| {
            customer
                .as_deref()
                .is_none_or(|c| s["customer"].as_str() == Some(c))
                && pi
                    .as_deref()
                    .is_none_or(|x| s["payment_intent"].as_str() == Some(x))
                && status
                    .as_deref()
                    .is_none_or(|x| s["status"].as_str() == Some(x))
        },
    )
}

/// `POST /v1/checkout/sessions/{id}/expire` — Stripe: "A Checkout Session can be expired when it is in one
/// of these statuses: open" and emits `checkout.session.expired`.
pub fn expire(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    let old = fetch(ctx, id)?;
    if old["status"] != "open" {
        return Err(ApiError::invalid(
            format!("Only Checkout Sessions with a status in [\"open\"] can be expired. This session has a status of {}.", old["status"].as_str().unwrap_or_default()),
            None,
        ));
    }
    let mut new = (*old).clone();
    new["status"] = json!("expired");
    new["url"] = Value::Null;
    let new = ctx.put(new);
    closed(ctx, &new);
    ctx.emit("checkout.session.expired", new.clone(), None);
    Ok(new)
}

/// Expires every open session whose `expires_at` has passed (run by the simulator's clock).
/// Returns how many expired.
pub fn expire_due(ctx: &mut Ctx) -> usize {
    let mut expired = 0;
    while let Some((at, id)) = ctx.store.open_sessions.first().cloned() {
        if at > ctx.now {
            break;
        }
        ctx.store.open_sessions.remove(&(at, id.clone()));
        if expire(ctx, &id).is_ok() {
            expired += 1;
        }
    }
    expired
}

/// Takes a session off the expiry index (it completed or expired).
fn closed(ctx: &mut Ctx, session: &Value) {
    if let (Some(at), Some(id)) = (session["expires_at"].as_i64(), session["id"].as_str()) {
        ctx.store.open_sessions.remove(&(at, id.to_owned()));
    }
}

/// What the customer enters on the hosted page.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// Test card PaymentMethod id (`pm_card_visa`) or card number.
    pub payment_method: String,
    /// E-mail typed by the customer.
    pub email: Option<String>,
    /// Name typed by the customer.
    pub name: Option<String>,
}

/// Completes an open session as the customer would: card entered (3D Secure passed when asked), then
/// setup or payment. Stripe: `checkout.session.completed` follows; in setup mode no Customer is created
/// unless `customer_creation=always` (docs: Checkout Session `customer_creation`, "if_required").
pub fn complete(ctx: &mut Ctx, id: &str, c: &Completion) -> Result<Obj, ApiError> {
    let session = fetch(ctx, id)?;
    if session["status"] == "open" && session["expires_at"].as_i64().is_some_and(|t| t <= ctx.now) {
        expire(ctx, id)?;
        return Err(ApiError::invalid(
            format!("Checkout Session {id} has expired."),
            None,
        ));
    }
    if session["status"] != "open" {
        return Err(ApiError::invalid(
            format!(
                "Checkout Session {id} cannot be completed: its status is {}.",
                session["status"].as_str().unwrap_or_default()
            ),
            None,
        ));
    }
    let mut customer = session["customer"].as_str().map(str::to_owned);
    let customer_email = customer
        .as_deref()
        .and_then(|cu| ctx.store.get(cu))
        .and_then(|o| o["email"].as_str())
        .map(str::to_owned);
    let (pm, email, name) = match cards::by_payment_method_id(&c.payment_method)
        .or_else(|| cards::lookup(&c.payment_method).filter(|card| card.number == c.payment_method))
    {
        Some(card) => {
            let email = c
                .email
                .clone()
                .or_else(|| session["customer_email"].as_str().map(str::to_owned))
                .or(customer_email)
                .unwrap_or_else(|| "customer@example.com".to_owned());
            let pm = payment_methods::materialize(ctx, card, Some(email.clone()), c.name.clone());
            (pm, email, c.name.clone())
        }
        // A PaymentMethod made beforehand (the payment page's confirm with `payment_method`).
        None => {
            let pm = match ctx.store.get_obj(&c.payment_method) {
                Some(pm) if pm["object"] == "payment_method" => pm.clone(),
                _ if c.payment_method.starts_with("pm_") => {
                    return Err(ApiError::no_such_param(
                        "PaymentMethod",
                        &c.payment_method,
                        "payment_method",
                    ))
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("Unknown test card: {}", c.payment_method),
                        Some("payment_method"),
                    ))
                }
            };
            if !pm["customer"].is_null() {
                return Err(ApiError::invalid(
                    "The payment method you provided has already been attached to a customer.",
                    Some("payment_method"),
                ));
            }
            let email = c
                .email
                .clone()
                .or_else(|| pm["billing_details"]["email"].as_str().map(str::to_owned))
                .or_else(|| session["customer_email"].as_str().map(str::to_owned))
                .or(customer_email)
                .unwrap_or_else(|| "customer@example.com".to_owned());
            let name = c
                .name
                .clone()
                .or_else(|| pm["billing_details"]["name"].as_str().map(str::to_owned));
            (pm, email, name)
        }
    };
    let pm_type = pm["type"].as_str().unwrap_or("card").to_owned();
    if !session["payment_method_types"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(pm_type.as_str())))
    {
        return Err(ApiError::invalid(
            format!("This Checkout Session does not accept payment method type {pm_type}."),
            Some("payment_method"),
        ));
    }
    let pm_id = pm["id"].as_str().unwrap_or_default().to_owned();
    let pi_data = ctx
        .store
        .payment_intent_data
        .get(id)
        .cloned()
        .unwrap_or_default();
    // Stripe: Checkout creates a Customer when one is needed — `customer_creation=always`, or a
    // payment that saves its method for later (`payment_intent_data[setup_future_usage]`).
    let saves_method = session["mode"] == "payment" && pi_data.str("setup_future_usage").is_some();
    if customer.is_none() && (session["customer_creation"] == "always" || saves_method) {
        let mut fields = serde_json::Map::new();
        fields.insert("email".to_owned(), json!(email));
        if let Some(name) = &name {
            fields.insert("name".to_owned(), json!(name));
        }
        let created = super::customers::create(ctx, &Params(fields))?;
        customer = created["id"].as_str().map(str::to_owned);
    }
    let mut new = (*session).clone();
    new["customer"] = json!(customer);
    new["customer_details"] = json!({
        "address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
        "email": email,
        "name": name,
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": []
    });
    if session["mode"] == "setup" {
        let si_id = session["setup_intent"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut si = (*ctx.fetch("setup_intent", "setupintent", &si_id, "setup_intent")?).clone();
        si["payment_method"] = json!(pm_id);
        si["customer"] = json!(customer);
        let si = ctx.put(si);
        setup_intents::confirm_intent(ctx, (*si).clone(), true)?;
    } else {
        let pi = match session["payment_intent"]
            .as_str()
            .and_then(|x| ctx.store.get(x))
            .cloned()
        {
            // A retry after a decline reuses the session's PaymentIntent.
            Some(mut pi) => {
                pi["payment_method"] = json!(pm_id);
                ctx.put(pi)
            }
            None => {
                let data = pi_data.clone();
                let pi = payment_intents::new_payment_intent(
                    ctx,
                    session["amount_total"].as_i64().unwrap_or(0),
                    session["currency"].as_str().unwrap_or("usd"),
                    customer.clone(),
                    Some(pm_id.clone()),
                    Value::Object(data.metadata()?.unwrap_or_default()),
                    data.str("description"),
                    data.str("setup_future_usage"),
                    "automatic",
                );
                let mut with_extra = (*pi).clone();
                with_extra["payment_method_types"] = session["payment_method_types"].clone();
                with_extra["shipping"] = payment_intents::shipping(&data)?;
                let pi = ctx.put(with_extra);
                let mut with_pi = (*session).clone();
                with_pi["payment_intent"] = pi["id"].clone();
                ctx.put(with_pi);
                pi
            }
        };
        new["payment_intent"] = pi["id"].clone();
        let confirmed = payment_intents::confirm_intent(
            ctx,
            pi,
            ConfirmOptions {
                off_session: false,
                authenticated: true,
                error_on_requires_action: false,
                // Checkout shows the mandate text and collects the customer's acceptance.
                mandate_accepted: true,
            },
        )?;
        // Stripe: with a delayed notification method the session completes `unpaid`; the result
        // follows as `checkout.session.async_payment_succeeded|failed`.
        new["payment_status"] = json!(if confirmed["status"] == "processing" {
            "unpaid"
        } else {
            "paid"
        });
    }
    new["status"] = json!("complete");
    let new = ctx.put(new);
    closed(ctx, &new);
    ctx.emit("checkout.session.completed", new.clone(), None);
    Ok(new)
}

/// A delayed debit of a payment-mode session settled: the session is `paid` and emits
/// `checkout.session.async_payment_succeeded`, or stays `unpaid` and emits `…_failed`.
pub fn debit_settled(ctx: &mut Ctx, payment_intent: &str, succeeded: bool) {
    let session = ctx
        .store
        .ids("checkout.session")
        .iter()
        .rev()
        .filter_map(|id| ctx.store.get_obj(id))
        .find(|s| s["payment_intent"].as_str() == Some(payment_intent))
        .cloned();
    let Some(session) = session else { return };
    if succeeded {
        let mut new = (*session).clone();
        new["payment_status"] = json!("paid");
        let new = ctx.put(new);
        ctx.emit("checkout.session.async_payment_succeeded", new, None);
    } else {
        ctx.emit("checkout.session.async_payment_failed", session, None);
    }
}

/// `GET /v1/payment_pages/{cs_id}`: what Stripe's hosted payment page loads for a session (an
/// endpoint of Checkout's own page, not of the public API reference; Stripe's CLI calls it to complete
/// sessions for `stripe trigger checkout.session.*`). Answers the session with its line items.
pub fn payment_page(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    let session = ctx.fetch("checkout.session", "payment_page", id, "id")?;
    let mut page = (*session).clone();
    let items = ctx.store.line_items.get(id).cloned().unwrap_or_default();
    page["line_items"] = json!({
        "object": "list",
        "data": items,
        "has_more": false,
        "url": format!("/v1/checkout/sessions/{id}/line_items"),
    });
    Ok(std::sync::Arc::new(page))
}

/// `POST /v1/payment_pages/{cs_id}/confirm` with `payment_method` and `expected_amount`: the customer
/// pays (or saves the card) on the hosted page. Refused when the amount shown is not the session's
/// total any more; a decline answers 402 as the hosted page would show it.
pub fn confirm_payment_page(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "payment_method",
        "expected_amount",
        "expected_payment_method_type",
        "email",
        "name",
        "eid",
        "consent",
        "customer_email",
    ])?;
    let session = ctx.fetch("checkout.session", "payment_page", id, "id")?;
    let payment_method = p.req_str("payment_method")?;
    if let Some(expected) = p.int("expected_amount")? {
        let total = session["amount_total"].as_i64().unwrap_or(0);
        if expected != total {
            return Err(ApiError::invalid(
                format!("The amount to pay ({total}) differs from the expected amount ({expected}); reload the page."),
                Some("expected_amount"),
            ));
        }
    }
    let completion = Completion {
        payment_method,
        email: p.str("email"),
        name: p.str("name"),
    };
    complete(ctx, id, &completion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form;
    use crate::mode::Mode;
    use crate::state::{Accounts, Env, Origin};

    #[test]
    fn the_clock_expires_open_sessions_once_past_expires_at() {
        let env = Env {
            api_version: "v".into(),
            public_url: "http://sim".into(),
            clock: Default::default(),
        };
        let mut accounts = Accounts::default();
        let mut ctx = Ctx::new(
            &mut accounts,
            Mode::Test,
            &env,
            Origin::default(),
            Vec::new(),
        );
        let p = Params(form::decode(b"mode=setup&currency=usd").unwrap());
        let open = create(&mut ctx, &p).unwrap();
        let done = create(&mut ctx, &p).unwrap();
        complete(
            &mut ctx,
            done["id"].as_str().unwrap(),
            &Completion {
                payment_method: "pm_card_visa".into(),
                ..Completion::default()
            },
        )
        .unwrap();
        expire_due(&mut ctx);
        assert_eq!(
            ctx.fetch("checkout.session", "", open["id"].as_str().unwrap(), "")
                .unwrap()["status"],
            "open"
        );
        ctx.now += MAX_EXPIRY;
        expire_due(&mut ctx);
        assert_eq!(
            ctx.fetch("checkout.session", "", open["id"].as_str().unwrap(), "")
                .unwrap()["status"],
            "expired"
        );
        assert_eq!(
            ctx.fetch("checkout.session", "", done["id"].as_str().unwrap(), "")
                .unwrap()["status"],
            "complete"
        );
        assert!(ctx.store.open_sessions.is_empty());
        let expired: Vec<&str> = ctx
            .store
            .events()
            .iter()
            .filter(|e| e.event_type == "checkout.session.expired")
            .map(|e| e.object["id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(expired, vec![open["id"].as_str().unwrap()]);
    }
}
