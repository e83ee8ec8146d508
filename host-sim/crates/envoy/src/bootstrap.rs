//! The Envoy bootstrap for a scenario, shaped like what Istio generates for a
//! `WasmPlugin`: each HTTP plugin an `envoy.filters.http.wasm` filter (V8) in
//! the HTTP listener's connection manager, in chain order, before the
//! router; each network plugin an `envoy.filters.network.wasm` filter on the
//! TCP listener, in chain order, before `tcp_proxy`.
//! Written as JSON (Envoy reads JSON bootstraps as YAML).

use crate::scenario::{config_bytes, Direction, PluginSpec, PluginType, Scenario, StatsTag};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

pub use host_sim_scenario::UPSTREAM_CLUSTER;

pub use host_sim_scenario::TCP_UPSTREAM_CLUSTER;

/// How often Envoy flushes stats (merges histograms). Small, so histogram
/// samples show up in the admin output soon after the last stream.
pub const STATS_FLUSH_MS: u64 = 100;

/// One listener: every stream whose connection needs the same server side
/// (plaintext, TLS, or mTLS with a given server certificate) shares one;
/// so does every TCP connection, on listeners of their own (`tcp`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLayout {
    pub name: String,
    pub tls: Option<TlsFiles>,
    /// A TCP listener (network plugins, then `tcp_proxy`) instead of an
    /// HTTP one.
    pub tcp: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    /// Set for mTLS: the CA that signs client certificates, which Envoy
    /// then requires.
    pub client_ca: Option<PathBuf>,
    /// ALPN protocols the listener accepts (`alpn_protocols`); none if empty.
    pub alpn: Vec<String>,
}

/// TLS origination on the clusters that lead to the upstream (HTTP and
/// TCP): the client proxy of a chain whose hop is mutual TLS, as Istio's
/// `ISTIO_MUTUAL` cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// The client certificate (and key) the proxy presents.
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    /// The CA the upstream's certificate must chain to.
    pub trusted_ca: PathBuf,
    /// ALPN protocols offered; none if empty.
    pub alpn: Vec<String>,
    /// The SNI sent; none if `None`.
    pub sni: Option<String>,
}

/// Everything the bootstrap needs besides the scenario.
#[derive(Debug, Clone)]
pub struct Layout {
    pub listeners: Vec<ListenerLayout>,
    /// Port of the server playing the upstream.
    pub upstream_port: u16,
    /// Port of the TCP server playing the upstream of TCP connections (used
    /// when some listener is `tcp`).
    pub tcp_upstream_port: u16,
    /// `(cluster name, port)` for each scenario cluster (`proxy_http_call`).
    pub clusters: Vec<(String, u16)>,
    /// Absolute paths of the plugins' .wasm files, in chain order.
    pub wasm_paths: Vec<PathBuf>,
    pub access_log: PathBuf,
    /// TLS on the upstream clusters ([`UPSTREAM_CLUSTER`],
    /// [`TCP_UPSTREAM_CLUSTER`]); plaintext when `None`.
    pub upstream_tls: Option<UpstreamTls>,
}

/// The access log fields the engine reads back: the client's address (to
/// find a stream's line), the response code and `%RESPONSE_CODE_DETAILS%`
/// (`via_upstream`, a plugin's local-reply details, `wasm_fail_stream`, ...).
fn access_log_format() -> Value {
    json!({
        "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "code": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "flags": "%RESPONSE_FLAGS%",
        "upstream_host": "%UPSTREAM_HOST%",
    })
}

fn string_value(bytes: Vec<u8>) -> Value {
    json!({
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": String::from_utf8_lossy(&bytes),
    })
}

