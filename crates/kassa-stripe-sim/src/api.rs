//! The `/v1` front door: CORS, request id, authentication (and the key's mode), what a publishable key
//! may call, faults and rate limits, parameter decoding, idempotency, execution, `expand[]`, and the
//! request log.

use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{ApiKey, KeyKind};
use crate::error::ApiError;
use crate::idempotency::{Begin, Fingerprint, Saved};
use crate::params::Params;
use crate::sim::Shared;
use crate::state::{random_suffix, Origin};
use crate::{auth, expand, form, publishable, resources};

/// Stripe: "Idempotency keys are up to 255 characters long" (docs: idempotent requests).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// One `/v1` request as the simulator answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query (`/v1/payment_intents`).
    pub path: String,
    /// The endpoint as Stripe names it for rate limits (`POST /v1/payment_intents/{id}/confirm`).
    pub operation: String,
    /// The mode of the key used (`true`: live); `None` when the request had no valid key.
    pub livemode: Option<bool>,
    /// The kind of key used (`secret`, `restricted`, `publishable`); `None` without a valid key.
    pub key_kind: Option<KeyKind>,
    /// [`auth::key_fingerprint`] of the key used — never the key itself.
    pub key_fingerprint: Option<String>,
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
    rate_limited_reason: Option<&'static str>,
    /// `Request-Id` of the original request when this is a replay.
    original_request: Option<String>,
}

impl Answer {
    fn error(e: &ApiError) -> Self {
        Answer {
            status: e.status,
            body: to_bytes(&e.body()),
            should_retry: e.should_retry,
            rate_limited_reason: e.rate_limited_reason,
            original_request: None,
        }
    }
}

/// Stripe's CORS answer on every API response, so browsers may read it (docs: Stripe.js calls the
/// API from the merchant's origin; api.stripe.com answers with these headers): any origin, Stripe's
/// methods, `Request-Id` readable by scripts, preflights cached for 300 s.
fn cors(h: &mut HeaderMap) {
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-credentials",
        HeaderValue::from_static("true"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, HEAD, OPTIONS, DELETE"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Request-Id, Stripe-Manage-Version, X-Stripe-External-Auth-Required, X-Stripe-Privileged-Session-Required"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("300"));
}

/// A CORS preflight (`OPTIONS`): 204 allowing the asked-for method and headers (a browser sending
/// `Authorization` or `Idempotency-Key` asks first). Never authenticated, never logged.
fn preflight(headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    cors(h);
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        h.insert("access-control-allow-origin", origin.clone());
        h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(asked) = headers.get("access-control-request-headers") {
        h.insert("access-control-allow-headers", asked.clone());
    }
    response
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
pub(crate) fn decode_params(method: &Method, uri: &Uri, body: &[u8]) -> Result<Params, ApiError> {
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
    if method == Method::OPTIONS {
        return preflight(&headers);
    }
    let request_id = new_request_id();
    let idempotency_key = (method == Method::POST)
        .then(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let segments: Vec<&str> = uri
        .path()
        .strip_prefix("/v1/")
        .unwrap_or_default()
        .split('/')
        .collect();
    let operation = resources::operation(method.as_str(), &segments);
    let (answer, key) = answer(
        &shared,
        &Request {
            method: &method,
            uri: &uri,
            segments: &segments,
            operation: &operation,
            headers: &headers,
            body: &body,
            request_id: &request_id,
            idempotency_key: idempotency_key.as_deref(),
        },
    )
    .await;
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            operation,
            livemode: key.as_ref().map(|k| k.mode.livemode()),
            key_kind: key.as_ref().map(|k| k.kind),
            key_fingerprint: key.as_ref().map(ApiKey::fingerprint),
            idempotency_key: idempotency_key.clone(),
            status: answer.status.as_u16(),
            replayed: answer.original_request.is_some(),
            request_id: request_id.clone(),
        });
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let h = response.headers_mut();
    cors(h);
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
    if let Some(reason) = answer.rate_limited_reason {
        // Stripe: a 429 from a rate limiter says which one in `Stripe-Rate-Limited-Reason`
        // (`global-rate`, `endpoint-rate`, …; docs: rate limits).
        h.insert(
            "stripe-rate-limited-reason",
            HeaderValue::from_static(reason),
        );
    }
    if let Some(retry) = answer.should_retry {
        h.insert(
            "stripe-should-retry",
            HeaderValue::from_static(if retry { "true" } else { "false" }),
        );
    }
    response
}

