//! `POST /webhooks/stripe`: read the envelope, verify against the secrets of the event's mode,
//! publish with confirm, then 200.
//!
//! A Stripe webhook endpoint belongs to one mode, and its secret signs only that mode's events;
//! so a live event is verified against the live endpoint's secrets only, and one signed with the
//! test endpoint's secret is refused (`signature_invalid`). A mode with no secrets takes no events
//! (`mode_not_configured`, naming the mode).
//!
//! Stripe treats any non-2xx (and time-outs) as a failed delivery and re-sends for up to three
//! days in live mode, so answering 503 while RabbitMQ is away loses nothing; answering 200 before
//! the confirm could.

use crate::envelope::read_envelope;
use crate::error::IngressError;
use crate::{IngressState, WEBHOOK_BODY_LIMIT};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kassa_broker::OutgoingMessage;
use kassa_stripe::webhook::{SignatureError, SIGNATURE_HEADER};
use kassa_stripe::Mode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn, Instrument};

/// The webhook route.
pub fn router() -> Router<Arc<IngressState>> {
    Router::new().route("/webhooks/stripe", post(receive_stripe_webhook))
}

/// What an accepted webhook is answered with (the same bytes every time).
const RECEIVED: &str = r#"{"received":true}"#;

async fn receive_stripe_webhook(
    State(state): State<Arc<IngressState>>,
    request: Request,
) -> Result<Response, IngressError> {
    // The headers are only read: taking them from the request spares a copy of the map.
    let (parts, body) = request.into_parts();
    let result = accept(&state, &parts.headers, body).await;
    let outcome = match &result {
        Ok(()) => "accepted",
        Err(error) => error.code,
    };
    metrics::counter!("kassa_webhook_requests_total", "outcome" => outcome).increment(1);
    result.map(|()| {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            RECEIVED,
        )
            .into_response()
    })
}

async fn accept(state: &IngressState, headers: &HeaderMap, body: Body) -> Result<(), IngressError> {
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|len| len > WEBHOOK_BODY_LIMIT) {
        return Err(too_large());
    }
    let body = to_bytes(body, WEBHOOK_BODY_LIMIT).await.map_err(|error| {
        let over_limit = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large()
        } else if crate::server::is_body_timeout(&error) {
            metrics::counter!("kassa_http_timeouts_total", "stage" => "body").increment(1);
            IngressError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body stopped arriving; send it again",
            )
        } else {
            IngressError::bad_request(
                "body_unreadable",
                format!("the request body could not be read: {error}"),
            )
        }
    })?;

    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let verifiers = state.verifier.current();
    let refused = |error: SignatureError| {
        metrics::counter!("kassa_webhook_signature_failures_total", "reason" => error.code())
            .increment(1);
        warn!(reason = error.code(), "webhook refused: {error}");
        IngressError::bad_request(error.code(), error.to_string())
    };
    // The envelope first (one pass, `data` skipped): it says which mode's secrets apply.
    let envelope = match read_envelope(&body) {
        Ok(envelope) => envelope,
        Err(error) => {
            // No mode to go by: a body is only told it is not an event once some configured
            // secret shows it came from Stripe; anything else is a signature refusal, as for
            // every unsigned request.
            let mut signed = Err(SignatureError::Missing);
            let modes = [Mode::Test, Mode::Live].into_iter();
            for verifier in modes.filter_map(|mode| verifiers.get(mode)) {
                signed = verifier.verify(signature, &body, unix_now());
                if signed.is_ok() {
                    break;
                }
            }
            signed.map_err(refused)?;
            warn!(reason = error.code(), "webhook refused: {error}");
            return Err(IngressError::bad_request(error.code(), error.to_string()));
        }
    };
    let mode = Mode::from_livemode(envelope.livemode);
    let Some(verifier) = verifiers.get(mode) else {
        metrics::counter!("kassa_webhook_signature_failures_total", "reason" => "mode_not_configured")
            .increment(1);
        warn!(%mode, event_id = %envelope.id, "webhook refused: no webhook secret for its mode");
        return Err(IngressError::bad_request(
            "mode_not_configured",
            format!(
                "this endpoint takes no {mode}-mode events: no {mode} webhook secret is configured (KASSA_STRIPE_{}_WEBHOOK_SECRETS)",
                mode.to_string().to_uppercase()
            ),
        ));
    };
    verifier
        .verify(signature, &body, unix_now())
        .map_err(refused)?;

    let span = tracing::info_span!("stripe_event", event_id = %envelope.id, event_type = %envelope.kind, livemode = envelope.livemode);
    async {
        state
            .publisher
            .publish(OutgoingMessage {
                exchange: &state.events_exchange,
                routing_key: &envelope.kind,
                body: &body,
                message_id: &envelope.id,
                kind: &envelope.kind,
                headers: None,
            })
            .await
            .map_err(|error| {
                warn!(
                    reason = error.reason(),
                    "event not confirmed by RabbitMQ, answering 503 so Stripe re-sends: {error}"
                );
                IngressError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    format!(
                        "the event could not be stored durably ({}); Stripe will retry",
                        error.reason()
                    ),
                )
            })?;
        info!("event accepted");
        Ok(())
    }
    .instrument(span)
    .await
}

fn too_large() -> IngressError {
    IngressError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("webhook bodies are limited to {WEBHOOK_BODY_LIMIT} bytes"),
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
