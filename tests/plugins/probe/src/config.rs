//! The plugin configuration (JSON object). Every field is optional; unknown
//! fields and wrong types are rejected in `on_configure` with a log line that
//! names the field.

use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Config {
    /// Label used in local-reply headers and outgoing call headers.
    pub name: String,
    /// Request header the per-request action list is read from.
    pub header: String,
    /// Actions run on every request, before the header's.
    pub actions: Vec<String>,
    /// `proxy_set_tick_period_milliseconds` in on_configure (0: no timer).
    pub tick_ms: u64,
    /// Log `lifecycle <event>` from every stream callback.
    pub lifecycle: bool,
    /// Properties read (and logged) in the root context during on_configure.
    pub root_props: Vec<String>,
    /// Run the root-context status probes during on_configure.
    pub root_statuses: bool,
    /// Timeout of `call` / `call_reply` http calls.
    pub call_timeout_ms: u64,
    /// Which stream contexts the root creates.
    pub context: ContextKind,
}

/// `context`: `http` (default), `network`, or `auto` (decided per context
/// from whether `request.protocol` is readable, i.e. whether Envoy created
/// the context for an HTTP stream or for a TCP connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKind {
    Http,
    Network,
    Auto,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "probe".into(),
            header: "x-probe".into(),
            actions: Vec::new(),
            tick_ms: 0,
            lifecycle: false,
            root_props: Vec::new(),
            root_statuses: false,
            call_timeout_ms: 5000,
            context: ContextKind::Http,
        }
    }
}

fn bad(field: &str, what: &str) -> String {
    format!("invalid configuration: field `{field}` must be {what}")
}

fn string(field: &str, v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_string).ok_or_else(|| bad(field, "a string"))
}

fn strings(field: &str, v: &Value) -> Result<Vec<String>, String> {
    let arr = v.as_array().ok_or_else(|| bad(field, "an array of strings"))?;
    arr.iter().map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad(field, "an array of strings"))).collect()
}

fn uint(field: &str, v: &Value) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| bad(field, "a non-negative integer"))
}

fn boolean(field: &str, v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| bad(field, "a boolean"))
}

/// Parses the configuration bytes; an empty configuration means defaults.
pub fn parse(bytes: &[u8]) -> Result<Config, String> {
    let mut c = Config::default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(c);
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid configuration: not JSON: {e}"))?;
    let obj = v.as_object().ok_or_else(|| "invalid configuration: must be a JSON object".to_string())?;
    for (k, v) in obj {
        match k.as_str() {
            "name" => c.name = string(k, v)?,
            "header" => {
                c.header = string(k, v)?;
                if c.header.is_empty() {
                    return Err(bad(k, "a non-empty header name"));
                }
            }
            "actions" => c.actions = strings(k, v)?,
            "tick_ms" => c.tick_ms = uint(k, v)?,
            "lifecycle" => c.lifecycle = boolean(k, v)?,
            "root_props" => c.root_props = strings(k, v)?,
            "root_statuses" => c.root_statuses = boolean(k, v)?,
            "call_timeout_ms" => c.call_timeout_ms = uint(k, v)?,
            "context" => {
                c.context = match string(k, v)?.as_str() {
                    "http" => ContextKind::Http,
                    "network" => ContextKind::Network,
                    "auto" => ContextKind::Auto,
                    _ => return Err(bad(k, "one of http, network, auto")),
                }
            }
            other => return Err(format!("invalid configuration: unknown field `{other}`")),
        }
    }
    Ok(c)
}
