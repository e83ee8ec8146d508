//! The stats plugin's metrics, free of host calls: which metrics exist and
//! with which labels (built from the configuration by [`Stats::new`], whose
//! errors name the field), and which series to define and record into
//! (through a [`MetricSink`]), under the cardinality cap. What each label's
//! value is lives in [`crate::labels`], when to report in [`crate::report`].
//!
//! Istio's behaviour followed here is from its stats filter (istio/proxy
//! `source/extensions/filters/http/istio_stats`, and the Wasm plugin it
//! replaced, `extensions/stats`); docs/stats.md lists the facts and the
//! few differences.

use crate::config::{MetricKind, PluginConfig, DEFAULT_MAX_SERIES_PER_METRIC};
use crate::facts::Reporter;
use meshwasm_sdk::attributes::{AttrValue, AttributeSource};
use meshwasm_sdk::config::ConfigError;
use meshwasm_sdk::istio::{
    or_unknown, series_cost, Label, LabelPlan, LabelSource, SeriesBudget, SeriesCache, SeriesKey, StatNaming,
    WorkloadInfo, DEFAULT_MAX_LABEL_VALUE_BYTES, DEFAULT_MAX_SERIES_BYTES, HTTP_LABELS, OVERFLOW, PEER_LABELS,
    STANDARD_LABELS, TCP_LABELS, UNKNOWN,
};
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

/// How a standard metric gets its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StandardValue {
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
pub(crate) enum MetricValue {
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
    /// Metrics with equal plans share a group: a report builds each
    /// group's series key once (the standard HTTP metrics share one).
    group: usize,
    dropped: bool,
    series: SeriesCache,
}

/// The name of the counter of values diverted to overflow series (past
/// `max_series_per_metric` or `max_series_bytes`).
pub const OVERFLOW_COUNTER: &str = "meshwasm_stats_overflow_total";

/// The name of the counter of label values cut to `max_label_value_bytes`.
pub const TRUNCATED_COUNTER: &str = "meshwasm_stats_truncated_values_total";

