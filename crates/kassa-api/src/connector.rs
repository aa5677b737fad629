//! Connector actions (Bearer `KASSA_ADMIN_TOKEN`): small Stripe operations back-office tools and
//! automation platforms call directly.
//!
//! - `POST /api/customers {email?, name?, phone?, description?, address?, metadata?}` creates a
//!   customer (`address`: `line1`, `line2`, `city`, `state`, `postal_code`, `country`).
//! - `GET /api/customers/{id}` finds one customer by its id: 404 `customer_not_found` when Stripe
//!   has none (or it was deleted).
//! - `GET /api/customers?email=…` finds customers by exact e-mail through Stripe's customer *list*
//!   (`GET /v1/customers?email=`), not Search: Stripe's search index lags writes ("data is
//!   typically searchable within a minute", docs: search), so a customer created a moment ago
//!   would not be found.
//! - `POST /api/products {name, description?, product_code?, metadata?}` creates a product
//!   (`product_code` goes to `metadata.product_code`, the key the checkout API upserts by).
//! - `POST /api/legacy-charges {amount, currency, source | customer, description?, metadata?,
//!   shipping?}` charges with the **legacy Charges API** (`POST /v1/charges`); `shipping` needs
//!   `name` and `address.line1` (as Stripe does); see [`kassa_core::connector`].
//!
//! Every body refuses a field it does not know, naming it (`400 invalid_json`, `field`). Every
//! body (and the GET routes' query) takes an optional `livemode` (`true|false`; absent: the
//! default mode): the call is made with that mode's key, a mode without one is 400
//! `mode_not_configured`, and a customer Kassa holds in the other mode is refused before Stripe
//! is asked.
//!
//! Unlike the webhook path these routes call Stripe, synchronously. Every POST to Stripe carries
//! an Idempotency-Key: `kassa:{installation}:connector:{action}:{key}` where `key` is the
//! caller's own `Idempotency-Key` header (so a caller retrying after a time-out gets the first
//! result, not a second customer or charge; see [`crate::idempotency`]). A legacy charge moves
//! money, so it requires the header (`400 idempotency_key_required` without it); customers and
//! products take a fresh UUID when none is given. Bad input is refused with 400 naming the field
//! before Stripe is called, so nothing is created.

use crate::error::ApiError;
use crate::{idempotency, ApiState};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kassa_core::connector::{
    customer_params, product_params, validate_legacy_charge, CustomerRequest, LegacyChargeRequest,
    ProductRequest,
};
use kassa_core::customers::check_customer_mode;
use kassa_core::fields::{self, field_error};
use kassa_stripe::resources::ListCustomers;
use kassa_stripe::StripeError;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

/// The connector routes.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/customers", post(create_customer).get(find_customers))
        .route("/api/customers/{id}", axum::routing::get(customer_by_id))
        .route("/api/products", post(create_product))
        .route("/api/legacy-charges", post(create_legacy_charge))
        .route_layer(axum::middleware::from_fn(count_requests))
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

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::from_json_rejection(&e))
}

async fn create_customer(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<CustomerRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = body(request)?;
    let params = customer_params(&request)?;
    let (_, stripe) = state.stripe_for(request.livemode)?;
    let key = idempotency::optional(&headers, state.installation(), "connector:customer")?;
    let customer = stripe
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
    /// The mode whose customers are searched; absent, the default mode.
    pub livemode: Option<bool>,
}

/// `GET /api/customers/{id}` query.
#[derive(Debug, Deserialize)]
pub struct ModeQuery {
    /// The mode asked; absent, the default mode.
    pub livemode: Option<bool>,
}

async fn find_customers(
    State(state): State<ApiState>,
    query: Result<Query<FindCustomers>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::from_query_rejection(&e))?;
    let email = query
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| field_error("email", "required"))?;
    fields::email(email, "email")?;
    let (_, stripe) = state.stripe_for(query.livemode)?;
    let list = stripe
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

async fn customer_by_id(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    query: Result<Query<ModeQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::from_query_rejection(&e))?;
    let (mode, stripe) = state.stripe_for(query.livemode)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "customer_not_found",
            format!("no customer {id} in this Stripe account"),
        )
    };
    // Stripe's customer ids are `cus_…`; anything else cannot name one, so Stripe is not asked.
    if !id.starts_with("cus_") || id.len() > 255 {
        return Err(not_found());
    }
    // A customer Kassa holds in the other mode is not this mode's: not asked of Stripe.
    check_customer_mode(&state.store, &id, mode, "id")
        .await
        .map_err(|e| ApiError::from_store(&e))?
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "customer_not_found", e.message))?;
    match stripe.customers().retrieve(&id, &[]).await {
        Ok(customer) if customer.deleted => Err(not_found()),
        Ok(customer) => Ok(Json(to_json(&customer))),
        Err(StripeError::InvalidRequest { status: 404, .. }) => Err(not_found()),
        Err(error) => Err(stripe_error(error)),
    }
}

async fn create_product(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<ProductRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = body(request)?;
    let params = product_params(&request)?;
    let (_, stripe) = state.stripe_for(request.livemode)?;
    let key = idempotency::optional(&headers, state.installation(), "connector:product")?;
    let product = stripe
        .products()
        .create(&params, &key)
        .await
        .map_err(stripe_error)?;
    info!(product = %product.id, "connector: product created");
    Ok((StatusCode::CREATED, Json(to_json(&product))))
}

async fn create_legacy_charge(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<LegacyChargeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A charge moves money: without the caller's key, a retry after a time-out would be a
    // second charge.
    let key = idempotency::required(&headers, state.installation(), "connector:legacy_charge")?;
    let request = body(request)?;
    let params = validate_legacy_charge(&request)?;
    let (mode, stripe) = state.stripe_for(request.livemode)?;
    if let Some(customer) = &params.customer {
        check_customer_mode(&state.store, customer, mode, "customer")
            .await
            .map_err(|e| ApiError::from_store(&e))??;
    }
    let charge = stripe
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
        "phone" => "phone",
        p if p.starts_with("address") => "address",
        p if p.starts_with("shipping") => "shipping",
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
    use kassa_stripe::resources::CreateCharge;

    fn charge(body: Value) -> Result<CreateCharge, ApiError> {
        validate_legacy_charge(&serde_json::from_value(body).unwrap()).map_err(ApiError::from)
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
