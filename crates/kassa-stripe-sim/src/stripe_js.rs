//! The simulator's stand-in for Stripe.js, for browsers that cannot reach `https://js.stripe.com/v3`
//! (tests, `kassa demo`, `kassa serve` without keys): `GET /v3` serves a small script with Stripe.js's
//! names and promise results — `Stripe(publishableKey)`, `stripe.elements({clientSecret,
//! appearance})`, `elements.create('payment').mount(…)`, `stripe.confirmPayment(…)`,
//! `stripe.confirmSetup(…)`, `stripe.retrievePaymentIntent(…)`, `stripe.retrieveSetupIntent(…)` — that
//! talks to this simulator's `/v1` API with the publishable key, as Stripe.js talks to Stripe's
//! (docs: Stripe.js reference). `docs/SIMULATOR.md` states its contract.
//!
//! A card that asks for 3-D Secure makes the script open the challenge page (`GET /3ds/{intent}`) in a
//! modal frame, as Stripe.js does; the customer completes or fails it (`POST /3ds/{intent}`), and the
//! page tells the script, which then resolves the confirmation as Stripe.js would.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Response};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;

use crate::control::body_params;
use crate::error::ApiError;
use crate::resources::{payment_intents, setup_intents};
use crate::sim::Shared;
use crate::state::Origin;

/// The script, no framework, no build step.
const SCRIPT: &str = include_str!("stripe_js/stripe.js");

/// The 3-D Secure challenge page: static, it reads the intent from its URL.
const CHALLENGE_PAGE: &str = include_str!("stripe_js/challenge.html");

fn with_type(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /v3` (also `/v3/` and `/v3/stripe.js`): the Stripe.js stand-in.
pub async fn script() -> Response<Body> {
    let mut r = with_type(SCRIPT, "application/javascript; charset=utf-8");
    // Like js.stripe.com, loadable from any page (and with `crossorigin`).
    r.headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    r
}

/// `GET /3ds/{intent}?client_secret=…`: the challenge page with its two answers.
pub async fn challenge_page() -> Response<Body> {
    with_type(CHALLENGE_PAGE, "text/html; charset=utf-8")
}

/// `POST /3ds/{intent}` with `outcome` (`complete` or `fail`) and the intent's `client_secret`:
/// answers `{id, object, status}` of the intent afterwards, or Stripe's error.
pub async fn challenge_answer(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let answer = (|| {
        let p = body_params(&headers, &body)?;
        let passed = match p.str("outcome").as_deref() {
            Some("complete") => true,
            Some("fail") => false,
            _ => {
                return Err(ApiError::invalid(
                    "outcome must be complete or fail",
                    Some("outcome"),
                ))
            }
        };
        let secret = p.str("client_secret");
        let Some(mode) = shared.mode_of(&id) else {
            return Err(ApiError::no_such("payment_intent", &id, "intent"));
        };
        let (result, _) = shared.execute(mode, Origin::default(), |ctx| {
            if id.starts_with("seti_") {
                setup_intents::authenticate(ctx, &id, secret.as_deref(), passed)
            } else {
                payment_intents::authenticate(ctx, &id, secret.as_deref(), passed)
            }
        });
        result
    })();
    match answer {
        Ok(intent) => Json(serde_json::json!({
            "id": intent["id"],
            "object": intent["object"],
            "status": intent["status"],
        }))
        .into_response(),
        Err(e) => {
            let mut r = Json(e.body()).into_response();
            *r.status_mut() = e.status;
            r
        }
    }
}
