//! Writes the seed corpora under fuzz/seeds/<target>/ from the project's own
//! encoders and fixtures (the reviews-v1 node of tests/tests/stats.rs, CEL
//! expressions and plugin configurations from examples/ and docs/), so
//! every seed is a valid input the fuzzer mutates from.
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (scripts/fuzz
//! does when the seeds are missing).

use meshwasm_wire::istio::{encode_peer_metadata, encode_tcp_frame, wasm_era_peer_struct};
use meshwasm_wire::pairs;
use meshwasm_wire::protobuf::{self, Metadata, Node, Struct};
use serde_json::json;
use std::path::Path;

fn reviews_metadata() -> Struct {
    let serde_json::Value::Object(m) = json!({
        "NAME": "reviews-v1-5f8d9c-abcde",
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "reviews-v1",
        "CLUSTER_ID": "Kubernetes",
        "MESH_ID": "cluster.local",
        "ISTIO_VERSION": "1.16.0",
        "APP_CONTAINERS": ["reviews", "sidecar"],
        "INSTANCE_IPS": "10.0.0.7",
        "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1",
        "PLATFORM_METADATA": {"gcp_project": "p"},
        "LABELS": {
            "app": "reviews",
            "version": "v1",
            "service.istio.io/canonical-name": "reviews",
            "service.istio.io/canonical-revision": "v1"
        },
        "ratio": 0.5,
        "enabled": true,
        "nothing": null
    }) else {
        unreachable!()
    };
    protobuf::struct_from_json(&m)
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let dir = root.as_path();
    let meta = reviews_metadata();
    let era = wasm_era_peer_struct(&meta);
    let id = "sidecar~10.0.0.7~reviews-v1-5f8d9c-abcde.default~default.svc.cluster.local";

    write(dir, "peer_header", "current", encode_peer_metadata(&meta).as_bytes());
    write(dir, "peer_header", "wasm_era", encode_peer_metadata(&era).as_bytes());
    write(dir, "peer_header", "empty", encode_peer_metadata(&Struct::default()).as_bytes());

    write(dir, "tcp_frame", "current", &encode_tcp_frame(id, &meta));
    write(dir, "tcp_frame", "wasm_era", &encode_tcp_frame(id, &era));
    let mut with_data = encode_tcp_frame("", &Struct::default());
    with_data.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    write(dir, "tcp_frame", "empty_then_data", &with_data);

    write(dir, "struct_decode", "node_metadata", &protobuf::encode(&meta));
    let mut md = Metadata::default();
    let serde_json::Value::Object(w) = json!({"workload": "ratings-v1;default;ratings;version-1;server-cluster"})
    else {
        unreachable!()
    };
    md.filter_metadata.insert("istio".into(), protobuf::struct_from_json(&w));
    write(dir, "struct_decode", "endpoint_metadata", &protobuf::encode(&md));

    let node = Node {
        id: id.into(),
        cluster: "reviews.default".into(),
        metadata: Some(meta.clone()),
        locality: Some(protobuf::Locality {
            region: "us-east1".into(),
            zone: "us-east1-b".into(),
            sub_zone: String::new(),
        }),
        user_agent_name: "envoy".into(),
        user_agent_version: "1.40.0".into(),
    };
    write(dir, "node_decode", "reviews", &protobuf::encode(&node));

    write(
        dir,
        "pairs_decode",
        "request_headers",
        &pairs::encode(&[(":method", "GET"), (":path", "/ratings/1"), ("x-envoy-peer-metadata-id", id)]),
    );
    write(dir, "pairs_decode", "empty_map", &pairs::encode::<&str, &str>(&[]));

    let cel = [
        "request.method",
        "request.url_path == '/api/catalog' && request.method == 'GET'",
        "response.code >= 200 && response.code <= 299",
        "(request.method.startsWith('GET') ? 1 : 0)",
        "upstream_peer.istio_version",
        "node.metadata['MESH_ID']",
        "has(request.headers['x-user']) ? request.headers['x-user'] : 'none'",
        "request.headers['x-user'].matches('^[a-z]+$')",
        "[1, 2, 3].map(x, x * 2).exists(y, y > 4)",
        "request.path.split('/').size()",
        "string(response.code) + '-' + request.host.lowerAscii()",
        "{'a': 1}.a == 1 ? timestamp('2020-01-01T00:00:00Z') : duration('1s')",
    ];
    for (i, e) in cel.iter().enumerate() {
        write(dir, "cel_compile", &format!("expr{i:02}"), e.as_bytes());
    }

    let configs = [
        json!({}),
        json!({"max_peer_cache_size": 20}),
        json!({"metrics": [{"dimensions": {"upstream_proxy_version": "upstream_peer.istio_version", "source_mesh_id": "node.metadata['MESH_ID']"}}]}),
        json!({"metrics": [{"name": "requests_total", "tags_to_remove": ["response_flags"]}], "reporter": "SERVER_GATEWAY", "tcp_reporting_duration": "10s"}),
        json!({"attributes": [{"output_attribute": "istio_operationId", "match": [{"value": "ListCatalog", "condition": "request.url_path == '/api/catalog' && request.method == 'GET'"}]}]}),
        json!({"trust": "mtls_only", "skip_external_clusters": true, "protocol": "istio-peer-exchange"}),
    ];
    for (i, c) in configs.iter().enumerate() {
        write(dir, "config_parse", &format!("config{i}.json"), c.to_string().as_bytes());
    }
    println!("seeds written under {}", dir.display());
}
