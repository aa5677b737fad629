//! Payment widgets: the admin API that defines them and the public endpoints a customer's
//! browser calls.
//!
//! Admin (Bearer `KASSA_ADMIN_TOKEN`): `POST /api/widgets`, `GET /api/widgets`,
//! `GET /api/widgets/{id}` ([`kassa_core::widgets`] checks and shows them).
//!
//! Public (no token; rate-limited per client IP — behind `KASSA_TRUSTED_PROXIES`, the address
//! they forward, [`client_ip`] — and per widget; JSON errors; any origin, as
//! simple CORS requests — the body is JSON sent as `text/plain`, so browsers send no preflight):
//!
//! - `GET /widget.js`: the script that mounts a widget into `<div data-kassa-widget="wid_…">`.
//! - `GET /pay/{widget}`: a page holding only that widget, for a plain link.
//! - `POST /widgets/{widget}/payment-intent` `{token}`: the page load's PaymentIntent
//!   (created once per token, then the same one) → `{widget, payment_intent, client_secret,
//!   publishable_key, stripe_js, return_url}`.
//! - `POST /widgets/{widget}/payment-intents/{id}/details` `{client_secret, email?, product?}`:
//!   the customer's choice, put on the PaymentIntent before the browser confirms it.
//! - `GET /pay/{widget}/thanks?payment_intent=…&payment_intent_client_secret=…`: the default
//!   success page; it records the payment (as the confirmation does) and shows it.
//!
//! The confirmation the script calls afterwards is `POST /api/payment-intents/{id}/confirmation`
//! with the `client_secret` ([`crate::checkout`]).

use crate::error::ApiError;
use crate::pages::{html_error, render};
use crate::{page_permit, ApiState};
use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kassa_core::fulfil::PageOutcome;
use kassa_core::widgets::{
    check_client_secret, is_widget_id, page_intent, plan_widget, public_json, set_details,
    widget_json, PaymentDetails, WidgetError, WidgetRequest, WIDGET_METADATA,
};
use kassa_store::WidgetRecord;
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::Mode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use tracing::{info, Instrument};

/// The script, served as it is.
const WIDGET_JS: &str = include_str!("../assets/widget.js");

/// Requests per minute one client IP may make to the public widget endpoints (bursts of
/// [`PER_IP_BURST`]).
pub const PER_IP_PER_MINUTE: u32 = 60;
/// Burst of one client IP.
pub const PER_IP_BURST: u32 = 20;
/// Requests per minute to the public endpoints of one widget, from everyone together (bursts
/// of [`PER_WIDGET_BURST`]).
pub const PER_WIDGET_PER_MINUTE: u32 = 600;
/// Burst of one widget.
pub const PER_WIDGET_BURST: u32 = 100;

/// Keys a limiter forgets idle entries beyond.
const LIMITER_KEYS: usize = 10_000;

/// The public endpoints' rate limits: one bucket per client IP, one per widget.
pub struct PublicLimits {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_widget: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for PublicLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicLimits").finish_non_exhaustive()
    }
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Default for PublicLimits {
    fn default() -> Self {
        Self {
            by_ip: RateLimiter::keyed(quota(PER_IP_PER_MINUTE, PER_IP_BURST)),
            by_widget: RateLimiter::keyed(quota(PER_WIDGET_PER_MINUTE, PER_WIDGET_BURST)),
        }
    }
}

impl PublicLimits {
    /// Takes one request of `ip` (for no widget), or answers 429.
    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.by_ip.len() > LIMITER_KEYS {
            self.by_ip.retain_recent();
        }
        if self.by_ip.check_key(&ip).is_ok() {
            return Ok(());
        }
        metrics::counter!("kassa_widget_requests_limited_total").increment(1);
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address; try again in a minute",
        ))
    }

    /// Takes one request of `ip` for `widget`, or answers 429.
    pub(crate) fn check(&self, ip: IpAddr, widget: &str) -> Result<(), ApiError> {
        for limiter_len in [self.by_ip.len(), self.by_widget.len()] {
            if limiter_len > LIMITER_KEYS {
                self.by_ip.retain_recent();
                self.by_widget.retain_recent();
            }
        }
        let refused = if self.by_ip.check_key(&ip).is_err() {
            Some("this address")
        } else if self.by_widget.check_key(&widget.to_owned()).is_err() {
            Some("this widget")
        } else {
            None
        };
        match refused {
            None => Ok(()),
            Some(whom) => {
                metrics::counter!("kassa_widget_requests_limited_total").increment(1);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests from {whom}; try again in a minute"),
                ))
            }
        }
    }
}

