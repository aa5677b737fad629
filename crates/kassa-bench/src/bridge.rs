//! The floor under `kassa ingress`: a minimal HTTP → AMQP bridge, run as a child process of
//! `kassa-bench ingress` (`kassa-bench bridge`). It publishes each request's raw body with the
//! ingress's publisher settings (confirm-mode channels, persistent, mandatory) and answers 200
//! once RabbitMQ confirms, 503 otherwise — no signature check, no envelope parse, no metrics, no
//! limits. What Kassa's ingress costs beyond it is Kassa's own work.

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `kassa-bench bridge` (started by `kassa-bench ingress`).
#[derive(Args)]
pub struct BridgeArgs {
    /// Address to serve `POST /webhooks/stripe` and `GET /readyz` on.
    #[arg(long)]
    listen: SocketAddr,
    /// RabbitMQ URL.
    #[arg(long, env = "KASSA_AMQP_URL", hide_env_values = true)]
    amqp_url: String,
    /// The exchange to publish to.
    #[arg(long)]
    exchange: String,
    /// Confirm-mode channels that publishes are spread over.
    #[arg(long, default_value_t = 4)]
    channels: usize,
}

struct Bridge {
    channels: Vec<Channel>,
    next: AtomicUsize,
    exchange: String,
}

/// Serves until the process is stopped.
pub async fn run(args: BridgeArgs) -> anyhow::Result<()> {
    let connection = kassa_broker::connection::connect_first(&args.amqp_url)
        .await
        .context("connecting to RabbitMQ")?;
    let mut channels = Vec::new();
    for _ in 0..args.channels.max(1) {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    let bridge = Arc::new(Bridge {
        channels,
        next: AtomicUsize::new(0),
        exchange: args.exchange,
    });
    let app = Router::new()
        .route("/webhooks/stripe", post(publish))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .with_state(bridge);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn publish(State(bridge): State<Arc<Bridge>>, body: Bytes) -> StatusCode {
    let i = bridge.next.fetch_add(1, Ordering::Relaxed);
    let channel = &bridge.channels[i % bridge.channels.len()];
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let published = channel
        .basic_publish(
            bridge.exchange.as_str().into(),
            "stripe.event".into(),
            options,
            &body,
            properties,
        )
        .await;
    match published {
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
