//! `/healthz` (the process answers), `/readyz` (the broker is connected and the topology
//! declared) and `/metrics` (Prometheus text).

use crate::IngressState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The health and metrics routes.
pub fn router() -> Router<IngressState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<IngressState>) -> impl IntoResponse {
    if state.broker.is_ready() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "broker": "connected"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "broker": "disconnected"})),
        )
    }
}

async fn render_metrics(State(state): State<IngressState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
