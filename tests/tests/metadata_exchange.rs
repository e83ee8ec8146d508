//! The `metadata_exchange` plugin (plugins/metadata_exchange) under
//! host-sim, in front of `stats` as Istio chains them: the peer headers are
//! read, stored and stripped, ours are sent on outbound requests and inbound
//! responses, and `stats` fills the peer's labels from what the exchange
//! stored. Hostile headers never trap or fail a request; a bad
//! configuration is refused naming the field.
//!
//! The plugins must be built first:
//! `cargo build --target wasm32-wasip1 --release` (these tests never build them).

use host_sim::result::{RunResult, StreamResult};
use serde_json::{json, Value};

mod common;
use common::run;

const PRODUCTPAGE_ID: &str = "sidecar~10.0.0.5~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local";
const REVIEWS_ID: &str = "sidecar~10.0.0.7~reviews-v1-5f8d9c-abcde.default~default.svc.cluster.local";

fn productpage_metadata() -> Value {
    json!({
        "NAME": "productpage-v1-6b746f74dc-9stvs",
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "productpage-v1",
        "CLUSTER_ID": "Kubernetes",
        "MESH_ID": "cluster.local",
        "ISTIO_VERSION": "1.16.0",
        "INTERCEPTION_MODE": "REDIRECT",
        "LABELS": {"app": "productpage", "version": "v1", "service.istio.io/canonical-name": "productpage", "service.istio.io/canonical-revision": "v1"}
    })
}

fn node(id: &str, metadata: Value) -> Value {
    json!({"id": id, "cluster": "x.default", "metadata": metadata})
}

/// What a proxy with this node metadata sends: base64 of its Wasm-era Struct.
fn header_of(metadata: &Value) -> String {
    let s = meshwasm_wire::protobuf::struct_from_json(metadata.as_object().expect("object"));
    meshwasm_wire::istio::encode_peer_metadata(&meshwasm_wire::istio::wasm_era_peer_struct(&s))
}

fn plugins(mx_config: Value) -> Value {
    json!([
        {"wasm": common::plugin_wasm("metadata_exchange"), "configuration": mx_config},
        {"wasm": common::plugin_wasm("stats"), "configuration": {}}
    ])
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn upstream_headers(s: &StreamResult) -> &[(String, String)] {
    &s.upstream_request.as_ref().expect("reached the upstream").headers
}

fn response_headers(s: &StreamResult) -> &[(String, String)] {
    &s.downstream_response.as_ref().expect("answered").headers
}

fn assert_clean(r: &RunResult) {
    assert!(r.plugins.iter().all(|p| p.configured), "plugins: {:?}\nlogs: {:#?}", r.plugins, r.logs);
    for s in &r.streams {
        assert!(s.plugin_failure.is_none(), "plugin failed: {:?}", s.plugin_failure);
        assert_eq!(s.downstream_response.as_ref().map(|d| d.status), Some(200), "{s:?}");
    }
}

/// The value of a counter (`metadata_exchange.metadata_added`; 0 when absent).
fn counter(r: &RunResult, name: &str) -> i64 {
    r.metrics.iter().filter(|m| m.name == name).map(|m| m.value).sum()
}

/// The `istio_requests_total` line whose labels include all of `pairs`.
fn requests_line<'a>(r: &'a RunResult, pairs: &[(&str, &str)]) -> Option<&'a str> {
    r.prometheus
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .find(|l| pairs.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
}

fn inbound_request(extra: &[(&str, &str)]) -> Value {
    let mut headers =
        vec![json!([":method", "GET"]), json!([":path", "/reviews/0"]), json!([":authority", "reviews:9080"])];
    headers.extend(extra.iter().map(|(k, v)| json!([k, v])));
    json!({"request": {"headers": headers}, "upstream": {"status": 200, "body": "ok"}})
}

