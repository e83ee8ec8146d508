//! A run's result as a person reads it (`host-sim run --format text`): the
//! plugins, what happened to each stream and TCP connection, the
//! expectations, and each metric family as a small table. Pure: it renders
//! a [`RunResult`] (and, if given, the scenario for the request lines), so
//! it works the same for both engines.
//!
//! Metrics come from the result's Prometheus text (both engines produce
//! it, with tags already extracted). A family's series usually share most
//! labels (Istio's 25); the table shows only the labels that differ, the
//! shared ones once above it, and labels every family shares once for the
//! whole section.

use crate::result::{header, LogLine, RunResult};
use crate::scenario::Scenario;
use std::fmt::Write;

/// What to render besides the result.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    /// The scenario that ran: gives each stream's request line (the result
    /// has only what reached the upstream).
    pub scenario: Option<&'a Scenario>,
    /// Append the full Prometheus text.
    pub prometheus: bool,
}

/// Wrap label lists at this width.
const WIDTH: usize = 100;

pub fn render(r: &RunResult, o: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {} (engine {})", r.scenario, r.engine);
    for p in &r.plugins {
        let state = match (&p.error, p.configured) {
            (_, true) => "configured".to_string(),
            (Some(e), false) => format!("REJECTED: {e}"),
            (None, false) => "REJECTED".to_string(),
        };
        let root = if p.root_id.is_empty() { String::new() } else { format!(" (root_id {:?})", p.root_id) };
        let _ = writeln!(out, "plugin {}{root}: {state}", p.name);
    }
    if !r.logs.is_empty() {
        let _ = writeln!(out, "logs outside streams:");
        logs(&mut out, &r.logs);
    }
    for (i, s) in r.streams.iter().enumerate() {
        // One line for the exchange as the client saw it, one for the upstream.
        let spec = o.scenario.and_then(|sc| sc.streams.get(i));
        let request = spec.map(|sp| request_line(&sp.request.headers)).filter(|l| !l.is_empty());
        let outcome = match &s.downstream_response {
            Some(d) => format!("{} ({} body bytes)", d.status, d.body.len()),
            None if s.reset => "no response (reset)".to_string(),
            None => "no response (stalled)".to_string(),
        };
        let _ = writeln!(out, "stream {i}{}: {} -> {outcome}", name(&s.name), request.as_deref().unwrap_or("request"));
        match &s.upstream_request {
            Some(u) => {
                let line = request_line(&u.headers);
                let what = if request.as_deref() == Some(line.as_str()) { "the request".to_string() } else { line };
                let _ =
                    writeln!(out, "  upstream got {what} ({} headers, {} body bytes)", u.headers.len(), u.body.len());
            }
            None => {
                let _ = writeln!(out, "  upstream got nothing");
            }
        }
        if let Some(l) = &s.local_reply {
            let details = if l.details.is_empty() { String::new() } else { format!(" ({})", l.details) };
            let _ = writeln!(out, "  local reply {} from {}{details}", l.status, l.plugin);
        }
        for c in &s.http_calls {
            let status = c.response_status.map_or("no answer".to_string(), |s| s.to_string());
            let _ = writeln!(out, "  http_call from {} to {} -> {status}", c.plugin, c.cluster);
        }
        if let Some(f) = &s.plugin_failure {
            let _ = writeln!(out, "  plugin {} failed: {}", f.plugin, f.message.lines().next().unwrap_or(""));
        }
        logs(&mut out, &s.logs);
    }
    for (i, c) in r.connections.iter().enumerate() {
        let _ = write!(out, "connection {i}{}: ", name(&c.name));
        if c.upstream_connected {
            let _ = writeln!(
                out,
                "upstream got {} bytes, client got {} bytes",
                c.upstream_received.len(),
                c.downstream_received.len()
            );
        } else {
            let _ = writeln!(out, "upstream not connected, client got {} bytes", c.downstream_received.len());
        }
        if let Some(f) = &c.plugin_failure {
            let _ = writeln!(out, "  plugin {} failed: {}", f.plugin, f.message.lines().next().unwrap_or(""));
        }
        logs(&mut out, &c.logs);
    }
    if !r.expectations.is_empty() {
        let passed = r.expectations.iter().filter(|e| e.passed).count();
        let _ = writeln!(out, "expectations: {passed} of {} passed", r.expectations.len());
        for e in r.expectations.iter().filter(|e| !e.passed) {
            let x = &e.expectation;
            let what = match (&x.pointer, &x.prometheus, &x.log_contains) {
                (Some(p), _, _) => format!("{p} == {}", x.equals.clone().unwrap_or_default()),
                (_, Some(line), _) => format!("prometheus line {line}"),
                (_, _, Some(text)) => format!("a log containing {text:?}"),
                _ => "(empty expectation)".to_string(),
            };
            let found = e.actual.as_ref().map_or(String::new(), |a| format!(", found {a}"));
            let _ = writeln!(out, "  FAILED: {what}{found}");
        }
    }
    out.push_str(&metrics(&r.prometheus, o.prometheus));
    if o.prometheus {
        let _ = writeln!(out, "--- prometheus ---");
        out.push_str(&r.prometheus);
    }
    if let Some(server) = &r.server_proxy {
        // The second proxy of a chain, rendered the same way; its streams
        // are the client proxy's, as they reached it.
        let _ = writeln!(out, "=== server proxy ===");
        out.push_str(&render(server, &Options { scenario: None, prometheus: o.prometheus }));
    }
    out
}

