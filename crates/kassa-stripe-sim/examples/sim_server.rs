//! Runs a simulator on a fixed address until Ctrl-C: `cargo run -p kassa-stripe-sim --example sim_server -- 127.0.0.1:12111`.

use kassa_stripe_sim::{serve, SimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:12111".to_owned())
        .parse()?;
    let config = SimConfig {
        listen,
        ..SimConfig::default()
    };
    serve(config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
