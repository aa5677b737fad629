//! The back-office API (Bearer `KASSA_ADMIN_TOKEN`): charges of saved cards as records first.
//!
//! `POST /api/charges` validates the request (each error names its field), records the charge
//! and queues its first attempt in one transaction (the outbox), and answers 202; the same
//! `reference` again answers 200 with the existing charge and creates nothing.
//! `GET /api/charges/{id}` and `GET /api/charges?status=…&after=…&limit=…` read them back.
//! Unlike the webhook path, these routes read and write the database; they never call Stripe.

use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_store::{customers, ChargeRecord, ChargeStatus, JobRoute, NewCharge, Store, StoreError};
use kassa_stripe::money::{format_amount, validate_amount, Currency};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// What the admin routes share.
#[derive(Clone)]
pub struct AdminState {
    store: Store,
    token: Arc<SecretString>,
    route: JobRoute,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Admin routes over `store`, guarded by `token`, queueing charge jobs on `route`.
    pub fn new(store: Store, token: SecretString, route: JobRoute) -> Self {
        Self {
            store,
            token: Arc::new(token),
            route,
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/charges", post(create_charge).get(list_charges))
        .route("/api/charges/{id}", get(get_charge))
        .with_state(state)
}

/// `POST /api/charges`, as JSON.
#[derive(Debug, Deserialize)]
pub struct ChargeRequest {
    /// `cus_…`, a customer Kassa knows with a saved card.
    pub customer: Option<String>,
    /// Minor units; must be an integer (JSON number without a fraction).
    pub amount: Option<Value>,
    /// ISO code, any case.
    pub currency: Option<String>,
    /// A card of that customer; default: the customer's default card at execution time.
    pub payment_method: Option<String>,
    /// Shown in Stripe.
    pub description: Option<String>,
    /// The caller's unique reference: the same reference twice is one charge.
    pub reference: Option<String>,
    /// Key-value pairs kept with the charge.
    #[serde(default)]
    pub metadata: Option<Value>,
}

fn field_error(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {}", message.into())).with_field(field)
}

/// Checks a charge request against Stripe's money rules and Kassa's records; the first problem
/// found is reported with its field.
pub async fn validate_charge(
    store: &Store,
    request: &ChargeRequest,
    livemode: bool,
) -> Result<NewCharge, ApiError> {
    let reference = request
        .reference
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    if reference.is_empty() || reference.len() > 255 {
        return Err(field_error("reference", "required, 1 to 255 characters"));
    }
    let currency = request
        .currency
        .as_deref()
        .ok_or_else(|| field_error("currency", "required"))?;
    let currency = Currency::parse(currency).map_err(|e| field_error("currency", e.to_string()))?;
    let amount = match &request.amount {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            field_error(
                "amount",
                "must be an integer number of minor units (e.g. 1999 for $19.99, 1000 for ¥1,000)",
            )
        })?,
        Some(_) => {
            return Err(field_error(
                "amount",
                "must be a JSON integer of minor units, not a string",
            ))
        }
        None => return Err(field_error("amount", "required")),
    };
    validate_amount(amount, &currency).map_err(|e| field_error("amount", e.to_string()))?;
    let customer = request
        .customer
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    if customer.is_empty() {
        return Err(field_error("customer", "required"));
    }
    let known = customers::customer_with_default_card(store.pool(), customer)
        .await
        .map_err(internal)?;
    let Some((record, default_card)) = known.filter(|(c, _)| !c.deleted) else {
        return Err(field_error(
            "customer",
            format!("unknown customer {customer}"),
        ));
    };
    match &request.payment_method {
        Some(pm) => {
            let cards = customers::payment_methods_of(store.pool(), &record.id)
                .await
                .map_err(internal)?;
            if !cards.iter().any(|c| &c.id == pm && c.attached) {
                return Err(field_error(
                    "payment_method",
                    format!("{pm} is not a saved card of {customer}"),
                ));
            }
        }
        None if default_card.is_none() => {
            return Err(field_error(
                "customer",
                format!("{customer} has no saved card"),
            ));
        }
        None => {}
    }
    let metadata = match &request.metadata {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => return Err(field_error("metadata", "must be an object")),
    };
    Ok(NewCharge {
        reference: reference.to_owned(),
        customer_id: record.id,
        payment_method_id: request.payment_method.clone(),
        amount,
        currency: currency.code().to_owned(),
        description: request.description.clone(),
        metadata,
        livemode,
    })
}

