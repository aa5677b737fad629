//! Checkout and payment endpoints for merchants' own pages and back-office tools (Bearer
//! `KASSA_ADMIN_TOKEN`):
//!
//! - `POST /api/checkout-sessions`: a Checkout Session from records (name, unit amount, quantity,
//!   optional product code) → `{id, url, expires_at}` (kassa-core's [`kassa_core::checkout`]).
//! - `POST /api/payment-intents`: a PaymentIntent for the merchant's own payment form →
//!   `{id, client_secret, publishable_key, livemode}`, the publishable key of the
//!   PaymentIntent's own mode.
//!
//! Each body takes an optional `"livemode": true|false` (absent: the default mode); a mode with
//! no key is 400 `mode_not_configured`, and a customer Kassa holds in the other mode is 400
//! `mode_mismatch`, both before anything is sent to Stripe. The confirmation names the
//! PaymentIntent's mode the same way.
//! - `POST /api/payment-intents/{id}/confirmation`: the merchant page says it was paid; Kassa reads
//!   Stripe's state and records the payment once, through the same code as the webhooks
//!   ([`kassa_core::fulfil`]), so whichever path arrives first acts and the others find it done.
//!   Besides the admin token, the PaymentIntent's own `client_secret` (`{"client_secret": …}`)
//!   admits the caller — the customer's browser that just paid — rate-limited per client IP.

use crate::auth::check_bearer;
use crate::error::ApiError;
use crate::{idempotency, page_permit, ApiState};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kassa_core::checkout::{
    create_payment_intent, create_session, plan_checkout, CheckoutRequest, PaymentIntentRequest,
};
use kassa_core::customers::check_customer_mode;
use kassa_core::fulfil::{MailOptions, PageOutcome};
use kassa_core::widgets::check_client_secret;
use kassa_stripe::money::format_amount;
use kassa_stripe::objects::CheckoutMode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tracing::{info, Instrument};

/// The API routes (the merchant pages are in [`crate::pages`]).
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/checkout-sessions", post(create_checkout_session))
        .route("/api/payment-intents", post(payment_intent))
}

/// The payment confirmation, mounted with or without an admin token: its `client_secret`
/// admits the browser that paid.
pub fn confirmation_router() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/payment-intents/{id}/confirmation",
            post(confirm_payment_intent),
        )
        .layer(axum::middleware::map_response(crate::widgets::any_origin))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::from_json_rejection(&e))
}

async fn create_checkout_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CheckoutRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A session in payment mode is paid by the customer: a retry without the caller's key
    // would make a second payable session.
    let key = idempotency::required(&headers, state.installation(), "checkout")?;
    let mut request = json_body(body)?;
    if request.currency.is_none() {
        request.currency = Some(state.settings.default_currency.code().to_owned());
    }
    let plan = plan_checkout(&request)?;
    let (mode, stripe) = state.stripe_for(request.livemode)?;
    if let Some(customer) = request.customer.as_deref().filter(|c| !c.trim().is_empty()) {
        check_customer_mode(&state.store, customer, mode, "customer")
            .await
            .map_err(|e| ApiError::from_store(&e))??;
    }
    let session = create_session(
        stripe,
        &state.store,
        state.installation(),
        &state.settings.public_url,
        &plan,
        &request,
        &key,
    )
    .instrument(tracing::info_span!("api_checkout_session"))
    .await?;
    info!(checkout_session = %session.id, total = %format_amount(plan.total, &plan.currency), "checkout session created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": session.id,
            "url": session.url,
            "expires_at": session.expires_at,
            "mode": match plan.mode { CheckoutMode::Setup => "setup", _ => "payment" },
            "amount_total": session.amount_total,
            "currency": plan.currency.code(),
            "livemode": mode.is_live(),
        })),
    ))
}

