//! The `/v1` front door: request id, authentication, faults, parameter decoding, idempotency, execution,
//! `expand[]`, and the request log.

use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::idempotency::{Begin, Fingerprint, Saved};
use crate::params::Params;
use crate::sim::Shared;
use crate::state::{random_suffix, Origin};
use crate::{auth, expand, form, resources};

/// Stripe: "Idempotency keys are up to 255 characters long" (docs: idempotent requests).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// One `/v1` request as the simulator answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query (`/v1/payment_intents`).
    pub path: String,
    /// `Idempotency-Key` header of a POST.
    pub idempotency_key: Option<String>,
    /// Status answered.
    pub status: u16,
    /// Whether the answer was a replay of a saved idempotent result.
    pub replayed: bool,
    /// `Request-Id` answered.
    pub request_id: String,
}

/// A finished answer before it becomes an HTTP response.
struct Answer {
    status: StatusCode,
    body: Bytes,
    should_retry: Option<bool>,
    /// `Request-Id` of the original request when this is a replay.
    original_request: Option<String>,
}

impl Answer {
    fn error(e: &ApiError) -> Self {
        Answer {
            status: e.status,
            body: to_bytes(&e.body()),
            should_retry: e.should_retry,
            original_request: None,
        }
    }
}

fn to_bytes(v: &Value) -> Bytes {
    // Serializing a `Value` cannot fail (its map keys are strings).
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A Stripe-style request id.
pub fn new_request_id() -> String {
    random_suffix("req_", 14)
}

/// Frees a held idempotency key if the request ends without saving (including when its client goes away).
struct HeldKey<'a> {
    shared: &'a Shared,
    scope: String,
    key: String,
    armed: bool,
}

impl HeldKey<'_> {
    fn finish(mut self, saved: Option<Saved>) {
        self.armed = false;
        let now = self.shared.env.clock.now();
        self.shared
            .idempotency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish(&self.scope, &self.key, saved, now);
    }
}

impl Drop for HeldKey<'_> {
    fn drop(&mut self) {
        if self.armed {
            let now = self.shared.env.clock.now();
            self.shared
                .idempotency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finish(&self.scope, &self.key, None, now);
        }
    }
}

/// Decodes the query string and, for POST, the form body into one parameter map (the body wins).
fn decode_params(method: &Method, uri: &Uri, body: &[u8]) -> Result<Params, ApiError> {
    let bad = |e: form::FormError| ApiError::invalid(e.to_string(), None);
    let mut params = form::decode(uri.query().unwrap_or_default().as_bytes()).map_err(bad)?;
    if *method == Method::POST {
        for (k, v) in form::decode(body).map_err(bad)? {
            params.insert(k, v);
        }
    }
    Ok(Params(params))
}

/// `ANY /v1/*`.
pub async fn v1(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let request_id = new_request_id();
    let idempotency_key = (method == Method::POST)
        .then(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let answer = answer(
        &shared,
        &method,
        &uri,
        &headers,
        &body,
        &request_id,
        idempotency_key.as_deref(),
    )
    .await;
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            idempotency_key: idempotency_key.clone(),
            status: answer.status.as_u16(),
            replayed: answer.original_request.is_some(),
            request_id: request_id.clone(),
        });
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    // Stripe answers in the version the request asked for (`Stripe-Version`), else the account's.
    let version = headers.get("stripe-version").cloned();
    if let Some(v) = version.or_else(|| HeaderValue::from_str(&shared.env.api_version).ok()) {
        h.insert("stripe-version", v);
    }
    if let Some(key) = idempotency_key
        .as_deref()
        .and_then(|k| HeaderValue::from_str(k).ok())
    {
        h.insert("idempotency-key", key);
    }
    if let Some(original) = answer
        .original_request
        .as_deref()
        .and_then(|o| HeaderValue::from_str(o).ok())
    {
        // Stripe: replays carry `Idempotent-Replayed: true` (docs: idempotent requests) and name the
        // request that produced the saved result.
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
        h.insert("original-request", original);
    }
    if let Some(retry) = answer.should_retry {
        h.insert(
            "stripe-should-retry",
            HeaderValue::from_static(if retry { "true" } else { "false" }),
        );
    }
    response
}

async fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
    idempotency_key: Option<&str>,
) -> Answer {
    let api_key = match auth::api_key(headers) {
        Ok(k) => k,
        Err(e) => return Answer::error(&e),
    };
    let intercepted = shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .intercept(uri.path());
    if let Some(e) = intercepted {
        return Answer::error(&e);
    }
    let params = match decode_params(method, uri, body) {
        Ok(p) => p,
        Err(e) => return Answer::error(&e),
    };
    let expand = match params.expand() {
        Ok(x) => x,
        Err(e) => return Answer::error(&e),
    };
    let held = match idempotency_key {
        None => None,
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY || key.is_empty() => {
            return Answer::error(&ApiError::invalid(
                format!(
                    "Idempotency keys must be between 1 and {MAX_IDEMPOTENCY_KEY} characters long."
                ),
                None,
            ));
        }
        Some(key) => {
            let fingerprint = Fingerprint {
                method: method.to_string(),
                path: uri.path().to_owned(),
                params: Value::Object(params.0.clone()),
            };
            let now = shared.env.clock.now();
            let begin = shared
                .idempotency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .begin(&api_key, key, fingerprint, now);
            match begin {
                Begin::Execute => Some(HeldKey {
                    shared,
                    scope: api_key.clone(),
                    key: key.to_owned(),
                    armed: true,
                }),
                Begin::Replay(saved) => {
                    return Answer {
                        status: StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK),
                        body: saved.body,
                        should_retry: saved.should_retry,
                        original_request: Some(saved.request_id),
                    }
                }
                Begin::Mismatch => return Answer::error(&ApiError::idempotency_mismatch(key)),
                Begin::InFlight => return Answer::error(&ApiError::idempotency_in_use(key)),
            }
        }
    };
    let latency = shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = uri.path();
    let segments: Vec<&str> = path
        .strip_prefix("/v1/")
        .unwrap_or_default()
        .split('/')
        .collect();
    let origin = Origin {
        request_id: Some(request_id.to_owned()),
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    let (result, mutated) = shared.execute(origin, |ctx| {
        let obj = resources::dispatch(ctx, method.as_str(), &segments, &params)?;
        if expand.is_empty() {
            return Ok(to_bytes(&obj));
        }
        let mut v = Arc::unwrap_or_clone(obj);
        expand::apply(ctx.store, &mut v, &expand)?;
        Ok::<Bytes, ApiError>(to_bytes(&v))
    });
    let failed_after = shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .intercept_after(path);
    let answer = match (&result, &failed_after) {
        (_, Some(e)) => Answer::error(e),
        (Ok(body), None) => Answer {
            status: StatusCode::OK,
            body: body.clone(),
            should_retry: None,
            original_request: None,
        },
        (Err(e), None) => Answer::error(e),
    };
    if let Some(held) = held {
        // Saved once the endpoint began executing: a success, an error after a change (a
        // decline), or a failure injected after execution (Stripe replays those, 500s included).
        let executed = result.is_ok() || mutated || failed_after.is_some();
        let saved = executed.then(|| Saved {
            status: answer.status.as_u16(),
            body: answer.body.clone(),
            request_id: request_id.to_owned(),
            should_retry: answer.should_retry,
        });
        held.finish(saved);
    }
    // After the result is saved: a client that dies while waiting here finds it by replaying its key.
    let latency_after = shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .latency_after(path);
    if !latency_after.is_zero() && method == Method::POST {
        tokio::time::sleep(latency_after).await;
    }
    answer
}
