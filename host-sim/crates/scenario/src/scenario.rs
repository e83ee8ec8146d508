//! The scenario file: which plugins to load, the proxy's identity, the
//! connection, and the streams to replay. Both engines (host-sim and real
//! Envoy) read the same file. Unknown fields are errors, so a typo never
//! silently changes a test. Documented in docs/scenario-format.md.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A header list: ordered `[name, value]` pairs; names may repeat.
pub type HeaderList = Vec<(String, String)>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    /// The filter chains, in order (e.g. attributegen before stats): HTTP
    /// plugins filter `streams`, network plugins filter `connections`.
    pub plugins: Vec<PluginSpec>,
    #[serde(default)]
    pub node: NodeSpec,
    /// Worker threads: one VM per plugin per worker, plus the main thread's.
    /// Streams are dealt to workers round-robin unless a stream names one.
    #[serde(default = "one")]
    pub workers: u32,
    /// Traffic direction of the listener (Envoy's `listener_direction`).
    #[serde(default)]
    pub direction: Direction,
    /// The downstream connection every stream arrives on, unless a stream
    /// overrides it.
    #[serde(default)]
    pub connection: ConnectionSpec,
    /// Cluster names `proxy_http_call` may target. Envoy rejects calls to
    /// clusters it does not know with BAD_ARGUMENT.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Envoy `stats_tags` (tag extraction) applied to plugin metrics in the
    /// Prometheus output. Defaults to Istio's standard list.
    #[serde(default)]
    pub stats_tags: Option<Vec<StatsTag>>,
    /// Istio's `extraStatTags`: label names whose tag regex
    /// (`(<name>=\.=(.*?);\.;)`) is appended to the tag list above (or
    /// Istio's standard list), so a custom dimension needs one name here.
    #[serde(default)]
    pub extra_stat_tags: Vec<String>,
    /// The upstream endpoint's metadata, Envoy's
    /// `LbEndpoint.metadata.filter_metadata` (namespace -> Struct), e.g.
    /// `{"istio": {"workload": "ratings-v1;default;ratings;version-1;c1"}}`:
    /// on the generated upstream endpoints in Envoy, and
    /// `xds.upstream_host_metadata` in host-sim once the upstream is picked.
    #[serde(default)]
    pub upstream_endpoint_metadata: serde_json::Map<String, Value>,
    /// The name of the cluster the streams' route targets (Envoy's
    /// `xds.cluster_name`), e.g. Istio's
    /// `outbound|9080||ratings.default.svc.cluster.local`.
    #[serde(default = "default_upstream_cluster")]
    pub upstream_cluster: String,
    /// The name of the route the streams take (Envoy's `xds.route_name`);
    /// unnamed by default.
    #[serde(default)]
    pub route_name: String,
    /// The upstream cluster's `Cluster.metadata.filter_metadata`, e.g.
    /// Istio's `{"istio": {"services": [{"host": "...", "name": "...",
    /// "namespace": "..."}]}}`: on the generated HTTP and TCP upstream
    /// clusters in Envoy, `xds.cluster_metadata` in host-sim.
    #[serde(default)]
    pub upstream_cluster_metadata: serde_json::Map<String, Value>,
    /// HTTP streams, replayed one after another.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    /// TCP connections through the network filter chain, replayed one after
    /// another after the streams.
    #[serde(default)]
    pub connections: Vec<TcpConnectionSpec>,
    /// Virtual time to let pass after the last stream (ticks fire).
    #[serde(default)]
    pub advance_ms_after: u64,
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// A second proxy in a chain: the proxy above (the client sidecar)
    /// sends its upstream requests to this one (the server sidecar), whose
    /// upstream is the streams' `upstream`. Absent: one proxy, as before.
    #[serde(default)]
    pub server_proxy: Option<ServerProxySpec>,
}

