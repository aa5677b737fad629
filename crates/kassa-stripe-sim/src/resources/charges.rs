//! Charges (the legacy API, and the charges PaymentIntents make) and refunds.
//!
//! Stripe (docs: refunds API): "You can optionally refund only part of a charge. You can do so multiple
//! times, until the entire charge has been refunded"; refunding more than is left fails, a fully refunded
//! charge answers `charge_already_refunded`. Events: `charge.succeeded|failed`, `refund.created`,
//! `charge.refunded`.

use serde_json::{json, Value};

use super::{customer_param, customers::brand_name, metadata_or_empty, payment_methods};
use crate::cards::{self, Behaviour, Decline, TestCard, GENERIC_DECLINE};
use crate::currency;
use crate::error::ApiError;
use crate::list;
use crate::params::Params;
use crate::state::{new_id, Ctx, Obj};

/// What a charge is made from.
pub struct ChargeInput<'a> {
    /// Amount in minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: &'a str,
    /// Customer id, if any.
    pub customer: Option<&'a str>,
    /// The PaymentMethod (or legacy card) charged.
    pub instrument: &'a Value,
    /// The PaymentIntent the charge belongs to.
    pub payment_intent: Option<&'a str>,
    /// Description.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: Value,
    /// Legacy `source` object to embed (Charges API only).
    pub source: Option<Value>,
    /// `shipping` (name, phone, address), or null.
    pub shipping: Value,
    /// How far the money moved.
    pub state: ChargeState,
}

/// Where a charge that was not declined stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChargeState {
    /// Authorized and captured (`charge.succeeded`).
    #[default]
    Captured,
    /// Authorized only: `capture_method=manual` (`captured: false`, `charge.succeeded`).
    Authorized,
    /// A delayed notification method (SEPA Direct Debit) waiting for the funds (`charge.pending`).
    Pending,
}

/// The issuer's answer when a card is charged in `mode`: `None` approves.
pub fn issuer_decline(card: &TestCard, mode: crate::mode::Mode) -> Option<Decline> {
    match cards::behaviour_in(card, mode) {
        Behaviour::Declined(d) => Some(d),
        // Stripe: 4000000000000341 — "attempts to charge the customer fail".
        Behaviour::ChargeCustomerFail => Some(GENERIC_DECLINE),
        Behaviour::AuthenticationAlways(after) => after,
        _ => None,
    }
}

/// Creates and stores a charge, emitting `charge.succeeded` or `charge.failed`.
pub fn record_charge(ctx: &mut Ctx, input: ChargeInput<'_>, decline: Option<&Decline>) -> Obj {
    let id = new_id("ch_");
    let ok = decline.is_none();
    let pending = ok && input.state == ChargeState::Pending;
    let captured = ok && input.state != ChargeState::Authorized;
    let outcome = match decline {
        None => {
            json!({"network_status": "approved_by_network", "reason": null, "risk_level": "normal", "risk_score": 20, "seller_message": "Payment complete.", "type": "authorized"})
        }
        // Stripe (docs: Radar, charge outcomes): a blocked payment never reaches the network.
        Some(d) if d.radar_block => {
            json!({"network_status": "not_sent_to_network", "reason": "highest_risk_level", "risk_level": "highest", "risk_score": 95, "seller_message": "Stripe blocked this payment as too risky.", "type": "blocked"})
        }
        Some(d) => {
            json!({"network_status": "declined_by_network", "reason": d.decline_code, "risk_level": "normal", "risk_score": 20, "seller_message": "The bank did not return any further details with this decline.", "type": "issuer_declined"})
        }
    };
    let details = if input.instrument["type"] == "sepa_debit" {
        let mut sepa = input.instrument["sepa_debit"].clone();
        if let Value::Object(m) = &mut sepa {
            m.remove("generated_from");
            m.insert(
                "mandate".into(),
                ctx.store
                    .mandates
                    .get(input.instrument["id"].as_str().unwrap_or_default())
                    .map_or(Value::Null, |m| json!(m)),
            );
        }
        json!({"sepa_debit": sepa, "type": "sepa_debit"})
    } else {
        card_details(input.instrument, input.amount, ok)
    };
    let charge = json!({
        "id": id,
        "object": "charge",
        "amount": input.amount,
        "amount_captured": if captured { input.amount } else { 0 },
        "amount_refunded": 0,
        "application": null,
        "application_fee": null,
        "application_fee_amount": null,
        "balance_transaction": if ok { json!(new_id("txn_")) } else { Value::Null },
        "billing_details": input.instrument.get("billing_details").cloned().unwrap_or_else(|| json!({"address": null, "email": null, "name": null, "phone": null})),
        "calculated_statement_descriptor": "KASSA SIM",
        "captured": captured,
        "created": ctx.now,
        "currency": input.currency,
        "customer": input.customer,
        "description": input.description,
        "disputed": false,
        "failure_balance_transaction": null,
        "failure_code": decline.map(|d| d.code),
        "failure_message": decline.map(|d| d.message),
        "fraud_details": {},
        "livemode": ctx.livemode(),
        "metadata": input.metadata,
        "on_behalf_of": null,
        "outcome": outcome,
        "paid": ok && !pending,
        "payment_intent": input.payment_intent,
        "payment_method": input.instrument["id"],
        "payment_method_details": details,
        "receipt_email": null,
        "receipt_number": null,
        "receipt_url": format!("{}/receipts/{id}", ctx.env.public_url),
        "refunded": false,
        "refunds": {"object": "list", "data": [], "has_more": false, "url": format!("/v1/charges/{id}/refunds")},
        "review": null,
        "shipping": input.shipping,
        "source": input.source,
        "source_transfer": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": if pending { "pending" } else if ok { "succeeded" } else { "failed" },
        "transfer_data": null,
        "transfer_group": null
    });
    ctx.create(
        "charge",
        charge,
        if pending {
            "charge.pending"
        } else if ok {
            "charge.succeeded"
        } else {
            "charge.failed"
        },
    )
}

