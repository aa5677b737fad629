//! PaymentIntents: create (with `confirm`/`off_session`), retrieve, update, confirm, capture, cancel, list,
//! and the settlement of delayed debits.
//!
//! Stripe (docs: off-session payments, testing): a declined confirmation answers HTTP 402 with a
//! `card_error` whose `payment_intent` is the PaymentIntent, now `requires_payment_method` with
//! `last_payment_error`; an off-session payment that needs authentication fails with
//! `authentication_required`; on-session it becomes `requires_action`. A SEPA Direct Debit is
//! `processing` until it settles (see [`crate::debits`]).

use std::sync::Arc;

use serde_json::{json, Value};

use super::charges::{self, ChargeInput, ChargeState};
use super::{customer_param, metadata_or_empty, payment_methods};
use crate::cards::{Behaviour, Decline, AUTHENTICATION_REQUIRED};
use crate::currency;
use crate::debits::{self, Settlement};
use crate::error::ApiError;
use crate::list;
use crate::params::{merge_metadata, Params};
use crate::state::{new_id, random_suffix, Ctx, Obj};

const CREATE_PARAMS: &[&str] = &[
    "amount",
    "currency",
    "customer",
    "payment_method",
    "confirm",
    "off_session",
    "capture_method",
    "description",
    "metadata",
    "receipt_email",
    "setup_future_usage",
    "payment_method_types",
    "automatic_payment_methods",
    "error_on_requires_action",
    "return_url",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "confirmation_method",
    "on_behalf_of",
    "transfer_data",
    "transfer_group",
    "application_fee_amount",
    "payment_method_options",
    "shipping",
    "mandate_data",
    "use_stripe_sdk",
    "payment_method_data",
    "radar_options",
    "excluded_payment_method_types",
    "confirmation_token",
    "payment_method_configuration",
];

/// How a confirmation ends.
enum Outcome {
    Succeeded,
    Declined(Decline, bool),
    RequiresAction,
    /// A delayed notification method: the money moves later.
    Processing,
}

/// What a confirmation is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfirmOptions {
    /// The customer is not present (Stripe's `off_session=true`).
    pub off_session: bool,
    /// The customer completed 3D Secure (hosted checkout).
    pub authenticated: bool,
    /// Fail instead of entering `requires_action`.
    pub error_on_requires_action: bool,
    /// The customer accepted a mandate now (`mandate_data`, or Checkout's own mandate screen).
    pub mandate_accepted: bool,
}

fn fetch(ctx: &Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("payment_intent", "payment_intent", id, "intent")
}

/// Builds and stores a PaymentIntent (event `payment_intent.created`); amount and currency already valid.
#[allow(clippy::too_many_arguments)]
pub fn new_payment_intent(
    ctx: &mut Ctx,
    amount: i64,
    currency: &str,
    customer: Option<String>,
    payment_method: Option<String>,
    metadata: Value,
    description: Option<String>,
    setup_future_usage: Option<String>,
    capture_method: &str,
) -> Obj {
    let id = new_id("pi_");
    let status = if payment_method.is_some() {
        "requires_confirmation"
    } else {
        "requires_payment_method"
    };
    let pi = json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": null,
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": capture_method,
        "client_secret": format!("{id}_secret_{}", random_suffix("", 25)),
        "confirmation_method": "automatic",
        "created": ctx.now,
        "currency": currency,
        "customer": customer,
        "description": description,
        "last_payment_error": null,
        "latest_charge": null,
        "livemode": ctx.livemode(),
        "metadata": metadata,
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": payment_method,
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"installments": null, "mandate_options": null, "network": null, "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "processing": null,
        "receipt_email": null,
        "review": null,
        "setup_future_usage": setup_future_usage,
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": status,
        "transfer_data": null,
        "transfer_group": null
    });
    ctx.create("payment_intent", pi, "payment_intent.created")
}