/// The configured plugin: metrics, expressions, caches (one per VM).
pub struct Stats<E> {
    naming: StatNaming,
    pub(crate) reporter: Reporter,
    pub(crate) local: WorkloadInfo,
    pub(crate) disable_host_header_fallback: bool,
    /// Dimension expressions, deduplicated by source.
    dimensions: Vec<E>,
    /// Custom metric value expressions.
    values: Vec<E>,
    metrics: Vec<Metric>,
    /// The bytes all series of this VM may take (`max_series_bytes`).
    budget: SeriesBudget,
    overflow_counter: Option<u32>,
    truncated_counter: Option<u32>,
    /// A peer nobody knows.
    pub(crate) empty: WorkloadInfo,
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<E: Expression> Stats<E> {
    /// Builds the plugin from its configuration. Errors name the field.
    /// The warnings are for things Istio accepts and ignores; the tolerated
    /// errors for things Istio accepted but could not use (an expression
    /// that does not compile, a bad name): the part is left out as Istio
    /// left it out, and the shell logs and counts them. With `strict`, the
    /// first of those refuses the configuration instead.
    pub fn new(
        config: &PluginConfig,
        reporter: Reporter,
        local: WorkloadInfo,
    ) -> Result<(Self, Vec<String>, Vec<ConfigError>), ConfigError> {
        // A bound past the address space is no bound.
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let naming = StatNaming::new(&config.stat_prefix, &config.field_separator, &config.value_separator)
            .with_max_value_bytes(config.max_label_value_bytes.map_or(DEFAULT_MAX_LABEL_VALUE_BYTES, to_usize));
        let budget = SeriesBudget::new(config.max_series_bytes.map_or(DEFAULT_MAX_SERIES_BYTES, to_usize));
        if naming.field_separator == naming.value_separator {
            return Err(ConfigError::new("value_separator", "must differ from field_separator"));
        }
        let max_series = to_usize(config.max_series_per_metric.unwrap_or(DEFAULT_MAX_SERIES_PER_METRIC));
        let mut warnings = Vec::new();
        let mut tolerated: Vec<ConfigError> = Vec::new();
        let mut tolerate = |e: ConfigError| {
            if config.strict {
                return Err(e);
            }
            tolerated.push(e);
            Ok(())
        };
        // Fields stats.PluginConfig does not have: Envoy warns and ignores
        // them in dynamic configuration (MessageUtil::loadFromJson).
        for e in config.unknown_fields() {
            tolerate(e)?;
        }
        let mut metrics: Vec<Metric> = STANDARD_METRICS
            .iter()
            .map(|(name, kind, value, labels)| Metric {
                short_name: name.to_string(),
                full_name: naming.metric_name(name),
                kind: *kind,
                value: MetricValue::Standard(*value),
                plan: LabelPlan::standard(labels),
                group: 0,
                dropped: false,
                series: SeriesCache::new(max_series),
            })
            .collect();

        // Istio's stats filter (istio_stats.cc, Config) skips a definition
        // that redefines a standard metric or whose value does not parse,
        // logs it and keeps the rest; a later definition of the same name
        // is ignored (try_emplace). Names that would not make a metric name
        // are skipped the same way here.
        let mut values = Vec::new();
        for (i, d) in config.definitions.iter().enumerate() {
            let at = |field: &str| format!("definitions[{i}].{field}");
            let skipped = "; the definition is ignored";
            if d.name.is_empty() {
                tolerate(ConfigError::new(at("name"), format!("must not be empty{skipped}")))?;
                continue;
            }
            if !is_label_name(&d.name) {
                tolerate(ConfigError::new(
                    at("name"),
                    format!("`{}` is not a valid metric name ([a-zA-Z_][a-zA-Z0-9_]*){skipped}", d.name),
                ))?;
                continue;
            }
            if let Some(m) = metrics.iter().find(|m| m.short_name == d.name) {
                let what = if matches!(m.value, MetricValue::Standard(_)) { "the standard metric" } else { "metric" };
                tolerate(ConfigError::new(at("name"), format!("{what} `{}` is already defined{skipped}", d.name)))?;
                continue;
            }
            if d.value.trim().is_empty() {
                tolerate(ConfigError::new(at("value"), format!("must not be empty{skipped}")))?;
                continue;
            }
            let expr = match E::compile(&d.value) {
                Ok(expr) => expr,
                Err(e) => {
                    tolerate(ConfigError::new(at("value"), format!("invalid CEL expression: {e}{skipped}")))?;
                    continue;
                }
            };
            values.push(expr);
            metrics.push(Metric {
                short_name: d.name.clone(),
                full_name: naming.metric_name(&d.name),
                kind: d.kind.value,
                value: MetricValue::Custom(values.len() - 1),
                plan: LabelPlan::custom(),
                group: 0,
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
            let mut remove: Vec<&str> = Vec::with_capacity(m.tags_to_remove.len());
            for (j, tag) in m.tags_to_remove.iter().enumerate() {
                if tag.is_empty() {
                    // Istio logs a tag that is not standard and goes on.
                    tolerate(ConfigError::new(
                        format!("metrics[{i}].tags_to_remove[{j}]"),
                        "must not be empty; ignored",
                    ))?;
                    continue;
                }
                remove.push(tag);
            }
            let mut dims = Vec::with_capacity(m.dimensions.len());
            for (label, source) in &m.dimensions {
                let at = format!("metrics[{i}].dimensions.{label}");
                if !is_label_name(label) {
                    tolerate(ConfigError::new(
                        at,
                        format!(
                            "`{label}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*); the dimension is ignored"
                        ),
                    ))?;
                    continue;
                }
                let id = match by_source.get(source) {
                    Some(id) => *id,
                    None => match E::compile(source) {
                        Ok(expr) => {
                            dimensions.push(expr);
                            by_source.insert(source.clone(), dimensions.len() - 1);
                            dimensions.len() - 1
                        }
                        Err(e) => {
                            // Istio (istio_stats.cc, and the Wasm plugin's
                            // plugin.cc before it) keeps the configuration and
                            // drops a standard label whose expression does
                            // not parse, as if in tags_to_remove (e2e
                            // TestStatsPayload/Customized: no destination_app
                            // label); a new label is not added.
                            let standard = STANDARD_LABELS.contains(&label.as_str());
                            let outcome = if standard { "the label is removed" } else { "the label is not added" };
                            tolerate(ConfigError::new(at, format!("invalid CEL expression: {e}; {outcome}")))?;
                            if standard {
                                remove.push(label);
                            }
                            continue;
                        }
                    },
                };
                dims.push((label.as_str(), id));
            }
            for t in targets {
                metrics[t].plan.apply(remove.iter().copied(), dims.iter().copied());
            }
        }

        for i in 0..metrics.len() {
            metrics[i].group = metrics[..i].iter().find(|m| m.plan == metrics[i].plan).map_or(i, |m| m.group);
        }
        let stats = Stats {
            naming,
            reporter,
            local,
            disable_host_header_fallback: config.disable_host_header_fallback,
            dimensions,
            values,
            metrics,
            budget,
            overflow_counter: None,
            truncated_counter: None,
            empty: WorkloadInfo::default(),
        };
        Ok((stats, warnings, tolerated))
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
        // The lazy `(.+?);\.` ends the version at its first `;.`, stops at
        // a line break, and Envoy drops a tag's trailing dots: whatever the
        // node metadata says, the version goes through the label value rule
        // with `;.` as the field separator (the value separator only needs
        // to leave dots alone).
        let naming = StatNaming::new("", ";.", "=.=");
        let version = naming.sanitize(or_unknown(&self.local.istio_version));
        let version = if version.is_empty() { UNKNOWN } else { &version };
        format!("component.proxy.tag.{version};.{}", self.naming.metric_name("build"))
    }

    pub fn record_version(&self, sink: &mut dyn MetricSink) {
        if let Some(id) = sink.define(MetricKind::Gauge, &self.build_stat_name()) {
            sink.record(id, 1);
        }
    }

    /// The dimension expressions' values; one that fails to evaluate is
    /// `unknown`, as in Istio.
    pub(crate) fn dimension_values(&self, attrs: &dyn AttributeSource) -> Vec<String> {
        self.dimensions.iter().map(|e| e.evaluate_string(attrs).unwrap_or_else(|_| UNKNOWN.to_string())).collect()
    }

    pub(crate) fn custom_values(&self, attrs: &dyn AttributeSource) -> Vec<u64> {
        self.values.iter().map(|e| e.evaluate(attrs).map(|v| metric_amount(&v)).unwrap_or(0)).collect()
    }

    /// Label values as they go into stat names: sanitized and cut to
    /// `max_label_value_bytes`, once per report; cut values are counted in
    /// [`TRUNCATED_COUNTER`].
    pub(crate) fn bound_label_values(&mut self, values: &mut [String], sink: &mut dyn MetricSink) {
        let mut cut = 0u64;
        for v in values.iter_mut() {
            let (bounded, truncated) = self.naming.label_value(v);
            if let std::borrow::Cow::Owned(b) = bounded {
                *v = b;
            }
            cut += u64::from(truncated);
        }
        if cut > 0 {
            if self.truncated_counter.is_none() {
                self.truncated_counter = sink.define(MetricKind::Counter, TRUNCATED_COUNTER);
            }
            if let Some(id) = self.truncated_counter {
                sink.increment(id, cut);
            }
        }
    }

    /// Bytes the series of this VM take so far (against `max_series_bytes`).
    pub fn series_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Records every metric `amount` gives a value for, under its labels.
    /// A counter's series is defined even when the amount is 0, so it shows
    /// (as Istio's counters do) from its first report.
    pub(crate) fn emit(
        &mut self,
        standard: &[String],
        dims: &[String],
        sink: &mut dyn MetricSink,
        amount: impl Fn(MetricValue) -> Option<u64>,
    ) {
        let mut overflowed = 0u64;
        let naming = &self.naming;
        let value_of = |source: LabelSource| match source {
            LabelSource::Standard(l) => standard[l as usize].as_str(),
            LabelSource::Dimension(i) => dims.get(i).map(String::as_str).unwrap_or(UNKNOWN),
        };
        // Each group's key and its values' length joined by the field
        // separator, computed on its first metric with an amount.
        let mut keys: Vec<Option<(SeriesKey, usize)>> = vec![None; self.metrics.len()];
        for m in self.metrics.iter_mut() {
            if m.dropped {
                continue;
            }
            let Some(amount) = amount(m.value) else { continue };
            let Metric { plan, series, kind, full_name, group, .. } = m;
            // The values are sanitized already (`bound_label_values`, or the
            // clean `unknown`). The stat name is still built through
            // `stat_name`, which sanitizes.
            let count = plan.labels().count();
            let &mut (key, joined_len) = keys[*group].get_or_insert_with(|| {
                let values = plan.labels().map(|(_, s)| value_of(s));
                let joined = values.clone().map(str::len).sum::<usize>()
                    + naming.field_separator.len() * count.saturating_sub(1);
                (SeriesKey::of(values), joined)
            });
            // The stat name's length without building it: label names and
            // separators, the values, the metric's name. A series is charged
            // its values joined too (as the cache once kept them; Envoy keeps
            // the tag values beside the name).
            let framing: usize =
                plan.labels().map(|(n, _)| n.len() + naming.value_separator.len() + naming.field_separator.len()).sum();
            let key_values = joined_len - naming.field_separator.len() * count.saturating_sub(1);
            let cost = series_cost(joined_len, framing + key_values + full_name.len());
            let kind = *kind;
            let resolved = series.resolve(key, cost, &mut self.budget, |overflow| {
                let labels = plan.labels().map(|(n, s)| (n, if overflow { OVERFLOW } else { value_of(s) }));
                sink.define(kind, &naming.stat_name(full_name, labels))
            });
            let Some((id, overflow)) = resolved else { continue };
            if overflow {
                overflowed += 1;
            }
            match kind {
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
    use crate::testing::*;
    use meshwasm_sdk::config::parse;

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

    /// istio_build's version from the node metadata cannot break Istio's
    /// `(tag\.(.+?);\.)`: the tag is what follows `component.proxy.tag.` up
    /// to the first `;.`, on one line, without trailing dots (Envoy drops
    /// them), and the metric name stays `<prefix>_build`.
    #[test]
    fn build_stat_name_is_safe_for_any_version() {
        let c: PluginConfig = parse(b"{}").unwrap();
        for (version, tag) in [
            ("1.24.0", "1.24.0"),
            ("1.24.0;", "1.24.0;"),
            ("", "unknown"),
            ("1.2;.evil", "1.2_evil"),
            ("1.2\nx", "1.2_x"),
            ("1.2.", "1.2"),
            ("...", "unknown"),
            ("a;", "a;"),
            ("\u{2028};.;.", "___"),
        ] {
            let mut local = local();
            local.istio_version = version.into();
            let (s, _, _) = Stats::<Fake>::new(&c, Reporter::Destination, local).unwrap();
            let name = s.build_stat_name();
            let rest = name.strip_prefix("component.proxy.tag.").unwrap();
            let end = rest.find(";.").unwrap();
            assert_eq!(&rest[..end], tag, "{version:?}: {name:?}");
            assert_eq!(&rest[end + 2..], "istio_build", "{version:?}: {name:?}");
            assert!(!name.contains(['\n', '\r', '\u{2028}']), "{name:?}");
        }
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

    fn config_error(json: &str) -> ConfigError {
        let c: PluginConfig = parse(json.as_bytes()).unwrap();
        match Stats::<Fake>::new(&c, Reporter::Destination, local()) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {json}"),
        }
    }

    /// What Istio accepted but could not use: tolerated (the error names the
    /// field), or with `strict` the configuration is refused at that field.
    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (r#""definitions":[{"name":"x","value":"a b"}]"#, "definitions[0].value", "invalid CEL expression"),
            (r#""definitions":[{"value":"1"}]"#, "definitions[0].name", "must not be empty"),
            (r#""definitions":[{"name":"x"}]"#, "definitions[0].value", "must not be empty"),
            (r#""definitions":[{"name":"requests_total","value":"1"}]"#, "definitions[0].name", "standard metric"),
            (
                r#""definitions":[{"name":"x","value":"1"},{"name":"x","value":"2"}]"#,
                "definitions[1].name",
                "already defined",
            ),
            (r#""definitions":[{"name":"x-y","value":"1"}]"#, "definitions[0].name", "not a valid metric name"),
            (r#""metrics":[{"dimensions":{"a":"bad expr"}}]"#, "metrics[0].dimensions.a", "invalid CEL expression"),
            (r#""metrics":[{},{"dimensions":{"a;b":"'x'"}}]"#, "metrics[1].dimensions.a;b", "not a valid label name"),
            (r#""metrics":[{"tags_to_remove":[""]}]"#, "metrics[0].tags_to_remove[0]", "must not be empty"),
        ];
        for (fields, path, message) in cases {
            let c: PluginConfig = parse(format!("{{{fields}}}").as_bytes()).unwrap();
            let (_, _, tolerated) = Stats::<Fake>::new(&c, Reporter::Destination, local()).unwrap();
            assert_eq!(tolerated.len(), 1, "{fields}: {tolerated:?}");
            assert_eq!(tolerated[0].path, path, "{fields}");
            assert!(tolerated[0].message.contains(message), "{fields}: {}", tolerated[0]);
            let e = config_error(&format!(r#"{{"strict":true,{fields}}}"#));
            assert_eq!(e, tolerated[0], "strict refuses with the same error");
        }
        // Refused whatever `strict` says: separators that cannot be told apart.
        let e = config_error(r#"{"field_separator":"==","value_separator":"=="}"#);
        assert_eq!((e.path.as_str(), e.message.contains("must differ")), ("value_separator", true), "{e}");
        let c: PluginConfig = parse(br#"{"metrics":[{"name":"nope","match":"x"}]}"#).unwrap();
        let (_, warnings, tolerated) = Stats::<Fake>::new(&c, Reporter::Destination, local()).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(tolerated.is_empty(), "warnings are not errors: {tolerated:?}");
    }

    /// Istio's e2e TestStatsPayload/Customized (istio/proxy
    /// testdata/stats/client_config_customized.yaml.tmpl and the expected
    /// testdata/metric/client_request_total_customized.yaml.tmpl): a
    /// standard label whose expression does not parse is gone, one that
    /// fails to evaluate is `unknown`, every other override is in force.
    #[test]
    fn unparsable_dimensions_are_left_out_as_in_istio() {
        let json = r#"{
          "definitions": [{"name": "custom", "value": "1", "type": "COUNTER"}, {"name": "broken", "value": "cannot parse"}],
          "metrics": [
            {"name": "request_duration_milliseconds", "drop": true},
            {"tags_to_remove": ["response_flags"]},
            {"name": "requests_total", "dimensions": {
              "configurable_metric_a": "'gateway'", "destination_app": "cannot _ parse | 0",
              "destination_workload": "attr:no.such", "brand_new": "cannot parse"}}
          ]}"#;
        let c: PluginConfig = parse(json.as_bytes()).unwrap();
        let (mut s, _, tolerated) = Stats::<Fake>::new(&c, Reporter::Destination, local()).unwrap();
        let paths: Vec<&str> = tolerated.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["definitions[1].value", "metrics[2].dimensions.brand_new", "metrics[2].dimensions.destination_app"]
        );
        assert!(tolerated[2].message.contains("the label is removed"), "{}", tolerated[2]);
        assert!(tolerated[1].message.contains("the label is not added"), "{}", tolerated[1]);
        let mut sink = Sink::default();
        s.record_http(&get_request(), &attrs("GET"), &mut sink);
        let labels = labels_of(sink.one("istio_requests_total"));
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("destination_app"), None, "removed");
        assert_eq!(get("brand_new"), None, "not added");
        assert_eq!(get("destination_workload"), Some("unknown"), "fails to evaluate");
        assert_eq!(get("configurable_metric_a"), Some("gateway"));
        assert_eq!(get("response_flags"), None, "tags_to_remove in force");
        assert!(labels_of(sink.one("istio_request_bytes")).iter().any(|(n, _)| n == "destination_app"));
        assert!(!sink.names.iter().any(|(_, n)| n.ends_with("istio_request_duration_milliseconds")), "dropped");
        assert_eq!(sink.counter("istio_custom"), Some(1));
        assert!(!sink.names.iter().any(|(_, n)| n.contains("broken")), "the broken definition is skipped");
        let e = config_error(&json.replacen('{', r#"{"strict": "true","#, 1));
        assert_eq!(e.path, "definitions[1].value");
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
