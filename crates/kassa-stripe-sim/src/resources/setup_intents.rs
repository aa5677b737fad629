//! SetupIntents: create, retrieve, confirm (with the test cards' setup outcomes), cancel, list.

use serde_json::{json, Value};

use super::{customer_param, metadata_or_empty, payment_methods};
use crate::cards::Behaviour;
use crate::error::ApiError;
use crate::list;
use crate::params::Params;
use crate::state::{new_id, random_suffix, Ctx, Obj};

/// Builds and stores a SetupIntent in `requires_payment_method` (or `requires_confirmation` with a PM).
pub fn new_setup_intent(
    ctx: &mut Ctx,
    customer: Option<String>,
    pm: Option<String>,
    metadata: Value,
    usage: &str,
) -> Obj {
    let id = new_id("seti_");
    let status = if pm.is_some() {
        "requires_confirmation"
    } else {
        "requires_payment_method"
    };
    let si = json!({
        "id": id,
        "object": "setup_intent",
        "application": null,
        "automatic_payment_methods": null,
        "cancellation_reason": null,
        "client_secret": format!("{id}_secret_{}", random_suffix("", 32)),
        "created": ctx.now,
        "customer": customer,
        "description": null,
        "flow_directions": null,
        "last_setup_error": null,
        "latest_attempt": null,
        "livemode": ctx.livemode(),
        "mandate": null,
        "metadata": metadata,
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": pm,
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"mandate_options": null, "network": null, "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "single_use_mandate": null,
        "status": status,
        "usage": usage
    });
    ctx.create("setup_intent", si, "setup_intent.created")
}

/// `POST /v1/setup_intents`.
pub fn create(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "customer",
        "payment_method",
        "confirm",
        "usage",
        "metadata",
        "description",
        "payment_method_types",
        "automatic_payment_methods",
        "return_url",
        "payment_method_options",
        "on_behalf_of",
        "flow_directions",
        "mandate_data",
        "single_use",
        "attach_to_self",
        "use_stripe_sdk",
        "payment_method_data",
        "confirmation_token",
    ])?;
    let customer = p.str("customer");
    if let Some(c) = &customer {
        customer_param(ctx, c, "customer")?;
    }
    let usage = p.str("usage").unwrap_or_else(|| "off_session".to_owned());
    if usage != "off_session" && usage != "on_session" {
        return Err(ApiError::invalid(
            "Invalid usage: must be one of off_session or on_session",
            Some("usage"),
        ));
    }
    let confirm = p.bool("confirm")?.unwrap_or(false);
    let metadata = metadata_or_empty(p)?;
    let pm = match p.str("payment_method") {
        Some(id) => Some(
            payment_methods::resolve(ctx, &id, "payment_method")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
        None => None,
    };
    let mut si = new_setup_intent(ctx, customer, pm, metadata, &usage);
    let types: Vec<Value> = p.array("payment_method_types")?;
    if !types.is_empty() || p.str("description").is_some() {
        let mut extra = (*si).clone();
        if !types.is_empty() {
            extra["payment_method_types"] = Value::Array(types);
        }
        extra["description"] = json!(p.str("description"));
        si = ctx.put(extra);
    }
    if confirm {
        return confirm_intent(ctx, (*si).clone(), false);
    }
    Ok(si)
}

