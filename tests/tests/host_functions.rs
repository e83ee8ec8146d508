//! host-sim's host functions, exercised by the `probe` test plugin
//! (tests/plugins/probe, written with the stock proxy-wasm SDK). Each test
//! builds a scenario in code, runs it on host-sim and checks what the plugin
//! observed (its log lines) and what the proxy did (upstream request, local
//! reply, downstream response, http calls, metrics).
//!
//! The plugin must be built first:
//! `cargo build --target wasm32-wasip1 --release` (these tests never build it).
//!
//! Expected values follow docs/research/host-abi-details.md (Envoy's
//! behaviour); the section is cited where it matters.

use host_sim::result::{LogLine, RunResult, StreamResult};
use host_sim::scenario::HeaderList;
use serde_json::{json, Value};
use std::path::Path;

/// host-sim's virtual clock starts at 2026-01-01T00:00:00Z.
const EPOCH_NS: u64 = 1_767_225_600_000_000_000;

mod common;
use common::run;

fn probe_wasm() -> String {
    common::plugin_wasm("probe")
}

/// One probe plugin with a configuration.
fn probe(config: Value) -> Value {
    json!({"wasm": probe_wasm(), "configuration": config})
}

/// A named probe instance reading its own action header `x-probe-<name>`.
fn named_probe(name: &str, extra: Value) -> Value {
    let mut config = json!({"name": name, "header": format!("x-probe-{name}")});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    json!({"name": name, "wasm": probe_wasm(), "root_id": format!("root-{name}"), "configuration": config})
}

/// A GET carrying the probe's action list.
fn request(actions: &str) -> Value {
    json!({"headers": [[":method", "GET"], [":path", "/probe"], [":authority", "svc.local"], ["x-probe", actions]]})
}

fn stream(actions: &str) -> Value {
    json!({"request": request(actions)})
}

fn messages(logs: &[LogLine]) -> Vec<&str> {
    logs.iter().map(|l| l.message.as_str()).collect()
}

/// The rest of the first log line that starts with `prefix`.
fn logged<'a>(logs: &'a [LogLine], prefix: &str) -> &'a str {
    logs.iter()
        .find_map(|l| l.message.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no log line starts with {prefix:?}; logs: {:#?}", messages(logs)))
}

/// Every value of a header, in order.
fn values<'a>(headers: &'a HeaderList, name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

fn one<'a>(headers: &'a HeaderList, name: &str) -> &'a str {
    match values(headers, name).as_slice() {
        [v] => v,
        other => panic!("expected one {name} header, found {other:?} in {headers:?}"),
    }
}

/// `status <probe>=<n>` lines, in order.
fn statuses(logs: &[LogLine]) -> Vec<(String, u32)> {
    logs.iter()
        .filter_map(|l| l.message.strip_prefix("status "))
        .map(|s| {
            let (k, v) = s.rsplit_once('=').expect("status line");
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("status value {v:?}")))
        })
        .collect()
}

/// `lifecycle <event>` lines as (plugin, event name).
fn lifecycle(logs: &[LogLine]) -> Vec<(String, String)> {
    logs.iter()
        .filter_map(|l| {
            let rest = l.message.strip_prefix("lifecycle ")?;
            Some((l.plugin.clone(), rest.split(' ').next().unwrap().to_string()))
        })
        .collect()
}

fn the_stream(r: &RunResult) -> &StreamResult {
    assert_eq!(r.streams.len(), 1, "plugins: {:?}", r.plugins);
    &r.streams[0]
}

// ---------------------------------------------------------------- headers

/// get/add/replace/remove header values, get and set all pairs, map size:
/// proxy_get_header_map_value, proxy_add_header_map_value,
/// proxy_replace_header_map_value, proxy_remove_header_map_value,
/// proxy_get_header_map_pairs, proxy_set_header_map_pairs,
/// proxy_get_header_map_size.
#[test]
fn request_headers_are_read_and_rewritten() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [{"request": {"headers": [
            [":method", "GET"], [":path", "/h"], [":authority", "svc.local"],
            ["x-replace", "old1"], ["x-remove", "gone"], ["x-keep", "kept"], ["x-replace", "old2"],
            ["x-probe", "req_get=x-keep,req_get=x-absent,req_add=x-added:1,req_set=x-replace:new,req_set=x-fresh:f,req_del=x-remove,req_sort,req_pairs,req_size"]
        ]}}]
    }));
    let s = the_stream(&r);
    assert_eq!(logged(&s.logs, "req_get x-keep="), "kept");
    assert_eq!(logged(&s.logs, "req_get x-absent="), "<none>", "a missing header is NotFound, read as None");
    let up = &s.upstream_request.as_ref().expect("reached upstream").headers;
    assert_eq!(values(up, "x-added"), ["1"]);
    assert_eq!(values(up, "x-replace"), ["new"], "replace leaves one value");
    assert_eq!(values(up, "x-fresh"), ["f"], "replace adds a missing header");
    assert!(values(up, "x-remove").is_empty());
    assert_eq!(values(up, "x-keep"), ["kept"]);
    assert_eq!(values(up, "x-probe-sorted").len(), 1);

    // req_sort read every pair and set them back: pseudo-headers first, the
    // rest sorted by name, then x-probe-sorted with the count. req_pairs
    // dumps the map as the plugin then sees it.
    let map: Vec<(&str, &str)> =
        logged(&s.logs, "req_pairs ").split(';').map(|kv| kv.split_once('=').expect("k=v")).collect();
    let (last, sorted) = map.split_last().unwrap();
    assert_eq!(last.0, "x-probe-sorted");
    assert_eq!(last.1, sorted.len().to_string());
    assert_eq!(one(up, "x-probe-sorted"), last.1);
    let pseudo = sorted.iter().take_while(|(k, _)| k.starts_with(':')).count();
    assert_eq!(pseudo, sorted.iter().filter(|(k, _)| k.starts_with(':')).count(), "pseudo-headers first");
    for p in [":method", ":path", ":authority"] {
        assert!(sorted[..pseudo].iter().any(|(k, _)| *k == p), "{p} kept through set_header_map_pairs");
    }
    let names: Vec<&str> = sorted[pseudo..].iter().map(|(k, _)| *k).collect();
    let mut want = names.clone();
    want.sort();
    assert_eq!(names, want);
    for n in ["x-added", "x-fresh", "x-keep", "x-probe", "x-replace", "x-request-id"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(!names.contains(&"x-remove"));

    // proxy_get_header_map_size is Envoy's byteSize(): keys plus values.
    let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert_eq!(logged(&s.logs, "req_size="), bytes.to_string());
}