/// Server side: the client's headers are stored and stripped before the
/// application sees them; the response carries ours (the request carried
/// both); stats (after MX in the chain) fills the source_* labels from the
/// stored peer; a second request from the same peer is a cache hit.
#[test]
fn inbound_peer_is_stored_stripped_and_answered() {
    let client = header_of(&productpage_metadata());
    let with_peer =
        inbound_request(&[("x-envoy-peer-metadata-id", PRODUCTPAGE_ID), ("x-envoy-peer-metadata", &client)]);
    let r = run(json!({
        "plugins": plugins(json!({"max_peer_cache_size": 20})),
        "node": node(REVIEWS_ID, common::reviews_metadata()),
        "direction": "inbound",
        "streams": [with_peer.clone(), with_peer, inbound_request(&[])]
    }));
    assert_clean(&r);
    for s in &r.streams {
        assert_eq!(header(upstream_headers(s), "x-envoy-peer-metadata"), None);
        assert_eq!(header(upstream_headers(s), "x-envoy-peer-metadata-id"), None);
    }
    let ours = header_of(&common::reviews_metadata());
    assert_eq!(header(response_headers(&r.streams[0]), "x-envoy-peer-metadata"), Some(ours.as_str()));
    assert_eq!(header(response_headers(&r.streams[0]), "x-envoy-peer-metadata-id"), Some(REVIEWS_ID));
    // No peer headers in the request: none of ours in the response.
    assert_eq!(header(response_headers(&r.streams[2]), "x-envoy-peer-metadata"), None);
    assert_eq!(header(response_headers(&r.streams[2]), "x-envoy-peer-metadata-id"), None);
    let known = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v1"),
    ];
    let line = requests_line(&r, &known).unwrap_or_else(|| panic!("no line with the peer's labels:\n{}", r.prometheus));
    assert!(line.ends_with(" 2"), "{line}");
    assert!(requests_line(&r, &[("source_workload", "unknown")]).is_some_and(|l| l.ends_with(" 1")));
    assert_eq!(counter(&r, "metadata_exchange.metadata_added"), 1);
    assert_eq!(counter(&r, "metadata_exchange.peer_cache_hit"), 1);
}

/// Client side: our headers go to the upstream (replacing any the app
/// sent), the upstream's answer is read and stripped before the app sees
/// it, and stats fills the destination_* labels from it.
#[test]
fn outbound_sends_ours_and_takes_the_upstreams() {
    let server = header_of(&common::reviews_metadata());
    let r = run(json!({
        "plugins": plugins(json!({})),
        "node": node(PRODUCTPAGE_ID, productpage_metadata()),
        "direction": "outbound",
        "streams": [{
            "request": {"headers": [[":method", "GET"], [":path", "/reviews/0"], [":authority", "reviews:9080"],
                                    ["x-envoy-peer-metadata-id", "spoofed"]]},
            "upstream": {"status": 200, "headers": [["x-envoy-peer-metadata-id", REVIEWS_ID], ["x-envoy-peer-metadata", server]], "body": "ok"}
        }]
    }));
    assert_clean(&r);
    let s = &r.streams[0];
    let ours = header_of(&productpage_metadata());
    assert_eq!(header(upstream_headers(s), "x-envoy-peer-metadata"), Some(ours.as_str()));
    assert_eq!(header(upstream_headers(s), "x-envoy-peer-metadata-id"), Some(PRODUCTPAGE_ID));
    assert_eq!(
        upstream_headers(s).iter().filter(|(k, _)| k.starts_with("x-envoy-peer")).count(),
        2,
        "replaced, not added"
    );
    assert_eq!(header(response_headers(s), "x-envoy-peer-metadata"), None);
    assert_eq!(header(response_headers(s), "x-envoy-peer-metadata-id"), None);
    let line = requests_line(
        &r,
        &[
            ("reporter", "source"),
            ("source_workload", "productpage-v1"),
            ("destination_workload", "reviews-v1"),
            ("destination_workload_namespace", "default"),
            ("destination_canonical_service", "reviews"),
            ("destination_canonical_revision", "v1"),
            ("destination_app", "reviews"),
            ("destination_cluster", "Kubernetes"),
        ],
    );
    assert!(line.is_some(), "{}", r.prometheus);
    // Our Wasm-era key set: the node's INTERCEPTION_MODE is not sent.
    let sent = meshwasm_wire::istio::decode_peer_metadata(ours.as_bytes()).expect("decodes");
    assert!(!sent.fields.contains_key("INTERCEPTION_MODE") && sent.fields.contains_key("WORKLOAD_NAME"));
}

