//! Two Envoys whose hop is mutual TLS (`server_proxy.mtls`), in real Envoy:
//! the server proxy's plugins see the client proxy's identity, SNI and
//! mTLS; the client proxy's plugins see the server's certificate on the
//! upstream; an HTTP stream and a TCP connection cross both proxies intact.
//!
//! Needs the `envoy` binary (`scripts/install-envoy.sh`, or
//! `$MESHWASM_ENVOY`) and the probe plugin
//! (`cargo build --target wasm32-wasip1 --release -p probe`). Without them
//! the test prints why and passes, unless `CI` is set: then it fails.

use host_sim::envoy::{self, EnvoyOptions};
use host_sim::{RunResult, Scenario};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn skip(msg: String) -> Option<PathBuf> {
    assert!(!in_ci(), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

fn envoy_binary() -> Option<PathBuf> {
    match envoy::find_envoy(None) {
        Some(p) if p.is_file() => Some(p),
        other => skip(format!("no Envoy binary ({other:?}); run scripts/install-envoy.sh or set MESHWASM_ENVOY")),
    }
}

fn probe_wasm() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("wasm32-wasip1/release/probe.wasm");
    if p.is_file() {
        return Some(p);
    }
    skip(format!("{} is missing: cargo build --target wasm32-wasip1 --release -p probe", p.display()))
}

/// A probe that logs each property at each phase (`prop=<property>@<phase>`).
fn probe(wasm: &Path, name: &str, network: bool, props: &[&str], phases: &[&str]) -> Value {
    let actions: Vec<String> =
        phases.iter().flat_map(|ph| props.iter().map(move |p| format!("prop={p}@{ph}"))).collect();
    let mut config = json!({"name": name, "actions": actions, "lifecycle": true});
    let mut plugin = json!({"name": name, "wasm": wasm, "root_id": "probe"});
    if network {
        config["context"] = json!("network");
        plugin["type"] = json!("network");
    }
    plugin["configuration"] = config;
    plugin
}

/// The log lines of one plugin, from a stream's or connection's logs.
fn lines(logs: &Value, plugin: &str) -> Vec<String> {
    logs.as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["plugin"] == plugin)
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect()
}

/// What `prop <property>=` logged right after the `lifecycle <phase>` line.
fn after(lines: &[String], phase: &str, property: &str) -> Option<String> {
    let start = lines.iter().position(|l| l.starts_with(&format!("lifecycle {phase}")))?;
    let prefix = format!("prop {property}=");
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("lifecycle "))
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

