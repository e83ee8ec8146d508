//! Turning what the client, the servers and Envoy's logs saw into the
//! [`RunResult`]'s stream and connection results.

use crate::logs::{self, ActionKind, PluginIdent};
use crate::process::{environment, EnvoyProcess};
use crate::result::{
    ConnectionResult, HttpCallRecord, HttpMessage, HttpResponse, LocalReply, PluginFailure, PluginStatus, RunResult,
    StreamResult,
};
use crate::scenario::{config_bytes, Scenario, StreamSpec, TcpConnectionSpec};
use crate::{http, servers, tcp, HOST_SPECIFIC_HEADERS};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// An access-log line (see `bootstrap::access_log_format`).
#[derive(Debug, Clone, Default)]
pub struct AccessEntry {
    pub details: String,
}

pub fn find_access_entry(path: &Path, client: &str) -> Option<AccessEntry> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| {
        (v["client"].as_str() == Some(client))
            .then(|| AccessEntry { details: v["details"].as_str().unwrap_or("").to_string() })
    })
}

fn lower(h: &[(String, String)]) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The client's response as a header map: `:status` first, names
/// lower-cased, wire order.
fn to_result_response(r: &http::Response) -> HttpResponse {
    let mut headers = vec![(":status".to_string(), r.status.to_string())];
    headers.extend(lower(&r.headers));
    HttpResponse { status: r.status, headers, body: text(&r.body), trailers: lower(&r.trailers) }
}

pub fn idents(s: &Scenario) -> Vec<PluginIdent> {
    s.plugins
        .iter()
        .map(|p| PluginIdent {
            name: p.display_name(),
            root_id: p.root_id.clone(),
            vm_id: p.vm_id.clone(),
            log_level: p.log_level,
            config_len: config_bytes(&p.configuration).len(),
            vm_config_len: config_bytes(&p.vm_configuration).len(),
        })
        .collect()
}

/// A local reply's body and headers from what the client received. Envoy
/// builds the reply's header map as `:status`, the plugin's headers, then
/// `content-length` (and `content-type: text/plain` for a body); response
/// hooks append after that. So the plugin's headers are those before
/// `content-length` (observed in Envoy 1.40); without one, all but
/// `content-type` and [`HOST_SPECIFIC_HEADERS`].
fn reply_parts(response: Option<&http::Response>) -> (String, Vec<(String, String)>) {
    let Some(resp) = response else { return (String::new(), Vec::new()) };
    let headers = lower(&resp.headers);
    let plugin_headers = match headers.iter().position(|(k, _)| k == "content-length") {
        Some(end) => headers[..end].to_vec(),
        None => headers
            .into_iter()
            .filter(|(k, _)| !HOST_SPECIFIC_HEADERS.contains(&k.as_str()) && k != "content-type")
            .collect(),
    };
    (text(&resp.body), plugin_headers)
}

