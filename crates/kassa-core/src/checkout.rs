//! What the merchant's pages and tools ask Kassa to create at Stripe: Checkout Sessions from
//! records ([`plan_checkout`], then [`create_session`]) and PaymentIntents for the merchant's
//! own payment form ([`create_payment_intent`]).
//!
//! Every session created here is recorded at once (`checkout_sessions`): the success page serves
//! only sessions Kassa knows, and answers any other id without calling Stripe.
//!
//! A record with a `product_code` updates the Stripe product whose `metadata.product_code`
//! matches, or creates it; prices go as `price_data`. Stripe keeps a session open for 24 hours
//! and it can be paid once. Every request is checked against Stripe's money rules before
//! anything is sent (zero-decimal currencies are never multiplied by 100), and each refusal
//! names its field.

use crate::fields::{self, field_error, FieldError};
use crate::keys;
use kassa_stripe::money::{validate_amount, Currency};
use kassa_stripe::objects::{CheckoutMode, CheckoutSession, Metadata, PaymentIntent};
use kassa_stripe::resources::{
    CheckoutLineItem, CreateCheckoutSession, CreatePaymentIntent, IntentData, PriceData,
    ProductData, ProductParams, SearchProducts,
};
use kassa_stripe::{Client, IdempotencyKey, StripeError};
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

pub use kassa_store::payments::{
    API_SOURCE, CHECKOUT_SOURCE, RECEIPT_EMAIL_METADATA, SOURCE_METADATA,
};

/// Metadata key that ties a Stripe product to the merchant's product code.
pub const PRODUCT_CODE_METADATA: &str = "product_code";

/// Records on one session at most (Stripe: "up to 100 line items" per Checkout Session).
pub const MAX_RECORDS: usize = 100;

/// Why a session or PaymentIntent was not created.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// A field of the request is refused; nothing was sent to Stripe.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Stripe refused or did not answer.
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeError),
    /// Kassa could not build an Idempotency-Key (a bug, not the caller's).
    #[error("idempotency key: {0}")]
    Key(String),
    /// The session was created at Stripe but could not be recorded (the caller may retry with
    /// the same Idempotency-Key: Stripe answers with the same session).
    #[error("database: {0}")]
    Store(#[from] kassa_store::StoreError),
}

fn source_metadata(source: &str) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(SOURCE_METADATA.into(), source.into());
    metadata
}

/// A Checkout Session request, as `POST /api/checkout-sessions` takes it (JSON). An unknown
/// field is refused (a typo such as `curency` must not quietly become the default currency).
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
    /// The session's mode (`true`: live); absent, the deployment's default mode.
    pub livemode: Option<bool>,
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

/// A product code: 1 to 100 of `A-Z a-z 0-9 _ - .` (it goes into a search query).
fn valid_product_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 100
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn record(index: usize, raw: &Value, currency: &Currency) -> Result<CheckoutRecord, FieldError> {
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
    let unit_amount = fields::amount(object.get("unit_amount"), &at("unit_amount"))?;
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
pub fn plan_checkout(request: &CheckoutRequest) -> Result<CheckoutPlan, FieldError> {
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
    let currency = fields::currency(request.currency.as_deref().unwrap_or("usd"), "currency")?;
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
        return Err(FieldError {
            code: "records_empty",
            field: "records".into(),
            message: "records: at least one record is required in payment mode".into(),
        });
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

fn http_url(field: &str, value: &str) -> Result<String, FieldError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(value.to_owned()),
        _ => Err(field_error(field, "must be an absolute http(s) URL")),
    }
}

/// The Stripe customer `id`, or a refusal naming `customer` if Stripe does not know it.
async fn existing_customer(stripe: &Client, id: &str) -> Result<String, CheckoutError> {
    match stripe.customers().retrieve(id, &[]).await {
        Ok(customer) if !customer.deleted => Ok(customer.id),
        Ok(_) => Err(field_error("customer", format!("{id} is deleted")).into()),
        Err(error) if error.is_resource_missing() => {
            Err(field_error("customer", format!("unknown customer {id}")).into())
        }
        Err(error) => Err(error.into()),
    }
}

fn key_error(error: impl std::fmt::Display) -> CheckoutError {
    CheckoutError::Key(error.to_string())
}

