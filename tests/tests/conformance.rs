//! The conformance suite: every scenario in tests/conformance/ runs on
//! host-sim and in a real Envoy, and any difference between the two results
//! (beyond the documented host-specific headers) fails the test.

use host_sim::{diff, envoy, sim, Scenario};
use std::path::PathBuf;

fn scenarios() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn host_sim_matches_real_envoy_on_every_conformance_scenario() {
    if envoy::find_envoy(None).is_none() && std::env::var_os("CI").is_none() {
        eprintln!("skipping: no envoy binary (run scripts/setup.sh); CI=true makes this a failure");
        return;
    }
    let files = scenarios();
    assert!(!files.is_empty(), "no conformance scenarios found");
    let mut failures = Vec::new();
    for path in &files {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        for p in &scenario.plugins {
            assert!(
                p.wasm.exists(),
                "{} is missing: run `cargo build --target wasm32-wasip1 --release`",
                p.wasm.display()
            );
        }
        let on_sim = sim::run(&scenario).unwrap_or_else(|e| panic!("{}: host-sim: {e:#}", path.display()));
        let on_envoy = envoy::run_scenario(&scenario).unwrap_or_else(|e| panic!("{}: envoy: {e:#}", path.display()));
        assert!(
            on_sim.all_expectations_passed(),
            "{}: host-sim failed its expectations: {:#?}",
            path.display(),
            on_sim.expectations
        );
        assert!(
            on_envoy.all_expectations_passed(),
            "{}: envoy failed its expectations: {:#?}",
            path.display(),
            on_envoy.expectations
        );
        let ignore = diff::Ignore { headers: envoy::HOST_SPECIFIC_HEADERS };
        for d in diff::diff(&on_sim, &on_envoy, &ignore) {
            failures.push(format!("{}: {d}", path.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(failures.is_empty(), "host-sim differs from Envoy:\n{}", failures.join("\n"));
}
