//! Checkout and payment endpoints for merchants' own pages and back-office tools.
//!
//! - `POST /api/checkout-sessions`: a Checkout Session from records (name, unit amount, quantity,
//!   optional product code). A record with a `product_code` updates the Stripe product whose
//!   `metadata.product_code` matches, or creates it; prices go as `price_data`. Returns
//!   `{id, url, expires_at}`; Stripe keeps a session open for 24 hours and it can be paid once.
//! - `POST /api/payment-intents`: a PaymentIntent for the merchant's own payment form →
//!   `{id, client_secret, publishable_key}`.
//! - `POST /api/payment-intents/{id}/confirmation`: the merchant page says it was paid; Kassa reads
//!   Stripe's state and records the payment once.
//!
//! All of them take the Bearer `KASSA_ADMIN_TOKEN`. Unlike the webhook route these call Stripe; a
//! payment is recorded through the worker's code ([`Fulfilment`], given by the binary), the same
//! code the webhooks run, so whichever path arrives first acts and the others find it done.

use crate::admin::check_bearer;
use crate::error::ApiError;
use crate::idempotency;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kassa_stripe::money::{format_amount, validate_amount, Currency};
use kassa_stripe::objects::{CheckoutMode, CheckoutSession, Metadata};
use kassa_stripe::resources::{
    CheckoutLineItem, CreateCheckoutSession, CreatePaymentIntent, IntentData, PriceData,
    ProductData, ProductParams, SearchProducts,
};
use kassa_stripe::{Client, IdempotencyKey, StripeError};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tracing::{info, Instrument};

/// Metadata key that ties a Stripe product to the merchant's product code.
pub const PRODUCT_CODE_METADATA: &str = "product_code";

pub use kassa_store::payments::{
    API_SOURCE, CHECKOUT_SOURCE, RECEIPT_EMAIL_METADATA, SOURCE_METADATA,
};

fn source_metadata(source: &str) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(SOURCE_METADATA.into(), source.into());
    metadata
}

/// Records on one session at most (Stripe: "up to 100 line items" per Checkout Session).
pub const MAX_RECORDS: usize = 100;

/// A boxed future, so [`Fulfilment`] can be a trait object.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What fulfilling found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutcome {
    /// Paid and recorded (`first`: by this call; otherwise another path had recorded it).
    Paid {
        /// `pi_…`.
        payment_intent_id: String,
        /// Minor units.
        amount: i64,
        /// Lower-case ISO code.
        currency: String,
        /// Whether this call recorded it.
        first: bool,
    },
    /// A setup session: the card is saved as the customer's default.
    CardSaved {
        /// `cus_…`.
        customer_id: String,
    },
    /// Not paid (yet): Stripe's status, for people.
    NotPaid(String),
}

/// Why fulfilling failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FulfilError {
    /// Trying again later may help (Stripe or the database unavailable).
    pub transient: bool,
    /// The object does not exist at Stripe.
    pub not_found: bool,
    /// What happened.
    pub message: String,
}

/// The worker's idempotent fulfilment, run synchronously for the pages and the API.
pub trait Fulfilment: Send + Sync + 'static {
    /// Fulfils the Checkout Session `session_id` as the success page.
    fn checkout_session(&self, session_id: String) -> BoxFuture<Result<PageOutcome, FulfilError>>;
    /// Records the PaymentIntent `payment_intent_id` if it succeeded, as the confirmation call.
    fn payment_intent(
        &self,
        payment_intent_id: String,
    ) -> BoxFuture<Result<PageOutcome, FulfilError>>;
}

/// Settings of the checkout routes and pages.
#[derive(Debug, Clone)]
pub struct CheckoutSettings {
    /// `KASSA_PUBLIC_URL` without a trailing slash: the default success and cancel pages.
    pub public_url: String,
    /// `KASSA_STRIPE_PUBLISHABLE_KEY`, handed to the merchant's payment form.
    pub publishable_key: Option<String>,
    /// What the merchant page sells.
    pub product: crate::pages::ShopProduct,
}

/// What the checkout routes share.
#[derive(Clone)]
pub struct CheckoutState {
    pub(crate) stripe: Client,
    pub(crate) token: Arc<SecretString>,
    pub(crate) settings: Arc<CheckoutSettings>,
    pub(crate) fulfilment: Arc<dyn Fulfilment>,
    pub(crate) page_calls: Arc<tokio::sync::Semaphore>,
}

