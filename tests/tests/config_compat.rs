//! Configuration compatibility with Istio (issue 16, defect 4), with the
//! compiled plugins under host-sim:
//!
//! * the configurations Istio's own e2e tests give its plugins, written
//!   with protobuf JSON's quoted forms, are accepted and in force
//!   (istio/proxy testdata/filters/*_stats_network_filter.yaml.tmpl, used by
//!   TestTCPMetadataExchange; testdata/stats/*_disable_header_fallback.yaml);
//! * a configuration that is not a JSON object is refused naming `.`, in
//!   every plugin;
//! * unknown fields, which Istio ignored (attributegen's
//!   `ignore_unknown_fields`; Envoy's warning for the native stats filter's
//!   dynamic configuration), are ignored, logged naming the field and
//!   counted, and refused with `"strict": true`; stats takes enum names in
//!   any case, as Envoy's `case_insensitive_enum_parsing`;
//! * a refused stats configuration counts in
//!   `meshwasm_stats_config_errors_total`;
//! * what Istio accepted but could not use (TestStatsPayload/Customized's
//!   `"destination_app": "cannot _ parse | 0"`, an attributegen condition
//!   that does not compile) is tolerated as Istio did, logged naming the
//!   field and counted, and refused with `"strict": true`.
//!
//! The plugins must be built first:
//! `cargo build --target wasm32-wasip1 --release` (these tests never build them).

use host_sim::abi::LogLevel;
use host_sim::result::RunResult;
use serde_json::{json, Value};

mod common;
use common::{plugin_wasm as wasm, run};

/// Istio's network-filter stats configuration, verbatim (a string: the
/// plugin gets these exact bytes).
const ISTIO_TCP_CONFIG: &str = r#"{ "debug": "false", "field_separator": ";.;", "tcp_reporting_duration": "1s" }"#;

fn get(authority: &str) -> Value {
    json!({"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", authority]]}})
}