/// The Stripe product for `code`: the one whose `metadata.product_code` is `code` (renamed to
/// `name` if needed), or a new one.
///
/// Stripe's search index can lag a create by about a minute; the create's Idempotency-Key
/// (`kassa:{installation}:product:{code}:create:{sha256(name)}`) makes a second create within 24
/// hours return the first product instead of a duplicate.
pub async fn upsert_product(
    stripe: &Client,
    installation: &str,
    code: &str,
    name: &str,
) -> Result<String, CheckoutError> {
    let search = SearchProducts {
        query: format!("metadata['{PRODUCT_CODE_METADATA}']:'{code}'"),
        limit: Some(10),
        page: None,
    };
    let found = stripe.products().search(&search).await?;
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
            let key = keys::content(
                installation,
                &format!("product:{}:update", product.id),
                &uuid::Uuid::new_v4().to_string(),
            )
            .map_err(key_error)?;
            stripe.products().update(&product.id, &params, &key).await?;
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
    let key =
        keys::content(installation, &format!("product:{code}:create"), name).map_err(key_error)?;
    let product = stripe.products().create(&params, &key).await?;
    info!(product = %product.id, product_code = code, "product created");
    Ok(product.id)
}

/// Creates the Checkout Session of a validated plan: products first, then the session, under
/// `key`, and records it in `store`. Customers come back to `public_url`'s `/success` and
/// `/cancel` unless the request names its own pages.
pub async fn create_session(
    stripe: &Client,
    store: &kassa_store::Store,
    installation: &str,
    public_url: &str,
    plan: &CheckoutPlan,
    request: &CheckoutRequest,
    key: &IdempotencyKey,
) -> Result<CheckoutSession, CheckoutError> {
    let public = public_url.trim_end_matches('/');
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
            fields::email(email, "customer_email")?;
            if customer.is_some() {
                return Err(field_error(
                    "customer_email",
                    "give customer or customer_email, not both",
                )
                .into());
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
                Some(upsert_product(stripe, installation, code, &record.name).await?),
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
    let session = stripe.checkout_sessions().create(&params, key).await?;
    // Recorded before the customer can reach the success page: that page looks the id up here
    // first and never calls Stripe for an id Kassa did not create. A session already recorded
    // as complete (the webhook was first) stays complete.
    let mut tx = store.begin().await?;
    kassa_store::checkout_sessions::upsert_checkout_session(
        &mut tx,
        &crate::records::session_record(&session, installation, None, None),
    )
    .await?;
    tx.commit().await.map_err(kassa_store::StoreError::from)?;
    Ok(session)
}

/// A PaymentIntent request, as `POST /api/payment-intents` takes it (JSON); an unknown field is
/// refused.
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
    /// More PaymentIntent parameters passed to Stripe, from [`CUSTOM_PROPS`] only.
    pub custom_props: Option<Value>,
    /// The PaymentIntent's mode (`true`: live); absent, the deployment's default mode.
    pub livemode: Option<bool>,
}

/// The PaymentIntent parameters `custom_props` may carry; any other is refused by name.
pub const CUSTOM_PROPS: [&str; 5] = [
    "description",
    "metadata",
    "statement_descriptor_suffix",
    "setup_future_usage",
    "receipt_email",
];

/// `custom_props`, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CustomProps {
    /// Shown in Stripe and on the receipt.
    pub description: Option<String>,
    /// The caller's metadata, merged with Kassa's own.
    pub metadata: Metadata,
    /// Appended to the account's statement descriptor.
    pub statement_descriptor_suffix: Option<String>,
    /// `on_session` or `off_session`: save the card for later.
    pub setup_future_usage: Option<String>,
    /// Where Kassa sends the receipt.
    pub receipt_email: Option<String>,
}