/// The Wasm filter for one plugin: `envoy.filters.http.wasm` for an HTTP
/// plugin, `envoy.filters.network.wasm` for a network one. Both take the
/// same `PluginConfig`.
pub fn wasm_filter(p: &PluginSpec, wasm_path: &std::path::Path) -> Value {
    let mut vm_config = Map::new();
    vm_config.insert("vm_id".into(), json!(p.vm_id));
    vm_config.insert("runtime".into(), json!("envoy.wasm.runtime.v8"));
    vm_config.insert("code".into(), json!({"local": {"filename": wasm_path.to_string_lossy()}}));
    if p.vm_configuration.is_some() {
        vm_config.insert("configuration".into(), string_value(config_bytes(&p.vm_configuration)));
    }
    if !p.environment_variables.is_empty() {
        vm_config.insert("environment_variables".into(), json!({"key_values": p.environment_variables}));
    }
    let mut config = Map::new();
    config.insert("name".into(), json!(p.display_name()));
    config.insert("root_id".into(), json!(p.root_id));
    if p.configuration.is_some() {
        config.insert("configuration".into(), string_value(config_bytes(&p.configuration)));
    }
    // `fail_open` is deprecated in Envoy 1.40 (it logs a warning);
    // `failure_policy` says the same without it.
    config.insert("failure_policy".into(), json!(if p.fail_open { "FAIL_OPEN" } else { "FAIL_CLOSED" }));
    config.insert("vm_config".into(), Value::Object(vm_config));
    let (name, ty) = match p.plugin_type {
        PluginType::Http => {
            ("envoy.filters.http.wasm", "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
        }
        PluginType::Network => {
            ("envoy.filters.network.wasm", "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm")
        }
    };
    json!({"name": name, "typed_config": {"@type": ty, "config": config}})
}

/// The scenario's plugins of one type with their .wasm paths, in chain order.
fn plugins_of<'a>(
    s: &'a Scenario,
    layout: &'a Layout,
    ty: PluginType,
) -> impl Iterator<Item = (&'a PluginSpec, &'a std::path::Path)> {
    s.plugins.iter().zip(&layout.wasm_paths).filter(move |(p, _)| p.plugin_type == ty).map(|(p, w)| (p, w.as_path()))
}

/// HTTP/1.1 with trailers enabled, for a cluster.
fn http1_with_trailers() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": true}}
        }
    })
}

/// The streams' one route: everything to the upstream cluster, under the
/// scenario's route name (none when empty: `xds.route_name` is then "").
fn route(s: &Scenario) -> Value {
    let mut r = json!({"match": {"prefix": "/"}, "route": {"cluster": s.upstream_cluster}});
    if !s.route_name.is_empty() {
        r["name"] = json!(s.route_name);
    }
    r
}

/// A STATIC cluster of one endpoint on 127.0.0.1; HTTP/1.1 with trailers
/// unless it is the TCP upstream.
fn cluster(name: &str, port: u16) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]
        },
    });
    if name != TCP_UPSTREAM_CLUSTER {
        c["typed_extension_protocol_options"] = http1_with_trailers();
    }
    c
}

/// The `transport_socket` of a cluster that originates mutual TLS.
fn upstream_transport_socket(t: &UpstreamTls) -> Value {
    let mut common = json!({
        "tls_certificates": [{
            "certificate_chain": {"filename": t.cert_chain.to_string_lossy()},
            "private_key": {"filename": t.private_key.to_string_lossy()}
        }],
        "validation_context": {"trusted_ca": {"filename": t.trusted_ca.to_string_lossy()}}
    });
    if !t.alpn.is_empty() {
        common["alpn_protocols"] = json!(t.alpn);
    }
    let mut ctx = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common
    });
    if let Some(sni) = &t.sni {
        ctx["sni"] = json!(sni);
    }
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

/// The access log, written by the HTTP connection manager and by
/// `tcp_proxy` alike (one JSON line per stream or connection).
fn access_log(layout: &Layout) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": layout.access_log.to_string_lossy(),
            "log_format": {"json_format": access_log_format()}
        }
    }])
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "INBOUND",
        Direction::Outbound => "OUTBOUND",
        Direction::Unspecified => "UNSPECIFIED",
    }
}

/// The HTTP connection manager with the HTTP plugins before the router.
fn http_filter(s: &Scenario, layout: &Layout, prefix: &str) -> Value {
    let mut filters: Vec<Value> = plugins_of(s, layout, PluginType::Http).map(|(p, w)| wasm_filter(p, w)).collect();
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": prefix,
        "codec_type": "AUTO",
        "http_protocol_options": {"enable_trailers": true},
        "access_log": access_log(layout),
        "route_config": {
            "name": "default",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [route(s)]
            }]
        },
        "http_filters": filters,
    });
    if s.direction == Direction::Inbound {
        // What Istio sets on a sidecar's inbound listener.
        hcm["forward_client_cert_details"] = json!("APPEND_FORWARD");
        hcm["set_current_client_cert_details"] = json!({"subject": true, "dns": true, "uri": true});
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm})
}

