//! The stats plugin's logic, free of host calls: which metrics exist and
//! with which labels (from the configuration), what each label's value is
//! for a request (from [`RequestFacts`] the shell gathers), and which
//! series to define and record into (through a [`MetricSink`]).
//!
//! Istio's behaviour followed here is from its stats filter (istio/proxy
//! `source/extensions/filters/http/istio_stats`, and the Wasm plugin it
//! replaced, `extensions/stats`); docs/stats.md lists the facts and the
//! few differences.

use crate::config::{MetricKind, PluginConfig, ReporterConfig, DEFAULT_MAX_SERIES_PER_METRIC};
use meshwasm_sdk::attributes::{AttrValue, AttributeSource};
use meshwasm_sdk::config::ConfigError;
use meshwasm_sdk::istio::{
    or_latest, or_unknown, principal_namespace, response_flags_short_string, Label, LabelPlan, LabelSource,
    SeriesCache, StatNaming, WorkloadInfo, HTTP_LABELS, OVERFLOW, PEER_LABELS, STANDARD_LABELS, TCP_LABELS, UNKNOWN,
};
use std::borrow::Cow;
use std::collections::HashMap;

/// A compiled CEL expression (the SDK's `cel::Expression` in the plugin;
/// a stand-in in unit tests).
pub trait Expression: Sized {
    fn compile(source: &str) -> Result<Self, String>;
    fn evaluate(&self, attrs: &dyn AttributeSource) -> Result<AttrValue, String>;
    /// The value as a label (CEL's string form).
    fn evaluate_string(&self, attrs: &dyn AttributeSource) -> Result<String, String>;
}

/// Where the host keeps metrics.
pub trait MetricSink {
    /// `proxy_define_metric`; None when the host refuses.
    fn define(&mut self, kind: MetricKind, name: &str) -> Option<u32>;
    /// Adds a positive amount to a counter.
    fn increment(&mut self, id: u32, by: u64);
    /// Sets a gauge or records a histogram sample.
    fn record(&mut self, id: u32, value: u64);
}

/// Who reports: Istio's `reporter` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// A client sidecar (outbound listener): `source`.
    Source,
    /// A server sidecar (inbound listener): `destination`.
    Destination,
    /// `reporter: SERVER_GATEWAY` (a waypoint): `waypoint`.
    Waypoint,
}

impl Reporter {
    pub fn label(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }

    /// Server side: the peer is downstream.
    pub fn is_server(self) -> bool {
        self != Reporter::Source
    }

    /// Istio's choice: `SERVER_GATEWAY` → waypoint; otherwise the old Wasm
    /// plugin's root ids (`stats_inbound`, `stats_outbound`) when used, else
    /// the listener direction (`xds.listener_direction`: 1 inbound, 2
    /// outbound); an unspecified direction reports as a client, as Istio's
    /// filter does.
    pub fn choose(config: ReporterConfig, root_id: &str, listener_direction: Option<i64>) -> Reporter {
        Self::fixed(config, root_id).unwrap_or(match listener_direction {
            Some(1) => Reporter::Destination,
            _ => Reporter::Source,
        })
    }

    /// The reporter when the configuration or the root id decides it,
    /// None when it depends on the listener direction.
    pub fn fixed(config: ReporterConfig, root_id: &str) -> Option<Reporter> {
        match (config, root_id) {
            (ReporterConfig::ServerGateway, _) => Some(Reporter::Waypoint),
            (_, "stats_inbound") => Some(Reporter::Destination),
            (_, "stats_outbound") => Some(Reporter::Source),
            _ => None,
        }
    }
}

/// The first service of the upstream cluster's `istio` metadata
/// (`filter_metadata.istio.services[0]`), as Istio's control plane writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterService {
    pub host: String,
    pub name: String,
    pub namespace: String,
}

/// What the shell learned about a finished HTTP request.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    /// The request's `content-type` is gRPC.
    pub grpc: bool,
    /// `response.code`.
    pub response_code: Option<i64>,
    /// `response.grpc_status`.
    pub grpc_status: Option<i64>,
    /// `response.flags`.
    pub response_flags: u64,
    /// `request.duration`, in nanoseconds.
    pub duration_ns: Option<i64>,
    /// `request.total_size`.
    pub request_size: Option<i64>,
    /// `response.total_size`.
    pub response_size: Option<i64>,
    /// `:authority` (only read when the host-header fallback is on).
    pub host: Option<String>,
    /// The downstream peer's metadata (server side and waypoint).
    pub downstream_peer: Option<WorkloadInfo>,
    /// The upstream peer's metadata (client side and waypoint).
    pub upstream_peer: Option<WorkloadInfo>,
    /// First URI SAN of the downstream peer's / the listener's certificate.
    pub downstream_peer_san: String,
    pub downstream_local_san: String,
    /// First URI SAN of the upstream's / our client certificate.
    pub upstream_peer_san: String,
    pub upstream_local_san: String,
    /// `xds.route_name`.
    pub route_name: String,
    /// `xds.cluster_name`.
    pub cluster_name: String,
    /// The upstream cluster's Istio service, when its metadata has one.
    pub cluster_service: Option<ClusterService>,
    /// gRPC message counts (request, response) from Envoy's grpc_stats filter.
    pub grpc_messages: Option<(u64, u64)>,
    /// A TCP connection (network filter), not an HTTP request.
    pub tcp: bool,
}

/// One TCP connection as the stats filter follows it: the connection's byte
/// totals (as Istio's stats filter reads them from the connection), what has
/// been reported, and the labels, which are fixed at the first report (as
/// Istio's stats filter does).
#[derive(Debug, Default)]
pub struct TcpConnection {
    /// Bytes read from the client so far.
    received: u64,
    /// Bytes written to the client so far.
    sent: u64,
    reported_received: u64,
    reported_sent: u64,
    /// Standard label values and dimension values, once reported.
    labels: Option<(Vec<String>, Vec<String>)>,
}

impl TcpConnection {
    pub fn reported(&self) -> bool {
        self.labels.is_some()
    }

    /// The connection's byte totals now; totals never go back, so a
    /// smaller value (a host that lost count) is ignored.
    pub fn set_totals(&mut self, received: u64, sent: u64) {
        self.received = self.received.max(received);
        self.sent = self.sent.max(sent);
    }
}

/// Clusters whose name is the service name (Istio's passthrough and
/// blackhole clusters).
const PASSTHROUGH_CLUSTERS: &[&str] = &[
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
];