/// The server sidecar of a two-proxy chain: its own node, direction,
/// workers, plugins and tag extraction. The connection between the two
/// proxies is plaintext unless `mtls` is given (HTTP/1.1 for streams;
/// docs/scenario-format.md, *Two proxies*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerProxySpec {
    /// Its filter chains (HTTP and network; may be empty).
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
    #[serde(default)]
    pub node: NodeSpec,
    #[serde(default = "one")]
    pub workers: u32,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub stats_tags: Option<Vec<StatsTag>>,
    /// The hop between the proxies is mutual TLS, as between two Istio
    /// sidecars. Absent: plaintext.
    #[serde(default)]
    pub mtls: Option<HopTlsSpec>,
    /// Its HTTP upstream cluster's name (default `upstream`).
    #[serde(default = "default_upstream_cluster")]
    pub upstream_cluster: String,
    /// Its route's name (default unnamed).
    #[serde(default)]
    pub route_name: String,
}

fn default_upstream_cluster() -> String {
    crate::UPSTREAM_CLUSTER.into()
}

/// Mutual TLS between the two proxies: the client proxy's upstream cluster
/// presents `client_certificate` (Istio's `ISTIO_MUTUAL` origination); the
/// server proxy's listener presents `server_certificate` and requires a
/// client certificate from the same CA.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopTlsSpec {
    /// The client proxy's certificate (its workload identity).
    #[serde(default)]
    pub client_certificate: CertificateSpec,
    /// The server proxy's certificate.
    #[serde(default)]
    pub server_certificate: CertificateSpec,
    /// The SNI the client proxy sends (the cluster's `sni`); none if absent.
    #[serde(default)]
    pub sni: Option<String>,
    /// ALPN protocols offered by the client and accepted by the server
    /// (Istio: `istio-peer-exchange`, `istio`). Only the Envoy engine uses
    /// them: Envoy 1.40 gives Wasm no property with the negotiated ALPN, so
    /// no plugin can tell.
    #[serde(default)]
    pub alpn: Vec<String>,
}

impl HopTlsSpec {
    /// The hop as the server proxy's downstream connection.
    pub fn server_connection(&self) -> ConnectionSpec {
        ConnectionSpec {
            mtls: true,
            tls: true,
            peer_certificate: Some(self.client_certificate.clone()),
            local_certificate: Some(self.server_certificate.clone()),
            requested_server_name: self.sni.clone(),
            client_is_envoy: true,
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Inbound,
    Outbound,
    Unspecified,
}

/// Which filter chain a plugin joins: Envoy's HTTP filter
/// (`envoy.filters.http.wasm`) or network filter (`envoy.filters.network.wasm`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PluginType {
    #[default]
    Http,
    Network,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Name used in logs and results; defaults to the wasm file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Path to the .wasm, relative to the scenario file.
    pub wasm: PathBuf,
    /// `http` (default) or `network`.
    #[serde(default, rename = "type")]
    pub plugin_type: PluginType,
    #[serde(default)]
    pub root_id: String,
    /// Plugins with the same vm_id (and code) share a VM, as in Envoy.
    #[serde(default)]
    pub vm_id: String,
    /// Plugin configuration: a JSON string is passed as-is, any other JSON
    /// value is serialized (as Istio does for `pluginConfig`).
    #[serde(default)]
    pub configuration: Option<Value>,
    #[serde(default)]
    pub vm_configuration: Option<Value>,
    /// `vm_config.environment_variables.key_values`.
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    /// `fail_open`: on a crashed VM, pass traffic instead of failing it.
    #[serde(default)]
    pub fail_open: bool,
    /// Log level the host reports to `proxy_get_log_level` and filters by.
    #[serde(default = "default_log_level")]
    pub log_level: crate::abi::LogLevel,
}

fn default_log_level() -> crate::abi::LogLevel {
    crate::abi::LogLevel::Trace
}

impl PluginSpec {
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.wasm.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
    }
}

/// Plugin/VM configuration as the bytes the plugin reads.
pub fn config_bytes(v: &Option<Value>) -> Vec<u8> {
    match v {
        None => Vec::new(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(other) => other.to_string().into_bytes(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default = "default_node_id")]
    pub id: String,
    #[serde(default = "default_node_cluster")]
    pub cluster: String,
    /// `node.metadata` (a protobuf Struct in Envoy): any JSON object.
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self { id: default_node_id(), cluster: default_node_cluster(), metadata: Default::default() }
    }
}

