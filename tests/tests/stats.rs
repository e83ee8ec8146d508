//! The `stats` plugin (plugins/stats) under host-sim: Istio's standard
//! metrics with Istio's names, labels (order and values) and reporter
//! semantics, Istio's configuration vocabulary (the seed examples), config
//! rejection naming the field, and the cardinality cap.
//!
//! The plugin must be built first:
//! `cargo build --target wasm32-wasip1 --release` (these tests never build it).
//!
//! Prometheus lines are checked whole: host-sim applies Istio's `stats_tags`
//! (the bootstrap's tag regexes) in Istio's order, as Envoy does, so the
//! label order in a line is the order Istio's `/stats/prometheus` shows.

use host_sim::result::RunResult;
use serde_json::{json, Value};

mod common;
use common::{peer_header, reviews_node, run};

fn stats_wasm() -> String {
    common::plugin_wasm("stats")
}

// -------------------------------------------------- peer metadata header

/// Istio's `x-envoy-peer-metadata` header for the productpage-v1 pod.
fn productpage_peer_header() -> String {
    peer_header(json!({
        "NAME": "productpage-v1-6b746f74dc-9stvs",
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "productpage-v1",
        "CLUSTER_ID": "Kubernetes",
        "ISTIO_VERSION": "1.16.0",
        "LABELS": {"app": "productpage", "version": "v1", "service.istio.io/canonical-name": "productpage", "service.istio.io/canonical-revision": "v1"}
    }))
}

/// Istio's `x-envoy-peer-metadata` header for the ratings-v1 pod.
fn ratings_peer_header() -> String {
    peer_header(json!({
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "ratings-v1",
        "CLUSTER_ID": "Kubernetes",
        "LABELS": {"app": "ratings", "version": "v1", "service.istio.io/canonical-name": "ratings"}
    }))
}

// -------------------------------------------------- expectations

/// `{k="v",...}` in the given order.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

fn assert_line(r: &RunResult, line: &str) {
    if r.prometheus.lines().any(|l| l == line) {
        return;
    }
    // Show the lines of the same family only (histograms are long).
    let family = &line[..line.find('{').unwrap_or(line.len())];
    let same: Vec<&str> = r.prometheus.lines().filter(|l| l.starts_with(family)).take(8).collect();
    panic!("missing line\n  {line}\nlines of {family}:\n  {}\nlogs: {:#?}", same.join("\n  "), r.logs);
}

fn assert_configured(r: &RunResult) {
    assert!(r.plugins.iter().all(|p| p.configured), "plugins: {:?}\nlogs: {:#?}", r.plugins, r.logs);
    for s in &r.streams {
        assert!(s.plugin_failure.is_none(), "plugin failed: {:?}", s.plugin_failure);
    }
}

/// The 25 standard labels of an inbound request from productpage-v1 to
/// reviews-v1 over Istio mTLS.
fn inbound_labels(code: &str) -> Vec<(&'static str, String)> {
    [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_service", "reviews:9080"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v1"),
        ("destination_service_name", "reviews:9080"),
        ("destination_service_namespace", "default"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "http"),
        ("response_code", code),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn mtls() -> Value {
    json!({
        "mtls": true,
        "peer_certificate": {"uri_sans": ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]},
        "local_certificate": {"uri_sans": ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]}
    })
}

fn inbound_get(path: &str, status: u16) -> Value {
    json!({
        "request": {"headers": [
            [":method", "GET"], [":path", path], [":authority", "reviews:9080"],
            ["x-envoy-peer-metadata-id", "sidecar~10.0.0.5~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local"],
            ["x-envoy-peer-metadata", productpage_peer_header()]
        ]},
        "upstream": {"status": status, "body": "{\"reviews\":[]}", "delay_ms": 7}
    })
}