/// The addresses of reverse proxies whose `X-Forwarded-For` Kassa believes
/// (`KASSA_TRUSTED_PROXIES`): addresses (`10.0.0.5`) or networks (`10.0.0.0/8`).
pub fn parse_trusted_proxies(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or network (10.0.0.0/8)"))
        })
        .collect()
}

pub use crate::rate_limit::client_ip;

/// [`client_ip`] with this server's trusted proxies.
pub(crate) fn customer_ip(state: &ApiState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    client_ip(&state.settings.trusted_proxies, peer.ip(), headers)
}

/// The admin routes.
pub fn admin_router() -> Router<ApiState> {
    Router::new()
        .route("/api/widgets", post(create_widget).get(list_widgets))
        .route("/api/widgets/{id}", get(get_widget))
}

/// The public routes (no token).
pub fn public_router() -> Router<ApiState> {
    Router::new()
        .route("/widget.js", get(script))
        .route("/pay/{widget}", get(pay_page))
        .route("/pay/{widget}/thanks", get(thanks_page))
        .route("/widgets/{widget}/payment-intent", post(start_payment))
        .route(
            "/widgets/{widget}/payment-intents/{id}/details",
            post(payment_details),
        )
        .layer(axum::middleware::map_response(any_origin))
}

/// The Stripe client of `widget`'s own mode; a widget of a mode without keys is 409
/// `widget_mode_unavailable` (nothing is sent to Stripe).
fn widget_stripe<'a>(
    state: &'a ApiState,
    widget: &WidgetRecord,
) -> Result<&'a kassa_stripe::Client, WidgetError> {
    state.modes.for_livemode(widget.livemode).map_err(|e| {
        WidgetError::WrongMode(format!("widget {} cannot take payments: {e}", widget.id))
    })
}

/// Every public answer may be read by a script of any origin (the merchant's page).
pub(crate) async fn any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn create_widget(
    State(state): State<ApiState>,
    body: Result<Json<WidgetRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::from_json_rejection(&e))?;
    let widget = plan_widget(&request, state.modes.default_mode())?;
    // A widget of a mode without keys could never take a payment: refused before it is stored.
    state.modes.for_livemode(widget.livemode)?;
    let record = state
        .store
        .insert_widget(&widget)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    info!(widget = %record.id, "widget created");
    Ok((StatusCode::CREATED, Json(widget_json(&record))))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    /// Only widgets of this mode; absent: both (each says its `mode`).
    livemode: Option<bool>,
}

async fn list_widgets(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::from_query_rejection(&e))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let widgets = state
        .store
        .widgets(query.livemode, limit)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    Ok(Json(json!({
        "object": "list",
        "data": widgets.iter().map(widget_json).collect::<Vec<_>>(),
    })))
}

async fn get_widget(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(widget_json(&find_widget(&state, &id).await?)))
}

async fn find_widget(state: &ApiState, id: &str) -> Result<WidgetRecord, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "widget_not_found",
            format!("no widget {id}"),
        )
    };
    if !is_widget_id(id) {
        return Err(missing());
    }
    state
        .store
        .widget(id)
        .await
        .map_err(|e| ApiError::from_store(&e))?
        .ok_or_else(missing)
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

/// A public request's JSON body, whatever its Content-Type (the script sends `text/plain`).
fn public_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not the JSON expected: {e}"),
        )
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartPayment {
    token: Option<String>,
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many payments at once; try again in a moment",
    )
}

