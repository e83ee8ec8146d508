//! The `attributegen` plugin under host-sim: Istio's seed example, first
//! match wins, empty conditions, phases, evaluation errors, attributes read
//! through the proxy (node metadata, headers, response code, mTLS), and bad
//! configurations rejected with the field's path. A `probe` placed after
//! attributegen reads the generated attribute back as a property, as the
//! `stats` plugin does.
//!
//! The plugins must be built first:
//! `cargo build --target wasm32-wasip1 --release` (these tests never build them).

use host_sim::result::{LogLine, RunResult, StreamResult};
use serde_json::{json, Value};
use std::path::Path;

mod common;
use common::{plugin_wasm as wasm, run};

const SEED: &str = "request.url_path == '/api/catalog' && request.method == 'GET'";

fn seed_config() -> Value {
    json!({"attributes": [{"output_attribute": "istio_operationId",
        "match": [{"value": "ListCatalog", "condition": SEED}]}]})
}

fn attributegen(config: Value) -> Value {
    json!({"name": "attributegen", "wasm": wasm("attributegen"), "root_id": "attributegen", "configuration": config})
}

/// A probe after attributegen: the `x-probe` header says what it reads, when.
fn probe() -> Value {
    json!({"name": "probe", "wasm": wasm("probe"), "root_id": "probe", "configuration": {}})
}

fn stream(method: &str, path: &str, probe_actions: &str) -> Value {
    json!({"request": {"headers": [[":method", method], [":path", path], [":authority", "catalog.local"],
        ["x-probe", probe_actions]]}})
}

fn messages(logs: &[LogLine]) -> Vec<&str> {
    logs.iter().map(|l| l.message.as_str()).collect()
}