/// Istio's standard tag list plus extra tags (Istio's `extraStatTags`),
/// and the `component`/`tag` regexes of Istio's bootstrap for `istio_build`.
fn stats_tags(extra: &[&str]) -> Value {
    let mut tags: Vec<Value> = host_sim::prometheus::ISTIO_LABELS
        .iter()
        .chain(extra)
        .map(|l| json!({"tag_name": l, "regex": format!(r"({l}=\.=(.*?);\.;)")}))
        .collect();
    tags.push(json!({"tag_name": "component", "regex": r"(component\.(.+?)\.)"}));
    tags.push(json!({"tag_name": "tag", "regex": r"(tag\.(.+?);\.)"}));
    Value::Array(tags)
}

// -------------------------------------------------- tests

/// Two GETs into reviews-v1 (200 and 404) from productpage-v1 over mTLS:
/// `istio_requests_total` with all 25 labels in Istio's order, the three
/// histograms with Envoy's default buckets, and `istio_build`.
#[test]
fn inbound_http_metrics_have_istios_names_and_labels() {
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": {}}],
        "node": reviews_node(),
        "direction": "inbound",
        "connection": mtls(),
        "stats_tags": stats_tags(&[]),
        "streams": [inbound_get("/reviews/0", 200), inbound_get("/reviews/1", 200), inbound_get("/missing", 404)]
    }));
    assert_configured(&r);
    let ok = labels(&as_refs(&inbound_labels("200")));
    let not_found = labels(&as_refs(&inbound_labels("404")));
    assert_line(&r, &format!("istio_requests_total{ok} 2"));
    assert_line(&r, &format!("istio_requests_total{not_found} 1"));
    // Histograms: Envoy's default buckets; the upstream took 7 ms.
    let le = |b: &str| {
        let mut l = inbound_labels("200");
        l.push(("le", b.to_string()));
        labels(&as_refs(&l))
    };
    assert_line(&r, &format!("istio_request_duration_milliseconds_bucket{} 0", le("5")));
    assert_line(&r, &format!("istio_request_duration_milliseconds_bucket{} 2", le("10")));
    assert_line(&r, &format!("istio_request_duration_milliseconds_bucket{} 2", le("+Inf")));
    assert_line(&r, &format!("istio_request_duration_milliseconds_count{ok} 2"));
    assert_line(&r, &format!("istio_request_bytes_count{ok} 2"));
    assert_line(&r, &format!("istio_response_bytes_count{ok} 2"));
    assert_line(&r, "istio_build{component=\"proxy\",tag=\"1.16.0\"} 1");
    // No gRPC, no message counters.
    assert!(!r.prometheus.contains("messages_total"), "{}", r.prometheus);
    // The stat name carries the labels with Istio's separators.
    assert!(
        r.metrics.iter().any(|m| m.name.starts_with("reporter=.=destination;.;source_workload=.=productpage-v1;.;")
            && m.name.ends_with(";.;istio_requests_total")),
        "{:#?}",
        r.metrics
    );
}

/// An outbound listener reports as the source: the local workload is the
/// source, the upstream's exchanged metadata the destination, and the
/// security policy is `unknown` (the client side cannot tell).
#[test]
fn outbound_requests_report_as_source() {
    let node = json!({
        "metadata": {
            "NAMESPACE": "default", "WORKLOAD_NAME": "reviews-v2", "CLUSTER_ID": "Kubernetes",
            "LABELS": {"app": "reviews", "version": "v2", "service.istio.io/canonical-name": "reviews", "service.istio.io/canonical-revision": "v2"}
        }
    });
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm()}],
        "node": node,
        "direction": "outbound",
        "streams": [{
            "request": {"headers": [[":method", "GET"], [":path", "/ratings/0"], [":authority", "ratings:9080"]]},
            "upstream": {"status": 503, "headers": [["x-envoy-peer-metadata", ratings_peer_header()]]}
        }]
    }));
    assert_configured(&r);
    let expected = labels(&[
        ("reporter", "source"),
        ("source_workload", "reviews-v2"),
        ("source_canonical_service", "reviews"),
        ("source_canonical_revision", "v2"),
        ("source_workload_namespace", "default"),
        ("source_principal", "unknown"),
        ("source_app", "reviews"),
        ("source_version", "v2"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "ratings-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_principal", "unknown"),
        ("destination_app", "ratings"),
        ("destination_version", "v1"),
        ("destination_service", "ratings:9080"),
        ("destination_canonical_service", "ratings"),
        ("destination_canonical_revision", "latest"),
        ("destination_service_name", "ratings:9080"),
        ("destination_service_namespace", "default"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "http"),
        ("response_code", "503"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ]);
    assert_line(&r, &format!("istio_requests_total{expected} 1"));
}