#[test]
fn an_mtls_hop_carries_identities_sni_and_bytes_between_two_envoys() {
    let (Some(binary), Some(wasm)) = (envoy_binary(), probe_wasm()) else { return };
    let upstream_props = [
        "upstream.uri_san_peer_certificate",
        "upstream.uri_san_local_certificate",
        "upstream.tls_version",
        "upstream.subject_peer_certificate",
        "upstream.dns_san_peer_certificate",
        "upstream.sha256_peer_certificate_digest",
    ];
    let server_props = [
        "connection.mtls:bool",
        "connection.uri_san_peer_certificate",
        "connection.uri_san_local_certificate",
        "connection.requested_server_name",
    ];
    let scenario = json!({
        "name": "two proxies over mTLS",
        "direction": "outbound",
        "plugins": [
            probe(&wasm, "client-http", false, &upstream_props, &["reqh", "resph", "log"]),
            probe(&wasm, "client-net", true, &upstream_props, &["conn", "down", "up", "dclose", "uclose", "log"]),
        ],
        "server_proxy": {
            "plugins": [
                probe(&wasm, "server-http", false, &server_props, &["reqh"]),
                probe(&wasm, "server-net", true, &server_props, &["down"]),
            ],
            "mtls": {
                "client_certificate": {"uri_sans": [CLIENT_ID]},
                "server_certificate": {"uri_sans": [SERVER_ID], "dns_sans": ["server.default.svc"],
                                       "subject": "CN=server,O=example"},
                "sni": "server.com",
                "alpn": ["istio-peer-exchange"]
            }
        },
        "streams": [{
            "name": "post",
            "request": {"headers": [[":method", "POST"], [":path", "/a"], [":authority", "svc"]], "body": "hello"},
            "upstream": {"status": 200, "body": "world"}
        }],
        "connections": [{
            "name": "echo",
            "events": [{"downstream": "ping"}, {"upstream": "pong"}, {"close": "downstream"}, {"close": "upstream"}]
        }],
        "expect": [
            {"pointer": "/streams/0/downstream_response/status", "equals": 200},
            {"pointer": "/streams/0/downstream_response/body", "equals": "world"},
            {"pointer": "/streams/0/upstream_request/body", "equals": "hello"},
            {"pointer": "/server_proxy/streams/0/upstream_request/body", "equals": "hello"},
            {"pointer": "/server_proxy/streams/0/downstream_response/body", "equals": "world"},
            {"pointer": "/connections/0/upstream_received", "equals": "ping"},
            {"pointer": "/connections/0/downstream_received", "equals": "pong"},
            {"pointer": "/server_proxy/connections/0/upstream_received", "equals": "ping"},
            {"pointer": "/server_proxy/connections/0/downstream_received", "equals": "pong"},
            {"log_contains": "prop connection.mtls=true", "server_proxy": true},
            {"log_contains": format!("prop connection.uri_san_peer_certificate={CLIENT_ID}"), "server_proxy": true},
            {"log_contains": format!("prop connection.uri_san_local_certificate={SERVER_ID}"), "server_proxy": true},
            {"log_contains": "prop connection.requested_server_name=server.com", "server_proxy": true}
        ]
    });
    let s = Scenario::from_json(&scenario.to_string()).unwrap();
    let opts = EnvoyOptions { envoy_binary: Some(binary), ..Default::default() };
    let r: RunResult = envoy::run(&s, &opts).unwrap_or_else(|e| panic!("envoy engine failed: {e:#}"));
    let failed: Vec<_> = r.expectations.iter().filter(|e| !e.passed).collect();
    let j = serde_json::to_value(&r).unwrap();
    assert!(failed.is_empty(), "failed expectations: {failed:#?}\n{j:#}");

    // The server proxy saw the client proxy's identity on both listeners.
    let server = &j["server_proxy"];
    let srv_http = lines(&server["streams"][0]["logs"], "server-http");
    assert_eq!(after(&srv_http, "request_headers", "connection.mtls").as_deref(), Some("true"));
    assert_eq!(after(&srv_http, "request_headers", "connection.uri_san_peer_certificate").as_deref(), Some(CLIENT_ID));
    let srv_net = lines(&server["connections"][0]["logs"], "server-net");
    assert_eq!(after(&srv_net, "downstream_data", "connection.uri_san_peer_certificate").as_deref(), Some(CLIENT_ID));
    assert_eq!(after(&srv_net, "downstream_data", "connection.requested_server_name").as_deref(), Some("server.com"));
    // The upstream of the server proxy got the client's identity in XFCC.
    let xfcc = server["streams"][0]["upstream_request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-forwarded-client-cert")
        .and_then(|h| h[1].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(xfcc.contains(&format!("URI={CLIENT_ID}")), "{xfcc}");

    // The client proxy: no upstream before one is picked; then the server's
    // certificate as its peer and its own as local, over TLS 1.2 (Envoy's
    // default maximum as a TLS client).
    let cli_http = lines(&j["streams"][0]["logs"], "client-http");
    let cli_net = lines(&j["connections"][0]["logs"], "client-net");
    assert_eq!(after(&cli_http, "request_headers", "upstream.uri_san_peer_certificate").as_deref(), Some("<missing>"));
    assert_eq!(after(&cli_net, "new_connection", "upstream.uri_san_peer_certificate").as_deref(), Some("<missing>"));
    for (lines, phases) in [(&cli_http, &["response_headers", "log"][..]), (&cli_net, &["upstream_data", "log"][..])] {
        for phase in phases {
            let get = |p: &str| after(lines, phase, p);
            assert_eq!(get("upstream.uri_san_peer_certificate").as_deref(), Some(SERVER_ID), "{phase}: {lines:#?}");
            assert_eq!(get("upstream.uri_san_local_certificate").as_deref(), Some(CLIENT_ID), "{phase}");
            assert_eq!(get("upstream.tls_version").as_deref(), Some("TLSv1.2"), "{phase}");
            assert_eq!(get("upstream.subject_peer_certificate").as_deref(), Some("CN=server,O=example"), "{phase}");
            assert_eq!(get("upstream.dns_san_peer_certificate").as_deref(), Some("server.default.svc"), "{phase}");
            let digest = get("upstream.sha256_peer_certificate_digest").unwrap_or_default();
            assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{phase}: {digest}");
        }
    }
}
