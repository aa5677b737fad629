//! deploy/ stays true to the code: every manifest and the dashboard parse, the RabbitMQ
//! definitions are exactly what `kassa_broker::Topology` declares, every metric the dashboard
//! and the alert rules name is one that `/metrics` shows, and every `KASSA_` variable the
//! manifests set is one the binary reads.

use crate::support::app::TestApp;
use crate::support::binary::kassa;
use crate::support::eventually;
use kassa_broker::topology::{ExchangeType, QueueArgument};
use kassa_broker::Topology;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn deploy_files(extension: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(&repo().join("deploy"), &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == extension));
    files.sort();
    files
}

/// Every YAML document of `path`, as JSON values (merge keys `<<` applied).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = <serde_norway::Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
            serde_json::to_value(value)
                .unwrap_or_else(|e| panic!("{}: not JSON-like: {e}", path.display()))
        })
        .collect()
}

fn json_file(path: &str) -> Value {
    let path = repo().join(path);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

#[test]
fn every_manifest_parses_and_kubernetes_objects_are_complete() {
    let yamls = deploy_files("yaml");
    assert!(yamls.len() >= 8, "deploy/ YAML files: {yamls:?}");
    let mut kinds = BTreeSet::new();
    for path in &yamls {
        let documents = yaml_documents(path);
        assert!(!documents.is_empty(), "{} is empty", path.display());
        if !path.starts_with(repo().join("deploy/k8s")) {
            continue;
        }
        for document in documents {
            let kind = document["kind"].as_str().unwrap_or_default().to_owned();
            assert!(
                document["apiVersion"].is_string() && !kind.is_empty(),
                "{}: a Kubernetes object needs apiVersion and kind",
                path.display()
            );
            if kind != "Kustomization" {
                assert!(
                    document["metadata"]["name"].is_string(),
                    "{}: {kind} without metadata.name",
                    path.display()
                );
            }
            if kind == "Deployment" {
                let containers = document["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap();
                for container in containers {
                    let name = &container["name"];
                    assert_eq!(
                        container["readinessProbe"]["httpGet"]["path"], "/readyz",
                        "{name}"
                    );
                    assert_eq!(
                        container["livenessProbe"]["httpGet"]["path"], "/healthz",
                        "{name}"
                    );
                    assert!(
                        container["resources"]["requests"]["cpu"].is_string(),
                        "{name}"
                    );
                    assert!(
                        container["resources"]["limits"]["memory"].is_string(),
                        "{name}"
                    );
                }
                assert_eq!(
                    document["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
                    true
                );
                // Prometheus scrapes the metrics listener, never the public port.
                let name = &document["metadata"]["name"];
                let template = &document["spec"]["template"];
                let scraped = template["metadata"]["annotations"]["prometheus.io/port"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no prometheus.io/port"));
                let scraped_port: u64 = scraped.parse().unwrap();
                let container = &containers[0];
                let metrics_listen = container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "KASSA_METRICS_LISTEN")
                    .and_then(|e| e["value"].as_str())
                    .unwrap_or_else(|| panic!("{name}: KASSA_METRICS_LISTEN not set"));
                assert_eq!(
                    metrics_listen.rsplit(':').next(),
                    Some(scraped),
                    "{name}: Prometheus scrapes the port of KASSA_METRICS_LISTEN"
                );
                let ports = container["ports"].as_array().unwrap();
                assert!(
                    ports
                        .iter()
                        .any(|p| p["name"] == "metrics" && p["containerPort"] == scraped_port),
                    "{name}: a container port `metrics` = {scraped}: {ports:?}"
                );
                assert!(
                    ports
                        .iter()
                        .all(|p| p["name"] == "metrics" || p["containerPort"] != scraped_port),
                    "{name}: the metrics port is no other port"
                );
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
        "ScaledObject",
    ] {
        assert!(kinds.contains(kind), "deploy/k8s has no {kind}: {kinds:?}");
    }
    // Kustomize must list every manifest of the folder.
    let kustomization = &yaml_documents(&repo().join("deploy/k8s/kustomization.yaml"))[0];
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for path in &yamls {
        if let Ok(relative) = path.strip_prefix(repo().join("deploy/k8s")) {
            let relative = relative.to_str().unwrap();
            if relative != "kustomization.yaml" {
                assert!(
                    listed.contains(relative),
                    "kustomization.yaml lacks {relative}"
                );
            }
        }
    }
    for path in deploy_files("json") {
        let _: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    }
}

#[test]
fn rabbitmq_definitions_are_what_kassa_declares() {
    let file = json_file("deploy/rabbitmq/definitions.json");
    let declared = Topology::default().definitions();

    let exchanges: BTreeMap<String, Value> = file["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    assert_eq!(
        exchanges.keys().cloned().collect::<BTreeSet<_>>(),
        declared.exchanges.iter().map(|e| e.name.clone()).collect(),
        "exchanges"
    );
    for exchange in &declared.exchanges {
        let defined = &exchanges[&exchange.name];
        let kind = match exchange.kind {
            ExchangeType::Topic => "topic",
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
        };
        assert_eq!(defined["type"], kind, "{}", exchange.name);
        assert_eq!(exchange.kind.as_str(), kind);
        assert_eq!(defined["vhost"], "/", "{}", exchange.name);
        assert_eq!(defined["durable"], true, "{}", exchange.name);
        assert_eq!(defined["auto_delete"], false, "{}", exchange.name);
        assert_eq!(defined["internal"], false, "{}", exchange.name);
        assert_eq!(
            defined["arguments"],
            serde_json::json!({}),
            "{}",
            exchange.name
        );
    }

    let queues: BTreeMap<String, Value> = file["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["name"].as_str().unwrap().to_owned(), q.clone()))
        .collect();
    assert_eq!(
        queues.keys().cloned().collect::<BTreeSet<_>>(),
        declared.queues.iter().map(|q| q.name.clone()).collect(),
        "queues"
    );
    for queue in &declared.queues {
        let defined = &queues[&queue.name];
        assert_eq!(defined["vhost"], "/", "{}", queue.name);
        assert_eq!(defined["durable"], true, "{}", queue.name);
        assert_eq!(defined["auto_delete"], false, "{}", queue.name);
        let arguments: serde_json::Map<String, Value> = queue
            .arguments
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    QueueArgument::String(s) => Value::from(s.as_str()),
                    QueueArgument::Integer(i) => Value::from(*i),
                };
                ((*key).to_owned(), value)
            })
            .collect();
        assert_eq!(
            defined["arguments"],
            Value::Object(arguments),
            "arguments of {}",
            queue.name
        );
    }

    let bindings: BTreeSet<(String, String, String)> = file["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["vhost"], "/");
            assert_eq!(b["destination_type"], "queue");
            assert_eq!(b["arguments"], serde_json::json!({}));
            (
                b["source"].as_str().unwrap().to_owned(),
                b["destination"].as_str().unwrap().to_owned(),
                b["routing_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = declared
        .bindings
        .iter()
        .map(|b| (b.exchange.clone(), b.queue.clone(), b.routing_key.clone()))
        .collect();
    assert_eq!(bindings, expected, "bindings");
    assert_eq!(file["bindings"].as_array().unwrap().len(), expected.len());

    // KEDA scales on queues that exist.
    let keda = yaml_documents(&repo().join("deploy/k8s/keda.yaml"));
    let scaled = keda.iter().find(|d| d["kind"] == "ScaledObject").unwrap();
    for trigger in scaled["spec"]["triggers"].as_array().unwrap() {
        let queue = trigger["metadata"]["queueName"].as_str().unwrap();
        assert!(
            queues.contains_key(queue),
            "KEDA scales on unknown queue {queue}"
        );
    }
}

/// Every `kassa_…` name in a PromQL expression of the dashboard and the alert rules.
fn metric_names_in_deploy() -> BTreeMap<String, String> {
    fn exprs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => exprs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut found = BTreeMap::new();
    for (file, document) in [
        (
            "deploy/grafana/kassa.json",
            json_file("deploy/grafana/kassa.json"),
        ),
        (
            "deploy/prometheus/alerts.yaml",
            yaml_documents(&repo().join("deploy/prometheus/alerts.yaml")).remove(0),
        ),
    ] {
        let mut expressions = Vec::new();
        exprs(&document, &mut expressions);
        assert!(
            expressions.len() >= 8,
            "{file}: only {} expressions",
            expressions.len()
        );
        for expr in expressions {
            let mut names = 0;
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("kassa_") {
                    found.insert(token.to_owned(), file.to_owned());
                    names += 1;
                }
            }
            assert!(
                names > 0,
                "{file}: expression names no Kassa metric: {expr}"
            );
        }
    }
    found
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_metrics_that_kassa_exports() {
    let used = metric_names_in_deploy();
    for required in [
        "kassa_dead_letter_messages",
        "kassa_message_age_seconds_bucket",
        "kassa_stripe_card_errors_total",
        "kassa_publish_confirm_seconds_bucket",
        "kassa_queue_messages",
    ] {
        assert!(used.contains_key(required), "deploy/ never uses {required}");
    }

    // A whole flow through ingress and worker, then /metrics as Prometheus scrapes it.
    let app = TestApp::spawn().await;
    let session = app.create_setup_session("deploy@example.com").await;
    app.complete(&session, "pm_card_visa");
    let event = app.stripe_events("checkout.session.completed").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.processed(&event).await;
    let url = app.stack.metrics_url().unwrap();
    let public = app
        .http
        .get(format!("{}/metrics", app.stack.base_url().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "the public port does not show the metrics"
    );
    let http = app.http.clone();
    let exported: BTreeSet<String> = eventually(
        Duration::from_secs(30),
        "the queue sampler's gauges and a delivery's age on /metrics",
        || async {
            let text = http.get(&url).send().await.ok()?.text().await.ok()?;
            let names: BTreeSet<String> = text
                .lines()
                .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                .filter_map(|line| line.split(['{', ' ']).next())
                .map(str::to_owned)
                .collect();
            let sampled = text.contains("kassa_dead_letter_messages ")
                && text.contains(&format!(
                    "kassa_queue_messages{{queue=\"{}\"}}",
                    app.topology.fulfillment_queue()
                ))
                && text.contains("kassa_message_age_seconds_count{queue=\"events\"} ");
            sampled.then_some(names)
        },
    )
    .await;
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ names metrics /metrics does not show: {missing:?}\nexported: {exported:?}"
    );
    app.cleanup().await;
}

/// Every `counter!`/`gauge!`/`histogram!` in the code is in kassa::telemetry::METRICS
/// (so /metrics describes it), and every entry there is emitted somewhere. A crate's `tests/`
/// may record metrics of its own (the recorder's tests do); they are not Kassa's.
#[test]
fn the_metrics_registry_lists_exactly_what_the_code_emits() {
    let mut sources = Vec::new();
    for dir in ["src", "crates"] {
        files_under(&repo().join(dir), &mut sources);
    }
    sources.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    let telemetry = repo().join("src/telemetry.rs");
    let mut emitted = BTreeSet::new();
    let mut literals = String::new();
    for path in sources.iter().filter(|p| **p != telemetry) {
        let text = std::fs::read_to_string(path).unwrap();
        let test_file = path
            .strip_prefix(repo())
            .unwrap_or(path)
            .components()
            .any(|c| c.as_os_str() == "tests");
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            if test_file {
                break;
            }
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(rest) = rest.strip_prefix('"') {
                    emitted.insert(rest[..rest.find('"').unwrap()].to_owned());
                }
            }
        }
        literals.push_str(&text);
    }
    let registered: BTreeSet<String> = kassa::telemetry::METRICS
        .iter()
        .map(|m| m.name.to_owned())
        .collect();
    let unregistered: Vec<&String> = emitted.difference(&registered).collect();
    assert!(
        unregistered.is_empty(),
        "metrics emitted but missing from kassa::telemetry::METRICS: {unregistered:?}"
    );
    for name in &registered {
        assert!(
            literals.contains(&format!("\"{name}\"")),
            "{name} is registered but no code emits it"
        );
    }
}

/// `KASSA_…` names a command reads, from its `--help` (`[env: KASSA_…]`).
fn env_vars_of(command: &str) -> BTreeSet<String> {
    let output = kassa(&[command, "--help"]).as_std_mut().output().unwrap();
    assert!(output.status.success(), "kassa {command} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut names = BTreeSet::new();
    for (at, _) in help.match_indices("[env: ") {
        let rest = &help[at + 6..];
        let end = rest.find(['=', ']']).unwrap();
        names.insert(rest[..end].to_owned());
    }
    names.insert("RUST_LOG".to_owned());
    names
}

fn env_names(env: &Value) -> Vec<String> {
    match env {
        Value::Object(map) => map.keys().cloned().collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn manifests_set_only_variables_the_binary_reads() {
    let ingress = env_vars_of("ingress");
    let worker = env_vars_of("worker");
    let migrate = env_vars_of("migrate");
    let sim = env_vars_of("stripe-sim");
    assert!(
        ingress.contains("KASSA_STRIPE_WEBHOOK_SECRETS"),
        "{ingress:?}"
    );
    assert!(worker.contains("KASSA_WORKER_CONCURRENCY"), "{worker:?}");

    let compose = yaml_documents(&repo().join("deploy/compose.yaml")).remove(0);
    for (service, definition) in compose["services"].as_object().unwrap() {
        let command = definition["command"][0].as_str().unwrap_or_default();
        let accepted = match command {
            "ingress" => &ingress,
            "worker" => &worker,
            "migrate" => &migrate,
            "stripe-sim" => &sim,
            _ => continue,
        };
        for name in env_names(&definition["environment"]) {
            assert!(
                accepted.contains(&name),
                "compose service {service} sets {name}, which `kassa {command}` does not read"
            );
        }
    }
    for role in ["ingress", "worker"] {
        assert!(
            compose["services"][format!("{role}-1")]["command"][0] == role
                && compose["services"][format!("{role}-2")]["command"][0] == role,
            "compose runs two {role} containers"
        );
    }

    let all: BTreeSet<String> = ingress.union(&worker).cloned().collect();
    let all: BTreeSet<String> = all.union(&env_vars_of("serve")).cloned().collect();
    let mut files = Vec::new();
    files_under(&repo().join("deploy/k8s"), &mut files);
    for path in files {
        for document in yaml_documents(&path) {
            let kind = document["kind"].as_str().unwrap_or_default();
            if kind == "ConfigMap" || kind == "Secret" {
                let data = if kind == "Secret" {
                    "stringData"
                } else {
                    "data"
                };
                for name in env_names(&document[data]) {
                    assert!(
                        all.contains(&name),
                        "{}: {name} is read by no command",
                        path.display()
                    );
                }
            }
            if kind == "Deployment" {
                for container in document["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap()
                {
                    let command = container["args"][0].as_str().unwrap();
                    let accepted = if command == "ingress" {
                        &ingress
                    } else {
                        &worker
                    };
                    for name in env_names(&container["env"]) {
                        assert!(
                            accepted.contains(&name),
                            "{}: `kassa {command}` does not read {name}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}