/// Without peer metadata, certificates or node metadata every fact is
/// `unknown` (canonical revisions `latest`); plaintext is `none`.
/// `disable_host_header_fallback` makes `destination_service` the
/// canonical service (here unknown too).
#[test]
fn missing_facts_fall_back_like_istio() {
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": {"disable_host_header_fallback": true}}],
        "node": {"metadata": {}},
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc.local"]]}}]
    }));
    assert_configured(&r);
    let mut expected: Vec<(&str, &str)> = host_sim::prometheus::ISTIO_LABELS.iter().map(|l| (*l, "unknown")).collect();
    for (k, v) in [
        ("reporter", "destination"),
        ("source_canonical_revision", "latest"),
        ("destination_canonical_revision", "latest"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "none"),
    ] {
        expected.iter_mut().find(|(l, _)| *l == k).unwrap().1 = v;
    }
    assert_line(&r, &format!("istio_requests_total{} 1", labels(&expected)));
}

/// gRPC: `request_protocol="grpc"` and `grpc_response_status` from the
/// response trailers.
#[test]
fn grpc_requests_carry_grpc_labels() {
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm()}],
        "node": reviews_node(),
        "connection": mtls(),
        "streams": [{
            "request": {"headers": [
                [":method", "POST"], [":path", "/reviews.Reviews/Get"], [":authority", "reviews:9080"],
                ["content-type", "application/grpc"],
                ["x-envoy-peer-metadata", productpage_peer_header()]
            ], "body": "\u{0}\u{0}\u{0}\u{0}\u{0}"},
            "upstream": {"status": 200, "headers": [["content-type", "application/grpc"]], "body": "\u{0}\u{0}\u{0}\u{0}\u{0}",
                         "trailers": [["grpc-status", "5"]]}
        }]
    }));
    assert_configured(&r);
    let mut l = inbound_labels("200");
    for (k, v) in [("request_protocol", "grpc"), ("grpc_response_status", "5")] {
        l.iter_mut().find(|(n, _)| *n == k).unwrap().1 = v.to_string();
    }
    assert_line(&r, &format!("istio_requests_total{} 1", labels(&as_refs(&l))));
}

/// The seed examples: a `get_calls` COUNTER defined with
/// `(request.method.startsWith('GET') ? 1 : 0)` (emitted as
/// `istio_get_calls`), extra dimensions `upstream_proxy_version`
/// (`upstream_peer.istio_version`; no upstream peer here, so `unknown`) and
/// `source_mesh_id` (`node.metadata['MESH_ID']`) on `requests_total`, and
/// `request_protocol` removed from it. The extra dimensions come after the
/// standard labels; Prometheus shows them with `stats_tags` entries (Istio's
/// `extraStatTags`).
#[test]
fn seed_examples_custom_metric_dimensions_and_tag_removal() {
    let config = json!({
        "metrics": [{
            "name": "requests_total",
            "dimensions": {
                "upstream_proxy_version": "upstream_peer.istio_version",
                "source_mesh_id": "node.metadata['MESH_ID']"
            },
            "tags_to_remove": ["request_protocol"]
        }],
        "definitions": [{"name": "get_calls", "type": "COUNTER", "value": "(request.method.startsWith('GET') ? 1 : 0)"}]
    });
    let mut post = inbound_get("/reviews/0", 201);
    post["request"]["headers"][0][1] = json!("POST");
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": config}],
        "node": reviews_node(),
        "connection": mtls(),
        "stats_tags": stats_tags(&["source_mesh_id", "upstream_proxy_version"]),
        "streams": [inbound_get("/reviews/0", 200), post]
    }));
    assert_configured(&r);
    assert_line(&r, "istio_get_calls{} 1");
    let mut l: Vec<(&str, String)> =
        inbound_labels("200").into_iter().filter(|(k, _)| *k != "request_protocol").collect();
    l.push(("source_mesh_id", "cluster.local".into()));
    l.push(("upstream_proxy_version", "unknown".into()));
    assert_line(&r, &format!("istio_requests_total{} 1", labels(&as_refs(&l))));
    // The other metrics keep their standard labels only.
    assert_line(&r, &format!("istio_request_bytes_count{} 1", labels(&as_refs(&inbound_labels("200")))));
    // In the stat name the extra dimensions are sorted by key, after the standard labels.
    let name = r
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .find(|n| n.ends_with("istio_requests_total") && n.contains("response_code=.=200;"))
        .unwrap();
    assert!(
        name.ends_with("connection_security_policy=.=mutual_tls;.;source_mesh_id=.=cluster.local;.;upstream_proxy_version=.=unknown;.;istio_requests_total"),
        "{name}"
    );
}

