//! Connector actions (Bearer `KASSA_ADMIN_TOKEN`): small Stripe operations back-office tools and
//! automation platforms call directly.
//!
//! - `POST /api/customers {email?, name?, metadata?}` creates a customer.
//! - `GET /api/customers?email=…` finds customers by exact e-mail through Stripe's customer *list*
//!   (`GET /v1/customers?email=`), not Search: Stripe's search index lags writes ("data is
//!   typically searchable within a minute", docs: search), so a customer created a moment ago
//!   would not be found.
//! - `POST /api/products {name, description?, product_code?, metadata?}` creates a product
//!   (`product_code` goes to `metadata.product_code`, the key the checkout API upserts by).
//! - `POST /api/legacy-charges {amount, currency, source | customer, description?}` charges with
//!   the **legacy Charges API** (`POST /v1/charges`). Stripe keeps it for existing integrations
//!   but recommends PaymentIntents for new ones (they handle authentication such as 3-D Secure);
//!   Kassa's own payments use PaymentIntents (`/api/payment-intents`, the back-office charges).
//!
//! Unlike the webhook path these routes call Stripe, synchronously. Every POST to Stripe carries
//! an Idempotency-Key: `kassa:connector:{action}:{key}` where `key` is the caller's own
//! `Idempotency-Key` header (so a caller retrying after a time-out gets the first result, not a
//! second customer or charge; see [`crate::idempotency`]). A legacy charge moves money, so it
//! requires the header (`400 idempotency_key_required` without it); customers and products take
//! a fresh UUID when none is given. Bad input is refused with 400 naming the field before Stripe
//! is called, so nothing is created.

use crate::admin::check_bearer;
use crate::error::ApiError;
use crate::idempotency;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kassa_stripe::money::{validate_amount, Currency};
use kassa_stripe::objects::Metadata;
use kassa_stripe::resources::{CreateCharge, CustomerParams, ListCustomers, ProductParams};
use kassa_stripe::{Client, StripeError};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::info;

/// What the connector routes share.
#[derive(Clone)]
pub struct ConnectorState {
    stripe: Client,
    token: Arc<SecretString>,
}

impl std::fmt::Debug for ConnectorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorState").finish_non_exhaustive()
    }
}

impl ConnectorState {
    /// Connector routes calling `stripe`, guarded by `token`.
    pub fn new(stripe: Client, token: SecretString) -> Self {
        Self {
            stripe,
            token: Arc::new(token),
        }
    }
}

/// The connector routes.
pub fn router(state: ConnectorState) -> Router {
    Router::new()
        .route("/api/customers", post(create_customer).get(find_customers))
        .route("/api/products", post(create_product))
        .route("/api/legacy-charges", post(create_legacy_charge))
        .route_layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

/// `kassa_connector_requests_total{method, route, status}` (routes are fixed paths: bounded labels).
async fn count_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().to_string();
    let route = request.uri().path().to_owned();
    let response = next.run(request).await;
    metrics::counter!(
        "kassa_connector_requests_total",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

fn field_error(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {}", message.into())).with_field(field)
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::from_json_rejection(&e))
}

/// Optional text field: absent, null or a string.
fn optional_text(value: &Option<Value>, field: &'static str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(field_error(field, "must be a string")),
    }
}

/// `metadata`: an object of string (or number/boolean, sent as text) values, as Stripe stores.
fn metadata(value: &Option<Value>) -> Result<Metadata, ApiError> {
    let mut out = Metadata::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(field_error(
                            "metadata",
                            format!("{key}: values must be strings"),
                        ))
                    }
                };
                out.insert(key.clone(), text);
            }
        }
        Some(_) => return Err(field_error("metadata", "must be an object")),
    }
    Ok(out)
}

fn check_email(email: &str) -> Result<(), ApiError> {
    let well_formed = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if well_formed {
        Ok(())
    } else {
        Err(field_error(
            "email",
            format!("{email:?} is not an e-mail address"),
        ))
    }
}

/// `POST /api/customers`.
#[derive(Debug, Deserialize)]
pub struct CustomerRequest {
    /// E-mail address.
    pub email: Option<Value>,
    /// Full name.
    pub name: Option<Value>,
    /// Key-value pairs.
    pub metadata: Option<Value>,
}

