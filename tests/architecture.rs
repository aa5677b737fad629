//! The crate map of docs/ARCHITECTURE.md, checked: Kassa's crates depend on each other only
//! downwards (binary → ingress / api / worker → core → stripe, store, broker → wire), kassa-ingress
//! only on kassa-stripe, kassa-broker and kassa-wire (it verifies and publishes: no database, no
//! business logic), kassa-core only on kassa-stripe, kassa-store, kassa-broker and kassa-wire,
//! kassa-stripe only on kassa-wire, and the simulator and kassa-wire on nothing of Kassa's. Read from `cargo metadata`, so a dependency added to any Cargo.toml is seen.
//! Dev-dependencies (tests driving the simulator) do not count.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Each Kassa crate's layer: a crate may depend only on crates of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("kassa-wire", 0),
    ("kassa-stripe-sim", 1),
    ("kassa-stripe", 1),
    ("kassa-store", 1),
    ("kassa-broker", 1),
    ("kassa-core", 2),
    ("kassa-ingress", 2),
    ("kassa-api", 3),
    ("kassa-worker", 3),
    ("kassa", 4),
    // Benchmarks start whole processes through the binary's library (`kassa::stack`).
    ("kassa-bench", 5),
];

/// Crates whose Kassa dependencies are fixed, not just lower.
const ONLY: &[(&str, &[&str])] = &[
    (
        "kassa-ingress",
        &["kassa-wire", "kassa-stripe", "kassa-broker"],
    ),
    (
        "kassa-core",
        &["kassa-wire", "kassa-stripe", "kassa-store", "kassa-broker"],
    ),
    ("kassa-stripe-sim", &[]),
    ("kassa-stripe", &["kassa-wire"]),
    ("kassa-store", &[]),
    ("kassa-broker", &[]),
    ("kassa-wire", &[]),
];

/// Every workspace package and the Kassa crates it depends on (normal and build dependencies).
fn kassa_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|package| {
            let dependencies = package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|name| names.contains(name))
                .map(str::to_owned)
                .collect();
            (
                package["name"].as_str().unwrap_or_default().to_owned(),
                dependencies,
            )
        })
        .collect()
}

#[test]
fn crates_depend_only_downwards_and_ingress_and_core_only_on_what_the_map_allows() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let crates = kassa_dependencies();
    assert!(
        crates.contains_key("kassa-core") && crates.contains_key("kassa-ingress"),
        "the workspace has kassa-core and kassa-ingress: {:?}",
        crates.keys()
    );
    let mut wrong = Vec::new();
    for (name, dependencies) in &crates {
        let Some(layer) = layers.get(name.as_str()) else {
            wrong.push(format!(
                "{name} is not on the crate map: give it a layer in tests/architecture.rs and docs/ARCHITECTURE.md"
            ));
            continue;
        };
        for dependency in dependencies {
            match layers.get(dependency.as_str()) {
                Some(below) if below < layer => {}
                _ => wrong.push(format!(
                    "{name} depends on {dependency}, which is not below it"
                )),
            }
        }
    }
    for (name, allowed) in ONLY {
        let Some(dependencies) = crates.get(*name) else {
            continue;
        };
        for dependency in dependencies {
            if !allowed.contains(&dependency.as_str()) {
                wrong.push(format!(
                    "{name} may depend only on {allowed:?} of Kassa's crates, not on {dependency}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the crate map is broken:\n{}",
        wrong.join("\n")
    );
}
