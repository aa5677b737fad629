//! The Bearer `KASSA_ADMIN_TOKEN` every back-office, checkout and connector route requires:
//! [`require_admin`] is a route layer over those routes, so a request without the token is
//! answered 401 before any extractor runs — its body is never read, let alone parsed.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Route layer (`axum::middleware::from_fn_with_state`): lets a request through only with the
/// admin token; anyone else gets 401 `unauthorized` and the handler never runs.
pub async fn require_admin(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    match check_bearer(&state.admin_token(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// `Authorization: Bearer {token}`, compared in constant time; an empty token admits nobody.
pub fn check_bearer(token: &SecretString, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = token.expose_secret().as_bytes();
    if bool::from(given.as_bytes().ct_eq(expected)) && !expected.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid Bearer KASSA_ADMIN_TOKEN is required",
        ))
    }
}