fn default_node_id() -> String {
    "sidecar~127.0.0.1~app.default~default.svc.cluster.local".into()
}
fn default_node_cluster() -> String {
    "app.default".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Whether the downstream connection is mutual TLS.
    #[serde(default)]
    pub mtls: bool,
    /// Whether the downstream connection is TLS at all (implied by mtls).
    #[serde(default)]
    pub tls: bool,
    /// The client's certificate (mTLS only).
    #[serde(default)]
    pub peer_certificate: Option<CertificateSpec>,
    /// The proxy's own certificate.
    #[serde(default)]
    pub local_certificate: Option<CertificateSpec>,
    /// `SNI` requested by the client.
    #[serde(default)]
    pub requested_server_name: Option<String>,
    /// The client is an Envoy (the client proxy of a two-proxy chain), so
    /// the TLS version is TLSv1.2, Envoy's default maximum as a TLS client
    /// (observed in Envoy 1.40). Not a scenario field: set by
    /// [`HopTlsSpec::server_connection`].
    #[serde(skip)]
    pub client_is_envoy: bool,
}

impl ConnectionSpec {
    pub fn is_tls(&self) -> bool {
        self.tls || self.mtls
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    #[serde(default)]
    pub uri_sans: Vec<String>,
    #[serde(default)]
    pub dns_sans: Vec<String>,
    /// RFC 2253 subject, e.g. `CN=client,O=example`.
    #[serde(default)]
    pub subject: String,
    /// Hex SHA-256 of the DER certificate (peer only). The Envoy engine uses
    /// the digest of the certificate it generates.
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsTag {
    pub tag_name: String,
    pub regex: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    #[serde(default)]
    pub name: String,
    pub request: MessageSpec,
    /// What the upstream answers, if the request reaches it. Missing: 200,
    /// no body.
    #[serde(default)]
    pub upstream: Option<ResponseSpec>,
    /// Canned answers for `proxy_http_call`, taken in call order.
    #[serde(default)]
    pub http_calls: Vec<ResponseSpec>,
    /// Worker that handles the stream; default round-robin.
    #[serde(default)]
    pub worker: Option<u32>,
    /// Overrides the scenario's connection for this stream.
    #[serde(default)]
    pub connection: Option<ConnectionSpec>,
    /// Virtual time to let pass before the stream starts (ticks fire).
    #[serde(default)]
    pub advance_ms_before: u64,
}

/// A TCP connection through the network filter chain to a TCP upstream
/// (Envoy's `tcp_proxy`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConnectionSpec {
    #[serde(default)]
    pub name: String,
    /// What happens on the connection, in order. Whatever is still open at
    /// the end is closed: the client half-closes, then the upstream does.
    #[serde(default)]
    pub events: Vec<TcpEvent>,
    /// The upstream refuses the connection: the proxy closes the client's
    /// connection and no data flows.
    #[serde(default)]
    pub upstream_unreachable: bool,
    /// Worker that handles the connection; default round-robin.
    #[serde(default)]
    pub worker: Option<u32>,
    /// Overrides the scenario's connection (TLS, certificates).
    #[serde(default)]
    pub connection: Option<ConnectionSpec>,
    /// Virtual time to let pass before the connection opens (ticks fire).
    #[serde(default)]
    pub advance_ms_before: u64,
}

/// One step of a TCP connection; exactly one field is set.
/// `{"downstream": "bytes"}`: the client sends; `{"upstream": "bytes"}`: the
/// upstream sends; `{"close": "downstream"|"upstream"}`: that side
/// half-closes (FIN); `{"reset": "downstream"}`: the client resets the
/// connection; `{"advance_ms": n}`: virtual time passes with the connection
/// open (ticks fire).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpEvent {
    #[serde(default)]
    pub downstream: Option<String>,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub close: Option<Side>,
    #[serde(default)]
    pub reset: Option<Side>,
    #[serde(default)]
    pub advance_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Downstream,
    Upstream,
}

/// A [`TcpEvent`] once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpStep {
    DownstreamData(Vec<u8>),
    UpstreamData(Vec<u8>),
    Close(Side),
    ResetDownstream,
    Advance(u64),
}