/// Confirms a SetupIntent with its PaymentMethod. `authenticated`: the customer passed 3D Secure (hosted page).
///
/// Stripe: a successful setup attaches the PaymentMethod to the SetupIntent's customer; a declining card
/// leaves it `requires_payment_method` with `last_setup_error` and answers 402 (docs: SetupIntents, testing).
pub fn confirm_intent(ctx: &mut Ctx, si: Value, authenticated: bool) -> Result<Obj, ApiError> {
    let Some(pm_id) = si["payment_method"].as_str().map(str::to_owned) else {
        return Err(ApiError::invalid_code(
            "setup_intent_unexpected_state",
            "You cannot confirm this SetupIntent because it's missing a payment method. Update the SetupIntent with a payment method and then confirm it again.",
            None,
        ));
    };
    let pm = ctx.fetch("payment_method", "PaymentMethod", &pm_id, "payment_method")?;
    let behaviour = if pm["type"] == "card" {
        crate::cards::behaviour_in(payment_methods::card_of(&pm), ctx.mode)
    } else {
        // Stripe: setting up a SEPA Direct Debit account succeeds at once; its mandate is what a
        // later off-session debit relies on.
        if !ctx.store.mandates.contains_key(&pm_id) {
            let mandate = new_id("mandate_");
            ctx.insert(
                "mandate",
                json!({"id": mandate, "object": "mandate", "customer_acceptance": {"accepted_at": ctx.now, "offline": {}, "type": "offline"},
                       "livemode": ctx.livemode(), "multi_use": {}, "payment_method": pm_id, "payment_method_details": {"type": pm["type"]},
                       "single_use": null, "status": "active", "type": "multi_use"}),
            );
            ctx.store.mandates.insert(pm_id.clone(), mandate.clone());
            let mut with_mandate = si.clone();
            with_mandate["mandate"] = json!(mandate);
            return confirm_succeeded(ctx, with_mandate, &pm_id);
        }
        Behaviour::Succeeds
    };
    let mut new = si.clone();
    match behaviour {
        Behaviour::Declined(d) => {
            let error = json!({
                "code": d.code, "decline_code": d.decline_code, "doc_url": format!("https://stripe.com/docs/error-codes/{}", d.code.replace('_', "-")),
                "message": d.message, "payment_method": &*pm, "type": "card_error"
            });
            new["status"] = json!("requires_payment_method");
            new["payment_method"] = Value::Null;
            new["last_setup_error"] = error;
            let new = ctx.put(new);
            ctx.emit("setup_intent.setup_failed", new.clone(), None);
            Err(payment_methods::setup_decline(&d).with("setup_intent", (*new).clone()))
        }
        // Stripe: these cards ask for authentication when set up on-session.
        Behaviour::AuthenticationOnSetup
        | Behaviour::AuthenticationAlways(_)
        | Behaviour::AuthenticationOnSession
            if !authenticated =>
        {
            new["status"] = json!("requires_action");
            new["next_action"] = json!({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": format!("{}/3ds/{}", ctx.env.public_url, new["id"].as_str().unwrap_or_default())}});
            let new = ctx.put(new);
            ctx.emit("setup_intent.requires_action", new.clone(), None);
            Ok(new)
        }
        _ => confirm_succeeded(ctx, new, &pm_id),
    }
}

/// A setup that went through: the PaymentMethod is attached to the SetupIntent's customer and usable
/// off-session; `setup_intent.succeeded`.
fn confirm_succeeded(ctx: &mut Ctx, mut new: Value, pm_id: &str) -> Result<Obj, ApiError> {
    if let Some(customer) = new["customer"].as_str().map(str::to_owned) {
        payment_methods::attach_to(ctx, pm_id, &customer)?;
    }
    ctx.store.set_up_for_off_session.insert(pm_id.to_owned());
    new["status"] = json!("succeeded");
    new["next_action"] = Value::Null;
    new["last_setup_error"] = Value::Null;
    let new = ctx.put(new);
    ctx.emit("setup_intent.succeeded", new.clone(), None);
    Ok(new)
}

/// `GET /v1/setup_intents/{id}` (`client_secret` checked when given; a publishable key must give it).
pub fn retrieve(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    let si = ctx.fetch("setup_intent", "setupintent", id, "intent")?;
    crate::publishable::check_client_secret(ctx, &si, p)?;
    Ok(si)
}

/// `POST /v1/setup_intents/{id}/confirm`.
pub fn confirm(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "payment_method",
        "return_url",
        "mandate_data",
        "payment_method_options",
        "use_stripe_sdk",
        "payment_method_data",
        "confirmation_token",
        "client_secret",
    ])?;
    let mut si = (*ctx.fetch("setup_intent", "setupintent", id, "intent")?).clone();
    crate::publishable::check_client_secret(ctx, &si, p)?;
    let status = si["status"].as_str().unwrap_or_default().to_owned();
    if ![
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ]
    .contains(&status.as_str())
    {
        return Err(ApiError::invalid_code(
            "setup_intent_unexpected_state",
            format!("You cannot confirm this SetupIntent because it has a status of {status}."),
            None,
        ));
    }
    if let Some(pm) = p.str("payment_method") {
        let pm = payment_methods::resolve(ctx, &pm, "payment_method")?;
        si["payment_method"] = pm["id"].clone();
    } else if p.get("payment_method_data").is_some() {
        // As for PaymentIntents: Stripe.js's `confirmSetup` sends the typed card as `payment_method_data`.
        let pm = payment_methods::create(ctx, &p.obj("payment_method_data")?)?;
        si["payment_method"] = pm["id"].clone();
    }
    confirm_intent(ctx, si, false)
}

