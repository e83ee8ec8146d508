//! stats and the peer: `extra_stat_tags` (Istio's `extraStatTags`) for a
//! custom dimension, the client side's fallback to the upstream endpoint's
//! `istio.workload` metadata (Istio's TestStatsEndpointLabels), and the
//! exchanged peer as `upstream_peer.*` / `downstream_peer.*` in CEL.
//!
//! ```sh
//! cargo build --target wasm32-wasip1 --release -p stats
//! cargo test -p meshwasm-tests --test stats_peer
//! ```

mod common;

use common::{plugin_wasm, run};
use serde_json::{json, Value};

fn get_stream() -> Value {
    json!({"name": "get", "request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "ratings:9080"]]}})
}

/// A custom dimension on `requests_total`: with `extra_stat_tags` naming it,
/// it is a label after Istio's; without, it stays in the family name and the
/// result warns.
#[test]
fn extra_stat_tags_extract_a_custom_dimension() {
    let scenario = |extra: Value| {
        json!({
            "plugins": [{"wasm": plugin_wasm("stats"), "configuration": {
                "metrics": [{"name": "requests_total", "dimensions": {"request_method": "request.method"}}]
            }}],
            "direction": "inbound",
            "extra_stat_tags": extra,
            "streams": [get_stream()],
        })
    };
    let r = run(scenario(json!(["request_method"])));
    let line = r
        .prometheus
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_else(|| panic!("{}", r.prometheus));
    assert!(line.ends_with(",request_method=\"GET\"} 1"), "{line}");
    assert!(line.starts_with("istio_requests_total{reporter=\"destination\","), "{line}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    let r = run(scenario(json!([])));
    assert!(r.prometheus.contains("# TYPE request_method___GET___istio_requests_total counter"), "{}", r.prometheus);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("label `request_method`"), "{:?}", r.warnings);
}

/// The client sidecar of a scenario: Istio's e2e client node
/// (productpage-v1), outbound, the stats plugin with `configuration`.
fn client_sidecar(configuration: Value) -> Value {
    json!({
        "plugins": [{"wasm": plugin_wasm("stats"), "configuration": configuration}],
        "node": {"id": "sidecar~10.52.0.34~productpage-v1-84975bc778-pxz2w.default~default.svc.cluster.local",
                 "metadata": {"NAME": "productpage-v1-84975bc778-pxz2w", "NAMESPACE": "default",
                              "WORKLOAD_NAME": "productpage-v1", "CLUSTER_ID": "test-cluster", "MESH_ID": "mesh",
                              "ISTIO_VERSION": "1.5-dev",
                              "LABELS": {"app": "productpage", "version": "v1",
                                         "service.istio.io/canonical-name": "productpage-v1",
                                         "service.istio.io/canonical-revision": "version-1"}}},
        "direction": "outbound",
        "streams": [get_stream(), get_stream()],
    })
}

/// `label="value"` pairs of the one `istio_requests_total` series.
fn requests_total_labels(prometheus: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = prometheus.lines().filter(|l| l.starts_with("istio_requests_total{")).collect();
    assert_eq!(lines.len(), 1, "{prometheus}");
    let inner = &lines[0]["istio_requests_total{".len()..lines[0].rfind('}').unwrap()];
    inner
        .split("\",")
        .map(|kv| {
            let (k, v) = kv.split_once("=\"").unwrap();
            (k.to_string(), v.trim_end_matches('"').to_string())
        })
        .collect()
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name}"))
}

/// Istio's TestStatsEndpointLabels: stats `{}` on a client sidecar, no
/// exchange, the endpoint's `istio.workload` fills the destination's
/// workload labels (app and version are not in the encoding).
#[test]
fn endpoint_metadata_fills_the_destination_without_a_peer() {
    let mut scenario = client_sidecar(json!({}));
    scenario["upstream_endpoint_metadata"] =
        json!({"istio": {"workload": "ratings-v1;default;ratings;version-1;server-cluster"}});
    let r = run(scenario.clone());
    let labels = requests_total_labels(&r.prometheus);
    for (name, want) in [
        ("reporter", "source"),
        ("destination_workload", "ratings-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_canonical_service", "ratings"),
        ("destination_canonical_revision", "version-1"),
        ("destination_cluster", "server-cluster"),
        ("destination_app", "unknown"),
        ("destination_version", "unknown"),
        ("destination_service_namespace", "default"),
        ("source_workload", "productpage-v1"),
        ("source_cluster", "test-cluster"),
    ] {
        assert_eq!(label(&labels, name), want, "{name}");
    }
    assert_eq!(labels.len(), 25);
    assert!(r.prometheus.contains("\"} 2\n"), "both requests in one series: {}", r.prometheus);

    // Without the metadata, or with fewer than five fields (Istio ignores
    // it), the destination is unknown as before.
    for metadata in [json!({}), json!({"istio": {"workload": "ratings-v1;default;ratings;version-1"}})] {
        scenario["upstream_endpoint_metadata"] = metadata.clone();
        let labels = requests_total_labels(&run(scenario.clone()).prometheus);
        assert_eq!(label(&labels, "destination_workload"), "unknown", "{metadata}");
        assert_eq!(label(&labels, "destination_canonical_revision"), "latest", "{metadata}");
        assert_eq!(label(&labels, "destination_cluster"), "unknown", "{metadata}");
    }

    // The server side never uses it: its peer is downstream.
    scenario["direction"] = json!("inbound");
    scenario["upstream_endpoint_metadata"] =
        json!({"istio": {"workload": "ratings-v1;default;ratings;version-1;server-cluster"}});
    let labels = requests_total_labels(&run(scenario).prometheus);
    assert_eq!(label(&labels, "reporter"), "destination");
    assert_eq!(label(&labels, "source_workload"), "unknown");
    assert_eq!(label(&labels, "destination_workload"), "productpage-v1");
}

/// An exchanged upstream peer wins over the endpoint metadata (Istio reads
/// the endpoint only without a peer).
#[test]
fn an_exchanged_peer_wins_over_endpoint_metadata() {
    use meshwasm_wire::istio::encode_peer_metadata;
    use meshwasm_wire::protobuf::struct_from_json;
    let Value::Object(peer) = json!({"WORKLOAD_NAME": "reviews-v2", "NAMESPACE": "bookinfo", "CLUSTER_ID": "c2",
                                     "LABELS": {"app": "reviews", "version": "v2"}})
    else {
        unreachable!()
    };
    let header = encode_peer_metadata(&struct_from_json(&peer));
    let mut scenario = client_sidecar(json!({}));
    scenario["upstream_endpoint_metadata"] =
        json!({"istio": {"workload": "ratings-v1;default;ratings;version-1;server-cluster"}});
    for s in scenario["streams"].as_array_mut().unwrap() {
        s["upstream"] = json!({"status": 200, "headers": [["x-envoy-peer-metadata", header]]});
    }
    let labels = requests_total_labels(&run(scenario).prometheus);
    assert_eq!(label(&labels, "destination_workload"), "reviews-v2");
    assert_eq!(label(&labels, "destination_workload_namespace"), "bookinfo");
    assert_eq!(label(&labels, "destination_app"), "reviews");
    assert_eq!(label(&labels, "destination_cluster"), "c2");
    assert_eq!(label(&labels, "destination_canonical_revision"), "latest");
}

/// A Wasm-era peer (what Istio's Wasm plugin and our metadata_exchange send).
fn ratings_peer() -> String {
    common::peer_header(json!({
        "NAME": "ratings-v1-abc", "NAMESPACE": "default", "WORKLOAD_NAME": "ratings-v1", "ISTIO_VERSION": "1.16.0",
        "MESH_ID": "mesh", "CLUSTER_ID": "server-cluster",
        "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/ratings-v1",
        "LABELS": {"app": "ratings", "version": "v1", "service.istio.io/canonical-name": "ratings"}
    }))
}

/// `upstream_peer.*` and `downstream_peer.*` in CEL dimensions, in both of
/// Istio's vocabularies (the seed configuration's
/// `upstream_peer.istio_version` included); a missing peer or key is a
/// missing value (`unknown`).
#[test]
fn peer_attributes_in_cel_dimensions() {
    let dims = json!({
        "peer_version": "upstream_peer.istio_version",
        "peer_app": "upstream_peer.labels['app']",
        "peer_workload": "upstream_peer.workload",
        "peer_type": "upstream_peer.type",
        "peer_service": "upstream_peer.service",
        "peer_identity": "upstream_peer.identity",
    });
    let extra = json!(["peer_version", "peer_app", "peer_workload", "peer_type", "peer_service", "peer_identity"]);
    let mut scenario = client_sidecar(json!({"metrics": [{"name": "requests_total", "dimensions": dims}]}));
    scenario["extra_stat_tags"] = extra.clone();
    scenario["streams"] = json!([{
        "request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "ratings:9080"]]},
        "upstream": {"status": 200, "headers": [["x-envoy-peer-metadata", ratings_peer()]]},
    }]);
    let r = run(scenario.clone());
    let labels = requests_total_labels(&r.prometheus);
    assert_eq!(label(&labels, "peer_version"), "1.16.0");
    assert_eq!(label(&labels, "peer_app"), "ratings");
    assert_eq!(label(&labels, "peer_workload"), "ratings-v1");
    assert_eq!(label(&labels, "peer_type"), "deployment");
    assert_eq!(label(&labels, "peer_service"), "ratings");
    assert_eq!(label(&labels, "peer_identity"), "unknown", "not sent by a Wasm-era peer");
    assert_eq!(label(&labels, "destination_workload"), "ratings-v1");

    // No peer: every peer dimension is unknown.
    scenario["streams"][0]["upstream"] = json!({"status": 200});
    let labels = requests_total_labels(&run(scenario).prometheus);
    for d in extra.as_array().unwrap() {
        assert_eq!(label(&labels, d.as_str().unwrap()), "unknown", "{d}");
    }

    // The server side: downstream_peer from the request's header.
    let mut server = client_sidecar(json!({"metrics": [{"name": "requests_total", "dimensions": {
        "src_workload_name": "downstream_peer.workload_name",
        "src_mesh": "downstream_peer.mesh_id",
        "src_up": "upstream_peer.workload",
    }}]}));
    server["direction"] = json!("inbound");
    server["extra_stat_tags"] = json!(["src_workload_name", "src_mesh", "src_up"]);
    server["streams"] = json!([{
        "request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "ratings:9080"],
                                ["x-envoy-peer-metadata", ratings_peer()]]},
    }]);
    let labels = requests_total_labels(&run(server).prometheus);
    assert_eq!(label(&labels, "src_workload_name"), "ratings-v1");
    assert_eq!(label(&labels, "src_mesh"), "mesh");
    assert_eq!(label(&labels, "src_up"), "unknown");
    assert_eq!(label(&labels, "source_workload"), "ratings-v1");
}