/// A peer of the current native era (its key set: no ISTIO_VERSION,
/// OWNER rebuilt, IDENTITY, REGION) fills the same labels.
#[test]
fn native_era_peers_are_read() {
    let native = json!({
        "NAME": "productpage-v1-6b746f74dc-9stvs",
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "productpage-v1",
        "CLUSTER_ID": "Kubernetes",
        "IDENTITY": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "REGION": "us-east1",
        "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1",
        "LABELS": {"app": "productpage", "version": "v1", "service.istio.io/canonical-name": "productpage", "service.istio.io/canonical-revision": "v1"}
    });
    let value = meshwasm_wire::istio::encode_peer_metadata(&meshwasm_wire::protobuf::struct_from_json(
        native.as_object().expect("object"),
    ));
    let r = run(json!({
        "plugins": plugins(json!({})),
        "node": node(REVIEWS_ID, common::reviews_metadata()),
        "direction": "inbound",
        "streams": [inbound_request(&[("x-envoy-peer-metadata-id", PRODUCTPAGE_ID), ("x-envoy-peer-metadata", &value)])]
    }));
    assert_clean(&r);
    let want = [
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_app", "productpage"),
    ];
    assert!(requests_line(&r, &want).is_some(), "{}", r.prometheus);
}

/// Hostile values: bad base64, base64 of something that is not a Struct,
/// a 100 KB value past the cap, an empty one. Every request is answered,
/// nothing traps, each cause has its counter, the peer stays unknown, and
/// the headers never reach the application.
#[test]
fn hostile_headers_never_trap_and_are_counted() {
    let huge = "A".repeat(100 * 1024);
    let not_a_struct = meshwasm_wire::istio::base64_encode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let cases = [
        inbound_request(&[("x-envoy-peer-metadata-id", "a"), ("x-envoy-peer-metadata", "%%%not base64%%%")]),
        inbound_request(&[("x-envoy-peer-metadata-id", "b"), ("x-envoy-peer-metadata", &not_a_struct)]),
        inbound_request(&[("x-envoy-peer-metadata-id", "c"), ("x-envoy-peer-metadata", &huge)]),
        inbound_request(&[("x-envoy-peer-metadata-id", "d"), ("x-envoy-peer-metadata", "")]),
        inbound_request(&[("x-envoy-peer-metadata", "%%%"), ("x-envoy-peer-metadata", "again")]),
    ];
    let r = run(json!({
        "plugins": plugins(json!({})),
        "node": node(REVIEWS_ID, common::reviews_metadata()),
        "direction": "inbound",
        "streams": cases
    }));
    assert_clean(&r);
    for s in &r.streams {
        assert!(upstream_headers(s).iter().all(|(k, _)| k != "x-envoy-peer-metadata"), "{:?}", upstream_headers(s));
    }
    assert_eq!(counter(&r, "metadata_exchange.malformed_base64"), 2);
    assert_eq!(counter(&r, "metadata_exchange.malformed_protobuf"), 1);
    assert_eq!(counter(&r, "metadata_exchange.oversized"), 1);
    assert_eq!(counter(&r, "metadata_exchange.metadata_added"), 0);
    assert!(
        requests_line(&r, &[("source_workload", "unknown")]).is_some_and(|l| l.ends_with(" 5")),
        "{}",
        r.prometheus
    );
}

