//! Every route of the public listener, as `kassa serve` mounts it with an admin token: each is
//! either on a written public list (webhooks, health, the customers' pages) or answers 401
//! without the token — before its body is read. `/metrics` is on the metrics listener only. The probe sends headers announcing a large body
//! and only its first byte: a route that waited for the body would not answer in time.

use crate::support::app::TestApp;
use crate::support::assert_error;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "routes-admin-token-0123456789";

/// Every path `.route("…")` mounts in the crates that make up the HTTP listener, and the
/// names of the constants a `.route(NAME, …)` mounts instead of a literal.
fn mounted_paths() -> (BTreeSet<String>, BTreeSet<String>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "crates/kassa-api/src", "crates/kassa-ingress/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut paths = BTreeSet::new();
    let mut constants = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            if let Some(rest) = rest.strip_prefix('"') {
                paths.insert(rest[..rest.find('"').unwrap()].to_owned());
            } else if !rest.starts_with(')') {
                // (`.route()` without arguments is some other method of that name.)
                let end = rest.find([',', ')']).unwrap();
                constants.insert(rest[..end].trim().to_owned());
            }
        }
    }
    (paths, constants)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The answer to `method path` sent with `headers` and the first byte of a body announced as
/// 10 MB, or `None` if none came within `wait`.
async fn probe(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    wait: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: 10000000\r\n{headers}\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            answer.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length || n == 0 {
                    return;
                }
            } else if n == 0 {
                return;
            }
        }
    })
    .await;
    read.ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

#[tokio::test]
async fn every_route_is_public_by_name_or_refuses_without_the_token_before_reading_the_body() {
    let app = TestApp::builder()
        .admin_token(TOKEN)
        .without_worker()
        .spawn()
        .await;
    let address = app.stack.address.unwrap();
    let public: BTreeSet<&str> = kassa_api::PUBLIC_ROUTES
        .iter()
        .chain(kassa_ingress::PUBLIC_ROUTES)
        .copied()
        .collect();
    let (mounted, constants) = mounted_paths();
    // The one route not mounted by a literal is the metrics listener's, no route of the public
    // port.
    assert_eq!(
        constants,
        BTreeSet::from(["METRICS_PATH".to_owned()]),
        "a route mounted by a constant escapes this walk"
    );
    let (status, _) = app.get(kassa_ingress::health::METRICS_PATH).send().await;
    assert_eq!(status, 404, "the public port does not serve the metrics");
    let metrics = app
        .http
        .get(app.stack.metrics_url().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200, "the metrics listener does");
    for path in &public {
        assert!(
            mounted.contains(*path),
            "the public list names {path}, which no route mounts: {mounted:?}"
        );
    }
    let private: Vec<&String> = mounted
        .iter()
        .filter(|p| !public.contains(p.as_str()))
        .collect();
    assert!(
        private.iter().any(|p| p.as_str() == "/api/charges") && private.len() >= 8,
        "the back-office, checkout and connector routes: {private:?}"
    );

    for path in &private {
        let path = path.replace("{id}", "made_up_1");
        let mut refused = 0;
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let (status, body) = probe(address, method, &path, "", Duration::from_secs(3))
                .await
                .unwrap_or_else(|| {
                    panic!("{method} {path} without a token waited for its body (no answer in 3 s)")
                });
            match status {
                401 => {
                    let answer: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("{method} {path}: 401 not JSON ({e}): {body}"));
                    assert_error(&answer, "unauthorized", &format!("{method} {path}"));
                    refused += 1;
                }
                405 => {}
                other => panic!("{method} {path} without a token answered {other}: {body}"),
            }
        }
        assert!(refused > 0, "{path}: no method answered 401");
        // A wrong token is no token.
        let (status, _) = probe(
            address,
            "POST",
            &path,
            "Authorization: Bearer not-the-admin-token-at-all\r\n",
            Duration::from_secs(3),
        )
        .await
        .unwrap_or_else(|| panic!("POST {path} with a wrong token waited for its body"));
        assert!(
            status == 401 || status == 405,
            "POST {path} with a wrong token: {status}"
        );
    }

    // The probe can fail: with the token, the charge route does wait for the announced body.
    let authorised = probe(
        address,
        "POST",
        "/api/charges",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        authorised.is_none(),
        "with the token the route reads the body before answering: {authorised:?}"
    );

    // Readiness names the process's database beside the broker.
    let (status, ready) = app.get("/readyz").send().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["broker"], "connected", "{ready}");
    assert_eq!(ready["database"], "connected", "{ready}");

    // The public routes answer without a token (whatever they answer, never 401).
    for path in &public {
        let (status, _) = app.get(path).send().await;
        assert_ne!(status, 401, "GET {path} is public");
    }
    app.cleanup().await;
}