#[test]
fn response_headers_are_read_and_rewritten() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [{
            "request": request("resp_get=:status,resp_get=x-up,resp_add=x-added:r,resp_set=x-rep:b,resp_del=x-drop,echo=response.code:i64,echo=xds.node.cluster,resp_pairs"),
            "upstream": {"status": 202, "headers": [["x-up", "1"], ["x-drop", "d"], ["x-rep", "a"], ["x-rep", "a2"]]}
        }]
    }));
    let s = the_stream(&r);
    assert_eq!(logged(&s.logs, "resp_get :status="), "202");
    assert_eq!(logged(&s.logs, "resp_get x-up="), "1");
    let pairs = logged(&s.logs, "resp_pairs ");
    assert!(pairs.starts_with(":status=202;"), "{pairs}");
    assert!(!pairs.contains("x-drop"), "removed before resp_pairs ran: {pairs}");
    let down = s.downstream_response.as_ref().expect("answered");
    assert_eq!(down.status, 202);
    assert_eq!(values(&down.headers, "x-added"), ["r"]);
    assert_eq!(values(&down.headers, "x-rep"), ["b"]);
    assert!(values(&down.headers, "x-drop").is_empty());
    assert_eq!(
        one(&down.headers, "x-echo-response-code"),
        "202",
        "response.code read as an int64 in on_response_headers"
    );
    assert_eq!(one(&down.headers, "x-echo-xds-node-cluster"), "app.default", "the default node cluster");
}

#[test]
fn trailers_are_read_and_rewritten_on_both_sides() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [{
            "request": {
                "headers": [[":method", "POST"], [":path", "/t"], [":authority", "svc.local"],
                    ["x-probe", "reqt_pairs,reqt_add=x-rt:2,reqt_set=x-t:replaced,reqt_del=x-gone,reqt_get=x-t,respt_get=grpc-status,respt_add=x-respt:9,respt_del=grpc-message,respt_size"]],
                "body": "b",
                "trailers": [["x-t", "1"], ["x-gone", "z"]]
            },
            "upstream": {"status": 200, "body": "r", "trailers": [["grpc-status", "0"], ["grpc-message", "ok"]]}
        }]
    }));
    let s = the_stream(&r);
    assert_eq!(logged(&s.logs, "reqt_pairs "), "x-t=1;x-gone=z");
    assert_eq!(logged(&s.logs, "reqt_get x-t="), "replaced");
    assert_eq!(logged(&s.logs, "respt_get grpc-status="), "0");
    let up = s.upstream_request.as_ref().unwrap();
    // Replacing removes, then appends (Envoy's setCopy).
    assert_eq!(up.trailers, vec![("x-rt".to_string(), "2".to_string()), ("x-t".to_string(), "replaced".to_string())]);
    assert_eq!(up.body, "b");
    let down = s.downstream_response.as_ref().unwrap();
    assert_eq!(
        down.trailers,
        vec![("grpc-status".to_string(), "0".to_string()), ("x-respt".to_string(), "9".to_string())]
    );
    // Size after the edits: "grpc-status"+"0" + "x-respt"+"9".
    assert_eq!(logged(&s.logs, "respt_size="), (11 + 1 + 7 + 1).to_string());
}

// ----------------------------------------------------------------- bodies

/// Pause until end_of_stream buffers the body; then get_buffer_bytes reads
/// all of it and set_buffer_bytes replaces, appends, prepends
/// (proxy_get_buffer_bytes, proxy_set_buffer_bytes, proxy_get_buffer_status).
#[test]
fn buffered_bodies_are_rewritten() {
    let r = run(json!({
        "plugins": [probe(json!({"lifecycle": true}))],
        "streams": [{
            "request": {
                "headers": [[":method", "POST"], [":path", "/b"], [":authority", "svc.local"],
                    ["x-probe", "req_body,req_body_set=NEW,req_body_append=+tail,req_body_prepend=head+,req_body_status,resp_body,resp_body_set=RESP,resp_body_append=!"]],
                "body_chunks": ["hello ", "world"]
            },
            "upstream": {"status": 200, "body_chunks": ["up", "stream"]}
        }]
    }));
    let s = the_stream(&r);
    let events: Vec<&str> = s.logs.iter().filter_map(|l| l.message.strip_prefix("lifecycle request_body ")).collect();
    // Each chunk without end_of_stream, paused (buffered): the next call
    // sees everything so far; then end_of_stream.
    assert_eq!(events, ["size=6 eos=false", "size=11 eos=false", "size=11 eos=true"]);
    assert_eq!(logged(&s.logs, "req_body len="), "11 body=hello world");
    assert_eq!(logged(&s.logs, "req_body_status "), "len=13 flags=0", "head+NEW+tail; flags are always 0");
    assert_eq!(s.upstream_request.as_ref().unwrap().body, "head+NEW+tail");
    assert_eq!(logged(&s.logs, "resp_body len="), "8 body=upstream");
    assert_eq!(s.downstream_response.as_ref().unwrap().body, "RESP!");
}

/// A filter that buffers (Pause without end_of_stream) and then sees
/// trailers: the buffered body still goes upstream.
#[test]
fn buffered_body_followed_by_trailers_is_not_lost() {
    let r = run(json!({
        "plugins": [named_probe("a", json!({})), named_probe("b", json!({"lifecycle": true}))],
        "streams": [{
            "request": {
                "headers": [[":method", "POST"], [":path", "/b"], [":authority", "svc.local"], ["x-probe-a", "req_body_buffer"]],
                "body_chunks": ["ab", "cd"],
                "trailers": [["x-t", "1"]]
            }
        }]
    }));
    let s = the_stream(&r);
    let up = s.upstream_request.as_ref().unwrap();
    assert_eq!(up.body, "abcd");
    assert_eq!(values(&up.trailers, "x-t"), ["1"]);
    // The next filter saw the data a released, before the trailers.
    let b: Vec<&str> =
        s.logs.iter().filter(|l| l.plugin == "b").filter_map(|l| l.message.strip_prefix("lifecycle ")).collect();
    let body_at = b.iter().position(|e| e.starts_with("request_body size=4")).expect("b saw the body");
    let trailers_at = b.iter().position(|e| e.starts_with("request_trailers")).expect("b saw the trailers");
    assert!(body_at < trailers_at, "{b:?}");
}

// ------------------------------------------------------------- properties