async fn payment_intent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<PaymentIntentRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A PaymentIntent is what the customer pays: a retry without the caller's key would make a
    // second one.
    let key = idempotency::required(&headers, state.installation(), "payment_intent")?;
    let mut request = json_body(body)?;
    if request.currency.is_none() {
        request.currency = Some(state.settings.default_currency.code().to_owned());
    }
    let (mode, stripe) = state.stripe_for(request.livemode)?;
    if let Some(customer) = request.customer.as_deref().filter(|c| !c.trim().is_empty()) {
        check_customer_mode(&state.store, customer, mode, "customer")
            .await
            .map_err(|e| ApiError::from_store(&e))??;
    }
    let intent = create_payment_intent(stripe, &request, &key).await?;
    info!(payment_intent = %intent.id, amount = intent.amount, currency = %intent.currency, %mode, "payment intent created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": intent.id,
            "client_secret": intent.client_secret,
            // The form confirms with Stripe.js under the key of the PaymentIntent's own mode:
            // a PaymentIntent is invisible to the other mode's keys.
            "publishable_key": state.publishable_keys().get(mode).map(str::to_owned),
            "livemode": mode.is_live(),
            "amount": intent.amount,
            "currency": intent.currency,
            "status": intent.status,
        })),
    ))
}

/// The confirmation's optional body: the PaymentIntent's `client_secret` (a browser's
/// authority) and what becomes of the payment's e-mails when this call records the payment;
/// empty or `{}` keeps Kassa's defaults. Any other field is refused by name.
fn confirmation_body(body: &[u8]) -> Result<(Option<String>, Option<bool>, MailOptions), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None, MailOptions::default()));
    }
    let invalid = |e: serde_json::Error| {
        ApiError::bad_request("invalid_json", format!("the confirmation body: {e}"))
    };
    let mut fields: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(invalid)?;
    let client_secret = match fields.remove("client_secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(secret)) => Some(secret).filter(|s| !s.is_empty()),
        Some(_) => {
            return Err(ApiError::from(kassa_core::fields::field_error(
                "client_secret",
                "must be a string",
            )))
        }
    };
    let livemode = match fields.remove("livemode") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(live)) => Some(live),
        Some(_) => {
            return Err(ApiError::from(kassa_core::fields::field_error(
                "livemode",
                "must be true or false",
            )))
        }
    };
    let options: MailOptions = serde_json::from_value(Value::Object(fields)).map_err(invalid)?;
    if let Some(address) = &options.notify_email {
        kassa_core::fields::email(address, "notify_email")?;
    }
    if let Some(name) = &options.mail_connection {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ApiError::from(kassa_core::fields::field_error(
                "mail_connection",
                "the name of a KASSA_SMTP_CONNECTIONS connection (letters, digits, - and _)",
            )));
        }
    }
    Ok((client_secret, livemode, options))
}