/// Istio's `drop`, nameless entries (all metrics), `stat_prefix` and
/// lowerCamelCase field names, as proto JSON allows.
#[test]
fn drop_nameless_entries_prefix_and_camel_case() {
    let config = json!({
        "statPrefix": "mesh",
        "metrics": [
            {"dimensions": {"request_operation": "request.method + ' ' + request.url_path"}},
            {"name": "request_bytes", "drop": true},
            {"name": "response_bytes", "drop": true},
            {"name": "request_duration_milliseconds", "drop": true},
            {"name": "requests_total", "tagsToRemove": ["source_principal", "destination_principal"]}
        ]
    });
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": config}],
        "node": reviews_node(),
        "connection": mtls(),
        "stats_tags": stats_tags(&["request_operation"]),
        "streams": [inbound_get("/api/catalog", 200)]
    }));
    assert_configured(&r);
    let mut l: Vec<(&str, String)> =
        inbound_labels("200").into_iter().filter(|(k, _)| !k.ends_with("_principal")).collect();
    l.push(("request_operation", "GET /api/catalog".into()));
    assert_line(&r, &format!("mesh_requests_total{} 1", labels(&as_refs(&l))));
    assert!(!r.prometheus.contains("mesh_request_bytes"), "{}", r.prometheus);
    assert!(!r.prometheus.contains("duration"), "{}", r.prometheus);
    assert_line(&r, "mesh_build{component=\"proxy\",tag=\"1.16.0\"} 1");
}

/// The cap on distinct label sets: with `max_series_per_metric: 2`, a third
/// and fourth user go to the series whose labels are all `overflow`, and
/// `meshwasm_stats_overflow_total` counts the diverted values.
#[test]
fn cardinality_cap_sends_new_label_sets_to_overflow() {
    let config = json!({
        "max_series_per_metric": 2,
        "metrics": [{"name": "requests_total", "dimensions": {"user": "request.headers['x-user']"}}]
    });
    let stream = |user: &str| json!({"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"], ["x-user", user]]}});
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": config}],
        "node": reviews_node(),
        "stats_tags": stats_tags(&["user"]),
        "streams": [stream("alice"), stream("bob"), stream("mallory-1"), stream("mallory-2"), stream("alice")]
    }));
    assert_configured(&r);
    let requests: Vec<&str> = r.prometheus.lines().filter(|l| l.starts_with("istio_requests_total{")).collect();
    assert_eq!(requests.len(), 3, "{}", r.prometheus);
    assert!(requests.iter().any(|l| l.contains("user=\"alice\"") && l.ends_with(" 2")), "{requests:#?}");
    assert!(requests.iter().any(|l| l.contains("user=\"bob\"") && l.ends_with(" 1")), "{requests:#?}");
    let overflow: Vec<(&str, &str)> =
        host_sim::prometheus::ISTIO_LABELS.iter().chain(["user"].iter()).map(|l| (*l, "overflow")).collect();
    assert_line(&r, &format!("istio_requests_total{} 2", labels(&overflow)));
    assert_line(&r, "meshwasm_stats_overflow_total{} 2");
    // The other metrics have one label set each: no overflow.
    let bytes: Vec<&str> = r.prometheus.lines().filter(|l| l.starts_with("istio_request_bytes_count{")).collect();
    assert_eq!(bytes.len(), 1, "{bytes:#?}");
    assert!(bytes[0].ends_with(" 5") && !bytes[0].contains("overflow"), "{bytes:#?}");
}

