//! Simulator-only controls under `/_sim/` (never under `/v1/`, where only Stripe's API lives):
//! the request log, faults, webhook endpoints and deliveries, completing or expiring Checkout Sessions
//! as a customer or the clock would, and the clock itself (`GET /_sim/clock`,
//! `POST /_sim/clock/advance` with `{"seconds": N}`; see [`crate::clock`]).
//!
//! Controls that concern one mode take `mode` (`test`, the default, or `live`): adding a webhook
//! endpoint, and filtering the request log and the delivery log (`?mode=live`). Controls on one
//! object (completing a Checkout Session) find its mode from its id.

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
use crate::mode::Mode;
use crate::params::Params;
use crate::resources::payment_methods::{self, NetworkUpdate};
use crate::resources::{checkout, payment_intents};
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

/// The `mode` query parameter of a control (`test` or `live`); `None` when absent.
fn mode_query(query: &axum::extract::RawQuery) -> Result<Option<Mode>, ApiError> {
    let Some(q) = query.0.as_deref() else {
        return Ok(None);
    };
    let params = form::decode(q.as_bytes()).map_err(|e| ApiError::invalid(e.to_string(), None))?;
    match params.get("mode") {
        None => Ok(None),
        Some(Value::String(m)) => Mode::parse(m).map(Some).ok_or_else(bad_mode),
        Some(_) => Err(bad_mode()),
    }
}

fn bad_mode() -> ApiError {
    ApiError::invalid("mode must be test or live", Some("mode"))
}

/// `GET /_sim/requests[?mode=test|live]`: the `/v1` request log, each entry with the mode, kind and
/// fingerprint of the key it was made with.
pub async fn requests(
    State(shared): State<Arc<Shared>>,
    query: axum::extract::RawQuery,
) -> Response<Body> {
    let mode = match mode_query(&query) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    let log: Vec<_> = shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|r| mode.is_none_or(|m| r.livemode == Some(m.livemode())))
        .cloned()
        .collect();
    Json(log).into_response()
}

fn faults_body(shared: &Shared) -> Value {
    let state = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
    json!({
        "faults": state.faults(),
        "injected": state.injected(),
        "rate_limited": state.rate_limited(),
    })
}

/// `GET /_sim/faults`: the faults in force, how many errors they injected, and how many requests
/// the rate limiters refused (`rate_limited.global`, `.endpoint`, `.by_endpoint`).
pub async fn get_faults(State(shared): State<Arc<Shared>>) -> Response<Body> {
    Json(faults_body(&shared)).into_response()
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
        .set(faults);
    Json(faults_body(&shared)).into_response()
}

fn endpoints_body(shared: &Shared) -> Value {
    json!({
        "endpoints": shared.deliverer.endpoints(Mode::Test),
        "live_endpoints": shared.deliverer.endpoints(Mode::Live),
    })
}

/// `GET /_sim/webhook_endpoints`: `{"endpoints": [test…], "live_endpoints": [live…]}`.
pub async fn list_endpoints(State(shared): State<Arc<Shared>>) -> Response<Body> {
    Json(endpoints_body(&shared)).into_response()
}

/// `POST /_sim/webhook_endpoints` with `url` and `mode` (`test`, the default, or `live`; JSON or form).
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
    let mode = match p.str("mode") {
        None => Mode::Test,
        Some(m) => match Mode::parse(&m) {
            Some(m) => m,
            None => return error_response(&bad_mode()),
        },
    };
    shared.deliverer.add_endpoint(mode, url);
    Json(endpoints_body(&shared)).into_response()
}

