//! The `stats` plugin against hostile label values (issue 16, defects 2
//! and 3): no value can forge a stat name, and no stream of distinct huge
//! values can grow the plugin's memory without bound.
//!
//! * A property test (native, no wasm): arbitrary values for Istio's 25
//!   standard labels, made safe by the SDK's `StatNaming`, joined into a
//!   stat name and read back with the tag regexes of Istio's bootstrap by
//!   host-sim's Prometheus extraction (as Envoy reads them), always give the
//!   intended family and exactly the intended labels; also for other
//!   separator pairs with the matching regexes.
//! * The issue's cases through the compiled plugin under host-sim (build it
//!   first: `cargo build --target wasm32-wasip1 --release -p stats`).

use host_sim::prometheus::{extract, istio_default_stats_tags, render, Stat, ISTIO_LABELS};
use meshwasm_sdk::istio::StatNaming;
use meshwasm_wire::abi::{LogLevel, MetricType};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Value};

mod common;
use common::run;

// -------------------------------------------------- the property

/// Pieces hostile values are made of: the separators whole and in part,
/// runs of their characters, line breaks and other control characters,
/// Prometheus' escapes, non-ASCII text, and any character at all.
fn hostile_value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            ";",
            ".",
            "=",
            ";.;",
            "=.=",
            ";.",
            ".;",
            "=.",
            ".=",
            ";;",
            "..",
            "==",
            "|",
            ":",
            "_",
            "\n",
            "\r",
            "\t",
            "\0",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\"",
            "\\",
            " ",
            "a",
            "reviews",
            "default.svc",
            "é",
            "✓",
            "reporter",
            "response_code",
        ])
        .prop_map(str::to_string),
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

/// Tag rules as Envoy builds them from `stats_tags`.
fn rules_for(naming: &StatNaming, labels: &[&str]) -> Vec<(String, Regex)> {
    labels
        .iter()
        .map(|l| {
            let re = format!(
                "({}{}(.*?){})",
                regex::escape(l),
                regex::escape(&naming.value_separator),
                regex::escape(&naming.field_separator)
            );
            (l.to_string(), Regex::new(&re).unwrap())
        })
        .collect()
}

/// What the plugin does with a label set: bounded values, joined.
fn check_round_trip(naming: &StatNaming, rules: &[(String, Regex)], values: &[String]) -> Result<(), TestCaseError> {
    let bounded: Vec<String> = values.iter().map(|v| naming.label_value(v).0.into_owned()).collect();
    let full = naming.metric_name("requests_total");
    let labels: Vec<(&str, &str)> = ISTIO_LABELS.iter().copied().zip(bounded.iter().map(String::as_str)).collect();
    let stat = naming.stat_name(&full, labels.iter().copied());
    let e = extract(&stat, rules);
    prop_assert_eq!(&e.name, &full, "stat name {:?}", stat);
    let want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    prop_assert_eq!(e.tags, want);
    for (v, b) in values.iter().zip(&bounded) {
        prop_assert!(b.len() <= naming.max_value_bytes, "{} bytes", b.len());
        // Envoy drops a tag value's trailing dots; the plugin does first.
        prop_assert!(!b.ends_with('.'), "{:?}", b);
        // Everyday values (none of the separators' characters, no
        // trailing dot) pass unchanged.
        let seps = format!("{}{}", naming.field_separator, naming.value_separator);
        let everyday = |c: char| (c.is_ascii_alphanumeric() || "-_:/@.".contains(c)) && !seps.contains(c);
        if v.chars().all(everyday) && !v.ends_with('.') && v.len() <= naming.max_value_bytes {
            prop_assert_eq!(v, b);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Istio's separators and Istio's bootstrap regexes, exactly as
    /// host-sim renders `/stats/prometheus`.
    #[test]
    fn no_value_forges_a_stat_name(values in prop::collection::vec(hostile_value(), 25)) {
        let naming = StatNaming::default().with_max_value_bytes(24);
        let rules: Vec<(String, Regex)> = istio_default_stats_tags()
            .into_iter()
            .map(|t| (t.tag_name, Regex::new(&t.regex).unwrap()))
            .collect();
        check_round_trip(&naming, &rules, &values)?;
        // And the whole Prometheus line: one family, the labels in order.
        let bounded: Vec<String> = values.iter().map(|v| naming.label_value(v).0.into_owned()).collect();
        let name = naming.stat_name("istio_requests_total", ISTIO_LABELS.iter().copied().zip(bounded.iter().map(String::as_str)));
        let text = render(&[Stat { name, kind: MetricType::Counter, value: 1, samples: vec![] }], &istio_default_stats_tags());
        let labels: Vec<String> = ISTIO_LABELS
            .iter()
            .zip(&bounded)
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', r"\\").replace('"', "\\\"")))
            .collect();
        let line = format!("istio_requests_total{{{}}} 1", labels.join(","));
        prop_assert_eq!(text, format!("# TYPE istio_requests_total counter\n{line}\n"));
    }

    /// Other separator pairs, with regexes built the same way.
    #[test]
    fn no_value_forges_a_stat_name_with_other_separators(
        values in prop::collection::vec(hostile_value(), 25),
        pair in prop::sample::select(vec![(";;", "=="), ("|", ":"), ("..", "."), (";", "="), ("_;", "=_"), ("::", ";")]),
    ) {
        let naming = StatNaming::new("", pair.0, pair.1).with_max_value_bytes(24);
        let rules = rules_for(&naming, ISTIO_LABELS);
        check_round_trip(&naming, &rules, &values)?;
    }
}