/// `POST /v1/payment_intents`.
pub fn create(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(CREATE_PARAMS)?;
    let amount = p
        .int("amount")?
        .ok_or_else(|| ApiError::missing("amount"))?;
    let currency = currency::check_currency(&p.req_str("currency")?, "currency")?;
    currency::check_charge_amount(amount, &currency, "amount")?;
    let confirm = p.bool("confirm")?.unwrap_or(false);
    let off_session = match p.get("off_session") {
        // Stripe also takes `off_session=one_off|recurring`.
        Some(Value::String(s)) if s == "one_off" || s == "recurring" => true,
        _ => p.bool("off_session")?.unwrap_or(false),
    };
    if off_session && !confirm {
        return Err(ApiError::invalid(
            "You may only specify `off_session` when `confirm=true`.",
            Some("off_session"),
        ));
    }
    let capture_method = p
        .str("capture_method")
        .unwrap_or_else(|| "automatic".to_owned());
    if !["automatic", "automatic_async", "manual"].contains(&capture_method.as_str()) {
        return Err(ApiError::invalid(
            "Invalid capture_method: must be one of automatic, automatic_async, or manual",
            Some("capture_method"),
        ));
    }
    let setup_future_usage = p.str("setup_future_usage");
    if let Some(s) = &setup_future_usage {
        if s != "off_session" && s != "on_session" {
            return Err(ApiError::invalid(
                "Invalid setup_future_usage: must be one of off_session or on_session",
                Some("setup_future_usage"),
            ));
        }
    }
    let customer = p.str("customer");
    if let Some(c) = &customer {
        customer_param(ctx, c, "customer")?;
    }
    let metadata = metadata_or_empty(p)?;
    let types = payment_method_types(p)?;
    let shipping = shipping(p)?;
    if let Some(m) = p.str("confirmation_method") {
        if m != "automatic" && m != "manual" {
            return Err(ApiError::invalid(
                "Invalid confirmation_method: must be one of automatic or manual",
                Some("confirmation_method"),
            ));
        }
    }
    let pm = match p.str("payment_method") {
        Some(id) => Some(check_pm_for_customer(ctx, &id, customer.as_deref())?),
        None => None,
    };
    if confirm && pm.is_none() {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the PaymentIntent with cus_, specify a payment method attached to this customer along with the customer ID.",
            Some("payment_method"),
        ));
    }
    // Validation is over: from here on the endpoint executes and its result is saved for idempotency.
    let pm_id = match pm {
        Some(id) => Some(
            payment_methods::resolve(ctx, &id, "payment_method")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
        None => None,
    };
    let mut pi = new_payment_intent(
        ctx,
        amount,
        &currency,
        customer,
        pm_id,
        metadata,
        p.str("description"),
        setup_future_usage,
        &capture_method,
    );
    let mut extra = (*pi).clone();
    if let Some(email) = p.str("receipt_email") {
        extra["receipt_email"] = json!(email);
    }
    if !types.is_empty() {
        extra["payment_method_types"] = json!(types);
    }
    extra["shipping"] = shipping;
    if let Some(m) = p.str("confirmation_method") {
        extra["confirmation_method"] = json!(m);
    }
    // Kept as given: Stripe appends it to the account's statement descriptor prefix.
    if let Some(suffix) = p.str("statement_descriptor_suffix") {
        extra["statement_descriptor_suffix"] = json!(suffix);
    }
    if extra != *pi {
        pi = ctx.put(extra);
    }
    if confirm {
        let error_on_requires_action = p.bool("error_on_requires_action")?.unwrap_or(false);
        return confirm_intent(
            ctx,
            pi,
            ConfirmOptions {
                off_session,
                authenticated: false,
                error_on_requires_action,
                mandate_accepted: p.get("mandate_data").is_some(),
            },
        );
    }
    Ok(pi)
}

/// Payment method types Stripe's PaymentIntents take for the methods the simulator models.
const KNOWN_TYPES: &[&str] = &["card", "sepa_debit"];