/// Each distinct peer encoding is decoded once per VM and remembered
/// (`PeerMemo`): requests from two peers taking turns, one with a malformed
/// header and one without, each get their own peer's labels and CEL
/// attributes, never a remembered neighbour's.
#[test]
fn remembered_peers_never_mix() {
    let reviews = common::peer_header(json!({
        "NAME": "reviews-v2-xyz", "NAMESPACE": "bookinfo", "WORKLOAD_NAME": "reviews-v2", "ISTIO_VERSION": "1.17.0",
        "LABELS": {"app": "reviews", "version": "v2"}
    }));
    let mut scenario = client_sidecar(json!({"metrics": [{"name": "requests_total", "dimensions": {
        "peer_version": "upstream_peer.istio_version"
    }}]}));
    scenario["extra_stat_tags"] = json!(["peer_version"]);
    let stream = |peer: Option<&str>| {
        let headers = peer.map_or(json!([]), |p| json!([["x-envoy-peer-metadata", p]]));
        json!({"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "ratings:9080"]]},
               "upstream": {"status": 200, "headers": headers}})
    };
    let (ratings, reviews) = (ratings_peer(), reviews.as_str());
    scenario["streams"] = json!([
        stream(Some(&ratings)),
        stream(Some(reviews)),
        stream(Some("!not base64!")),
        stream(Some(&ratings)),
        stream(None),
        stream(Some(reviews)),
    ]);
    let r = run(scenario);
    let mut series: Vec<(String, String, String)> = r
        .prometheus
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .map(|line| {
            let value = |name: &str| {
                let at = line.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("{line}")) + name.len() + 2;
                line[at..at + line[at..].find('"').unwrap()].to_string()
            };
            (value("destination_workload"), value("peer_version"), line.rsplit(' ').next().unwrap().to_string())
        })
        .collect();
    series.sort();
    let want = |w: &str, v: &str, n: &str| (w.to_string(), v.to_string(), n.to_string());
    assert_eq!(
        series,
        vec![want("ratings-v1", "1.16.0", "2"), want("reviews-v2", "1.17.0", "2"), want("unknown", "unknown", "2")],
        "{}",
        r.prometheus
    );
}