/// What the probe logged for `prop <path>=`.
fn prop<'a>(s: &'a StreamResult, path: &str) -> &'a str {
    let prefix = format!("prop {path}=");
    s.logs
        .iter()
        .find_map(|l| l.message.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{prefix}` log line; logs: {:#?}", messages(&s.logs)))
}

fn assert_configured(r: &RunResult) {
    for p in &r.plugins {
        assert!(p.configured, "{} rejected: {:?}; logs: {:#?}", p.name, p.error, messages(&r.logs));
    }
}

fn metric(r: &RunResult, suffix: &str) -> Option<i64> {
    r.metrics.iter().find(|m| m.name.ends_with(suffix)).map(|m| m.value)
}

/// Istio's seed example: `istio_operationId` is `ListCatalog` for
/// `GET /api/catalog` only, and a later filter reads it as a property (the
/// filter state `wasm.istio_operationId`) in its own `on_log`.
#[test]
fn seed_example_sets_istio_operation_id() {
    let read = "prop=istio_operationId@log";
    let r = run(json!({
        "plugins": [attributegen(seed_config()), probe()],
        "streams": [
            stream("GET", "/api/catalog", read),
            stream("POST", "/api/catalog", read),
            stream("GET", "/api/catalog/item", read),
            stream("GET", "/api/catalog?page=2", read),
            stream("GET", "/api/other", read)
        ]
    }));
    assert_configured(&r);
    let seen: Vec<&str> = r.streams.iter().map(|s| prop(s, "istio_operationId")).collect();
    assert_eq!(seen, ["ListCatalog", "<missing>", "<missing>", "ListCatalog", "<missing>"], "url_path has no query");
    for s in &r.streams {
        assert_eq!(s.downstream_response.as_ref().unwrap().status, 200, "attributegen never changes traffic");
        assert!(s.plugin_failure.is_none());
    }
}

/// Istio generates attributes after the response by default (in `on_log`),
/// so a filter reading it during the request does not see it yet; with
/// `phase: ON_REQUEST` it is set in `on_request_headers`, before the filters
/// after it run.
#[test]
fn default_phase_is_after_the_response_on_request_is_earlier() {
    let config = json!({"attributes": [
        seed_config()["attributes"][0].clone(),
        {"output_attribute": "early_op", "phase": "ON_REQUEST", "match": [{"value": "ListCatalog", "condition": SEED}]}
    ]});
    let r = run(json!({
        "plugins": [attributegen(config), probe()],
        "streams": [stream("GET", "/api/catalog", "prop=istio_operationId@reqh,prop=early_op@reqh")]
    }));
    assert_configured(&r);
    let s = &r.streams[0];
    assert_eq!(prop(s, "istio_operationId"), "<missing>", "not generated before on_log");
    assert_eq!(prop(s, "early_op"), "ListCatalog");
}

/// Matches are tried in order and the first true one wins; an empty (or
/// absent) condition always matches, so it gives a default. Response
/// attributes are there in `on_log`.
#[test]
fn first_match_wins_and_empty_condition_is_a_default() {
    let config = json!({"attributes": [{"output_attribute": "istio_responseClass", "match": [
        {"value": "2xx", "condition": "response.code >= 200 && response.code <= 299"},
        {"value": "404", "condition": "response.code == 404"},
        {"value": "4xx", "condition": "response.code >= 400 && response.code <= 499"},
        {"value": "other", "condition": ""}
    ]}, {"output_attribute": "always", "match": [{"value": "yes"}]}]});
    let with_status = |status: u16| {
        json!({"request": {"headers": [[":method", "GET"], [":path", "/"], [":authority", "a"],
            ["x-probe", "prop=istio_responseClass@log,prop=always@log"]]}, "upstream": {"status": status}})
    };
    let r = run(json!({
        "plugins": [attributegen(config), probe()],
        "streams": [with_status(200), with_status(404), with_status(403), with_status(503)]
    }));
    assert_configured(&r);
    let seen: Vec<&str> = r.streams.iter().map(|s| prop(s, "istio_responseClass")).collect();
    assert_eq!(seen, ["2xx", "404", "4xx", "other"]);
    assert!(r.streams.iter().all(|s| prop(s, "always") == "yes"));
}

/// Conditions read the proxy's attributes in Envoy's encodings: node
/// metadata (from the protobuf `xds.node`, also as Istio's older `node`),
/// request headers as a map, the response code, connection.mtls, the
/// request time and duration.
#[test]
fn conditions_read_proxy_attributes() {
    let gen = |name: &str, condition: &str| json!({"output_attribute": name, "match": [{"value": "true", "condition": condition}, {"value": "false"}]});
    let config = json!({"attributes": [
        gen("mesh", "node.metadata['MESH_ID'] == 'mesh1'"),
        gen("xds_mesh", "xds.node.metadata['MESH_ID'] == 'mesh1' && xds.node.metadata.LABELS.app == 'catalog'"),
        gen("num", "node.metadata['N'] == 2.0"),
        gen("user", "request.headers['x-user'] == 'alice'"),
        gen("has_user", "!has(request.headers.absent) && 'x-user' in request.headers"),
        gen("user_lower", "request.headers['x-user'].upperAscii().lowerAscii() == 'alice'"),
        gen("code", "response.code == 201"),
        gen("mtls", "connection.mtls"),
        gen("timed", "request.duration >= duration('0s') && request.time.getFullYear() == 2026"),
        gen("path_re", "request.url_path.matches('^/shelves/[[:alnum:]]*/books/[[:alnum:]]*$')")
    ]});
    let r = run(json!({
        "plugins": [attributegen(config), probe()],
        "node": {"metadata": {"MESH_ID": "mesh1", "N": 2, "LABELS": {"app": "catalog"}}},
        "connection": {"mtls": true},
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/shelves/s1/books/b2"], [":authority", "a"],
            ["x-user", "alice"],
            ["x-probe", "prop=mesh@log,prop=xds_mesh@log,prop=num@log,prop=user@log,prop=user_lower@log,prop=code@log,prop=mtls@log,prop=timed@log,prop=path_re@log,prop=has_user@log"]]},
            "upstream": {"status": 201}}]
    }));
    assert_configured(&r);
    let s = &r.streams[0];
    for name in ["mesh", "xds_mesh", "num", "user", "has_user", "user_lower", "code", "mtls", "timed", "path_re"] {
        assert_eq!(prop(s, name), "true", "{name}; logs: {:#?}", messages(&s.logs));
    }
}

/// A condition that fails to evaluate (here: a header that is not there)
/// ends that attribute's evaluation, as in Istio: it is left unset even
/// when a later match would be true, the runtime error counter goes up,
/// and the other attributes are unaffected.
#[test]
fn evaluation_errors_leave_the_attribute_unset() {
    let config = json!({"debug": true, "attributes": [
        {"output_attribute": "tenant", "match": [
            {"value": "acme", "condition": "request.headers['x-tenant'] == 'acme'"},
            {"value": "default"}]},
        {"output_attribute": "not_bool", "match": [{"value": "x", "condition": "request.method"}]},
        {"output_attribute": "istio_operationId", "match": [{"value": "ListCatalog", "condition": SEED}]}
    ]});
    let r = run(json!({
        "plugins": [attributegen(config), probe()],
        "streams": [stream("GET", "/api/catalog", "prop=tenant@log,prop=not_bool@log,prop=istio_operationId@log")]
    }));
    assert_configured(&r);
    let s = &r.streams[0];
    assert_eq!(prop(s, "tenant"), "<missing>");
    assert_eq!(prop(s, "not_bool"), "<missing>");
    assert_eq!(prop(s, "istio_operationId"), "ListCatalog");
    assert_eq!(metric(&r, "wasm_filter.attributegen.type.runtime.error_count"), Some(2));
    let logs = messages(&s.logs);
    assert!(logs.iter().any(|m| m.contains("tenant: match[0] failed") && m.contains("x-tenant")), "{logs:#?}");
    assert!(logs.contains(&"set istio_operationId = ListCatalog (Ok(()))"), "{logs:#?}");
}

/// Bad configurations are rejected (Envoy would refuse the listener) with a
/// log line naming the field (errors Istio tolerated only with `strict`:
/// tests/tests/config_compat.rs has them tolerated).
#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases = [
        (
            json!({"strict": true, "attributes": [{"output_attribute": "a", "match": [{"value": "v", "condition": "request.method =="}]}]}),
            "invalid configuration at `attributes[0].match[0].condition`: bad CEL: ",
        ),
        (
            json!({"strict": true, "attributes": [{"output_attribute": "a", "match": [{"value": "v"}, {"value": "w", "condition": "request.url_path.matches('[')"}]}]}),
            "invalid configuration at `attributes[0].match[1].condition`: bad CEL: invalid regex '['",
        ),
        (
            json!({"strict": true, "attributes": [{"match": [{"value": "v"}]}]}),
            "invalid configuration at `attributes[0].output_attribute`: missing",
        ),
        (
            json!({"strict": true, "attributes": [{"output_attribute": "a", "matches": []}]}),
            "invalid configuration at `attributes[0].matches`: unknown field",
        ),
        (
            json!({"attributes": [{"output_attribute": "a", "match": [{"value": 1}]}]}),
            "invalid configuration at `attributes[0].match[0].value`: invalid type",
        ),
        (json!({"debug": "maybe"}), "invalid configuration at `debug`"),
        (
            json!({"strict": true, "attributes": [{"output_attribute": "a", "phase": "LATER"}]}),
            "invalid configuration at `attributes[0].phase`",
        ),
        (json!("not json"), "invalid configuration at `.`"),
    ];
    // One scenario (the module compiles once), one attributegen per case.
    let plugins: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (config, _))| {
            json!({"name": format!("bad{i}"), "wasm": wasm("attributegen"), "root_id": format!("bad{i}"), "configuration": config})
        })
        .collect();
    let scenario = json!({"plugins": plugins, "streams": [stream("GET", "/", "")]});
    let r = run(scenario.clone());
    assert!(r.streams.is_empty(), "Envoy would refuse the configuration: no stream runs");
    let logs = messages(&r.logs);
    for (i, (config, want)) in cases.iter().enumerate() {
        let p = &r.plugins[i];
        assert!(!p.configured, "accepted {config}");
        let error = p.error.as_deref().unwrap_or("");
        assert!(error.contains(&format!("Unable to create Wasm plugin bad{i}")), "{error}");
        let name = format!("bad{i}");
        assert!(
            r.logs.iter().any(|l| l.plugin == name
                && l.message.starts_with("invalid configuration at `")
                && l.message.contains(want)),
            "{config}: want {want:?} in {logs:#?}"
        );
    }
    // Envoy exits at start-up with a refused configuration, so the result
    // has no stats; each refusal is counted in the VMs' store.
    assert!(r.metrics.is_empty(), "{:#?}", r.metrics);
    let s = host_sim::Scenario::from_json(&scenario.to_string()).unwrap();
    let proxy = host_sim::Proxy::start(&s, host_sim::VmLimits::default()).unwrap();
    let prometheus = proxy.prometheus();
    let counted = prometheus
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("attributegen_type_config_error_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok());
    assert_eq!(counted, Some(cases.len()), "{prometheus}");
}