impl TcpEvent {
    /// The one step this event stands for, or None when it sets no field or
    /// several, or resets the upstream (not supported).
    pub fn step(&self) -> Option<TcpStep> {
        let set = self.downstream.is_some() as u8
            + self.upstream.is_some() as u8
            + self.close.is_some() as u8
            + self.reset.is_some() as u8
            + self.advance_ms.is_some() as u8;
        if set != 1 {
            return None;
        }
        Some(if let Some(d) = &self.downstream {
            TcpStep::DownstreamData(d.as_bytes().to_vec())
        } else if let Some(u) = &self.upstream {
            TcpStep::UpstreamData(u.as_bytes().to_vec())
        } else if let Some(side) = self.close {
            TcpStep::Close(side)
        } else if let Some(ms) = self.advance_ms {
            TcpStep::Advance(ms)
        } else if self.reset == Some(Side::Downstream) {
            TcpStep::ResetDownstream
        } else {
            return None;
        })
    }
}

impl TcpConnectionSpec {
    /// The validated steps (see [`Scenario::load`], which checks them).
    pub fn steps(&self) -> Vec<TcpStep> {
        self.events.iter().filter_map(TcpEvent::step).collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSpec {
    #[serde(default)]
    pub headers: HeaderList,
    /// The body, sent as one chunk ...
    #[serde(default)]
    pub body: Option<String>,
    /// ... or as several chunks.
    #[serde(default)]
    pub body_chunks: Option<Vec<String>>,
    #[serde(default)]
    pub trailers: HeaderList,
}

/// The body as the chunks it is sent in: `body_chunks`, else `body` as one
/// chunk, else none (an empty body sends no data).
fn body_chunks(body: &Option<String>, chunks: &Option<Vec<String>>) -> Vec<Vec<u8>> {
    match (body, chunks) {
        (_, Some(chunks)) => chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
        (Some(b), None) if !b.is_empty() => vec![b.as_bytes().to_vec()],
        _ => Vec::new(),
    }
}

impl MessageSpec {
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        body_chunks(&self.body, &self.body_chunks)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: HeaderList,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub body_chunks: Option<Vec<String>>,
    #[serde(default)]
    pub trailers: HeaderList,
    /// Virtual time the peer takes to answer.
    #[serde(default)]
    pub delay_ms: u64,
}

fn ok_status() -> u16 {
    200
}

impl Default for ResponseSpec {
    fn default() -> Self {
        Self { status: 200, headers: Vec::new(), body: None, body_chunks: None, trailers: Vec::new(), delay_ms: 0 }
    }
}

impl ResponseSpec {
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        body_chunks(&self.body, &self.body_chunks)
    }
}

/// One check on the result. Exactly one of the forms:
/// `{"pointer": "/streams/0/downstream_response/status", "equals": 200}` (a
/// JSON pointer into the result), or `{"prometheus": "line"}` (a line that
/// must appear in the Prometheus text), or
/// `{"log_contains": "text"}` (some log message contains the text).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Present-but-null means "must be null", so it is kept as `Some(Null)`.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_contains: Option<String>,
    /// Check the server proxy's result (two-proxy scenarios) instead of the
    /// first proxy's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_proxy: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Loading problems; the CLI maps these to exit code 2.
#[derive(Debug)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Reads and validates a scenario; plugin paths are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("cannot read scenario {}: {e}", path.display())))?;
        let mut s = Self::from_json(&text).map_err(|e| ScenarioError(format!("{}: {}", path.display(), e.0)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let server_plugins = s.server_proxy.iter_mut().flat_map(|sp| sp.plugins.iter_mut());
        for p in s.plugins.iter_mut().chain(server_plugins) {
            if p.wasm.is_relative() {
                p.wasm = base.join(&p.wasm);
            }
        }
        Ok(s)
    }

    pub fn from_json(text: &str) -> Result<Self, ScenarioError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let s: Scenario = serde_path_to_error::deserialize(de)
            .map_err(|e| ScenarioError(format!("invalid scenario at `{}`: {}", e.path(), e.inner())))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let err = |m: String| Err(ScenarioError(m));
        if self.plugins.is_empty() {
            return err("invalid scenario at `plugins`: at least one plugin is required".into());
        }
        if self.workers == 0 {
            return err("invalid scenario at `workers`: must be at least 1".into());
        }
        self.validate_upstream_cluster("upstream_cluster", &self.upstream_cluster)?;
        if let Some(sp) = &self.server_proxy {
            self.validate_upstream_cluster("server_proxy.upstream_cluster", &sp.upstream_cluster)?;
        }
        for (i, s) in self.streams.iter().enumerate() {
            if s.request.body.is_some() && s.request.body_chunks.is_some() {
                return err(format!(
                    "invalid scenario at `streams[{i}].request`: give `body` or `body_chunks`, not both"
                ));
            }
            if let Some(w) = s.worker {
                if w >= self.workers {
                    return err(format!(
                        "invalid scenario at `streams[{i}].worker`: {w} but only {} workers",
                        self.workers
                    ));
                }
            }
            for (name, _) in s.request.headers.iter() {
                if name.is_empty() {
                    return err(format!("invalid scenario at `streams[{i}].request.headers`: empty header name"));
                }
            }
        }
        for (i, c) in self.connections.iter().enumerate() {
            if let Some(w) = c.worker {
                if w >= self.workers {
                    return err(format!(
                        "invalid scenario at `connections[{i}].worker`: {w} but only {} workers",
                        self.workers
                    ));
                }
            }
            let (mut down_closed, mut up_closed) = (false, false);
            for (j, e) in c.events.iter().enumerate() {
                let at = format!("connections[{i}].events[{j}]");
                let Some(step) = e.step() else {
                    return err(format!(
                        "invalid scenario at `{at}`: set exactly one of downstream, upstream, close, reset (downstream only), advance_ms"
                    ));
                };
                match step {
                    TcpStep::DownstreamData(_) if down_closed => {
                        return err(format!("invalid scenario at `{at}`: the client already closed its side"))
                    }
                    TcpStep::UpstreamData(_) if up_closed => {
                        return err(format!("invalid scenario at `{at}`: the upstream already closed its side"))
                    }
                    TcpStep::Close(Side::Downstream) if down_closed => {
                        return err(format!("invalid scenario at `{at}`: the client already closed its side"))
                    }
                    TcpStep::Close(Side::Upstream) if up_closed => {
                        return err(format!("invalid scenario at `{at}`: the upstream already closed its side"))
                    }
                    TcpStep::Close(Side::Downstream) => down_closed = true,
                    TcpStep::Close(Side::Upstream) => up_closed = true,
                    TcpStep::ResetDownstream if j + 1 != c.events.len() => {
                        return err(format!("invalid scenario at `{at}`: a reset must be the last event"))
                    }
                    _ => {}
                }
                if down_closed && up_closed && j + 1 != c.events.len() {
                    return err(format!(
                        "invalid scenario at `{at}`: the connection is closed after this event; nothing may follow"
                    ));
                }
            }
            if c.upstream_unreachable && !c.events.is_empty() {
                return err(format!(
                    "invalid scenario at `connections[{i}].events`: an unreachable upstream takes no events"
                ));
            }
        }
        for (i, e) in self.expect.iter().enumerate() {
            let forms = e.pointer.is_some() as u8 + e.prometheus.is_some() as u8 + e.log_contains.is_some() as u8;
            if forms != 1 || (e.pointer.is_some() != e.equals.is_some()) {
                return err(format!(
                    "invalid scenario at `expect[{i}]`: use exactly one of {{pointer, equals}}, {{prometheus}}, {{log_contains}}"
                ));
            }
        }
        if let Some(sp) = &self.server_proxy {
            self.validate_server_proxy(sp)?;
        }
        if let Some(tags) = &self.stats_tags {
            for (i, t) in tags.iter().enumerate() {
                if let Err(e) = regex::Regex::new(&t.regex) {
                    return err(format!("invalid scenario at `stats_tags[{i}].regex`: {e}"));
                }
            }
        }
        let base = self.stats_tags.clone().unwrap_or_else(crate::prometheus::istio_default_stats_tags);
        for (i, name) in self.extra_stat_tags.iter().enumerate() {
            let at = format!("invalid scenario at `extra_stat_tags[{i}]`");
            if name.is_empty() {
                return err(format!("{at}: empty tag name"));
            }
            // Envoy refuses a bootstrap with two tags of the same name.
            if base.iter().any(|t| &t.tag_name == name) || self.extra_stat_tags[..i].contains(name) {
                return err(format!("{at}: `{name}` is already in the tag list"));
            }
        }
        Ok(())
    }