/// `GET /_sim/webhook_deliveries[?mode=test|live]`: every delivery attempt, and events dropped by
/// fault injection.
pub async fn deliveries(
    State(shared): State<Arc<Shared>>,
    query: axum::extract::RawQuery,
) -> Response<Body> {
    let mode = match mode_query(&query) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    let log: Vec<_> = shared
        .deliverer
        .log()
        .into_iter()
        .filter(|d| mode.is_none_or(|m| d.livemode == m.livemode()))
        .collect();
    Json(log).into_response()
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
    let mode = shared.mode_of(&id).unwrap_or_default();
    let (result, _) = shared.execute(mode, Origin::default(), |ctx| {
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
    let mode = shared.mode_of(&id).unwrap_or_default();
    let (result, _) = shared.execute(mode, Origin::default(), |ctx| checkout::expire(ctx, &id));
    match result {
        Ok(session) => Json(&*session).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `POST /_sim/payment_methods/{id}/network_update` with `exp_month`, `exp_year` and `last4`
/// (each optional): the card network updates a saved card in place, as a reissued or extended card
/// is, with its `payment_method.automatically_updated` event. Answers the PaymentMethod.
pub async fn network_update_card(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let update = body_params(&headers, &body).and_then(|p| NetworkUpdate::from_params(&p));
    match update.and_then(|update| update_card_from_network(&shared, &id, &update)) {
        Ok(payment_method) => Json(&*payment_method).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The card network updates the saved card `id`, in the card's own mode
/// ([`payment_methods::network_update`]).
pub fn update_card_from_network(
    shared: &Shared,
    id: &str,
    update: &NetworkUpdate,
) -> Result<crate::state::Obj, ApiError> {
    let mode = shared.mode_of(id).unwrap_or_default();
    let (result, _) = shared.execute(mode, Origin::default(), |ctx| {
        payment_methods::network_update(ctx, id, update)
    });
    result
}

/// What advancing the clock did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClockAdvanced {
    /// Unix time on the simulator's clock now.
    pub now: i64,
    /// Seconds the simulator's clock runs ahead of the wall clock.
    pub offset_seconds: i64,
    /// Idempotency-Keys forgotten because they are now 24 hours old.
    pub keys_forgotten: usize,
    /// Open Checkout Sessions that expired because `expires_at` passed.
    pub sessions_expired: usize,
    /// Delayed debits (SEPA Direct Debit) whose settlement time came, now settled.
    pub debits_settled: usize,
}

/// Moves the simulator's clock forward by `seconds` and applies what that time does at once:
/// keys at least 24 hours old are forgotten (Stripe: "You can remove keys from the system
/// automatically after they're at least 24 hours old. We generate a new request if a key is reused
/// after the original is pruned.", docs: idempotent requests) and open
/// Checkout Sessions past `expires_at` expire, each with its `checkout.session.expired` event, and
/// delayed debits due by then settle (SEPA Direct Debit: `processing` until the debit settles, "at
/// least three minutes" for the slow test IBANs; docs: SEPA Direct Debit, "Test your integration").
pub fn advance_clock(shared: &Shared, seconds: u32) -> ClockAdvanced {
    let _clock_work = shared
        .clock_work
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let offset = shared.env.clock.advance(seconds);
    let now = shared.env.clock.now();
    let keys_forgotten = shared
        .idempotency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .forget_expired(now);
    let (mut sessions_expired, mut debits_settled) = (0, 0);
    for mode in Mode::ALL {
        let ((expired, settled), _) = shared.execute(mode, Origin::default(), |ctx| {
            (checkout::expire_due(ctx), payment_intents::settle_due(ctx))
        });
        sessions_expired += expired;
        debits_settled += settled;
    }
    tracing::info!(
        seconds,
        offset,
        keys_forgotten,
        sessions_expired,
        debits_settled,
        "simulator clock advanced"
    );
    ClockAdvanced {
        now,
        offset_seconds: offset,
        keys_forgotten,
        sessions_expired,
        debits_settled,
    }
}

/// `GET /_sim/clock`: `{now, offset_seconds}`.
pub async fn get_clock(State(shared): State<Arc<Shared>>) -> Response<Body> {
    Json(json!({"now": shared.env.clock.now(), "offset_seconds": shared.env.clock.offset()}))
        .into_response()
}

/// The most one call may advance: ten years, far beyond anything Stripe keeps time-bound state for.
const MAX_ADVANCE_SECS: i64 = 10 * 366 * 24 * 60 * 60;

/// `POST /_sim/clock/advance` with `seconds` (JSON or form): a positive whole number of seconds.
pub async fn post_advance_clock(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let p = match body_params(&headers, &body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let seconds = match p.0.get("seconds") {
        None => return error_response(&ApiError::missing("seconds")),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    let seconds = match seconds {
        Some(n) if (1..=MAX_ADVANCE_SECS).contains(&n) => u32::try_from(n).unwrap_or(u32::MAX),
        _ => {
            return error_response(&ApiError::invalid(
                format!("seconds must be a whole number from 1 to {MAX_ADVANCE_SECS}; the clock only moves forward"),
                Some("seconds"),
            ))
        }
    };
    Json(advance_clock(&shared, seconds)).into_response()
}

/// A plain-text 400 for the hosted page helpers.
pub fn bad_request(message: &str) -> Response<Body> {
    (StatusCode::BAD_REQUEST, message.to_owned()).into_response()
}