#[test]
fn properties_of_every_family() {
    let actions = [
        "prop=request.path",
        "prop=request.url_path",
        "prop=request.query",
        "prop=request.host",
        "prop=request.method",
        "prop=request.scheme",
        "prop=request.useragent",
        "prop=request.referer",
        "prop=request.id",
        "prop=request.protocol",
        "prop=request.time:i64",
        "prop=request.headers.user-agent",
        "prop=request.headers:pairs",
        "prop=connection.mtls:bool",
        "prop=connection.requested_server_name",
        "prop=connection.tls_version",
        "prop=connection.uri_san_peer_certificate",
        "prop=connection.uri_san_local_certificate",
        "prop=connection.subject_peer_certificate",
        "prop=source.address",
        "prop=source.port:i64",
        "prop=destination.address",
        "prop=destination.port:i64",
        "prop=xds.node.id",
        "prop=xds.node.cluster",
        "prop=xds.node.metadata.MESH_ID",
        "prop=xds.node.metadata.REPLICAS:f64",
        "prop=xds.node:len",
        "prop=xds.cluster_name",
        "prop=xds.listener_direction:i64",
        "prop=plugin_root_id",
        "prop=plugin_name",
        "prop=plugin_vm_id",
        "prop=no_such",
        "prop=response.code:i64@resph",
        "prop=response.headers.x-up@resph",
        "prop=request.path@resph",
        "prop=response.code_details@log",
        "prop=response.size:i64@log",
        "prop=request.size:i64@log",
        "prop=request.duration:i64@log",
        "prop=upstream.address@log",
        "prop=request.path@log",
    ]
    .join(",");
    let r = run(json!({
        "plugins": [{"wasm": probe_wasm(), "root_id": "props-root", "vm_id": "vm-one"}],
        "node": {"id": "node-1", "cluster": "c1", "metadata": {"MESH_ID": "mesh-7", "REPLICAS": 3}},
        "direction": "outbound",
        "connection": {
            "mtls": true,
            "peer_certificate": {"uri_sans": ["spiffe://cluster.local/ns/default/sa/client"], "subject": "CN=client"},
            "local_certificate": {"uri_sans": ["spiffe://cluster.local/ns/default/sa/server"]},
            "requested_server_name": "svc.local"
        },
        "streams": [{
            "request": {"headers": [[":method", "POST"], [":path", "/p/q?x=1&y=2"], [":authority", "svc.local"], [":scheme", "https"],
                ["user-agent", "probe-agent"], ["referer", "http://ref"], ["x-request-id", "rid-1"], ["x-probe", actions]],
                "body": "12345"},
            "upstream": {"status": 201, "headers": [["x-up", "yes"]], "body": "abcdef", "delay_ms": 7}
        }]
    }));
    let s = the_stream(&r);
    let prop = |p: &str| logged(&s.logs, &format!("prop {p}=")).to_string();
    // Each property is read once per phase; `logged` finds the first.
    assert_eq!(prop("request.path"), "/p/q?x=1&y=2");
    assert_eq!(prop("request.url_path"), "/p/q");
    assert_eq!(prop("request.query"), "x=1&y=2");
    assert_eq!(prop("request.host"), "svc.local");
    assert_eq!(prop("request.method"), "POST");
    assert_eq!(prop("request.scheme"), "https");
    assert_eq!(prop("request.useragent"), "probe-agent");
    assert_eq!(prop("request.referer"), "http://ref");
    assert_eq!(prop("request.id"), "rid-1");
    assert_eq!(prop("request.protocol"), "HTTP/1.1");
    assert_eq!(prop("request.time"), EPOCH_NS.to_string());
    assert_eq!(prop("request.headers.user-agent"), "probe-agent");
    assert!(prop("request.headers").contains(":method=POST;"), "a string map, pairs-encoded");
    assert_eq!(prop("connection.mtls"), "true");
    assert_eq!(prop("connection.requested_server_name"), "svc.local");
    assert_eq!(prop("connection.tls_version"), "TLSv1.3");
    assert_eq!(prop("connection.uri_san_peer_certificate"), "spiffe://cluster.local/ns/default/sa/client");
    assert_eq!(prop("connection.uri_san_local_certificate"), "spiffe://cluster.local/ns/default/sa/server");
    assert_eq!(prop("connection.subject_peer_certificate"), "CN=client");
    let (ip, port) = prop("source.address").rsplit_once(':').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    assert_eq!(ip, "127.0.0.1");
    assert_eq!(prop("source.port"), port);
    assert_eq!(prop("destination.address"), format!("127.0.0.1:{}", prop("destination.port")));
    assert_eq!(prop("xds.node.id"), "node-1");
    assert_eq!(prop("xds.node.cluster"), "c1");
    assert_eq!(prop("xds.node.metadata.MESH_ID"), "mesh-7");
    assert_eq!(prop("xds.node.metadata.REPLICAS"), "3", "Struct numbers are doubles");
    assert!(prop("xds.node").starts_with("len="), "the serialized Node proto");
    assert_ne!(prop("xds.node"), "len=0");
    assert_eq!(prop("xds.cluster_name"), "upstream");
    assert_eq!(prop("xds.listener_direction"), "2", "outbound");
    assert_eq!(prop("plugin_root_id"), "props-root");
    assert_eq!(prop("plugin_name"), "probe");
    assert_eq!(prop("plugin_vm_id"), "vm-one");
    assert_eq!(prop("no_such"), "<missing>", "NotFound");

    // In on_response_headers the request headers are gone (NotFound).
    let in_response: Vec<&str> = s.logs.iter().filter_map(|l| l.message.strip_prefix("prop request.path=")).collect();
    assert_eq!(
        in_response,
        ["/p/q?x=1&y=2", "<missing>", "/p/q?x=1&y=2"],
        "request headers, response headers, access log"
    );
    assert_eq!(prop("response.code"), "201");
    assert_eq!(prop("response.headers.x-up"), "yes");
    // Access-log phase.
    assert_eq!(prop("response.code_details"), "via_upstream");
    assert_eq!(prop("response.size"), "6");
    assert_eq!(prop("request.size"), "5");
    assert_eq!(prop("request.duration"), (7 * 1_000_000).to_string(), "the upstream's 7 ms");
    assert!(prop("upstream.address").starts_with("127.0.0.1:"));
}

/// Root-context properties and statuses, read in on_configure; the
/// configuration runs in the canary VM and then in every thread's VM.
#[test]
fn root_context_properties_and_statuses() {
    let r = run(json!({
        "plugins": [{"wasm": probe_wasm(), "root_id": "root-x", "vm_configuration": {"queue": "q-root"},
            "configuration": {"root_props": ["plugin_root_id", "xds.node.id", "request.path"], "root_statuses": true}}],
        "workers": 2,
        "streams": []
    }));
    assert!(r.plugins[0].configured, "{:?}", r.plugins[0]);
    let configures = r.logs.iter().filter(|l| l.message.starts_with("configure size=")).count();
    assert_eq!(configures, 1 + 1 + 2, "canary, main thread, two workers");
    // proxy_get_buffer_bytes(VmConfiguration) in on_vm_start.
    let vm_config = json!({"queue": "q-root"}).to_string();
    assert!(logged(&r.logs, "vm_start ").starts_with(&format!("vm_config_size={} queue q-root=", vm_config.len())));
    assert_eq!(logged(&r.logs, "root_prop plugin_root_id="), "root-x");
    assert_eq!(logged(&r.logs, "root_prop xds.node.id="), "sidecar~127.0.0.1~app.default~default.svc.cluster.local");
    assert_eq!(logged(&r.logs, "root_prop request.path="), "<missing>", "no stream in a root context");
    let got: Vec<(String, u32)> = statuses(&r.logs).into_iter().take(7).collect();
    let want = [
        ("root_set_property", 1),             // no stream info: NotFound
        ("root_get_request_header", 2),       // no map: BadArgument
        ("root_get_plugin_configuration", 0), // readable inside on_configure
        ("root_get_call_response_body", 1),   // only inside on_http_call_response
        ("root_set_request_body", 2),         // an empty body slot: BadArgument
        ("root_send_local_response", 0),      // always Ok
        ("root_continue_stream_upstream", 12),
    ];
    assert_eq!(got, want.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>());
}

