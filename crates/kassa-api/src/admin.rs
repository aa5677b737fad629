//! The back-office API (Bearer `KASSA_ADMIN_TOKEN`): charges of saved cards as records first.
//!
//! `POST /api/charges` validates the request (each error names its field), records the charge
//! and queues its first attempt in one transaction (the outbox), and answers 202; the same
//! `reference` again answers 200 with the existing charge and creates nothing, and a reference
//! already used for another charge is 409 `reference_in_use` (kassa-core's
//! [`kassa_core::charges::submit`], which `kassa charge` and `kassa charges import` use too).
//! `GET /api/charges/{id}` and `GET /api/charges?status=…&livemode=…&after=…&limit=…` read them
//! back. A charge is in the mode its body names (`"livemode": true|false`, else the default
//! mode): its row says so, and it is executed with that mode's key.
//! The `reference` is the charge's idempotency handle, so this route needs no `Idempotency-Key`
//! header and ignores one.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_core::charges::charge_json;
use kassa_core::charges::submit::{submit_charge, ChargeMode, ChargeRequest, Submitted};
use kassa_store::ChargeStatus;
use serde::Deserialize;
use serde_json::{json, Value};

/// The back-office routes.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/charges", post(create_charge).get(list_charges))
        .route("/api/charges/{id}", get(get_charge))
}

async fn create_charge(
    State(state): State<ApiState>,
    body: Result<Json<ChargeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::from_json_rejection(&e))?;
    let (mode, stripe) = state.stripe_for(request.livemode)?;
    let mode = ChargeMode {
        mode,
        stripe: Some(stripe),
    };
    let submitted = submit_charge(&state.store, mode, &state.route, &request).await?;
    Ok(match submitted {
        Submitted::Created(record) => (StatusCode::ACCEPTED, Json(charge_json(&record))),
        Submitted::Existed(record) => (StatusCode::OK, Json(charge_json(&record))),
    })
}

async fn get_charge(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
        .map_err(|e| ApiError::from_store(&e))?
        .ok_or_else(not_found)?;
    Ok(Json(charge_json(&record)))
}

/// `GET /api/charges` query.
#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    /// Only charges of this mode; absent: both modes (each charge says its `livemode`).
    livemode: Option<bool>,
    after: Option<i64>,
    limit: Option<u32>,
}

async fn list_charges(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::from_query_rejection(&e))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<ChargeStatus>().map_err(|_| {
            kassa_core::fields::field_error(
                "status",
                format!("{s:?} is not one of pending, processing, succeeded, requires_recheckout, retrying, failed, needs_review"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let charges = state
        .store
        .list_charges(status, query.livemode, limit, query.after)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    let next = (charges.len() as u32 == limit)
        .then(|| charges.last().map(|c| c.id))
        .flatten();
    Ok(Json(
        json!({"data": charges.iter().map(charge_json).collect::<Vec<_>>(), "next_after": next}),
    ))
}
