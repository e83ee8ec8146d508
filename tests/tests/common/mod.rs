//! Helpers the integration tests share: where the compiled plugins are, and
//! running a scenario written with `serde_json::json!` on host-sim.

use host_sim::result::RunResult;
use serde_json::Value;
use std::path::Path;

/// Absolute path of `target/wasm32-wasip1/release/<name>.wasm`; fails the
/// test with the build command when it is missing (tests never build
/// plugins).
pub fn plugin_wasm(name: &str) -> String {
    let path = format!("{}/../target/wasm32-wasip1/release/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: run `cargo build --target wasm32-wasip1 --release` first (the tests do not build plugins)"
    );
    path
}

/// Parses the scenario (panicking with the loader's message if it is bad)
/// and runs it on host-sim.
pub fn run(scenario: Value) -> RunResult {
    let s = host_sim::Scenario::from_json(&scenario.to_string()).unwrap_or_else(|e| panic!("bad scenario: {e}"));
    host_sim::run(&s).expect("scenario runs")
}
