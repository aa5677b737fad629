//! The sealed settings over HTTP (Bearer `KASSA_ADMIN_TOKEN`): `GET /api/settings` lists what
//! is stored — name, mode, when set, a masked value — and `PUT /api/settings/{name}` with
//! `{"value": "…"}` checks, seals and stores one. No answer ever holds a stored value. Both need
//! the master key (`KASSA_MASTER_KEY`): without it they answer 409 `master_key_required`.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use kassa_core::settings::{SettingName, SettingsError, Vault};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};

/// The settings routes.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/settings", get(list_settings))
        .route("/api/settings/{name}", put(put_setting))
}

fn vault(state: &ApiState) -> Vault {
    Vault::new(state.store.clone(), state.master_key.clone())
}

async fn list_settings(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let settings = vault(&state).list().await.map_err(settings_error)?;
    let storable: Vec<&str> = SettingName::ALL.iter().map(|n| n.as_str()).collect();
    Ok(Json(json!({ "data": settings, "storable": storable })))
}

/// `PUT /api/settings/{name}`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSetting {
    value: String,
}

async fn put_setting(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<PutSetting>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = SettingName::parse(&name).map_err(settings_error)?;
    let Json(body) = body.map_err(|e| ApiError::from_json_rejection(&e))?;
    let vault = vault(&state);
    vault
        .set(name, &SecretString::from(body.value))
        .await
        .map_err(settings_error)?;
    let listed = vault.list().await.map_err(settings_error)?;
    let setting = listed
        .into_iter()
        .find(|s| s.name == name.as_str())
        .ok_or_else(|| settings_error(SettingsError::UnknownName(name.to_string())))?;
    Ok(Json(json!(setting)))
}

fn settings_error(error: SettingsError) -> ApiError {
    match error {
        SettingsError::UnknownName(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_setting", error.to_string())
        }
        SettingsError::Invalid { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_setting",
            error.to_string(),
        )
        .with_field("value"),
        SettingsError::NoMasterKey { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "master_key_required",
            error.to_string(),
        ),
        SettingsError::CannotOpen { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "setting_cannot_be_opened",
            error.to_string(),
        ),
        SettingsError::BadMasterKey | SettingsError::Store(_) => {
            tracing::error!(error = %error, "settings failed");
            ApiError::internal()
        }
    }
}