/// `payment_method_types[]`, each a type the simulator models.
fn payment_method_types(p: &Params) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for t in p.array("payment_method_types")? {
        let t = crate::params::as_text(&t).unwrap_or_default();
        if !KNOWN_TYPES.contains(&t.as_str()) {
            return Err(ApiError::invalid(
                format!(
                    "The payment method type \"{t}\" is invalid. The simulator supports: {}.",
                    KNOWN_TYPES.join(", ")
                ),
                Some("payment_method_types"),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

/// Stripe's `shipping` hash (`address`, `carrier`, `name`, `phone`, `tracking_number`), or null.
pub fn shipping(p: &Params) -> Result<Value, ApiError> {
    if p.get("shipping").is_none() {
        return Ok(Value::Null);
    }
    let s = p.obj("shipping")?;
    let name = s
        .req_str("name")
        .map_err(|_| ApiError::missing("shipping[name]"))?;
    let a = s.obj("address")?;
    let mut address = json!({"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null});
    for k in ["city", "country", "line1", "line2", "postal_code", "state"] {
        if let Some(v) = a.str(k) {
            address[k] = json!(v);
        }
    }
    if address["line1"].is_null() {
        return Err(ApiError::missing("shipping[address][line1]"));
    }
    Ok(json!({
        "address": address,
        "carrier": s.str("carrier"),
        "name": name,
        "phone": s.str("phone"),
        "tracking_number": s.str("tracking_number")
    }))
}

/// A PaymentMethod usable with `customer`: one of its own, an unattached one, or a test-card id.
fn check_pm_for_customer(ctx: &Ctx, id: &str, customer: Option<&str>) -> Result<String, ApiError> {
    if crate::cards::by_payment_method_id(id).is_some() {
        return Ok(id.to_owned());
    }
    match ctx.store.get(id) {
        Some(pm) if pm["object"] == "payment_method" => match (pm["customer"].as_str(), customer) {
            (Some(owner), Some(c)) if owner != c => Err(ApiError::invalid(
                format!("The customer does not have a payment method with the ID {id}. The payment method must be attached to the customer."),
                Some("payment_method"),
            )),
            (Some(_), None) => Err(ApiError::invalid(
                format!("The provided PaymentMethod {id} is attached to a Customer. To use it, you must also pass the Customer's ID in `customer`."),
                Some("payment_method"),
            )),
            _ => Ok(id.to_owned()),
        },
        _ => Err(ApiError::no_such_param("PaymentMethod", id, "payment_method")),
    }
}

fn outcome(ctx: &Ctx, pm_id: &str, behaviour: Behaviour, o: ConfirmOptions) -> Outcome {
    let set_up = ctx.store.set_up_for_off_session.contains(pm_id);
    let auth = |needed: bool| -> Outcome {
        if !needed || o.authenticated {
            Outcome::Succeeded
        } else if o.off_session || o.error_on_requires_action {
            Outcome::Declined(AUTHENTICATION_REQUIRED, false)
        } else {
            Outcome::RequiresAction
        }
    };
    match behaviour {
        Behaviour::Succeeds => Outcome::Succeeded,
        Behaviour::Declined(d) => Outcome::Declined(d, true),
        Behaviour::ChargeCustomerFail => Outcome::Declined(crate::cards::GENERIC_DECLINE, true),
        Behaviour::AuthenticationOnSetup => auth(!set_up),
        Behaviour::AuthenticationAlways(after) => {
            if o.off_session {
                // "regardless of how the card is set up": off-session always fails.
                Outcome::Declined(AUTHENTICATION_REQUIRED, false)
            } else {
                match (auth(true), after) {
                    (Outcome::Succeeded, Some(d)) => Outcome::Declined(d, true),
                    (outcome, _) => outcome,
                }
            }
        }
        Behaviour::AuthenticationOnSession => auth(!o.off_session),
    }
}

/// The charge a confirmation of `pi` with `pm` makes.
fn payment_charge<'a>(pi: &'a Value, pm: &'a Value, state: ChargeState) -> ChargeInput<'a> {
    ChargeInput {
        amount: pi["amount"].as_i64().unwrap_or(0),
        currency: pi["currency"].as_str().unwrap_or("usd"),
        customer: pi["customer"].as_str(),
        instrument: pm,
        payment_intent: pi["id"].as_str(),
        description: pi["description"].as_str().map(str::to_owned),
        metadata: pi["metadata"].clone(),
        source: None,
        shipping: pi.get("shipping").cloned().unwrap_or(Value::Null),
        state,
    }
}

/// Confirms a PaymentIntent that has a PaymentMethod: charges it, or records the failure and answers 402.
pub fn confirm_intent(ctx: &mut Ctx, pi: Obj, o: ConfirmOptions) -> Result<Obj, ApiError> {
    let Some(pm_id) = pi["payment_method"].as_str().map(str::to_owned) else {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            "You cannot confirm this PaymentIntent because it's missing a payment method. Update the PaymentIntent with a payment method and then confirm it again.",
            None,
        ));
    };
    let pm = ctx.fetch("payment_method", "PaymentMethod", &pm_id, "payment_method")?;
    let amount = pi["amount"].as_i64().unwrap_or(0);
    let currency = pi["currency"].as_str().unwrap_or("usd").to_owned();
    let customer = pi["customer"].as_str().map(str::to_owned);
    let pm_type = pm["type"].as_str().unwrap_or("card").to_owned();
    let allowed = pi["payment_method_types"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(pm_type.as_str())));
    if !allowed {
        return Err(ApiError::invalid_code(
            "payment_intent_incompatible_payment_method",
            format!("The PaymentMethod provided ({pm_type}) is not allowed for this PaymentIntent. Please attach a PaymentMethod of one of the following types: {}. Alternatively update the allowed payment_method_types for this PaymentIntent to include \"{pm_type}\".", pi["payment_method_types"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()),
            Some("payment_method"),
        ));
    }
    let outcome = if pm_type == "sepa_debit" {
        // Stripe: SEPA Direct Debit "supports the following currencies: eur" and needs a mandate the
        // customer accepted (`mandate_data`), unless the PaymentMethod was set up with one.
        if currency != "eur" {
            return Err(ApiError::invalid(
                format!("The currency provided ({currency}) is invalid. Payments with sepa_debit support the following currencies: eur."),
                Some("currency"),
            ));
        }
        if !o.mandate_accepted && !ctx.store.mandates.contains_key(&pm_id) {
            return Err(ApiError::invalid(
                "A mandate is required to confirm a PaymentIntent with a sepa_debit PaymentMethod: pass `mandate_data` with the customer's acceptance.",
                Some("mandate_data"),
            ));
        }
        if !ctx.store.mandates.contains_key(&pm_id) {
            let mandate = new_mandate(ctx, &pm_id, pi["setup_future_usage"].is_null());
            ctx.store.mandates.insert(pm_id.clone(), mandate);
        }
        Outcome::Processing
    } else {
        let card = payment_methods::card_of(&pm);
        outcome(ctx, &pm_id, crate::cards::behaviour_in(card, ctx.mode), o)
    };
    let mut new = (*pi).clone();
    match outcome {
        Outcome::Processing => {
            let charge =
                charges::record_charge(ctx, payment_charge(&pi, &pm, ChargeState::Pending), None);
            if !pi["setup_future_usage"].is_null() {
                if let Some(c) = &customer {
                    payment_methods::attach_to(ctx, &pm_id, c)?;
                }
                ctx.store.set_up_for_off_session.insert(pm_id.clone());
            }
            new["status"] = json!("processing");
            new["latest_charge"] = charge["id"].clone();
            new["last_payment_error"] = Value::Null;
            new["next_action"] = Value::Null;
            let new = ctx.put(new);
            let account = debits::by_fingerprint(pm["sepa_debit"]["fingerprint"].as_str());
            let settles = ctx.now + account.delay_secs;
            ctx.store
                .pending_debits
                .insert((settles, new["id"].as_str().unwrap_or_default().to_owned()));
            ctx.emit("payment_intent.processing", new.clone(), None);
            Ok(new)
        }
        Outcome::Succeeded => {
            let charge = charges::record_charge(
                ctx,
                payment_charge(
                    &pi,
                    &pm,
                    if pi["capture_method"] == "manual" {
                        ChargeState::Authorized
                    } else {
                        ChargeState::Captured
                    },
                ),
                None,
            );
            if !pi["setup_future_usage"].is_null() {
                if let Some(c) = &customer {
                    payment_methods::attach_to(ctx, &pm_id, c)?;
                }
                ctx.store.set_up_for_off_session.insert(pm_id.clone());
            }
            let manual = pi["capture_method"] == "manual";
            new["status"] = json!(if manual {
                "requires_capture"
            } else {
                "succeeded"
            });
            new["amount_received"] = json!(if manual { 0 } else { amount });
            new["amount_capturable"] = json!(if manual { amount } else { 0 });
            new["latest_charge"] = charge["id"].clone();
            new["last_payment_error"] = Value::Null;
            new["next_action"] = Value::Null;
            let new = ctx.put(new);
            ctx.emit(
                if manual {
                    "payment_intent.amount_capturable_updated"
                } else {
                    "payment_intent.succeeded"
                },
                new.clone(),
                None,
            );
            Ok(new)
        }
        Outcome::RequiresAction => {
            new["status"] = json!("requires_action");
            new["next_action"] = json!({
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": format!("{}/3ds/{}", ctx.env.public_url, pi["id"].as_str().unwrap_or_default()), "source": new_id("src_")}
            });
            let new = ctx.put(new);
            ctx.emit("payment_intent.requires_action", new.clone(), None);
            Ok(new)
        }
        Outcome::Declined(d, issuer) => {
            // An issuer decline leaves a failed charge; an authentication failure never reaches the issuer.
            let charge = issuer.then(|| {
                charges::record_charge(
                    ctx,
                    payment_charge(&pi, &pm, ChargeState::Captured),
                    Some(&d),
                )
            });
            let charge_id = charge
                .as_ref()
                .map(|c| c["id"].clone())
                .unwrap_or(Value::Null);
            let doc_url = format!(
                "https://stripe.com/docs/error-codes/{}",
                d.code.replace('_', "-")
            );
            let mut last_error = json!({
                "charge": charge_id, "code": d.code, "decline_code": d.decline_code, "doc_url": doc_url,
                "message": d.message, "payment_method": &*pm, "type": "card_error"
            });
            if let Some(param) = d.param {
                last_error["param"] = json!(param);
            }
            new["status"] = json!("requires_payment_method");
            new["payment_method"] = Value::Null;
            new["last_payment_error"] = last_error;
            new["next_action"] = Value::Null;
            if charge.is_some() {
                new["latest_charge"] = charge_id.clone();
            }
            let new = ctx.put(new);
            ctx.emit("payment_intent.payment_failed", new.clone(), None);
            let mut e = ApiError::card_error(d.code, d.message, d.param)
                .with("decline_code", json!(d.decline_code))
                .with("payment_intent", (*new).clone())
                .with("payment_method", (*pm).clone())
                .with(
                    "request_log_url",
                    json!(format!("{}/logs", ctx.env.public_url)),
                );
            if !charge_id.is_null() {
                e = e.with("charge", charge_id);
            }
            Err(e)
        }
    }
}

/// A mandate (`mandate_…`) the customer accepted for a bank-debit PaymentMethod; `single_use` when the
/// payment does not set the method up for later.
fn new_mandate(ctx: &mut Ctx, pm_id: &str, single_use: bool) -> String {
    let id = new_id("mandate_");
    let mandate = json!({
        "id": id,
        "object": "mandate",
        "customer_acceptance": {"accepted_at": ctx.now, "offline": {}, "type": "offline"},
        "livemode": ctx.livemode(),
        "multi_use": if single_use { Value::Null } else { json!({}) },
        "payment_method": pm_id,
        "payment_method_details": {"sepa_debit": {"reference": random_suffix("", 16).to_uppercase(), "url": format!("{}/mandates/{id}", ctx.env.public_url)}, "type": "sepa_debit"},
        "single_use": if single_use { json!({"amount": null, "currency": null}) } else { Value::Null },
        "status": "active",
        "type": if single_use { "single_use" } else { "multi_use" }
    });
    ctx.insert("mandate", mandate);
    id
}

/// `GET /v1/mandates/{id}`.
pub fn retrieve_mandate(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    ctx.fetch("mandate", "mandate", id, "mandate")
}

/// Settles every delayed debit whose time has come (run by the simulator's clock): the charge and the
/// PaymentIntent succeed or fail as the account's test IBAN says, and a Checkout Session paid with it
/// announces `checkout.session.async_payment_succeeded` or `…_failed` (docs: Checkout, "delayed
/// notification payment methods").
/// Returns how many debits settled.
pub fn settle_due(ctx: &mut Ctx) -> usize {
    let mut settled = 0;
    while let Some((at, id)) = ctx.store.pending_debits.first().cloned() {
        if at > ctx.now {
            break;
        }
        ctx.store.pending_debits.remove(&(at, id.clone()));
        settle(ctx, &id);
        settled += 1;
    }
    settled
}

fn settle(ctx: &mut Ctx, pi_id: &str) {
    let Ok(pi) = fetch(ctx, pi_id) else { return };
    if pi["status"] != "processing" {
        return;
    }
    let Some(charge) = pi["latest_charge"]
        .as_str()
        .and_then(|c| ctx.store.get_obj(c))
        .cloned()
    else {
        return;
    };
    let pm = charge["payment_method"]
        .as_str()
        .and_then(|p| ctx.store.get(p))
        .cloned()
        .unwrap_or(Value::Null);
    let account = debits::by_fingerprint(pm["sepa_debit"]["fingerprint"].as_str());
    let mut new_charge = (*charge).clone();
    let mut new_pi = (*pi).clone();
    let succeeded = match account.settlement {
        Settlement::Succeeds => {
            new_charge["status"] = json!("succeeded");
            new_charge["paid"] = json!(true);
            let c = ctx.put(new_charge);
            ctx.emit("charge.succeeded", c, None);
            new_pi["status"] = json!("succeeded");
            new_pi["amount_received"] = pi["amount"].clone();
            let p = ctx.put(new_pi);
            ctx.emit("payment_intent.succeeded", p, None);
            true
        }
        Settlement::Fails(code) => {
            let message = "The customer's bank account could not be debited.";
            new_charge["status"] = json!("failed");
            new_charge["failure_code"] = json!(code);
            new_charge["failure_message"] = json!(message);
            new_charge["amount_captured"] = json!(0);
            let c = ctx.put(new_charge);
            ctx.emit("charge.failed", c, None);
            new_pi["status"] = json!("requires_payment_method");
            new_pi["payment_method"] = Value::Null;
            new_pi["last_payment_error"] = json!({
                "charge": charge["id"], "code": code, "doc_url": format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")),
                "message": message, "payment_method": pm, "type": "card_error"
            });
            let p = ctx.put(new_pi);
            ctx.emit("payment_intent.payment_failed", p, None);
            false
        }
    };
    super::checkout::debit_settled(ctx, pi_id, succeeded);
}

/// `POST /v1/payment_intents/{id}/capture` — Stripe: captures a `requires_capture` PaymentIntent;
/// `amount_to_capture` defaults to the full `amount_capturable`, the rest is released.
pub fn capture(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "amount_to_capture",
        "metadata",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "final_capture",
        "application_fee_amount",
        "transfer_data",
    ])?;
    let old = fetch(ctx, id)?;
    if old["status"] != "requires_capture" {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!(
                "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
                old["status"].as_str().unwrap_or_default()
            ),
            None,
        ));
    }
    let capturable = old["amount_capturable"].as_i64().unwrap_or(0);
    let amount = p.int("amount_to_capture")?.unwrap_or(capturable);
    if amount < 1 || amount > capturable {
        return Err(ApiError::invalid(
            format!(
                "The amount to capture must be between 1 and the amount capturable ({capturable})."
            ),
            Some("amount_to_capture"),
        ));
    }
    if let Some(charge) = old["latest_charge"]
        .as_str()
        .and_then(|c| ctx.store.get_obj(c))
        .cloned()
    {
        let mut c = (*charge).clone();
        c["captured"] = json!(true);
        c["amount_captured"] = json!(amount);
        // The part not captured is released: Stripe shows it as refunded.
        c["amount_refunded"] = json!(capturable - amount);
        c["refunded"] = json!(false);
        let c = ctx.put(c);
        ctx.emit("charge.captured", c, None);
    }
    let mut new = (*old).clone();
    if let Some(m) = p.metadata()? {
        merge_metadata(&mut new, m);
    }
    new["status"] = json!("succeeded");
    new["amount_received"] = json!(amount);
    new["amount_capturable"] = json!(0);
    let new = ctx.put(new);
    ctx.emit("payment_intent.succeeded", new.clone(), None);
    Ok(new)
}

