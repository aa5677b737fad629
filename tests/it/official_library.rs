//! Webhooks signed by the official stripe-python and stripe-node libraries verify in Kassa's
//! ingress, and Kassa's signatures verify in their own verifiers (`Webhook.construct_event`,
//! `stripe.webhooks.constructEvent`): they agree on the scheme.

use crate::support::{event_body, event_id, TestIngress};
use std::process::Command;

const SECRET: &str = "whsec_official_library_check";

/// Signs `payload` with stripe-python's own signing code and checks `kassa_header` with its
/// verifier; prints the library's header.
const SCRIPT: &str = r#"
import sys, time, stripe
payload, secret, kassa_header = sys.stdin.read(), sys.argv[1], sys.argv[2]
stripe.Webhook.construct_event(payload, kassa_header, secret)  # raises if Kassa's signature is wrong
t = int(time.time())
print("t=%d,v1=%s" % (t, stripe.WebhookSignature._compute_signature("%d.%s" % (t, payload), secret)))
"#;

/// Checks `kassa_header` with stripe-node's `constructEvent`, then prints the header stripe-node's
/// `generateTestHeaderString` makes for the same payload.
const NODE_SCRIPT: &str = r#"
const [dir, secret, kassaHeader] = process.argv.slice(1);
const stripe = require(dir + "/node_modules/stripe")("sk_test_unused_for_webhooks");
const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const payload = Buffer.concat(chunks).toString("utf8");
  stripe.webhooks.constructEvent(payload, kassaHeader, secret); // throws if Kassa's signature is wrong
  console.log(stripe.webhooks.generateTestHeaderString({ payload, secret }));
});
"#;

fn stripe_node_dir() -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stripe-node"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/stripe-node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `program args…` with `body` on stdin; returns its output.
fn run_with_stdin(program: &str, args: &[&str], body: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

fn python() -> String {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/stripe-python"
    ))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "scripts/stripe-python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn webhooks_signed_by_stripe_python_are_accepted_and_ours_pass_its_verifier() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let app = TestIngress::builder().secrets(&[SECRET]).spawn().await;
    let id = event_id();
    let body = event_body(&id, "checkout.session.completed");
    let ours = kassa_stripe::webhook::sign(SECRET, crate::support::now(), &body);

    let output = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            run_with_stdin(&python, &["-c", SCRIPT, SECRET, &ours], &body)
        })
        .await
        .unwrap()
    };
    assert!(
        output.status.success(),
        "stripe-python refused Kassa's signature: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        header.starts_with("t=") && header.contains(",v1="),
        "{header}"
    );

    let (status, answer) = app.post_webhook(body.clone(), Some(header)).await;
    assert_eq!(status, 200, "{answer}");
    let messages = app.drain_fulfillment().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].delivery.data, body);
    app.cleanup().await;
}

#[tokio::test]
async fn webhooks_signed_by_stripe_node_are_accepted_and_ours_pass_its_verifier() {
    let dir = tokio::task::spawn_blocking(stripe_node_dir).await.unwrap();
    let app = TestIngress::builder().secrets(&[SECRET]).spawn().await;
    let id = event_id();
    let body = event_body(&id, "payment_intent.succeeded");
    let ours = kassa_stripe::webhook::sign(SECRET, crate::support::now(), &body);

    let output = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            run_with_stdin("node", &["-e", NODE_SCRIPT, &dir, SECRET, &ours], &body)
        })
        .await
        .unwrap()
    };
    assert!(
        output.status.success(),
        "stripe-node refused Kassa's signature: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        header.starts_with("t=") && header.contains(",v1="),
        "{header}"
    );

    // Kassa's verifier on its own, then the ingress end to end.
    kassa_stripe::webhook::verify_stripe_signature(
        Some(&header),
        &body,
        &[secrecy::SecretString::from(SECRET.to_owned())],
        std::time::Duration::from_secs(300),
        crate::support::now(),
    )
    .expect("Kassa verifies stripe-node's signature");
    let (status, answer) = app.post_webhook(body.clone(), Some(header.clone())).await;
    assert_eq!(status, 200, "{answer}");
    let messages = app.drain_fulfillment().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].delivery.data, body);

    // A signature of other bytes is refused.
    let mut tampered = body.clone();
    tampered.push(b' ');
    let (status, _) = app.post_webhook(tampered, Some(header)).await;
    assert_eq!(status, 400);
    app.cleanup().await;
}