fn name(n: &str) -> String {
    if n.is_empty() {
        String::new()
    } else {
        format!(" {n:?}")
    }
}

/// `GET host/path`, from whichever pseudo-headers are there.
fn request_line(h: &[(String, String)]) -> String {
    let method = header(h, ":method").unwrap_or("");
    let target = format!("{}{}", header(h, ":authority").unwrap_or(""), header(h, ":path").unwrap_or(""));
    [method, target.as_str()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ")
}

/// Log lines in order, a line repeated later (each thread's VM logs its
/// start-up) shown once with its count.
fn logs(out: &mut String, lines: &[LogLine]) {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for l in lines {
        let text = format!("[{}] {}: {}", format!("{:?}", l.level).to_lowercase(), l.plugin, l.message);
        match seen.iter_mut().find(|(t, _)| *t == text) {
            Some((_, n)) => *n += 1,
            None => seen.push((text, 1)),
        }
    }
    for (text, n) in seen {
        let times = if n > 1 { format!(" (x{n})") } else { String::new() };
        let _ = writeln!(out, "  {text}{times}");
    }
}

/// One Prometheus family: its series' labels and value.
#[derive(Debug, Default, PartialEq)]
struct Family {
    name: String,
    kind: String,
    series: Vec<Series>,
}

#[derive(Debug, Default, PartialEq)]
struct Series {
    labels: Vec<(String, String)>,
    /// Counter/gauge value; a histogram's count.
    value: String,
    /// A histogram's sum.
    sum: Option<String>,
}

/// A sample line's metric name, labels and value.
type Sample<'a> = (&'a str, Vec<(String, String)>, &'a str);

/// Splits `name{a="x",b="y"} 3` into name, labels (values as written,
/// still escaped) and value.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches(',');
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let (key, after) = body.split_once("=\"")?;
            // The value ends at the first quote not escaped by a backslash.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end?;
            labels.push((key.trim().to_string(), after[..end].to_string()));
            body = &after[end + 1..];
        }
    } else {
        rest
    };
    Some((name, labels, rest.split_whitespace().next()?))
}