async fn start_payment(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(widget_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state
        .public_limits
        .check(customer_ip(&state, peer, &headers), &widget_id)?;
    let request: StartPayment = public_body(&body)?;
    let widget = find_widget(&state, &widget_id).await?;
    let Some(_permit) = page_permit(&state) else {
        return Err(busy());
    };
    let token = request.token.unwrap_or_default();
    let span = tracing::info_span!("widget_payment_intent", widget = %widget.id);
    let intent = page_intent(
        widget_stripe(&state, &widget)?,
        &state.store,
        &widget,
        &token,
    )
    .instrument(span)
    .await?;
    let return_url = widget
        .success_url
        .clone()
        .unwrap_or_else(|| format!("{}/pay/{}/thanks", state.settings.public_url, widget.id));
    Ok(Json(json!({
        "widget": public_json(&widget),
        "payment_intent": intent.id,
        "client_secret": intent.client_secret,
        "status": intent.status,
        "amount": intent.amount,
        "publishable_key": state
            .publishable_keys()
            .get(Mode::from_livemode(widget.livemode))
            .map(str::to_owned),
        "livemode": widget.livemode,
        "stripe_js": state.settings.stripe_js_url,
        "return_url": return_url,
    })))
}

async fn payment_details(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((widget_id, intent_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state
        .public_limits
        .check(customer_ip(&state, peer, &headers), &widget_id)?;
    let details: PaymentDetails = public_body(&body)?;
    let widget = find_widget(&state, &widget_id).await?;
    if !intent_id.starts_with("pi_") || intent_id.len() > 255 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{intent_id:?} is not a PaymentIntent id"),
        ));
    }
    let Some(_permit) = page_permit(&state) else {
        return Err(busy());
    };
    let span = tracing::info_span!("widget_payment_details", widget = %widget.id, payment_intent = %intent_id);
    let stripe = widget_stripe(&state, &widget)?;
    let intent = set_details(stripe, &state.store, &widget, &intent_id, &details)
        .instrument(span)
        .await?;
    let amount_display = Currency::parse(&intent.currency)
        .map(|c| format_amount(intent.amount, &c))
        .unwrap_or_default();
    Ok(Json(json!({
        "payment_intent": intent.id,
        "amount": intent.amount,
        "amount_display": amount_display,
        "currency": intent.currency,
    })))
}

#[derive(Template)]
#[template(path = "pages/pay.html")]
struct PayPage<'a> {
    widget: &'a str,
    description: &'a str,
    script: &'a str,
}

async fn pay_page(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(widget_id): Path<String>,
) -> Response {
    let ip = customer_ip(&state, peer, &headers);
    if let Err(error) = state.public_limits.check(ip, &widget_id) {
        return html_error(&error);
    }
    let widget = match find_widget(&state, &widget_id).await {
        Ok(widget) => widget,
        Err(error) => return html_error(&error),
    };
    let script = format!("{}/widget.js", state.settings.public_url);
    render(
        StatusCode::OK,
        &PayPage {
            widget: &widget.id,
            description: &widget.description,
            script: &script,
        },
    )
}

#[derive(Debug, Deserialize)]
struct ThanksQuery {
    payment_intent: Option<String>,
    payment_intent_client_secret: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/thanks.html")]
struct ThanksPage<'a> {
    description: &'a str,
    outcome: Thanks,
}

enum Thanks {
    Paid {
        amount: String,
        payment_intent: String,
    },
    NotPaid {
        status: String,
    },
}

impl ThanksPage<'_> {
    fn heading(&self) -> &'static str {
        match self.outcome {
            Thanks::Paid { .. } => "Thank you!",
            Thanks::NotPaid { .. } => "Not paid yet",
        }
    }
}