/// The customer's answer on the 3-D Secure challenge page of a SetupIntent in `requires_action`, as
/// [`super::payment_intents::authenticate`]: passed, the setup succeeds (the card is attached to the
/// intent's customer); failed, Stripe's `setup_intent_authentication_failure`, the intent back to
/// `requires_payment_method`, `setup_intent.setup_failed`.
pub fn authenticate(
    ctx: &mut Ctx,
    id: &str,
    client_secret: Option<&str>,
    passed: bool,
) -> Result<Obj, ApiError> {
    let si = ctx.fetch("setup_intent", "setupintent", id, "intent")?;
    if client_secret.is_none() || si["client_secret"].as_str() != client_secret {
        return Err(ApiError::invalid(
            "The client_secret provided does not match the client_secret associated with the SetupIntent.",
            Some("client_secret"),
        ));
    }
    if si["status"] != "requires_action" {
        return Err(ApiError::invalid_code(
            "setup_intent_unexpected_state",
            format!(
                "This SetupIntent is not awaiting authentication: its status is {}.",
                si["status"].as_str().unwrap_or_default()
            ),
            None,
        ));
    }
    if passed {
        return match confirm_intent(ctx, (*si).clone(), true) {
            Ok(si) => Ok(si),
            Err(e) if e.status == http::StatusCode::PAYMENT_REQUIRED => {
                ctx.fetch("setup_intent", "setupintent", id, "intent")
            }
            Err(e) => Err(e),
        };
    }
    let pm = si["payment_method"]
        .as_str()
        .and_then(|p| ctx.store.get(p))
        .cloned()
        .unwrap_or(Value::Null);
    let mut new = (*si).clone();
    new["status"] = json!("requires_payment_method");
    new["payment_method"] = Value::Null;
    new["next_action"] = Value::Null;
    new["last_setup_error"] = json!({
        "code": "setup_intent_authentication_failure",
        "doc_url": "https://stripe.com/docs/error-codes/setup-intent-authentication-failure",
        "message": "The latest attempt to set up the payment method has failed because authentication failed.",
        "payment_method": pm,
        "type": "invalid_request_error"
    });
    let new = ctx.put(new);
    ctx.emit("setup_intent.setup_failed", new.clone(), None);
    Ok(new)
}

/// `POST /v1/setup_intents/{id}/cancel`.
pub fn cancel(ctx: &mut Ctx, id: &str, p: &Params) -> Result<Obj, ApiError> {
    p.only(&["cancellation_reason"])?;
    let old = ctx.fetch("setup_intent", "setupintent", id, "intent")?;
    let status = old["status"].as_str().unwrap_or_default().to_owned();
    if status == "succeeded" || status == "canceled" {
        return Err(ApiError::invalid_code(
            "setup_intent_unexpected_state",
            format!("You cannot cancel this SetupIntent because it has a status of {status}."),
            None,
        ));
    }
    let mut new = (*old).clone();
    new["status"] = json!("canceled");
    new["cancellation_reason"] = json!(p.str("cancellation_reason"));
    Ok(ctx.update(&old, new, Some("setup_intent.canceled")))
}

/// `GET /v1/setup_intents?customer=…`.
pub fn list(ctx: &mut Ctx, p: &Params) -> Result<Obj, ApiError> {
    p.only(&[
        "customer",
        "payment_method",
        "created",
        "limit",
        "starting_after",
        "ending_before",
        "attach_to_self",
    ])?;
    let customer = p.str("customer");
    let pm = p.str("payment_method");
    list::page(
        ctx.store,
        "setup_intent",
        "setupintent",
        "/v1/setup_intents",
        p,
        |si| {
            customer
                .as_deref()
                .is_none_or(|c| si["customer"].as_str() == Some(c))
                && pm
                    .as_deref()
                    .is_none_or(|m| si["payment_method"].as_str() == Some(m))
        },
    )
}