/// Builds a stream's result from what was observed. `failed_before` is the
/// plugin that trapped in an earlier stream, if any (its VM stays dead).
#[allow(clippy::too_many_arguments)]
pub fn stream_result(
    stream: &StreamSpec,
    plugins: &[PluginIdent],
    lines: &[logs::EnvoyLine],
    outcome: http::ResponseOutcome,
    entry: Option<AccessEntry>,
    ups: Vec<http::Request>,
    calls: Vec<servers::CallExchange>,
    failed_before: Option<usize>,
) -> StreamResult {
    let mut r = StreamResult { name: stream.name.clone(), ..Default::default() };
    r.upstream_request =
        ups.first().map(|u| HttpMessage { headers: u.header_map(), body: text(&u.body), trailers: lower(&u.trailers) });
    let response = match &outcome {
        http::ResponseOutcome::Complete(resp) => Some(resp),
        http::ResponseOutcome::ResetDuringBody(resp) => {
            r.reset = true;
            Some(resp)
        }
        http::ResponseOutcome::ResetBeforeResponse => {
            r.reset = true;
            None
        }
        // Stalled: no complete answer in time.
        http::ResponseOutcome::TimedOut(_) => None,
    };
    r.downstream_response = response.map(to_result_response);
    r.logs = logs::plugin_logs(plugins, lines);
    let name_of = |p: Option<usize>| p.map(|i| plugins[i].name.clone()).unwrap_or_default();
    let actions = logs::stream_actions(plugins, lines);
    let mut call_actions = Vec::new();
    for a in &actions {
        match &a.kind {
            ActionKind::LocalReply { status, grpc_status } if r.local_reply.is_none() => {
                let details =
                    entry.as_ref().map(|e| e.details.clone()).filter(|d| d != "via_upstream").unwrap_or_default();
                let (body, headers) = reply_parts(response);
                r.local_reply = Some(LocalReply {
                    plugin: name_of(a.plugin),
                    status: *status,
                    details,
                    body,
                    headers,
                    grpc_status: *grpc_status,
                });
            }
            ActionKind::Failure { message } if r.plugin_failure.is_none() => {
                r.plugin_failure = Some(PluginFailure { plugin: name_of(a.plugin), message: message.clone() });
            }
            ActionKind::HttpCall { timeout_ms } => call_actions.push((a.plugin, *timeout_ms)),
            _ => {}
        }
    }
    // Envoy's own reply for a failed VM (fail closed): host-sim reports it
    // as a local reply of the failed plugin, with gRPC status 14
    // (UNAVAILABLE) as Envoy sends it.
    if r.local_reply.is_none() && entry.as_ref().is_some_and(|e| e.details == "wasm_fail_stream") {
        let plugin = r
            .plugin_failure
            .as_ref()
            .map(|f| f.plugin.clone())
            .or_else(|| Some(name_of(failed_before)).filter(|n| !n.is_empty()));
        let (body, headers) = reply_parts(response);
        r.local_reply = Some(LocalReply {
            plugin: plugin.unwrap_or_default(),
            status: response.map_or(503, |x| x.status),
            details: "wasm_fail_stream".into(),
            body,
            headers,
            grpc_status: Some(14),
        });
    }
    r.http_calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (plugin, timeout_ms) = call_actions.get(i).copied().unwrap_or((None, 0));
            let answered_in_time = timeout_ms == 0 || c.delay_ms <= timeout_ms as u64;
            HttpCallRecord {
                plugin: name_of(plugin),
                cluster: c.cluster,
                headers: c.request.header_map(),
                body: text(&c.request.body),
                trailers: lower(&c.request.trailers),
                timeout_ms,
                response_status: c.status_sent.filter(|_| answered_in_time),
            }
        })
        .collect();
    r
}

/// Builds a TCP connection's result from what both ends saw and the
/// connection's stretch of Envoy's log.
pub fn connection_result(
    spec: &TcpConnectionSpec,
    plugins: &[PluginIdent],
    lines: &[logs::EnvoyLine],
    outcome: tcp::TcpOutcome,
) -> ConnectionResult {
    let name_of = |p: Option<usize>| p.map(|i| plugins[i].name.clone()).unwrap_or_default();
    let plugin_failure = logs::stream_actions(plugins, lines).into_iter().find_map(|a| match a.kind {
        ActionKind::Failure { message } => Some(PluginFailure { plugin: name_of(a.plugin), message }),
        _ => None,
    });
    ConnectionResult {
        name: spec.name.clone(),
        upstream_connected: outcome.upstream_connected,
        upstream_received: text(&outcome.upstream_received),
        downstream_received: text(&outcome.downstream_received),
        logs: logs::plugin_logs(plugins, lines),
        plugin_failure,
    }
}

