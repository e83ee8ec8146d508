//! Two proxies in a chain on host-sim (scenario `server_proxy`): what the
//! client proxy's plugins add reaches the server proxy's plugins, what the
//! server proxy answers reaches the client proxy's plugins, and each proxy
//! keeps its own node, direction, logs and metrics. Uses the probe plugin
//! (`cargo build --target wasm32-wasip1 --release -p probe`).

use host_sim::result::{header, RunResult};
use host_sim::Scenario;
use std::path::{Path, PathBuf};

fn probe_wasm() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("wasm32-wasip1/release/probe.wasm");
    assert!(p.is_file(), "{} is missing: cargo build --target wasm32-wasip1 --release -p probe", p.display());
    p
}

fn probe(name: &str, header: &str, actions: &[&str]) -> serde_json::Value {
    serde_json::json!({"name": name, "wasm": probe_wasm(), "root_id": "probe",
        "configuration": {"name": name, "header": header, "actions": actions}})
}

fn run(body: serde_json::Value) -> RunResult {
    let s = Scenario::from_json(&body.to_string()).unwrap();
    host_sim::run(&s).unwrap()
}

fn messages(r: &RunResult, stream: usize) -> Vec<String> {
    r.streams[stream].logs.iter().map(|l| format!("{}: {}", l.plugin, l.message)).collect()
}

#[test]
fn headers_cross_the_hop_both_ways_and_each_proxy_keeps_its_own_facts() {
    let r = run(serde_json::json!({
        "direction": "outbound",
        "node": {"id": "client-node"},
        "plugins": [probe("client", "x-probe-client", &[
            "req_add=x-from-client:c1", "prop=xds/node/id", "prop=xds/listener_direction:i64",
            "resp_get=x-from-server", "count=client_requests"])],
        "server_proxy": {
            "node": {"id": "server-node"},
            "workers": 2,
            "plugins": [probe("server", "x-probe-server", &[
                "req_get=x-from-client", "req_get=x-envoy-expected-rq-timeout-ms", "prop=xds/node/id",
                "prop=xds/listener_direction:i64", "resp_add=x-from-server:s1", "count=server_requests"])]
        },
        "streams": [
            {"request": {"headers": [[":method", "GET"], [":path", "/a"], [":authority", "svc"]]},
             "upstream": {"status": 200, "body": "hello", "delay_ms": 7}},
            {"request": {"headers": [[":method", "GET"], [":path", "/b"], [":authority", "svc"],
                ["x-probe-server", "reply=403:no"]]}}
        ],
        "expect": [{"log_contains": "req_get x-from-client=c1", "server_proxy": true},
                   {"log_contains": "req_get x-from-client=c1"}]
    }));
    let server = r.server_proxy.as_deref().expect("the server proxy's result");
    // The client's plugin added the header; the server's plugin saw it,
    // and so did the upstream behind the server.
    assert!(messages(server, 0).contains(&"server: req_get x-from-client=c1".to_string()), "{:?}", messages(server, 0));
    let client_sent = r.streams[0].upstream_request.as_ref().unwrap();
    assert_eq!(header(&client_sent.headers, "x-from-client"), Some("c1"));
    let reached = server.streams[0].upstream_request.as_ref().unwrap();
    assert_eq!(header(&reached.headers, "x-from-client"), Some("c1"));
    // The client's router timeout header does not reach the server's
    // plugins; the server's router sets its own, once.
    assert!(messages(server, 0).contains(&"server: req_get x-envoy-expected-rq-timeout-ms=<none>".to_string()));
    assert_eq!(reached.headers.iter().filter(|(k, _)| k == "x-envoy-expected-rq-timeout-ms").count(), 1);
    assert_eq!(header(&reached.headers, "x-request-id"), header(&client_sent.headers, "x-request-id"));
    // The server's plugin added a response header; the client's plugin saw it.
    assert!(messages(&r, 0).contains(&"client: resp_get x-from-server=s1".to_string()), "{:?}", messages(&r, 0));
    let got = r.streams[0].downstream_response.as_ref().unwrap();
    assert_eq!((got.status, got.body.as_str()), (200, "hello"));
    assert_eq!(header(&got.headers, "x-from-server"), Some("s1"));
    // The upstream's delay is the client's upstream service time too.
    assert_eq!(header(&got.headers, "x-envoy-upstream-service-time"), Some("7"));
    // Each proxy has its own node and direction.
    assert!(messages(&r, 0).contains(&"client: prop xds/node/id=client-node".to_string()));
    assert!(messages(&r, 0).contains(&"client: prop xds/listener_direction=2".to_string()));
    assert!(messages(server, 0).contains(&"server: prop xds/node/id=server-node".to_string()));
    assert!(messages(server, 0).contains(&"server: prop xds/listener_direction=1".to_string()));
    // The server proxy's local reply is the client's upstream response.
    let denied = r.streams[1].downstream_response.as_ref().unwrap();
    assert_eq!((denied.status, denied.body.as_str()), (403, "no"));
    assert!(r.streams[1].local_reply.is_none());
    assert_eq!(server.streams[1].local_reply.as_ref().map(|l| l.status), Some(403));
    assert!(server.streams[1].upstream_request.is_none());
    // Metrics stay with their proxy.
    assert!(r.prometheus.contains("client_requests{} 2") && !r.prometheus.contains("server_requests"));
    assert!(server.prometheus.contains("server_requests{} 2") && !server.prometheus.contains("client_requests"));
    // Expectations address either proxy.
    let passed: Vec<bool> = r.expectations.iter().map(|e| e.passed).collect();
    assert_eq!(passed, [true, false]);
}

