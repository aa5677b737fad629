//! The Bearer `KASSA_ADMIN_TOKEN` every back-office, checkout and connector route requires:
//! [`Admin`] as a handler's first argument refuses anyone else with 401.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// A request that carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        check_bearer(&state.token, &parts.headers).map(|()| Admin)
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