/// `payment_method_details` of a card charge (a PaymentMethod or a legacy card object).
fn card_details(instrument: &Value, amount: i64, ok: bool) -> Value {
    let card_hash = if instrument["object"] == "card" {
        let c = instrument;
        json!({"brand": c["brand"].as_str().unwrap_or("Visa").to_lowercase().replace("american express", "amex"), "exp_month": c["exp_month"], "exp_year": c["exp_year"], "fingerprint": c["fingerprint"], "last4": c["last4"], "funding": c["funding"], "country": c["country"], "checks": {"address_line1_check": c["address_line1_check"], "address_postal_code_check": c["address_zip_check"], "cvc_check": c["cvc_check"]}})
    } else {
        instrument["card"].clone()
    };
    json!({
        "card": {
            "amount_authorized": if ok { json!(amount) } else { Value::Null },
            "brand": card_hash["brand"],
            "checks": card_hash["checks"],
            "country": card_hash["country"],
            "exp_month": card_hash["exp_month"],
            "exp_year": card_hash["exp_year"],
            "fingerprint": card_hash["fingerprint"],
            "funding": card_hash["funding"],
            "installments": null,
            "last4": card_hash["last4"],
            "mandate": null,
            "network": card_hash["brand"],
            "three_d_secure": null,
            "wallet": null
        },
        "type": "card"
    })
}

