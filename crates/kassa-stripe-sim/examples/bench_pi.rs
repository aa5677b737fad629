//! Throughput of the simulator: PaymentIntent creates per second against a baseline measured in the same
//! run on the same server (`GET /_sim/ping`, a trivial axum route), with keep-alive reqwest clients.
//!
//! `cargo run --release -p kassa-stripe-sim --example bench_pi -- [REQUESTS] [CONCURRENCY]`
//! (defaults 20000 and 32). Client and server share the machine's cores, as in Kassa's own tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kassa_stripe_sim::{SimConfig, Simulator};

#[derive(Clone, Copy)]
enum Call {
    Ping,
    CreatePaymentIntent,
    ConfirmedOffSession,
}

async fn fire(client: &reqwest::Client, base: &str, call: Call, n: usize) -> Result<(), String> {
    let r = match call {
        Call::Ping => client.get(format!("{base}/_sim/ping")).send().await,
        Call::CreatePaymentIntent => {
            let key = format!(
                "bench:{n}:{}",
                kassa_stripe_sim::state::random_suffix("", 8)
            );
            client
                .post(format!("{base}/v1/payment_intents"))
                .bearer_auth("sk_test_bench")
                .header("Idempotency-Key", key)
                .form(&[
                    ("amount", "1099"),
                    ("currency", "usd"),
                    ("metadata[order]", "bench"),
                ])
                .send()
                .await
        }
        Call::ConfirmedOffSession => {
            client
                .post(format!("{base}/v1/payment_intents"))
                .bearer_auth("sk_test_bench")
                .form(&[
                    ("amount", "1099"),
                    ("currency", "usd"),
                    ("payment_method", "pm_card_visa"),
                    ("confirm", "true"),
                    ("off_session", "true"),
                ])
                .send()
                .await
        }
    };
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status();
    r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Sends `total` requests from `concurrency` tasks; returns requests per second.
async fn run(
    client: &reqwest::Client,
    base: &Arc<String>,
    call: Call,
    total: usize,
    concurrency: usize,
) -> Result<f64, String> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = client.clone();
        let base = Arc::clone(base);
        let share = total / concurrency + usize::from(worker < total % concurrency);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                fire(&client, &base, call, worker * 1_000_000 + i).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let concurrency: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(32)
        .max(1);
    let sim = Simulator::start(SimConfig::default()).await?;
    let base = Arc::new(sim.base_url());
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    // Warm up connections and allocators.
    run(&client, &base, Call::Ping, 2_000, concurrency).await?;
    run(
        &client,
        &base,
        Call::CreatePaymentIntent,
        2_000,
        concurrency,
    )
    .await?;

    let ping = run(&client, &base, Call::Ping, total, concurrency).await?;
    let create = run(
        &client,
        &base,
        Call::CreatePaymentIntent,
        total,
        concurrency,
    )
    .await?;
    let confirmed = run(
        &client,
        &base,
        Call::ConfirmedOffSession,
        total,
        concurrency,
    )
    .await?;
    println!(
        "requests per run: {total}, concurrency: {concurrency}, cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("baseline GET /_sim/ping                      {ping:>9.0} req/s");
    println!(
        "POST /v1/payment_intents (Idempotency-Key)    {create:>9.0} req/s  ({:.0}% of baseline)",
        100.0 * create / ping
    );
    println!("POST /v1/payment_intents confirm off_session  {confirmed:>9.0} req/s  ({:.0}% of baseline)", 100.0 * confirmed / ping);
    let ok = sim.requests().iter().filter(|r| r.status == 200).count();
    println!("requests logged with 200: {ok}");
    sim.shutdown().await;
    Ok(())
}