async fn create_customer(
    State(state): State<ConnectorState>,
    headers: HeaderMap,
    request: Result<Json<CustomerRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_bearer(&state.token, &headers)?;
    let request = body(request)?;
    let email = optional_text(&request.email, "email")?;
    if let Some(email) = &email {
        check_email(email)?;
    }
    let params = CustomerParams {
        email,
        name: optional_text(&request.name, "name")?,
        metadata: Some(metadata(&request.metadata)?).filter(|m| !m.is_empty()),
        ..Default::default()
    };
    let key = idempotency::optional(&headers, "connector:customer")?;
    let customer = state
        .stripe
        .customers()
        .create(&params, &key)
        .await
        .map_err(stripe_error)?;
    info!(customer = %customer.id, "connector: customer created");
    Ok((StatusCode::CREATED, Json(to_json(&customer))))
}

/// `GET /api/customers` query.
#[derive(Debug, Deserialize)]
pub struct FindCustomers {
    /// Exact, case-sensitive (as Stripe compares) e-mail.
    pub email: Option<String>,
}

async fn find_customers(
    State(state): State<ConnectorState>,
    headers: HeaderMap,
    query: Result<Query<FindCustomers>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    check_bearer(&state.token, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::from_query_rejection(&e))?;
    let email = query
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| field_error("email", "required"))?;
    check_email(email)?;
    let list = state
        .stripe
        .customers()
        .list(&ListCustomers {
            email: Some(email.to_owned()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .map_err(stripe_error)?;
    let data: Vec<Value> = list.data.iter().map(to_json).collect();
    Ok(Json(json!({"data": data, "has_more": list.has_more})))
}

/// `POST /api/products`.
#[derive(Debug, Deserialize)]
pub struct ProductRequest {
    /// Required.
    pub name: Option<Value>,
    /// Shown to customers.
    pub description: Option<Value>,
    /// Kept as `metadata.product_code`.
    pub product_code: Option<Value>,
    /// Key-value pairs.
    pub metadata: Option<Value>,
}

async fn create_product(
    State(state): State<ConnectorState>,
    headers: HeaderMap,
    request: Result<Json<ProductRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_bearer(&state.token, &headers)?;
    let request = body(request)?;
    let name =
        optional_text(&request.name, "name")?.ok_or_else(|| field_error("name", "required"))?;
    let mut metadata = metadata(&request.metadata)?;
    if let Some(code) = optional_text(&request.product_code, "product_code")? {
        metadata.insert("product_code".into(), code);
    }
    let params = ProductParams {
        name: Some(name),
        description: optional_text(&request.description, "description")?,
        metadata: Some(metadata).filter(|m| !m.is_empty()),
        ..Default::default()
    };
    let key = idempotency::optional(&headers, "connector:product")?;
    let product = state
        .stripe
        .products()
        .create(&params, &key)
        .await
        .map_err(stripe_error)?;
    info!(product = %product.id, "connector: product created");
    Ok((StatusCode::CREATED, Json(to_json(&product))))
}

/// `POST /api/legacy-charges`: the legacy Charges API (see the module documentation).
#[derive(Debug, Deserialize)]
pub struct LegacyChargeRequest {
    /// Integer minor units.
    pub amount: Option<Value>,
    /// ISO code, any case.
    pub currency: Option<Value>,
    /// A token (`tok_visa`) or a card of `customer`.
    pub source: Option<Value>,
    /// `cus_…`: charged on their default source unless `source` is given.
    pub customer: Option<Value>,
    /// Shown in Stripe.
    pub description: Option<Value>,
    /// Key-value pairs.
    pub metadata: Option<Value>,
}

/// Checks a legacy charge request against Stripe's money rules; the first problem names its field.
pub fn validate_legacy_charge(request: &LegacyChargeRequest) -> Result<CreateCharge, ApiError> {
    let currency = optional_text(&request.currency, "currency")?
        .ok_or_else(|| field_error("currency", "required"))?;
    let currency =
        Currency::parse(&currency).map_err(|e| field_error("currency", e.to_string()))?;
    let amount = match &request.amount {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            field_error(
                "amount",
                "must be an integer number of minor units (e.g. 1999 for $19.99, 1000 for ¥1,000)",
            )
        })?,
        None | Some(Value::Null) => return Err(field_error("amount", "required")),
        Some(_) => {
            return Err(field_error(
                "amount",
                "must be a JSON integer of minor units, not a string",
            ))
        }
    };
    validate_amount(amount, &currency).map_err(|e| field_error("amount", e.to_string()))?;
    let source = optional_text(&request.source, "source")?;
    let customer = optional_text(&request.customer, "customer")?;
    if source.is_none() && customer.is_none() {
        return Err(field_error(
            "source",
            "give a source (e.g. tok_visa) or a customer",
        ));
    }
    let metadata = metadata(&request.metadata)?;
    Ok(CreateCharge {
        amount,
        currency: currency.code().to_owned(),
        customer,
        source,
        description: optional_text(&request.description, "description")?,
        metadata: Some(metadata).filter(|m| !m.is_empty()),
        ..Default::default()
    })
}