fn parse_families(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut parts = t.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.push(Family { name: name.into(), kind: kind.into(), series: Vec::new() });
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((metric, mut labels, value)) = parse_sample(line) else { continue };
        let family = match families.last_mut() {
            Some(f) if metric == f.name || (f.kind == "histogram" && metric.starts_with(&f.name)) => f,
            _ => {
                families.push(Family { name: metric.into(), kind: "untyped".into(), series: Vec::new() });
                families.last_mut().expect("just pushed")
            }
        };
        let part = metric.strip_prefix(&family.name).unwrap_or("");
        if family.kind == "histogram" {
            labels.retain(|(k, _)| k != "le");
        }
        let series = match family.series.iter_mut().position(|s| s.labels == labels) {
            Some(i) => &mut family.series[i],
            None => {
                family.series.push(Series { labels, ..Default::default() });
                family.series.last_mut().expect("just pushed")
            }
        };
        match part {
            "" | "_count" => series.value = value.into(),
            "_sum" => series.sum = Some(value.into()),
            _ => {} // buckets: in the Prometheus text
        }
    }
    families
}

/// `k="v"` pairs, wrapped at [`WIDTH`] with `indent`.
fn label_lines(out: &mut String, indent: &str, head: &str, labels: &[(String, String)]) {
    let mut line = format!("{indent}{head}");
    for (k, v) in labels {
        let item = format!("{k}=\"{v}\"");
        if line.len() + 1 + item.len() > WIDTH && line.len() > indent.len() + head.len() {
            let _ = writeln!(out, "{line}");
            line = format!("{indent}{}", " ".repeat(head.len()));
        } else if line.len() > indent.len() + head.len() {
            line.push(' ');
        }
        line.push_str(&item);
    }
    let _ = writeln!(out, "{line}");
}

/// Labels (with their value) present in every series of `series`.
fn common_labels<'a>(series: impl Iterator<Item = &'a Series> + Clone) -> Vec<(String, String)> {
    let Some(first) = series.clone().next() else { return Vec::new() };
    first.labels.iter().filter(|l| series.clone().all(|s| s.labels.contains(l))).cloned().collect()
}

/// Labels with a single value wherever they appear, common to the series of
/// at least two families (Istio's peer labels on every standard metric):
/// printed once for the section.
fn shared_labels(families: &[Family], commons: &[Vec<(String, String)>]) -> Vec<(String, String)> {
    let mut shared: Vec<(String, String)> = Vec::new();
    for l in commons.iter().flatten() {
        if shared.contains(l) || commons.iter().filter(|c| c.contains(l)).count() < 2 {
            continue;
        }
        let one_value = families
            .iter()
            .flat_map(|f| f.series.iter().flat_map(|s| s.labels.iter()))
            .all(|(k, v)| k != &l.0 || v == &l.1);
        if one_value {
            shared.push(l.clone());
        }
    }
    shared
}