/// `GET /v1/payment_intents/{id}` (`client_secret` checked when given; a publishable key must give it).
pub fn retrieve(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    let pi = fetch(ctx, id)?;
    crate::publishable::check_client_secret(ctx, &pi, p)?;
    Ok(pi)
}

/// `POST /v1/payment_intents/{id}`: metadata, description, receipt_email, amount, payment_method.
pub fn update(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "amount",
        "currency",
        "customer",
        "description",
        "metadata",
        "payment_method",
        "receipt_email",
        "setup_future_usage",
        "shipping",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "payment_method_types",
        "payment_method_options",
        "transfer_group",
        "capture_method",
    ])?;
    let old = fetch(ctx, id)?;
    let status = old["status"].as_str().unwrap_or_default().to_owned();
    let changeable = [
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ]
    .contains(&status.as_str());
    let touches_payment = ["amount", "currency", "payment_method", "customer"]
        .iter()
        .any(|k| p.get(k).is_some());
    if touches_payment && !changeable {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!("This PaymentIntent's amount, currency, customer or payment_method could not be updated because it has a status of {status}."),
            None,
        ));
    }
    let mut new = (*old).clone();
    if let Some(m) = p.metadata()? {
        merge_metadata(&mut new, m);
    }
    for k in ["description", "receipt_email"] {
        if p.get(k).is_some() {
            new[k] = p.str(k).map_or(Value::Null, Value::String);
        }
    }
    if let Some(c) = p.str("currency") {
        new["currency"] = json!(currency::check_currency(&c, "currency")?);
    }
    if let Some(a) = p.int("amount")? {
        currency::check_charge_amount(a, new["currency"].as_str().unwrap_or("usd"), "amount")?;
        new["amount"] = json!(a);
    }
    if let Some(c) = p.str("customer") {
        customer_param(ctx, &c, "customer")?;
        new["customer"] = json!(c);
    }
    if let Some(pm) = p.str("payment_method") {
        let pm = check_pm_for_customer(ctx, &pm, new["customer"].as_str())?;
        new["payment_method"] = payment_methods::resolve(ctx, &pm, "payment_method")?["id"].clone();
        new["status"] = json!("requires_confirmation");
    }
    Ok(ctx.update(&old, new, None))
}

