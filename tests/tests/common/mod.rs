//! Helpers the integration tests share: where the compiled plugins are,
//! running a scenario written with `serde_json::json!` on host-sim, and the
//! fixtures several test files use (each test binary uses some of them).

use host_sim::result::RunResult;
use serde_json::{json, Value};
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

/// Node metadata of the reviews-v1 pod, as Istio's injector writes it.
#[allow(dead_code)]
pub fn reviews_metadata() -> Value {
    json!({
        "NAME": "reviews-v1-5f8d9c-abcde",
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "reviews-v1",
        "CLUSTER_ID": "Kubernetes",
        "MESH_ID": "cluster.local",
        "ISTIO_VERSION": "1.16.0",
        "LABELS": {
            "app": "reviews",
            "version": "v1",
            "service.istio.io/canonical-name": "reviews",
            "service.istio.io/canonical-revision": "v1"
        }
    })
}

/// The reviews-v1 sidecar's node: its id, cluster and [`reviews_metadata`].
#[allow(dead_code)]
pub fn reviews_node() -> Value {
    json!({
        "id": "sidecar~10.0.0.7~reviews-v1-5f8d9c-abcde.default~default.svc.cluster.local",
        "cluster": "reviews.default",
        "metadata": reviews_metadata()
    })
}

/// Istio's `x-envoy-peer-metadata` value (base64 of the Struct) for a
/// workload's node metadata, as given.
#[allow(dead_code)]
pub fn peer_header(metadata: Value) -> String {
    let Value::Object(m) = metadata else { panic!("peer metadata must be a JSON object") };
    meshwasm_wire::istio::encode_peer_metadata(&meshwasm_wire::protobuf::struct_from_json(&m))
}