// ----------------------------------------------------------- filter chain

/// set_property in one filter is read with get_property by the next
/// (filter state `wasm.<name>`, also under `filter_state`).
#[test]
fn filter_state_is_shared_along_the_chain() {
    let r = run(json!({
        "plugins": [named_probe("a", json!({})), named_probe("b", json!({}))],
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/c"], [":authority", "svc.local"],
            ["x-probe-a", "setprop=from_a:hello,prop=from_b,prop=from_b@log,prop=plugin_root_id"],
            ["x-probe-b", "prop=from_a,prop=filter_state/wasm.from_a,setprop=from_b:world,prop=plugin_root_id,prop=plugin_name"]]}}]
    }));
    let s = the_stream(&r);
    let by = |plugin: &str, prefix: &str| -> Vec<String> {
        s.logs
            .iter()
            .filter(|l| l.plugin == plugin)
            .filter_map(|l| l.message.strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(by("a", "setprop "), ["from_a=hello"]);
    assert_eq!(by("b", "prop from_a="), ["hello"]);
    assert_eq!(by("b", "prop filter_state/wasm.from_a="), ["hello"]);
    // a's request headers run before b set it; a's access log after.
    assert_eq!(by("a", "prop from_b="), ["<missing>", "world"]);
    assert_eq!(by("a", "prop plugin_root_id="), ["root-a"]);
    assert_eq!(by("b", "prop plugin_root_id="), ["root-b"]);
    assert_eq!(by("b", "prop plugin_name="), ["b"]);
}

/// Envoy's order: request hooks in chain order, response hooks in reverse,
/// then on_log for every filter, then on_done + on_delete per filter
/// (host-abi-details §5).
#[test]
fn lifecycle_order_of_a_chain() {
    let lc = json!({"lifecycle": true});
    let r = run(json!({
        "plugins": [named_probe("a", lc.clone()), named_probe("b", lc)],
        "streams": [{"request": {"headers": [[":method", "POST"], [":path", "/l"], [":authority", "svc.local"]], "body": "x"}}]
    }));
    let got = lifecycle(&the_stream(&r).logs);
    let want = [
        ("a", "create"),
        ("a", "request_headers"),
        ("b", "create"),
        ("b", "request_headers"),
        // The chunk, then an empty chunk with end_of_stream (HTTP/1).
        ("a", "request_body"),
        ("b", "request_body"),
        ("a", "request_body"),
        ("b", "request_body"),
        ("b", "response_headers"),
        ("a", "response_headers"),
        ("a", "log"),
        ("b", "log"),
        ("a", "done"),
        ("a", "delete"),
        ("b", "done"),
        ("b", "delete"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(p, e)| (p.to_string(), e.to_string())).collect();
    assert_eq!(got, want);
}

// ------------------------------------------------------------ local replies

#[test]
fn local_reply_from_request_headers_runs_the_senders_response_hooks() {
    let lc = json!({"lifecycle": true});
    let r = run(json!({
        "plugins": [named_probe("a", lc.clone()), named_probe("b", lc)],
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/r"], [":authority", "svc.local"],
            ["x-probe-a", "resp_add=x-seen-by-a:1"], ["x-probe-b", "reply=403:forbidden,resp_add=x-seen-by-b:1"]]}}]
    }));
    let s = the_stream(&r);
    assert!(s.upstream_request.is_none());
    let reply = s.local_reply.as_ref().expect("local reply");
    assert_eq!((reply.plugin.as_str(), reply.status, reply.body.as_str()), ("b", 403, "forbidden"));
    assert_eq!(values(&reply.headers, "x-probe-reply"), ["b"]);
    assert_eq!(reply.grpc_status, None, "the SDK passes -1: no grpc-status");
    let down = s.downstream_response.as_ref().unwrap();
    assert_eq!((down.status, down.body.as_str()), (403, "forbidden"));
    // The reply is encoded through b and a (both saw the request).
    assert_eq!(values(&down.headers, "x-seen-by-b"), ["1"]);
    assert_eq!(values(&down.headers, "x-seen-by-a"), ["1"]);
}

#[test]
fn a_filter_the_request_never_reached_only_logs() {
    let lc = json!({"lifecycle": true});
    let r = run(json!({
        "plugins": [named_probe("a", lc.clone()), named_probe("b", lc)],
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/r"], [":authority", "svc.local"], ["x-probe-a", "reply=401"]]}}]
    }));
    let s = the_stream(&r);
    assert_eq!(s.downstream_response.as_ref().unwrap().status, 401);
    let b: Vec<String> = lifecycle(&s.logs).into_iter().filter(|(p, _)| p == "b").map(|(_, e)| e).collect();
    assert_eq!(b, ["create", "log", "done", "delete"], "context created for the access log");
}

/// send_local_response in on_response_headers: the response headers are
/// still held, so the reply replaces the upstream response, past the
/// encoder filters.
#[test]
fn local_reply_from_response_headers_replaces_the_response() {
    let r = run(json!({
        "plugins": [named_probe("a", json!({})), named_probe("b", json!({}))],
        "streams": [{
            "request": {"headers": [[":method", "GET"], [":path", "/r"], [":authority", "svc.local"],
                ["x-probe-a", "resp_add=x-seen-by-a:1"], ["x-probe-b", "reply=500:late@resph"]]},
            "upstream": {"status": 200, "headers": [["x-up", "1"]], "body": "upstream body"}
        }]
    }));
    let s = the_stream(&r);
    assert!(s.upstream_request.is_some());
    assert_eq!(s.local_reply.as_ref().map(|l| (l.plugin.as_str(), l.status)), Some(("b", 500)));
    let down = s.downstream_response.as_ref().expect("the reply, not a stall");
    assert_eq!((down.status, down.body.as_str()), (500, "late"));
    assert!(values(&down.headers, "x-up").is_empty(), "the upstream headers are gone");
    assert!(values(&down.headers, "x-seen-by-a").is_empty(), "sent directly, not through a");
    assert!(!s.reset);
}