/// `trust: mtls_only`: over plaintext the peer is refused (counted) and
/// none of ours is returned; over mTLS it is taken.
#[test]
fn mtls_only_takes_peers_over_mtls_only() {
    let client = header_of(&productpage_metadata());
    let mut plain =
        inbound_request(&[("x-envoy-peer-metadata-id", PRODUCTPAGE_ID), ("x-envoy-peer-metadata", &client)]);
    let mut mtls = plain.clone();
    plain["connection"] = json!({});
    mtls["connection"] = json!({
        "mtls": true,
        "peer_certificate": {"uri_sans": ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]},
        "local_certificate": {"uri_sans": ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]}
    });
    let r = run(json!({
        "plugins": plugins(json!({"trust": "mtls_only"})),
        "node": node(REVIEWS_ID, common::reviews_metadata()),
        "direction": "inbound",
        "streams": [plain, mtls]
    }));
    assert_clean(&r);
    assert_eq!(counter(&r, "metadata_exchange.untrusted_peer"), 1);
    assert_eq!(counter(&r, "metadata_exchange.metadata_added"), 1);
    assert_eq!(header(response_headers(&r.streams[0]), "x-envoy-peer-metadata"), None);
    assert!(header(response_headers(&r.streams[1]), "x-envoy-peer-metadata").is_some());
    assert!(requests_line(&r, &[("source_workload", "unknown")]).is_some());
    assert!(requests_line(&r, &[("source_workload", "productpage-v1")]).is_some());
}

/// A bad configuration is refused at configure, the log naming the field;
/// Istio's own configurations are accepted.
#[test]
fn bad_configuration_is_refused_naming_the_field() {
    for (config, field) in [
        (json!({"max_peer_cache_size": -1}), "max_peer_cache_size"),
        (json!({"trust": "sometimes"}), "trust"),
        (json!({"max_peer_cache_sise": 20, "strict": true}), "max_peer_cache_sise"),
    ] {
        let r = run(json!({
            "plugins": [{"wasm": common::plugin_wasm("metadata_exchange"), "configuration": config}],
            "streams": [inbound_request(&[])]
        }));
        assert!(!r.plugins[0].configured, "{config} was accepted");
        let logged = r.logs.iter().any(|l| l.message.contains(&format!("`{field}`")));
        assert!(logged, "{config}: no log naming `{field}`: {:#?}", r.logs);
    }
    for config in [json!({}), json!({"max_peer_cache_size": 20}), json!("")] {
        let r = run(json!({
            "plugins": [{"wasm": common::plugin_wasm("metadata_exchange"), "configuration": config}],
            "streams": [inbound_request(&[])]
        }));
        assert!(r.plugins[0].configured, "{config}: {:#?}", r.logs);
    }
}

/// An unknown field (Istio's plugin read only `max_peer_cache_size`, so it
/// never saw one) is tolerated: logged naming it, counted, the rest in
/// force; `strict` refuses it (above).
#[test]
fn unknown_fields_are_tolerated_logged_and_counted() {
    let r = run(json!({
        "plugins": [{"wasm": common::plugin_wasm("metadata_exchange"),
                     "configuration": {"max_peer_cache_sise": 20, "max_peer_metadata_bytes": 8}}],
        "streams": [inbound_request(&[("x-envoy-peer-metadata", &header_of(&productpage_metadata()))])]
    }));
    assert!(r.plugins[0].configured, "{:#?}", r.logs);
    assert!(r.logs.iter().any(|l| l.message.contains("`max_peer_cache_sise`")), "{:#?}", r.logs);
    assert!(counter(&r, "metadata_exchange.config_errors") > 0);
    assert_eq!(counter(&r, "metadata_exchange.oversized"), 1, "max_peer_metadata_bytes is in force");
}

// -------------------------------------------------- TCP (network filter)

/// A node so small that its exchange frame is all ASCII (every protobuf
/// length below 128: an empty id and one-letter namespace), as a
/// scenario's TCP bytes are text.
fn small_meta(namespace: &str) -> Value {
    json!({"NAMESPACE": namespace})
}