async fn thanks_page(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(widget_id): Path<String>,
    Query(query): Query<ThanksQuery>,
) -> Response {
    let ip = customer_ip(&state, peer, &headers);
    if let Err(error) = state.public_limits.check(ip, &widget_id) {
        return html_error(&error);
    }
    let widget = match find_widget(&state, &widget_id).await {
        Ok(widget) => widget,
        Err(error) => return html_error(&error),
    };
    let (Some(id), Some(secret)) = (query.payment_intent, query.payment_intent_client_secret)
    else {
        return html_error(&ApiError::bad_request(
            "invalid_field",
            "This page needs the payment_intent and payment_intent_client_secret of a payment.",
        ));
    };
    let Some(_permit) = page_permit(&state) else {
        return html_error(&busy());
    };
    let span = tracing::info_span!("widget_thanks", widget = %widget.id, payment_intent = %id);
    let checked = async {
        let intent = check_client_secret(widget_stripe(&state, &widget)?, &id, &secret).await?;
        if intent.metadata.get(WIDGET_METADATA) != Some(&widget.id) {
            return Err(WidgetError::NotFound(format!(
                "PaymentIntent {id} is not one of widget {}",
                widget.id
            )));
        }
        Ok(())
    }
    .instrument(span.clone())
    .await;
    if let Err(error) = checked {
        return html_error(&ApiError::from(error));
    }
    let mode = Mode::from_livemode(widget.livemode);
    let outcome = match state
        .fulfilment
        .payment_intent(mode, &id)
        .instrument(span)
        .await
    {
        Ok(PageOutcome::Paid {
            payment_intent_id,
            amount,
            currency,
            ..
        }) => Thanks::Paid {
            amount: Currency::parse(&currency)
                .map(|c| format_amount(amount, &c))
                .unwrap_or_else(|_| format!("{amount} {currency}")),
            payment_intent: payment_intent_id,
        },
        Ok(PageOutcome::NotPaid(status))
        | Ok(PageOutcome::CardSaved {
            customer_id: status,
        }) => Thanks::NotPaid { status },
        Err(error) => return html_error(&ApiError::from_fulfil(&error)),
    };
    render(
        StatusCode::OK,
        &ThanksPage {
            description: &widget.description,
            outcome,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwards_it() {
        let trusted = parse_trusted_proxies(&["10.0.0.0/8".into(), "192.0.2.7".into()]).unwrap();
        let customer: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // No proxy in front: the header is the client's word, ignored.
        assert_eq!(
            client_ip(&trusted, customer, &forwarded("198.51.100.1")),
            customer
        );
        // Through two trusted proxies: the right-most address that is not one of them, not
        // what the client prepended.
        let headers = forwarded("198.51.100.1, 203.0.113.9, 192.0.2.7");
        assert_eq!(client_ip(&trusted, proxy, &headers), customer);
        // A trusted proxy without the header: the proxy.
        assert_eq!(client_ip(&trusted, proxy, &HeaderMap::new()), proxy);
        assert!(parse_trusted_proxies(&["not-an-ip".into()]).is_err());
        assert!(
            client_ip(&[], proxy, &headers) == proxy,
            "nobody trusted: the peer"
        );
    }

    #[test]
    fn one_widget_is_limited_for_everyone_together_and_one_address_across_widgets() {
        let limits = PublicLimits::default();
        // Many customers, one widget: the widget's burst, then 429.
        let burst = PER_WIDGET_BURST as usize;
        let allowed = (0..burst + 10)
            .filter(|i| {
                let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
                limits.check(ip, "wid_popular0").is_ok()
            })
            .count();
        assert_eq!(allowed, burst);
        let refused = limits
            .check(IpAddr::from([10, 9, 9, 9]), "wid_popular0")
            .unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        // Another widget is not affected; one address is limited across widgets.
        assert!(limits
            .check(IpAddr::from([10, 9, 9, 9]), "wid_quiet00000")
            .is_ok());
        let me = IpAddr::from([192, 0, 2, 1]);
        let mine = (0..PER_IP_BURST + 5)
            .filter(|i| limits.check(me, &format!("wid_other{i:05}")).is_ok())
            .count();
        assert_eq!(mine, PER_IP_BURST as usize);
    }
}