fn metric(r: &RunResult, name: &str) -> Option<i64> {
    r.metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

fn assert_configured(r: &RunResult) {
    for p in &r.plugins {
        assert!(p.configured, "{} rejected: {:?}; logs: {:#?}", p.name, p.error, r.logs);
    }
}

/// The plugin was refused, with an error log line containing `want`.
fn assert_refused(r: &RunResult, plugin: usize, want: &str) {
    let p = &r.plugins[plugin];
    assert!(!p.configured, "{} accepted; logs: {:#?}", p.name, r.logs);
    assert!(
        r.logs.iter().any(|l| l.plugin == p.name && l.level == LogLevel::Error && l.message.contains(want)),
        "{}: no error log with {want:?}: {:#?}",
        p.name,
        r.logs
    );
}

/// The probe (marking the peer as looked up, so periodic reports run, and
/// setting filter state `stage` early, then late when the upstream writes)
/// and stats as network filters, one connection that lives 1.5 s.
fn tcp_run(stats_config: Value) -> RunResult {
    let mut tags = host_sim::prometheus::istio_default_stats_tags();
    tags.push(host_sim::prometheus::istio_tag("stage"));
    run(json!({
        "plugins": [
            {"name": "marker", "wasm": wasm("probe"), "type": "network",
             "configuration": {"context": "network",
                               "actions": ["setprop=peer_not_found:true", "setprop=stage:early", "setprop=stage:late@up"]}},
            {"name": "stats", "wasm": wasm("stats"), "type": "network", "configuration": stats_config}
        ],
        "stats_tags": tags.iter().map(|t| json!({"tag_name": t.tag_name, "regex": t.regex})).collect::<Vec<_>>(),
        "connections": [{"events": [{"downstream": "a"}, {"advance_ms": 1500}, {"upstream": "b"}]}]
    }))
}

fn closed_series(r: &RunResult) -> String {
    let lines: Vec<&str> =
        r.prometheus.lines().filter(|l| l.starts_with("istio_tcp_connections_closed_total{")).collect();
    assert_eq!(lines.len(), 1, "{}", r.prometheus);
    lines[0].to_string()
}

/// TestTCPMetadataExchange's configuration, with its quoted bool, is
/// accepted as is; its `"1s"` is in force: the connection is reported at
/// the 1 s tick, so its labels are the filter state of then (`early`);
/// with Istio's default 5 s they are the state at the close (`late`).
#[test]
fn istio_e2e_tcp_config_with_a_quoted_bool_is_in_force() {
    let r = tcp_run(Value::String(ISTIO_TCP_CONFIG.to_string()));
    assert_configured(&r);
    assert!(closed_series(&r).ends_with(" 1"), "{}", closed_series(&r));
    // The same, plus a dimension that shows when the report was made.
    let with_stage = |duration: &str| {
        let config = ISTIO_TCP_CONFIG.replace(
            r#""tcp_reporting_duration": "1s""#,
            &format!(r#""tcp_reporting_duration": "{duration}", "metrics": [{{"dimensions": {{"stage": "stage"}}}}]"#),
        );
        tcp_run(Value::String(config))
    };
    let one_second = with_stage("1s");
    assert_configured(&one_second);
    assert!(closed_series(&one_second).contains("stage=\"early\""), "{}", closed_series(&one_second));
    let five_seconds = with_stage("5s");
    assert!(closed_series(&five_seconds).contains("stage=\"late\""), "{}", closed_series(&five_seconds));
}

/// `{"disable_host_header_fallback":"true"}` (Istio's host-header e2e
/// case) is accepted and in force: `destination_service` no longer comes
/// from the Host header; `"false"` keeps the fallback.
#[test]
fn istio_e2e_quoted_host_header_fallback_is_in_force() {
    let service = |config: &str| {
        let r = run(json!({
            "plugins": [{"name": "stats", "wasm": wasm("stats"), "configuration": config}],
            "node": {"metadata": {}},
            "streams": [get("svc.local")]
        }));
        assert_configured(&r);
        let line = r.prometheus.lines().find(|l| l.starts_with("istio_requests_total{")).unwrap_or("").to_string();
        let start = line.find("destination_service=\"").map(|i| i + "destination_service=\"".len());
        let value = start.and_then(|s| line[s..].split('"').next()).unwrap_or("<none>").to_string();
        value
    };
    assert_eq!(service(r#"{"disable_host_header_fallback":"true"}"#), "unknown");
    assert_eq!(service(r#"{"disable_host_header_fallback":"false"}"#), "svc.local");
    assert_eq!(service(r#"{"disableHostHeaderFallback":"1"}"#), "unknown", "lowerCamel name, absl's \"1\"");
}

/// A configuration must be an object (or empty) in every plugin: an array
/// is not read by field position (`[false, 0, "evil"]` set `stat_prefix`
/// to `evil` before), nor is `[]` the default.
#[test]
fn configurations_that_are_not_objects_are_refused() {
    let cases = [json!([false, 0, "evil"]), json!([]), json!("\"stat_prefix\""), json!(7)];
    let mut plugins = Vec::new();
    for (i, config) in cases.iter().enumerate() {
        for plugin in ["stats", "attributegen", "noop"] {
            let name = format!("{plugin}{i}");
            plugins.push(json!({"name": name, "root_id": name, "wasm": wasm(plugin), "configuration": config}));
        }
    }
    let r = run(json!({"plugins": plugins, "streams": [get("svc")]}));
    assert!(r.streams.is_empty(), "Envoy refuses the whole configuration: no stream runs");
    for i in 0..plugins.len() {
        assert_refused(&r, i, "invalid configuration at `.`");
    }
    assert!(!r.metrics.iter().any(|m| m.name.contains("evil")), "{:#?}", r.metrics);
    // An empty configuration is all defaults, everywhere.
    let empty = ["stats", "attributegen", "noop"]
        .map(|p| json!({"name": p, "root_id": p, "wasm": wasm(p), "configuration": " "}));
    assert_configured(&run(json!({"plugins": empty, "streams": [get("svc")]})));
}

/// TestStatsPayload/Customized (istio/proxy
/// testdata/stats/client_config_customized.yaml.tmpl): Istio keeps the
/// configuration when a dimension does not parse; its expected
/// `istio_requests_total` (testdata/metric/client_request_total_customized
/// .yaml.tmpl) has no `destination_app` label, `unknown` for the dimension
/// that fails to evaluate, and every other override in force. Counted (and
/// logged) once per configure, like Istio's own config error counter.
fn customized(strict: bool) -> RunResult {
    let mut config = json!({
        "definitions": [{"name": "custom", "value": "1", "type": "COUNTER"}],
        "metrics": [
            {"name": "request_duration_milliseconds", "drop": true},
            {"name": "custom", "dimensions": {"reporter": "'proxy'"}},
            {"tags_to_remove": ["response_flags", "source_principal"]},
            {"name": "requests_total", "dimensions": {
                "configurable_metric_a": "'gateway'",
                "destination_app": "cannot _ parse | 0",
                "destination_workload": "cannot_evaluate",
                "request_protocol": "request.protocol"
            }, "tags_to_remove": ["grpc_response_status"]},
            {"dimensions": {"source_principal": "'malicious'"}}
        ]
    });
    if strict {
        config["strict"] = json!(true);
    }
    let mut tags = host_sim::prometheus::istio_default_stats_tags();
    tags.push(host_sim::prometheus::istio_tag("configurable_metric_a"));
    run(json!({
        "plugins": [{"name": "stats", "wasm": wasm("stats"), "configuration": config}],
        "stats_tags": tags.iter().map(|t| json!({"tag_name": t.tag_name, "regex": t.regex})).collect::<Vec<_>>(),
        "direction": "outbound",
        "streams": [get("server.default.svc.cluster.local")]
    }))
}

#[test]
fn istio_customized_unparsable_dimension_is_left_out_and_counted() {
    let r = customized(false);
    assert_configured(&r);
    let line = r.prometheus.lines().find(|l| l.starts_with("istio_requests_total{")).expect("requests_total");
    assert!(!line.contains("destination_app="), "the label is removed, as in Istio: {line}");
    for want in [
        "reporter=\"source\"",
        "destination_workload=\"unknown\"",
        "source_principal=\"malicious\"",
        "request_protocol=\"HTTP/1.1\"",
        "configurable_metric_a=\"gateway\"",
    ] {
        assert!(line.contains(want), "{want} missing: {line}");
    }
    for gone in ["response_flags=", "grpc_response_status="] {
        assert!(!line.contains(gone), "{gone} removed: {line}");
    }
    assert!(!r.prometheus.contains("istio_request_duration_milliseconds"), "dropped");
    assert!(r.prometheus.lines().any(|l| l.starts_with("istio_custom{") && l.ends_with(" 1")), "{}", r.prometheus);
    // Logged at error level with the field, and counted once.
    let errors: Vec<&str> = r.logs.iter().filter(|l| l.level == LogLevel::Error).map(|l| l.message.as_str()).collect();
    let field = "invalid configuration at `metrics[3].dimensions.destination_app`: invalid CEL expression";
    let logged = errors.iter().filter(|m| m.contains(field) && m.contains("the label is removed")).count();
    assert!(logged > 0, "{errors:#?}");
    assert_eq!(errors.len(), logged, "the only error: {errors:#?}");
    // Once per configure: Envoy configures a validation VM, the main
    // thread's and each worker's, and they share the counter.
    assert_eq!(metric(&r, "meshwasm_stats_config_errors_total"), Some(logged as i64), "{:#?}", r.metrics);
}

#[test]
fn strict_refuses_the_unparsable_dimension() {
    let r = customized(true);
    assert!(r.streams.is_empty(), "refused: no stream runs");
    assert_refused(&r, 0, "invalid configuration at `metrics[3].dimensions.destination_app`: invalid CEL expression");
}

/// A clean configuration counts no error, but the counter exists from the
/// start (so a dashboard sees 0, not nothing).
#[test]
fn config_error_counters_start_at_zero() {
    let r = run(json!({
        "plugins": [
            {"name": "stats", "wasm": wasm("stats"), "configuration": {"strict": true}},
            {"name": "attributegen", "root_id": "attributegen", "wasm": wasm("attributegen"), "configuration": {"strict": "true"}}
        ],
        "streams": [get("svc")]
    }));
    assert_configured(&r);
    assert_eq!(metric(&r, "meshwasm_stats_config_errors_total"), Some(0));
    assert_eq!(metric(&r, "wasm_filter.attributegen.type.config.error_count"), Some(0));
}

/// attributegen: Istio's plugin (extensions/attributegen/plugin.cc) kept
/// the listener when a condition did not compile, counted a config error
/// and generated nothing at all; so does this one. `strict` refuses it.
#[test]
fn attributegen_unparsable_condition_is_tolerated_as_istio_did() {
    let config = |strict: bool| {
        json!({"strict": strict, "debug": "false", "attributes": [
            {"output_attribute": "good", "match": [{"value": "yes"}]},
            {"output_attribute": "bad", "match": [{"value": "v", "condition": "request.method =="}]}
        ]})
    };
    let scenario = |strict: bool| {
        json!({
            "plugins": [
                {"name": "attributegen", "root_id": "attributegen", "wasm": wasm("attributegen"), "configuration": config(strict)},
                {"name": "probe", "root_id": "probe", "wasm": wasm("probe"), "configuration": {}}
            ],
            "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"], ["x-probe", "prop=good@log"]]}}]
        })
    };
    let r = run(scenario(false));
    assert_configured(&r);
    let s = &r.streams[0];
    assert_eq!(s.downstream_response.as_ref().map(|d| d.status), Some(200));
    assert!(
        s.logs.iter().any(|l| l.message == "prop good=<missing>"),
        "no attribute is generated, as in Istio: {:#?}",
        s.logs
    );
    let field = "invalid configuration at `attributes[1].match[0].condition`: bad CEL: ";
    let logged = r.logs.iter().filter(|l| l.level == LogLevel::Error && l.message.contains(field)).count();
    assert!(logged > 0, "{:#?}", r.logs);
    // Once per configure (every VM), as Istio's plugin counted.
    assert_eq!(metric(&r, "wasm_filter.attributegen.type.config.error_count"), Some(logged as i64));

    let r = run(scenario(true));
    assert!(r.streams.is_empty(), "refused: no stream runs");
    assert_refused(&r, 0, field);
}

/// Unknown fields at any level are ignored with the rest of the
/// configuration in force (a lower-case reporter name too); each is logged
/// naming it. stats counts each, attributegen one per configuration (as
/// Istio counted one per failed configure). `strict` refuses them.
#[test]
fn unknown_fields_are_ignored_logged_and_counted() {
    let stats = |strict: bool| {
        json!({"strict": strict, "metrix": [], "stat_prefix": "mesh", "reporter": "unspecified",
               "metrics": [{"name": "requests_total", "dimension": {"a": "b"}, "tags_to_remove": ["request_protocol"]}]})
    };
    let attributegen = |strict: bool| {
        json!({"strict": strict, "attributes": [
            {"output_attribute": "good", "matches": [], "match": [{"value": "yes", "when": "never"}]}]})
    };
    let scenario = |strict: bool| {
        json!({
            "plugins": [
                {"name": "attributegen", "root_id": "attributegen", "wasm": wasm("attributegen"), "configuration": attributegen(strict)},
                {"name": "probe", "root_id": "probe", "wasm": wasm("probe"), "configuration": {}},
                {"name": "stats", "root_id": "stats", "wasm": wasm("stats"), "configuration": stats(strict)}
            ],
            "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "svc"], ["x-probe", "prop=good@log"]]}}]
        })
    };
    let r = run(scenario(false));
    assert_configured(&r);
    let s = &r.streams[0];
    assert!(s.logs.iter().any(|l| l.message == "prop good=yes"), "attributegen in force: {:#?}", s.logs);
    let line = r.prometheus.lines().find(|l| l.starts_with("mesh_requests_total{")).expect("stat_prefix in force");
    assert!(!line.contains("request_protocol="), "tags_to_remove in force: {line}");
    assert!(line.contains("reporter=\"destination\""), "{line}");
    let logged = |plugin: &str, field: &str| {
        let want = format!("invalid configuration at `{field}`: unknown field, ignored");
        r.logs.iter().filter(|l| l.plugin == plugin && l.level == LogLevel::Error && l.message.contains(&want)).count()
    };
    let configures = logged("stats", "metrix");
    assert!(configures > 0, "{:#?}", r.logs);
    assert_eq!(logged("stats", "metrics[0].dimension"), configures);
    assert_eq!(logged("attributegen", "attributes[0].matches"), configures);
    assert_eq!(logged("attributegen", "attributes[0].match[0].when"), configures);
    assert_eq!(metric(&r, "meshwasm_stats_config_errors_total"), Some(2 * configures as i64));
    assert_eq!(metric(&r, "wasm_filter.attributegen.type.config.error_count"), Some(configures as i64));

    let r = run(scenario(true));
    assert!(r.streams.is_empty(), "refused: no stream runs");
    assert_refused(&r, 0, "invalid configuration at `attributes[0].matches`: unknown field");
}

/// A configuration stats refuses is counted in its config error counter
/// (defined before the configuration is read), once per refusal. A run's
/// result has no metrics then (Envoy exits at start-up with a refused
/// static configuration, tests/conformance/config-refused.json); the VMs'
/// metrics are read from the proxy (an Envoy whose listener update was
/// refused keeps running and shows them).
#[test]
fn a_refused_stats_configuration_is_counted() {
    let scenario = json!({
        "plugins": [{"name": "stats", "wasm": wasm("stats"), "configuration": [false, 0, "evil"]}],
        "streams": [get("svc")]
    });
    let r = run(scenario.clone());
    assert_refused(&r, 0, "invalid configuration at `.`");
    assert!(r.metrics.is_empty() && r.prometheus.is_empty(), "{:#?}", r.metrics);
    let refusals = r.logs.iter().filter(|l| l.level == LogLevel::Error && l.message.contains("at `.`")).count();
    assert!(refusals > 0);
    let s = host_sim::Scenario::from_json(&scenario.to_string()).unwrap();
    let proxy = host_sim::Proxy::start(&s, host_sim::VmLimits::default()).unwrap();
    assert!(!proxy.statuses()[0].configured);
    let want = format!("meshwasm_stats_config_errors_total{{}} {refusals}");
    assert!(proxy.prometheus().lines().any(|l| l == want), "{want} in {}", proxy.prometheus());
}