/// Istio's protobuf JSON names (`outputAttribute`) and nulls are accepted;
/// no configuration at all generates nothing and passes traffic.
#[test]
fn istio_json_forms_and_empty_config() {
    let config = json!({"debug": null, "attributes": [{"outputAttribute": "istio_operationId", "phase": 0,
        "match": [{"value": "ListCatalog", "condition": SEED}]}]});
    let r = run(json!({
        "plugins": [attributegen(config), probe()],
        "streams": [stream("GET", "/api/catalog", "prop=istio_operationId@log")]
    }));
    assert_configured(&r);
    assert_eq!(prop(&r.streams[0], "istio_operationId"), "ListCatalog");

    let r = run(json!({
        "plugins": [{"name": "attributegen", "wasm": wasm("attributegen"), "root_id": "attributegen"}, probe()],
        "streams": [stream("GET", "/api/catalog", "prop=istio_operationId@log")]
    }));
    assert_configured(&r);
    assert_eq!(prop(&r.streams[0], "istio_operationId"), "<missing>");
    assert_eq!(r.streams[0].downstream_response.as_ref().unwrap().status, 200);
}

/// Two attributegen instances writing the same attribute: the later filter's
/// value is what later filters see (Istio: "the result of the last
/// configuration will be visible").
#[test]
fn the_last_instance_wins() {
    let gen = |name: &str, value: &str| {
        json!({"name": name, "wasm": wasm("attributegen"), "root_id": name,
            "configuration": {"attributes": [{"output_attribute": "op", "match": [{"value": value}]}]}})
    };
    let r = run(json!({
        "plugins": [gen("first", "one"), gen("second", "two"), probe()],
        "streams": [stream("GET", "/", "prop=op@log")]
    }));
    assert_configured(&r);
    assert_eq!(prop(&r.streams[0], "op"), "two");
}

