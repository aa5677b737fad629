//! `/healthz` (the process answers) and `/readyz` (the broker is connected and the topology
//! declared, and every other [`ReadinessCheck`] the process added answers — the binary adds
//! PostgreSQL where the process has it) on the public listener; `/metrics` (Prometheus text) on a listener of its own
//! ([`metrics_router`], `KASSA_METRICS_LISTEN`), so the public port never shows charge volumes.

use crate::IngressState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for one check before it counts as failed: under Kubernetes' default
/// probe timeout (1 s), so a database that does not answer is reported, not a timed-out probe.
pub const READINESS_TIMEOUT: Duration = Duration::from_millis(800);

/// A dependency besides the broker that `/readyz` reports (e.g. the process's database); this
/// crate never touches it itself.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Its key in `/readyz`'s answer (`"database"`).
    fn name(&self) -> &'static str;
    /// Whether it answers now.
    fn ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// `/readyz`'s answer: 200 `{"status": "ready", "broker": "connected", …}` when the broker and
/// every check are, else 503 `not_ready` naming what is `disconnected`.
pub async fn readiness(
    broker_ready: bool,
    checks: &[Arc<dyn ReadinessCheck>],
) -> (StatusCode, Json<Value>) {
    let mut body = Map::new();
    let mut ready = broker_ready;
    body.insert("broker".into(), connected(broker_ready));
    for check in checks {
        let up = tokio::time::timeout(READINESS_TIMEOUT, check.ready())
            .await
            .unwrap_or(false);
        ready &= up;
        body.insert(check.name().into(), connected(up));
    }
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    body.insert("status".into(), Value::from(word));
    (status, Json(Value::Object(body)))
}

fn connected(up: bool) -> Value {
    Value::from(if up { "connected" } else { "disconnected" })
}

/// The health routes.
pub fn router() -> Router<Arc<IngressState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The one route of the metrics listener.
pub const METRICS_PATH: &str = "/metrics";

/// `GET /metrics`, the process's recorder rendered as Prometheus text: the only route of the
/// metrics listener.
pub fn metrics_router() -> Router {
    let handle = crate::prometheus::handle();
    Router::new().route(
        METRICS_PATH,
        get(move || async move {
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
        }),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<IngressState>>) -> impl IntoResponse {
    readiness(state.broker.is_ready(), &state.readiness).await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);

    impl ReadinessCheck for Fixed {
        fn name(&self) -> &'static str {
            "database"
        }

        fn ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
            Box::pin(std::future::ready(self.0))
        }
    }

    #[tokio::test]
    async fn readiness_names_every_dependency_and_needs_them_all() {
        let (status, Json(body)) = readiness(true, &[Arc::new(Fixed(true))]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "ready", "broker": "connected", "database": "connected"})
        );
        let (status, Json(body)) = readiness(true, &[Arc::new(Fixed(false))]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"status": "not_ready", "broker": "connected", "database": "disconnected"})
        );
        let (status, Json(body)) = readiness(false, &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"status": "not_ready", "broker": "disconnected"})
        );
    }
}