#[test]
fn a_single_proxy_result_has_no_server_proxy() {
    let r = run(serde_json::json!({
        "plugins": [probe("only", "x-probe", &["count=n"])],
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}}],
        "expect": [{"log_contains": "count", "server_proxy": true}]
    }));
    assert!(r.server_proxy.is_none());
    assert!(!serde_json::to_string(&r).unwrap().contains("server_proxy\":{"));
    assert!(!r.expectations[0].passed, "a server_proxy expectation without a server proxy fails");
}

#[test]
fn a_stream_the_client_proxy_answers_leaves_an_empty_entry_on_the_server() {
    let r = run(serde_json::json!({
        "direction": "outbound",
        "plugins": [probe("client", "x-probe-client", &[])],
        "server_proxy": {"plugins": [probe("server", "x-probe-server", &["count=seen"])]},
        "streams": [
            {"name": "local", "request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"],
                ["x-probe-client", "reply=401:no"]]}},
            {"name": "through", "request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]}}
        ]
    }));
    let server = r.server_proxy.as_deref().unwrap();
    assert_eq!(r.streams[0].downstream_response.as_ref().map(|d| d.status), Some(401));
    let names: Vec<&str> = server.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["local", "through"]);
    assert!(server.streams[0].upstream_request.is_none() && server.streams[0].logs.is_empty());
    assert!(server.streams[1].upstream_request.is_some());
    assert!(server.prometheus.contains("seen{} 1"), "{}", server.prometheus);
}

#[test]
fn a_reset_on_the_server_proxy_is_the_client_routers_503() {
    let r = run(serde_json::json!({
        "direction": "outbound",
        "plugins": [probe("client", "x-probe-client", &["resp_get=content-type"])],
        "server_proxy": {"plugins": [probe("server", "x-probe-server", &[])]},
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"],
            ["x-probe-server", "close"]]}}]
    }));
    let got = r.streams[0].downstream_response.as_ref().expect("the router's reply");
    assert_eq!(got.status, 503);
    assert!(got.body.ends_with("reset reason: connection termination"), "{}", got.body);
    assert!(r.streams[0].local_reply.is_none() && !r.streams[0].reset);
    // The reply went through the client plugin's response hooks.
    assert!(messages(&r, 0).contains(&"client: resp_get content-type=text/plain".to_string()), "{:?}", messages(&r, 0));
    assert!(header(&got.headers, "x-envoy-upstream-service-time").is_none());
    assert!(r.server_proxy.as_deref().unwrap().streams[0].reset);
}

#[test]
fn tcp_bytes_and_fins_cross_both_proxies_in_order() {
    let net = |name: &str| {
        serde_json::json!({"name": name, "wasm": probe_wasm(), "type": "network", "root_id": "probe",
            "configuration": {"context": "network", "lifecycle": true, "name": name}})
    };
    let r = run(serde_json::json!({
        "direction": "outbound",
        "plugins": [net("client-net")],
        "server_proxy": {"plugins": [net("server-net")]},
        "connections": [
            {"name": "echo", "events": [{"downstream": "ping"}, {"upstream": "pong"}, {"close": "downstream"}, {"close": "upstream"}]},
            {"name": "reset", "events": [{"downstream": "abc"}, {"upstream": "de"}, {"reset": "downstream"}]}
        ]
    }));
    let server = r.server_proxy.as_deref().unwrap();
    let c = &r.connections[0];
    let s = &server.connections[0];
    // The client proxy's upstream is the server proxy's client.
    assert_eq!((c.upstream_received.as_str(), c.downstream_received.as_str()), ("ping", "pong"));
    assert_eq!((s.upstream_received.as_str(), s.downstream_received.as_str()), ("ping", "pong"));
    let lines = |c: &host_sim::result::ConnectionResult| c.logs.iter().map(|l| l.message.clone()).collect::<Vec<_>>();
    assert!(lines(s).contains(&"lifecycle downstream_data size=0 eos=true".to_string()), "{:?}", lines(s));
    assert!(lines(c).contains(&"lifecycle upstream_data size=0 eos=true".to_string()), "{:?}", lines(c));
    // A reset at the client proxy reaches the server proxy as a FIN; the
    // server proxy closes once its upstream has (observed in Envoy 1.40).
    let s = lines(&server.connections[1]);
    assert!(s.contains(&"lifecycle downstream_data size=0 eos=true".to_string()), "{s:?}");
    assert!(s.contains(&"lifecycle downstream_close peer=Local".to_string()), "{s:?}");
    assert!(lines(&r.connections[1]).contains(&"lifecycle downstream_close peer=Remote".to_string()));
}
