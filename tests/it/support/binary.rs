//! The `kassa` binary as people run it, started one way: [`kassa`] for a command that runs and
//! exits, [`KassaProcess`] for one that serves (`serve`, `ingress`, `worker`) until SIGTERM.

use super::eventually;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

/// `kassa ARGS` as a child process that dies with the test: logging at `warn` and without
/// backtraces (so its stderr is what a user reads), with nothing else of the test's environment
/// changed. The caller adds the variables the command needs (`TestApp::kassa_command` adds an
/// app's database, queues and simulator).
pub fn kassa(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .kill_on_drop(true);
    command
}

/// The arguments of `kassa charge --customer … --amount … --currency … --reference …`.
pub fn charge_args<'a>(
    customer: &'a str,
    amount: &'a str,
    currency: &'a str,
    reference: &'a str,
) -> [&'a str; 9] {
    [
        "charge",
        "--customer",
        customer,
        "--amount",
        amount,
        "--currency",
        currency,
        "--reference",
        reference,
    ]
}

/// Runs `command` to its end and returns its exit status and output.
pub async fn run(mut command: tokio::process::Command) -> Output {
    command.output().await.expect("the kassa binary runs")
}

/// A command's output (stdout or stderr) as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A serving `kassa` process on a port of its own, its output in files (a full pipe would stall
/// it), ready once `/readyz` answers 200.
pub struct KassaProcess {
    child: tokio::process::Child,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    logs: PathBuf,
}

impl KassaProcess {
    /// Starts `kassa SUBCOMMAND` from `command` (see [`kassa`]) on `port` and waits up to
    /// `ready_within` for it to be ready.
    pub async fn start(
        mut command: tokio::process::Command,
        port: u16,
        ready_within: Duration,
    ) -> Self {
        let logs = std::env::temp_dir().join(format!("kassa-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&logs).unwrap();
        // Tests run many processes at once: each its own metrics port unless a test names one.
        let metrics_named = (command.as_std().get_envs()).any(|(k, _)| k == "KASSA_METRICS_LISTEN");
        if !metrics_named {
            command.env("KASSA_METRICS_LISTEN", "127.0.0.1:0");
        }
        let child = command
            .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.join("stdout")).unwrap())
            .stderr(std::fs::File::create(logs.join("stderr")).unwrap())
            .spawn()
            .expect("the kassa binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually(ready_within, "kassa to be ready", || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        Self { child, base, logs }
    }

    /// SIGTERM; asserts a clean exit (status 0) within `within` and returns everything it
    /// printed, stdout then stderr (also shown on the test's output when `TEST_LOG` is set).
    pub async fn stop(mut self, within: Duration) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("kassa exits after SIGTERM")
            .unwrap();
        let stdout = std::fs::read_to_string(self.logs.join("stdout")).unwrap();
        let stderr = std::fs::read_to_string(self.logs.join("stderr")).unwrap();
        let _ = std::fs::remove_dir_all(&self.logs);
        let logs = format!("{stdout}\n{stderr}");
        if std::env::var_os("TEST_LOG").is_some() {
            println!("{logs}");
        }
        assert!(status.success(), "exit status {status:?}\n{logs}");
        logs
    }
}
