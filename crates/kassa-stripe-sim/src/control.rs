//! Simulator-only controls under `/_sim/` (never under `/v1/`, where only Stripe's API lives):
//! the request log, faults, webhook endpoints and deliveries, and completing or expiring Checkout Sessions
//! as a customer or the clock would.

use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::new_request_id;
use crate::config::Faults;
use crate::error::ApiError;
use crate::form;
use crate::params::Params;
use crate::resources::checkout;
use crate::sim::Shared;
use crate::state::Origin;

/// Adds a `Request-Id` to responses that have none (every response carries one).
pub async fn ensure_request_id(mut response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key("request-id") {
        if let Ok(v) = HeaderValue::from_str(&new_request_id()) {
            response.headers_mut().insert("request-id", v);
        }
    }
    response
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Json(e.body()).into_response();
    *r.status_mut() = e.status;
    r
}

/// Any path nothing serves: Stripe's 404 body.
pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response<Body> {
    error_response(&ApiError::unrecognized(method.as_str(), uri.path()))
}

/// Parameters of a control request: JSON when the body says so, else a form.
pub fn body_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, ApiError> {
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(Params(m)),
            Ok(_) => Err(ApiError::invalid("The JSON body must be an object.", None)),
            Err(e) => Err(ApiError::invalid(format!("Invalid JSON body: {e}"), None)),
        }
    } else {
        form::decode(body)
            .map(Params)
            .map_err(|e| ApiError::invalid(e.to_string(), None))
    }
}

/// `GET /_sim/requests`: the `/v1` request log.
pub async fn requests(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let log = shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Json(log).into_response()
}

/// `GET /_sim/faults`: the faults in force and how many errors they injected.
pub async fn get_faults(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let state = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
    Json(json!({"faults": state.faults(), "injected": state.injected()})).into_response()
}

/// `POST /_sim/faults` with a JSON [`Faults`] (missing fields take their defaults).
pub async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error_response(&ApiError::invalid(format!("Invalid faults: {e}"), None)),
    };
    if let Err(why) = faults.validate() {
        return error_response(&ApiError::invalid(why, None));
    }
    shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set(faults.clone());
    Json(json!({"faults": faults, "injected": 0})).into_response()
}

/// `GET /_sim/webhook_endpoints`.
pub async fn list_endpoints(State(shared): State<Arc<Shared>>) -> Response<Body> {
    Json(json!({"endpoints": shared.deliverer.endpoints()})).into_response()
}

/// `POST /_sim/webhook_endpoints` with `url` (JSON or form).
pub async fn add_endpoint(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let p = match body_params(&headers, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let Some(url) = p.str("url") else {
        return error_response(&ApiError::missing("url"));
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return error_response(&ApiError::invalid(
            "url must start with http:// or https://",
            Some("url"),
        ));
    }
    shared.deliverer.add_endpoint(url);
    Json(json!({"endpoints": shared.deliverer.endpoints()})).into_response()
}

/// `GET /_sim/webhook_deliveries`: every delivery attempt, and events dropped by fault injection.
pub async fn deliveries(State(shared): State<Arc<Shared>>) -> Response<Body> {
    Json(shared.deliverer.log()).into_response()
}

/// `POST /_sim/checkout/sessions/{id}/complete` with `payment_method` (default `pm_card_visa`), `email`,
/// `name`: the customer completes the session. Answers the session, or Stripe's error (402 on a decline).
pub async fn complete_session(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let p = match body_params(&headers, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let completion = checkout::Completion {
        payment_method: p
            .str("payment_method")
            .unwrap_or_else(|| "pm_card_visa".to_owned()),
        email: p.str("email"),
        name: p.str("name"),
    };
    let (result, _) = shared.execute(Origin::default(), |ctx| {
        checkout::complete(ctx, &id, &completion)
    });
    match result {
        Ok(session) => Json(&*session).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `POST /_sim/checkout/sessions/{id}/expire`: the session runs out of time now.
pub async fn expire_session(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response<Body> {
    let (result, _) = shared.execute(Origin::default(), |ctx| checkout::expire(ctx, &id));
    match result {
        Ok(session) => Json(&*session).into_response(),
        Err(e) => error_response(&e),
    }
}

/// A plain-text 400 for the hosted page helpers.
pub fn bad_request(message: &str) -> Response<Body> {
    (StatusCode::BAD_REQUEST, message.to_owned()).into_response()
}
