//! Conformance: the unmodified official stripe-python and stripe-node run `conformance/conformance.py`
//! and `conformance/conformance.cjs` against an in-process simulator. The libraries come from
//! `scripts/stripe-python` (a venv cached under `target/`) and `scripts/stripe-node` (an npm install
//! cached under `target/`), each pinned there; a missing interpreter or a failed install fails these
//! tests loudly (they never skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kassa_stripe_sim::{SimConfig, Simulator, DEFAULT_WEBHOOK_SECRET};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// A Python with the official stripe-python, pinned in `scripts/stripe-python` (which creates and
/// caches its venv under `target/`): shared with Kassa's own tests of official-library signatures.
fn python_with_stripe() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/stripe-python");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script:?}: {e}"));
    assert!(
        out.status.success(),
        "scripts/stripe-python failed (python3 and PyPI are needed):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The directory whose `node_modules` holds the official stripe-node, pinned in `scripts/stripe-node`.
fn stripe_node_dir() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/stripe-node");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script:?}: {e}"));
    assert!(
        out.status.success(),
        "scripts/stripe-node failed (node, npm and the npm registry are needed):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn run_script(program: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program:?}: {e}"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program:?}: {e}"))
}

fn check_output(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{what} did not report its checks:\n{stdout}"
    );
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_python_cannot_tell_the_simulator_from_stripe() {
    let python = tokio::task::spawn_blocking(python_with_stripe)
        .await
        .expect("venv task");
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let base_url = sim.base_url();
    let out = tokio::task::spawn_blocking(move || {
        let script = script("conformance.py");
        run_script(
            &python,
            &[
                script.as_os_str(),
                base_url.as_ref(),
                DEFAULT_WEBHOOK_SECRET.as_ref(),
            ],
        )
    })
    .await
    .expect("script task");
    sim.shutdown().await;
    check_output("conformance.py", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_stripe_node_cannot_tell_the_simulator_from_stripe() {
    let dir = tokio::task::spawn_blocking(stripe_node_dir)
        .await
        .expect("stripe-node task");
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let base_url = sim.base_url();
    let out = tokio::task::spawn_blocking(move || {
        let script = script("conformance.cjs");
        run_script(
            Path::new("node"),
            &[
                script.as_os_str(),
                dir.as_os_str(),
                base_url.as_ref(),
                DEFAULT_WEBHOOK_SECRET.as_ref(),
            ],
        )
    })
    .await
    .expect("script task");
    sim.shutdown().await;
    check_output("conformance.cjs", &out);
}
