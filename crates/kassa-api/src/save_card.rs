//! Save-card links ([`kassa_core::save_card`]).
//!
//! - `POST /api/customers/{id}/save-card-links` `{expires_in?: "7d"}` (Bearer
//!   `KASSA_ADMIN_TOKEN`, optional `"livemode": true|false`, else the default mode) → 201
//!   `{id, url, customer, mode, livemode, expires_at}`;
//!   `POST /api/save-card-links/{id}/revoke` withdraws one.
//! - `GET /save-card/{token}` (customers, no token): 303 to a fresh setup-mode Checkout Session
//!   for the link's customer; an expired, withdrawn or closed link is a page saying so (410), a
//!   forged or unknown one a page too (404) — never a Stripe error. Rate-limited per client IP.

use crate::error::ApiError;
use crate::pages::render;
use crate::{page_permit, ApiState};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kassa_core::save_card::{create_link, open_link, parse_ttl, LinkError, DEFAULT_LINK_TTL};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tracing::{info, Instrument};

/// The admin routes.
pub fn admin_router() -> Router<ApiState> {
    Router::new()
        .route("/api/customers/{id}/save-card-links", post(create))
        .route("/api/save-card-links/{id}/revoke", post(revoke))
}

/// The customers' route.
pub fn public_router() -> Router<ApiState> {
    Router::new().route("/save-card/{token}", get(open))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    /// `7d`, `12h`, `30m`; default 7 days.
    expires_in: Option<String>,
    /// The link's mode (`true`: live); absent, the default mode.
    livemode: Option<bool>,
}

impl From<LinkError> for ApiError {
    fn from(error: LinkError) -> Self {
        let message = error.to_string();
        match error {
            LinkError::Invalid(field) => field.into(),
            LinkError::Forged => ApiError::new(StatusCode::NOT_FOUND, "link_not_found", message),
            LinkError::Expired(_) => ApiError::new(StatusCode::GONE, "link_expired", message),
            LinkError::Revoked => ApiError::new(StatusCode::GONE, "link_revoked", message),
            LinkError::Closed => ApiError::new(StatusCode::GONE, "link_closed", message),
            LinkError::Failed(error) => ApiError::from_fulfil(&error),
        }
    }
}

async fn create(
    State(state): State<ApiState>,
    Path(customer): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The body is optional: no body, the default expiry.
    let request: LinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not the JSON expected: {e}"),
            )
        })?
    };
    let ttl = match request.expires_in.as_deref() {
        None => DEFAULT_LINK_TTL,
        Some(text) => parse_ttl(text, "expires_in")?,
    };
    let (_, stripe) = state.stripe_for(request.livemode)?;
    let link = create_link(
        stripe,
        &state.store,
        &state.settings.public_url,
        &customer,
        ttl,
    )
    .instrument(tracing::info_span!("save_card_link", customer = %customer))
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": link.record.id,
            "object": "save_card_link",
            "url": link.url,
            "customer": link.record.customer_id,
            "mode": if link.record.livemode { "live" } else { "test" },
            "livemode": link.record.livemode,
            "expires_at": link.record.expires_at.unix_timestamp(),
        })),
    ))
}

async fn revoke(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = state
        .store
        .revoke_save_card_link(&id)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "link_not_found",
            format!("no save-card link {id}"),
        ));
    }
    info!(link = %id, "save-card link revoked");
    Ok(Json(json!({"id": id, "revoked": true})))
}

#[derive(Template)]
#[template(path = "pages/link.html")]
struct LinkPage<'a> {
    heading: &'a str,
    message: &'a str,
    code: &'a str,
}

async fn open(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let refused = |error: ApiError| {
        let heading = match error.code {
            "link_expired" => "This link has expired",
            "link_revoked" => "This link was withdrawn",
            "link_closed" => "Nothing to do here any more",
            "link_not_found" => "This link is not valid",
            _ => "Something went wrong",
        };
        let message = match error.code {
            "link_expired" | "link_revoked" => {
                "Please ask the shop for a new link to save your card. Nothing was charged."
                    .to_owned()
            }
            "link_closed" => {
                "This payment request has been settled or closed. Nothing more is needed from you."
                    .to_owned()
            }
            "link_not_found" => {
                "Check that you copied the whole address, or ask the shop for a new link."
                    .to_owned()
            }
            _ => error.message.clone(),
        };
        render(
            error.status,
            &LinkPage {
                heading,
                message: &message,
                code: error.code,
            },
        )
    };
    let ip = crate::widgets::customer_ip(&state, peer, &headers);
    if let Err(error) = state.public_limits.check_ip(ip) {
        return refused(error);
    }
    let Some(_permit) = page_permit(&state) else {
        return refused(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Too many requests at once; please try again in a moment.",
        ));
    };
    let opened = open_link(
        &state.modes,
        &state.store,
        &state.settings.public_url,
        &token,
    )
    .instrument(tracing::info_span!("save_card_link_open"))
    .await;
    match opened {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(error) => refused(ApiError::from(error)),
    }
}
