//! The merchant's page: a product with a Buy button (`GET /`), the form post that starts Stripe
//! Checkout (`POST /create-checkout-session` → 303 to the session's URL), the success page
//! (`GET /success?session_id=…`, reached through `success_url`'s `{CHECKOUT_SESSION_ID}`), which
//! fulfils synchronously through the worker's code — the webhook and this page race, the first
//! records the payment and the second finds it recorded — and `GET /cancel`.
//!
//! Plain HTML without JavaScript; no token (customers use these pages).

use crate::checkout::{
    create_session, fulfil_error, CheckoutPlan, CheckoutRecord, CheckoutRequest, CheckoutState,
    PageOutcome,
};
use crate::error::ApiError;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::objects::CheckoutMode;
use serde::Deserialize;
use tracing::{info, Instrument};

/// The product the page sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopProduct {
    /// Shown and sent to Stripe.
    pub name: String,
    /// The Stripe product's `metadata.product_code`.
    pub product_code: String,
    /// Minor units.
    pub unit_amount: i64,
    /// The currency.
    pub currency: Currency,
}

impl ShopProduct {
    /// The demo product: a $20.00 notebook.
    pub fn demo() -> Result<Self, kassa_stripe::money::MoneyError> {
        Ok(Self {
            name: "Kassa field notebook".into(),
            product_code: "kassa-notebook".into(),
            unit_amount: 2000,
            currency: Currency::parse("usd")?,
        })
    }
}

/// The pages Checkout sends customers back to, `/success` and `/cancel`: the default
/// `success_url`/`cancel_url` of every session Kassa creates, in test and live mode.
pub fn router(state: CheckoutState) -> Router {
    Router::new()
        .route("/success", get(success))
        .route("/cancel", get(cancel))
        .with_state(state)
}

/// The demo shop, `GET /` and `POST /create-checkout-session`, selling [`ShopProduct::demo`].
/// Mount it in test mode only: in live mode anyone could pay real money for a demo product
/// (and create it in the live catalogue).
pub fn shop_router(state: CheckoutState) -> Router {
    Router::new()
        .route("/", get(shop))
        .route("/create-checkout-session", post(buy))
        .with_state(state)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, content: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}}\
         .price{{font-size:1.4rem}}.error{{color:#b00020}}button{{font-size:1.1rem;padding:.4rem 1.2rem}}</style>\
         </head><body><h1>{t}</h1>{content}</body></html>\n",
        t = escape(title)
    )
}

/// The link back to the demo shop, which exists in test mode only.
fn back_link(state: &CheckoutState) -> &'static str {
    if state.stripe.mode().is_live() {
        ""
    } else {
        "<p><a href=\"/\">Back to the shop</a></p>"
    }
}

fn html_error(error: &ApiError) -> Response {
    let body = page(
        "Something went wrong",
        &format!(
            "<p class=\"error\" id=\"error\">{}</p>",
            escape(&error.message)
        ),
    );
    (error.status, Html(body)).into_response()
}

/// A page that calls Stripe (and, for `/success`, holds a database connection) takes a permit:
/// at most [`crate::checkout::PAGE_CALLS_IN_FLIGHT`] at once, so a flood of page requests
/// cannot take every pooled connection; above it, 503 and "try again".
fn page_permit(state: &CheckoutState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    state.page_calls.clone().try_acquire_owned().ok()
}

fn busy() -> Response {
    metrics::counter!("kassa_page_requests_shed_total").increment(1);
    html_error(&ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "Too many requests at once; please try again in a moment.",
    ))
}

async fn shop(State(state): State<CheckoutState>) -> Html<String> {
    let product = &state.settings.product;
    Html(page(
        "Kassa shop",
        &format!(
            "<h2 id=\"product\">{name}</h2><p class=\"price\" id=\"price\">{price}</p>\
             <form action=\"/create-checkout-session\" method=\"post\">\
             <p><label>E-mail for the receipt (optional) <input type=\"email\" name=\"email\" id=\"email\"></label></p>\
             <p><label>Quantity <input type=\"number\" name=\"quantity\" id=\"quantity\" value=\"1\" min=\"1\" max=\"99\"></label></p>\
             <button type=\"submit\" id=\"buy\">Buy</button></form>\
             <p><small>Payments by Stripe Checkout{mode}.</small></p>",
            name = escape(&product.name),
            price = escape(&format_amount(product.unit_amount, &product.currency)),
            mode = if state.stripe.mode().is_live() {
                ""
            } else {
                " — test mode: no real money moves"
            },
        ),
    ))
}

