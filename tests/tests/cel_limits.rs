//! Deep and costly CEL never traps a plugin (issue 16, defect 1): the
//! compiled `stats` and `attributegen` plugins under host-sim, with
//!
//! * the expressions the issue found trapping, at configure time (`1+1+...`
//!   with 2,500 terms, `request.a.a...` 1,800 deep, `['a']` 3,000 deep) and
//!   in the first request's `on_log` (`1+1+...` with 1,000 terms, `['a']`
//!   750 deep): now refused at configure with the limit named, never a trap,
//!   never a 503, and never in force;
//! * every construct at the largest size the limits allow
//!   (`meshwasm_sdk::cel::{MAX_AST_DEPTH, ...}`, docs/cel.md "Limits"),
//!   evaluated in `on_log` of real requests: the right values, no trap.
//!
//! tests/conformance/cel-deep.json runs the at-the-limit expressions in
//! real Envoy too. The plugins must be built first:
//! `cargo build --target wasm32-wasip1 --release` (these tests never build them).

use host_sim::result::RunResult;
use meshwasm_sdk::cel::{BRACKET_COST, MAX_AST_DEPTH, MAX_ITERATIONS, MAX_NESTING, MAX_PARSE_DEPTH};
use serde_json::{json, Value};

mod common;
use common::{plugin_wasm as wasm, run};

fn get(path: &str) -> Value {
    json!({"request": {"headers": [[":method", "GET"], [":path", path], [":authority", "reviews:9080"],
        ["x-probe", "prop=deep@log"]]}, "upstream": {"status": 200}})
}

fn stats(dimensions: Value) -> Value {
    json!({"name": "stats", "wasm": wasm("stats"), "root_id": "stats",
        "configuration": {"metrics": [{"name": "requests_total", "dimensions": dimensions}]}})
}

fn attributegen(condition: &str) -> Value {
    json!({"name": "attributegen", "wasm": wasm("attributegen"), "root_id": "attributegen",
        "configuration": {"attributes": [{"output_attribute": "deep", "match": [{"value": "set", "condition": condition}]}]}})
}

fn probe() -> Value {
    json!({"name": "probe", "wasm": wasm("probe"), "root_id": "probe", "configuration": {}})
}

/// No plugin trapped, at configure or on any stream, and every stream that
/// ran was answered by the upstream (no 503 `wasm_fail_stream`).
fn assert_no_trap(r: &RunResult, what: &str) {
    for p in &r.plugins {
        let error = p.error.as_deref().unwrap_or("");
        assert!(
            !error.contains("wasm trap") && !error.contains("Function: proxy_"),
            "{what}: {} trapped: {error}",
            p.name
        );
    }
    for s in &r.streams {
        assert!(s.plugin_failure.is_none(), "{what}: {:?}", s.plugin_failure);
        assert_eq!(s.downstream_response.as_ref().map(|d| d.status), Some(200), "{what}");
    }
}