    /// The tag extraction rules both engines apply: `stats_tags` (default
    /// Istio's standard list), then a rule per `extra_stat_tags` name, as
    /// Istio's bootstrap appends `extraStatTags` after its own.
    pub fn effective_stats_tags(&self) -> Vec<StatsTag> {
        let mut tags = self.stats_tags.clone().unwrap_or_else(crate::prometheus::istio_default_stats_tags);
        tags.extend(self.extra_stat_tags.iter().map(|n| crate::prometheus::istio_tag(n)));
        tags
    }

    /// The upstream cluster's name must be a cluster Envoy can have beside
    /// the engine's own: not empty, not the TCP upstream's, not a
    /// `proxy_http_call` cluster.
    fn validate_upstream_cluster(&self, at: &str, name: &str) -> Result<(), ScenarioError> {
        let problem = if name.is_empty() {
            "empty"
        } else if name == crate::TCP_UPSTREAM_CLUSTER {
            "the TCP upstream cluster's name"
        } else if self.clusters.iter().any(|c| c == name) {
            "also in `clusters`"
        } else {
            return Ok(());
        };
        Err(ScenarioError(format!("invalid scenario at `{at}`: {name:?} is {problem}")))
    }

    /// What a two-proxy scenario may hold (what both engines model).
    fn validate_server_proxy(&self, sp: &ServerProxySpec) -> Result<(), ScenarioError> {
        let err = |m: String| Err(ScenarioError(m));
        if sp.workers == 0 {
            return err("invalid scenario at `server_proxy.workers`: must be at least 1".into());
        }
        if let Some(i) = self.connections.iter().position(|c| c.upstream_unreachable) {
            return err(format!(
                "invalid scenario at `connections[{i}].upstream_unreachable`: not supported with `server_proxy`"
            ));
        }
        if let Some(i) = self.streams.iter().position(|s| !s.http_calls.is_empty()) {
            return err(format!(
                "invalid scenario at `streams[{i}].http_calls`: not supported with `server_proxy` (which proxy's call a canned answer serves is ambiguous)"
            ));
        }
        if let Some(tags) = &sp.stats_tags {
            for (i, t) in tags.iter().enumerate() {
                if let Err(e) = regex::Regex::new(&t.regex) {
                    return err(format!("invalid scenario at `server_proxy.stats_tags[{i}].regex`: {e}"));
                }
            }
        }
        if let Some(m) = &sp.mtls {
            if let Some(i) = m.alpn.iter().position(|p| p.is_empty() || p.len() > 255) {
                return err(format!(
                    "invalid scenario at `server_proxy.mtls.alpn[{i}]`: an ALPN protocol is 1 to 255 bytes"
                ));
            }
            if m.sni.as_deref().is_some_and(str::is_empty) {
                return err("invalid scenario at `server_proxy.mtls.sni`: empty (leave it out for no SNI)".into());
            }
        }
        Ok(())
    }