/// Hostile values never panic the plugin and never forge labels: a host
/// header carrying the separators, garbage peer metadata, a huge header.
#[test]
fn hostile_values_are_contained() {
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": {"metrics": [{"dimensions": {"ua": "request.headers['user-agent']"}}]}}],
        "node": reviews_node(),
        "stats_tags": stats_tags(&["ua"]),
        "streams": [{
            "request": {"headers": [
                [":method", "GET"], [":path", "/"], [":authority", "evil;.;response_code=.=500;.;"],
                ["x-envoy-peer-metadata", "%%%not-base64%%%"],
                ["user-agent", "x".repeat(20_000)]
            ]}
        }, {
            "request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"], ["x-envoy-peer-metadata", meshwasm_wire::istio::base64_encode(b"\x0a\xff\xff\xff\xff\x0f")]]}
        }]
    }));
    assert_configured(&r);
    let line = r
        .prometheus
        .lines()
        .find(|l| l.contains("destination_service=\"evil_response_code_500_\""))
        .expect(&r.prometheus);
    assert!(line.contains("response_code=\"200\""), "{line}");
    assert!(line.contains("source_workload=\"unknown\""), "{line}");
    assert_eq!(r.prometheus.matches("istio_requests_total{").count(), 2, "{}", r.prometheus);
}

/// Bad configurations are rejected at configure time (Envoy would refuse
/// the listener) with a log line naming the field (errors Istio tolerated
/// only with `strict`: tests/tests/config_compat.rs has them tolerated). (Each case starts a VM;
/// the parser's other cases are unit tests in plugins/stats.)
#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases = [
        (
            json!({"strict": true, "metrics": [{"name": "requests_total", "dimensions": {"x": "request.method ==="}}]}),
            "metrics[0].dimensions.x",
        ),
        (
            json!({"strict": true, "definitions": [{"name": "get_calls", "type": "SUMMARY", "value": "1"}]}),
            "definitions[0].type",
        ),
        (
            json!({"strict": true, "definitions": [{"name": "get_calls", "value": "request.method.startsWith("}]}),
            "definitions[0].value",
        ),
        (json!({"metrics": [{"tags_to_remove": "request_protocol"}]}), "metrics[0].tags_to_remove"),
        (json!({"tcp_reporting_duration": "soon"}), "tcp_reporting_duration"),
        (json!({"strict": true, "metrix": []}), "metrix"),
        (json!({"strict": true, "definitions": [{"name": "requests_total", "value": "1"}]}), "definitions[0].name"),
    ];
    for (config, path) in cases {
        let r = run(json!({
            "plugins": [{"wasm": stats_wasm(), "configuration": config}],
            "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"]]}}]
        }));
        assert!(!r.plugins[0].configured, "{config} was accepted");
        let wanted = format!("invalid configuration at `{path}`");
        assert!(
            r.logs.iter().any(|l| l.level == host_sim::abi::LogLevel::Error && l.message.contains(&wanted)),
            "{config}: no error log with {wanted:?}: {:#?}",
            r.logs
        );
    }
}

/// Istio's manifests for the old Wasm plugin carry `debug`, `stat_prefix`,
/// the separators and durations; all are accepted.
#[test]
fn istio_wasm_era_config_is_accepted() {
    let config = json!({
        "debug": "false" == "true",
        "stat_prefix": "istio",
        "field_separator": ";.;",
        "value_separator": "=.=",
        "tcp_reporting_duration": "15s",
        "max_peer_cache_size": 10000,
        "rotation_interval": "0s",
        "graceful_deletion_interval": "300s",
        "metrics": [{"dimensions": {"destination_port": "string(destination.port)"}}]
    });
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "root_id": "stats_inbound", "configuration": config}],
        "node": reviews_node(),
        "direction": "outbound",
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"]]}}]
    }));
    assert_configured(&r);
    // root id stats_inbound wins over the listener direction, as in the old plugin.
    assert!(r.prometheus.contains("istio_requests_total{reporter=\"destination\""), "{}", r.prometheus);
}