/// `POST /v1/charges` — the legacy API: `source` (a `tok_…` token or a customer's card) or `customer`.
pub fn create(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "amount",
        "currency",
        "customer",
        "source",
        "description",
        "metadata",
        "capture",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "shipping",
        "transfer_group",
        "on_behalf_of",
        "application_fee_amount",
        "transfer_data",
        "radar_options",
    ])?;
    let amount = p
        .int("amount")?
        .ok_or_else(|| ApiError::missing("amount"))?;
    let currency = currency::check_currency(&p.req_str("currency")?, "currency")?;
    currency::check_charge_amount(amount, &currency, "amount")?;
    let shipping = shipping(p)?;
    let customer = p.str("customer");
    let customer_obj = match &customer {
        Some(c) => Some(customer_param(ctx, c, "customer")?),
        None => None,
    };
    let source_id = match (p.str("source"), &customer_obj) {
        (Some(s), _) => s,
        (None, Some(c)) => match c["default_source"].as_str() {
            Some(s) => s.to_owned(),
            // Stripe's answer for a customer without a card source.
            None => {
                return Err(ApiError::card_error(
                    "missing",
                    "Cannot charge a customer that has no active card",
                    Some("card"),
                ))
            }
        },
        (None, None) => {
            return Err(ApiError::invalid("Must provide source or customer.", None));
        }
    };
    let (instrument, source): (Value, Option<Value>) = if let Some(card) =
        cards::by_token(&source_id)
    {
        let hash = cards::card_hash(card, ctx.now);
        let source = json!({
            "id": new_id("card_"), "object": "card", "brand": brand_name(card.brand), "country": "US",
            "customer": null, "cvc_check": "pass", "exp_month": hash["exp_month"], "exp_year": hash["exp_year"],
            "fingerprint": hash["fingerprint"], "funding": "credit", "last4": hash["last4"], "metadata": {}
        });
        (source.clone(), Some(source))
    } else {
        match ctx.store.get(&source_id).cloned() {
            Some(c) if c["object"] == "card" => {
                if customer
                    .as_deref()
                    .is_some_and(|cu| c["customer"].as_str() != Some(cu))
                {
                    return Err(ApiError::no_such_param("source", &source_id, "source"));
                }
                (c.clone(), Some(c))
            }
            Some(pm) if pm["object"] == "payment_method" => (pm, None),
            _ => return Err(ApiError::no_such_param("source", &source_id, "source")),
        }
    };
    let card = payment_methods::card_of(&instrument);
    let decline = issuer_decline(card, ctx.mode);
    let charge = record_charge(
        ctx,
        ChargeInput {
            amount,
            currency: &currency,
            customer: customer.as_deref(),
            instrument: &instrument,
            payment_intent: None,
            description: p.str("description"),
            metadata: metadata_or_empty(p)?,
            source,
            shipping,
            state: ChargeState::Captured,
        },
        decline.as_ref(),
    );
    match decline {
        None => Ok(charge),
        Some(d) => Err(ApiError::card_error(d.code, d.message, d.param)
            .with("decline_code", json!(d.decline_code))
            .with("charge", charge["id"].clone())),
    }
}

/// `shipping` of a charge: Stripe's API reference marks `shipping.name` and `shipping.address`
/// (with `address.line1`) as required when `shipping` is given; a missing one is Stripe's
/// `parameter_missing` naming the nested param (`shipping[address][line1]`).
fn shipping(p: &Params) -> Result<Value, ApiError> {
    if p.get("shipping").is_none() {
        return Ok(Value::Null);
    }
    let s = p.obj("shipping")?;
    let name = s
        .str("name")
        .ok_or_else(|| ApiError::missing("shipping[name]"))?;
    if s.get("address").is_none() {
        return Err(ApiError::missing("shipping[address]"));
    }
    let a = s.obj("address")?;
    if a.str("line1").is_none() {
        return Err(ApiError::missing("shipping[address][line1]"));
    }
    let mut address = json!({"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null});
    for k in ["city", "country", "line1", "line2", "postal_code", "state"] {
        if let Some(v) = a.str(k) {
            address[k] = json!(v);
        }
    }
    Ok(json!({
        "address": address,
        "carrier": s.str("carrier"),
        "name": name,
        "phone": s.str("phone"),
        "tracking_number": s.str("tracking_number"),
    }))
}

/// `GET /v1/charges/{id}`.
pub fn retrieve(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("charge", "charge", id, "id")
}

/// `GET /v1/charges?customer=…&payment_intent=…`.
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "customer",
        "payment_intent",
        "created",
        "limit",
        "starting_after",
        "ending_before",
        "transfer_group",
    ])?;
    let customer = p.str("customer");
    let pi = p.str("payment_intent");
    let created = super::events::created_filter(p)?;
    list::page(ctx.store, "charge", "charge", "/v1/charges", p, |c| {
        customer
            .as_deref()
            .is_none_or(|x| c["customer"].as_str() == Some(x))
            && pi
                .as_deref()
                .is_none_or(|x| c["payment_intent"].as_str() == Some(x))
            && created.matches(c)
    })
}