/// The metrics section: each family as a table of the labels that differ
/// between its series; the labels its series share above the table.
fn metrics(text: &str, full_below: bool) -> String {
    let mut out = String::new();
    let families = parse_families(text);
    if families.is_empty() {
        return out;
    }
    let hint = if full_below { "" } else { " (the full Prometheus text: --prometheus)" };
    let series: usize = families.iter().map(|f| f.series.len()).sum();
    let _ = writeln!(out, "metrics: {} families, {series} series{hint}", families.len());
    let commons: Vec<Vec<(String, String)>> = families.iter().map(|f| common_labels(f.series.iter())).collect();
    let shared = shared_labels(&families, &commons);
    if !shared.is_empty() {
        let _ = writeln!(out, "  shared labels (of the families marked \"+ shared\"):");
        label_lines(&mut out, "    ", "", &shared);
    }
    for (f, common) in families.iter().zip(&commons) {
        // The shared labels this family has: "+ shared", naming the few it
        // lacks; when it lacks most, its labels are listed instead.
        let has: Vec<&(String, String)> = shared.iter().filter(|l| common.contains(l)).collect();
        let missing: Vec<&str> = shared.iter().filter(|l| !common.contains(l)).map(|l| l.0.as_str()).collect();
        let by_reference = !has.is_empty() && missing.len() <= has.len();
        let mark = match (by_reference, missing.is_empty()) {
            (false, _) => String::new(),
            (true, true) => " + shared".to_string(),
            (true, false) => format!(" + shared except {}", missing.join(" ")),
        };
        let own: Vec<(String, String)> =
            common.iter().filter(|l| !(by_reference && shared.contains(l))).cloned().collect();
        // The differing label names, in first-seen order.
        let mut columns: Vec<&str> = Vec::new();
        for s in &f.series {
            for l in s.labels.iter().filter(|l| !common.contains(l)) {
                if !columns.contains(&l.0.as_str()) {
                    columns.push(&l.0);
                }
            }
        }
        let histogram = f.kind == "histogram";
        let n = f.series.len();
        if n == 1 && columns.is_empty() {
            let s = &f.series[0];
            let value = match (&s.sum, histogram) {
                (Some(sum), true) => format!("count {} sum {sum}", s.value),
                _ => s.value.clone(),
            };
            let _ = writeln!(out, "{} ({}): {value}{mark}", f.name, f.kind);
        } else {
            let _ = writeln!(out, "{} ({}, {n} series){mark}", f.name, f.kind);
        }
        if !own.is_empty() {
            label_lines(&mut out, "    ", "", &own);
        }
        if n == 1 && columns.is_empty() {
            continue;
        }
        let mut head: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let mut rows: Vec<Vec<String>> = f
            .series
            .iter()
            .map(|s| {
                let mut row: Vec<String> = columns
                    .iter()
                    .map(|c| match s.labels.iter().find(|(k, _)| k == c) {
                        Some((_, v)) if v.is_empty() => "\"\"".to_string(),
                        Some((_, v)) => v.clone(),
                        None => "-".to_string(),
                    })
                    .collect();
                row.push(s.value.clone());
                if histogram {
                    row.push(s.sum.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        head.push(if histogram { "count" } else { "value" }.into());
        if histogram {
            head.push("sum".into());
        }
        rows.insert(0, head);
        let widths: Vec<usize> =
            (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        let labels = columns.len();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(
                    |(i, c)| {
                        if i < labels {
                            format!("{c:<w$}", w = widths[i])
                        } else {
                            format!("{c:>w$}", w = widths[i])
                        }
                    },
                )
                .collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::LogLevel;
    use crate::result::{HttpMessage, HttpResponse, PluginStatus, StreamResult};

    const PROM: &str = "\
# TYPE istio_requests_total counter
istio_requests_total{reporter=\"destination\",source_app=\"productpage\",response_code=\"200\",op=\"List\"} 2
istio_requests_total{reporter=\"destination\",source_app=\"productpage\",response_code=\"404\",op=\"\"} 1
# TYPE istio_build gauge
istio_build{reporter=\"destination\",component=\"proxy\",tag=\"1.16\"} 1
# TYPE istio_request_bytes histogram
istio_request_bytes_bucket{reporter=\"destination\",response_code=\"200\",le=\"0.5\"} 0
istio_request_bytes_bucket{reporter=\"destination\",response_code=\"200\",le=\"+Inf\"} 2
istio_request_bytes_sum{reporter=\"destination\",response_code=\"200\"} 703
istio_request_bytes_count{reporter=\"destination\",response_code=\"200\"} 2
istio_request_bytes_bucket{reporter=\"destination\",response_code=\"404\",le=\"+Inf\"} 1
istio_request_bytes_sum{reporter=\"destination\",response_code=\"404\"} 7
istio_request_bytes_count{reporter=\"destination\",response_code=\"404\"} 1
";

    #[test]
    fn the_server_proxy_follows_the_client_proxy() {
        let server = RunResult {
            streams: vec![crate::result::StreamResult { name: "s0".into(), ..Default::default() }],
            prometheus: "# TYPE server_only counter\nserver_only{} 1\n".into(),
            ..Default::default()
        };
        let two = RunResult { server_proxy: Some(Box::new(server)), ..Default::default() };
        let text = render(&two, &Options::default());
        let (client, server) = text.split_once("=== server proxy ===\n").expect("a server section");
        assert!(!client.contains("server_only"), "{text}");
        assert!(server.contains("stream 0 \"s0\"") && server.contains("server_only"), "{text}");
        assert!(!render(&RunResult::default(), &Options::default()).contains("server proxy"));
    }

    #[test]
    fn samples_parse_with_escaped_quotes() {
        let (name, labels, value) = parse_sample(r#"m{a="x\"y",b=""} 42"#).unwrap();
        assert_eq!((name, value), ("m", "42"));
        assert_eq!(labels, vec![("a".into(), r#"x\"y"#.into()), ("b".into(), String::new())]);
        assert_eq!(parse_sample("plain 7").unwrap().2, "7");
        assert_eq!(parse_sample("m{} 1").unwrap().1, vec![]);
    }

    #[test]
    fn histograms_keep_count_and_sum() {
        let f = parse_families(PROM);
        assert_eq!(f.len(), 3);
        let h = &f[2];
        assert_eq!((h.name.as_str(), h.kind.as_str(), h.series.len()), ("istio_request_bytes", "histogram", 2));
        assert_eq!((h.series[0].value.as_str(), h.series[0].sum.as_deref()), ("2", Some("703")));
    }

    #[test]
    fn tables_show_only_the_labels_that_differ() {
        let text = metrics(PROM, false);
        let expected = "\
metrics: 3 families, 5 series (the full Prometheus text: --prometheus)
  shared labels (of the families marked \"+ shared\"):
    reporter=\"destination\"
istio_requests_total (counter, 2 series) + shared
    source_app=\"productpage\"
  response_code  op    value
  200            List      2
  404            \"\"        1
istio_build (gauge): 1 + shared
    component=\"proxy\" tag=\"1.16\"
istio_request_bytes (histogram, 2 series) + shared
  response_code  count  sum
  200                2  703
  404                1    7
";
        assert_eq!(text, expected);
    }

    #[test]
    fn long_common_label_lists_wrap() {
        let labels: Vec<(String, String)> = (0..10).map(|i| (format!("label_{i}"), "x".repeat(20))).collect();
        let mut out = String::new();
        label_lines(&mut out, "    ", "", &labels);
        assert!(out.lines().count() > 1 && out.lines().all(|l| l.len() <= WIDTH), "{out}");
    }

    fn result() -> RunResult {
        let get = vec![(":method".to_string(), "GET".to_string()), (":path".to_string(), "/a".to_string())];
        RunResult {
            engine: "host-sim".into(),
            scenario: "t".into(),
            plugins: vec![PluginStatus {
                name: "stats".into(),
                root_id: String::new(),
                vm_started: true,
                configured: true,
                error: None,
            }],
            logs: vec![
                LogLine { level: LogLevel::Info, plugin: "stats".into(), message: "started".into() },
                LogLine { level: LogLevel::Info, plugin: "stats".into(), message: "started".into() },
            ],
            streams: vec![StreamResult {
                name: "one".into(),
                upstream_request: Some(HttpMessage { headers: get, ..Default::default() }),
                downstream_response: Some(HttpResponse { status: 200, body: "ok".into(), ..Default::default() }),
                ..Default::default()
            }],
            prometheus: PROM.into(),
            ..Default::default()
        }
    }

    #[test]
    fn streams_and_repeated_logs_read_in_a_few_lines() {
        let text = render(&result(), &Options::default());
        let stream =
            "stream 0 \"one\": request -> 200 (2 body bytes)\n  upstream got GET /a (2 headers, 0 body bytes)\n";
        assert!(text.contains(stream), "{text}");
        assert!(text.contains("  [info] stats: started (x2)\n"), "{text}");
        assert!(!text.contains("_bucket"), "no Prometheus text unless asked: {text}");
    }

    #[test]
    fn prometheus_text_only_when_asked() {
        let text = render(&result(), &Options { prometheus: true, ..Default::default() });
        assert!(text.contains("--- prometheus ---\n# TYPE istio_requests_total counter\n"), "{text}");
        assert!(!text.contains("--prometheus"), "no hint when the text follows: {text}");
    }
}