/// Once the response headers have gone downstream, a local reply can only
/// reset the stream (host-abi-details §2, go-sdk #364): the client has the
/// upstream's headers and no body (observed in Envoy 1.40).
#[test]
fn local_reply_after_response_headers_resets() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [{"request": request("resp_body_buffer,reply=500:late@respb"), "upstream": {"status": 200, "headers": [["x-up", "1"]], "body": "abc"}}]
    }));
    let s = the_stream(&r);
    assert!(s.reset);
    let down = s.downstream_response.as_ref().expect("the headers arrived");
    assert_eq!((down.status, one(&down.headers, "x-up"), down.body.as_str()), (200, "1", ""));
    assert_eq!(
        s.local_reply.as_ref().map(|l| (l.status, l.body.as_str())),
        Some((500, "")),
        "accepted, never received"
    );
}

#[test]
fn grpc_local_reply_carries_the_grpc_status() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [{"request": {"headers": [[":method", "POST"], [":path", "/pkg.Svc/M"], [":authority", "svc.local"],
            ["content-type", "application/grpc"], ["x-probe", "grpc_reply=7:not allowed"]]}}]
    }));
    let reply = the_stream(&r).local_reply.clone().expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.grpc_status, Some(7));
    // A gRPC request gets a trailers-only answer: the message travels in
    // grpc-message, not in the body (observed in Envoy 1.40).
    assert_eq!(reply.body, "");
    let down = the_stream(&r).downstream_response.clone().expect("answered");
    assert_eq!(one(&down.headers, "content-type"), "application/grpc");
    assert_eq!(one(&down.headers, "grpc-status"), "7");
    assert_eq!(one(&down.headers, "grpc-message"), "not allowed");
    assert_eq!(down.body, "");
}

/// proxy_close_stream: the client's stream is reset.
#[test]
fn close_stream_resets_on_either_side() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [stream("close"), stream("close@resph")]
    }));
    let (req, resp) = (&r.streams[0], &r.streams[1]);
    assert!(req.reset && req.upstream_request.is_none() && req.downstream_response.is_none());
    assert!(resp.reset && resp.upstream_request.is_some() && resp.downstream_response.is_none());
}

// -------------------------------------------------------------- http calls

/// proxy_http_call, then on_http_call_response reads the answer's headers,
/// body and trailers, edits the paused request and resumes it
/// (proxy_continue_stream); proxy_set_effective_context is what the SDK
/// calls to get back to the stream.
#[test]
fn http_call_resumes_the_request_with_a_header_from_the_answer() {
    let r = run(json!({
        "plugins": [probe(json!({"call_timeout_ms": 1500}))],
        "clusters": ["authz"],
        "streams": [{
            "request": request("call=authz:/check"),
            "http_calls": [{"status": 200, "headers": [["x-token", "abc"]], "body": "allowed", "trailers": [["x-t", "1"]], "delay_ms": 20}]
        }]
    }));
    let s = the_stream(&r);
    assert_eq!(s.http_calls.len(), 1);
    let call = &s.http_calls[0];
    assert_eq!(call.cluster, "authz");
    assert_eq!(one(&call.headers, ":method"), "POST");
    assert_eq!(one(&call.headers, ":path"), "/check");
    assert_eq!(one(&call.headers, ":authority"), "authz");
    assert_eq!(one(&call.headers, "x-probe-from"), "probe");
    assert_eq!(call.body, "probe-call");
    assert_eq!(call.trailers, vec![("x-call-trailer".to_string(), "1".to_string())]);
    assert_eq!(call.timeout_ms, 1500);
    assert_eq!(call.response_status, Some(200));
    let token = logged(&s.logs, "call dispatched cluster=authz token=");
    assert_eq!(token, "4", "the first http_call token (host-abi-details §2)");
    assert_eq!(logged(&s.logs, "call response token="), "4 headers=4 body_size=7 trailers=1");
    assert_eq!(
        logged(&s.logs, "call response status="),
        "200 body=allowed headers=:status=200;x-token=abc;transfer-encoding=chunked;x-envoy-upstream-service-time=<ms> trailers=x-t=1",
        "the answer keeps its framing and gets the router's service time (masked by the probe)"
    );
    let up = &s.upstream_request.as_ref().expect("resumed").headers;
    assert_eq!(one(up, "x-call-status"), "200");
    assert_eq!(one(up, "x-call-token"), "abc");
    assert_eq!(s.downstream_response.as_ref().unwrap().status, 200);
}

#[test]
fn http_call_from_the_response_resumes_the_response() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "clusters": ["authz"],
        "streams": [{"request": request("call=authz@resph"), "http_calls": [{"status": 201, "headers": [["x-token", "t2"]]}]}]
    }));
    let down = the_stream(&r).downstream_response.clone().expect("resumed");
    assert_eq!(one(&down.headers, "x-call-status"), "201");
    assert_eq!(one(&down.headers, "x-call-token"), "t2");
}

/// A call nobody answers (the connection closes) or one slower than its
/// timeout is answered by the async client's router, as in Envoy 1.40: the
/// plugin gets a 503 or 504 with Envoy's text, not a failed call.
#[test]
fn unanswered_http_calls_get_the_routers_503_or_504() {
    let r = run(json!({
        "plugins": [probe(json!({"call_timeout_ms": 250}))],
        "clusters": ["authz"],
        "streams": [
            {"name": "no answer", "request": request("call=authz")},
            {"name": "too slow", "request": request("call=authz,prop=request.duration:i64@log"), "http_calls": [{"status": 200, "delay_ms": 1000}]}
        ]
    }));
    let (none, slow) = (&r.streams[0], &r.streams[1]);
    assert_eq!(
        logged(&none.logs, "call response status="),
        "503 body=upstream connect error or disconnect/reset before headers. reset reason: connection termination headers=:status=503;content-length=95;content-type=text/plain trailers="
    );
    assert_eq!(
        logged(&slow.logs, "call response status="),
        "504 body=upstream request timeout headers=:status=504;content-length=24;content-type=text/plain trailers="
    );
    for s in &r.streams {
        assert_eq!(s.http_calls[0].response_status, None, "the canned answer was not delivered");
        assert!(s.local_reply.is_none());
        assert!(s.upstream_request.is_some(), "the probe resumes with the router's answer");
    }
    assert_eq!(one(&slow.upstream_request.as_ref().unwrap().headers, "x-call-status"), "504");
    assert_eq!(logged(&slow.logs, "prop request.duration="), (250 * 1_000_000).to_string(), "answered at the timeout");
}

#[test]
fn local_reply_from_the_http_call_callback() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "clusters": ["authz"],
        "streams": [{"request": request("call_reply=authz:/deny"), "http_calls": [{"status": 403, "body": "denied by authz"}]}]
    }));
    let s = the_stream(&r);
    assert!(s.upstream_request.is_none());
    let reply = s.local_reply.as_ref().unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (403, "denied by authz"));
    assert_eq!(values(&reply.headers, "x-probe-call"), ["reply"]);
    assert_eq!(s.downstream_response.as_ref().unwrap().status, 403);
}

