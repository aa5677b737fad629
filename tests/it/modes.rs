//! Test and live side by side in one deployment: each mode has its own key and webhook secrets;
//! every Stripe request about an object is made with the key of the object's mode (the
//! simulator's request log says which key each request used), rows carry their mode, a webhook
//! is verified only against its own mode's endpoint secret, and start-up refuses every
//! configuration that would mix the modes — naming the variable, never showing a key.

use crate::support::app::TestApp;
use crate::support::binary::{kassa, text};
use crate::support::sim::LIVE_API_KEY;
use crate::support::sim::{card_of, fingerprint_of};
use crate::support::{eventually, services};
use kassa_store::charges::{ChargeStatus, NewCharge};
use kassa_stripe::Mode;
use kassa_stripe_sim::{signature_header, DEFAULT_LIVE_WEBHOOK_SECRET, DEFAULT_WEBHOOK_SECRET};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn interleaved_test_and_live_sessions_are_each_fulfilled_with_their_own_key() {
    let app = TestApp::builder().two_modes().spawn().await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut sessions = Vec::new();
    for round in 0..3 {
        for mode in [Mode::Test, Mode::Live] {
            let email = format!("{mode}-{round}-{unique}@example.com");
            let id = app
                .create_setup_session_with(app.stripe_in(mode), &email)
                .await;
            sessions.push((mode, id));
        }
    }
    for (mode, id) in &sessions {
        app.complete(id, card_of(*mode));
    }

    // Every object Kassa read or wrote for each session, with the session's mode.
    let mut objects = Vec::new();
    for (mode, id) in &sessions {
        let record = eventually(
            Duration::from_secs(30),
            "the session to be fulfilled",
            || async {
                app.store()
                    .checkout_session(id)
                    .await
                    .unwrap()
                    .filter(|s| s.status == "complete" && s.payment_method_id.is_some())
            },
        )
        .await;
        assert_eq!(record.livemode, mode.is_live(), "session {id}");
        let customer_id = record.customer_id.clone().expect("a customer");
        let customer = app.store().customer(&customer_id).await.unwrap().unwrap();
        assert_eq!(customer.livemode, mode.is_live(), "customer of {id}");
        objects.push((*mode, id.clone()));
        objects.push((*mode, customer_id));
        objects.push((*mode, record.payment_method_id.clone().unwrap()));
    }

    let requests = app.sim().requests();
    for (mode, id) in &objects {
        let about: Vec<_> = requests.iter().filter(|r| r.path.contains(id)).collect();
        assert!(!about.is_empty(), "no request about {id}");
        for request in about {
            assert_eq!(
                (request.livemode, request.key_fingerprint.as_deref()),
                (Some(mode.is_live()), Some(fingerprint_of(*mode).as_str())),
                "{} {} about a {mode} object",
                request.method,
                request.path
            );
        }
    }
    // A request with the other mode's key would have been Stripe's 404 for an object of the
    // other mode; none was refused at all.
    let refused: Vec<_> = requests.iter().filter(|r| r.status >= 400).collect();
    assert!(refused.is_empty(), "{refused:?}");
    // Each mode's customers were created with that mode's key: one per session.
    for mode in [Mode::Test, Mode::Live] {
        let created = requests
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/v1/customers")
            .filter(|r| r.key_fingerprint.as_deref() == Some(fingerprint_of(mode).as_str()))
            .count();
        assert_eq!(created, 3, "{mode} customers");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_live_charge_is_made_with_the_live_key() {
    let app = TestApp::builder().two_modes().spawn().await;
    let live = app.stripe_in(Mode::Live);
    let (customer, _) = app.customer_with_card(Mode::Live).await;
    let route = kassa_core::charges::job_route(&app.topology);
    let (charge, _) = app
        .store()
        .submit_charge(
            &route,
            &NewCharge {
                reference: format!("inv-live-{}", uuid::Uuid::new_v4().simple()),
                customer_id: customer.id.clone(),
                payment_method_id: None,
                amount: 2500,
                currency: "usd".into(),
                description: Some("a live back-office charge".into()),
                metadata: json!({}),
                livemode: true,
            },
        )
        .await
        .unwrap();
    let settled = eventually(Duration::from_secs(30), "the live charge", || async {
        app.store()
            .charge(charge.id)
            .await
            .unwrap()
            .filter(|c| c.status == ChargeStatus::Succeeded)
    })
    .await;
    assert!(settled.livemode);
    let intent_id = settled.payment_intent_id.clone().expect("a PaymentIntent");
    let intent = live
        .payment_intents()
        .retrieve(&intent_id, &[])
        .await
        .unwrap();
    assert!(intent.livemode);
    let creates = app.calls("POST", "/v1/payment_intents");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(
        creates[0].key_fingerprint.as_deref(),
        Some(fingerprint_of(Mode::Live).as_str())
    );
    app.cleanup().await;
}

/// A charge row of one mode naming a customer Kassa holds in the other (a row recorded before
/// charges were recorded in their own mode, e.g. by `kassa charge` without a key): nothing is
/// sent with either key; the charge waits for a person, saying why.
#[tokio::test]
async fn a_charge_whose_customer_is_of_the_other_mode_goes_to_review_unsent() {
    let app = TestApp::builder().two_modes().spawn().await;
    let (customer, card) = app.customer_with_card(Mode::Live).await;
    // Kassa's records of them, as the webhooks write them.
    let mut tx = app.store().begin().await.unwrap();
    kassa_store::customers::upsert_customer(
        &mut tx,
        &kassa_store::CustomerRecord {
            id: customer.id.clone(),
            email: customer.email.clone(),
            name: None,
            default_payment_method: Some(card.id.clone()),
            deleted: false,
            livemode: true,
        },
    )
    .await
    .unwrap();
    kassa_store::customers::upsert_payment_method(
        &mut tx,
        &kassa_core::records::payment_method_record(&card, Some(&customer.id)),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let route = kassa_core::charges::job_route(&app.topology);
    let (charge, _) = app
        .store()
        .submit_charge(
            &route,
            &NewCharge {
                reference: format!("inv-old-{}", uuid::Uuid::new_v4().simple()),
                customer_id: customer.id.clone(),
                payment_method_id: None,
                amount: 2500,
                currency: "usd".into(),
                description: None,
                metadata: json!({}),
                livemode: false,
            },
        )
        .await
        .unwrap();
    let reviewed = eventually(Duration::from_secs(30), "the charge in review", || async {
        app.store()
            .charge(charge.id)
            .await
            .unwrap()
            .filter(|c| c.status == ChargeStatus::NeedsReview)
    })
    .await;
    let reason = reviewed.review_reason.unwrap_or_default();
    assert!(
        reason.contains("test-mode charge") && reason.contains("live-mode customer"),
        "{reason}"
    );
    let creates = app.calls("POST", "/v1/payment_intents");
    assert!(creates.is_empty(), "nothing sent: {creates:?}");
    app.cleanup().await;
}

/// `POST /webhooks/stripe` of `app` with `body` signed by `secret`: status and JSON answer.
async fn deliver(app: &TestApp, body: &str, secret: &str) -> (u16, Value) {
    let now = kassa_worker::poller::unix_now();
    let response = app
        .http
        .post(format!("{}/webhooks/stripe", app.stack.base_url().unwrap()))
        .header(
            "Stripe-Signature",
            signature_header(secret, now, body.as_bytes()),
        )
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn event(id: &str, livemode: bool) -> String {
    json!({
        "id": id, "object": "event", "type": "invoice.paid", "livemode": livemode,
        "created": kassa_worker::poller::unix_now(), "api_version": "2025-12-15.clover",
        "data": {"object": {"id": "in_1", "object": "invoice"}}
    })
    .to_string()
}

#[tokio::test]
async fn a_webhook_is_verified_only_with_its_own_modes_endpoint_secret() {
    let app = TestApp::builder()
        .two_modes()
        .without_worker()
        .spawn()
        .await;
    let live = event("evt_live_modes_1", true);
    let (status, answer) = deliver(&app, &live, DEFAULT_WEBHOOK_SECRET).await;
    assert_eq!(
        status, 400,
        "a live event signed with the test secret: {answer}"
    );
    assert_eq!(answer["error"]["code"], "signature_invalid", "{answer}");
    let test = event("evt_test_modes_1", false);
    let (status, answer) = deliver(&app, &test, DEFAULT_LIVE_WEBHOOK_SECRET).await;
    assert_eq!(
        status, 400,
        "a test event signed with the live secret: {answer}"
    );
    assert_eq!(answer["error"]["code"], "signature_invalid", "{answer}");
    // Each signed with its own mode's secret is taken.
    assert_eq!(
        deliver(&app, &live, DEFAULT_LIVE_WEBHOOK_SECRET).await.0,
        200
    );
    assert_eq!(deliver(&app, &test, DEFAULT_WEBHOOK_SECRET).await.0, 200);
    app.cleanup().await;
}

#[tokio::test]
async fn an_event_of_a_mode_without_secrets_is_refused_naming_the_mode() {
    // Test mode only: a simulator shared the way another installation's would be, whose live
    // webhooks this deployment has no secret for.
    let sim = std::sync::Arc::new(
        kassa_stripe_sim::Simulator::start(Default::default())
            .await
            .unwrap(),
    );
    let app = TestApp::builder()
        .shared_sim(sim)
        .without_worker()
        .spawn()
        .await;
    let live = event("evt_live_modes_2", true);
    let (status, answer) = deliver(&app, &live, DEFAULT_LIVE_WEBHOOK_SECRET).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "mode_not_configured", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("live") && message.contains("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS"),
        "{message}"
    );
    assert_eq!(
        deliver(
            &app,
            &event("evt_test_modes_2", false),
            DEFAULT_WEBHOOK_SECRET
        )
        .await
        .0,
        200
    );
    app.cleanup().await;
}

/// `kassa serve` with only `envs` (and no database or broker it could reach): it must refuse
/// to start; its stderr.
async fn refused(envs: &[(&str, &str)]) -> String {
    let mut command = kassa(&["serve"]);
    command
        .envs(envs.iter().copied())
        .env("KASSA_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("KASSA_AMQP_URL", "amqp://nobody:nobody@127.0.0.1:1/%2f");
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("kassa refuses at once")
        .unwrap();
    assert!(!output.status.success(), "started with {envs:?}");
    text(&output.stderr)
}

#[tokio::test]
async fn start_up_refuses_keys_and_secrets_that_would_mix_the_modes() {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let live_key = format!("sk_live_MIXED{unique}");
    let test_key = format!("rk_test_MIXED{unique}");
    let live_rk = format!("rk_live_MIXED{unique}");
    let test_secret = format!("whsec_test{unique}");
    let live_secret = format!("whsec_live{unique}");

    let stderr = refused(&[("KASSA_STRIPE_TEST_SECRET_KEY", &live_key)]).await;
    assert!(
        stderr.contains("KASSA_STRIPE_TEST_SECRET_KEY is a live key")
            && stderr.contains("never mix"),
        "{stderr}"
    );

    let stderr = refused(&[
        ("KASSA_STRIPE_TEST_SECRET_KEY", &test_key),
        ("KASSA_STRIPE_TEST_WEBHOOK_SECRETS", &test_secret),
        ("KASSA_STRIPE_TEST_PUBLISHABLE_KEY", "pk_live_mixed"),
    ])
    .await;
    assert!(
        stderr.contains("KASSA_STRIPE_TEST_PUBLISHABLE_KEY is a live publishable key"),
        "{stderr}"
    );
    let stderr = refused(&[
        ("KASSA_STRIPE_API_KEY", &test_key),
        ("KASSA_STRIPE_WEBHOOK_SECRETS", &test_secret),
        ("KASSA_STRIPE_PUBLISHABLE_KEY", "pk_live_mixed"),
    ])
    .await;
    assert!(
        stderr.contains(
            "KASSA_STRIPE_PUBLISHABLE_KEY is a live key but KASSA_STRIPE_API_KEY is a test key"
        ),
        "{stderr}"
    );

    let both = [
        ("KASSA_STRIPE_TEST_SECRET_KEY", test_key.as_str()),
        ("KASSA_STRIPE_TEST_WEBHOOK_SECRETS", &test_secret),
        ("KASSA_STRIPE_LIVE_SECRET_KEY", &live_rk),
        ("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS", &live_secret),
    ];
    let stderr = refused(&both).await;
    assert!(
        stderr.contains("both test and live keys are configured: set KASSA_DEFAULT_MODE"),
        "{stderr}"
    );

    let stderr = refused(&[
        ("KASSA_STRIPE_TEST_SECRET_KEY", test_key.as_str()),
        ("KASSA_STRIPE_TEST_WEBHOOK_SECRETS", &test_secret),
        ("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS", &live_secret),
    ])
    .await;
    assert!(
        stderr.contains("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS is given but live mode has no key"),
        "{stderr}"
    );

    let stderr = refused(&[
        ("KASSA_STRIPE_API_KEY", live_key.as_str()),
        ("KASSA_STRIPE_LIVE_SECRET_KEY", &live_rk),
        ("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS", &live_secret),
    ])
    .await;
    assert!(
        stderr.contains("KASSA_STRIPE_API_KEY (a live key) and KASSA_STRIPE_LIVE_SECRET_KEY")
            && stderr.contains("set only one"),
        "{stderr}"
    );

    let stderr = refused(&[
        ("KASSA_STRIPE_LIVE_SECRET_KEY", live_rk.as_str()),
        ("KASSA_DEFAULT_MODE", "test"),
    ])
    .await;
    assert!(
        stderr.contains("KASSA_DEFAULT_MODE=test but test mode has no key"),
        "{stderr}"
    );

    let stderr = refused(&[("KASSA_STRIPE_LIVE_SECRET_KEY", live_rk.as_str())]).await;
    assert!(
        stderr.contains("KASSA_STRIPE_LIVE_WEBHOOK_SECRETS is required"),
        "{stderr}"
    );
    for secret in [&live_key, &test_key, &live_rk, &test_secret, &live_secret] {
        assert!(!stderr.contains(secret.as_str()), "{stderr}");
    }
}

/// `kassa worker` with `key` as its only Stripe key, on a fresh database, stopped right after
/// its configuration was read twice (before and after the stored settings) by a listen address
/// that is taken: everything it printed.
async fn worker_output(key_variable: &str, key: &str) -> String {
    let database_url = services::fresh_database_url().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = kassa(&["worker"]);
    command
        .env(key_variable, key)
        .env("KASSA_DATABASE_URL", &database_url)
        .env("KASSA_LISTEN", taken.local_addr().unwrap().to_string())
        .env("KASSA_METRICS_LISTEN", "127.0.0.1:0");
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("kassa worker stops")
        .unwrap();
    drop(taken);
    services::drop_database(&database_url).await;
    let all = format!("{}\n{}", text(&output.stdout), text(&output.stderr));
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("KASSA_LISTEN"),
        "stopped at the listener: {all}"
    );
    all
}

#[tokio::test]
async fn a_standard_secret_key_is_warned_about_once_and_never_shown() {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let standard = format!("sk_live_STANDARD{unique}");
    let output = worker_output("KASSA_STRIPE_LIVE_SECRET_KEY", &standard).await;
    let warnings = output.matches("a restricted key (rk_)").count();
    assert_eq!(warnings, 1, "{output}");
    assert!(output.contains("live"), "{output}");
    assert!(!output.contains(&standard), "{output}");
    assert!(!output.contains(&unique), "{output}");

    let restricted = format!("rk_test_RESTRICTED{unique}");
    let output = worker_output("KASSA_STRIPE_API_KEY", &restricted).await;
    assert_eq!(
        output.matches("a restricted key (rk_)").count(),
        0,
        "{output}"
    );
}

#[tokio::test]
async fn the_poller_finds_each_modes_missed_events_with_its_own_key_and_cursor() {
    let app = TestApp::builder()
        .two_modes()
        .dropping_webhooks()
        .events_poller(kassa_worker::poller::PollerConfig {
            interval: Duration::from_millis(200),
            first_lookback: Duration::from_secs(3600),
            settle: Duration::ZERO,
        })
        .spawn()
        .await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut sessions = Vec::new();
    for mode in [Mode::Test, Mode::Live] {
        let email = format!("polled-{mode}-{unique}@example.com");
        let id = app
            .create_setup_session_with(app.stripe_in(mode), &email)
            .await;
        app.complete(&id, card_of(mode));
        sessions.push((mode, id));
    }
    // Every webhook is lost: only the poller, listing each mode's events, brings them.
    for (mode, id) in &sessions {
        let record = eventually(
            Duration::from_secs(30),
            "the poller to bring the session's event",
            || async {
                app.store()
                    .checkout_session(id)
                    .await
                    .unwrap()
                    .filter(|s| s.status == "complete" && s.payment_method_id.is_some())
            },
        )
        .await;
        assert_eq!(record.livemode, mode.is_live());
        let cursor = eventually(Duration::from_secs(10), "the mode's cursor", || async {
            app.store()
                .poll_cursor(kassa_worker::poller::cursor_name(*mode))
                .await
                .unwrap()
        })
        .await;
        assert!(cursor.last_created > 0);
    }
    let lists = app.calls("GET", "/v1/events");
    for mode in [Mode::Test, Mode::Live] {
        let by_mode = lists
            .iter()
            .filter(|r| r.key_fingerprint.as_deref() == Some(fingerprint_of(mode).as_str()))
            .count();
        assert!(by_mode > 0, "no {mode}-mode listing: {lists:?}");
    }
    assert!(
        lists.iter().all(|r| r.status == 200),
        "every listing answered: {lists:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn kassa_reconcile_publishes_each_modes_missing_events() {
    let app = TestApp::builder()
        .two_modes()
        .dropping_webhooks()
        .spawn()
        .await;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut sessions = Vec::new();
    for mode in [Mode::Test, Mode::Live] {
        let email = format!("reconciled-{mode}-{unique}@example.com");
        let id = app
            .create_setup_session_with(app.stripe_in(mode), &email)
            .await;
        app.complete(&id, card_of(mode));
        sessions.push((mode, id));
    }
    let mut command = app.kassa_command(&["reconcile", "--since", "1h", "--settle", "0s"]);
    command
        .env("KASSA_STRIPE_LIVE_SECRET_KEY", LIVE_API_KEY)
        .env("KASSA_DEFAULT_MODE", "test");
    let out = crate::support::binary::run(command).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("(test and live mode)"), "{stdout}");
    for (mode, id) in &sessions {
        let line = stdout
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("the {mode} session {id} not reported: {stdout}"));
        assert!(
            line.contains("checkout.session.completed") && line.contains("published"),
            "{line}"
        );
        let record = eventually(
            Duration::from_secs(30),
            "the published event to be handled",
            || async {
                app.store()
                    .checkout_session(id)
                    .await
                    .unwrap()
                    .filter(|s| s.status == "complete" && s.payment_method_id.is_some())
            },
        )
        .await;
        assert_eq!(record.livemode, mode.is_live());
    }
    app.cleanup().await;
}
