//! PostgreSQL unreachable under a running `kassa worker`: its `/readyz` says so, an event that
//! arrives meanwhile waits in RabbitMQ, and once the database answers again the same process
//! reconnects and handles it — no restart. A worker started while PostgreSQL is unreachable waits
//! for it rather than exiting.

use crate::support::app::TestApp;
use crate::support::binary::{free_port, KassaProcess};
use crate::support::eventually;
use crate::support::proxy::TcpProxy;
use crate::support::services;
use crate::worker::assert_card_saved;
use kassa_broker::Topology;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn a_worker_without_its_database_is_not_ready_and_resumes_by_itself() {
    let app = TestApp::builder()
        .without_ingress()
        .without_worker()
        .spawn()
        .await;
    let mut proxy = TcpProxy::start(&services::database_server_address().await).await;
    let command = worker_through(&app, &proxy);
    let worker = KassaProcess::start(command, free_port(), Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let readyz = || async {
        let answer = http
            .get(format!("{}/readyz", worker.base))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json::<Value>().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(
        (status, &body["database"]),
        (200, &Value::from("connected")),
        "{body}"
    );

    proxy.down().await;
    let body = eventually(Duration::from_secs(10), "/readyz to say 503", || async {
        let (status, body) = readyz().await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["database"], "disconnected", "{body}");
    assert_eq!(body["broker"], "connected", "{body}");

    // A completed session's event arrives while the database is away: nothing is recorded.
    let (session, event_id) = publish_a_completed_session(&app).await;
    // The worker took it, waited for a connection (the pool's 10 s), could not claim it in the
    // inbox and put it back on the retry ladder: it waits in RabbitMQ.
    let waiting = Topology::new(app.topology.prefix()).events_retry_queue("5s");
    eventually(
        Duration::from_secs(30),
        "the event to wait on the retry ladder",
        || async { (messages_in(&app, &waiting).await > 0).then_some(()) },
    )
    .await;
    assert!(
        app.store().event(&event_id).await.unwrap().is_none(),
        "nothing recorded while PostgreSQL is unreachable"
    );

    proxy.up().await;
    eventually(
        Duration::from_secs(20),
        "/readyz to say 200 again",
        || async { (readyz().await.0 == 200).then_some(()) },
    )
    .await;
    let processed = app.processed(&event_id).await;
    assert!(processed.processed_at.is_some());
    assert_card_saved(&app, &session).await;
    // The same process all along: it exits cleanly on SIGTERM.
    worker.stop(Duration::from_secs(30)).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_started_before_its_database_waits_for_it_and_then_works() {
    let app = TestApp::builder()
        .without_ingress()
        .without_worker()
        .spawn()
        .await;
    // A port nothing listens on: the proxy accepts, cannot reach it and closes the connection,
    // as a database host that is up while PostgreSQL is not yet.
    let mut proxy = TcpProxy::start(&format!("127.0.0.1:{}", free_port())).await;
    let command = worker_through(&app, &proxy);
    let starting = tokio::spawn(KassaProcess::start(
        command,
        free_port(),
        Duration::from_secs(90),
    ));
    // A worker that gave up would have tried once: three tries mean it is waiting.
    eventually(
        Duration::from_secs(30),
        "the worker to try the database three times",
        || async { (proxy.accepted() >= 3).then_some(()) },
    )
    .await;

    proxy
        .forward_to(&services::database_server_address().await)
        .await;
    let worker = starting.await.unwrap();
    let (session, event_id) = publish_a_completed_session(&app).await;
    let processed = app.processed(&event_id).await;
    assert!(processed.processed_at.is_some());
    assert_card_saved(&app, &session).await;
    let logs = worker.stop(Duration::from_secs(30)).await;
    assert!(
        logs.contains("PostgreSQL is unreachable; waiting for it before starting"),
        "{logs}"
    );
    app.cleanup().await;
}

/// `kassa worker` with its database reached through `proxy`.
fn worker_through(app: &TestApp, proxy: &TcpProxy) -> tokio::process::Command {
    let mut through = url::Url::parse(&app.database_url).unwrap();
    through.set_ip_host(proxy.address.ip()).unwrap();
    through.set_port(Some(proxy.address.port())).unwrap();
    let mut command = app.kassa_command(&["worker"]);
    command
        .env("KASSA_DATABASE_URL", through.as_str())
        .env("RUST_LOG", "info");
    command
}

/// A setup session completed on the simulator, its `checkout.session.completed` published to the
/// worker's queue: the session's id and the event's.
async fn publish_a_completed_session(app: &TestApp) -> (String, String) {
    let session = app
        .create_setup_session(&format!("c{}@example.com", uuid::Uuid::new_v4().simple()))
        .await;
    app.complete(&session, "pm_card_visa");
    let completed = app
        .stripe_events("checkout.session.completed")
        .await
        .remove(0);
    let event_id = completed["id"].as_str().unwrap().to_owned();
    app.publish_event(&completed).await;
    (session, event_id)
}

/// Messages in `queue` now (ready ones; a message on a retry queue is never consumed).
async fn messages_in(app: &TestApp, queue: &str) -> u32 {
    let channel = app.stack.broker.open_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, Default::default())
        .await
    {
        Ok(declared) => declared.message_count(),
        Err(_) => 0,
    }
}

/// SIGTERM while the worker is still starting (here: its migrations wait for a lock another
/// session holds, after PostgreSQL answered its first connection) stops it as soon as it can,
/// with a clean exit, instead of being swallowed and leaving a worker running that was told
/// to stop.
#[tokio::test]
async fn a_worker_told_to_stop_while_it_starts_stops() {
    let app = TestApp::builder()
        .without_ingress()
        .without_worker()
        .spawn()
        .await;
    // The migrator reads its table first: while this transaction holds it, start-up waits.
    let mut holder = app.store().pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let logs = std::env::temp_dir().join(format!("kassa-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).unwrap();
    let mut command = app.kassa_command(&["worker"]);
    let mut worker = command
        .env("KASSA_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("KASSA_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(logs.join("stdout")).unwrap())
        .stderr(std::fs::File::create(logs.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the worker's migrations to wait for the table",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks
                 WHERE relation = '_sqlx_migrations'::regclass AND NOT granted",
            )
            .fetch_one(app.store().pool())
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;

    let pid = nix::unistd::Pid::from_raw(worker.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    holder.rollback().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    let printed = format!(
        "{}\n{}",
        std::fs::read_to_string(logs.join("stdout")).unwrap_or_default(),
        std::fs::read_to_string(logs.join("stderr")).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&logs);
    let status = status
        .unwrap_or_else(|_| panic!("the worker exits after SIGTERM during start-up\n{printed}"))
        .unwrap();
    assert!(status.success(), "exit status {status:?}\n{printed}");
    assert!(
        !printed.contains("kassa worker started"),
        "a worker told to stop does not start consuming\n{printed}"
    );
    app.cleanup().await;
}
