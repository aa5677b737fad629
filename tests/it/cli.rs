//! The `kassa` binary itself: the README's first command starts, serves, and stops cleanly.

use crate::support::{event_body, event_id, eventually, now, services};
use kassa_broker::Topology;
use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn kassa_ingress_accepts_a_webhook_and_exits_0_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let topology = Topology::unique();
    let secret = "whsec_cli_test_secret";
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
        .arg("ingress")
        .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KASSA_AMQP_URL", services::amqp_url().await)
        .env("KASSA_AMQP_PREFIX", topology.prefix())
        .env("KASSA_STRIPE_WEBHOOK_SECRETS", secret)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(30),
        "kassa ingress to be ready",
        || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;

    let body = event_body(&event_id(), "checkout.session.completed");
    let signature = kassa_stripe::webhook::sign(secret, now(), &body);
    let response = http
        .post(format!("{base}/webhooks/stripe"))
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("kassa ingress exits after SIGTERM")
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit status {:?}\n{logs}",
        output.status
    );
    assert!(logs.contains("kassa ingress listening"), "{logs}");
    assert!(
        logs.contains("KASSA_STRIPE_WEBHOOK_SECRETS"),
        "the secret source is named: {logs}"
    );
    assert!(
        !logs.contains(secret),
        "the secret itself is never logged: {logs}"
    );
    assert!(logs.contains("event accepted"), "{logs}");

    // Clean up this test's topology.
    let connection = lapin::Connection::connect(&services::amqp_url().await, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for queue in topology.queues() {
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    for exchange in topology.exchanges() {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
}