/// `POST /v1/refunds` with `charge` or `payment_intent`, optional `amount` (default: all that is left).
pub fn create_refund(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "charge",
        "payment_intent",
        "amount",
        "reason",
        "metadata",
        "refund_application_fee",
        "reverse_transfer",
        "instructions_email",
        "origin",
        "customer",
        "currency",
    ])?;
    let charge_id = match (p.str("charge"), p.str("payment_intent")) {
        (Some(c), _) => c,
        (None, Some(pi)) => {
            let intent = ctx.store.get(&pi).filter(|v| v["object"] == "payment_intent").cloned()
                .ok_or_else(|| ApiError::no_such_param("payment_intent", &pi, "payment_intent"))?;
            match intent["latest_charge"].as_str() {
                Some(c) if intent["status"] == "succeeded" => c.to_owned(),
                _ => {
                    return Err(ApiError::invalid_code(
                        "charge_not_refundable",
                        format!("This PaymentIntent ({pi}) does not have a successful charge to refund."),
                        Some("payment_intent"),
                    ))
                }
            }
        }
        (None, None) => return Err(ApiError::invalid("One of the following params should be provided for this request: payment_intent or charge.", None)),
    };
    let old = ctx
        .store
        .get(&charge_id)
        .filter(|v| v["object"] == "charge")
        .cloned()
        .ok_or_else(|| ApiError::no_such_param("charge", &charge_id, "charge"))?;
    if old["status"] != "succeeded" {
        return Err(ApiError::invalid_code(
            "charge_not_refundable",
            format!("Charge {charge_id} has not succeeded and cannot be refunded."),
            Some("charge"),
        ));
    }
    let amount_charged = old["amount"].as_i64().unwrap_or(0);
    let refunded = old["amount_refunded"].as_i64().unwrap_or(0);
    let left = amount_charged - refunded;
    if left <= 0 {
        return Err(ApiError::invalid_code(
            "charge_already_refunded",
            format!("Charge {charge_id} has already been refunded."),
            Some("charge"),
        ));
    }
    let amount = p.int("amount")?.unwrap_or(left);
    if amount < 1 {
        return Err(ApiError::invalid(
            "This value must be greater than or equal to 1.",
            Some("amount"),
        ));
    }
    let cur = old["currency"].as_str().unwrap_or("usd").to_owned();
    if amount > left {
        return Err(ApiError::invalid_code(
            "amount_too_large",
            format!(
                "Refund amount ({} {cur}) is greater than unrefunded amount on charge ({} {cur})",
                currency::format_major(amount, &cur),
                currency::format_major(left, &cur)
            ),
            Some("amount"),
        ));
    }
    if let Some(reason) = p.str("reason") {
        if !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason.as_str()) {
            return Err(ApiError::invalid(
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                Some("reason"),
            ));
        }
    }
    let refund = json!({
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn_"),
        "charge": charge_id,
        "created": ctx.now,
        "currency": cur,
        "destination_details": {"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"}, "type": "card"},
        "metadata": metadata_or_empty(p)?,
        "payment_intent": old["payment_intent"],
        "reason": p.str("reason"),
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": "succeeded",
        "transfer_reversal": null
    });
    let refund = ctx.create("refund", refund, "refund.created");
    let mut new = old.clone();
    new["amount_refunded"] = json!(refunded + amount);
    new["refunded"] = json!(refunded + amount >= amount_charged);
    if let Some(data) = new["refunds"]["data"].as_array_mut() {
        data.insert(0, (*refund).clone());
    }
    ctx.update(&old, new, Some("charge.refunded"));
    Ok(refund)
}

/// `POST /v1/refunds/{id}`: Stripe lets only `metadata` change (docs: update a refund); event
/// `charge.refund.updated`.
pub fn update_refund(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&["metadata"])?;
    let old = ctx.fetch("refund", "refund", id, "id")?;
    let mut new = (*old).clone();
    if let Some(m) = p.metadata()? {
        crate::params::merge_metadata(&mut new, m);
    }
    Ok(ctx.update(&old, new, Some("charge.refund.updated")))
}

/// `GET /v1/refunds/{id}`.
pub fn retrieve_refund(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("refund", "refund", id, "id")
}

/// `GET /v1/refunds?charge=…&payment_intent=…`.
pub fn list_refunds(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "charge",
        "payment_intent",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let charge = p.str("charge");
    let pi = p.str("payment_intent");
    list::page(ctx.store, "refund", "refund", "/v1/refunds", p, |r| {
        charge
            .as_deref()
            .is_none_or(|x| r["charge"].as_str() == Some(x))
            && pi
                .as_deref()
                .is_none_or(|x| r["payment_intent"].as_str() == Some(x))
    })
}