/// `reporter: SERVER_GATEWAY` reports as `waypoint`.
#[test]
fn server_gateway_reports_as_waypoint() {
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": {"reporter": "SERVER_GATEWAY", "disable_host_header_fallback": true}}],
        "node": reviews_node(),
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"],
                                             ["x-envoy-peer-metadata", productpage_peer_header()]]}}]
    }));
    assert_configured(&r);
    let line = r.prometheus.lines().find(|l| l.starts_with("istio_requests_total{")).expect(&r.prometheus);
    assert!(
        line.starts_with("istio_requests_total{reporter=\"waypoint\",source_workload=\"productpage-v1\""),
        "{line}"
    );
    assert!(line.contains("destination_service=\"unknown\""), "{line}");
}

// ------------------------------------------------------------ TCP metrics

/// A scenario with the probe (marking the peer as looked up, and setting
/// filter state `stage`) and stats as network filters, one TCP connection.
fn tcp_scenario(stats_config: Value, events: Value) -> Value {
    json!({
        "plugins": [
            {"name": "marker", "wasm": common::plugin_wasm("probe"), "type": "network",
             "configuration": {"context": "network",
                               "actions": ["setprop=peer_not_found:true", "setprop=stage:early", "setprop=stage:late@up"]}},
            {"wasm": stats_wasm(), "type": "network", "configuration": stats_config}
        ],
        "node": reviews_node(),
        "stats_tags": tags_with_stage(),
        "connections": [{"events": events}]
    })
}

/// Istio's tag regexes plus one for the custom dimension `stage`.
fn tags_with_stage() -> Value {
    let mut tags = host_sim::prometheus::istio_default_stats_tags();
    tags.push(host_sim::prometheus::istio_tag("stage"));
    Value::Array(tags.iter().map(|t| json!({"tag_name": t.tag_name, "regex": t.regex})).collect())
}

/// The value of the one series of `metric` in the Prometheus text, and that
/// series' labels.
fn only_series(r: &RunResult, metric: &str) -> (String, u64) {
    let lines: Vec<&str> = r.prometheus.lines().filter(|l| l.starts_with(&format!("{metric}{{"))).collect();
    assert_eq!(lines.len(), 1, "{metric}: {}", r.prometheus);
    let (labels, value) = lines[0].rsplit_once(' ').unwrap();
    (labels.to_string(), value.parse().unwrap())
}

#[test]
fn tcp_metrics_count_bytes_and_connections() {
    let r = run(tcp_scenario(
        json!({}),
        json!([{"downstream": "hello"}, {"upstream": "hi!"}, {"downstream": "again"}, {"close": "downstream"}]),
    ));
    assert_eq!(r.connections[0].upstream_received, "helloagain");
    let (labels, received) = only_series(&r, "istio_tcp_received_bytes_total");
    assert_eq!(received, 10);
    assert_eq!(only_series(&r, "istio_tcp_sent_bytes_total").1, 3);
    assert_eq!(only_series(&r, "istio_tcp_connections_opened_total").1, 1);
    assert_eq!(only_series(&r, "istio_tcp_connections_closed_total").1, 1);
    assert!(
        labels.starts_with("istio_tcp_received_bytes_total{reporter=\"destination\",source_workload=\"unknown\""),
        "{labels}"
    );
    assert!(
        labels.ends_with("destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"none\"}"),
        "{labels}"
    );
    assert!(!r.prometheus.contains("istio_requests_total"), "no HTTP metrics from a connection");
}

#[test]
fn tcp_labels_are_fixed_at_the_first_periodic_report() {
    let config = json!({"tcp_reporting_duration": "1s", "metrics": [{"dimensions": {"stage": "stage"}}]});
    let events = |advance: u64| json!([{"downstream": "a"}, {"advance_ms": advance}, {"upstream": "b"}]);
    // A report during the connection (the timer fires after 1 s) takes the
    // filter state as it is then; the later change does not move the series.
    let ticked = run(tcp_scenario(config.clone(), events(1500)));
    let (labels, _) = only_series(&ticked, "istio_tcp_connections_closed_total");
    assert!(labels.contains("stage=\"early\""), "{labels}");
    // Without a report before the close, the close reports the final value.
    let unticked = run(tcp_scenario(config, events(500)));
    let (labels, _) = only_series(&unticked, "istio_tcp_connections_closed_total");
    assert!(labels.contains("stage=\"late\""), "{labels}");
    assert_eq!(only_series(&ticked, "istio_tcp_sent_bytes_total").1, 1);
}

