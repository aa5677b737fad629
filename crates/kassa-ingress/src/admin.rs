//! The back-office API (Bearer `KASSA_ADMIN_TOKEN`): charges of saved cards as records first.
//!
//! `POST /api/charges` validates the request (each error names its field), records the charge
//! and queues its first attempt in one transaction (the outbox), and answers 202; the same
//! `reference` again answers 200 with the existing charge and creates nothing.
//! `GET /api/charges/{id}` and `GET /api/charges?status=…&after=…&limit=…` read them back.
//! The `reference` is the charge's idempotency handle (the same reference is the same charge,
//! forever, not just for Stripe's 24 hours), so this route needs no `Idempotency-Key` header and
//! ignores one.
//!
//! A charge names a customer of the Stripe account. One Kassa has not recorded yet (it existed
//! before Kassa was installed, or its webhooks are still on their way), or one whose saved card
//! Kassa has not recorded, is looked up on Stripe through a [`CustomerLookup`] and recorded
//! before the request is judged; only a customer Stripe does not know (or has deleted) is
//! refused. That lookup is the only Stripe call these routes make.

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

/// Why a customer could not be looked up on Stripe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LookupError {
    /// Trying again later may help (Stripe or the database unavailable).
    pub transient: bool,
    /// What happened.
    pub message: String,
}

/// What Stripe said about a customer Kassa looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookedUp {
    /// The customer exists and is now recorded with its saved cards.
    Recorded,
    /// Stripe has it as deleted.
    Deleted,
    /// Stripe has no such customer.
    Missing,
}

/// Looks up a customer on Stripe and records it and its saved cards (the worker's code, given by
/// the binary, like [`crate::checkout::Fulfilment`]).
pub trait CustomerLookup: Send + Sync + 'static {
    /// Fetches customer `id` and its cards from Stripe and records them.
    fn look_up(&self, id: String) -> crate::checkout::BoxFuture<Result<LookedUp, LookupError>>;
}

/// What the admin routes share.
#[derive(Clone)]
pub struct AdminState {
    store: Store,
    token: Arc<SecretString>,
    route: JobRoute,
    customers: Option<Arc<dyn CustomerLookup>>,
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
            customers: None,
        }
    }

    /// Customers Kassa has not recorded are looked up through `customers` before a charge is
    /// refused.
    pub fn with_customer_lookup(mut self, customers: Arc<dyn CustomerLookup>) -> Self {
        self.customers = Some(customers);
        self
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
    /// `cus_…`, a customer of the Stripe account with a saved card.
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

/// Why the customer of a charge request cannot be charged as Kassa's records stand.
enum Unchargeable {
    /// Not recorded.
    Unknown,
    /// Recorded as deleted.
    Deleted,
    /// No default card recorded, and no card given.
    NoDefaultCard,
    /// The given card is not recorded as a saved card of the customer.
    NotItsCard(String),
}

impl Unchargeable {
    fn error(&self, customer: &str) -> ApiError {
        match self {
            Unchargeable::Unknown => {
                field_error("customer", format!("unknown customer {customer}"))
            }
            Unchargeable::Deleted => {
                field_error("customer", format!("customer {customer} is deleted"))
            }
            Unchargeable::NoDefaultCard => field_error(
                "customer",
                format!("{customer} has no saved default card (give a payment_method of theirs, or have them save one)"),
            ),
            Unchargeable::NotItsCard(pm) => field_error(
                "payment_method",
                format!("{pm} is not a saved card of {customer}"),
            ),
        }
    }
}

/// The recorded customer `customer`, if a charge to it (on `payment_method`, or its default
/// card) can go ahead as Kassa's records stand.
async fn chargeable(
    store: &Store,
    customer: &str,
    payment_method: Option<&str>,
) -> Result<Result<String, Unchargeable>, ApiError> {
    let known = customers::customer_with_default_card(store.pool(), customer)
        .await
        .map_err(internal)?;
    let Some((record, default_card)) = known else {
        return Ok(Err(Unchargeable::Unknown));
    };
    if record.deleted {
        return Ok(Err(Unchargeable::Deleted));
    }
    match payment_method {
        Some(pm) => {
            let cards = customers::payment_methods_of(store.pool(), &record.id)
                .await
                .map_err(internal)?;
            if !cards.iter().any(|c| c.id == pm && c.attached) {
                return Ok(Err(Unchargeable::NotItsCard(pm.to_owned())));
            }
        }
        None if default_card.is_none() => return Ok(Err(Unchargeable::NoDefaultCard)),
        None => {}
    }
    Ok(Ok(record.id))
}

/// The customer to charge: as recorded, or — when the records say no, and `lookup` is given —
/// as Stripe has it now (looked up and recorded first). Only a customer that is still not
/// chargeable then is refused.
async fn customer_to_charge(
    store: &Store,
    lookup: Option<&dyn CustomerLookup>,
    customer: &str,
    payment_method: Option<&str>,
) -> Result<String, ApiError> {
    let unchargeable = match chargeable(store, customer, payment_method).await? {
        Ok(id) => return Ok(id),
        // Stripe never undeletes a customer: nothing to look up.
        Err(Unchargeable::Deleted) => return Err(Unchargeable::Deleted.error(customer)),
        Err(why) => why,
    };
    let Some(lookup) = lookup else {
        return Err(unchargeable.error(customer));
    };
    match lookup.look_up(customer.to_owned()).await {
        Ok(LookedUp::Recorded) => {}
        Ok(LookedUp::Missing) => {
            return Err(field_error(
                "customer",
                format!("unknown customer {customer}: the Stripe account has no such customer"),
            ))
        }
        Ok(LookedUp::Deleted) => {
            return Err(field_error(
                "customer",
                format!("customer {customer} is deleted in Stripe"),
            ))
        }
        Err(error) if error.transient => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stripe_unavailable",
                format!(
                    "looking up {customer} on Stripe: {}; try again",
                    error.message
                ),
            ))
        }
        Err(error) => {
            warn!(%error, customer, "looking up a customer on Stripe failed");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "stripe_lookup_failed",
                format!("looking up {customer} on Stripe: {}", error.message),
            ));
        }
    }
    chargeable(store, customer, payment_method)
        .await?
        .map_err(|why| why.error(customer))
}

/// Checks a charge request against Stripe's money rules and Kassa's records (looking an
/// unrecorded customer up through `lookup` first); the first problem found is reported with its
/// field.
pub async fn validate_charge(
    store: &Store,
    lookup: Option<&dyn CustomerLookup>,
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
    let metadata = match &request.metadata {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => return Err(field_error("metadata", "must be an object")),
    };
    let customer_id =
        customer_to_charge(store, lookup, customer, request.payment_method.as_deref()).await?;
    Ok(NewCharge {
        reference: reference.to_owned(),
        customer_id,
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
    let charge = validate_charge(&state.store, state.customers.as_deref(), &request, false).await?;
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