/// `POST /v1/payment_intents/{id}/confirm`.
pub fn confirm(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "payment_method",
        "off_session",
        "return_url",
        "error_on_requires_action",
        "mandate_data",
        "payment_method_options",
        "receipt_email",
        "setup_future_usage",
        "shipping",
        "use_stripe_sdk",
        "payment_method_data",
        "capture_method",
        "radar_options",
        "confirmation_token",
        "payment_method_types",
        "client_secret",
    ])?;
    let mut pi = (*fetch(ctx, id)?).clone();
    crate::publishable::check_client_secret(ctx, &pi, p)?;
    let status = pi["status"].as_str().unwrap_or_default().to_owned();
    if ![
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ]
    .contains(&status.as_str())
    {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!("You cannot confirm this PaymentIntent because it has a status of {status}."),
            None,
        ));
    }
    let off_session = match p.get("off_session") {
        Some(Value::String(s)) if s == "one_off" || s == "recurring" => true,
        _ => p.bool("off_session")?.unwrap_or(false),
    };
    if let Some(pm) = p.str("payment_method") {
        let pm = check_pm_for_customer(ctx, &pm, pi["customer"].as_str())?;
        pi["payment_method"] = payment_methods::resolve(ctx, &pm, "payment_method")?["id"].clone();
    } else if p.get("payment_method_data").is_some() {
        // Stripe.js's Payment Element confirms with the details the customer typed: the
        // PaymentMethod is created from `payment_method_data` (docs: confirm a PaymentIntent,
        // `payment_method_data`).
        let pm = payment_methods::create(ctx, &p.obj("payment_method_data")?)?;
        pi["payment_method"] = pm["id"].clone();
    }
    if let Some(s) = p.str("setup_future_usage") {
        pi["setup_future_usage"] = json!(s);
    }
    let error_on_requires_action = p.bool("error_on_requires_action")?.unwrap_or(false);
    confirm_intent(
        ctx,
        Arc::new(pi),
        ConfirmOptions {
            off_session,
            authenticated: false,
            error_on_requires_action,
            mandate_accepted: p.get("mandate_data").is_some(),
        },
    )
}