#[test]
fn tcp_connection_without_peer_lookup_reports_only_at_close() {
    // No metadata exchange ran: ticks report nothing, so the labels come
    // from the close even with ticks in between.
    let config = json!({"tcp_reporting_duration": "1s", "metrics": [{"dimensions": {"stage": "stage"}}]});
    let mut s = tcp_scenario(config, json!([{"downstream": "a"}, {"advance_ms": 3000}, {"upstream": "b"}]));
    s["plugins"][0]["configuration"]["actions"] = json!(["setprop=stage:early", "setprop=stage:late@up"]);
    let r = run(s);
    let (labels, closed) = only_series(&r, "istio_tcp_connections_closed_total");
    assert_eq!(closed, 1);
    assert!(labels.contains("stage=\"late\""), "{labels}");
}

#[test]
fn tcp_upstream_failure_is_reported_with_uf() {
    let mut s = tcp_scenario(json!({}), json!([]));
    s["connections"][0]["upstream_unreachable"] = json!(true);
    let r = run(s);
    let (labels, opened) = only_series(&r, "istio_tcp_connections_opened_total");
    assert_eq!(opened, 1);
    assert!(labels.contains("response_flags=\"UF,URX\""), "{labels}");
    assert_eq!(only_series(&r, "istio_tcp_received_bytes_total").1, 0);
}

#[test]
fn one_configuration_serves_http_and_tcp() {
    // The same wasm and configuration as an HTTP filter and a network
    // filter: each context gets the right type (a wrong guess would trap).
    let r = run(json!({
        "plugins": [
            {"name": "stats_http", "wasm": stats_wasm(), "configuration": {}},
            {"name": "stats_tcp", "wasm": stats_wasm(), "type": "network", "configuration": {}}
        ],
        "node": reviews_node(),
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "reviews:9080"]]}}],
        "connections": [{"events": [{"downstream": "x"}]}]
    }));
    assert!(r.streams[0].plugin_failure.is_none() && r.connections[0].plugin_failure.is_none());
    assert_eq!(only_series(&r, "istio_requests_total").1, 1);
    assert_eq!(only_series(&r, "istio_tcp_connections_closed_total").1, 1);
}

#[test]
fn tcp_bytes_follow_envoys_count_when_a_later_filter_holds_data() {
    // The probe after stats holds every read, so Envoy offers the buffered
    // bytes again with each new read ("abc", then "abcde", then "abcde" with
    // the FIN). stats reports the connection's own byte count, which Envoy
    // keeps the same way: each read adds the whole buffer (3 + 5 + 5;
    // tests/conformance/tcp-held.json shows it in Envoy 1.40).
    let r = run(json!({
        "plugins": [
            {"wasm": stats_wasm(), "type": "network", "configuration": {}},
            {"name": "holder", "root_id": "holder", "wasm": common::plugin_wasm("probe"), "type": "network",
             "configuration": {"context": "network", "lifecycle": true, "actions": ["pause@down"]}}
        ],
        "node": reviews_node(),
        "connections": [{"events": [{"downstream": "abc"}, {"downstream": "de"}, {"close": "downstream"}]}]
    }));
    let sizes: Vec<&str> =
        r.connections[0].logs.iter().filter_map(|l| l.message.strip_prefix("lifecycle downstream_data ")).collect();
    assert_eq!(sizes, ["size=3 eos=false", "size=5 eos=false", "size=5 eos=true"], "the data is offered again");
    assert_eq!(r.connections[0].upstream_received, "", "held back to the end");
    assert_eq!(only_series(&r, "istio_tcp_received_bytes_total").1, 13);
}