/// Requests that call Stripe from the merchant pages (`/success`, the shop's Buy) and payment
/// confirmations served at once (each may hold a database connection meanwhile); more are
/// answered 503.
pub const PAGE_CALLS_IN_FLIGHT: usize = 16;

impl std::fmt::Debug for CheckoutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckoutState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CheckoutState {
    /// Routes calling `stripe`, guarded by `token`, fulfilling through `fulfilment`.
    pub fn new(
        stripe: Client,
        token: SecretString,
        settings: CheckoutSettings,
        fulfilment: Arc<dyn Fulfilment>,
    ) -> Self {
        Self {
            stripe,
            token: Arc::new(token),
            settings: Arc::new(settings),
            fulfilment,
            page_calls: Arc::new(tokio::sync::Semaphore::new(PAGE_CALLS_IN_FLIGHT)),
        }
    }
}

/// The API routes (the merchant pages are in [`crate::pages`]).
pub fn router(state: CheckoutState) -> Router {
    Router::new()
        .route("/api/checkout-sessions", post(create_checkout_session))
        .route("/api/payment-intents", post(create_payment_intent))
        .route(
            "/api/payment-intents/{id}/confirmation",
            post(confirm_payment_intent),
        )
        .with_state(state)
}

/// `POST /api/checkout-sessions`, as JSON. An unknown field is refused (a typo such as
/// `curency` must not quietly become the default currency).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// What is bought: `{name, unit_amount, quantity, product_code?}` each.
    pub records: Option<Vec<Value>>,
    /// ISO code, any case; default `usd`.
    pub currency: Option<String>,
    /// `payment` (default) or `setup`.
    pub mode: Option<String>,
    /// An existing Stripe customer (`cus_…`).
    pub customer: Option<String>,
    /// Prefills the e-mail on the payment page.
    pub customer_email: Option<String>,
    /// Default: Kassa's `/success?session_id={CHECKOUT_SESSION_ID}`.
    pub success_url: Option<String>,
    /// Default: Kassa's `/cancel`.
    pub cancel_url: Option<String>,
}

/// One validated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRecord {
    /// Shown to the customer.
    pub name: String,
    /// Minor units per unit.
    pub unit_amount: i64,
    /// How many, at least 1.
    pub quantity: u64,
    /// The merchant's code: the Stripe product with this `metadata.product_code` is reused.
    pub product_code: Option<String>,
}

/// A validated checkout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutPlan {
    /// Payment or setup.
    pub mode: CheckoutMode,
    /// The currency.
    pub currency: Currency,
    /// The records (empty in setup mode).
    pub records: Vec<CheckoutRecord>,
    /// The total in minor units.
    pub total: i64,
}

fn field_error(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
    let field = field.into();
    ApiError::bad_request("invalid_field", format!("{field}: {message}")).with_field(field)
}

/// An integer of minor units from JSON (a number without a fraction; not a string).
pub fn json_integer(value: Option<&Value>, field: &str) -> Result<i64, ApiError> {
    match value {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            field_error(
                field,
                "must be an integer number of minor units (e.g. 1999 for $19.99, 1000 for ¥1,000)",
            )
        }),
        Some(Value::Null) | None => Err(field_error(field, "required")),
        Some(_) => Err(field_error(field, "must be a JSON integer, not a string")),
    }
}

/// A product code: 1 to 100 of `A-Z a-z 0-9 _ - .` (it goes into a search query).
fn valid_product_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 100
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn record(index: usize, raw: &Value, currency: &Currency) -> Result<CheckoutRecord, ApiError> {
    let at = |field: &str| format!("records[{index}].{field}");
    let Some(object) = raw.as_object() else {
        return Err(field_error(
            format!("records[{index}]"),
            "must be an object",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["name", "unit_amount", "quantity", "product_code"].contains(&k.as_str()))
    {
        return Err(field_error(
            at(unknown),
            "unknown field (expected name, unit_amount, quantity, product_code)",
        ));
    }
    let name = match object.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() && name.len() <= 250 => {
            name.trim().to_owned()
        }
        Some(Value::String(_)) => {
            return Err(field_error(at("name"), "must be 1 to 250 characters"))
        }
        None | Some(Value::Null) => return Err(field_error(at("name"), "required")),
        Some(_) => return Err(field_error(at("name"), "must be a string")),
    };
    let unit_amount = json_integer(object.get("unit_amount"), &at("unit_amount"))?;
    if unit_amount < 0 {
        return Err(field_error(at("unit_amount"), "must not be negative"));
    }
    if unit_amount % currency.amount_step() != 0 {
        return Err(field_error(
            at("unit_amount"),
            format!(
                "{} amounts must be multiples of {} minor units",
                currency.code().to_uppercase(),
                currency.amount_step()
            ),
        ));
    }
    let quantity = match object.get("quantity") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(q) if (1..=999_999).contains(&q) => q,
            _ => {
                return Err(field_error(
                    at("quantity"),
                    "must be an integer from 1 to 999999",
                ))
            }
        },
        Some(_) => return Err(field_error(at("quantity"), "must be a JSON integer")),
    };
    let product_code = match object.get("product_code") {
        None | Some(Value::Null) => None,
        Some(Value::String(code)) if valid_product_code(code) => Some(code.clone()),
        Some(_) => {
            return Err(field_error(
                at("product_code"),
                "must be 1 to 100 of A-Z a-z 0-9 _ - .",
            ))
        }
    };
    Ok(CheckoutRecord {
        name,
        unit_amount,
        quantity,
        product_code,
    })
}

