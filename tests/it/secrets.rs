//! No secret in any log line at any level: the real `kassa serve` binary runs with
//! `RUST_LOG=trace` and distinctive secrets — test mode's API key and two webhook signing
//! secrets, live mode's key and webhook secret (test and live side by side), the admin token and
//! the SMTP password, all stored sealed with `kassa settings set` (also at trace level), and the
//! master key that opens them — through the whole flow: a signed webhook fulfils a setup session,
//! a back-office charge is declined (402), the customer gets the re-pay e-mail (over SMTP with
//! AUTH PLAIN), and a live-mode session is fulfilled with the live key. Refused requests (a bad signature, a wrong admin token) are in
//! the run too. Then neither stdout nor stderr may hold any secret, in clear or in the base64
//! forms it travels in (Basic auth, AUTH PLAIN).

use crate::support::binary::{free_port, kassa, KassaProcess};
use crate::support::services;
use crate::support::smtp_sink::SmtpSink;
use crate::support::{eventually, key};
use kassa_broker::Topology;
use kassa_stripe::objects::CheckoutMode;
use kassa_stripe::resources::{CreateCheckoutSession, ListCustomers};
use kassa_stripe::{Client, ClientConfig};
use kassa_stripe_sim::{SimConfig, Simulator};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::time::Duration;

/// Standard base64 with padding (RFC 4648), as in `Authorization: Basic` and `AUTH PLAIN`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form in which `secret` could show up in a log.
fn forms_of(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        base64(secret.as_bytes()),
        base64(format!("{secret}:").as_bytes()),
        base64(format!(":{secret}").as_bytes()),
    ]
}

/// Which of `forms` (name, text) occur in `log`, with the first line holding each.
fn leaks(log: &str, forms: &[(String, String)]) -> Vec<String> {
    forms
        .iter()
        .filter_map(|(name, form)| {
            let line = log.lines().find(|line| line.contains(form.as_str()))?;
            Some(format!("{name} in: {line}"))
        })
        .collect()
}

#[test]
fn the_leak_check_finds_secrets_in_clear_and_in_base64() {
    assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    assert_eq!(base64(b"sk_test_1:"), "c2tfdGVzdF8xOg==");
    let forms: Vec<(String, String)> = forms_of("sk_test_1")
        .into_iter()
        .map(|f| ("key".to_owned(), f))
        .collect();
    assert_eq!(leaks("INFO all fine", &forms).len(), 0);
    assert_eq!(leaks("DEBUG key=sk_test_1 sent", &forms).len(), 1);
    assert!(!leaks("TRACE authorization: Basic c2tfdGVzdF8xOg==", &forms).is_empty());
}

