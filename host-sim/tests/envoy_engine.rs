//! The envoy engine against a real Envoy (docs/envoy-engine.md).
//!
//! Needs the `envoy` binary (`scripts/install-envoy.sh`, or
//! `$MESHWASM_ENVOY`) and the noop plugin
//! (`cargo build --target wasm32-wasip1 --release -p noop`). Without them
//! the tests print why and pass, unless `CI` is set: then they fail.
//! The other plugin here is a small proxy-wasm module written in WAT, so the
//! tests do not depend on any other plugin crate.

use host_sim::envoy::{self, EnvoyOptions};
use host_sim::result::header;
use host_sim::{RunResult, Scenario};
use std::path::{Path, PathBuf};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The Envoy binary, or `None` (after saying why) when the tests should
/// skip.
fn envoy_binary() -> Option<PathBuf> {
    match envoy::find_envoy(None) {
        Some(p) if p.is_file() => Some(p),
        other => {
            let msg = format!("no Envoy binary ({other:?}); run scripts/install-envoy.sh or set MESHWASM_ENVOY");
            assert!(!in_ci(), "{msg}");
            eprintln!("SKIP: {msg}");
            None
        }
    }
}

/// A plugin crate's release .wasm, or `None` (after saying why) when the
/// tests should skip.
fn built_wasm(crate_name: &str) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join(format!("wasm32-wasip1/release/{crate_name}.wasm"));
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("{} is missing: cargo build --target wasm32-wasip1 --release -p {crate_name}", p.display());
    assert!(!in_ci(), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

fn noop_wasm() -> Option<PathBuf> {
    built_wasm("noop")
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshwasm-envoy-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(scenario: serde_json::Value) -> RunResult {
    let s = Scenario::from_json(&scenario.to_string()).unwrap();
    let opts = EnvoyOptions { envoy_binary: envoy_binary(), ..Default::default() };
    envoy::run(&s, &opts).unwrap_or_else(|e| panic!("envoy engine failed: {e:#}"))
}

/// A proxy-wasm plugin (ABI 0.2.1) in WAT. Its plugin configuration's
/// length picks what it does: 4 bytes (`deny`): answer 403 itself;
/// 6 (`reject`): refuse the configuration; 7 (`callout`): call cluster
/// `callee` and continue when the answer comes; else pass. It counts
/// requests in `probe_requests_total`, logs at info, and logs the peer
/// certificate's URI SAN when there is one.
const PROBE_WAT: &str = r#"
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $metric (mut i32) (i32.const 0))
  (global $mode (mut i32) (i32.const 0))
  (global $waiting (mut i32) (i32.const 0))
  (data (i32.const 1024) "configured")
  (data (i32.const 1100) "probe_requests_total")
  (data (i32.const 1200) "denied by probe")
  (data (i32.const 1300) "request headers")
  (data (i32.const 1400) "probe_denied")
  (data (i32.const 1500) "connection\00uri_san_peer_certificate")
  (data (i32.const 1600) "callee")
  (data (i32.const 1700) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\06\00\00\00:method\00GET\00:path\00/check\00:authority\00callee\00")
  (data (i32.const 1800) "call answered")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (if (i32.eq (local.get $size) (i32.const 6)) (then (return (i32.const 0))))
    (global.set $mode (local.get $size))
    (drop (call $define (i32.const 0) (i32.const 1100) (i32.const 20) (i32.const 2000)))
    (global.set $metric (i32.load (i32.const 2000)))
    (drop (call $log (i32.const 2) (i32.const 1024) (i32.const 10)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $inc (global.get $metric) (i64.const 1)))
    (drop (call $log (i32.const 2) (i32.const 1300) (i32.const 15)))
    (if (i32.eqz (call $prop (i32.const 1500) (i32.const 35) (i32.const 2004) (i32.const 2008)))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 2004)) (i32.load (i32.const 2008))))))
    (if (i32.eq (global.get $mode) (i32.const 4))
      (then
        (drop (call $reply (i32.const 403) (i32.const 1400) (i32.const 12) (i32.const 1200) (i32.const 15)
                           (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (if (i32.eq (global.get $mode) (i32.const 7))
      (then
        (if (i32.eqz (call $call (i32.const 1600) (i32.const 6) (i32.const 1700) (i32.const 71)
                                 (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                                 (i32.const 2500) (i32.const 2012)))
          (then
            (global.set $waiting (local.get $ctx))
            (return (i32.const 1))))))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param $ctx i32) (param $token i32) (param i32 i32 i32)
    (drop (call $log (i32.const 2) (i32.const 1800) (i32.const 13)))
    (drop (call $effective (global.get $waiting)))
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"#;

fn probe_wasm(dir: &Path) -> PathBuf {
    let p = dir.join("probe.wasm");
    std::fs::write(&p, wat::parse_str(PROBE_WAT).unwrap()).unwrap();
    p
}

#[test]
fn noop_plugin_passes_the_request_and_the_response_through() {
    let (Some(_), Some(wasm)) = (envoy_binary(), noop_wasm()) else { return };
    let r = run(serde_json::json!({
        "name": "noop-through-envoy",
        "plugins": [{"wasm": wasm, "configuration": {"context": "http"}}],
        "streams": [{
            "name": "post",
            "request": {
                "headers": [[":method", "POST"], [":path", "/api?x=1"], [":authority", "svc.local"],
                            ["x-first", "1"], ["x-dup", "a"], ["x-dup", "b"]],
                "body": "hello envoy"
            },
            "upstream": {"status": 201, "headers": [["x-from-upstream", "yes"]], "body": "created"}
        }]
    }));
    assert_eq!(r.engine, "envoy");
    assert!(r.plugins[0].configured && r.plugins[0].vm_started, "{:?}", r.plugins);
    let s = &r.streams[0];
    let up = s.upstream_request.as_ref().expect("the upstream saw the request");
    assert_eq!(header(&up.headers, ":method"), Some("POST"));
    assert_eq!(header(&up.headers, ":path"), Some("/api?x=1"));
    assert_eq!(header(&up.headers, ":authority"), Some("svc.local"));
    assert_eq!(up.body, "hello envoy");
    let dups: Vec<_> = up.headers.iter().filter(|(k, _)| k == "x-dup").map(|(_, v)| v.as_str()).collect();
    assert_eq!(dups, vec!["a", "b"], "repeated headers keep their order");
    assert!(header(&up.headers, "x-request-id").is_some(), "Envoy adds a request id");
    assert_eq!(header(&up.headers, "x-forwarded-proto"), Some("http"));
    let down = s.downstream_response.as_ref().expect("the client got an answer");
    assert_eq!(down.status, 201);
    assert_eq!(down.body, "created");
    assert_eq!(header(&down.headers, "x-from-upstream"), Some("yes"));
    assert_eq!(header(&down.headers, "server"), Some("envoy"));
    assert!(s.local_reply.is_none() && !s.reset && s.plugin_failure.is_none(), "{s:?}");
    assert!(r.prometheus.lines().all(|l| !l.starts_with("envoy_")), "Envoy's own stats are left out");
}

#[test]
fn a_bad_wasm_file_is_reported_with_envoys_message() {
    if envoy_binary().is_none() {
        return;
    }
    let dir = workdir("bad-wasm");
    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"this is not wasm").unwrap();
    let r = run(serde_json::json!({
        "plugins": [{"wasm": bad, "name": "broken"}],
        "streams": [{"request": {"headers": [[":path", "/"], [":authority", "a"]]}}]
    }));
    let p = &r.plugins[0];
    assert!(!p.configured && !p.vm_started, "{p:?}");
    let err = p.error.as_deref().unwrap_or_default();
    assert!(err.contains("Unable to create Wasm plugin broken"), "{err}");
    assert!(err.contains("Failed to"), "Envoy's reason is kept: {err}");
    assert!(r.streams.is_empty(), "Envoy exited at start-up: no stream ran");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_rejected_configuration_is_reported_with_envoys_message() {
    if envoy_binary().is_none() {
        return;
    }
    let dir = workdir("reject");
    let r = run(serde_json::json!({
        "plugins": [{"wasm": probe_wasm(&dir), "name": "probe", "configuration": "reject"}],
        "streams": []
    }));
    let p = &r.plugins[0];
    assert!(!p.configured && p.vm_started, "{p:?}");
    let err = p.error.as_deref().unwrap_or_default();
    assert!(err.contains("Failed to configure"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn local_replies_logs_and_metrics_of_a_plugin() {
    if envoy_binary().is_none() {
        return;
    }
    let dir = workdir("deny");
    let r = run(serde_json::json!({
        "plugins": [{"wasm": probe_wasm(&dir), "name": "probe", "root_id": "probe_root", "configuration": "deny"}],
        "stats_tags": [],
        "streams": [
            {"name": "one", "request": {"headers": [[":path", "/a"], [":authority", "a"]]}},
            {"name": "two", "request": {"headers": [[":path", "/b"], [":authority", "a"]]}}
        ]
    }));
    assert!(r.plugins[0].configured, "{:?}", r.plugins);
    for s in &r.streams {
        assert!(s.upstream_request.is_none(), "{s:?}");
        let lr = s.local_reply.as_ref().expect("a local reply");
        assert_eq!((lr.plugin.as_str(), lr.status, lr.details.as_str()), ("probe", 403, "probe_denied"));
        assert_eq!(lr.body, "denied by probe");
        let d = s.downstream_response.as_ref().unwrap();
        assert_eq!((d.status, d.body.as_str()), (403, "denied by probe"));
        let msgs: Vec<_> = s.logs.iter().map(|l| (l.plugin.as_str(), l.message.as_str())).collect();
        assert_eq!(msgs, vec![("probe", "request headers")], "{:?}", s.logs);
    }
    assert!(r.logs.iter().any(|l| l.plugin == "probe" && l.message == "configured"), "{:?}", r.logs);
    let m = r.metrics.iter().find(|m| m.name == "probe_requests_total").expect("the plugin's counter");
    assert_eq!(m.value, 2);
    assert!(r.prometheus.lines().any(|l| l == "probe_requests_total{} 2"), "{}", r.prometheus);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn http_calls_reach_the_cluster_and_mtls_peers_carry_their_sans() {
    if envoy_binary().is_none() {
        return;
    }
    let dir = workdir("callout");
    let spiffe = "spiffe://cluster.local/ns/default/sa/client";
    let r = run(serde_json::json!({
        "plugins": [{"wasm": probe_wasm(&dir), "name": "probe", "configuration": "callout"}],
        "clusters": ["callee"],
        "connection": {"mtls": true, "peer_certificate": {"uri_sans": [spiffe], "subject": "CN=client,O=example"}},
        "streams": [{
            "request": {"headers": [[":path", "/x"], [":authority", "a"]]},
            "http_calls": [{"status": 204, "delay_ms": 50}],
            "upstream": {"body": "after the call"}
        }]
    }));
    let s = &r.streams[0];
    assert_eq!(s.http_calls.len(), 1, "{s:?}");
    let c = &s.http_calls[0];
    assert_eq!(
        (c.plugin.as_str(), c.cluster.as_str(), c.timeout_ms, c.response_status),
        ("probe", "callee", 2500, Some(204))
    );
    assert_eq!(header(&c.headers, ":path"), Some("/check"));
    assert_eq!(s.downstream_response.as_ref().map(|d| d.body.as_str()), Some("after the call"));
    let msgs: Vec<_> = s.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(msgs.contains(&spiffe), "the plugin read the peer's URI SAN: {msgs:?}");
    assert!(msgs.contains(&"call answered"), "{msgs:?}");
    let xfcc = header(&s.upstream_request.as_ref().unwrap().headers, "x-forwarded-client-cert").unwrap_or_default();
    assert!(xfcc.contains(&format!("URI={spiffe}")), "{xfcc}");
    assert!(xfcc.contains("Subject=\"CN=client,O=example\""), "{xfcc}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tcp_connections_pass_through_a_network_plugin_and_tcp_proxy() {
    // The probe test plugin (tests/plugins/probe) as a network filter that
    // logs every callback.
    let (Some(_), Some(wasm)) = (envoy_binary(), built_wasm("probe")) else { return };
    let r = run(serde_json::json!({
        "plugins": [{"wasm": wasm, "type": "network",
                     "configuration": {"context": "network", "lifecycle": true}}],
        "connections": [{
            "name": "echo",
            "events": [{"downstream": "ping"}, {"upstream": "pong"}, {"close": "downstream"}, {"close": "upstream"}]
        }]
    }));
    assert!(r.plugins[0].configured, "{:?}", r.plugins);
    assert_eq!(r.connections.len(), 1);
    let c = &r.connections[0];
    assert!(c.upstream_connected, "{c:?}");
    assert_eq!(c.upstream_received, "ping");
    assert_eq!(c.downstream_received, "pong");
    assert!(c.plugin_failure.is_none(), "{c:?}");
    let lifecycle: Vec<&str> = c.logs.iter().filter_map(|l| l.message.strip_prefix("lifecycle ")).collect();
    for want in ["new_connection", "downstream_data size=4 eos=false", "upstream_data size=4 eos=false", "log"] {
        assert!(lifecycle.contains(&want), "{want} missing from {lifecycle:?}");
    }
    let at = |what: &str| lifecycle.iter().position(|l| *l == what).unwrap();
    assert!(at("new_connection") < at("downstream_data size=4 eos=false"), "{lifecycle:?}");
    assert!(at("downstream_data size=4 eos=false") < at("upstream_data size=4 eos=false"), "{lifecycle:?}");
    assert!(r.streams.is_empty());
}