/// Checks `custom_props` against [`CUSTOM_PROPS`] and Stripe's limits for each parameter.
pub fn custom_props(value: Option<&Value>) -> Result<CustomProps, FieldError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(CustomProps::default()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(field_error("custom_props", "must be an object")),
    };
    if let Some(unknown) = map.keys().find(|k| !CUSTOM_PROPS.contains(&k.as_str())) {
        return Err(field_error(
            format!("custom_props.{unknown}"),
            format!(
                "not a PaymentIntent parameter Kassa passes on (allowed: {})",
                CUSTOM_PROPS.join(", ")
            ),
        ));
    }
    let text = |name: &str| {
        fields::optional_text(&map.get(name).cloned(), &format!("custom_props.{name}"))
    };
    let mut props = CustomProps {
        description: text("description")?,
        ..CustomProps::default()
    };
    let metadata = fields::metadata(&map.get("metadata").cloned())
        .map_err(|e| field_error("custom_props.metadata", e.to_string()))?;
    // Stripe: "up to 50 keys, with key names up to 40 characters long and values up to 500
    // characters long" (API reference, Metadata).
    if metadata.len() > 50 {
        return Err(field_error(
            "custom_props.metadata",
            "at most 50 keys (Stripe's limit)",
        ));
    }
    for (key, value) in &metadata {
        if key.is_empty() || key.chars().count() > 40 || key.contains(['[', ']']) {
            return Err(field_error(
                format!("custom_props.metadata.{key}"),
                "keys are 1 to 40 characters without [ or ] (Stripe's limit)",
            ));
        }
        if key.starts_with("kassa_") {
            return Err(field_error(
                format!("custom_props.metadata.{key}"),
                "keys starting with kassa_ are Kassa's own",
            ));
        }
        if value.chars().count() > 500 {
            return Err(field_error(
                format!("custom_props.metadata.{key}"),
                "values are at most 500 characters (Stripe's limit)",
            ));
        }
    }
    props.metadata = metadata;
    if let Some(suffix) = text("statement_descriptor_suffix")? {
        // Stripe: the suffix holds at least one letter, none of < > \ ' " *, and with the
        // account's prefix at most 22 characters.
        if suffix.chars().count() > 22
            || !suffix.chars().any(|c| c.is_ascii_alphabetic())
            || suffix.contains(['<', '>', '\\', '\'', '"', '*'])
        {
            return Err(field_error(
                "custom_props.statement_descriptor_suffix",
                "at most 22 characters, at least one letter, none of < > \\ ' \" *",
            ));
        }
        props.statement_descriptor_suffix = Some(suffix);
    }
    props.setup_future_usage = match text("setup_future_usage")?.as_deref() {
        None => None,
        Some(usage @ ("on_session" | "off_session")) => Some(usage.to_owned()),
        Some(_) => {
            return Err(field_error(
                "custom_props.setup_future_usage",
                "must be on_session or off_session",
            ))
        }
    };
    if let Some(email) = text("receipt_email")? {
        fields::email(&email, "custom_props.receipt_email")?;
        props.receipt_email = Some(email);
    }
    Ok(props)
}

/// Checks `request` and creates its PaymentIntent under `key` (the caller's).
pub async fn create_payment_intent(
    stripe: &Client,
    request: &PaymentIntentRequest,
    key: &IdempotencyKey,
) -> Result<PaymentIntent, CheckoutError> {
    let currency = fields::currency(request.currency.as_deref().unwrap_or("usd"), "currency")?;
    let amount = fields::chargeable_amount(request.amount.as_ref(), &currency, "amount")?;
    let props = custom_props(request.custom_props.as_ref())?;
    let receipt_email = match request.receipt_email.as_deref().map(str::trim) {
        Some(email) if !email.is_empty() => {
            fields::email(email, "receipt_email")?;
            Some(email.to_owned())
        }
        _ => None,
    };
    if receipt_email.is_some() && props.receipt_email.is_some() {
        return Err(field_error("custom_props.receipt_email", "give receipt_email once").into());
    }
    if request.description.is_some() && props.description.is_some() {
        return Err(field_error("custom_props.description", "give description once").into());
    }
    let receipt_email = receipt_email.or(props.receipt_email);
    let customer = match request.customer.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => Some(existing_customer(stripe, id).await?),
        _ => None,
    };
    let mut metadata = props.metadata;
    metadata.extend(source_metadata(API_SOURCE));
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
        description: request.description.clone().or(props.description),
        metadata: Some(metadata),
        statement_descriptor_suffix: props.statement_descriptor_suffix,
        setup_future_usage: props.setup_future_usage,
        ..Default::default()
    };
    Ok(stripe.payment_intents().create(&params, key).await?)
}