/// The network plugins, then `tcp_proxy` to [`TCP_UPSTREAM_CLUSTER`]. One
/// connect attempt (the default), so an unreachable upstream closes the
/// client's connection at once.
fn tcp_filters(s: &Scenario, layout: &Layout, prefix: &str) -> Vec<Value> {
    let mut filters: Vec<Value> = plugins_of(s, layout, PluginType::Network).map(|(p, w)| wasm_filter(p, w)).collect();
    filters.push(json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": format!("{prefix}_tcp"),
            "cluster": TCP_UPSTREAM_CLUSTER,
            "access_log": access_log(layout),
        }
    }));
    filters
}

fn listener(s: &Scenario, l: &ListenerLayout, layout: &Layout) -> Value {
    let prefix = match s.direction {
        Direction::Outbound => "outbound",
        _ => "inbound",
    };
    let filters = if l.tcp { tcp_filters(s, layout, prefix) } else { vec![http_filter(s, layout, prefix)] };
    let mut chain = json!({"filters": filters});
    if let Some(tls) = &l.tls {
        let mut common = json!({
            "tls_certificates": [{
                "certificate_chain": {"filename": tls.cert_chain.to_string_lossy()},
                "private_key": {"filename": tls.private_key.to_string_lossy()}
            }]
        });
        if let Some(ca) = &tls.client_ca {
            common["validation_context"] = json!({"trusted_ca": {"filename": ca.to_string_lossy()}});
        }
        if !tls.alpn.is_empty() {
            common["alpn_protocols"] = json!(tls.alpn);
        }
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": tls.client_ca.is_some(),
                "common_tls_context": common
            }
        });
    }
    let mut listener = json!({
        "name": l.name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "traffic_direction": direction_name(s.direction),
        "filter_chains": [chain],
    });
    if l.tls.is_some() {
        // Records the client's SNI (`connection.requested_server_name`), as
        // on Istio's inbound listener.
        listener["listener_filters"] = json!([{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
        }]);
    }
    listener
}

/// The stats tags: the scenario's (else Istio's defaults), then `extra_stat_tags`.
pub fn stats_tags(s: &Scenario) -> Vec<StatsTag> {
    s.effective_stats_tags()
}