// -------------------------------------------------- through the plugin

fn stats_wasm() -> String {
    common::plugin_wasm("stats")
}

/// Istio's `x-envoy-peer-metadata` header for a peer with this workload name.
fn peer_header(workload_name: &str) -> String {
    common::peer_header(
        json!({"NAME": "p-1", "NAMESPACE": "default", "WORKLOAD_NAME": workload_name, "CLUSTER_ID": "Kubernetes"}),
    )
}

fn get(authority: &str, extra: &[[&str; 2]]) -> Value {
    let mut headers = vec![json!([":method", "GET"]), json!([":path", "/"]), json!([":authority", authority])];
    headers.extend(extra.iter().map(|h| json!(h)));
    json!({"request": {"headers": headers}, "upstream": {"status": 200}})
}

/// Every stream answered by the upstream (no 503 `wasm_fail_stream`), the
/// plugin configured and never trapped.
fn assert_served(r: &host_sim::RunResult) {
    for p in &r.plugins {
        assert!(p.configured && p.error.is_none(), "{p:?}");
    }
    for (i, s) in r.streams.iter().enumerate() {
        let status = s.downstream_response.as_ref().map(|d| d.status);
        assert_eq!(status, Some(200), "stream {i}: {:?}", s.local_reply);
    }
    let critical: Vec<_> =
        r.logs.iter().chain(r.streams.iter().flat_map(|s| &s.logs)).filter(|l| l.level == LogLevel::Critical).collect();
    assert!(critical.is_empty(), "{critical:#?}");
}

