//! The merchant's page: a product with a Buy button (`GET /`), the form post that starts Stripe
//! Checkout (`POST /create-checkout-session` → 303 to the session's URL), the success page
//! (`GET /success?session_id=…`, reached through `success_url`'s `{CHECKOUT_SESSION_ID}`), which
//! fulfils synchronously through kassa-core's [`kassa_core::fulfil`] — the webhook and this page
//! race, the first records the payment and the second finds it recorded — and `GET /cancel`;
//! in test mode the shop also has a "save your card" page (`/save-your-card`, a setup-mode
//! Checkout Session). `/success` serves only Checkout Sessions Kassa recorded (it records every
//! session it creates): any other id is a 404 without a Stripe call.
//!
//! The pages use the deployment's default mode (`KASSA_DEFAULT_MODE`, or the only configured
//! one); the same pages under `/preview/` ([`preview_router`]) always use test mode, like a page
//! editor's preview, and `/success` reads each session with the key of its recorded mode.
//!
//! Plain HTML without JavaScript, one askama template per page (`templates/pages/`), every value
//! escaped; no token (customers use these pages).

use crate::error::ApiError;
use crate::{page_permit, ApiState};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Form, Router};
use kassa_core::checkout::{create_session, CheckoutPlan, CheckoutRecord, CheckoutRequest};
use kassa_core::fulfil::PageOutcome;
use kassa_stripe::money::{format_amount, Currency};
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::Mode;
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

/// Which pages a request is on: the merchant's own (the default mode) or the preview under
/// [`PREVIEW_PREFIX`] (always test mode, like a page editor's preview: nothing a preview does
/// moves real money).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageView {
    /// `/`, `/success`, …: the deployment's default mode.
    Merchant,
    /// `/preview/`, `/preview/success`, …: test mode.
    Preview,
}

/// Where the preview of the pages is mounted.
pub const PREVIEW_PREFIX: &str = "/preview";

impl PageView {
    /// The mode the pages' Checkout Sessions are created in.
    pub fn mode(self, state: &ApiState) -> Mode {
        match self {
            PageView::Merchant => state.modes.default_mode(),
            PageView::Preview => Mode::Test,
        }
    }

    /// The path the pages' links start with (`""` or [`PREVIEW_PREFIX`]).
    pub fn base(self) -> &'static str {
        match self {
            PageView::Merchant => "",
            PageView::Preview => PREVIEW_PREFIX,
        }
    }
}

/// The pages Checkout sends customers back to, `/success` and `/cancel`: the default
/// `success_url`/`cancel_url` of every session Kassa creates, in test and live mode.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/success", get(success))
        .route("/cancel", get(cancel))
        .layer(Extension(PageView::Merchant))
}

/// The demo shop, `GET /` and `POST /create-checkout-session`, selling [`ShopProduct::demo`].
/// Mount it in test mode only: in live mode anyone could pay real money for a demo product
/// (and create it in the live catalogue).
pub fn shop_router() -> Router<ApiState> {
    shop_routes().layer(Extension(PageView::Merchant))
}

fn shop_routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(shop))
        .route("/create-checkout-session", post(buy))
        .route(
            "/save-your-card",
            get(save_your_card).post(save_your_card_start),
        )
}

/// The preview: the shop, save-your-card, success and cancel pages under [`PREVIEW_PREFIX`],
/// always in test mode whatever the default mode. Without test keys every preview path is a
/// 404 page saying so (nothing is ever previewed with live keys).
pub fn preview_router(test_configured: bool) -> Router<ApiState> {
    if !test_configured {
        return Router::new()
            .route("/preview", get(no_preview))
            .route("/preview/", get(no_preview))
            .route("/preview/{*page}", get(no_preview).post(no_preview));
    }
    Router::new()
        .route("/preview", get(|| async { Redirect::to("/preview/") }))
        .route("/preview/", get(shop))
        .route("/preview/create-checkout-session", post(buy))
        .route(
            "/preview/save-your-card",
            get(save_your_card).post(save_your_card_start),
        )
        .route("/preview/success", get(success))
        .route("/preview/cancel", get(cancel))
        .layer(Extension(PageView::Preview))
}

async fn no_preview() -> Response {
    html_error(&ApiError::new(
        StatusCode::NOT_FOUND,
        "preview_unavailable",
        "The preview uses Stripe's test mode, and this deployment has no test keys \
         (KASSA_STRIPE_TEST_SECRET_KEY).",
    ))
}