/// Envoy exited during start-up. When its errors name a plugin (or its
/// .wasm), that is the scenario's outcome; anything else is an engine error.
pub fn start_failure(
    scenario: &Scenario,
    plugins: &[PluginIdent],
    wasm_paths: &[PathBuf],
    lines: &[logs::EnvoyLine],
    status: std::process::ExitStatus,
    envoy: &EnvoyProcess,
) -> Result<RunResult> {
    let errors = logs::startup_errors(lines);
    let message = errors.join("; ");
    let names_plugin = |i: usize| {
        let p = &plugins[i];
        let path = wasm_paths[i].to_string_lossy();
        errors.iter().any(|e| {
            e.contains(&format!("plugin {} ", p.name))
                || e.ends_with(&format!("plugin {}", p.name))
                || e.contains(&format!("plugin {}`", p.name))
                || e.contains(path.as_ref())
        })
    };
    let mut culprits: Vec<usize> = (0..plugins.len()).filter(|i| names_plugin(*i)).collect();
    if culprits.is_empty() && plugins.len() == 1 && errors.iter().any(|e| e.to_ascii_lowercase().contains("wasm")) {
        culprits.push(0);
    }
    if culprits.is_empty() {
        // Not a plugin Envoy refused: Envoy itself could not start.
        return Err(environment(anyhow::anyhow!(
            "Envoy exited ({status}) while starting: {message}\n{}",
            envoy.log_tail_section(30)
        )));
    }
    // The VM started when what failed was the configuration.
    let vm_started = errors.iter().any(|e| e.contains("Failed to configure"));
    let mut result = RunResult {
        engine: "envoy".into(),
        scenario: scenario.name.clone(),
        plugins: scenario
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let culprit = culprits.first() == Some(&i);
                PluginStatus {
                    name: p.display_name(),
                    root_id: p.root_id.clone(),
                    vm_started: culprit && vm_started,
                    configured: false,
                    error: culprit.then(|| message.clone()),
                }
            })
            .collect(),
        // Envoy exited before serving anything: no stream or connection
        // ran (docs/scenario-format.md, `plugins[]`), as in host-sim.
        logs: logs::plugin_logs(plugins, lines),
        ..Default::default()
    };
    result.check(&scenario.expect);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_results_from_what_was_observed() {
        let stream: StreamSpec = serde_json::from_str(r#"{"name":"s","request":{}}"#).unwrap();
        let plugins = vec![PluginIdent {
            name: "p".into(),
            root_id: "".into(),
            vm_id: "".into(),
            log_level: crate::abi::LogLevel::Info,
            config_len: 0,
            vm_config_len: 0,
        }];
        let log = "\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_request_headers(2, 8, 1)\n\
[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log p: denying\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm->host] env.proxy_send_local_response(403, 0, 0, 10, 7, 0, 0, -1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm<-host] env.proxy_send_local_response return: 0\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_request_headers return: 1\n";
        let (lines, _) = logs::parse(log, 0);
        let resp = http::Response {
            status: 403,
            headers: vec![
                ("x-by".into(), "p".into()),
                ("content-length".into(), "7".into()),
                ("date".into(), "now".into()),
                ("server".into(), "envoy".into()),
            ],
            body: b"denied\n".to_vec(),
            trailers: vec![],
        };
        let entry = AccessEntry { details: "".into() };
        let r = stream_result(
            &stream,
            &plugins,
            &lines,
            http::ResponseOutcome::Complete(resp),
            Some(entry),
            vec![],
            vec![],
            None,
        );
        assert!(r.upstream_request.is_none());
        assert!(!r.reset);
        let d = r.downstream_response.as_ref().unwrap();
        assert_eq!(d.headers[0], (":status".to_string(), "403".to_string()));
        let lr = r.local_reply.unwrap();
        assert_eq!((lr.plugin.as_str(), lr.status, lr.body.as_str()), ("p", 403, "denied\n"));
        assert_eq!(lr.headers, vec![("x-by".to_string(), "p".to_string())]);
        assert_eq!(r.logs.len(), 1);
        let r = stream_result(
            &stream,
            &plugins,
            &[],
            http::ResponseOutcome::ResetBeforeResponse,
            None,
            vec![],
            vec![],
            None,
        );
        assert!(r.reset && r.downstream_response.is_none() && r.local_reply.is_none());
    }
}