/// Checks a checkout request against Stripe's money rules; the first problem is reported with its
/// field (`records[i].field` for a record).
pub fn plan_checkout(request: &CheckoutRequest) -> Result<CheckoutPlan, ApiError> {
    let mode = match request.mode.as_deref().map(str::trim) {
        None | Some("") | Some("payment") => CheckoutMode::Payment,
        Some("setup") => CheckoutMode::Setup,
        Some(other) => {
            return Err(field_error(
                "mode",
                format!("{other:?} is not one of payment, setup"),
            ))
        }
    };
    let currency = Currency::parse(request.currency.as_deref().unwrap_or("usd"))
        .map_err(|e| field_error("currency", e))?;
    let raw = request.records.as_deref().unwrap_or_default();
    if mode == CheckoutMode::Setup {
        if !raw.is_empty() {
            return Err(field_error("records", "must be empty in setup mode"));
        }
        return Ok(CheckoutPlan {
            mode,
            currency,
            records: Vec::new(),
            total: 0,
        });
    }
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "records_empty",
            "records: at least one record is required in payment mode",
        )
        .with_field("records"));
    }
    if raw.len() > MAX_RECORDS {
        return Err(field_error(
            "records",
            format!("at most {MAX_RECORDS} records per session"),
        ));
    }
    let records = raw
        .iter()
        .enumerate()
        .map(|(i, r)| record(i, r, &currency))
        .collect::<Result<Vec<_>, _>>()?;
    let total = records.iter().try_fold(0i64, |sum, r| {
        i64::try_from(r.quantity)
            .ok()
            .and_then(|q| r.unit_amount.checked_mul(q))
            .and_then(|line| sum.checked_add(line))
    });
    let total = total.ok_or_else(|| field_error("records", "the total is too large"))?;
    validate_amount(total, &currency)
        .map_err(|e| field_error("records", format!("the total: {e}")))?;
    Ok(CheckoutPlan {
        mode,
        currency,
        records,
        total,
    })
}

fn http_url(field: &str, value: &str) -> Result<String, ApiError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(value.to_owned()),
        _ => Err(field_error(field, "must be an absolute http(s) URL")),
    }
}

/// A key for `scope` and the exact text `content` (any characters): a SHA-256 of the content
/// keeps the key short and ASCII, and the same for every Kassa process.
fn derived_key(scope: &str, content: &str) -> Result<IdempotencyKey, ApiError> {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    IdempotencyKey::new(format!("{scope}:{digest}")).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })
}

/// The Stripe customer `id`, or a 400 naming `customer` if Stripe does not know it.
async fn existing_customer(stripe: &Client, id: &str) -> Result<String, ApiError> {
    match stripe.customers().retrieve(id, &[]).await {
        Ok(customer) if !customer.deleted => Ok(customer.id),
        Ok(_) => Err(field_error("customer", format!("{id} is deleted"))),
        Err(error) if error.is_resource_missing() => {
            Err(field_error("customer", format!("unknown customer {id}")))
        }
        Err(error) => Err(ApiError::from_stripe(&error)),
    }
}

