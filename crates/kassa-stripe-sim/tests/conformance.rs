//! Conformance: the unmodified official stripe-python (pinned below) runs `conformance/conformance.py`
//! against an in-process simulator. The Python environment is a venv cached under `target/`; a missing
//! `python3` or a failed `pip install` fails this test loudly (it never skips).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kassa_stripe_sim::{SimConfig, Simulator, DEFAULT_WEBHOOK_SECRET};

/// The stripe-python release the simulator is checked against (`pip index versions stripe`).
const STRIPE_PYTHON: &str = "16.1.0";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn target_dir() -> PathBuf {
    // The test binary lives in {target}/{profile}/deps/; this follows CARGO_TARGET_DIR too.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A venv with stripe-python installed, reused when it already has the pinned version.
fn python_with_stripe() -> PathBuf {
    let python = std::env::var("KASSA_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(
        Command::new(&python).arg("--version"),
        "python3 is required for the conformance test (set KASSA_PYTHON to use another)",
    );
    let venv = target_dir()
        .join("kassa-stripe-sim-conformance")
        .join(format!("venv-stripe-{STRIPE_PYTHON}"));
    let venv_python = venv.join("bin").join("python");
    let ready = venv_python.exists()
        && Command::new(&venv_python)
            .args([
                "-c",
                &format!("import stripe, sys; sys.exit(stripe.VERSION != '{STRIPE_PYTHON}')"),
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            "creating the Python venv",
        );
        run(
            Command::new(&venv_python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("stripe=={STRIPE_PYTHON}"),
            ]),
            "pip install stripe (PyPI must be reachable)",
        );
    }
    venv_python
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