#[test]
fn http_call_to_an_unknown_cluster_is_refused() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "clusters": ["authz"],
        "streams": [stream("call=nope")]
    }));
    let s = the_stream(&r);
    assert_eq!(logged(&s.logs, "call dispatch failed cluster=nope status="), "BadArgument");
    assert!(s.http_calls.is_empty());
    assert_eq!(s.downstream_response.as_ref().unwrap().status, 200, "the stream went on");
}

// ----------------------------------------------------------------- metrics

/// proxy_define_metric, proxy_increment_metric, proxy_record_metric,
/// proxy_get_metric; the result's metrics and Prometheus text.
#[test]
fn counters_gauges_and_histograms() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [
            stream("count=probe_requests,count=probe_requests:5,gauge=probe_inflight:7,gauge_add=probe_inflight:-2,hist=probe_latency:3,hist=probe_latency:700"),
            stream("count=probe_requests,count=reporter=.=destination;.;probe_tagged_total")
        ]
    }));
    let first = &r.streams[0].logs;
    let counts: Vec<&str> = first.iter().filter_map(|l| l.message.strip_prefix("count probe_requests ")).collect();
    assert_eq!(counts, ["+1 Ok value=1", "+5 Ok value=6"]);
    assert_eq!(logged(first, "gauge probe_inflight="), "7 Ok value=7", "record sets a gauge");
    assert_eq!(logged(first, "gauge_add probe_inflight "), "-2 Ok value=5", "a negative increment lowers a gauge");
    assert_eq!(logged(&r.streams[1].logs, "count probe_requests "), "+1 Ok value=7");

    let metric =
        |name: &str| r.metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} in {:?}", r.metrics));
    assert_eq!(metric("probe_requests").value, 7);
    assert_eq!(metric("probe_inflight").value, 5);
    let hist = metric("probe_latency");
    assert_eq!((hist.value, hist.sum), (2, Some(703)), "two samples");

    let prom = &r.prometheus;
    for line in [
        "# TYPE probe_requests counter",
        "probe_requests{} 7",
        "# TYPE probe_inflight gauge",
        "probe_inflight{} 5",
        "# TYPE probe_latency histogram",
        "probe_latency_bucket{le=\"1\"} 0",
        "probe_latency_bucket{le=\"5\"} 1",
        "probe_latency_bucket{le=\"1000\"} 2",
        "probe_latency_bucket{le=\"+Inf\"} 2",
        "probe_latency_sum{} 703",
        "probe_latency_count{} 2",
        // Istio's tag extraction applies to plugin metrics.
        "probe_tagged_total{reporter=\"destination\"} 1",
    ] {
        assert!(prom.lines().any(|l| l == line), "missing {line:?} in\n{prom}");
    }
}

/// Metric ids carry the type in their low two bits and count per type:
/// first counter 4, first gauge 5, first histogram 6; every define gives a
/// new id, even for a known name (host-abi-details §2).
#[test]
fn metric_ids_follow_envoys_scheme() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [stream("define=gauge:g1,define=counter:c1,define=histogram:h1,define=counter:c1,define=gauge:g2,count=c1:3")]
    }));
    let s = the_stream(&r);
    let ids: Vec<&str> = s.logs.iter().filter_map(|l| l.message.strip_prefix("define ")).collect();
    assert_eq!(ids, ["gauge g1 id=5", "counter c1 id=4", "histogram h1 id=6", "counter c1 id=8", "gauge g2 id=9"]);
    // Both ids of c1 name one stat.
    assert_eq!(r.metrics.iter().filter(|m| m.name == "c1").count(), 1);
    assert_eq!(logged(&s.logs, "count c1 "), "+3 Ok value=3");
}

// ------------------------------------------------------------- shared data

/// Shared data is one store per process (keyed by vm_id): a value set on one
/// worker's VM is read on the other's; CAS detects concurrent writers.
#[test]
fn shared_data_is_shared_across_workers() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "workers": 2,
        "streams": [
            {"worker": 0, "request": request("vm_seq,shared_get=k,shared_set=k:v0,shared_incr=hits")},
            {"worker": 1, "request": request("vm_seq,shared_get=k,shared_incr=hits,shared_stale=k:v1,shared_get=k")},
            {"worker": 0, "request": request("vm_seq,shared_incr=hits,shared_cas=k:v2,shared_get=k")}
        ]
    }));
    let logs = |i: usize| &r.streams[i].logs;
    // Two VMs: each has its own VM-local counter ...
    assert_eq!(logged(logs(0), "vm_seq="), "1");
    assert_eq!(logged(logs(1), "vm_seq="), "1");
    assert_eq!(logged(logs(2), "vm_seq="), "2");
    // ... but one shared store.
    assert_eq!(logged(logs(0), "shared_get k="), "<missing>");
    assert_eq!(logged(logs(0), "shared_set k="), "v0 Ok");
    let seen = logged(logs(1), "shared_get k=");
    let cas1: u32 = seen.strip_prefix("v0 cas=").unwrap_or_else(|| panic!("{seen}")).parse().unwrap();
    assert!(cas1 > 0);
    // shared_stale: get the cas, set with it (Ok), set again with the same
    // now-stale cas: CasMismatch.
    assert_eq!(logged(logs(1), "shared_stale k "), format!("cas={cas1} first=Ok second=CasMismatch"));
    let after: Vec<&str> = logs(1).iter().filter_map(|l| l.message.strip_prefix("shared_get k=")).collect();
    let cas2: u32 = after[1].strip_prefix("v1 cas=").unwrap_or_else(|| panic!("{after:?}")).parse().unwrap();
    assert!(cas2 > cas1, "each write gets a fresh cas");
    assert_eq!(logged(logs(2), "shared_cas k="), format!("v2 cas={cas2} Ok"));
    assert!(logged(logs(2), "shared_get k=").starts_with("v2 cas="));
    let hits: Vec<&str> = (0..3).map(|i| logged(logs(i), "shared_incr hits=")).collect();
    assert_eq!(hits, ["1", "2", "3"]);
}