/// The Stripe product for `code`: the one whose `metadata.product_code` is `code` (renamed to
/// `name` if needed), or a new one.
///
/// Stripe's search index can lag a create by about a minute; the create's Idempotency-Key
/// (`kassa:product:{code}:create:{sha256(name)}`) makes a second create within 24 hours return the first
/// product instead of a duplicate.
pub async fn upsert_product(stripe: &Client, code: &str, name: &str) -> Result<String, ApiError> {
    let search = SearchProducts {
        query: format!("metadata['{PRODUCT_CODE_METADATA}']:'{code}'"),
        limit: Some(10),
        page: None,
    };
    let found = stripe
        .products()
        .search(&search)
        .await
        .map_err(|e| ApiError::from_stripe(&e))?;
    // Oldest first: if a race ever made two, every caller settles on the same one.
    let existing = found
        .data
        .iter()
        .filter(|p| p.metadata.get(PRODUCT_CODE_METADATA).map(String::as_str) == Some(code))
        .min_by_key(|p| (p.created.unwrap_or_default(), p.id.clone()));
    if let Some(product) = existing {
        if product.name != name || !product.active {
            let params = ProductParams {
                name: Some(name.to_owned()),
                active: Some(true),
                ..Default::default()
            };
            // Setting a name is idempotent by itself, so a fresh key per call: a key derived
            // from the name would make a rename back to an earlier name within 24 h a replay of
            // the first update (Stripe answers a reused key with its saved result, changing
            // nothing). The client's own retries of this call keep the key.
            let key = derived_key(
                &format!("kassa:product:{}:update", product.id),
                &uuid::Uuid::new_v4().to_string(),
            )?;
            stripe
                .products()
                .update(&product.id, &params, &key)
                .await
                .map_err(|e| ApiError::from_stripe(&e))?;
            info!(product = %product.id, product_code = code, "product updated");
        }
        return Ok(product.id.clone());
    }
    let mut metadata = Metadata::new();
    metadata.insert(PRODUCT_CODE_METADATA.into(), code.to_owned());
    let params = ProductParams {
        name: Some(name.to_owned()),
        metadata: Some(metadata),
        ..Default::default()
    };
    let key = derived_key(&format!("kassa:product:{code}:create"), name)?;
    let product = stripe
        .products()
        .create(&params, &key)
        .await
        .map_err(|e| ApiError::from_stripe(&e))?;
    info!(product = %product.id, product_code = code, "product created");
    Ok(product.id)
}

/// Creates the Checkout Session of a validated plan: products first, then the session.
pub async fn create_session(
    stripe: &Client,
    settings: &CheckoutSettings,
    plan: &CheckoutPlan,
    request: &CheckoutRequest,
    key: &IdempotencyKey,
) -> Result<CheckoutSession, ApiError> {
    let public = settings.public_url.trim_end_matches('/');
    let success_url = match &request.success_url {
        Some(url) => http_url("success_url", url)?,
        None => format!("{public}/success?session_id={{CHECKOUT_SESSION_ID}}"),
    };
    let cancel_url = match &request.cancel_url {
        Some(url) => http_url("cancel_url", url)?,
        None => format!("{public}/cancel"),
    };
    let customer = match request.customer.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => Some(existing_customer(stripe, id).await?),
        _ => None,
    };
    let customer_email = match request.customer_email.as_deref().map(str::trim) {
        Some(email) if !email.is_empty() => {
            if !email.contains('@') || email.len() > 512 {
                return Err(field_error("customer_email", "not an e-mail address"));
            }
            if customer.is_some() {
                return Err(field_error(
                    "customer_email",
                    "give customer or customer_email, not both",
                ));
            }
            Some(email.to_owned())
        }
        _ => None,
    };
    let currency = plan.currency.code().to_owned();
    let mut line_items = Vec::with_capacity(plan.records.len());
    for record in &plan.records {
        let (product, product_data) = match &record.product_code {
            Some(code) => (
                Some(upsert_product(stripe, code, &record.name).await?),
                None,
            ),
            None => (
                None,
                Some(ProductData {
                    name: record.name.clone(),
                    ..Default::default()
                }),
            ),
        };
        line_items.push(CheckoutLineItem {
            price: None,
            price_data: Some(PriceData {
                currency: currency.clone(),
                unit_amount: Some(record.unit_amount),
                product,
                product_data,
            }),
            quantity: Some(record.quantity),
        });
    }
    let params = CreateCheckoutSession {
        mode: plan.mode,
        success_url: Some(success_url),
        cancel_url: Some(cancel_url),
        customer,
        customer_email,
        currency: (plan.mode == CheckoutMode::Setup).then_some(currency),
        line_items: (!line_items.is_empty()).then_some(line_items),
        payment_method_types: Some(vec!["card".into()]),
        // Marks the session and its PaymentIntent as Kassa's: only these are recorded and
        // announced as payments (not the account's invoices, Payment Links or subscriptions).
        metadata: Some(source_metadata(CHECKOUT_SOURCE)),
        payment_intent_data: (plan.mode == CheckoutMode::Payment).then(|| IntentData {
            metadata: Some(source_metadata(CHECKOUT_SOURCE)),
            ..Default::default()
        }),
        ..Default::default()
    };
    stripe
        .checkout_sessions()
        .create(&params, key)
        .await
        .map_err(|e| ApiError::from_stripe(&e))
}

fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::from_json_rejection(&e))
}

async fn create_checkout_session(
    State(state): State<CheckoutState>,
    headers: HeaderMap,
    body: Result<Json<CheckoutRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_bearer(&state.token, &headers)?;
    // A session in payment mode is paid by the customer: a retry without the caller's key
    // would make a second payable session.
    let key = idempotency::required(&headers, "checkout")?;
    let request = json_body(body)?;
    let plan = plan_checkout(&request)?;
    let session = create_session(&state.stripe, &state.settings, &plan, &request, &key)
        .instrument(tracing::info_span!("api_checkout_session"))
        .await?;
    info!(checkout_session = %session.id, total = %format_amount(plan.total, &plan.currency), "checkout session created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": session.id,
            "url": session.url,
            "expires_at": session.expires_at,
            "mode": match plan.mode { CheckoutMode::Setup => "setup", _ => "payment" },
            "amount_total": session.amount_total,
            "currency": plan.currency.code(),
        })),
    ))
}

/// `POST /api/payment-intents`, as JSON; an unknown field is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentIntentRequest {
    /// Minor units, a JSON integer.
    pub amount: Option<Value>,
    /// ISO code, any case; default `usd`.
    pub currency: Option<String>,
    /// An existing Stripe customer.
    pub customer: Option<String>,
    /// Shown in Stripe and on the receipt.
    pub description: Option<String>,
    /// Where the receipt goes.
    pub receipt_email: Option<String>,
}

async fn create_payment_intent(
    State(state): State<CheckoutState>,
    headers: HeaderMap,
    body: Result<Json<PaymentIntentRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_bearer(&state.token, &headers)?;
    // A PaymentIntent is what the customer pays: a retry without the caller's key would make a
    // second one.
    let key = idempotency::required(&headers, "payment_intent")?;
    let request = json_body(body)?;
    let currency = Currency::parse(request.currency.as_deref().unwrap_or("usd"))
        .map_err(|e| field_error("currency", e))?;
    let amount = json_integer(request.amount.as_ref(), "amount")?;
    validate_amount(amount, &currency).map_err(|e| field_error("amount", e))?;
    let receipt_email = match request.receipt_email.as_deref().map(str::trim) {
        Some(email) if !email.is_empty() => {
            if !email.contains('@') || email.len() > 512 {
                return Err(field_error("receipt_email", "not an e-mail address"));
            }
            Some(email.to_owned())
        }
        _ => None,
    };
    let customer = match request.customer.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => Some(existing_customer(&state.stripe, id).await?),
        _ => None,
    };
    let mut metadata = source_metadata(API_SOURCE);
    if let Some(email) = receipt_email {
        // Kassa sends the receipt (KASSA_SMTP_URL). Stripe's own `receipt_email` would make
        // Stripe send one too in live mode "regardless of your email settings" (API reference,
        // PaymentIntent.receipt_email): two receipts for one payment.
        metadata.insert(RECEIPT_EMAIL_METADATA.into(), email);
    }
    let params = CreatePaymentIntent {
        amount,
        currency: currency.code().to_owned(),
        customer,
        payment_method_types: Some(vec!["card".into()]),
        description: request.description.clone(),
        metadata: Some(metadata),
        ..Default::default()
    };
    let intent = state
        .stripe
        .payment_intents()
        .create(&params, &key)
        .await
        .map_err(|e: StripeError| ApiError::from_stripe(&e))?;
    info!(payment_intent = %intent.id, amount = %format_amount(amount, &currency), "payment intent created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": intent.id,
            "client_secret": intent.client_secret,
            "publishable_key": state.settings.publishable_key,
            "amount": intent.amount,
            "currency": intent.currency,
            "status": intent.status,
        })),
    ))
}

/// The answer for a failed fulfilment.
pub fn fulfil_error(error: &FulfilError) -> ApiError {
    if error.not_found {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", error.message.clone())
    } else if error.transient {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{}; try again", error.message),
        )
    } else {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot_fulfil",
            error.message.clone(),
        )
    }
}