/// The same plugin in a real Envoy (1.40): the seed example, response
/// classes, node metadata from the protobuf `xds.node`, a header map,
/// response code and duration give the same results as on host-sim, and a
/// bad configuration is refused there too.
#[test]
fn real_envoy_agrees() {
    use host_sim::{diff, envoy, Scenario};
    if envoy::find_envoy(None).is_none() && std::env::var_os("CI").is_none() {
        eprintln!("skipping: no envoy binary (run scripts/setup.sh); CI=true makes this a failure");
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/attributegen.json");
    let gen = |name: &str, condition: &str| json!({"output_attribute": name, "match": [{"value": "yes", "condition": condition}, {"value": "no"}]});
    let attributes = json!({"attributes": [
        gen("mesh", "node.metadata['MESH_ID'] == 'mesh1' && xds.node.metadata.N == 2.0"),
        gen("user", "request.headers['x-user'] == 'alice' && response.code == 201 && request.duration >= duration('0s')"),
        gen("op", SEED)
    ]});
    let in_code = json!({
        "plugins": [attributegen(attributes), probe()],
        "node": {"metadata": {"MESH_ID": "mesh1", "N": 2}},
        "streams": [{"request": {"headers": [[":method", "GET"], [":path", "/api/catalog"], [":authority", "a"],
            ["x-user", "alice"], ["x-probe", "prop=mesh@log,prop=user@log,prop=op@log"]]}, "upstream": {"status": 201}}]
    });
    let bad = json!({
        "plugins": [attributegen(json!({"strict": true, "attributes": [{"output_attribute": "a", "matches": []}]}))],
        "streams": [stream("GET", "/", "")]
    });
    let scenarios = [
        Scenario::load(&example).unwrap_or_else(|e| panic!("{e}")),
        Scenario::from_json(&in_code.to_string()).unwrap(),
        Scenario::from_json(&bad.to_string()).unwrap(),
    ];
    for (i, scenario) in scenarios.iter().enumerate() {
        let on_sim = host_sim::run(scenario).expect("host-sim runs");
        let on_envoy = envoy::run_scenario(scenario).unwrap_or_else(|e| panic!("scenario {i}: envoy: {e:#}"));
        assert!(on_envoy.all_expectations_passed(), "scenario {i}: {:#?}", on_envoy.expectations);
        // A refused configuration too: Envoy exits at start-up, serving
        // nothing and with no stats, and host-sim reports the same.
        let differences = diff::diff(&on_sim, &on_envoy, &diff::Ignore { headers: envoy::HOST_SPECIFIC_HEADERS });
        assert!(differences.is_empty(), "scenario {i}: host-sim differs from Envoy:\n{differences:#?}");
        if i == 1 {
            let s = &on_envoy.streams[0];
            for name in ["mesh", "user", "op"] {
                assert_eq!(prop(s, name), "yes", "{name} in Envoy");
            }
        }
        if i == 2 {
            assert!(!on_envoy.plugins[0].configured);
            assert!(on_envoy
                .logs
                .iter()
                .any(|l| l.message.starts_with("invalid configuration at `attributes[0].matches`")));
        }
    }
}