/// The refusal is logged, naming the limit.
fn assert_refusal_logged(r: &RunResult, what: &str) {
    assert!(
        r.logs.iter().any(|l| l.message.contains("expression too deep")),
        "{what}: no log line names the limit: {:#?}",
        r.logs.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
}

/// The expressions of the issue: each trapped the VM, at configure or in
/// the first `on_log`.
fn issue_expressions() -> Vec<(&'static str, String)> {
    vec![
        ("1+1 with 2,500 terms", format!("1{} > 0", "+1".repeat(2499))),
        ("request.a.a 1,800 deep", format!("request{} == 'x'", ".a".repeat(1800))),
        ("['a'] 3,000 deep", format!("request.headers{} == 'x'", "['a']".repeat(3000))),
        ("1+1 with 1,000 terms", format!("1{} > 0", "+1".repeat(999))),
        ("['a'] 750 deep", format!("request.headers{} == 'x'", "['a']".repeat(750))),
    ]
}

/// As attributegen conditions: refused at configure, never a trap, and the
/// attribute they guard is never set.
#[test]
fn the_issues_deep_conditions_do_not_trap_attributegen() {
    for (what, condition) in issue_expressions() {
        let r = run(json!({"plugins": [attributegen(&condition), probe()], "streams": [get("/"), get("/again")]}));
        assert_no_trap(&r, what);
        assert_refusal_logged(&r, what);
        for s in &r.streams {
            let seen = s.logs.iter().find_map(|l| l.message.strip_prefix("prop deep="));
            assert_eq!(seen, Some("<missing>"), "{what}: the condition is not in force");
        }
    }
}

/// As stats dimensions: refused at configure, never a trap, and never a
/// label value (`2500`, `true`, ...).
#[test]
fn the_issues_deep_dimensions_do_not_trap_stats() {
    for (what, expr) in issue_expressions() {
        let r = run(json!({"plugins": [stats(json!({"deep": expr, "arith": "1 + 1"}))],
            "streams": [get("/"), get("/again")]}));
        assert_no_trap(&r, what);
        assert_refusal_logged(&r, what);
        for m in &r.metrics {
            assert!(!m.name.contains("deep=.=true") && !m.name.contains("deep=.=false"), "{what}: {}", m.name);
        }
    }
}

/// Each construct at the largest size the limits allow, and the value it
/// must evaluate to (`unknown`: an evaluation error, as for a missing
/// attribute; the point is the full-depth recursion, not the value).
pub fn at_the_limits() -> Vec<(&'static str, String, String)> {
    let d = MAX_AST_DEPTH;
    let list = |n: usize| format!("[{}]", (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    // Ternaries and brackets each cost BRACKET_COST of the parse depth.
    let ternaries = MAX_PARSE_DEPTH / BRACKET_COST;
    let in_brackets = MAX_PARSE_DEPTH - MAX_NESTING * BRACKET_COST;
    vec![
        ("add", format!("1{}", " + 1".repeat(d - 1)), d.to_string()),
        ("rel", format!("true{}", " == true".repeat(d - 1)), "true".into()),
        ("call", format!("'A'{}", ".lowerAscii()".repeat(d - 1)), "a".into()),
        ("member", format!("request{}", ".a".repeat(d - 1)), "unknown".into()),
        ("index", format!("request.headers{}", "['a']".repeat(d - 2)), "unknown".into()),
        ("ternary", format!("{}'end'", "false ? 'x' : ".repeat(ternaries)), "end".into()),
        ("or", format!("{}true", "false || ".repeat(1000)), "true".into()),
        ("not", format!("{}true", "!".repeat(1001)), "false".into()),
        ("nesting", format!("size({}1{})", "[".repeat(MAX_NESTING - 1), "]".repeat(MAX_NESTING - 1)), "1".into()),
        (
            "mixed",
            format!("{}1{}{}", "(".repeat(MAX_NESTING), " + 1".repeat(in_brackets), ")".repeat(MAX_NESTING)),
            (in_brackets + 1).to_string(),
        ),
        ("comprehension", "[1, 2].all(x, [3, 4].exists(y, y > x))".into(), "true".into()),
        // Each comprehension's range is charged through a call: two levels.
        ("comprehensions", format!("[1]{}.size()", ".map(a, a)".repeat((d - 3) / 2)), "1".into()),
        (
            "iterations",
            format!("{}.all(x, {}.all(y, y >= 0))", list(100), list(MAX_ITERATIONS / 100 - 1)),
            "true".into(),
        ),
        (
            "iterations_over",
            format!("{}.all(x, {}.all(y, y >= 0))", list(100), list(MAX_ITERATIONS / 100)),
            "unknown".into(),
        ),
    ]
}

/// Every at-the-limit expression compiles, and evaluates in `on_log` of
/// three requests to its value, as a `requests_total` dimension.
#[test]
fn expressions_at_the_limits_evaluate_without_trapping() {
    let cases = at_the_limits();
    let dimensions: serde_json::Map<String, Value> =
        cases.iter().map(|(name, expr, _)| (format!("d_{name}"), json!(expr))).collect();
    let r = run(json!({"plugins": [stats(Value::Object(dimensions))], "streams": [get("/a"), get("/b"), get("/c")]}));
    assert_no_trap(&r, "at the limits");
    assert!(r.plugins[0].configured, "{:?}\n{:#?}", r.plugins[0].error, r.logs);
    assert!(r.logs.iter().all(|l| !l.message.contains("too deep")), "{:#?}", r.logs);
    let series: Vec<&str> =
        r.metrics.iter().filter(|m| m.name.contains("istio_requests_total")).map(|m| m.name.as_str()).collect();
    assert_eq!(series.len(), 1, "one series for three identical requests: {series:#?}");
    for (name, expr, want) in &cases {
        let label = format!("d_{name}=.={want};.;");
        assert!(series[0].contains(&label), "{name} ({} bytes): want {label} in {}", expr.len(), series[0]);
    }
    let total = r.metrics.iter().find(|m| m.name.contains("istio_requests_total")).map(|m| m.value);
    assert_eq!(total, Some(3));
}

/// One past each limit is refused (and logged), and the plugin still runs.
#[test]
fn one_past_the_limits_is_refused_without_trapping() {
    let d = MAX_AST_DEPTH;
    for (what, expr) in [
        ("ast depth", format!("1{}", " + 1".repeat(d))),
        ("parse depth", format!("request{}", ".a".repeat(MAX_PARSE_DEPTH + 1))),
        ("nesting", format!("{}1{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1))),
        ("ternaries", format!("{}'end'", "false ? 'x' : ".repeat(MAX_PARSE_DEPTH / BRACKET_COST + 1))),
    ] {
        let r = run(json!({"plugins": [stats(json!({"deep": expr}))], "streams": [get("/")]}));
        assert_no_trap(&r, what);
        assert_refusal_logged(&r, what);
    }
}