async fn create_legacy_charge(
    State(state): State<ConnectorState>,
    headers: HeaderMap,
    request: Result<Json<LegacyChargeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_bearer(&state.token, &headers)?;
    // A charge moves money: without the caller's key, a retry after a time-out would be a
    // second charge.
    let key = idempotency::required(&headers, "connector:legacy_charge")?;
    let params = validate_legacy_charge(&body(request)?)?;
    let charge = state
        .stripe
        .charges()
        .create(&params, &key)
        .await
        .map_err(stripe_error)?;
    info!(charge = %charge.id, amount = charge.amount, currency = %charge.currency, "connector: legacy charge created");
    Ok((StatusCode::CREATED, Json(to_json(&charge))))
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// The request fields a Stripe `param` can name, as the API's own field names.
fn known_field(param: Option<&str>) -> Option<&'static str> {
    Some(match param? {
        "email" => "email",
        "name" => "name",
        "description" => "description",
        "amount" => "amount",
        "currency" => "currency",
        "customer" => "customer",
        "source" | "card" => "source",
        p if p.starts_with("metadata") => "metadata",
        _ => return None,
    })
}

/// A Stripe failure as this API answers it ([`ApiError::from_stripe`]), with Stripe's `param`
/// named as this API's request field (`card` → `source`), or no field when it is none of them.
pub fn stripe_error(error: StripeError) -> ApiError {
    let param = match &error {
        StripeError::InvalidRequest { param, .. } => param.as_deref(),
        StripeError::Card { .. } => Some("source"),
        _ => None,
    };
    let field = known_field(param);
    let mut answer = ApiError::from_stripe(&error);
    answer.field = field.map(Into::into);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(body: Value) -> Result<CreateCharge, ApiError> {
        validate_legacy_charge(&serde_json::from_value(body).unwrap())
    }

    #[test]
    fn legacy_charges_follow_the_money_rules_and_name_the_field() {
        let ok = charge(json!({"amount": 1000, "currency": "JPY", "source": "tok_visa"})).unwrap();
        assert_eq!((ok.amount, ok.currency.as_str()), (1000, "jpy"));
        for (body, field) in [
            (
                json!({"amount": 1.5, "currency": "usd", "source": "tok_visa"}),
                "amount",
            ),
            (
                json!({"amount": "100", "currency": "usd", "source": "tok_visa"}),
                "amount",
            ),
            (
                json!({"amount": 100, "currency": "usdx", "source": "tok_visa"}),
                "currency",
            ),
            (json!({"amount": 100, "currency": "usd"}), "source"),
            (
                json!({"amount": 100, "currency": "usd", "customer": 5}),
                "customer",
            ),
            (
                json!({"amount": 100, "currency": "usd", "source": "tok_visa", "metadata": {"a": []}}),
                "metadata",
            ),
        ] {
            let error = charge(body.clone()).unwrap_err();
            assert_eq!(
                (error.status, error.field.map(|f| f.to_string())),
                (StatusCode::BAD_REQUEST, Some(field.to_string())),
                "{body}"
            );
        }
    }

    #[test]
    fn stripe_refusals_become_answers_a_caller_can_act_on() {
        let missing = stripe_error(StripeError::InvalidRequest {
            status: 400,
            code: Some("resource_missing".into()),
            param: Some("customer".into()),
            message: "No such customer: 'cus_x'".into(),
            request_id: None,
        });
        assert_eq!(
            (
                missing.status,
                missing.code,
                missing.field.map(|f| f.to_string())
            ),
            (
                StatusCode::BAD_REQUEST,
                "resource_missing",
                Some("customer".to_string())
            )
        );
        let down = stripe_error(StripeError::Api {
            status: 503,
            message: "down".into(),
            request_id: None,
        });
        assert_eq!(
            (down.status, down.code),
            (StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable")
        );
        let refused = stripe_error(StripeError::InvalidRequest {
            status: 400,
            code: None,
            param: Some("card".into()),
            message: "bad card".into(),
            request_id: None,
        });
        assert_eq!(refused.field.as_deref(), Some("source"));
    }
}
