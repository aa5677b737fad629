//! The crash soak at CI size: `kassa-bench soak` with about 1 000 events and 200 charges through
//! two ingress and two worker processes while workers are SIGKILLed every few seconds, an ingress
//! is SIGKILLed once and RabbitMQ is restarted once, then "the day after": charges whose create
//! answers are lost, dead-lettered, and replayed after 25 hours on Stripe's clock. Every check
//! (events processed exactly once, at most one succeeded PaymentIntent per charge over the whole
//! run, nothing stranded, no unexpected dead letter) must pass.
//!
//! PostgreSQL crashes once too (`--postgres-crash`: the PostgreSQL of `scripts/postgres-scratch`,
//! started for the run; never the machine's own): a worker's `/readyz` must say so, messages must
//! wait in RabbitMQ, and the same processes must recover.
//!
//! This restarts RabbitMQ (`rabbitmqctl stop_app` / `start_app`, the node of
//! KASSA_SOAK_RABBITMQ_NODE or the local default), so it is a test binary of its own: cargo runs
//! test binaries one after another, never beside this one. kassa-bench has cargo bring the `kassa`
//! binary it starts up to date first (it runs under cargo here).

use std::process::Command;
use std::time::Duration;

#[test]
fn the_crash_soak_loses_nothing_and_charges_nothing_twice() {
    let amqp_url = std::env::var("KASSA_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let node = std::env::var("KASSA_SOAK_RABBITMQ_NODE").unwrap_or_default();
    if node.is_empty() {
        assert!(
            amqp_url.contains("@127.0.0.1:5672/") || amqp_url.contains("@localhost:5672/"),
            "the soak restarts the local RabbitMQ node; KASSA_AMQP_URL points elsewhere ({amqp_url}): \
             set KASSA_SOAK_RABBITMQ_NODE to the node behind it"
        );
    }
    // The soak starts the crashable PostgreSQL when it is down; stopped again after if so.
    let postgres_was_running = postgres_scratch("status").starts_with("running");
    let dir = std::env::temp_dir().join(format!("kassa-soak-test-{}", std::process::id()));
    let output = dir.join("soak.json");
    let run = Command::new(env!("CARGO_BIN_EXE_kassa-bench"))
        .args(["soak", "--events", "1000", "--charges", "200"])
        .args(["--load-secs", "40", "--deadline-secs", "280"])
        .arg("--postgres-crash")
        .arg("--output")
        .arg(&output)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .env("KASSA_AMQP_URL", &amqp_url)
        .env("KASSA_SOAK_RABBITMQ_NODE", &node)
        .output()
        .expect("running kassa-bench soak");
    if !postgres_was_running {
        postgres_scratch("stop");
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the soak failed ({}):\n{stdout}\n{}",
        run.status,
        stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).expect("the soak wrote its JSON report"))
            .expect("the report is JSON");
    assert_eq!(report["passed"], true, "{report:#}");
    let checks = &report["checks"];
    assert!(
        report["size"]["events"].as_u64().unwrap() >= 900,
        "{report:#}"
    );
    assert_eq!(checks["events_processed"], checks["events"]);
    assert_eq!(checks["charges_paid_twice"], 0);
    assert_eq!(checks["charges_paid_once"], checks["good_charges"]);
    assert_eq!(checks["stranded_messages"], 0);
    assert!(checks["dead_letter_ids_injected"].as_u64().unwrap() > 0);
    assert_eq!(
        checks["injected_in_dlq"],
        checks["dead_letter_ids_injected"]
    );
    assert_eq!(checks["unexpected_dead_letters"], 0);
    let day_after = &report["day_after"];
    assert_eq!(day_after["charges"], 12, "{report:#}");
    assert_eq!(
        day_after["dead_lettered_and_replayed"], day_after["charges"],
        "{report:#}"
    );
    assert_eq!(
        day_after["settled_as_stripe_says"], day_after["charges"],
        "{report:#}"
    );
    assert!(day_after["keys_forgotten"].as_u64().unwrap() > 0);
    assert_eq!(report["size"]["charges"], 200 + 12);
    let chaos = &report["chaos"];
    assert!(chaos["worker_kills"].as_u64().unwrap() >= 3, "{report:#}");
    assert_eq!(chaos["ingress_kills"], 1);
    assert_eq!(chaos["rabbitmq_restarts"], 1);
    let crash = &chaos["postgres_crash"];
    assert_eq!(crash["readyz_said_unavailable"], true, "{report:#}");
    assert!(
        crash["most_messages_waiting"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(crash["same_processes"], true, "{report:#}");
    let faults = &report["faults"];
    assert!(faults["duplicate_webhooks_sent"].as_u64().unwrap() > 0);
    assert!(faults["answered_500"].as_u64().unwrap() > 0);
    assert!(faults["answered_429"].as_u64().unwrap() > 0, "{report:#}");
    // The soak's own wall time, from its report: bringing the kassa binary up to date first
    // (a build on a fresh machine) does not count.
    let elapsed = Duration::from_secs_f64(report["seconds"]["total"].as_f64().unwrap());
    assert!(
        elapsed < Duration::from_secs(300),
        "the CI-size soak took {elapsed:?}, over five minutes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scripts/postgres-scratch COMMAND`'s output.
fn postgres_scratch(command: &str) -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres-scratch");
    let output = Command::new(script)
        .arg(command)
        .output()
        .expect("running scripts/postgres-scratch");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