/// A queue registered in on_vm_start; enqueue from a stream; the owner's
/// on_queue_ready runs after the callback and dequeues until Empty.
#[test]
fn shared_queue_round_trip() {
    let r = run(json!({
        "plugins": [{"wasm": probe_wasm(), "vm_configuration": {"queue": "jobs"}}],
        "streams": [
            stream("enqueue=m1,enqueue=m2"),
            {"advance_ms_before": 5, "request": request("enqueue=m3")}
        ]
    }));
    let id = logged(&r.logs, "vm_start ").rsplit_once("queue jobs=").expect("registered").1.to_string();
    assert_eq!(logged(&r.streams[0].logs, "enqueue m1 queue="), format!("{id} Ok"), "resolve_shared_queue finds it");
    // Envoy runs the notifications from its event loop while the request
    // travels upstream, so they land in the stream's logs, after the
    // enqueuing callback (checked against Envoy: tests/conformance/queues.json).
    let all = r.streams.iter().flat_map(|s| s.logs.iter()).chain(r.logs.iter());
    let queue: Vec<&str> = all.filter_map(|l| l.message.strip_prefix(&format!("queue {id} "))).collect();
    // One on_queue_ready per enqueue; the first drains both items.
    assert_eq!(queue, ["dequeued m1", "dequeued m2", "empty", "empty", "dequeued m3", "empty"]);
    let first = &r.streams[0].logs;
    let last_enqueue = first.iter().rposition(|l| l.message.starts_with("enqueue ")).unwrap();
    let first_notice = first.iter().position(|l| l.message.starts_with("queue ")).expect("delivered during the stream");
    assert!(first_notice > last_enqueue, "never inside the enqueuing callback");
}

// ------------------------------------------------------------------- ticks

/// set_tick_period in on_configure: on_tick fires in the main thread's and
/// every worker's VM, not in the throw-away canary VM; the logs between
/// streams are kept.
#[test]
fn ticks_fire_on_every_thread() {
    let r = run(json!({
        "plugins": [probe(json!({"tick_ms": 1000}))],
        "workers": 1,
        "streams": [{"advance_ms_before": 2500, "request": request("time")}],
        "advance_ms_after": 1000
    }));
    let ticks: Vec<&str> = r.logs.iter().filter_map(|l| l.message.strip_prefix("tick ")).collect();
    assert_eq!(ticks, ["1", "1", "2", "2", "3", "3"], "main thread + one worker, at 1 s, 2 s, 3 s");
    let counter = r.metrics.iter().find(|m| m.name == "probe_ticks").expect("probe_ticks");
    assert_eq!(counter.value, 6);
    assert!(r.prometheus.lines().any(|l| l == "probe_ticks{} 6"), "{}", r.prometheus);
    assert_eq!(logged(&r.streams[0].logs, "time="), (EPOCH_NS + 2_500_000_000).to_string());
}

// ------------------------------------------------------------ logs, time, WASI

#[test]
fn log_levels_are_filtered_by_the_plugins_level() {
    let r = run(json!({
        "plugins": [
            {"name": "quiet", "wasm": probe_wasm(), "log_level": "warn", "configuration": {"header": "x-probe"}},
            {"name": "loud", "wasm": probe_wasm(), "configuration": {"header": "x-probe"}}
        ],
        "streams": [stream("log_all=hi,log_level")]
    }));
    let s = the_stream(&r);
    let lines = |plugin: &str| -> Vec<(String, String)> {
        s.logs
            .iter()
            .filter(|l| l.plugin == plugin)
            .map(|l| (serde_json::to_value(l.level).unwrap().as_str().unwrap().to_string(), l.message.clone()))
            .collect()
    };
    let want = |levels: &[&str], level: u32| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = levels.iter().map(|l| (l.to_string(), format!("log {l} hi"))).collect();
        v.push(("critical".into(), format!("log_level={level}")));
        v
    };
    assert_eq!(lines("quiet"), want(&["warn", "error", "critical"], 3));
    assert_eq!(lines("loud"), want(&["trace", "debug", "info", "warn", "error", "critical"], 0));
    assert!(
        !r.logs.iter().any(|l| l.plugin == "quiet" && l.message.starts_with("configure")),
        "info filtered at start-up too"
    );
}

/// proxy_get_current_time_nanoseconds and the WASI clock read the virtual
/// clock; stdout is logged at info, stderr at error; the scenario's
/// environment variables are the plugin's.
#[test]
fn time_and_wasi() {
    let r = run(json!({
        "plugins": [{"wasm": probe_wasm(), "environment_variables": {"PROBE_ENV": "from-scenario"}}],
        "streams": [{"advance_ms_before": 1500, "request": request("time,wasi_time,env=PROBE_ENV,env=PROBE_UNSET,stdout=to stdout,stderr=to stderr")}]
    }));
    let s = the_stream(&r);
    let now = (EPOCH_NS + 1_500_000_000).to_string();
    assert_eq!(logged(&s.logs, "time="), now);
    assert_eq!(logged(&s.logs, "wasi_time="), now);
    assert_eq!(logged(&s.logs, "env PROBE_ENV="), "from-scenario");
    assert_eq!(logged(&s.logs, "env PROBE_UNSET="), "<unset>");
    let level = |msg: &str| s.logs.iter().find(|l| l.message == msg).map(|l| serde_json::to_value(l.level).unwrap());
    assert_eq!(level("to stdout"), Some(json!("info")));
    assert_eq!(level("to stderr"), Some(json!("error")));
}

// ---------------------------------------------------------- error statuses

/// Every status the SDK would panic on, from raw imports with bad arguments
/// (host-abi-details §2).
#[test]
fn error_statuses() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "clusters": ["authz"],
        "streams": [stream("statuses=authz")]
    }));
    let s = the_stream(&r);
    let got = statuses(&s.logs);
    let want: &[(&str, u32)] = &[
        ("log_bad_level", 2),
        ("log_oob", 6),
        ("get_log_level_oob", 6),
        ("get_time_oob", 6),
        ("get_header_map_value_bad_map", 2),
        ("get_header_map_pairs_bad_map", 2),
        ("set_header_map_pairs_bad_map", 2),
        ("add_header_map_value_bad_map", 2),
        ("get_header_map_size_bad_map", 2),
        ("get_header_map_value_oob", 6),
        ("set_call_response_headers", 2),
        ("get_buffer_bad_type", 2),
        ("get_buffer_status_bad_type", 2),
        ("get_plugin_configuration", 1),
        ("get_call_response_body", 1),
        ("get_property_unknown", 1),
        ("get_property_oob", 6),
        ("define_metric_bad_type", 2),
        ("increment_unknown_metric", 1),
        ("record_unknown_metric", 1),
        ("get_unknown_metric", 1),
        ("increment_counter_zero", 2),
        ("increment_counter_negative", 2),
        ("increment_histogram", 2),
        ("get_histogram", 2),
        ("http_call_unknown_cluster", 2),
        ("grpc_call", 4),
        ("grpc_stream", 4),
        ("grpc_send_unknown", 1),
        ("grpc_cancel_unknown", 1),
        ("grpc_close_unknown", 1),
        ("resolve_unknown_queue", 1),
        ("enqueue_unknown_queue", 1),
        ("dequeue_unknown_queue", 1),
        ("dequeue_empty_queue", 7),
        ("get_shared_data_missing", 1),
        ("set_shared_data_stale_cas", 8),
        ("set_shared_data_absent_key_cas", 0),
        ("continue_stream_upstream", 12),
        ("continue_stream_bad_type", 2),
        ("close_stream_bad_type", 2),
        ("set_effective_context_unknown", 2),
        ("done", 1),
        ("foreign_unknown", 1),
        ("foreign_clear_route_cache", 0),
        ("http_call_missing_path", 2),
        ("http_call_oob_token", 6),
    ];
    let want: Vec<(String, u32)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g);
    }
    assert_eq!(got, want);
    assert!(s.http_calls.is_empty(), "no failed call was sent");
    assert!(s.plugin_failure.is_none());
    assert_eq!(s.downstream_response.as_ref().unwrap().status, 200, "bad arguments do not hurt the stream");
}