async fn confirm_payment_intent(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let admin = check_bearer(&state.admin_token(), &headers).is_ok();
    let (client_secret, livemode, mail) = confirmation_body(&body)?;
    let client_secret = if admin {
        None
    } else {
        state
            .public_limits
            .check_ip(crate::widgets::customer_ip(&state, peer, &headers))?;
        if client_secret.is_none() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid Bearer KASSA_ADMIN_TOKEN or the PaymentIntent's client_secret is required",
            ));
        }
        // Where the merchant's mail goes is the merchant's choice: a browser holding only the
        // client secret may confirm, not redirect or silence the e-mails.
        if !mail.is_default() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_token_required",
                "notify_email, send_notification, email_customer and mail_connection need the admin token",
            ));
        }
        client_secret
    };
    // No Idempotency-Key here: this route sends Stripe nothing (it reads the PaymentIntent) and
    // records a payment once by its PaymentIntent id, whoever asks how often.
    if !id.starts_with("pi_") || id.len() > 255 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{id:?} is not a PaymentIntent id"),
        ));
    }
    // It holds a database connection while it reads Stripe, like the success page: one permit
    // of the same bound, so the pool is never exhausted by confirmations.
    let Some(_permit) = page_permit(&state) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many payment confirmations and page requests at once; try again in a moment",
        ));
    };
    let (mode, stripe) = state.stripe_for(livemode)?;
    let span = tracing::info_span!("payment_confirmation", payment_intent = %id, %mode, by_client_secret = client_secret.is_some());
    if let Some(secret) = &client_secret {
        check_client_secret(stripe, &id, secret)
            .instrument(span.clone())
            .await?;
    }
    let outcome = state
        .fulfilment
        .payment_intent_with(mode, &id, &mail)
        .instrument(span)
        .await
        .map_err(|e| ApiError::from_fulfil(&e))?;
    Ok(Json(match outcome {
        PageOutcome::Paid {
            payment_intent_id,
            amount,
            currency,
            first,
        } => json!({
            "payment_intent": payment_intent_id,
            "status": "succeeded",
            "recorded": true,
            "recorded_now": first,
            // The e-mail options take effect only in the call that records the payment.
            "mail_options_applied": first && !mail.is_default(),
            "amount": amount,
            "currency": currency,
        }),
        PageOutcome::NotPaid(status)
        | PageOutcome::CardSaved {
            customer_id: status,
        } => json!({
            "payment_intent": id,
            "status": status,
            "recorded": false,
            "recorded_now": false,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_core::checkout::CheckoutPlan;

    /// The plan as this API answers a refusal.
    fn plan_checkout(request: &CheckoutRequest) -> Result<CheckoutPlan, ApiError> {
        kassa_core::checkout::plan_checkout(request).map_err(ApiError::from)
    }

    fn request(records: Value) -> CheckoutRequest {
        CheckoutRequest {
            records: serde_json::from_value(records).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_records_are_refused_with_their_own_code() {
        let e = plan_checkout(&request(json!([]))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "records_empty");
        let e = plan_checkout(&CheckoutRequest::default()).unwrap_err();
        assert_eq!(e.code, "records_empty");
    }

    #[test]
    fn a_bad_record_is_named_by_index_and_field() {
        let e = plan_checkout(&request(json!([
            {"name": "Tea", "unit_amount": 500, "quantity": 1},
            {"name": "Cake", "unit_amount": "4.50", "quantity": 1}
        ])))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[1].unit_amount"));
        let e = plan_checkout(&request(json!([{"unit_amount": 500}]))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].name"));
        let e = plan_checkout(&request(
            json!([{"name": "x", "unit_amount": 500, "quantity": 0}]),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].quantity"));
        let e = plan_checkout(&request(
            json!([{"name": "x", "unit_amount": 500, "product_code": "a' OR 'b"}]),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].product_code"));
    }

    #[test]
    fn jpy_is_zero_decimal_and_three_decimal_currencies_step_by_ten() {
        let mut r = request(json!([{"name": "Tea", "unit_amount": 500, "quantity": 3}]));
        r.currency = Some("JPY".into());
        let plan = plan_checkout(&r).unwrap();
        assert_eq!(plan.total, 1500, "¥1,500: never multiplied by 100");
        assert_eq!(plan.currency.code(), "jpy");
        let mut r = request(json!([{"name": "Tea", "unit_amount": 1005}]));
        r.currency = Some("kwd".into());
        let e = plan_checkout(&r).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].unit_amount"));
        r.records = serde_json::from_value(json!([{"name": "Tea", "unit_amount": 1010}])).unwrap();
        assert_eq!(plan_checkout(&r).unwrap().total, 1010);
    }

    #[test]
    fn unknown_currency_and_a_total_below_the_minimum_are_refused() {
        let mut r = request(json!([{"name": "Tea", "unit_amount": 500}]));
        r.currency = Some("xyz".into());
        assert_eq!(
            plan_checkout(&r).unwrap_err().field.as_deref(),
            Some("currency")
        );
        let r = request(json!([{"name": "Gum", "unit_amount": 10}]));
        assert_eq!(
            plan_checkout(&r).unwrap_err().field.as_deref(),
            Some("records")
        );
    }

    #[test]
    fn setup_mode_takes_no_records() {
        let mut r = request(json!([]));
        r.mode = Some("setup".into());
        assert_eq!(plan_checkout(&r).unwrap().mode, CheckoutMode::Setup);
        let mut r = request(json!([{"name": "Tea", "unit_amount": 500}]));
        r.mode = Some("setup".into());
        assert!(plan_checkout(&r).is_err());
    }
}
