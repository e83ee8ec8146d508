//! `host-sim diff`: compares the results of two engines on one scenario and
//! lists every difference that is not documented as host-specific.

use crate::result::{HttpMessage, HttpResponse, RunResult};
use crate::scenario::HeaderList;
use std::collections::BTreeMap;

/// What both engines may legitimately disagree on.
pub struct Ignore<'a> {
    /// Header names (lower-case) whose presence and value are per-host
    /// (`date`, `server`, timings, ...).
    pub headers: &'a [&'a str],
}

fn filtered(h: &HeaderList, ignore: &Ignore) -> HeaderList {
    h.iter()
        .filter(|(k, _)| !ignore.headers.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.clone(), normalize(k, v)))
        .collect()
}

/// Values that embed a host-specific part: the client certificate's digest
/// in `x-forwarded-client-cert` (each engine has its own certificates).
fn normalize(name: &str, value: &str) -> String {
    if !name.eq_ignore_ascii_case("x-forwarded-client-cert") {
        return value.to_string();
    }
    value
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("hash") => format!("{k}=<digest>"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn cmp<T: PartialEq + std::fmt::Debug>(out: &mut Vec<String>, what: &str, a: &T, b: &T) {
    if a != b {
        out.push(format!("{what}: {a:?} != {b:?}"));
    }
}

fn cmp_message(out: &mut Vec<String>, what: &str, a: &Option<HttpMessage>, b: &Option<HttpMessage>, ig: &Ignore) {
    match (a, b) {
        (Some(a), Some(b)) => {
            cmp(out, &format!("{what}.headers"), &filtered(&a.headers, ig), &filtered(&b.headers, ig));
            cmp(out, &format!("{what}.body"), &a.body, &b.body);
            cmp(out, &format!("{what}.trailers"), &filtered(&a.trailers, ig), &filtered(&b.trailers, ig));
        }
        (None, None) => {}
        _ => out.push(format!("{what}: present in only one engine ({} vs {})", a.is_some(), b.is_some())),
    }
}

fn cmp_response(out: &mut Vec<String>, what: &str, a: &Option<HttpResponse>, b: &Option<HttpResponse>, ig: &Ignore) {
    match (a, b) {
        (Some(a), Some(b)) => {
            cmp(out, &format!("{what}.status"), &a.status, &b.status);
            cmp(out, &format!("{what}.headers"), &filtered(&a.headers, ig), &filtered(&b.headers, ig));
            cmp(out, &format!("{what}.body"), &a.body, &b.body);
            cmp(out, &format!("{what}.trailers"), &filtered(&a.trailers, ig), &filtered(&b.trailers, ig));
        }
        (None, None) => {}
        _ => out.push(format!("{what}: present in only one engine ({} vs {})", a.is_some(), b.is_some())),
    }
}

/// Metric values by name; histogram sums are left out (Envoy's are
/// approximate).
fn metric_map(r: &RunResult) -> BTreeMap<String, (String, i64)> {
    r.metrics.iter().map(|m| (m.name.clone(), (format!("{:?}", m.kind), m.value))).collect()
}

/// Prometheus sample lines without histogram sums.
fn prometheus_lines(r: &RunResult) -> Vec<String> {
    let mut lines: Vec<String> = r
        .prometheus
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !l.split(['{', ' ']).next().unwrap_or("").ends_with("_sum"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

pub fn diff(a: &RunResult, b: &RunResult, ignore: &Ignore) -> Vec<String> {
    let mut out = Vec::new();
    let configured = |r: &RunResult| r.plugins.iter().map(|p| (p.name.clone(), p.configured)).collect::<Vec<_>>();
    cmp(&mut out, "plugins.configured", &configured(a), &configured(b));
    cmp(&mut out, "streams.len", &a.streams.len(), &b.streams.len());
    for (i, (sa, sb)) in a.streams.iter().zip(&b.streams).enumerate() {
        let at = format!("streams[{i}]");
        cmp_message(&mut out, &format!("{at}.upstream_request"), &sa.upstream_request, &sb.upstream_request, ignore);
        let reply = |s: &crate::result::StreamResult| {
            s.local_reply.as_ref().map(|r| (r.status, r.body.clone(), r.details.clone()))
        };
        cmp(&mut out, &format!("{at}.local_reply"), &reply(sa), &reply(sb));
        cmp_response(
            &mut out,
            &format!("{at}.downstream_response"),
            &sa.downstream_response,
            &sb.downstream_response,
            ignore,
        );
        let calls = |s: &crate::result::StreamResult| {
            s.http_calls.iter().map(|c| (c.cluster.clone(), c.body.clone(), c.response_status)).collect::<Vec<_>>()
        };
        cmp(&mut out, &format!("{at}.http_calls"), &calls(sa), &calls(sb));
        let logs = |s: &crate::result::StreamResult| {
            s.logs.iter().map(|l| (l.level, l.plugin.clone(), l.message.clone())).collect::<Vec<_>>()
        };
        cmp(&mut out, &format!("{at}.logs"), &logs(sa), &logs(sb));
        cmp(&mut out, &format!("{at}.reset"), &sa.reset, &sb.reset);
    }
    cmp(&mut out, "connections.len", &a.connections.len(), &b.connections.len());
    for (i, (ca, cb)) in a.connections.iter().zip(&b.connections).enumerate() {
        let at = format!("connections[{i}]");
        cmp(&mut out, &format!("{at}.name"), &ca.name, &cb.name);
        cmp(&mut out, &format!("{at}.upstream_connected"), &ca.upstream_connected, &cb.upstream_connected);
        cmp(&mut out, &format!("{at}.upstream_received"), &ca.upstream_received, &cb.upstream_received);
        cmp(&mut out, &format!("{at}.downstream_received"), &ca.downstream_received, &cb.downstream_received);
        let logs = |c: &crate::result::ConnectionResult| {
            c.logs.iter().map(|l| (l.level, l.plugin.clone(), l.message.clone())).collect::<Vec<_>>()
        };
        cmp(&mut out, &format!("{at}.logs"), &logs(ca), &logs(cb));
        // Which plugin trapped; the message is the runtime's wording (V8's
        // in Envoy, wasmtime's in host-sim), as for streams.
        let failed = |c: &crate::result::ConnectionResult| c.plugin_failure.as_ref().map(|f| f.plugin.clone());
        cmp(&mut out, &format!("{at}.plugin_failure"), &failed(ca), &failed(cb));
    }
    // Logs outside streams and connections (start-up, ticks, queues): the
    // same lines in both, in any order, since Envoy starts its threads' VMs
    // in parallel.
    let root_logs = |r: &RunResult| {
        let mut l: Vec<_> = r.logs.iter().map(|l| (l.level, l.plugin.clone(), l.message.clone())).collect();
        l.sort();
        l
    };
    cmp(&mut out, "logs", &root_logs(a), &root_logs(b));
    cmp(&mut out, "metrics", &metric_map(a), &metric_map(b));
    cmp(&mut out, "prometheus", &prometheus_lines(a), &prometheus_lines(b));
    cmp(&mut out, "warnings", &a.warnings, &b.warnings);
    // A two-proxy chain: the server proxy is compared the same way, its
    // differences prefixed with `server_proxy.`.
    match (&a.server_proxy, &b.server_proxy) {
        (Some(sa), Some(sb)) => out.extend(diff(sa, sb, ignore).into_iter().map(|d| format!("server_proxy.{d}"))),
        (None, None) => {}
        (x, y) => out.push(format!("server_proxy: present in only one engine ({} vs {})", x.is_some(), y.is_some())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::StreamResult;

    fn result(status: u16, date: &str) -> RunResult {
        RunResult {
            streams: vec![StreamResult {
                downstream_response: Some(HttpResponse {
                    status,
                    headers: vec![(":status".into(), status.to_string()), ("date".into(), date.into())],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_server_proxy_is_compared_with_a_prefix() {
        let two = |status: u16| RunResult { server_proxy: Some(Box::new(result(status, "x"))), ..result(200, "d") };
        let ig = Ignore { headers: &["date"] };
        assert!(diff(&two(200), &two(200), &ig).is_empty());
        let d = diff(&two(200), &two(503), &ig);
        assert!(!d.is_empty() && d.iter().all(|l| l.starts_with("server_proxy.streams[0]")), "{d:?}");
        let d = diff(&two(200), &result(200, "d"), &ig);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("server_proxy: present in only one engine"), "{d:?}");
    }

    #[test]
    fn connections_are_compared_field_by_field() {
        use crate::result::{ConnectionResult, LogLine, PluginFailure};
        let conn = |up: &str, msg: &str, failure: Option<&str>| RunResult {
            connections: vec![ConnectionResult {
                name: "c".into(),
                upstream_connected: true,
                upstream_received: up.into(),
                downstream_received: "world".into(),
                logs: vec![LogLine { level: crate::abi::LogLevel::Info, plugin: "p".into(), message: msg.into() }],
                plugin_failure: failure.map(|m| PluginFailure { plugin: "p".into(), message: m.into() }),
            }],
            ..Default::default()
        };
        let ig = Ignore { headers: &[] };
        assert!(diff(&conn("hello", "a", Some("v8")), &conn("hello", "a", Some("wasmtime")), &ig).is_empty());
        let d = diff(&conn("hello", "a", None), &conn("HELLO", "b", Some("x")), &ig);
        let fields: Vec<_> = d.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            vec!["connections[0].upstream_received", "connections[0].logs", "connections[0].plugin_failure"]
        );
        let d = diff(&conn("hello", "a", None), &RunResult::default(), &ig);
        assert!(d.iter().any(|l| l.starts_with("connections.len")), "{d:?}");
    }

    #[test]
    fn start_up_logs_compare_in_any_order_but_count() {
        use crate::result::LogLine;
        let with = |msgs: &[&str]| RunResult {
            logs: msgs
                .iter()
                .map(|m| LogLine { level: crate::abi::LogLevel::Info, plugin: "p".into(), message: m.to_string() })
                .collect(),
            ..Default::default()
        };
        let ig = Ignore { headers: &[] };
        assert!(diff(
            &with(&["vm_start", "configure", "vm_start"]),
            &with(&["vm_start", "vm_start", "configure"]),
            &ig
        )
        .is_empty());
        let d =
            diff(&with(&["vm_start", "configure"]), &with(&["vm_start", "configure", "vm_start", "configure"]), &ig);
        assert!(d.iter().any(|l| l.starts_with("logs:")), "a VM more in one engine is a difference: {d:?}");
    }

    #[test]
    fn certificate_digests_in_xfcc_are_host_specific() {
        assert_eq!(normalize("x-forwarded-client-cert", "By=a;Hash=01ab;URI=u"), "By=a;Hash=<digest>;URI=u");
        assert_eq!(normalize("x-other", "Hash=01ab"), "Hash=01ab");
    }

    #[test]
    fn ignores_host_specific_headers_but_not_real_differences() {
        let ig = Ignore { headers: &["date"] };
        assert!(diff(&result(200, "a"), &result(200, "b"), &ig).is_empty());
        let d = diff(&result(200, "a"), &result(503, "a"), &ig);
        assert!(d.iter().any(|l| l.starts_with("streams[0].downstream_response.status")), "{d:?}");
    }
}