fn frame_of(id: &str, metadata: &Value) -> String {
    let s = meshwasm_wire::protobuf::struct_from_json(metadata.as_object().expect("object"));
    let bytes = meshwasm_wire::istio::encode_tcp_frame(id, &meshwasm_wire::istio::wasm_era_peer_struct(&s));
    String::from_utf8(bytes).expect("an ASCII frame")
}

fn tcp_plugins() -> Value {
    json!([
        {"wasm": common::plugin_wasm("metadata_exchange"), "type": "network", "configuration": {}},
        {"wasm": common::plugin_wasm("stats"), "type": "network", "configuration": {}}
    ])
}

/// Server side: the client's frame is drained before the application sees
/// a byte, ours goes back in front of the first answer, stats reports the
/// connection with the client's labels; a plain client gets its bytes
/// through untouched and no frame.
#[test]
fn tcp_server_side_reads_drains_and_answers_in_kind() {
    let client = frame_of("", &small_meta("c"));
    let ours = frame_of("", &small_meta("s"));
    let r = run(json!({
        "plugins": tcp_plugins(),
        "node": {"id": "", "metadata": small_meta("s")},
        "direction": "inbound",
        "connections": [
            {"name": "mx", "events": [{"downstream": format!("{client}hello")}, {"upstream": "world"}, {"close": "downstream"}]},
            {"name": "split", "events": [{"downstream": &client[..6]}, {"downstream": format!("{}hi", &client[6..])}, {"upstream": "yo"}]},
            {"name": "plain", "events": [{"downstream": "hello"}, {"upstream": "world"}]}
        ]
    }));
    for c in &r.connections {
        assert!(c.plugin_failure.is_none(), "{c:?}");
    }
    assert_eq!(r.connections[0].upstream_received, "hello");
    assert_eq!(r.connections[0].downstream_received, format!("{ours}world"));
    assert_eq!(r.connections[1].upstream_received, "hi");
    assert_eq!(r.connections[1].downstream_received, format!("{ours}yo"));
    assert_eq!(r.connections[2].upstream_received, "hello");
    assert_eq!(r.connections[2].downstream_received, "world");
    assert_eq!(counter(&r, "metadata_exchange.metadata_added"), 2);
    assert_eq!(counter(&r, "metadata_exchange.initial_header_not_found"), 1);
    let line = r.prometheus.lines().find(|l| {
        l.starts_with("istio_tcp_connections_closed_total{") && l.contains("source_workload_namespace=\"c\"")
    });
    assert!(line.is_some_and(|l| l.ends_with(" 2")), "{}", r.prometheus);
}

/// Client side (outbound listener in front of tcp_proxy): ours goes in
/// front of the application's first bytes, the server's frame is drained
/// from its answer, stats fills the destination labels.
#[test]
fn tcp_client_side_sends_first_and_reads_the_server() {
    let server = frame_of("", &small_meta("s"));
    let ours = frame_of("", &small_meta("c"));
    let r = run(json!({
        "plugins": tcp_plugins(),
        "node": {"id": "", "metadata": small_meta("c")},
        "direction": "outbound",
        "connections": [
            {"name": "mx", "events": [{"downstream": "hello"}, {"upstream": format!("{server}world")}, {"close": "downstream"}]}
        ]
    }));
    assert!(r.connections[0].plugin_failure.is_none());
    assert_eq!(r.connections[0].upstream_received, format!("{ours}hello"));
    assert_eq!(r.connections[0].downstream_received, "world");
    let line = r.prometheus.lines().find(|l| {
        l.starts_with("istio_tcp_connections_closed_total{") && l.contains("destination_workload_namespace=\"s\"")
    });
    assert!(line.is_some(), "{}", r.prometheus);
}

// -------------------------------------------------- hostile input, generated