/// Header maps and body buffers are only reachable in some phases
/// (host-abi-details §2 "Header maps that are available").
#[test]
fn statuses_depend_on_the_phase() {
    let actions = [
        "status=get_request_header",
        "status=get_response_header",
        "status=get_missing_request_header",
        "status=set_request_body",
        "status=get_request_header@reqb",
        "status=set_request_body@reqb",
        "status=get_request_header@resph",
        "status=get_response_header@resph",
        "status=get_request_header@log",
        "status=get_response_header@log",
    ]
    .join(",");
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [{"request": {"headers": [[":method", "POST"], [":path", "/s"], [":authority", "svc.local"], ["x-probe", actions]], "body": "x"}}]
    }));
    let got = statuses(&the_stream(&r).logs);
    let want: Vec<(String, u32)> = [
        ("get_request_header", 0),
        ("get_response_header", 2),
        ("get_missing_request_header", 1),
        ("set_request_body", 2),
        // on_request_body (twice: the chunk, then end_of_stream): the
        // headers were released when the headers callback continued; the
        // body can be written.
        ("get_request_header", 2),
        ("set_request_body", 0),
        ("get_request_header", 2),
        ("set_request_body", 0),
        ("get_request_header", 2),
        ("get_response_header", 0),
        // on_log reads the access log's maps.
        ("get_request_header", 0),
        ("get_response_header", 0),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    assert_eq!(got, want);
}

/// declare_property (a foreign function) makes a property read-only once
/// set; declaring it again is refused.
#[test]
fn declared_read_only_property() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [stream("status=declare_property,status=set_property,status=set_property,status=declare_property,prop=probe_ro")]
    }));
    let s = the_stream(&r);
    let got: Vec<u32> = statuses(&s.logs).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, [0, 0, 2, 2]);
    assert_eq!(logged(&s.logs, "prop probe_ro="), "v");
}

// ------------------------------------------------------ failures and config

/// A panic traps the VM: fail closed answers 503 `wasm_fail_stream` (gRPC
/// Unavailable) for this stream and every later one.
#[test]
fn a_trap_fails_closed_for_this_and_later_streams() {
    let r = run(json!({
        "plugins": [probe(json!({}))],
        "streams": [stream("panic=boom"), stream(""), stream("req_add=x-a:1")]
    }));
    let first = &r.streams[0];
    let failure = first.plugin_failure.as_ref().expect("plugin_failure");
    assert_eq!(failure.plugin, "probe");
    assert!(
        failure.message.starts_with("Function: proxy_on_request_headers failed: wasm trap: "),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("unreachable"), "{}", failure.message);
    assert!(!failure.message.contains("wasm trap: wasm trap"), "{}", failure.message);
    // The SDK's panic hook logs the message before aborting.
    let panic = first.logs.iter().find(|l| l.message.contains("probe panic: boom")).expect("panic message logged");
    assert_eq!(serde_json::to_value(panic.level).unwrap(), json!("critical"));
    for s in &r.streams {
        let reply = s.local_reply.as_ref().expect("503");
        assert_eq!((reply.status, reply.details.as_str(), reply.grpc_status), (503, "wasm_fail_stream", Some(14)));
        assert_eq!(s.downstream_response.as_ref().unwrap().status, 503);
        assert!(s.upstream_request.is_none());
    }
    assert!(r.streams[1].plugin_failure.is_none(), "the VM failed earlier; nothing new trapped");
}

#[test]
fn a_trap_fails_open_when_configured() {
    let r = run(json!({
        "plugins": [{"wasm": probe_wasm(), "fail_open": true}],
        "streams": [stream("trap"), stream("req_add=x-a:1")]
    }));
    assert!(r.streams[0].plugin_failure.as_ref().unwrap().message.contains("proxy_on_request_headers"));
    for s in &r.streams {
        assert!(s.local_reply.is_none());
        assert_eq!(s.downstream_response.as_ref().unwrap().status, 200);
        let up = s.upstream_request.as_ref().expect("passed through");
        assert!(values(&up.headers, "x-a").is_empty(), "the failed plugin is skipped");
    }
}

/// on_configure returns false: the plugin is not configured and the log
/// names the offending field; no stream is served.
#[test]
fn a_bad_configuration_is_rejected_naming_the_field() {
    for (config, field) in [(json!({"tick_ms": "soon"}), "`tick_ms`"), (json!({"tik_ms": 5}), "unknown field `tik_ms`")]
    {
        let r = run(json!({"plugins": [probe(config)], "streams": [stream("")]}));
        let p = &r.plugins[0];
        assert!(!p.configured);
        assert!(p.vm_started, "on_vm_start succeeded; only the configuration was refused");
        let error = p.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("Unable to create Wasm plugin probe"), "{error}");
        assert!(error.contains("Failed to configure base Wasm plugin"), "{error}");
        let line =
            r.logs.iter().find(|l| l.message.starts_with("invalid configuration")).expect("the probe's log line");
        assert!(line.message.contains(field), "{}", line.message);
        assert_eq!(serde_json::to_value(line.level).unwrap(), json!("error"));
        assert!(r.streams.is_empty(), "Envoy serves nothing with a rejected plugin");
    }
}

#[test]
fn a_vm_that_refuses_to_start() {
    let r = run(json!({
        "plugins": [{"wasm": probe_wasm(), "vm_configuration": {"fail_start": true}}],
        "streams": [stream("")]
    }));
    let p = &r.plugins[0];
    assert!(!p.vm_started && !p.configured);
    assert!(p.error.as_deref().unwrap_or_default().contains("Failed to start base Wasm"), "{:?}", p.error);
}

// ---------------------------------------------------------------- examples

/// The probe examples in examples/ pass their own `expect` lists.
#[test]
fn probe_examples_pass() {
    probe_wasm();
    for name in ["probe-headers.json", "probe-http-call.json", "probe-metrics.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
        let scenario = host_sim::Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!scenario.expect.is_empty(), "{name} checks something");
        let result = host_sim::run(&scenario).expect("runs");
        let failed: Vec<_> = result.expectations.iter().filter(|e| !e.passed).collect();
        assert!(failed.is_empty(), "{name}: {failed:#?}");
    }
}