#[derive(Template)]
#[template(path = "pages/save_your_card.html")]
struct SaveYourCardPage {
    live: bool,
    base: &'static str,
}

/// The demo shop's "save your card" page: the flow the service exists for — a card saved now,
/// charged later by the back office.
async fn save_your_card(
    State(state): State<ApiState>,
    Extension(view): Extension<PageView>,
) -> Response {
    render(
        StatusCode::OK,
        &SaveYourCardPage {
            live: view.mode(&state).is_live(),
            base: view.base(),
        },
    )
}

/// The save-your-card form.
#[derive(Debug, Deserialize)]
struct SaveCardForm {
    email: Option<String>,
}

async fn save_your_card_start(
    State(state): State<ApiState>,
    Extension(view): Extension<PageView>,
    Form(form): Form<SaveCardForm>,
) -> Response {
    let Some(_permit) = page_permit(&state) else {
        return busy();
    };
    let plan = CheckoutPlan {
        mode: CheckoutMode::Setup,
        currency: state.settings.product.currency,
        records: Vec::new(),
        total: 0,
    };
    let request = CheckoutRequest {
        customer_email: form.email.filter(|e| !e.trim().is_empty()),
        ..Default::default()
    };
    start_checkout(&state, view, "shop_save_card", &plan, request).await
}

/// Creates the Checkout Session of a demo-shop form under a fresh key (each click is a new
/// session; `scope` names the form) and sends the customer to it: 303 to Checkout, or an error
/// page.
async fn start_checkout(
    state: &ApiState,
    view: PageView,
    scope: &'static str,
    plan: &CheckoutPlan,
    mut request: CheckoutRequest,
) -> Response {
    let mode = view.mode(state);
    let stripe = match state.modes.client(mode) {
        Ok(stripe) => stripe,
        Err(error) => return html_error(&error.into()),
    };
    let key = match kassa_core::keys::fresh(state.installation(), scope) {
        Ok(key) => key,
        Err(error) => return html_error(&error.into()),
    };
    // Customers come back to the pages they started from: a preview's to the preview's.
    let public = &state.settings.public_url;
    let base = view.base();
    request.success_url = Some(format!(
        "{public}{base}/success?session_id={{CHECKOUT_SESSION_ID}}"
    ));
    request.cancel_url = Some(format!("{public}{base}/cancel"));
    let created = create_session(
        stripe,
        &state.store,
        state.installation(),
        public,
        plan,
        &request,
        &key,
    )
    .instrument(tracing::info_span!("shop_checkout", form = scope, %mode))
    .await
    .map_err(ApiError::from);
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

#[derive(Template)]
#[template(path = "pages/shop.html")]
struct ShopPage<'a> {
    name: &'a str,
    price: &'a str,
    live: bool,
    base: &'static str,
}

/// What `/success` found.
enum SuccessOutcome {
    Paid {
        amount: String,
        payment_intent: String,
    },
    CardSaved,
    NotPaid {
        status: String,
    },
}

#[derive(Template)]
#[template(path = "pages/success.html")]
struct SuccessPage {
    outcome: SuccessOutcome,
    shop_link: bool,
    base: &'static str,
}

impl SuccessPage {
    fn heading(&self) -> &'static str {
        match self.outcome {
            SuccessOutcome::Paid { .. } => "Thank you!",
            SuccessOutcome::CardSaved => "Card saved",
            SuccessOutcome::NotPaid { .. } => "Not paid yet",
        }
    }
}

#[derive(Template)]
#[template(path = "pages/cancel.html")]
struct CancelPage {
    shop_link: bool,
    base: &'static str,
}

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

/// A rendered page with `status`; a template that cannot render is a bare 500.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Whether a page of `view` links back to the demo shop, which exists in test mode only.
pub(crate) fn shop_link(state: &ApiState, view: PageView) -> bool {
    !view.mode(state).is_live()
}

pub(crate) fn html_error(error: &ApiError) -> Response {
    render(
        error.status,
        &ErrorPage {
            message: &error.message,
        },
    )
}

fn busy() -> Response {
    html_error(&ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "Too many requests at once; please try again in a moment.",
    ))
}

async fn shop(State(state): State<ApiState>, Extension(view): Extension<PageView>) -> Response {
    let product = &state.settings.product;
    let price = format_amount(product.unit_amount, &product.currency);
    render(
        StatusCode::OK,
        &ShopPage {
            name: &product.name,
            price: &price,
            live: view.mode(&state).is_live(),
            base: view.base(),
        },
    )
}

