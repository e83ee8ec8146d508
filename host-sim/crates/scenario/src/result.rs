//! The JSON result both engines print for a scenario. Documented in
//! docs/scenario-format.md; `diff` compares two of these.

use crate::abi::LogLevel;
use crate::scenario::HeaderList;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct RunResult {
    /// `host-sim` or `envoy`.
    pub engine: String,
    pub scenario: String,
    pub plugins: Vec<PluginStatus>,
    pub streams: Vec<StreamResult>,
    /// The scenario's TCP connections, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionResult>,
    /// Logs outside any stream: start-up, configure, ticks, queues.
    pub logs: Vec<LogLine>,
    /// Every metric the plugins defined, by its full (Wasm) name.
    pub metrics: Vec<MetricValue>,
    /// The metrics as Envoy's `/stats/prometheus` shows them, after tag
    /// extraction.
    pub prometheus: String,
    /// Outcome of the scenario's `expect` list, in order.
    pub expectations: Vec<ExpectationResult>,
    /// The server proxy of a two-proxy chain (scenario `server_proxy`):
    /// its own plugins, streams (what reached it and what it answered),
    /// logs, metrics and Prometheus text; its `expectations` stay empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_proxy: Option<Box<RunResult>>,
    /// What the engine noticed about the scenario itself (e.g. a metric
    /// label no stats tag extracts); not compared by `diff`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub root_id: String,
    /// `proxy_on_vm_start` returned true.
    pub vm_started: bool,
    /// `proxy_on_configure` returned true: the configuration was accepted.
    pub configured: bool,
    /// Why the plugin could not be loaded or started, as Envoy would log it.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StreamResult {
    pub name: String,
    /// What reached the upstream; null when the request never left the proxy.
    pub upstream_request: Option<HttpMessage>,
    /// A reply the plugin sent with `proxy_send_local_response`.
    pub local_reply: Option<LocalReply>,
    /// What the client received; null when it received nothing (the stream
    /// stalled or was reset).
    pub downstream_response: Option<HttpResponse>,
    /// Calls made with `proxy_http_call`, in order.
    pub http_calls: Vec<HttpCallRecord>,
    pub logs: Vec<LogLine>,
    /// A plugin that trapped while handling this stream.
    pub plugin_failure: Option<PluginFailure>,
    /// The client's stream was reset instead of answered (e.g. by
    /// `proxy_close_stream` or a failed plugin).
    pub reset: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ConnectionResult {
    pub name: String,
    /// Whether the proxy connected to the upstream.
    pub upstream_connected: bool,
    /// Every byte the upstream received (lossy UTF-8).
    pub upstream_received: String,
    /// Every byte the client received (lossy UTF-8).
    pub downstream_received: String,
    pub logs: Vec<LogLine>,
    /// A plugin that trapped while handling this connection.
    pub plugin_failure: Option<PluginFailure>,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct HttpMessage {
    pub headers: HeaderList,
    pub body: String,
    pub trailers: HeaderList,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderList,
    pub body: String,
    pub trailers: HeaderList,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LocalReply {
    pub plugin: String,
    pub status: u16,
    pub details: String,
    pub body: String,
    pub headers: HeaderList,
    pub grpc_status: Option<i32>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpCallRecord {
    pub plugin: String,
    pub cluster: String,
    pub headers: HeaderList,
    pub body: String,
    pub trailers: HeaderList,
    pub timeout_ms: u32,
    /// The status delivered back to the plugin, or null on a timeout/failure.
    pub response_status: Option<u16>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    pub level: LogLevel,
    pub plugin: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PluginFailure {
    pub plugin: String,
    /// As Envoy reports it, e.g. `wasm trap: unreachable`.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricValue {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: crate::abi::MetricType,
    /// Counter/gauge value; for a histogram, the number of samples.
    pub value: i64,
    /// Histogram samples' sum (histograms only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExpectationResult {
    #[serde(flatten)]
    pub expectation: crate::scenario::Expectation,
    pub passed: bool,
    /// What was found instead, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<serde_json::Value>,
}

impl RunResult {
    pub fn all_expectations_passed(&self) -> bool {
        self.expectations.iter().all(|e| e.passed)
    }

    /// Evaluates the scenario's `expect` list against this result.
    pub fn check(&mut self, expect: &[crate::scenario::Expectation]) {
        let json = serde_json::to_value(&*self).unwrap_or_default();
        let server_json = self.server_proxy.as_ref().map(|r| serde_json::to_value(&**r).unwrap_or_default());
        self.expectations = expect
            .iter()
            .map(|e| {
                // `server_proxy: true` checks the second proxy's result.
                let (r, json) = match (e.server_proxy, &self.server_proxy, &server_json) {
                    (false, _, _) => (&*self, &json),
                    (true, Some(r), Some(j)) => (&**r, j),
                    _ => {
                        let actual = Some(serde_json::Value::String("no server proxy".into()));
                        return ExpectationResult { expectation: e.clone(), passed: false, actual };
                    }
                };
                let (passed, actual) = if let (Some(ptr), Some(want)) = (&e.pointer, &e.equals) {
                    let got = json.pointer(ptr).cloned();
                    (got.as_ref() == Some(want), got.or(Some(serde_json::Value::Null)))
                } else if let Some(line) = &e.prometheus {
                    (r.prometheus.lines().any(|l| l == line), None)
                } else if let Some(text) = &e.log_contains {
                    let all = r
                        .logs
                        .iter()
                        .chain(r.streams.iter().flat_map(|s| s.logs.iter()))
                        .chain(r.connections.iter().flat_map(|c| c.logs.iter()));
                    (all.into_iter().any(|l| l.message.contains(text.as_str())), None)
                } else {
                    (false, None)
                };
                ExpectationResult { expectation: e.clone(), passed, actual: if passed { None } else { actual } }
            })
            .collect();
    }
}

/// Header lookup (tests, the summary): the first value of `name`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}