    /// The server proxy of a two-proxy chain as a scenario of its own: its
    /// plugins, node, direction, workers and tags; the same streams (their
    /// `upstream` is its upstream) reaching it over plaintext, or over the
    /// hop's mutual TLS (its `connection`). Both engines
    /// start the second proxy from this.
    pub fn server_scenario(&self) -> Option<Scenario> {
        let sp = self.server_proxy.as_ref()?;
        // Fields not set here (e.g. `extra_stat_tags`) apply to both proxies.
        let mut s = self.clone();
        s.name = format!("{} (server proxy)", self.name);
        s.plugins = sp.plugins.clone();
        s.node = sp.node.clone();
        s.workers = sp.workers;
        s.direction = sp.direction;
        s.connection = sp.mtls.as_ref().map(HopTlsSpec::server_connection).unwrap_or_default();
        s.stats_tags = sp.stats_tags.clone();
        s.upstream_cluster = sp.upstream_cluster.clone();
        s.route_name = sp.route_name.clone();
        for st in &mut s.streams {
            st.connection = None;
            st.worker = None;
        }
        for c in &mut s.connections {
            c.connection = None;
            c.worker = None;
        }
        s.expect = Vec::new();
        s.server_proxy = None;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_name_their_path() {
        let e = Scenario::from_json(r#"{"plugins":[{"wasm":"a.wasm","confg":{}}],"streams":[]}"#).unwrap_err();
        assert!(e.0.contains("plugins[0]"), "{}", e.0);
        assert!(e.0.contains("confg"), "{}", e.0);
    }

    #[test]
    fn wrong_types_name_their_path() {
        let e =
            Scenario::from_json(r#"{"plugins":[{"wasm":"a.wasm"}],"streams":[{"request":{"headers":[[":path",1]]}}]}"#)
                .unwrap_err();
        assert!(e.0.contains("streams[0].request.headers"), "{}", e.0);
    }

    #[test]
    fn expectations_need_exactly_one_form() {
        let e =
            Scenario::from_json(r#"{"plugins":[{"wasm":"a"}],"streams":[],"expect":[{"pointer":"/a"}]}"#).unwrap_err();
        assert!(e.0.contains("expect[0]"), "{}", e.0);
    }

    #[test]
    fn an_expected_null_is_kept() {
        let s =
            Scenario::from_json(r#"{"plugins":[{"wasm":"a"}],"streams":[],"expect":[{"pointer":"/a","equals":null}]}"#)
                .unwrap();
        assert_eq!(s.expect[0].equals, Some(Value::Null));
    }

    #[test]
    fn tcp_events_are_validated() {
        let ok = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a","type":"network"}],"connections":[{"events":[
                {"downstream":"hi"},{"upstream":"yo"},{"advance_ms":5},{"close":"downstream"},{"close":"upstream"}]}]}"#,
        )
        .unwrap();
        assert_eq!(ok.plugins[0].plugin_type, PluginType::Network);
        assert_eq!(ok.connections[0].steps()[0], TcpStep::DownstreamData(b"hi".to_vec()));
        assert_eq!(ok.connections[0].steps()[3], TcpStep::Close(Side::Downstream));
        for (bad, at) in [
            (r#"[{"downstream":"a","upstream":"b"}]"#, "events[0]"),
            (r#"[{"reset":"upstream"}]"#, "events[0]"),
            (r#"[{"close":"downstream"},{"downstream":"late"}]"#, "events[1]"),
            (r#"[{"reset":"downstream"},{"advance_ms":1}]"#, "events[0]"),
        ] {
            let text = format!(r#"{{"plugins":[{{"wasm":"a"}}],"connections":[{{"events":{bad}}}]}}"#);
            let e = Scenario::from_json(&text).unwrap_err();
            assert!(e.0.contains(&format!("connections[0].{at}")), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn extra_stat_tags_append_istio_rules() {
        let s = Scenario::from_json(r#"{"plugins":[{"wasm":"a"}],"extra_stat_tags":["request_method"]}"#).unwrap();
        let tags = s.effective_stats_tags();
        assert_eq!(tags.len(), crate::prometheus::istio_default_stats_tags().len() + 1);
        let last = tags.last().unwrap();
        assert_eq!(last.tag_name, "request_method");
        assert_eq!(last.regex, r"(request_method=\.=(.*?);\.;)");
        // Appended to an explicit list too.
        let s = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a"}],"stats_tags":[{"tag_name":"reporter","regex":"(reporter=\\.=(.*?);\\.;)"}],
                "extra_stat_tags":["x"]}"#,
        )
        .unwrap();
        let names: Vec<String> = s.effective_stats_tags().into_iter().map(|t| t.tag_name).collect();
        assert_eq!(names, ["reporter", "x"]);
        for (bad, why) in [(r#"[""]"#, "empty"), (r#"["reporter"]"#, "already"), (r#"["a","a"]"#, "already")] {
            let text = format!(r#"{{"plugins":[{{"wasm":"a"}}],"extra_stat_tags":{bad}}}"#);
            let e = Scenario::from_json(&text).unwrap_err();
            assert!(e.0.contains("extra_stat_tags[") && e.0.contains(why), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn server_proxy_is_optional_and_validated() {
        let one = Scenario::from_json(r#"{"plugins":[{"wasm":"a"}]}"#).unwrap();
        assert!(one.server_proxy.is_none() && one.server_scenario().is_none());
        let two = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a"}],"direction":"outbound","streams":[{"name":"s","worker":0,"request":{}}],
                "server_proxy":{"plugins":[{"wasm":"b"}],"node":{"id":"server"},"workers":2}}"#,
        )
        .unwrap();
        let server = two.server_scenario().unwrap();
        assert_eq!(server.direction, Direction::Inbound);
        assert_eq!(server.workers, 2);
        assert_eq!(server.plugins[0].wasm, PathBuf::from("b"));
        assert_eq!(server.streams[0].name, "s");
        assert_eq!(server.streams[0].worker, None);
        for (bad, at) in [
            (r#"{"plugins":[{"wasm":"b"}],"confg":1}"#, "server_proxy"),
            (r#"{"workers":0}"#, "server_proxy.workers"),
            (r#"{"stats_tags":[{"tag_name":"t","regex":"("}]}"#, "server_proxy.stats_tags[0].regex"),
            (r#"{"mtls":{"alpn":["istio",""]}}"#, "server_proxy.mtls.alpn[1]"),
            (r#"{"mtls":{"sni":""}}"#, "server_proxy.mtls.sni"),
            (r#"{"mtls":{"client_cert":{}}}"#, "client_cert"),
            (r#"{"upstream_cluster":""}"#, "server_proxy.upstream_cluster"),
        ] {
            let text = format!(r#"{{"plugins":[{{"wasm":"a"}}],"server_proxy":{bad}}}"#);
            let e = Scenario::from_json(&text).unwrap_err();
            assert!(e.0.contains(at), "{bad}: {}", e.0);
        }
        let e = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a"}],"server_proxy":{},"streams":[{"request":{},"http_calls":[{"status":200}]}]}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("streams[0].http_calls"), "{}", e.0);
    }

    #[test]
    fn route_and_cluster_names_per_proxy() {
        let one = Scenario::from_json(r#"{"plugins":[{"wasm":"a"}]}"#).unwrap();
        assert_eq!((one.upstream_cluster.as_str(), one.route_name.as_str()), ("upstream", ""));
        let two = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a"}],"upstream_cluster":"server-outbound-cluster","route_name":"client_route",
                "server_proxy":{"route_name":"server_route"}}"#,
        )
        .unwrap();
        assert_eq!(two.upstream_cluster, "server-outbound-cluster");
        let server = two.server_scenario().unwrap();
        assert_eq!((server.upstream_cluster.as_str(), server.route_name.as_str()), ("upstream", "server_route"));
        for (bad, at) in [
            (r#""upstream_cluster":"""#, "is empty"),
            (r#""upstream_cluster":"tcp_upstream""#, "TCP upstream"),
            (r#""upstream_cluster":"auth","clusters":["auth"]"#, "also in `clusters`"),
        ] {
            let e = Scenario::from_json(&format!(r#"{{"plugins":[{{"wasm":"a"}}],{bad}}}"#)).unwrap_err();
            assert!(e.0.contains(at), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn an_mtls_hop_is_the_server_proxys_connection() {
        let two = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a"}],"connection":{"tls":true},"streams":[{"request":{},"connection":{"mtls":true}}],
                "server_proxy":{"mtls":{"client_certificate":{"uri_sans":["spiffe://td/ns/default/sa/client"]},
                "server_certificate":{"uri_sans":["spiffe://td/ns/default/sa/server"]},"sni":"server.com","alpn":["istio"]}}}"#,
        )
        .unwrap();
        let server = two.server_scenario().unwrap();
        let c = &server.connection;
        assert!(c.mtls && c.tls);
        assert_eq!(c.peer_certificate.as_ref().unwrap().uri_sans, ["spiffe://td/ns/default/sa/client"]);
        assert_eq!(c.local_certificate.as_ref().unwrap().uri_sans, ["spiffe://td/ns/default/sa/server"]);
        assert_eq!(c.requested_server_name.as_deref(), Some("server.com"));
        // The client's own connection settings stay with the first proxy.
        assert!(server.streams[0].connection.is_none());
        let plain = Scenario::from_json(r#"{"plugins":[{"wasm":"a"}],"server_proxy":{}}"#).unwrap();
        assert!(!plain.server_scenario().unwrap().connection.is_tls());
    }

    #[test]
    fn string_configuration_is_passed_verbatim() {
        assert_eq!(config_bytes(&Some(Value::String("{\"a\":1}".into()))), b"{\"a\":1}");
        assert_eq!(config_bytes(&Some(serde_json::json!({"a": 1}))), b"{\"a\":1}");
        assert!(config_bytes(&None).is_empty());
    }
}