/// How a standard metric gets its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StandardValue {
    Requests,
    DurationMs,
    RequestBytes,
    ResponseBytes,
    RequestMessages,
    ResponseMessages,
    TcpOpened,
    TcpClosed,
    TcpSentBytes,
    TcpReceivedBytes,
}

/// Istio's standard metrics: name (without prefix), type, value, labels.
const STANDARD_METRICS: &[(&str, MetricKind, StandardValue, &[Label])] = &[
    ("requests_total", MetricKind::Counter, StandardValue::Requests, HTTP_LABELS),
    ("request_duration_milliseconds", MetricKind::Histogram, StandardValue::DurationMs, HTTP_LABELS),
    ("request_bytes", MetricKind::Histogram, StandardValue::RequestBytes, HTTP_LABELS),
    ("response_bytes", MetricKind::Histogram, StandardValue::ResponseBytes, HTTP_LABELS),
    ("request_messages_total", MetricKind::Counter, StandardValue::RequestMessages, PEER_LABELS),
    ("response_messages_total", MetricKind::Counter, StandardValue::ResponseMessages, PEER_LABELS),
    ("tcp_connections_opened_total", MetricKind::Counter, StandardValue::TcpOpened, TCP_LABELS),
    ("tcp_connections_closed_total", MetricKind::Counter, StandardValue::TcpClosed, TCP_LABELS),
    ("tcp_sent_bytes_total", MetricKind::Counter, StandardValue::TcpSentBytes, TCP_LABELS),
    ("tcp_received_bytes_total", MetricKind::Counter, StandardValue::TcpReceivedBytes, TCP_LABELS),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricValue {
    Standard(StandardValue),
    /// Index into `Stats::values`.
    Custom(usize),
}

struct Metric {
    /// Name as configured (`requests_total`, `get_calls`).
    short_name: String,
    /// With the prefix (`istio_requests_total`).
    full_name: String,
    kind: MetricKind,
    value: MetricValue,
    plan: LabelPlan,
    dropped: bool,
    series: SeriesCache,
}

/// The name of the counter of values diverted to overflow series.
pub const OVERFLOW_COUNTER: &str = "meshwasm_stats_overflow_total";

/// The configured plugin: metrics, expressions, caches (one per VM).
pub struct Stats<E> {
    naming: StatNaming,
    reporter: Reporter,
    local: WorkloadInfo,
    disable_host_header_fallback: bool,
    /// Dimension expressions, deduplicated by source.
    dimensions: Vec<E>,
    /// Custom metric value expressions.
    values: Vec<E>,
    metrics: Vec<Metric>,
    overflow_counter: Option<u32>,
    /// A peer nobody knows.
    empty: WorkloadInfo,
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<E: Expression> Stats<E> {
    /// Builds the plugin from its configuration. Errors name the field;
    /// the warnings are for things Istio accepts and ignores.
    pub fn new(
        config: &PluginConfig,
        reporter: Reporter,
        local: WorkloadInfo,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let naming = StatNaming::new(&config.stat_prefix, &config.field_separator, &config.value_separator);
        if naming.field_separator == naming.value_separator {
            return Err(ConfigError::new("value_separator", "must differ from field_separator"));
        }
        let max_series = config.max_series_per_metric.unwrap_or(DEFAULT_MAX_SERIES_PER_METRIC);
        let max_series = usize::try_from(max_series).unwrap_or(usize::MAX);
        let mut warnings = Vec::new();
        let mut metrics: Vec<Metric> = STANDARD_METRICS
            .iter()
            .map(|(name, kind, value, labels)| Metric {
                short_name: name.to_string(),
                full_name: naming.metric_name(name),
                kind: *kind,
                value: MetricValue::Standard(*value),
                plan: LabelPlan::standard(labels),
                dropped: false,
                series: SeriesCache::new(max_series),
            })
            .collect();

        let mut values = Vec::new();
        for (i, d) in config.definitions.iter().enumerate() {
            let at = |field: &str| format!("definitions[{i}].{field}");
            if d.name.is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if !is_label_name(&d.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("`{}` is not a valid metric name ([a-zA-Z_][a-zA-Z0-9_]*)", d.name),
                ));
            }
            if let Some(m) = metrics.iter().find(|m| m.short_name == d.name) {
                let what = if matches!(m.value, MetricValue::Standard(_)) { "the standard metric" } else { "metric" };
                return Err(ConfigError::new(at("name"), format!("{what} `{}` is already defined", d.name)));
            }
            if d.value.trim().is_empty() {
                return Err(ConfigError::new(at("value"), "must not be empty"));
            }
            let expr = E::compile(&d.value)
                .map_err(|e| ConfigError::new(at("value"), format!("invalid CEL expression: {e}")))?;
            values.push(expr);
            metrics.push(Metric {
                short_name: d.name.clone(),
                full_name: naming.metric_name(&d.name),
                kind: d.kind,
                value: MetricValue::Custom(values.len() - 1),
                plan: LabelPlan::custom(),
                dropped: false,
                series: SeriesCache::new(max_series),
            });
        }

        let mut dimensions: Vec<E> = Vec::new();
        let mut by_source: HashMap<String, usize> = HashMap::new();
        for (i, m) in config.metrics.iter().enumerate() {
            let targets: Vec<usize> = if m.name.is_empty() {
                (0..metrics.len()).collect()
            } else {
                metrics.iter().position(|x| x.short_name == m.name).into_iter().collect()
            };
            if targets.is_empty() {
                warnings.push(format!("metrics[{i}].name: `{}` matches no metric; the entry is ignored", m.name));
            }
            if !m.match_.is_empty() {
                warnings.push(format!("metrics[{i}].match: not implemented (as in Istio), ignored"));
            }
            if m.drop {
                // As in Istio, a dropping entry does nothing else.
                for t in &targets {
                    metrics[*t].dropped = true;
                }
                continue;
            }
            for (j, tag) in m.tags_to_remove.iter().enumerate() {
                if tag.is_empty() {
                    return Err(ConfigError::new(format!("metrics[{i}].tags_to_remove[{j}]"), "must not be empty"));
                }
            }
            let mut dims = Vec::with_capacity(m.dimensions.len());
            for (label, source) in &m.dimensions {
                let at = format!("metrics[{i}].dimensions.{label}");
                if !is_label_name(label) {
                    return Err(ConfigError::new(
                        at,
                        format!("`{label}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                    ));
                }
                let id = match by_source.get(source) {
                    Some(id) => *id,
                    None => {
                        let expr = E::compile(source)
                            .map_err(|e| ConfigError::new(at, format!("invalid CEL expression: {e}")))?;
                        dimensions.push(expr);
                        by_source.insert(source.clone(), dimensions.len() - 1);
                        dimensions.len() - 1
                    }
                };
                dims.push((label.as_str(), id));
            }
            for t in targets {
                metrics[t].plan.apply(m.tags_to_remove.iter().map(String::as_str), dims.iter().copied());
            }
        }

        let stats = Stats {
            naming,
            reporter,
            local,
            disable_host_header_fallback: config.disable_host_header_fallback,
            dimensions,
            values,
            metrics,
            overflow_counter: None,
            empty: WorkloadInfo::default(),
        };
        Ok((stats, warnings))
    }

    pub fn reporter(&self) -> Reporter {
        self.reporter
    }

    /// Changes the reporter (the shell learns the listener direction only
    /// once a stream runs: Envoy does not give it to root contexts).
    pub fn set_reporter(&mut self, reporter: Reporter) {
        self.reporter = reporter;
    }

    pub fn host_header_fallback(&self) -> bool {
        !self.disable_host_header_fallback
    }

    pub fn naming(&self) -> &StatNaming {
        &self.naming
    }

    /// `istio_build{component="proxy",tag="<ISTIO_VERSION>"} 1`, named the
    /// way Istio's bootstrap tag regexes (`(component\.(.+?)\.)`,
    /// `(tag\.(.+?);\.)`) extract.
    pub fn build_stat_name(&self) -> String {
        let version = or_unknown(&self.local.istio_version).replace(';', "_");
        format!("component.proxy.tag.{version};.{}", self.naming.metric_name("build"))
    }

    pub fn record_version(&self, sink: &mut dyn MetricSink) {
        if let Some(id) = sink.define(MetricKind::Gauge, &self.build_stat_name()) {
            sink.record(id, 1);
        }
    }

    /// The 25 standard label values of a request, in [`Label`] order.
    pub fn standard_values<'a>(&'a self, f: &'a RequestFacts) -> Vec<Cow<'a, str>> {
        let mut v: Vec<Cow<str>> = vec![Cow::Borrowed(UNKNOWN); STANDARD_LABELS.len()];
        let mut set = |l: Label, value: Cow<'a, str>| v[l as usize] = value;
        let b = |s: &'a str| Cow::Borrowed(or_unknown(s));
        set(L::Reporter, Cow::Borrowed(self.reporter.label()));

        // Destination service: the host header (unless disabled), refined
        // by the upstream cluster.
        let mut service_host: &str = match (&f.host, self.disable_host_header_fallback) {
            (Some(h), false) => h,
            _ => "",
        };
        let mut service_name: Cow<str> = Cow::Borrowed(service_host);
        let mut service_namespace: &str = "";
        if f.route_name == "block_all" {
            service_name = Cow::Borrowed("BlackHoleCluster");
        } else if f.route_name == "allow_any" {
            service_name = Cow::Borrowed("PassthroughCluster");
        } else if PASSTHROUGH_CLUSTERS.contains(&f.cluster_name.as_str()) {
            service_name = Cow::Borrowed(&f.cluster_name);
        } else if let Some(s) = &f.cluster_service {
            if !s.host.is_empty() {
                service_host = &s.host;
            }
            service_namespace = &s.namespace;
            service_name = if s.name.is_empty() {
                Cow::Borrowed(service_host.split('.').next().unwrap_or(""))
            } else {
                Cow::Borrowed(&s.name)
            };
        }

        let (peer, peer_san, local_san) = if self.reporter.is_server() {
            (f.downstream_peer.as_ref(), f.downstream_peer_san.as_str(), f.downstream_local_san.as_str())
        } else {
            (f.upstream_peer.as_ref(), f.upstream_peer_san.as_str(), f.upstream_local_san.as_str())
        };
        let empty = &self.empty;
        let peer_info = peer.unwrap_or(empty);
        let peer_namespace = principal_namespace(peer_san).unwrap_or(&peer_info.namespace);
        let local = &self.local;

        use Label as L;
        match self.reporter {
            Reporter::Destination | Reporter::Waypoint => {
                set(L::SourceWorkload, b(&peer_info.workload_name));
                set(L::SourceCanonicalService, b(&peer_info.canonical_service));
                set(L::SourceCanonicalRevision, Cow::Borrowed(or_latest(&peer_info.canonical_revision)));
                set(L::SourceWorkloadNamespace, b(peer_namespace));
                set(L::SourcePrincipal, b(peer_san));
                set(L::SourceApp, b(&peer_info.app));
                set(L::SourceVersion, b(&peer_info.version));
                set(L::SourceCluster, b(&peer_info.cluster_id));
            }
            Reporter::Source => {
                set(L::SourceWorkload, b(&local.workload_name));
                set(L::SourceCanonicalService, b(&local.canonical_service));
                set(L::SourceCanonicalRevision, Cow::Borrowed(or_latest(&local.canonical_revision)));
                set(L::SourceWorkloadNamespace, b(&local.namespace));
                set(L::SourcePrincipal, b(local_san));
                set(L::SourceApp, b(&local.app));
                set(L::SourceVersion, b(&local.version));
                set(L::SourceCluster, b(&local.cluster_id));
            }
        }
        match self.reporter {
            Reporter::Destination => {
                set(L::DestinationWorkload, b(&local.workload_name));
                set(L::DestinationWorkloadNamespace, b(&local.namespace));
                set(L::DestinationPrincipal, b(local_san));
                set(L::DestinationApp, b(&local.app));
                set(L::DestinationVersion, b(&local.version));
                let canonical = or_unknown(&local.canonical_service);
                set(
                    L::DestinationService,
                    Cow::Borrowed(if service_host.is_empty() { canonical } else { service_host }),
                );
                set(L::DestinationCanonicalService, Cow::Borrowed(canonical));
                set(L::DestinationCanonicalRevision, Cow::Borrowed(or_latest(&local.canonical_revision)));
                set(
                    L::DestinationServiceName,
                    if service_name.is_empty() { Cow::Borrowed(canonical) } else { service_name },
                );
                set(L::DestinationServiceNamespace, b(&local.namespace));
                set(L::DestinationCluster, b(&local.cluster_id));
            }
            Reporter::Source | Reporter::Waypoint => {
                // The client's peer, or the waypoint's endpoint: the upstream.
                let dest = f.upstream_peer.as_ref().unwrap_or(empty);
                let (dest_san, dest_ns) = if self.reporter == Reporter::Source {
                    (peer_san, peer_namespace)
                } else {
                    let san = f.upstream_peer_san.as_str();
                    (san, principal_namespace(san).unwrap_or(&dest.namespace))
                };
                set(L::DestinationWorkload, b(&dest.workload_name));
                set(L::DestinationWorkloadNamespace, b(dest_ns));
                set(L::DestinationPrincipal, b(dest_san));
                set(L::DestinationApp, b(&dest.app));
                set(L::DestinationVersion, b(&dest.version));
                set(L::DestinationService, b(service_host));
                set(L::DestinationCanonicalService, b(&dest.canonical_service));
                set(
                    L::DestinationCanonicalRevision,
                    Cow::Borrowed(if self.reporter == Reporter::Source {
                        or_latest(&dest.canonical_revision)
                    } else {
                        or_unknown(&dest.canonical_revision)
                    }),
                );
                set(
                    L::DestinationServiceName,
                    if service_name.is_empty() { Cow::Borrowed(UNKNOWN) } else { service_name },
                );
                let ns = if !service_namespace.is_empty() {
                    service_namespace
                } else if self.reporter == Reporter::Source {
                    dest_ns
                } else {
                    ""
                };
                set(L::DestinationServiceNamespace, b(ns));
                set(L::DestinationCluster, b(&dest.cluster_id));
            }
        }
        set(
            L::RequestProtocol,
            Cow::Borrowed(match (f.tcp, f.grpc) {
                (true, _) => "tcp",
                (false, true) => "grpc",
                (false, false) => "http",
            }),
        );
        set(L::ResponseCode, Cow::Owned(f.response_code.unwrap_or(0).to_string()));
        set(
            L::GrpcResponseStatus,
            match (f.grpc, f.grpc_status) {
                (true, Some(s)) => Cow::Owned(s.to_string()),
                _ => Cow::Borrowed(""),
            },
        );
        set(L::ResponseFlags, Cow::Owned(response_flags_short_string(f.response_flags)));
        set(
            L::ConnectionSecurityPolicy,
            Cow::Borrowed(match self.reporter {
                Reporter::Source => UNKNOWN,
                _ if !peer_san.is_empty() && !local_san.is_empty() => "mutual_tls",
                _ => "none",
            }),
        );
        v
    }

    /// Records Istio's HTTP metrics and the custom metrics for a finished
    /// request. `attrs` serves the dimension and value expressions.
    pub fn record_http(&mut self, facts: &RequestFacts, attrs: &dyn AttributeSource, sink: &mut dyn MetricSink) {
        let standard: Vec<String> = self.standard_values(facts).into_iter().map(Cow::into_owned).collect();
        let dims = self.dimension_values(attrs);
        let values = self.custom_values(attrs);
        self.emit(&standard, &dims, sink, |value| match value {
            MetricValue::Standard(StandardValue::Requests) => Some(1),
            MetricValue::Standard(StandardValue::DurationMs) => {
                facts.duration_ns.map(|ns| (ns.max(0) / 1_000_000) as u64)
            }
            MetricValue::Standard(StandardValue::RequestBytes) => facts.request_size.map(|n| n.max(0) as u64),
            MetricValue::Standard(StandardValue::ResponseBytes) => facts.response_size.map(|n| n.max(0) as u64),
            MetricValue::Standard(StandardValue::RequestMessages) => {
                facts.grpc_messages.filter(|_| facts.grpc).map(|(r, _)| r)
            }
            MetricValue::Standard(StandardValue::ResponseMessages) => {
                facts.grpc_messages.filter(|_| facts.grpc).map(|(_, r)| r)
            }
            MetricValue::Standard(_) => None,
            MetricValue::Custom(i) => values.get(i).copied(),
        });
    }

    /// Reports a TCP connection, periodically (`end` false) or when it
    /// closes (`end` true), as Istio's stats filter does: nothing is
    /// reported before the peer is known (`peer_known`: metadata exchange
    /// found the peer or gave up) unless the connection has ended; the first
    /// report fixes the labels (`gather` is only called then) and counts the
    /// connection opened; every report adds the bytes since the last one; the
    /// last one counts it closed and records the custom metrics.
    pub fn report_tcp(
        &mut self,
        conn: &mut TcpConnection,
        end: bool,
        peer_known: bool,
        gather: impl FnOnce() -> RequestFacts,
        attrs: &dyn AttributeSource,
        sink: &mut dyn MetricSink,
    ) {
        let first = conn.labels.is_none();
        if first && !peer_known && !end {
            return;
        }
        let (standard, dims) = conn.labels.get_or_insert_with(|| {
            let facts = gather();
            let standard = self.standard_values(&facts).into_iter().map(Cow::into_owned).collect();
            (standard, self.dimension_values(attrs))
        });
        let received = conn.received.saturating_sub(conn.reported_received);
        let sent = conn.sent.saturating_sub(conn.reported_sent);
        conn.reported_received = conn.received;
        conn.reported_sent = conn.sent;
        let values = if end { self.custom_values(attrs) } else { Vec::new() };
        let (standard, dims) = (standard.clone(), dims.clone());
        self.emit(&standard, &dims, sink, |value| match value {
            MetricValue::Standard(StandardValue::TcpOpened) => Some(first as u64),
            MetricValue::Standard(StandardValue::TcpClosed) => Some(end as u64),
            MetricValue::Standard(StandardValue::TcpSentBytes) => Some(sent),
            MetricValue::Standard(StandardValue::TcpReceivedBytes) => Some(received),
            MetricValue::Standard(_) => None,
            MetricValue::Custom(i) => values.get(i).copied(),
        });
    }

    /// The dimension expressions' values; one that fails to evaluate is
    /// `unknown`, as in Istio.
    fn dimension_values(&self, attrs: &dyn AttributeSource) -> Vec<String> {
        self.dimensions.iter().map(|e| e.evaluate_string(attrs).unwrap_or_else(|_| UNKNOWN.to_string())).collect()
    }

    fn custom_values(&self, attrs: &dyn AttributeSource) -> Vec<u64> {
        self.values.iter().map(|e| e.evaluate(attrs).map(|v| metric_amount(&v)).unwrap_or(0)).collect()
    }

    /// Records every metric `amount` gives a value for, under its labels.
    /// A counter's series is defined even when the amount is 0, so it shows
    /// (as Istio's counters do) from its first report.
    fn emit(
        &mut self,
        standard: &[String],
        dims: &[String],
        sink: &mut dyn MetricSink,
        amount: impl Fn(MetricValue) -> Option<u64>,
    ) {
        let mut overflowed = 0u64;
        for m in self.metrics.iter_mut() {
            if m.dropped {
                continue;
            }
            let Some(amount) = amount(m.value) else { continue };
            let labels: Vec<(&str, &str)> = m
                .plan
                .labels()
                .map(|(name, source)| {
                    let value = match source {
                        LabelSource::Standard(l) => standard[l as usize].as_str(),
                        LabelSource::Dimension(i) => dims.get(i).map(String::as_str).unwrap_or(UNKNOWN),
                    };
                    (name, value)
                })
                .collect();
            let naming = &self.naming;
            let key = naming.series_key(labels.iter().map(|(_, v)| *v));
            let (kind, full_name) = (m.kind, &m.full_name);
            let resolved = m.series.resolve(&key, |overflow| {
                let name = if overflow {
                    naming.stat_name(full_name, labels.iter().map(|(n, _)| (*n, OVERFLOW)))
                } else {
                    naming.stat_name(full_name, labels.iter().copied())
                };
                sink.define(kind, &name)
            });
            let Some((id, overflow)) = resolved else { continue };
            if overflow {
                overflowed += 1;
            }
            match m.kind {
                MetricKind::Counter if amount > 0 => sink.increment(id, amount),
                MetricKind::Counter => {}
                MetricKind::Gauge | MetricKind::Histogram => sink.record(id, amount),
            }
        }
        if overflowed > 0 {
            if self.overflow_counter.is_none() {
                self.overflow_counter = sink.define(MetricKind::Counter, OVERFLOW_COUNTER);
            }
            if let Some(id) = self.overflow_counter {
                sink.increment(id, overflowed);
            }
        }
    }
}

/// A custom metric's amount from its expression's value, as Istio reads it
/// (the value printed, then parsed as an unsigned integer; 0 otherwise):
/// non-negative integers, integral non-negative doubles, and strings
/// holding an unsigned integer.
pub fn metric_amount(v: &AttrValue) -> u64 {
    match v {
        AttrValue::Int(i) => u64::try_from(*i).unwrap_or(0),
        AttrValue::Uint(u) => *u,
        AttrValue::Double(d) if d.is_finite() && *d >= 0.0 && d.fract() == 0.0 && *d < u64::MAX as f64 => *d as u64,
        AttrValue::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use meshwasm_sdk::config::parse;
    use std::collections::BTreeMap;

    /// A stand-in expression language: `attr:<dotted path>`, `'literal'`,
    /// an integer, `method_is_get` (1 for GET, else 0); anything with a
    /// space fails to compile.
    enum Fake {
        Attr(Vec<String>),
        Lit(String),
        Int(i64),
        MethodIsGet,
    }

    impl Expression for Fake {
        fn compile(source: &str) -> Result<Self, String> {
            if source.contains(' ') {
                return Err(format!("Syntax error: unexpected `{source}`"));
            }
            Ok(if let Some(p) = source.strip_prefix("attr:") {
                Fake::Attr(p.split('.').map(str::to_string).collect())
            } else if source == "method_is_get" {
                Fake::MethodIsGet
            } else if let Ok(i) = source.parse() {
                Fake::Int(i)
            } else {
                Fake::Lit(source.trim_matches('\'').to_string())
            })
        }
        fn evaluate(&self, attrs: &dyn AttributeSource) -> Result<AttrValue, String> {
            match self {
                Fake::Attr(p) => {
                    let path: Vec<&str> = p.iter().map(String::as_str).collect();
                    attrs.attribute(&path).ok_or_else(|| "no such attribute".to_string())
                }
                Fake::Lit(s) => Ok(AttrValue::String(s.clone())),
                Fake::Int(i) => Ok(AttrValue::Int(*i)),
                Fake::MethodIsGet => {
                    let m = attrs.attribute(&["request", "method"]);
                    Ok(AttrValue::Int(i64::from(m.as_ref().and_then(AttrValue::as_str) == Some("GET"))))
                }
            }
        }
        fn evaluate_string(&self, attrs: &dyn AttributeSource) -> Result<String, String> {
            match self.evaluate(attrs)? {
                AttrValue::String(s) => Ok(s),
                AttrValue::Int(i) => Ok(i.to_string()),
                other => Err(format!("not a string: {other:?}")),
            }
        }
    }

    #[derive(Default)]
    struct Sink {
        names: Vec<(MetricKind, String)>,
        values: HashMap<u32, Vec<u64>>,
        increments: HashMap<u32, u64>,
    }

    impl MetricSink for Sink {
        fn define(&mut self, kind: MetricKind, name: &str) -> Option<u32> {
            if let Some(i) = self.names.iter().position(|(_, n)| n == name) {
                return Some(i as u32);
            }
            self.names.push((kind, name.to_string()));
            Some(self.names.len() as u32 - 1)
        }
        fn increment(&mut self, id: u32, by: u64) {
            assert!(by > 0);
            *self.increments.entry(id).or_default() += by;
        }
        fn record(&mut self, id: u32, value: u64) {
            self.values.entry(id).or_default().push(value);
        }
    }

    impl Sink {
        fn counter(&self, name: &str) -> Option<u64> {
            let id = self.names.iter().position(|(_, n)| n == name)? as u32;
            Some(self.increments.get(&id).copied().unwrap_or(0))
        }
        /// The stat name of the only series of a metric.
        fn one(&self, metric: &str) -> &str {
            let found: Vec<&str> = self
                .names
                .iter()
                .map(|(_, n)| n.as_str())
                .filter(|n| n.ends_with(&format!(";.;{metric}")) || *n == metric)
                .collect();
            assert_eq!(found.len(), 1, "{metric}: {found:#?}");
            found[0]
        }
    }

    fn local() -> WorkloadInfo {
        WorkloadInfo {
            name: "reviews-v1-1".into(),
            namespace: "default".into(),
            workload_name: "reviews-v1".into(),
            app: "reviews".into(),
            version: "v1".into(),
            canonical_service: "reviews".into(),
            canonical_revision: "v1".into(),
            cluster_id: "Kubernetes".into(),
            mesh_id: "mesh1".into(),
            istio_version: "1.16.0".into(),
        }
    }

    fn stats(config: &str, reporter: Reporter) -> Stats<Fake> {
        let c: PluginConfig = parse(config.as_bytes()).unwrap();
        Stats::new(&c, reporter, local()).unwrap().0
    }

    fn get_request() -> RequestFacts {
        RequestFacts {
            response_code: Some(200),
            duration_ns: Some(7_400_000),
            request_size: Some(120),
            response_size: Some(300),
            host: Some("reviews:9080".into()),
            ..Default::default()
        }
    }

    fn attrs(method: &str) -> BTreeMap<String, AttrValue> {
        let mut m = BTreeMap::new();
        m.insert("request.method".to_string(), AttrValue::String(method.into()));
        m.insert(
            "node.metadata".to_string(),
            AttrValue::Map(vec![("MESH_ID".into(), AttrValue::String("mesh1".into()))]),
        );
        m
    }

    fn labels_of(stat: &str) -> Vec<(String, String)> {
        let mut parts: Vec<&str> = stat.split(";.;").collect();
        parts.pop();
        parts.iter().map(|p| p.split_once("=.=").map(|(k, v)| (k.to_string(), v.to_string())).unwrap()).collect()
    }

    fn tcp_facts() -> RequestFacts {
        RequestFacts { tcp: true, response_flags: 0, ..Default::default() }
    }

    #[test]
    fn tcp_connection_reports() {
        let mut s = stats(
            r#"{"metrics":[{"name":"tcp_sent_bytes_total","dimensions":{"mesh":"'m1'"}}],
                "definitions":[{"name":"tcp_closes","type":"COUNTER","value":"1"}]}"#,
            Reporter::Destination,
        );
        let mut sink = Sink::default();
        let mut conn = TcpConnection::default();
        conn.set_totals(5, 8);
        let mut gathered = 0;
        // A tick before the peer is known reports nothing.
        s.report_tcp(&mut conn, false, false, || unreachable!(), &attrs(""), &mut sink);
        assert!(sink.names.is_empty() && !conn.reported());

        // The first report (peer known) fixes the labels and opens.
        let facts = || {
            gathered += 1;
            tcp_facts()
        };
        s.report_tcp(&mut conn, false, true, facts, &attrs(""), &mut sink);
        let opened = sink.one("istio_tcp_connections_opened_total").to_string();
        let labels = labels_of(&opened);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 23, "{keys:?}");
        assert!(!keys.contains(&"response_code") && !keys.contains(&"grpc_response_status"));
        let value = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(value("request_protocol"), "tcp");
        assert_eq!(value("response_flags"), "-");
        assert_eq!(value("connection_security_policy"), "none");
        assert_eq!(value("destination_service"), "reviews", "server side: the local canonical service");
        assert_eq!(sink.counter(&opened), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_connections_closed_total")), Some(0), "defined, not counted");
        assert_eq!(sink.counter(sink.one("istio_tcp_received_bytes_total")), Some(5));
        let sent = sink.one("istio_tcp_sent_bytes_total").to_string();
        assert!(sent.starts_with("reporter=.=destination;.;") && sent.contains(";.;mesh=.=m1;.;"), "{sent}");
        assert_eq!(sink.counter(&sent), Some(8));
        assert!(!sink.names.iter().any(|(_, n)| n.contains("tcp_closes")), "custom metrics wait for the close");

        // Later reports add only what is new; the close counts closed and
        // the custom metrics; the labels are not gathered again.
        conn.set_totals(15, 8);
        s.report_tcp(&mut conn, false, true, || unreachable!(), &attrs(""), &mut sink);
        conn.set_totals(3, 10);
        s.report_tcp(&mut conn, true, true, || unreachable!(), &attrs(""), &mut sink);
        assert_eq!(gathered, 1);
        assert_eq!(sink.counter(&opened), Some(1), "opened once");
        assert_eq!(sink.counter(sink.one("istio_tcp_connections_closed_total")), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_received_bytes_total")), Some(15));
        assert_eq!(sink.counter(&sent), Some(10));
        assert_eq!(sink.counter(sink.one("istio_tcp_closes")), Some(1));
        assert!(!sink.names.iter().any(|(_, n)| n.contains("requests_total")), "no HTTP metrics for TCP");
    }

    #[test]
    fn tcp_connection_without_peer_reports_at_close() {
        let mut s = stats("{}", Reporter::Source);
        let mut sink = Sink::default();
        let mut conn = TcpConnection::default();
        s.report_tcp(&mut conn, false, false, || unreachable!(), &attrs(""), &mut sink);
        let mut facts = tcp_facts();
        facts.response_flags = 0x20; // UF: the upstream refused
        s.report_tcp(&mut conn, true, false, || facts, &attrs(""), &mut sink);
        let closed = sink.one("istio_tcp_connections_closed_total").to_string();
        assert_eq!(sink.counter(&closed), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_connections_opened_total")), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_sent_bytes_total")), Some(0));
        let labels = labels_of(&closed);
        let value = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(value("reporter"), "source");
        assert_eq!(value("response_flags"), "UF");
        assert_eq!(value("connection_security_policy"), "unknown");
        assert_eq!(value("destination_service"), "unknown");
    }

    #[test]
    fn server_side_labels() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.downstream_peer = Some(WorkloadInfo {
            workload_name: "productpage-v1".into(),
            namespace: "default".into(),
            app: "productpage".into(),
            canonical_service: "productpage".into(),
            ..Default::default()
        });
        f.downstream_peer_san = "spiffe://cluster.local/ns/bookinfo/sa/productpage".into();
        f.downstream_local_san = "spiffe://cluster.local/ns/default/sa/reviews".into();
        s.record_http(&f, &attrs("GET"), &mut sink);
        let name = sink.one("istio_requests_total").to_string();
        let labels = labels_of(&name);
        let expected = [
            ("reporter", "destination"),
            ("source_workload", "productpage-v1"),
            ("source_canonical_service", "productpage"),
            ("source_canonical_revision", "latest"),
            ("source_workload_namespace", "bookinfo"),
            ("source_principal", "spiffe://cluster.local/ns/bookinfo/sa/productpage"),
            ("source_app", "productpage"),
            ("source_version", "unknown"),
            ("source_cluster", "unknown"),
            ("destination_workload", "reviews-v1"),
            ("destination_workload_namespace", "default"),
            ("destination_principal", "spiffe://cluster.local/ns/default/sa/reviews"),
            ("destination_app", "reviews"),
            ("destination_version", "v1"),
            ("destination_service", "reviews:9080"),
            ("destination_canonical_service", "reviews"),
            ("destination_canonical_revision", "v1"),
            ("destination_service_name", "reviews:9080"),
            ("destination_service_namespace", "default"),
            ("destination_cluster", "Kubernetes"),
            ("request_protocol", "http"),
            ("response_code", "200"),
            ("grpc_response_status", ""),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
        ];
        let got: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
        assert_eq!(sink.counter(&name), Some(1));
        let d = sink.names.iter().position(|(_, n)| n.ends_with("istio_request_duration_milliseconds")).unwrap();
        assert_eq!(sink.values[&(d as u32)], [7]);
        assert_eq!(sink.names[d].0, MetricKind::Histogram);
        // No gRPC: no message counters.
        assert!(!sink.names.iter().any(|(_, n)| n.contains("messages_total")));
        // Same labels again: no new definitions.
        let before = sink.names.len();
        s.record_http(&f, &attrs("GET"), &mut sink);
        assert_eq!(sink.names.len(), before);
        assert_eq!(sink.counter(&name), Some(2));
    }

    #[test]
    fn client_side_and_fallbacks() {
        let s = stats(r#"{"disable_host_header_fallback": true}"#, Reporter::Source);
        let mut f = get_request();
        f.response_code = None;
        f.response_flags = 0x2;
        let v = s.standard_values(&f);
        let at = |l: Label| v[l as usize].as_ref().to_string();
        assert_eq!(at(Label::Reporter), "source");
        assert_eq!(at(Label::SourceWorkload), "reviews-v1");
        assert_eq!(at(Label::SourcePrincipal), "unknown");
        assert_eq!(at(Label::DestinationWorkload), "unknown");
        assert_eq!(at(Label::DestinationCanonicalRevision), "latest");
        assert_eq!(at(Label::DestinationService), "unknown", "host header fallback disabled");
        assert_eq!(at(Label::ResponseCode), "0");
        assert_eq!(at(Label::ResponseFlags), "UH");
        assert_eq!(at(Label::ConnectionSecurityPolicy), "unknown");
        // Cluster metadata names the service.
        f.cluster_service = Some(ClusterService {
            host: "reviews.default.svc.cluster.local".into(),
            name: String::new(),
            namespace: "default".into(),
        });
        let v = s.standard_values(&f);
        assert_eq!(v[Label::DestinationService as usize], "reviews.default.svc.cluster.local");
        assert_eq!(v[Label::DestinationServiceName as usize], "reviews");
        assert_eq!(v[Label::DestinationServiceNamespace as usize], "default");
        f.cluster_name = "PassthroughCluster".into();
        assert_eq!(s.standard_values(&f)[Label::DestinationServiceName as usize], "PassthroughCluster");
        // Plaintext on the server side: none; waypoint reporter label.
        let w = stats("{}", Reporter::Waypoint);
        let req = get_request();
        let v = w.standard_values(&req);
        assert_eq!(v[Label::Reporter as usize], "waypoint");
        assert_eq!(v[Label::ConnectionSecurityPolicy as usize], "none");
        assert_eq!(v[Label::DestinationCanonicalRevision as usize], "unknown");
        assert_eq!(v[Label::DestinationService as usize], "reviews:9080");
        // Server side without a host: the canonical service.
        let d = stats("{}", Reporter::Destination);
        let mut f = get_request();
        f.host = None;
        assert_eq!(d.standard_values(&f)[Label::DestinationService as usize], "reviews");
    }

    #[test]
    fn grpc_requests() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.grpc = true;
        f.grpc_status = Some(14);
        f.grpc_messages = Some((1, 3));
        s.record_http(&f, &attrs("POST"), &mut sink);
        let labels = labels_of(sink.one("istio_requests_total"));
        assert!(labels.contains(&("request_protocol".into(), "grpc".into())));
        assert!(labels.contains(&("grpc_response_status".into(), "14".into())));
        let msgs = sink.one("istio_response_messages_total").to_string();
        assert_eq!(labels_of(&msgs).len(), 20);
        assert_eq!(labels_of(&msgs).last().unwrap().0, "destination_cluster");
        assert_eq!(sink.counter(&msgs), Some(3));
    }

    #[test]
    fn seed_examples() {
        let mut s = stats(
            r#"{
              "metrics": [{"name": "requests_total",
                           "dimensions": {"upstream_proxy_version": "attr:upstream_peer.istio_version", "source_mesh_id": "attr:node.metadata.MESH_ID"},
                           "tags_to_remove": ["request_protocol"]}],
              "definitions": [{"name": "get_calls", "type": "COUNTER", "value": "method_is_get"}]
            }"#,
            Reporter::Destination,
        );
        let mut sink = Sink::default();
        s.record_http(&get_request(), &attrs("GET"), &mut sink);
        s.record_http(&get_request(), &attrs("POST"), &mut sink);
        let name = sink.one("istio_requests_total").to_string();
        let labels = labels_of(&name);
        assert_eq!(labels.len(), 26);
        assert!(!labels.iter().any(|(k, _)| k == "request_protocol"));
        assert_eq!(labels[24], ("source_mesh_id".into(), "mesh1".into()));
        assert_eq!(labels[25], ("upstream_proxy_version".into(), "unknown".into()), "failed evaluation → unknown");
        // Other metrics keep request_protocol.
        assert!(labels_of(sink.one("istio_request_bytes")).iter().any(|(k, _)| k == "request_protocol"));
        // The custom counter has no labels and counts the GET only.
        assert_eq!(sink.one("istio_get_calls"), "istio_get_calls");
        assert_eq!(sink.counter("istio_get_calls"), Some(1));
    }

    #[test]
    fn overrides_drops_and_custom_types() {
        let mut s = stats(
            r#"{
              "metrics": [
                {"dimensions": {"response_code": "'override'", "request_operation": "'op'"}},
                {"name": "request_bytes", "drop": true},
                {"name": "requests_total", "tags_to_remove": ["response_code"]},
                {"name": "requests_total", "dimensions": {"response_code": "'again'"}}
              ],
              "definitions": [
                {"name": "g", "type": "GAUGE", "value": "5"},
                {"name": "h", "type": "HISTOGRAM", "value": "'12'"},
                {"name": "neg", "value": "-3"}
              ],
              "stat_prefix": "mesh"
            }"#,
            Reporter::Destination,
        );
        let mut sink = Sink::default();
        s.record_http(&get_request(), &attrs("GET"), &mut sink);
        assert!(!sink.names.iter().any(|(_, n)| n.ends_with("mesh_request_bytes")), "dropped");
        let req = labels_of(sink.one("mesh_requests_total"));
        let code = req.iter().position(|(k, _)| k == "response_code").unwrap();
        assert_eq!(req[code], ("response_code".into(), "again".into()));
        assert_eq!(req[code - 1].0, "request_protocol", "restored at its position");
        assert_eq!(req.last().unwrap(), &("request_operation".to_string(), "op".to_string()));
        let resp = labels_of(sink.one("mesh_response_bytes"));
        assert!(resp.contains(&("response_code".into(), "override".into())));
        // Nameless entries add their dimensions to custom metrics too.
        let g = sink.one("mesh_g").to_string();
        assert_eq!(
            labels_of(&g),
            [("request_operation".to_string(), "op".to_string()), ("response_code".into(), "override".into())]
        );
        let gid = sink.names.iter().position(|(_, n)| *n == g).unwrap() as u32;
        assert_eq!(sink.values[&gid], [5]);
        assert_eq!(sink.names[gid as usize].0, MetricKind::Gauge);
        let hid = sink.names.iter().position(|(_, n)| n.ends_with("mesh_h")).unwrap() as u32;
        assert_eq!(sink.values[&hid], [12]);
        // A negative value counts 0: the series exists, nothing is added.
        assert_eq!(sink.counter(sink.one("mesh_neg")), Some(0));
        // istio_build follows Istio's bootstrap regexes.
        assert_eq!(s.build_stat_name(), "component.proxy.tag.1.16.0;.mesh_build");
    }

    #[test]
    fn cardinality_cap() {
        let mut s = stats(
            r#"{"max_series_per_metric": 2, "metrics": [{"name": "requests_total", "dimensions": {"user": "attr:request.user"}}]}"#,
            Reporter::Destination,
        );
        let mut sink = Sink::default();
        for user in ["a", "b", "c", "d", "a"] {
            let mut a = attrs("GET");
            a.insert("request.user".into(), AttrValue::String(user.into()));
            s.record_http(&get_request(), &a, &mut sink);
        }
        let requests: Vec<&String> =
            sink.names.iter().map(|(_, n)| n).filter(|n| n.ends_with("istio_requests_total")).collect();
        assert_eq!(requests.len(), 3);
        let overflow = requests.iter().find(|n| n.contains("user=.=overflow")).unwrap();
        assert!(labels_of(overflow).iter().all(|(_, v)| v == "overflow"));
        assert_eq!(sink.counter(overflow), Some(2));
        let a = requests.iter().find(|n| n.contains("user=.=a;")).unwrap();
        assert_eq!(sink.counter(a), Some(2));
        // c and d overflowed for requests_total only (the other metrics
        // have one label set).
        assert_eq!(sink.counter(OVERFLOW_COUNTER), Some(2));
    }

    #[test]
    fn forged_values_stay_in_their_label() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.host = Some("evil;.;response_code=.=500".into());
        s.record_http(&f, &attrs("GET"), &mut sink);
        let labels = labels_of(sink.one("istio_requests_total"));
        assert_eq!(labels.len(), 25);
        assert!(labels.contains(&("destination_service".into(), "evil_response_code_500".into())));
    }

    fn config_error(json: &str) -> ConfigError {
        let c: PluginConfig = parse(json.as_bytes()).unwrap();
        match Stats::<Fake>::new(&c, Reporter::Destination, local()) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {json}"),
        }
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (r#"{"definitions":[{"name":"x","value":"a b"}]}"#, "definitions[0].value", "invalid CEL expression"),
            (r#"{"definitions":[{"value":"1"}]}"#, "definitions[0].name", "must not be empty"),
            (r#"{"definitions":[{"name":"x"}]}"#, "definitions[0].value", "must not be empty"),
            (r#"{"definitions":[{"name":"requests_total","value":"1"}]}"#, "definitions[0].name", "standard metric"),
            (
                r#"{"definitions":[{"name":"x","value":"1"},{"name":"x","value":"2"}]}"#,
                "definitions[1].name",
                "already defined",
            ),
            (r#"{"definitions":[{"name":"x-y","value":"1"}]}"#, "definitions[0].name", "not a valid metric name"),
            (r#"{"metrics":[{"dimensions":{"a":"bad expr"}}]}"#, "metrics[0].dimensions.a", "invalid CEL expression"),
            (r#"{"metrics":[{},{"dimensions":{"a;b":"'x'"}}]}"#, "metrics[1].dimensions.a;b", "not a valid label name"),
            (r#"{"metrics":[{"tags_to_remove":[""]}]}"#, "metrics[0].tags_to_remove[0]", "must not be empty"),
            (r#"{"field_separator":"==","value_separator":"=="}"#, "value_separator", "must differ"),
        ];
        for (json, path, message) in cases {
            let e = config_error(json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.message.contains(message), "{json}: {e}");
        }
        let c: PluginConfig = parse(br#"{"metrics":[{"name":"nope","match":"x"}]}"#).unwrap();
        let (_, warnings) = Stats::<Fake>::new(&c, Reporter::Destination, local()).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn reporter_choice() {
        use ReporterConfig::*;
        assert_eq!(Reporter::choose(Unspecified, "", Some(1)), Reporter::Destination);
        assert_eq!(Reporter::choose(Unspecified, "", Some(2)), Reporter::Source);
        assert_eq!(Reporter::choose(Unspecified, "", None), Reporter::Source);
        assert_eq!(Reporter::choose(Unspecified, "stats_inbound", Some(2)), Reporter::Destination);
        assert_eq!(Reporter::choose(Unspecified, "stats_outbound", Some(1)), Reporter::Source);
        assert_eq!(Reporter::choose(ServerGateway, "stats_outbound", Some(2)), Reporter::Waypoint);
        assert_eq!(Reporter::fixed(Unspecified, "stats"), None);
        assert_eq!(Reporter::fixed(Unspecified, "stats_inbound"), Some(Reporter::Destination));
    }

    #[test]
    fn amounts() {
        assert_eq!(metric_amount(&AttrValue::Int(3)), 3);
        assert_eq!(metric_amount(&AttrValue::Int(-3)), 0);
        assert_eq!(metric_amount(&AttrValue::Uint(4)), 4);
        assert_eq!(metric_amount(&AttrValue::Double(2.0)), 2);
        assert_eq!(metric_amount(&AttrValue::Double(2.5)), 0);
        assert_eq!(metric_amount(&AttrValue::String("17".into())), 17);
        assert_eq!(metric_amount(&AttrValue::Bool(true)), 0);
    }
}