/// Builds the bootstrap.
pub fn bootstrap(s: &Scenario, layout: &Layout) -> Value {
    let tags: Vec<Value> = stats_tags(s).iter().map(|t| json!({"tag_name": t.tag_name, "regex": t.regex})).collect();
    let mut clusters = vec![cluster(&s.upstream_cluster, layout.upstream_port)];
    if layout.listeners.iter().any(|l| l.tcp) {
        clusters.push(cluster(TCP_UPSTREAM_CLUSTER, layout.tcp_upstream_port));
    }
    if let Some(t) = &layout.upstream_tls {
        for c in clusters.iter_mut() {
            c["transport_socket"] = upstream_transport_socket(t);
        }
    }
    // The scenario's endpoint metadata on the upstream endpoints (HTTP and
    // TCP), where Istio's control plane puts `istio.workload`.
    if !s.upstream_endpoint_metadata.is_empty() {
        for c in clusters.iter_mut() {
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] =
                json!({"filter_metadata": s.upstream_endpoint_metadata});
        }
    }
    // And the cluster's own metadata (Istio's `istio.services`).
    if !s.upstream_cluster_metadata.is_empty() {
        for c in clusters.iter_mut() {
            c["metadata"] = json!({"filter_metadata": s.upstream_cluster_metadata});
        }
    }
    clusters.extend(layout.clusters.iter().map(|(name, port)| cluster(name, *port)));
    json!({
        "node": {
            "id": s.node.id,
            "cluster": s.node.cluster,
            "metadata": s.node.metadata,
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_flush_interval": format!("{}s", STATS_FLUSH_MS as f64 / 1000.0),
        "stats_config": {
            // As in Istio's bootstrap: only the listed tags are extracted.
            "use_all_default_tags": false,
            "stats_tags": tags,
        },
        "static_resources": {
            "listeners": layout.listeners.iter().map(|l| listener(s, l, layout)).collect::<Vec<_>>(),
            "clusters": clusters,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(json: &str) -> Scenario {
        Scenario::from_json(json).unwrap()
    }

    fn layout(n: usize) -> Layout {
        Layout {
            listeners: vec![ListenerLayout { name: "inbound".into(), tls: None, tcp: false }],
            upstream_port: 18080,
            tcp_upstream_port: 18090,
            clusters: vec![("callee".into(), 18081)],
            wasm_paths: (0..n).map(|i| PathBuf::from(format!("/p/{i}.wasm"))).collect(),
            access_log: "/w/access.log".into(),
            upstream_tls: None,
        }
    }

    #[test]
    fn the_route_and_the_upstream_cluster_carry_the_scenarios_names() {
        let routes = |b: &Value| {
            b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
                ["virtual_hosts"][0]["routes"][0]
                .clone()
        };
        let b = bootstrap(&scenario(r#"{"plugins":[{"wasm":"a.wasm"}]}"#), &layout(1));
        assert!(routes(&b).get("name").is_none(), "unnamed by default");
        assert_eq!(routes(&b)["route"]["cluster"], UPSTREAM_CLUSTER);
        let s = scenario(
            r#"{"plugins":[{"wasm":"a.wasm"}],"route_name":"client_route","upstream_cluster":"server-outbound-cluster"}"#,
        );
        let b = bootstrap(&s, &layout(1));
        assert_eq!(routes(&b)["name"], "client_route");
        assert_eq!(routes(&b)["route"]["cluster"], "server-outbound-cluster");
        assert_eq!(b["static_resources"]["clusters"][0]["name"], "server-outbound-cluster");
        assert_eq!(b["static_resources"]["clusters"][0]["load_assignment"]["cluster_name"], "server-outbound-cluster");
    }

    #[test]
    fn plugins_become_wasm_filters_in_order_before_the_router() {
        let s = scenario(
            r#"{"plugins":[
                {"wasm":"a.wasm","name":"attributegen","root_id":"attr","vm_id":"v1","configuration":{"k":[1]},
                 "vm_configuration":"raw text","environment_variables":{"POD":"x"},"fail_open":true},
                {"wasm":"b.wasm","configuration":"{\"as\":\"is\"}"}],
               "clusters":["callee"],"streams":[]}"#,
        );
        let b = bootstrap(&s, &layout(2));
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let filters = hcm["http_filters"].as_array().unwrap();
        assert_eq!(filters.len(), 3);
        assert_eq!(filters[2]["name"], "envoy.filters.http.router");
        let a = &filters[0]["typed_config"]["config"];
        assert_eq!(a["name"], "attributegen");
        assert_eq!(a["root_id"], "attr");
        assert_eq!(a["configuration"]["@type"], "type.googleapis.com/google.protobuf.StringValue");
        assert_eq!(a["configuration"]["value"], r#"{"k":[1]}"#);
        assert_eq!(a["failure_policy"], "FAIL_OPEN");
        assert_eq!(a["vm_config"]["vm_id"], "v1");
        assert_eq!(a["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert_eq!(a["vm_config"]["code"]["local"]["filename"], "/p/0.wasm");
        assert_eq!(a["vm_config"]["configuration"]["value"], "raw text");
        assert_eq!(a["vm_config"]["environment_variables"]["key_values"]["POD"], "x");
        let bcfg = &filters[1]["typed_config"]["config"];
        assert_eq!(bcfg["name"], "b", "name defaults to the file stem");
        assert_eq!(bcfg["configuration"]["value"], r#"{"as":"is"}"#, "a JSON string passes verbatim");
        assert_eq!(bcfg["failure_policy"], "FAIL_CLOSED");
        assert!(bcfg["vm_config"].get("configuration").is_none());
        assert!(bcfg["vm_config"].get("environment_variables").is_none());
    }

    #[test]
    fn node_direction_tags_and_clusters() {
        let s = scenario(
            r#"{"plugins":[{"wasm":"a.wasm"}],"direction":"outbound",
               "node":{"id":"n1","cluster":"c1","metadata":{"MESH_ID":"m","LABELS":{"app":"x"}}},
               "stats_tags":[{"tag_name":"reporter","regex":"(reporter=\\.=(.*?);\\.;)"}],
               "clusters":["callee"],"streams":[]}"#,
        );
        let b = bootstrap(&s, &layout(1));
        assert_eq!(b["node"]["id"], "n1");
        assert_eq!(b["node"]["cluster"], "c1");
        assert_eq!(b["node"]["metadata"]["LABELS"]["app"], "x");
        let l = &b["static_resources"]["listeners"][0];
        assert_eq!(l["traffic_direction"], "OUTBOUND");
        assert_eq!(l["address"]["socket_address"]["port_value"], 0);
        let hcm = &l["filter_chains"][0]["filters"][0]["typed_config"];
        assert!(hcm.get("forward_client_cert_details").is_none(), "XFCC settings are inbound only");
        assert_eq!(hcm["http_protocol_options"]["enable_trailers"], true);
        assert_eq!(b["stats_config"]["use_all_default_tags"], false);
        assert_eq!(b["stats_config"]["stats_tags"].as_array().unwrap().len(), 1);
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[0]["name"], UPSTREAM_CLUSTER);
        assert_eq!(clusters[1]["name"], "callee");
        assert_eq!(
            clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            18081
        );
    }

    #[test]
    fn default_stats_tags_are_istios() {
        let s = scenario(r#"{"plugins":[{"wasm":"a.wasm"}],"streams":[]}"#);
        let b = bootstrap(&s, &layout(1));
        let tags = b["stats_config"]["stats_tags"].as_array().unwrap();
        assert_eq!(tags[0]["tag_name"], "reporter");
        assert_eq!(tags.len(), crate::prometheus::istio_default_stats_tags().len());
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["forward_client_cert_details"], "APPEND_FORWARD");
        assert!(b["static_resources"]["listeners"][0]["filter_chains"][0].get("transport_socket").is_none());
    }

    #[test]
    fn extra_stat_tags_follow_istios_list() {
        let s = scenario(r#"{"plugins":[{"wasm":"a.wasm"}],"extra_stat_tags":["request_method"],"streams":[]}"#);
        let b = bootstrap(&s, &layout(1));
        let tags = b["stats_config"]["stats_tags"].as_array().unwrap();
        assert_eq!(tags.len(), crate::prometheus::istio_default_stats_tags().len() + 1);
        assert_eq!(tags.last().unwrap()["tag_name"], "request_method");
        assert_eq!(tags.last().unwrap()["regex"], r"(request_method=\.=(.*?);\.;)");
    }

    #[test]
    fn upstream_endpoint_metadata_goes_on_the_upstream_endpoints() {
        let s = scenario(
            r#"{"plugins":[{"wasm":"a.wasm"}],"clusters":["callee"],"streams":[],
                "upstream_endpoint_metadata":{"istio":{"workload":"w;ns;s;r;c"}}}"#,
        );
        let b = bootstrap(&s, &layout(1));
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let endpoint = |i: usize| &clusters[i]["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(clusters[0]["name"], UPSTREAM_CLUSTER);
        assert_eq!(endpoint(0)["metadata"]["filter_metadata"]["istio"]["workload"], "w;ns;s;r;c");
        assert_eq!(clusters[1]["name"], "callee");
        assert!(endpoint(1).get("metadata").is_none(), "http_call clusters keep none");
        let s = scenario(
            r#"{"plugins":[{"wasm":"a.wasm"}],"clusters":["callee"],"streams":[],
                "upstream_cluster_metadata":{"istio":{"services":[{"host":"h","name":"n","namespace":"ns"}]}}}"#,
        );
        let b = bootstrap(&s, &layout(1));
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[0]["metadata"]["filter_metadata"]["istio"]["services"][0]["name"], "n");
        assert!(clusters[1].get("metadata").is_none());
    }

    #[test]
    fn network_plugins_go_on_the_tcp_listener_before_tcp_proxy() {
        let s = scenario(
            r#"{"plugins":[
                {"wasm":"h.wasm","name":"web"},
                {"wasm":"n.wasm","name":"net","type":"network","root_id":"r","configuration":{"context":"network"}}],
               "direction":"outbound","connections":[{"events":[]}]}"#,
        );
        let mut l = layout(2);
        l.listeners.push(ListenerLayout { name: "outbound_tcp".into(), tls: None, tcp: true });
        let b = bootstrap(&s, &l);
        let listeners = b["static_resources"]["listeners"].as_array().unwrap();
        let http = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
        assert_eq!(http.as_array().unwrap().len(), 2, "only the HTTP plugin, then the router");
        assert_eq!(http[0]["typed_config"]["config"]["name"], "web");
        let tcp = &listeners[1];
        assert_eq!(tcp["traffic_direction"], "OUTBOUND");
        let filters = tcp["filter_chains"][0]["filters"].as_array().unwrap();
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0]["name"], "envoy.filters.network.wasm");
        assert_eq!(
            filters[0]["typed_config"]["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
        );
        let cfg = &filters[0]["typed_config"]["config"];
        assert_eq!((cfg["name"].as_str(), cfg["root_id"].as_str()), (Some("net"), Some("r")));
        assert_eq!(cfg["configuration"]["value"], r#"{"context":"network"}"#);
        assert_eq!(cfg["vm_config"]["code"]["local"]["filename"], "/p/1.wasm");
        assert_eq!(filters[1]["name"], "envoy.filters.network.tcp_proxy");
        assert_eq!(filters[1]["typed_config"]["cluster"], TCP_UPSTREAM_CLUSTER);
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let tcp_cluster = clusters.iter().find(|c| c["name"] == TCP_UPSTREAM_CLUSTER).expect("the TCP upstream");
        assert!(tcp_cluster.get("typed_extension_protocol_options").is_none(), "plain TCP, no HTTP options");
    }

    #[test]
    fn mtls_listener_requires_client_certificates() {
        let s = scenario(r#"{"plugins":[{"wasm":"a.wasm"}],"streams":[]}"#);
        let mut l = layout(1);
        l.listeners = vec![ListenerLayout {
            name: "inbound_mtls".into(),
            tls: Some(TlsFiles {
                cert_chain: "/c.pem".into(),
                private_key: "/k.pem".into(),
                client_ca: Some("/ca.pem".into()),
                alpn: Vec::new(),
            }),
            tcp: false,
        }];
        let b = bootstrap(&s, &l);
        let ts = &b["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(ts["require_client_certificate"], true);
        assert_eq!(ts["common_tls_context"]["validation_context"]["trusted_ca"]["filename"], "/ca.pem");
        assert_eq!(ts["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"], "/c.pem");
        assert_eq!(
            b["static_resources"]["listeners"][0]["listener_filters"][0]["name"],
            "envoy.filters.listener.tls_inspector"
        );
        assert!(ts["common_tls_context"].get("alpn_protocols").is_none(), "no ALPN unless asked");
        assert!(b["static_resources"]["clusters"][0].get("transport_socket").is_none(), "plaintext upstream");
    }

    #[test]
    fn an_mtls_hop_originates_tls_on_the_upstream_clusters_only() {
        let s = scenario(r#"{"plugins":[{"wasm":"a.wasm"}],"clusters":["callee"],"connections":[{"events":[]}]}"#);
        let mut l = layout(1);
        l.listeners.push(ListenerLayout { name: "outbound_tcp".into(), tls: None, tcp: true });
        l.upstream_tls = Some(UpstreamTls {
            cert_chain: "/client-cert.pem".into(),
            private_key: "/client-key.pem".into(),
            trusted_ca: "/server/ca.pem".into(),
            alpn: vec!["istio-peer-exchange".into(), "istio".into()],
            sni: Some("server.com".into()),
        });
        let b = bootstrap(&s, &l);
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        for name in [UPSTREAM_CLUSTER, TCP_UPSTREAM_CLUSTER] {
            let c = clusters.iter().find(|c| c["name"] == name).unwrap();
            assert_eq!(c["transport_socket"]["name"], "envoy.transport_sockets.tls");
            let ctx = &c["transport_socket"]["typed_config"];
            assert_eq!(
                ctx["@type"],
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
            );
            assert_eq!(ctx["sni"], "server.com");
            let common = &ctx["common_tls_context"];
            assert_eq!(common["tls_certificates"][0]["certificate_chain"]["filename"], "/client-cert.pem");
            assert_eq!(common["tls_certificates"][0]["private_key"]["filename"], "/client-key.pem");
            assert_eq!(common["validation_context"]["trusted_ca"]["filename"], "/server/ca.pem");
            assert_eq!(common["alpn_protocols"], json!(["istio-peer-exchange", "istio"]));
        }
        let callee = clusters.iter().find(|c| c["name"] == "callee").unwrap();
        assert!(callee.get("transport_socket").is_none(), "http_call clusters stay plaintext");
        // No SNI and no ALPN: neither field.
        l.upstream_tls.as_mut().unwrap().sni = None;
        l.upstream_tls.as_mut().unwrap().alpn.clear();
        let b = bootstrap(&s, &l);
        let ctx = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert!(ctx.get("sni").is_none());
        assert!(ctx["common_tls_context"].get("alpn_protocols").is_none());
    }

    #[test]
    fn a_listener_accepts_the_hops_alpn() {
        let s = scenario(r#"{"plugins":[{"wasm":"a.wasm"}],"streams":[]}"#);
        let mut l = layout(1);
        l.listeners[0].tls = Some(TlsFiles {
            cert_chain: "/c.pem".into(),
            private_key: "/k.pem".into(),
            client_ca: Some("/ca.pem".into()),
            alpn: vec!["istio-peer-exchange".into()],
        });
        let b = bootstrap(&s, &l);
        let ts = &b["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(ts["common_tls_context"]["alpn_protocols"], json!(["istio-peer-exchange"]));
    }
}
