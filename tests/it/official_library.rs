//! Webhooks signed by the official stripe-python library verify in Kassa's ingress, and Kassa's
//! signatures verify in stripe-python's own `Webhook.construct_event`: the two agree on the scheme.

use crate::support::{event_body, event_id, IngressOptions, TestIngress};
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
    let app = TestIngress::spawn_with(IngressOptions {
        secrets: vec![SECRET],
        ..Default::default()
    })
    .await;
    let id = event_id();
    let body = event_body(&id, "checkout.session.completed");
    let ours = kassa_stripe::webhook::sign(SECRET, crate::support::now(), &body);

    let output = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new(python)
                .args(["-c", SCRIPT, SECRET, &ours])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&body).unwrap();
            child.wait_with_output().unwrap()
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