async fn confirm_payment_intent(
    State(state): State<CheckoutState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_bearer(&state.token, &headers)?;
    // No Idempotency-Key here: this route sends Stripe nothing (it reads the PaymentIntent) and
    // records a payment once by its PaymentIntent id, whoever asks how often.
    if !id.starts_with("pi_") || id.len() > 255 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{id:?} is not a PaymentIntent id"),
        ));
    }
    // It holds a database connection while it reads Stripe, like the success page: one permit
    // of the same bound, so the pool is never exhausted by confirmations.
    let Some(_permit) = state.page_calls.clone().try_acquire_owned().ok() else {
        metrics::counter!("kassa_page_requests_shed_total").increment(1);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many payment confirmations and page requests at once; try again in a moment",
        ));
    };
    let span = tracing::info_span!("payment_confirmation", payment_intent = %id);
    let outcome = state
        .fulfilment
        .payment_intent(id.clone())
        .instrument(span)
        .await
        .map_err(|e| fulfil_error(&e))?;
    Ok(Json(match outcome {
        PageOutcome::Paid {
            payment_intent_id,
            amount,
            currency,
            first,
        } => json!({
            "payment_intent": payment_intent_id,
            "status": "succeeded",
            "recorded": true,
            "recorded_now": first,
            "amount": amount,
            "currency": currency,
        }),
        PageOutcome::NotPaid(status)
        | PageOutcome::CardSaved {
            customer_id: status,
        } => json!({
            "payment_intent": id,
            "status": status,
            "recorded": false,
            "recorded_now": false,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(records: Value) -> CheckoutRequest {
        CheckoutRequest {
            records: serde_json::from_value(records).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_records_are_refused_with_their_own_code() {
        let e = plan_checkout(&request(json!([]))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "records_empty");
        let e = plan_checkout(&CheckoutRequest::default()).unwrap_err();
        assert_eq!(e.code, "records_empty");
    }

    #[test]
    fn a_bad_record_is_named_by_index_and_field() {
        let e = plan_checkout(&request(json!([
            {"name": "Tea", "unit_amount": 500, "quantity": 1},
            {"name": "Cake", "unit_amount": "4.50", "quantity": 1}
        ])))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[1].unit_amount"));
        let e = plan_checkout(&request(json!([{"unit_amount": 500}]))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].name"));
        let e = plan_checkout(&request(
            json!([{"name": "x", "unit_amount": 500, "quantity": 0}]),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].quantity"));
        let e = plan_checkout(&request(
            json!([{"name": "x", "unit_amount": 500, "product_code": "a' OR 'b"}]),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].product_code"));
    }

    #[test]
    fn jpy_is_zero_decimal_and_three_decimal_currencies_step_by_ten() {
        let mut r = request(json!([{"name": "Tea", "unit_amount": 500, "quantity": 3}]));
        r.currency = Some("JPY".into());
        let plan = plan_checkout(&r).unwrap();
        assert_eq!(plan.total, 1500, "¥1,500: never multiplied by 100");
        assert_eq!(plan.currency.code(), "jpy");
        let mut r = request(json!([{"name": "Tea", "unit_amount": 1005}]));
        r.currency = Some("kwd".into());
        let e = plan_checkout(&r).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("records[0].unit_amount"));
        r.records = serde_json::from_value(json!([{"name": "Tea", "unit_amount": 1010}])).unwrap();
        assert_eq!(plan_checkout(&r).unwrap().total, 1010);
    }

    #[test]
    fn unknown_currency_and_a_total_below_the_minimum_are_refused() {
        let mut r = request(json!([{"name": "Tea", "unit_amount": 500}]));
        r.currency = Some("xyz".into());
        assert_eq!(
            plan_checkout(&r).unwrap_err().field.as_deref(),
            Some("currency")
        );
        let r = request(json!([{"name": "Gum", "unit_amount": 10}]));
        assert_eq!(
            plan_checkout(&r).unwrap_err().field.as_deref(),
            Some("records")
        );
    }

    #[test]
    fn setup_mode_takes_no_records() {
        let mut r = request(json!([]));
        r.mode = Some("setup".into());
        assert_eq!(plan_checkout(&r).unwrap().mode, CheckoutMode::Setup);
        let mut r = request(json!([{"name": "Tea", "unit_amount": 500}]));
        r.mode = Some("setup".into());
        assert!(plan_checkout(&r).is_err());
    }
}