async fn create_charge(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<ChargeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let Json(request) = body.map_err(|e| ApiError::from_json_rejection(&e))?;
    let charge = validate_charge(&state.store, &request, false).await?;
    let (record, created) = state
        .store
        .submit_charge(&state.route, &charge)
        .await
        .map_err(internal)?;
    let same = record.customer_id == charge.customer_id
        && record.amount == charge.amount
        && record.currency == charge.currency;
    if !created && !same {
        // The reference is the caller's idempotency handle: reusing it for another charge is a
        // mistake to report, not a charge to return silently.
        let message = format!(
            "reference: {} is already charge {} of {} {} to {}",
            record.reference, record.id, record.amount, record.currency, record.customer_id
        );
        return Err(
            ApiError::new(StatusCode::CONFLICT, "reference_in_use", message)
                .with_field("reference"),
        );
    }
    if created {
        info!(charge_id = record.id, reference = %record.reference, "charge recorded and queued");
    }
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(charge_json(&record))))
}

async fn get_charge(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "charge_not_found",
            format!("no charge {id}"),
        )
    };
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let record = state
        .store
        .charge(id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    Ok(Json(charge_json(&record)))
}

/// `GET /api/charges` query.
#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

async fn list_charges(
    State(state): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::from_query_rejection(&e))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<ChargeStatus>().map_err(|_| {
            ApiError::bad_request("invalid_field", format!("status: {s:?} is not one of pending, processing, succeeded, requires_recheckout, retrying, failed")).with_field("status")
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let charges = state
        .store
        .list_charges(status, limit, query.after)
        .await
        .map_err(internal)?;
    let next = (charges.len() as u32 == limit)
        .then(|| charges.last().map(|c| c.id))
        .flatten();
    Ok(Json(
        json!({"data": charges.iter().map(charge_json).collect::<Vec<_>>(), "next_after": next}),
    ))
}

/// Bearer token, compared in constant time.
fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    check_bearer(&state.token, headers)
}

/// `Authorization: Bearer {token}`, compared in constant time; an empty token admits nobody.
pub(crate) fn check_bearer(token: &SecretString, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = token.expose_secret().as_bytes();
    if bool::from(given.as_bytes().ct_eq(expected)) && !expected.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid Bearer KASSA_ADMIN_TOKEN is required",
        ))
    }
}

fn internal(error: StoreError) -> ApiError {
    warn!(%error, "admin API: database error");
    if error.is_transient() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; try again",
        )
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

/// A charge as the API shows it.
pub fn charge_json(c: &ChargeRecord) -> Value {
    let amount_display = Currency::parse(&c.currency)
        .map(|cur| format_amount(c.amount, &cur))
        .ok();
    json!({
        "id": c.id,
        "reference": c.reference,
        "status": c.status.as_str(),
        "attempt": c.attempt,
        "customer": c.customer_id,
        "payment_method": c.payment_method_id,
        "amount": c.amount,
        "currency": c.currency,
        "amount_display": amount_display,
        "description": c.description,
        "metadata": c.metadata,
        "payment_intent": c.payment_intent_id,
        "decline_code": c.decline_code,
        "failure_code": c.failure_code,
        "failure_message": c.failure_message,
        "recheckout_url": c.recheckout_url,
        "recheckout_expires_at": c.recheckout_expires_at.map(|t| t.unix_timestamp()),
        "created_at": c.created_at.unix_timestamp(),
        "updated_at": c.updated_at.unix_timestamp(),
        "livemode": c.livemode,
        "attempt_started_at": c.attempt_started_at.map(|t| t.unix_timestamp()),
        "attempt_payment_method": c.attempt_payment_method_id,
        "attempt_idempotency_key": c.attempt_key,
        "attempt_key_started_at": c.attempt_key_started_at.map(|t| t.unix_timestamp()),
        "review_reason": c.review_reason,
    })
}
