//! Settings sealed in PostgreSQL, through the real `kassa` binary: `kassa settings set` of every
//! storable setting leaves no plaintext in a `pg_dump` of the database; `kassa serve` starts from
//! the stored settings alone and works (a Stripe call with the stored key, the API with the
//! stored admin token), also after `kassa settings rotate-master-key`; a wrong or missing master
//! key, or a sealed value moved into another setting's row, makes Kassa refuse to start, naming
//! the setting that could not be opened. An environment variable wins over a stored value, and a
//! running Kassa applies changed webhook secrets and SMTP URLs within `KASSA_SETTINGS_RELOAD`;
//! the admin API lists and sets settings without ever answering a value.

use crate::support::binary::{free_port, kassa, run, text, KassaProcess};
use crate::support::services;
use crate::support::smtp_sink::SmtpSink;
use crate::support::{app::TestApp, assert_error};
use kassa_stripe_sim::{SimConfig, Simulator};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";

/// `kassa ARGS` against `database_url` with `master_key`, `stdin` on its standard input.
async fn kassa_with_input(
    database_url: &str,
    master_key: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    let mut command = kassa(args);
    command
        .env("KASSA_DATABASE_URL", database_url)
        .env_remove("KASSA_MASTER_KEY")
        .env_remove("KASSA_MASTER_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = master_key {
        command.env("KASSA_MASTER_KEY", key);
    }
    let mut child = command.spawn().expect("the kassa binary starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// `kassa settings set NAME` with `value` on standard input; asserts success.
async fn set(database_url: &str, master_key: &str, name: &str, value: &str) {
    let out = kassa_with_input(
        database_url,
        Some(master_key),
        &["settings", "set", name],
        &format!("{value}\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "settings set {name}: {}",
        text(&out.stderr)
    );
}

/// A plain-SQL dump of the database (`pg_dump`, the PostgreSQL installed on this machine).
async fn pg_dump(database_url: &str) -> String {
    let pg_dump = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(Result::ok)
                .map(|v| v.path().join("bin/pg_dump"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| "pg_dump".into());
    let out = tokio::process::Command::new(pg_dump)
        .arg("--no-owner")
        .arg(database_url)
        .output()
        .await
        .expect("pg_dump runs");
    assert!(out.status.success(), "pg_dump: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `text` in lowercase hex, as `pg_dump` writes `bytea`.
fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `kassa serve` on the stored settings, with only the database, broker, Stripe's base URL and
/// `master_key` in the environment.
fn serve_command(
    database_url: &str,
    amqp_url: &str,
    prefix: &str,
    api_base: &str,
    master_key: Option<&str>,
) -> tokio::process::Command {
    let mut command = kassa(&["serve"]);
    command
        .env("KASSA_DATABASE_URL", database_url)
        .env("KASSA_AMQP_URL", amqp_url)
        .env("KASSA_AMQP_PREFIX", prefix)
        .env("KASSA_STRIPE_API_BASE", api_base)
        .env("RUST_LOG", "info")
        .env_remove("KASSA_LOG_FORMAT");
    for name in [
        "KASSA_STRIPE_API_KEY",
        "KASSA_STRIPE_PUBLISHABLE_KEY",
        "KASSA_STRIPE_WEBHOOK_SECRETS",
        "KASSA_STRIPE_TEST_SECRET_KEY",
        "KASSA_STRIPE_TEST_PUBLISHABLE_KEY",
        "KASSA_STRIPE_TEST_WEBHOOK_SECRETS",
        "KASSA_STRIPE_LIVE_SECRET_KEY",
        "KASSA_STRIPE_LIVE_PUBLISHABLE_KEY",
        "KASSA_STRIPE_LIVE_WEBHOOK_SECRETS",
        "KASSA_DEFAULT_MODE",
        "KASSA_SMTP_URL",
        "KASSA_ADMIN_TOKEN",
        "KASSA_MASTER_KEY",
        "KASSA_MASTER_KEY_FILE",
    ] {
        command.env_remove(name);
    }
    if let Some(key) = master_key {
        command.env("KASSA_MASTER_KEY", key);
    }
    command
}

#[tokio::test]
async fn stored_settings_leave_no_plaintext_and_kassa_runs_on_them_after_a_key_rotation() {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let sink = SmtpSink::start().await;
    let database_url = services::fresh_database_url().await;
    let amqp_url = services::amqp_url().await;
    let topology = kassa_broker::Topology::unique();

    let api_key = format!("sk_test_STOREDapikey{unique}");
    let admin_token = format!("STOREDadmintoken{unique}");
    let smtp_password = format!("STOREDsmtppassword{unique}");
    let values = [
        ("KASSA_STRIPE_API_KEY", api_key.clone()),
        (
            "KASSA_STRIPE_PUBLISHABLE_KEY",
            format!("pk_test_STOREDpublishable{unique}"),
        ),
        (
            "KASSA_STRIPE_WEBHOOK_SECRETS",
            format!(
                "whsec_STOREDold{unique},{}",
                kassa_stripe_sim::DEFAULT_WEBHOOK_SECRET
            ),
        ),
        (
            "KASSA_SMTP_URL",
            format!(
                "smtp://kassa:{smtp_password}@127.0.0.1:{}?tls=none",
                sink.port
            ),
        ),
        (
            "KASSA_SMTP_CONNECTIONS",
            format!(
                "billing=smtp://billing:STOREDbilling{unique}@127.0.0.1:{}?tls=none",
                sink.port
            ),
        ),
        ("KASSA_ADMIN_TOKEN", admin_token.clone()),
    ];
    for (name, value) in &values {
        set(&database_url, KEY_A, name, value).await;
    }

    // The listing names every setting with its mode and a masked value, never the value.
    let listed = kassa_with_input(&database_url, Some(KEY_A), &["settings", "list"], "").await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    for (name, value) in &values {
        let line = listing
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed:\n{listing}"));
        assert!(!line.contains(value.as_str()), "{line}");
    }
    let api_line = listing
        .lines()
        .find(|l| l.starts_with("KASSA_STRIPE_API_KEY "))
        .unwrap();
    assert!(api_line.contains(" test "), "{api_line}");
    assert!(
        api_line.ends_with(&format!("sk_test_…{}", &unique[unique.len() - 4..])),
        "{api_line}"
    );

    // No plaintext in a dump of the database, in clear or hex (bytea's dump form).
    let dump = pg_dump(&database_url).await;
    assert!(dump.contains("settings"), "the dump has the settings table");
    for (name, value) in &values {
        for secret in value
            .split([',', ':', '@'])
            .filter(|s| s.contains("STORED"))
        {
            assert!(!dump.contains(secret), "{name} in the dump");
            assert!(
                !dump.contains(&hex_of(secret)),
                "{name} in the dump, as hex"
            );
        }
    }
    assert!(!dump.contains(KEY_A), "the master key in the dump");

    // Rotate to a new key read from standard input: the old key opens nothing any more.
    let rotated = kassa_with_input(
        &database_url,
        Some(KEY_A),
        &["settings", "rotate-master-key"],
        KEY_B,
    )
    .await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    assert!(
        text(&rotated.stdout).starts_with("6 setting(s) re-sealed"),
        "{}",
        text(&rotated.stdout)
    );
    let old = kassa_with_input(&database_url, Some(KEY_A), &["settings", "list"], "").await;
    assert!(!old.status.success());
    assert!(
        text(&old.stderr).contains("cannot be opened with this master key"),
        "{}",
        text(&old.stderr)
    );

    // Kassa starts on the stored settings under the new key and uses them.
    let port = free_port();
    let command = serve_command(
        &database_url,
        &amqp_url,
        topology.prefix(),
        &sim.base_url(),
        Some(KEY_B),
    );
    let process = KassaProcess::start(command, port, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/api/customers", process.base))
        .bearer_auth(&admin_token)
        .header("Idempotency-Key", format!("settings-{unique}"))
        .json(&json!({"email": format!("stored-{unique}@example.com")}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let customers: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers")
        .collect();
    assert_eq!(customers.len(), 1, "one Stripe call with the stored key");
    let log = process.stop(Duration::from_secs(30)).await;
    for name in [
        "KASSA_STRIPE_API_KEY",
        "KASSA_ADMIN_TOKEN",
        "KASSA_SMTP_URL",
        "KASSA_STRIPE_WEBHOOK_SECRETS",
    ] {
        assert!(
            log.lines().any(|l| l.contains("setting source")
                && l.contains(name)
                && l.contains("database")),
            "the log says {name} came from the database:\n{log}"
        );
    }
    for (name, value) in &values {
        assert!(!log.contains(value.as_str()), "{name} in the log");
    }

    let _ = topology.delete_at(&amqp_url).await;
    services::drop_database(&database_url).await;
}

#[tokio::test]
async fn a_wrong_or_missing_master_key_or_a_moved_value_is_refused_naming_the_setting() {
    let database_url = services::fresh_database_url().await;
    let amqp_url = services::amqp_url().await;
    let topology = kassa_broker::Topology::unique();
    set(
        &database_url,
        KEY_A,
        "KASSA_ADMIN_TOKEN",
        "an-admin-token-of-32-characters!",
    )
    .await;
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_API_KEY",
        "sk_test_storedkeyformovingaround",
    )
    .await;

    // The environment wins over a stored value, but a stored value that cannot be opened
    // still refuses the start: it may be what the operator expects to run with.
    for (master_key, expected) in [
        (
            Some(KEY_B),
            "the stored setting KASSA_ADMIN_TOKEN cannot be opened with this master key",
        ),
        (
            None,
            "the stored setting KASSA_ADMIN_TOKEN is sealed and no master key is set",
        ),
    ] {
        let mut command = serve_command(
            &database_url,
            &amqp_url,
            topology.prefix(),
            "http://127.0.0.1:9",
            master_key,
        );
        command.env("KASSA_LISTEN", format!("127.0.0.1:{}", free_port()));
        let out = tokio::time::timeout(Duration::from_secs(60), run(command))
            .await
            .expect("kassa refuses at once");
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("refusing to start"), "{stderr}");
    }

    // The API key's sealed value and nonce copied into the admin token's row: it does not open
    // as the admin token, though the master key is right.
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    sqlx::query(
        "UPDATE settings SET (sealed, nonce) = (SELECT sealed, nonce FROM settings WHERE name = 'KASSA_STRIPE_API_KEY') WHERE name = 'KASSA_ADMIN_TOKEN'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let listed = kassa_with_input(&database_url, Some(KEY_A), &["settings", "list"], "").await;
    assert!(!listed.status.success());
    assert!(
        text(&listed.stderr).contains("the stored setting KASSA_ADMIN_TOKEN cannot be opened"),
        "{}",
        text(&listed.stderr)
    );
    let mut command = serve_command(
        &database_url,
        &amqp_url,
        topology.prefix(),
        "http://127.0.0.1:9",
        Some(KEY_A),
    );
    command.env("KASSA_LISTEN", format!("127.0.0.1:{}", free_port()));
    let out = run(command).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("KASSA_ADMIN_TOKEN cannot be opened"),
        "{}",
        text(&out.stderr)
    );

    services::drop_database(&database_url).await;
}

#[tokio::test]
async fn values_come_from_stdin_and_bad_ones_are_refused_without_echo() {
    let database_url = services::fresh_database_url().await;
    let out = kassa_with_input(
        &database_url,
        Some(KEY_A),
        &["settings", "set", "KASSA_STRIPE_API_KEY"],
        "pk_test_REFUSEDpublishable\n",
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("KASSA_STRIPE_API_KEY:"), "{stderr}");
    assert!(!stderr.contains("REFUSED"), "{stderr}");
    let out = kassa_with_input(
        &database_url,
        Some(KEY_A),
        &["settings", "set", "KASSA_DATABASE_URL"],
        "x\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not a setting Kassa stores"));
    let out = kassa_with_input(
        &database_url,
        None,
        &["settings", "set", "KASSA_ADMIN_TOKEN"],
        "an-admin-token-of-32-characters!\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("KASSA_MASTER_KEY"),
        "{}",
        text(&out.stderr)
    );
    let key = kassa_with_input(&database_url, None, &["settings", "new-master-key"], "").await;
    assert!(key.status.success());
    set(
        &database_url,
        text(&key.stdout).trim(),
        "KASSA_ADMIN_TOKEN",
        "an-admin-token-of-32-characters!",
    )
    .await;
    services::drop_database(&database_url).await;
}

const ADMIN: &str = "settings-admin-token-0123456789";

#[tokio::test]
async fn the_settings_api_stores_sealed_and_never_answers_a_value() {
    let app = TestApp::builder()
        .admin_token(ADMIN)
        .master_key(KEY_A)
        .without_worker()
        .spawn()
        .await;
    let put = |name: &str, value: &str, token: Option<&'static str>| {
        app.call(reqwest::Method::PUT, &format!("/api/settings/{name}"))
            .token(token)
            .json(&json!({ "value": value }))
            .send()
    };
    let secret = "sk_live_APIstoredsecretkey4f2a";
    let (status, _) = put("KASSA_STRIPE_API_KEY", secret, None).await;
    assert_eq!(status, 401);
    let (status, answer) = put("KASSA_DATABASE_URL", "postgres://x", Some(ADMIN)).await;
    assert_eq!(status, 404, "{answer}");
    assert_error(&answer, "unknown_setting", "a setting Kassa does not store");
    let (status, answer) = put(
        "KASSA_STRIPE_API_KEY",
        "pk_live_APIrefusedpublishable",
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_error(
        &answer,
        "invalid_setting",
        "a publishable key as the secret key",
    );
    assert!(!answer.to_string().contains("APIrefused"), "{answer}");
    let (status, answer) = app
        .call(reqwest::Method::PUT, "/api/settings/KASSA_ADMIN_TOKEN")
        .token(Some(ADMIN))
        .json(&json!({ "value": "a-long-enough-admin-token", "note": "x" }))
        .send()
        .await;
    assert_eq!(status, 400, "an unknown field is refused: {answer}");

    let (status, answer) = put("KASSA_STRIPE_API_KEY", secret, Some(ADMIN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["name"], "KASSA_STRIPE_API_KEY");
    assert_eq!(answer["mode"], "live");
    assert_eq!(answer["masked"], "sk_live_…4f2a");
    assert!(!answer.to_string().contains("APIstored"), "{answer}");

    let (status, listing) = app.get("/api/settings").token(Some(ADMIN)).send().await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["data"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["data"][0]["masked"], "sk_live_…4f2a");
    assert!(!listing.to_string().contains("APIstored"), "{listing}");
    assert!(listing["storable"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "KASSA_SMTP_CONNECTIONS"));
    // Sealed in the row: what the API stored opens only under the master key.
    let stored = app.store().sealed_settings().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!String::from_utf8_lossy(&stored[0].sealed).contains("APIstored"));
    app.cleanup().await;

    let keyless = TestApp::builder()
        .admin_token(ADMIN)
        .without_worker()
        .spawn()
        .await;
    let (status, answer) = keyless
        .call(reqwest::Method::PUT, "/api/settings/KASSA_ADMIN_TOKEN")
        .token(Some(ADMIN))
        .json(&json!({ "value": "a-long-enough-admin-token" }))
        .send()
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_error(&answer, "master_key_required", "no master key");
    keyless.cleanup().await;
}

#[tokio::test]
async fn a_running_kassa_verifies_webhooks_with_changed_stored_secrets_within_the_reload_interval()
{
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let database_url = services::fresh_database_url().await;
    let amqp_url = services::amqp_url().await;
    let topology = kassa_broker::Topology::unique();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let old_secret = format!("whsec_old{unique}");
    let new_secret = format!("whsec_new{unique}");
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_API_KEY",
        "sk_test_reloadingkassa",
    )
    .await;
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_WEBHOOK_SECRETS",
        &old_secret,
    )
    .await;

    set(&database_url, KEY_A, "KASSA_ADMIN_TOKEN", ADMIN).await;
    let port = free_port();
    let mut command = serve_command(
        &database_url,
        &amqp_url,
        topology.prefix(),
        &sim.base_url(),
        Some(KEY_A),
    );
    command
        .env("KASSA_SETTINGS_RELOAD", "1s")
        .env("KASSA_ADMIN_TOKEN", "an-admin-token-from-the-environment");
    let process = KassaProcess::start(command, port, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    // The environment wins over the stored admin token.
    for (token, status) in [("an-admin-token-from-the-environment", 200), (ADMIN, 401)] {
        let answer = http
            .get(format!("{}/api/charges", process.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), status, "token {token}");
    }
    let post_signed = |secret: String, n: u32| {
        let http = http.clone();
        let url = format!("{}/webhooks/stripe", process.base);
        let body = json!({
            "id": format!("evt_reload_{unique}_{n}"),
            "object": "event",
            "type": "customer.created",
            "livemode": false,
            "created": 1_700_000_000,
            "data": {"object": {"id": "cus_reload", "object": "customer"}},
        })
        .to_string();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let header = kassa_stripe_sim::signature_header(&secret, now, body.as_bytes());
            http.post(url)
                .header("Stripe-Signature", header)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post_signed(old_secret.clone(), 1).await,
        200,
        "the stored secret verifies"
    );
    assert_eq!(
        post_signed(new_secret.clone(), 2).await,
        400,
        "not yet the new one"
    );

    let started = std::time::Instant::now();
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_WEBHOOK_SECRETS",
        &new_secret,
    )
    .await;
    let mut n = 3;
    crate::support::eventually(
        Duration::from_secs(15),
        "the new stored secret to verify",
        || {
            n += 1;
            let attempt = post_signed(new_secret.clone(), n);
            async move { (attempt.await == 200).then_some(()) }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "applied within the reload interval"
    );
    assert_eq!(
        post_signed(old_secret.clone(), 99).await,
        400,
        "the old secret is gone"
    );

    let log = process.stop(Duration::from_secs(30)).await;
    assert!(log.contains("stored setting changed: applied"), "{log}");
    assert!(!log.contains(&new_secret) && !log.contains(&old_secret));
    assert!(
        log.lines().any(|l| l.contains("setting source")
            && l.contains("KASSA_ADMIN_TOKEN")
            && l.contains("environment")),
        "the log says the admin token came from the environment:\n{log}"
    );
    let _ = topology.delete_at(&amqp_url).await;
    services::drop_database(&database_url).await;
}

#[tokio::test]
async fn a_running_kassa_takes_a_changed_stored_admin_token_and_publishable_key_within_the_reload_interval(
) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let database_url = services::fresh_database_url().await;
    let amqp_url = services::amqp_url().await;
    let topology = kassa_broker::Topology::unique();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let old_token = format!("old-admin-token-{unique}");
    let new_token = format!("new-admin-token-{unique}");
    let old_publishable = format!("pk_test_old{unique}");
    let new_publishable = format!("pk_test_new{unique}");
    for (name, value) in [
        ("KASSA_STRIPE_TEST_SECRET_KEY", "rk_test_reloadingtoken"),
        ("KASSA_STRIPE_TEST_WEBHOOK_SECRETS", "whsec_reloadingtoken"),
        (
            "KASSA_STRIPE_TEST_PUBLISHABLE_KEY",
            old_publishable.as_str(),
        ),
        ("KASSA_ADMIN_TOKEN", old_token.as_str()),
    ] {
        set(&database_url, KEY_A, name, value).await;
    }
    let port = free_port();
    let mut command = serve_command(
        &database_url,
        &amqp_url,
        topology.prefix(),
        &sim.base_url(),
        Some(KEY_A),
    );
    command.env("KASSA_SETTINGS_RELOAD", "1s");
    let process = KassaProcess::start(command, port, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let charges_with = |token: String| {
        let request = http
            .get(format!("{}/api/charges", process.base))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let publishable_key_handed_out = |token: String| {
        let request = http
            .post(format!("{}/api/payment-intents", process.base))
            .bearer_auth(token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"amount": 1500, "currency": "usd"}));
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status().as_u16(), 201);
            let body: Value = answer.json().await.unwrap();
            body["publishable_key"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(charges_with(old_token.clone()).await, 200);
    assert_eq!(charges_with(new_token.clone()).await, 401, "not yet");
    assert_eq!(
        publishable_key_handed_out(old_token.clone()).await,
        old_publishable
    );

    let started = std::time::Instant::now();
    set(&database_url, KEY_A, "KASSA_ADMIN_TOKEN", &new_token).await;
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_TEST_PUBLISHABLE_KEY",
        &new_publishable,
    )
    .await;
    crate::support::eventually(
        Duration::from_secs(15),
        "the new stored admin token to be taken",
        || {
            let status = charges_with(new_token.clone());
            async move { (status.await == 200).then_some(()) }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "applied within the reload interval"
    );
    assert_eq!(
        charges_with(old_token.clone()).await,
        401,
        "the old token is gone"
    );
    crate::support::eventually(
        Duration::from_secs(10),
        "the new publishable key to be handed out",
        || {
            let key = publishable_key_handed_out(new_token.clone());
            let expected = new_publishable.clone();
            async move { (key.await == expected).then_some(()) }
        },
    )
    .await;

    let log = process.stop(Duration::from_secs(30)).await;
    assert!(log.contains("stored setting changed: applied"), "{log}");
    assert!(
        !log.contains(&new_token) && !log.contains(&old_token),
        "{log}"
    );
    let _ = topology.delete_at(&amqp_url).await;
    services::drop_database(&database_url).await;
}

#[tokio::test]
async fn a_running_kassa_mails_through_a_changed_stored_smtp_url_within_the_reload_interval() {
    let database_url = services::fresh_database_url().await;
    let amqp_url = services::amqp_url().await;
    let topology = kassa_broker::Topology::unique();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let first = SmtpSink::start().await;
    let second = SmtpSink::start().await;
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_API_KEY",
        "sk_test_reloadingsmtp",
    )
    .await;
    set(
        &database_url,
        KEY_A,
        "KASSA_STRIPE_WEBHOOK_SECRETS",
        kassa_stripe_sim::DEFAULT_WEBHOOK_SECRET,
    )
    .await;
    set(&database_url, KEY_A, "KASSA_ADMIN_TOKEN", ADMIN).await;
    set(&database_url, KEY_A, "KASSA_SMTP_URL", &first.url()).await;

    let port = free_port();
    let mut command = serve_command(
        &database_url,
        &amqp_url,
        topology.prefix(),
        &sim.base_url(),
        Some(KEY_A),
    );
    command.env("KASSA_SETTINGS_RELOAD", "1s");
    let process = KassaProcess::start(command, port, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    // A payment on the merchant's form, confirmed: Kassa e-mails the receipt.
    let pay = |n: u32| {
        let http = http.clone();
        let base = process.base.clone();
        let sim_base = sim.base_url();
        async move {
            let intent: Value = http
                .post(format!("{base}/api/payment-intents"))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&json!({"amount": 1000, "receipt_email": format!("buyer{n}@example.com")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = intent["id"].as_str().expect("a PaymentIntent").to_owned();
            let paid = crate::support::sim::post_form(
                &sim_base,
                &format!("/v1/payment_intents/{id}/confirm"),
                &[("payment_method", "pm_card_visa")],
            )
            .await;
            assert_eq!(paid["status"], "succeeded", "{paid}");
            let confirmed = http
                .post(format!("{base}/api/payment-intents/{id}/confirmation"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(confirmed.status(), 200);
        }
    };
    pay(0).await;
    let mail = first.wait_for(1).await;
    assert!(mail[0].rcpt_to.iter().any(|r| r.contains("buyer0@")));

    set(&database_url, KEY_A, "KASSA_SMTP_URL", &second.url()).await;
    let mut n = 0;
    crate::support::eventually(
        Duration::from_secs(20),
        "a receipt through the new SMTP server",
        || {
            n += 1;
            let payment = pay(n);
            let second = &second;
            async move {
                payment.await;
                let received = second.received.lock().unwrap().len();
                (received > 0).then_some(())
            }
        },
    )
    .await;
    let log = process.stop(Duration::from_secs(30)).await;
    assert!(log.contains("stored setting changed: applied"), "{log}");
    let _ = topology.delete_at(&amqp_url).await;
    services::drop_database(&database_url).await;
}