/// The issue's forgeries: `Host: reviews;.` truncated `destination_service`
/// to `reviews` and renamed the families `____istio_requests_total`; a
/// peer `WORKLOAD_NAME` with a newline renamed them
/// `source_workload___evil_name___istio_requests_total` and dropped the
/// label. Now each value stays in its label and the family keeps its name.
#[test]
fn issue_forgeries_keep_family_and_labels() {
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm()}],
        "node": common::reviews_node(),
        "streams": [
            get("reviews;.", &[]),
            get("reviews", &[["x-envoy-peer-metadata-id", "p-1"], ["x-envoy-peer-metadata", &peer_header("evil\nname")]]),
        ]
    }));
    assert_served(&r);
    // Istio's families by their own names (the plugin's own meshwasm_*
    // counters aside): nothing renamed, nothing extra.
    let families: Vec<&str> = r
        .prometheus
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter(|f| !f.starts_with("meshwasm_stats_"))
        .collect();
    assert_eq!(
        families,
        [
            "istio_requests_total counter",
            "istio_build gauge",
            "istio_request_bytes histogram",
            "istio_request_duration_milliseconds histogram",
            "istio_response_bytes histogram"
        ],
        "{}",
        r.prometheus
    );
    let requests: Vec<&str> = r.prometheus.lines().filter(|l| l.starts_with("istio_requests_total{")).collect();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for l in &requests {
        assert_eq!(l.matches("=\"").count(), 25, "{l}");
    }
    assert!(
        requests
            .iter()
            .any(|l| l.contains("destination_service=\"reviews;\"")
                && l.contains("destination_service_name=\"reviews;\"")),
        "{requests:#?}"
    );
    assert!(requests.iter().any(|l| l.contains("source_workload=\"evil_name\"")), "{requests:#?}");
}

/// Distinct 50 KB hosts (Envoy's 60 KB header limit allows them), fed to a
/// dozen `request.host` dimensions: the issue's VM ran out of memory after
/// 1,528 series and answered 503 from then on. Now values are cut at 512
/// bytes (counted), the series' bytes stay under `max_series_bytes`, and
/// every request is served.
#[test]
fn distinct_huge_hosts_keep_memory_bounded() {
    let hosts = 300;
    let dims: serde_json::Map<String, Value> = (0..12).map(|i| (format!("host_{i}"), json!("request.host"))).collect();
    let streams: Vec<Value> = (0..hosts).map(|i| get(&format!("h{i:05}-{}", "x".repeat(50_000)), &[])).collect();
    let r = run(json!({
        "plugins": [{"wasm": stats_wasm(), "configuration": {
            "metrics": [{"name": "requests_total", "dimensions": dims}],
            "max_series_bytes": 4_000_000
        }}],
        "node": common::reviews_node(),
        // Istio's tags plus one per dimension (Istio's `extraStatTags`).
        "stats_tags": ISTIO_LABELS.iter().map(|l| l.to_string()).chain(dims.keys().cloned())
            .map(|l| json!({"tag_name": l, "regex": format!(r"({l}=\.=(.*?);\.;)")}))
            .collect::<Vec<Value>>(),
        "streams": streams
    }));
    assert_served(&r);
    let metric = |name: &str| r.metrics.iter().find(|m| m.name == name).map(|m| m.value);
    // destination_service, destination_service_name and the dimensions'
    // one expression (the plugin evaluates each distinct source once).
    assert_eq!(metric("meshwasm_stats_truncated_values_total"), Some(3 * hosts));
    let requests: Vec<&str> = r.prometheus.lines().filter(|l| l.starts_with("istio_requests_total")).collect();
    let overflow: Vec<&&str> = requests.iter().filter(|l| l.contains("destination_service=\"overflow\"")).collect();
    assert_eq!(overflow.len(), 1, "one overflow series");
    let regular = requests.len() as i64 - 1;
    // A label set here costs about 25 KB (key and stat name of
    // requests_total with 14 values of 512 bytes, about 16 KB, and of the
    // three histograms with 2 such values, about 3 KB each): 4 MB holds
    // about 155.
    assert!((120..200).contains(&regular), "{regular} regular series");
    assert!(overflow[0].ends_with(&format!(" {}", hosts - regular)), "{}", overflow[0]);
    assert!(metric("meshwasm_stats_overflow_total").unwrap_or(0) >= hosts - regular);
    // Each value is cut to 512 bytes, on the `h00000-xxx…` prefix.
    let longest = requests.iter().map(|l| l.len()).max().unwrap_or(0);
    assert!(longest < 14 * 600 + 2_000, "{longest} bytes in one line");
}
