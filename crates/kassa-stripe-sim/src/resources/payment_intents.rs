//! PaymentIntents: create (with `confirm`/`off_session`), retrieve, update, confirm, cancel, list.
//!
//! Stripe (docs: off-session payments, testing): a declined confirmation answers HTTP 402 with a
//! `card_error` whose `payment_intent` is the PaymentIntent, now `requires_payment_method` with
//! `last_payment_error`; an off-session payment that needs authentication fails with
//! `authentication_required`; on-session it becomes `requires_action`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::charges::{self, ChargeInput};
use super::{customer_param, metadata_or_empty, payment_methods};
use crate::cards::{Behaviour, Decline, AUTHENTICATION_REQUIRED};
use crate::currency;
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
        "livemode": false,
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
    if let Some(email) = p.str("receipt_email") {
        let mut with_email = (*pi).clone();
        with_email["receipt_email"] = json!(email);
        pi = ctx.put(with_email);
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
            },
        );
    }
    Ok(pi)
}

/// A PaymentMethod usable with `customer`: one of its own, an unattached one, or a test-card id.
fn check_pm_for_customer(ctx: &Ctx, id: &str, customer: Option<&str>) -> Result<String, ApiError> {
    if crate::cards::lookup(id).is_some_and(|c| c.pm == id) {
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
        Behaviour::AuthenticationAlways => {
            if o.off_session {
                // "regardless of how the card is set up": off-session always fails.
                Outcome::Declined(AUTHENTICATION_REQUIRED, false)
            } else {
                auth(true)
            }
        }
        Behaviour::AuthenticationOnSession => auth(!o.off_session),
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
    let card = payment_methods::card_of(&pm);
    let amount = pi["amount"].as_i64().unwrap_or(0);
    let currency = pi["currency"].as_str().unwrap_or("usd").to_owned();
    let customer = pi["customer"].as_str().map(str::to_owned);
    let mut new = (*pi).clone();
    match outcome(ctx, &pm_id, card.behaviour, o) {
        Outcome::Succeeded => {
            let charge = charges::record_charge(
                ctx,
                ChargeInput {
                    amount,
                    currency: &currency,
                    customer: customer.as_deref(),
                    instrument: &pm,
                    payment_intent: pi["id"].as_str(),
                    description: pi["description"].as_str().map(str::to_owned),
                    metadata: pi["metadata"].clone(),
                    source: None,
                },
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
                    ChargeInput {
                        amount,
                        currency: &currency,
                        customer: customer.as_deref(),
                        instrument: &pm,
                        payment_intent: pi["id"].as_str(),
                        description: pi["description"].as_str().map(str::to_owned),
                        metadata: pi["metadata"].clone(),
                        source: None,
                    },
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

/// `GET /v1/payment_intents/{id}`.
pub fn retrieve(ctx: &mut Ctx, id: &str) -> Result<Obj, ApiError> {
    fetch(ctx, id)
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
    ])?;
    let mut pi = (*fetch(ctx, id)?).clone();
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
        },
    )
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