/// The Buy form.
#[derive(Debug, Deserialize)]
struct BuyForm {
    email: Option<String>,
    quantity: Option<String>,
}

async fn buy(
    State(state): State<ApiState>,
    Extension(view): Extension<PageView>,
    Form(form): Form<BuyForm>,
) -> Response {
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
    start_checkout(&state, view, "shop", &plan, request).await
}

/// `?session_id=cs_…`.
#[derive(Debug, Deserialize)]
struct SuccessQuery {
    session_id: Option<String>,
}

async fn success(
    State(state): State<ApiState>,
    Extension(view): Extension<PageView>,
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
    // Only sessions Kassa created (or was told of by a webhook) are looked up at Stripe: a
    // made-up id costs one indexed read here, never a Stripe call.
    // The session is read with the key of its own recorded mode; a preview shows test-mode
    // sessions only.
    let not_found = || {
        html_error(&ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such checkout session.",
        ))
    };
    let mode = match state.store.checkout_session(&session_id).await {
        Ok(Some(session)) if view == PageView::Preview && session.livemode => return not_found(),
        Ok(Some(session)) => Mode::from_livemode(session.livemode),
        Ok(None) => return not_found(),
        Err(error) => return html_error(&ApiError::from_store(&error)),
    };
    let Some(_permit) = page_permit(&state) else {
        return busy();
    };
    let span = tracing::info_span!("success_page", checkout_session = %session_id, %mode);
    let outcome = state
        .fulfilment
        .checkout_session(mode, &session_id)
        .instrument(span)
        .await;
    let outcome = match outcome {
        Ok(PageOutcome::Paid {
            payment_intent_id,
            amount,
            currency,
            ..
        }) => SuccessOutcome::Paid {
            amount: Currency::parse(&currency)
                .map(|c| format_amount(amount, &c))
                .unwrap_or_else(|_| format!("{amount} {currency}")),
            payment_intent: payment_intent_id,
        },
        Ok(PageOutcome::CardSaved { .. }) => SuccessOutcome::CardSaved,
        Ok(PageOutcome::NotPaid(status)) => SuccessOutcome::NotPaid { status },
        Err(error) => return html_error(&ApiError::from_fulfil(&error)),
    };
    let page = SuccessPage {
        outcome,
        shop_link: shop_link(&state, view),
        base: view.base(),
    };
    let mut response = render(StatusCode::OK, &page);
    // The outcome changes with time (not paid → paid): never cached.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

async fn cancel(State(state): State<ApiState>, Extension(view): Extension<PageView>) -> Response {
    render(
        StatusCode::OK,
        &CancelPage {
            shop_link: shop_link(&state, view),
            base: view.base(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show_and_keep_their_ids() {
        let page = ErrorPage {
            message: "<script>alert('x')</script> & \"Co\"",
        }
        .render()
        .unwrap();
        assert!(
            page.starts_with("<!doctype html>\n<html lang=\"en\"><head>"),
            "{page}"
        );
        assert!(
            page.contains("<title>Something went wrong</title>"),
            "{page}"
        );
        assert!(page.contains("<h1>Something went wrong</h1>"), "{page}");
        assert!(
            page.contains("<p class=\"error\" id=\"error\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;</p>"),
            "{page}"
        );
        let shop = ShopPage {
            name: "Tea & <b>cake</b>",
            price: "$20.00",
            live: false,
            base: "/preview",
        }
        .render()
        .unwrap();
        assert!(
            shop.contains("<h2 id=\"product\">Tea &amp; &lt;b&gt;cake&lt;/b&gt;</h2>"),
            "{shop}"
        );
        assert!(shop.contains("id=\"buy\"") && shop.contains("test mode: no real money moves"));
        assert!(
            shop.contains("action=\"/preview/create-checkout-session\""),
            "a preview's form stays in the preview: {shop}"
        );
        let success = SuccessPage {
            outcome: SuccessOutcome::Paid {
                amount: "$40.00".into(),
                payment_intent: "pi_1".into(),
            },
            shop_link: false,
            base: "",
        }
        .render()
        .unwrap();
        assert!(success.contains("<title>Thank you!</title>"), "{success}");
        assert!(
            success.contains(
                "data-status=\"paid\">Payment received: <strong id=\"amount\">$40.00</strong>."
            ),
            "{success}"
        );
        assert!(
            !success.contains("Back to the shop"),
            "live mode has no shop: {success}"
        );
    }
}