mod generated {
    use super::*;
    use meshwasm_wire::istio::{decode_peer_metadata, decode_tcp_frame, encode_tcp_frame, TcpFrame};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    fn valid_frame() -> Vec<u8> {
        let meta = meshwasm_wire::protobuf::struct_from_json(productpage_metadata().as_object().expect("object"));
        encode_tcp_frame(PRODUCTPAGE_ID, &meta)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Arbitrary bytes, and a valid frame with bytes flipped, cut or
        /// appended: the decoder never panics, never claims more bytes than
        /// it was given, and a frame it accepts re-encodes to what it read.
        #[test]
        fn tcp_frames_decode_within_bounds(
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            max in 0usize..4096,
        ) {
            for mut data in [noise.clone(), valid_frame()] {
                for (i, b) in &flips {
                    let n = data.len();
                    if n > 0 {
                        data[i % n] ^= b;
                    }
                }
                data.truncate(cut % (data.len() + 1));
                data.extend_from_slice(&noise[..noise.len().min(8)]);
                match decode_tcp_frame(&data, max) {
                    TcpFrame::Peer { consumed, id, metadata } => {
                        prop_assert!(consumed <= data.len() && consumed - 8 <= max);
                        let again = encode_tcp_frame(&id, &metadata);
                        prop_assert_eq!(decode_tcp_frame(&again, usize::MAX), TcpFrame::Peer { consumed: again.len(), id, metadata });
                    }
                    TcpFrame::Malformed { consumed } => prop_assert!(consumed <= data.len()),
                    TcpFrame::Incomplete { needed } => prop_assert!(needed > data.len()),
                    TcpFrame::Oversized { length } => prop_assert!(length > max),
                    TcpFrame::NoMagic => {}
                }
            }
        }

        /// Arbitrary header values (any bytes the base64 alphabets allow,
        /// and anything else): `None` or a Struct, never a panic.
        #[test]
        fn peer_headers_decode_or_refuse(value in "[A-Za-z0-9+/=_-]{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_peer_metadata(value.as_bytes());
            let _ = decode_peer_metadata(&raw);
            let mut valid = header_of(&productpage_metadata()).into_bytes();
            for (i, b) in raw.iter().enumerate().take(4) {
                let n = valid.len();
                valid[(i * 37 + *b as usize) % n] = b"A/+=_"[*b as usize % 5];
            }
            let _ = decode_peer_metadata(&valid);
        }
    }

    /// The compiled plugin fed 300 mutated peer headers in one run: every
    /// request answered, no trap, each value stripped before the app.
    #[test]
    fn mutated_headers_through_the_plugin_never_trap() {
        let good = header_of(&productpage_metadata());
        let mut rng = proptest::test_runner::TestRunner::deterministic();
        let streams: Vec<Value> = (0..300)
            .map(|i| {
                let mut v = good.clone().into_bytes();
                let flips = proptest::collection::vec((any::<usize>(), 0u8..64), 1..6)
                    .new_tree(&mut rng)
                    .expect("tree")
                    .current();
                for (at, c) in flips {
                    let n = v.len();
                    v[at % n] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[c as usize];
                }
                let cut = if i % 3 == 0 { v.len() / 2 } else { v.len() };
                let value = String::from_utf8(v[..cut].to_vec()).expect("ascii");
                inbound_request(&[
                    ("x-envoy-peer-metadata-id", &format!("peer-{i}")),
                    ("x-envoy-peer-metadata", &value),
                ])
            })
            .collect();
        let r = run(json!({
            "plugins": plugins(json!({})),
            "node": node(REVIEWS_ID, common::reviews_metadata()),
            "direction": "inbound",
            "streams": streams
        }));
        assert_clean(&r);
        for s in &r.streams {
            assert!(upstream_headers(s).iter().all(|(k, _)| !k.starts_with("x-envoy-peer")));
        }
        let taken: i64 = ["metadata_added", "malformed_base64", "malformed_protobuf"]
            .iter()
            .map(|c| counter(&r, &format!("metadata_exchange.{c}")))
            .sum();
        assert_eq!(taken, 300, "every value either taken or counted as malformed");
    }
}
