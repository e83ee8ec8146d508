//! The `noop` plugin (plugins/noop) under host-sim: the cost floor as an HTTP
//! and as a network filter, and its configuration check.

use serde_json::json;

mod common;
use common::run;

#[test]
fn passes_http_streams_and_tcp_connections_through() {
    let noop = common::plugin_wasm("noop");
    let r = run(json!({
        "plugins": [
            {"name": "noop_http", "wasm": noop, "configuration": {"context": "http"}},
            {"name": "noop_tcp", "wasm": noop, "type": "network", "configuration": {"context": "network"}}
        ],
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "h"]]},
                     "upstream": {"status": 200, "body": "hi"}}],
        "connections": [{"events": [{"downstream": "ping"}, {"upstream": "pong"}]}]
    }));
    assert!(r.streams[0].plugin_failure.is_none() && r.connections[0].plugin_failure.is_none());
    assert_eq!(r.streams[0].downstream_response.as_ref().map(|d| d.body.as_str()), Some("hi"));
    assert_eq!(r.connections[0].upstream_received, "ping");
    assert_eq!(r.connections[0].downstream_received, "pong");
}

#[test]
fn a_bad_configuration_is_rejected_naming_the_field() {
    let r = run(json!({
        "plugins": [{"wasm": common::plugin_wasm("noop"), "configuration": {"context": "tcp"}}],
        "streams": []
    }));
    assert!(!r.plugins[0].configured, "{:?}", r.plugins);
    assert!(r.logs.iter().any(|l| l.message.contains("invalid configuration at `context`")), "{:#?}", r.logs);
}