#[tokio::test]
async fn no_secret_appears_in_any_log_line_at_trace_level() {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let api_key = format!("sk_test_SECRETapikey{unique}");
    let live_key = format!("sk_live_SECRETlivekey{unique}");
    let live_webhook_secret = format!("whsec_SECRETlive{unique}");
    let old_webhook_secret = format!("whsec_SECRETold{unique}");
    let webhook_secret = format!("whsec_SECRETnew{unique}");
    let admin_token = format!("SECRETadmintoken{unique}");
    let smtp_user = "kassa-mailer";
    let smtp_password = format!("SECRETsmtppassword{unique}");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let sim = Simulator::start(SimConfig {
        webhook_endpoints: vec![format!("{base}/webhooks/stripe")],
        webhook_secret: webhook_secret.clone(),
        live_webhook_endpoints: vec![format!("{base}/webhooks/stripe")],
        live_webhook_secret: live_webhook_secret.clone(),
        webhook_retry_base: Duration::from_millis(200),
        webhook_max_attempts: 8,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let sink = SmtpSink::start().await;
    let topology = Topology::unique();
    let amqp_url = services::amqp_url().await;
    let database_url = services::fresh_database_url().await;
    let master_key = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    // Every secret but the master key is stored sealed; the settings commands' own output is
    // checked with the server's.
    let mut settings_output = String::new();
    for (name, value) in [
        ("KASSA_STRIPE_API_KEY", api_key.clone()),
        // Mid-rotation: the old secret and the new one the simulator signs with.
        (
            "KASSA_STRIPE_WEBHOOK_SECRETS",
            format!("{old_webhook_secret},{webhook_secret}"),
        ),
        ("KASSA_STRIPE_LIVE_SECRET_KEY", live_key.clone()),
        (
            "KASSA_STRIPE_LIVE_WEBHOOK_SECRETS",
            live_webhook_secret.clone(),
        ),
        ("KASSA_ADMIN_TOKEN", admin_token.clone()),
        (
            "KASSA_SMTP_URL",
            format!(
                "smtp://{smtp_user}:{smtp_password}@127.0.0.1:{}?tls=none",
                sink.port
            ),
        ),
    ] {
        let mut command = kassa(&["settings", "set", name]);
        command
            .env("KASSA_DATABASE_URL", &database_url)
            .env("KASSA_MASTER_KEY", &master_key)
            .env("RUST_LOG", "trace")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, value.as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        settings_output.push_str(&String::from_utf8_lossy(&out.stdout));
        settings_output.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "settings set {name}: {settings_output}"
        );
    }
    let mut command = kassa(&["serve"]);
    command
        .env("KASSA_AMQP_URL", &amqp_url)
        .env("KASSA_AMQP_PREFIX", topology.prefix())
        .env("KASSA_DATABASE_URL", &database_url)
        .env("KASSA_MASTER_KEY", &master_key)
        .env("KASSA_STRIPE_API_BASE", sim.base_url())
        .env("KASSA_PUBLIC_URL", &base)
        .env("KASSA_DEFAULT_MODE", "test")
        .env("RUST_LOG", "trace")
        .env_remove("KASSA_LOG_FORMAT");
    let process = KassaProcess::start(command, port, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();

    // Hostile requests first: a forged signature, a wrong and a missing admin token.
    let forged = http
        .post(format!("{base}/webhooks/stripe"))
        .header("Stripe-Signature", "t=1700000000,v1=00ff")
        .body(r#"{"id":"evt_forged","object":"event","type":"checkout.session.completed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    for token in [Some("not-the-admin-token-at-all"), None] {
        let mut request = http.get(format!("{base}/api/charges"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }

    // A customer saves a card through a setup-mode Checkout Session; the signed webhook reaches
    // the ingress and the worker records the customer. This card attaches, then every charge
    // of it is declined (Stripe's 4000000000000341).
    let mut config = ClientConfig::new(SecretString::from(api_key.clone()));
    config.api_base = sim.base_url();
    let stripe = Client::new(config).unwrap();
    let email = format!("secrets-{unique}@example.com");
    let session = stripe
        .checkout_sessions()
        .create(
            &CreateCheckoutSession {
                mode: CheckoutMode::Setup,
                currency: Some("usd".into()),
                customer_email: Some(email.clone()),
                success_url: Some(format!("{base}/success")),
                cancel_url: Some(format!("{base}/cancel")),
                ..Default::default()
            },
            &key("session"),
        )
        .await
        .unwrap();
    sim.complete_checkout_session(&session.id, "pm_card_chargeCustomerFail")
        .unwrap();
    // Setup mode creates no customer at Stripe: the worker does, from the session's details.
    let customer = eventually(
        Duration::from_secs(60),
        "the worker to create the customer",
        || async {
            let params = ListCustomers {
                email: Some(email.clone()),
                ..Default::default()
            };
            let list = stripe.customers().list(&params).await.ok()?;
            list.data.first().map(|c| c.id.clone())
        },
    )
    .await;

    // The back-office charges the saved card: the API answers 400 until the worker has
    // recorded the customer and the card, then 202.
    let reference = format!("inv-secrets-{unique}");
    let charge: Value = eventually(
        Duration::from_secs(60),
        "the charge to be accepted",
        || async {
            let response = http
                .post(format!("{base}/api/charges"))
                .bearer_auth(&admin_token)
                .json(&json!({
                    "customer": customer,
                    "amount": 1999,
                    "currency": "usd",
                    "reference": reference,
                }))
                .send()
                .await
                .ok()?;
            (response.status() == 202).then_some(())?;
            response.json().await.ok()
        },
    )
    .await;
    let id = charge["id"].as_i64().expect("the charge's id");
    eventually(
        Duration::from_secs(60),
        "the 402 to flag the charge for re-checkout",
        || async {
            let charge: Value = http
                .get(format!("{base}/api/charges/{id}"))
                .bearer_auth(&admin_token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (charge["status"] == "requires_recheckout").then_some(())
        },
    )
    .await;
    let mail = sink.wait_for(1).await;
    assert_eq!(mail[0].rcpt_to, vec![email]);
    // The password really went over the wire: the check below is not vacuous.
    let auth_plain = base64(format!("\0{smtp_user}\0{smtp_password}").as_bytes());
    assert_eq!(sink.auth.lock().unwrap().first(), Some(&auth_plain));
    // And the API key really was sent to Stripe.
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/v1/payment_intents")));

    // A live-mode customer saves a card: the live webhook (signed with the live endpoint's
    // secret) is verified and the worker creates the customer with the live key.
    let mut config = ClientConfig::new(SecretString::from(live_key.clone()));
    config.api_base = sim.base_url();
    let live = Client::new(config).unwrap();
    let live_email = format!("secrets-live-{unique}@example.com");
    let live_session = live
        .checkout_sessions()
        .create(
            &CreateCheckoutSession {
                mode: CheckoutMode::Setup,
                currency: Some("usd".into()),
                customer_email: Some(live_email.clone()),
                success_url: Some(format!("{base}/success")),
                cancel_url: Some(format!("{base}/cancel")),
                ..Default::default()
            },
            &key("live-session"),
        )
        .await
        .unwrap();
    sim.complete_checkout_session(&live_session.id, "pm_card_simulatorLive")
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the worker to create the live customer",
        || async {
            let params = ListCustomers {
                email: Some(live_email.clone()),
                ..Default::default()
            };
            let list = live.customers().list(&params).await.ok()?;
            list.data.first().map(|c| c.id.clone())
        },
    )
    .await;

    // Stop kassa and read everything it wrote.
    let log = format!(
        "{settings_output}\n{}",
        process.stop(Duration::from_secs(30)).await
    );
    // The run was logged at trace level (so the check saw every level).
    assert!(log.contains("TRACE"), "no trace lines in the log");
    assert!(log.lines().count() > 100, "too little log to judge");

    let mut forms = Vec::new();
    for (name, secret) in [
        ("KASSA_STRIPE_API_KEY", &api_key),
        ("old webhook secret", &old_webhook_secret),
        ("webhook secret", &webhook_secret),
        ("KASSA_STRIPE_LIVE_SECRET_KEY", &live_key),
        ("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS", &live_webhook_secret),
        ("KASSA_ADMIN_TOKEN", &admin_token),
        ("SMTP password", &smtp_password),
        ("KASSA_MASTER_KEY", &master_key),
    ] {
        for form in forms_of(secret) {
            forms.push((name.to_owned(), form));
        }
    }
    forms.push(("SMTP AUTH PLAIN".to_owned(), auth_plain));
    let found = leaks(&log, &forms);
    assert!(
        found.is_empty(),
        "secrets in kassa's log ({} lines):\n{}",
        log.lines().count(),
        found.join("\n")
    );

    let _ = topology.delete_at(&amqp_url).await;
    services::drop_database(&database_url).await;
}