/// One `/v1` request, as read from the wire.
struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    /// Path segments after `/v1/`.
    segments: &'a [&'a str],
    /// The endpoint's name ([`resources::operation`]).
    operation: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    request_id: &'a str,
    idempotency_key: Option<&'a str>,
}

/// Answers a request; also returns the key it authenticated with, for the request log.
async fn answer(shared: &Shared, r: &Request<'_>) -> (Answer, Option<ApiKey>) {
    // Parameters first: Stripe.js sends a publishable key as the `key` parameter.
    let params = decode_params(r.method, r.uri, r.body);
    let key_param = params
        .as_ref()
        .ok()
        .and_then(|p| p.str("key"))
        .filter(|k| k.starts_with("pk_"));
    let key = match auth::api_key(r.headers, key_param.as_deref()) {
        Ok(k) => k,
        Err(e) => return (Answer::error(&e), None),
    };
    if key.kind == KeyKind::Publishable && !publishable::allowed(r.method.as_str(), r.segments) {
        return (Answer::error(&ApiError::publishable_key()), Some(key));
    }
    let answer = execute(shared, r, &key, params).await;
    (answer, Some(key))
}

async fn execute(
    shared: &Shared,
    r: &Request<'_>,
    key: &ApiKey,
    params: Result<Params, ApiError>,
) -> Answer {
    let (method, uri, request_id, idempotency_key) =
        (r.method, r.uri, r.request_id, r.idempotency_key);
    let mode = key.mode;
    let intercepted = shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .intercept(mode, r.operation, uri.path());
    if let Some(e) = intercepted {
        return Answer::error(&e);
    }
    let mut params = match params {
        Ok(p) => p,
        Err(e) => return Answer::error(&e),
    };
    if key.kind == KeyKind::Publishable && params.str("key").as_deref() == Some(key.key.as_str()) {
        // The key parameter authenticated the request; it is not an endpoint parameter.
        params.0.remove("key");
    }
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
        Some(idem) => {
            let fingerprint = Fingerprint {
                method: method.to_string(),
                path: uri.path().to_owned(),
                params: Value::Object(params.0.clone()),
            };
            let now = shared.env.clock.now();
            // Keys are per account and mode: every key of one mode shares them.
            let scope = mode.name().to_owned();
            let begin = shared
                .idempotency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .begin(&scope, idem, fingerprint, now);
            match begin {
                Begin::Execute => Some(HeldKey {
                    shared,
                    scope,
                    key: idem.to_owned(),
                    armed: true,
                }),
                Begin::Replay(saved) => {
                    return Answer {
                        status: StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK),
                        body: saved.body,
                        should_retry: saved.should_retry,
                        rate_limited_reason: None,
                        original_request: Some(saved.request_id),
                    }
                }
                Begin::Mismatch => return Answer::error(&ApiError::idempotency_mismatch(idem)),
                Begin::InFlight => return Answer::error(&ApiError::idempotency_in_use(idem)),
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
    let origin = Origin {
        request_id: Some(request_id.to_owned()),
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    let via_publishable_key = key.kind == KeyKind::Publishable;
    let (result, mutated) = shared.execute(mode, origin, |ctx| {
        ctx.via_publishable_key = via_publishable_key;
        let run = |ctx: &mut crate::state::Ctx<'_>| {
            let obj = resources::dispatch(ctx, method.as_str(), r.segments, &params)?;
            if expand.is_empty() && !via_publishable_key {
                return Ok(to_bytes(&obj));
            }
            let mut v = Arc::unwrap_or_clone(obj);
            expand::apply(ctx.store, &mut v, &expand)?;
            if via_publishable_key {
                publishable::view_body(&mut v);
            }
            Ok::<Bytes, ApiError>(to_bytes(&v))
        };
        run(ctx).map_err(|e| in_other_mode(ctx, e, via_publishable_key))
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
            rate_limited_reason: None,
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
    if !latency_after.is_zero() && *method == Method::POST {
        tokio::time::sleep(latency_after).await;
    }
    answer
}

/// An error as the request's key sees it: Stripe's "a similar object exists in test mode, but a live
/// mode key was used" when the id it did not find is the other mode's (docs: API keys, objects are
/// never shared between modes), and intents in the error cut to a publishable key's view.
fn in_other_mode(ctx: &crate::state::Ctx<'_>, e: ApiError, via_publishable_key: bool) -> ApiError {
    let mut e = match &e.missing_id {
        Some(id) if ctx.other.holds(id) => e.exists_in_other_mode(ctx.mode.other()),
        _ => e,
    };
    if via_publishable_key {
        let mut body = json!({"error": e.error});
        publishable::view_body(&mut body);
        e.error = body["error"].take();
    }
    e
}
