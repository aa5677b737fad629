//! Conformance: the unmodified official stripe-python (pinned below) runs `conformance/conformance.py`
//! against an in-process simulator. The Python environment comes from `scripts/stripe-python` (a venv
//! cached under `target/`); a missing `python3` or a failed `pip install` fails this test loudly (it never skips).

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

fn run_script(python: &Path, base_url: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/conformance.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(base_url)
        .arg(DEFAULT_WEBHOOK_SECRET)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script:?}: {e}"));
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
        .unwrap_or_else(|e| panic!("waiting for {script:?}: {e}"))
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
    let out = tokio::task::spawn_blocking(move || run_script(&python, &base_url))
        .await
        .expect("script task");
    sim.shutdown().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "conformance.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "the script did not report its checks:\n{stdout}"
    );
}