/// The customer's answer on the 3-D Secure challenge page of a PaymentIntent in `requires_action`
/// (the page Stripe.js opens for `next_action.use_stripe_sdk`; docs: 3D Secure authentication,
/// testing: "complete" or "fail" the authentication). `client_secret` must be the intent's.
///
/// Passed: the confirmation goes on as authenticated — it succeeds, or the issuer declines after
/// authentication for the cards that do that (the decline is recorded on the intent). Failed:
/// Stripe's `payment_intent_authentication_failure` — the intent is back to
/// `requires_payment_method` with that `last_payment_error`, `payment_intent.payment_failed`.
pub fn authenticate(
    ctx: &mut Ctx,
    id: &str,
    client_secret: Option<&str>,
    passed: bool,
) -> Result<Obj, ApiError> {
    let pi = fetch(ctx, id)?;
    if client_secret.is_none() || pi["client_secret"].as_str() != client_secret {
        return Err(ApiError::invalid(
            "The client_secret provided does not match the client_secret associated with the PaymentIntent.",
            Some("client_secret"),
        ));
    }
    if pi["status"] != "requires_action" {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!(
                "This PaymentIntent is not awaiting authentication: its status is {}.",
                pi["status"].as_str().unwrap_or_default()
            ),
            None,
        ));
    }
    if passed {
        let options = ConfirmOptions {
            authenticated: true,
            ..ConfirmOptions::default()
        };
        return match confirm_intent(ctx, pi, options) {
            Ok(pi) => Ok(pi),
            // A decline after authentication is recorded on the intent, which tells the browser.
            Err(e) if e.status == http::StatusCode::PAYMENT_REQUIRED => fetch(ctx, id),
            Err(e) => Err(e),
        };
    }
    let pm = pi["payment_method"]
        .as_str()
        .and_then(|p| ctx.store.get(p))
        .cloned()
        .unwrap_or(Value::Null);
    let mut new = (*pi).clone();
    new["status"] = json!("requires_payment_method");
    new["payment_method"] = Value::Null;
    new["next_action"] = Value::Null;
    new["last_payment_error"] = json!({
        "code": "payment_intent_authentication_failure",
        "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
        "message": "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
        "payment_method": pm,
        "type": "invalid_request_error"
    });
    let new = ctx.put(new);
    ctx.emit("payment_intent.payment_failed", new.clone(), None);
    Ok(new)
}