/// The Buy form.
#[derive(Debug, Deserialize)]
struct BuyForm {
    email: Option<String>,
    quantity: Option<String>,
}

async fn buy(State(state): State<CheckoutState>, Form(form): Form<BuyForm>) -> Response {
    let Some(_permit) = page_permit(&state) else {
        return busy();
    };
    let product = state.settings.product.clone();
    let quantity = match form.quantity.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(q) => match q.parse::<u64>() {
            Ok(q) if (1..=99).contains(&q) => q,
            _ => {
                return html_error(&ApiError::bad_request(
                    "invalid_field",
                    "quantity: a whole number from 1 to 99",
                ))
            }
        },
    };
    let total = product.unit_amount.saturating_mul(quantity as i64);
    let plan = CheckoutPlan {
        mode: CheckoutMode::Payment,
        currency: product.currency,
        records: vec![CheckoutRecord {
            name: product.name.clone(),
            unit_amount: product.unit_amount,
            quantity,
            product_code: Some(product.product_code.clone()),
        }],
        total,
    };
    let request = CheckoutRequest {
        customer_email: form.email.filter(|e| !e.trim().is_empty()),
        ..Default::default()
    };
    // A fresh key per click: each Buy is a new session.
    let key = match crate::idempotency::fresh("shop") {
        Ok(key) => key,
        Err(error) => return html_error(&error),
    };
    let created = create_session(&state.stripe, &state.settings, &plan, &request, &key)
        .instrument(tracing::info_span!("shop_buy"))
        .await;
    match created {
        Ok(session) => match session.url {
            Some(url) => {
                info!(checkout_session = %session.id, "customer sent to Stripe Checkout");
                Redirect::to(&url).into_response()
            }
            None => html_error(&ApiError::new(
                StatusCode::BAD_GATEWAY,
                "stripe_error",
                "Stripe returned a session without a URL",
            )),
        },
        Err(error) => html_error(&error),
    }
}

/// `?session_id=cs_…`.
#[derive(Debug, Deserialize)]
struct SuccessQuery {
    session_id: Option<String>,
}

async fn success(
    State(state): State<CheckoutState>,
    Query(query): Query<SuccessQuery>,
) -> Response {
    let Some(session_id) = query
        .session_id
        .filter(|id| id.starts_with("cs_") && id.len() <= 255)
    else {
        return html_error(&ApiError::bad_request(
            "invalid_field",
            "session_id: missing or not a Checkout Session id",
        ));
    };
    let Some(_permit) = page_permit(&state) else {
        return busy();
    };
    let span = tracing::info_span!("success_page", checkout_session = %session_id);
    let outcome = state
        .fulfilment
        .checkout_session(session_id.clone())
        .instrument(span)
        .await;
    let (status, title, content) = match outcome {
        Ok(PageOutcome::Paid {
            payment_intent_id,
            amount,
            currency,
            ..
        }) => {
            let shown = Currency::parse(&currency)
                .map(|c| format_amount(amount, &c))
                .unwrap_or_else(|_| format!("{amount} {currency}"));
            (
                StatusCode::OK,
                "Thank you!",
                format!(
                    "<p id=\"outcome\" data-status=\"paid\">Payment received: <strong id=\"amount\">{}</strong>.</p>\
                     <p>Reference: <code id=\"payment-intent\">{}</code></p>{}",
                    escape(&shown),
                    escape(&payment_intent_id),
                    back_link(&state)
                ),
            )
        }
        Ok(PageOutcome::CardSaved { .. }) => (
            StatusCode::OK,
            "Card saved",
            "<p id=\"outcome\" data-status=\"card_saved\">Your card is saved for future payments.</p>"
                .to_owned(),
        ),
        Ok(PageOutcome::NotPaid(status)) => (
            StatusCode::OK,
            "Not paid yet",
            format!(
                "<p id=\"outcome\" data-status=\"not_paid\">This checkout is not paid ({}). \
                 If you just paid, refresh this page in a moment.</p>{}",
                escape(&status),
                back_link(&state)
            ),
        ),
        Err(error) => return html_error(&fulfil_error(&error)),
    };
    let mut response = (status, Html(page(title, &content))).into_response();
    // The outcome changes with time (not paid → paid): never cached.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

async fn cancel(State(state): State<CheckoutState>) -> Html<String> {
    Html(page(
        "Payment cancelled",
        &format!(
            "<p id=\"outcome\" data-status=\"cancelled\">Nothing was charged.</p>{}",
            back_link(&state)
        ),
    ))
}