/// `POST /v1/payment_intents/{id}/cancel`.
pub fn cancel(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&["cancellation_reason"])?;
    let old = fetch(ctx, id)?;
    let status = old["status"].as_str().unwrap_or_default().to_owned();
    // Stripe: "You can cancel a PaymentIntent object when it's in one of these statuses:
    // requires_payment_method, requires_capture, requires_confirmation, requires_action or, in rare cases,
    // processing" (docs: cancel a PaymentIntent).
    let cancelable = [
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
        "processing",
    ];
    if !cancelable.contains(&status.as_str()) {
        return Err(ApiError::invalid_code(
            "payment_intent_unexpected_state",
            format!("You cannot cancel this PaymentIntent because it has a status of {status}. Only a PaymentIntent with one of the following statuses may be canceled: {}.", cancelable.join(", ")),
            None,
        ));
    }
    let reason = p.str("cancellation_reason");
    if let Some(r) = &reason {
        if ![
            "duplicate",
            "fraudulent",
            "requested_by_customer",
            "abandoned",
        ]
        .contains(&r.as_str())
        {
            return Err(ApiError::invalid("Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer, or abandoned", Some("cancellation_reason")));
        }
    }
    let mut new = (*old).clone();
    new["status"] = json!("canceled");
    new["canceled_at"] = json!(ctx.now);
    new["cancellation_reason"] = json!(reason);
    new["next_action"] = Value::Null;
    let new = ctx.put(new);
    ctx.emit("payment_intent.canceled", new.clone(), None);
    Ok(new)
}

/// `GET /v1/payment_intents?customer=…`.
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "customer",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let customer = p.str("customer");
    let created = super::events::created_filter(p)?;
    list::page(
        ctx.store,
        "payment_intent",
        "payment_intent",
        "/v1/payment_intents",
        p,
        |pi| {
            customer
                .as_deref()
                .is_none_or(|c| pi["customer"].as_str() == Some(c))
                && created.matches(pi)
        },
    )
}
