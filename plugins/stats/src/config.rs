//! The stats plugin's configuration: Istio's `stats.PluginConfig` read with
//! protobuf's JSON mapping, as Istio's stats filter got it (proto field
//! names or lowerCamelCase, quoted bools and integers, enums by name or
//! number, durations as `"5s"`, `null` as the default: the SDK's
//! `config::protojson`), plus meshwasm fields (`max_series_per_metric`,
//! `strict`).
//!
//! What protobuf's parser refuses is refused here, naming the field:
//! ill-typed values, unknown enum numbers, bad durations, a configuration
//! or nested message that is not an object. Enum names are also taken in
//! any case (`"server_gateway"`), as Envoy converts the native filter's
//! configuration with `case_insensitive_enum_parsing`. Unknown fields and
//! unknown enum names are kept ([`PluginConfig::unknown_fields`]): Envoy's
//! second, lenient pass (`ignore_unknown_fields`) ignores them and it only
//! warns in dynamic configuration, and Istio's Wasm plugin never looked at
//! unknown fields (it read an unknown metric type as `COUNTER`). Semantic checks (CEL, names) and the unknown fields are
//! handled when the core is built (`metrics::Stats::new`): what Istio
//! tolerated is logged and counted, unless `strict`.

use meshwasm_sdk::config::protojson::{self, Enum, ProtoEnum, Unknown};
use meshwasm_sdk::config::ConfigError;
use serde::de::Deserializer;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `google.protobuf.Duration` in milliseconds (`None` when absent).
use meshwasm_sdk::config::protojson::duration_ms as proto_duration_ms;
/// An unsigned proto integer whose absence means the caller's default
/// (the name fields below use with `deserialize_with`).
use meshwasm_sdk::config::protojson::opt_uint64 as proto_uint;
pub use meshwasm_sdk::config::protojson::parse_duration_ms;

/// Default cap on distinct label sets per metric (per VM); 0 = no cap.
pub const DEFAULT_MAX_SERIES_PER_METRIC: u64 = 10_000;

/// Istio's `stats.PluginConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PluginConfig {
    /// Deprecated in Istio; accepted, ignored.
    #[serde(deserialize_with = "protojson::bool")]
    pub debug: bool,
    /// Deprecated in Istio (peer metadata cache); accepted, ignored.
    #[serde(alias = "maxPeerCacheSize", deserialize_with = "protojson::int64")]
    pub max_peer_cache_size: i64,
    /// Metric name prefix; empty = `istio`.
    #[serde(alias = "statPrefix", deserialize_with = "protojson::string")]
    pub stat_prefix: String,
    /// Empty = `;.;`.
    #[serde(alias = "fieldSeparator", deserialize_with = "protojson::string")]
    pub field_separator: String,
    /// Empty = `=.=`.
    #[serde(alias = "valueSeparator", deserialize_with = "protojson::string")]
    pub value_separator: String,
    /// Do not take `destination_service` from the host header.
    #[serde(alias = "disableHostHeaderFallback", deserialize_with = "protojson::bool")]
    pub disable_host_header_fallback: bool,
    /// TCP reporting period (milliseconds once parsed); Istio's default 5 s.
    #[serde(alias = "tcpReportingDuration", deserialize_with = "proto_duration_ms")]
    pub tcp_reporting_duration: Option<u64>,
    /// Metric overrides, applied in order.
    #[serde(deserialize_with = "protojson::messages")]
    pub metrics: Vec<MetricConfig>,
    /// Custom metrics.
    #[serde(deserialize_with = "protojson::messages")]
    pub definitions: Vec<MetricDefinition>,
    /// Istio <= 1.16's `metadata_mode`; accepted, ignored.
    #[serde(alias = "metadataMode")]
    pub metadata_mode: Enum<MetadataMode>,
    /// `UNSPECIFIED` (from the listener direction) or `SERVER_GATEWAY`.
    pub reporter: Enum<ReporterConfig>,
    /// Istio's metric scope rotation; accepted, ignored (Envoy's stats
    /// eviction is configured outside the plugin).
    #[serde(alias = "rotationInterval", deserialize_with = "proto_duration_ms")]
    pub rotation_interval: Option<u64>,
    /// Goes with `rotation_interval`; accepted, ignored.
    #[serde(alias = "gracefulDeletionInterval", deserialize_with = "proto_duration_ms")]
    pub graceful_deletion_interval: Option<u64>,
    /// meshwasm: cap on distinct label sets per metric in each VM; past it,
    /// values go to one series whose labels are all `overflow`. 0 = no cap.
    #[serde(alias = "maxSeriesPerMetric", deserialize_with = "proto_uint")]
    pub max_series_per_metric: Option<u64>,
    /// meshwasm: refuse the configuration on any error Istio tolerated (a
    /// dimension or definition whose expression does not compile, a bad
    /// metric or label name), naming the field; by default such errors are
    /// logged, counted and the offending part is left out, as in Istio.
    #[serde(deserialize_with = "protojson::bool")]
    pub strict: bool,
    /// meshwasm: label values are cut to this many bytes (on a character
    /// boundary), counted in `meshwasm_stats_truncated_values_total`;
    /// default 512, 0 = no cut.
    #[serde(alias = "maxLabelValueBytes", deserialize_with = "proto_uint")]
    pub max_label_value_bytes: Option<u64>,
    /// meshwasm: bytes all series of a VM may take (keys and stat names);
    /// past it, new label sets go to the overflow series; default 32 MiB,
    /// 0 = unbounded.
    #[serde(alias = "maxSeriesBytes", deserialize_with = "proto_uint")]
    pub max_series_bytes: Option<u64>,
    /// Fields `stats.PluginConfig` does not have.
    #[serde(flatten)]
    pub unknown: Unknown,
}

impl PluginConfig {
    /// One error per unknown field or unknown enum name, at any level,
    /// naming it (`metrics[0].dimension`, `definitions[0].type`): what
    /// protobuf ignores with `ignore_unknown_fields`.
    pub fn unknown_fields(&self) -> Vec<ConfigError> {
        let mut out: Vec<ConfigError> = self.unknown.errors("").collect();
        out.extend(self.reporter.error("reporter"));
        out.extend(self.metadata_mode.error("metadata_mode"));
        for (i, m) in self.metrics.iter().enumerate() {
            out.extend(m.unknown.errors_at(format!("metrics[{i}]")));
        }
        for (i, d) in self.definitions.iter().enumerate() {
            out.extend(d.unknown.errors_at(format!("definitions[{i}]")));
            out.extend(d.kind.error(format!("definitions[{i}].type")));
        }
        out
    }
}

/// Istio's `stats.MetricConfig`: an override of one metric (`name`) or of
/// all (`name` empty).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MetricConfig {
    /// Label name → CEL expression giving its value.
    #[serde(deserialize_with = "protojson::string_map")]
    pub dimensions: BTreeMap<String, String>,
    /// `requests_total`, ..., or a custom definition's name; empty = all.
    #[serde(deserialize_with = "protojson::string")]
    pub name: String,
    /// Labels to remove.
    #[serde(alias = "tagsToRemove", deserialize_with = "protojson::strings")]
    pub tags_to_remove: Vec<String>,
    /// "NOT IMPLEMENTED" in Istio; accepted, ignored.
    #[serde(rename = "match", deserialize_with = "protojson::string")]
    pub match_: String,
    /// Do not emit the metric(s).
    #[serde(deserialize_with = "protojson::bool")]
    pub drop: bool,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Istio's `stats.MetricDefinition`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MetricDefinition {
    /// Metric name without the prefix (`get_calls` → `istio_get_calls`).
    #[serde(deserialize_with = "protojson::string")]
    pub name: String,
    /// CEL expression giving the value (a non-negative integer).
    #[serde(deserialize_with = "protojson::string")]
    pub value: String,
    #[serde(rename = "type")]
    pub kind: Enum<MetricKind>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Istio's `stats.MetricType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricKind {
    #[default]
    Counter,
    Gauge,
    Histogram,
}

/// Istio's `stats.Reporter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReporterConfig {
    /// From the listener direction (or the old root ids).
    #[default]
    Unspecified,
    /// A waypoint / gateway serving a set of destination workloads.
    ServerGateway,
}

/// Istio <= 1.16's `PluginConfig.MetadataMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetadataMode {
    #[default]
    LocalNodeMetadata,
    UpstreamHostMetadata,
    ClusterMetadata,
}

impl ProtoEnum for MetricKind {
    const WHAT: &'static str = "metric type";
    const VALUES: &'static [(&'static str, i32, Self)] = &[
        ("COUNTER", 0, MetricKind::Counter),
        ("GAUGE", 1, MetricKind::Gauge),
        ("HISTOGRAM", 2, MetricKind::Histogram),
    ];
    const CASE_INSENSITIVE: bool = true;
}

impl ProtoEnum for ReporterConfig {
    const WHAT: &'static str = "reporter";
    const VALUES: &'static [(&'static str, i32, Self)] =
        &[("UNSPECIFIED", 0, ReporterConfig::Unspecified), ("SERVER_GATEWAY", 1, ReporterConfig::ServerGateway)];
    const CASE_INSENSITIVE: bool = true;
}

impl ProtoEnum for MetadataMode {
    const WHAT: &'static str = "metadata mode";
    const VALUES: &'static [(&'static str, i32, Self)] = &[
        ("LOCAL_NODE_METADATA_MODE", 0, MetadataMode::LocalNodeMetadata),
        ("UPSTREAM_HOST_METADATA_MODE", 1, MetadataMode::UpstreamHostMetadata),
        ("CLUSTER_METADATA_MODE", 2, MetadataMode::ClusterMetadata),
    ];
    const CASE_INSENSITIVE: bool = true;
}

impl<'de> Deserialize<'de> for MetricKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        protojson::enumeration(d)
    }
}

impl<'de> Deserialize<'de> for ReporterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        protojson::enumeration(d)
    }
}

impl<'de> Deserialize<'de> for MetadataMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        protojson::enumeration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwasm_sdk::config::parse;

    #[test]
    fn istio_configs_parse() {
        let c: PluginConfig = parse(b"").unwrap();
        assert!(!c.debug && c.metrics.is_empty() && c.reporter.value == ReporterConfig::Unspecified);
        let c: PluginConfig = parse(
            br#"{
              "debug": false, "stat_prefix": "istio", "field_separator": ";.;", "value_separator": "=.=",
              "disable_host_header_fallback": true, "tcp_reporting_duration": "15s", "max_peer_cache_size": "100",
              "reporter": "SERVER_GATEWAY", "rotation_interval": "0s", "graceful_deletion_interval": "300s",
              "metadata_mode": 1,
              "metrics": [
                {"name": "requests_total", "dimensions": {"source_mesh_id": "node.metadata['MESH_ID']"}, "tags_to_remove": ["request_protocol"]},
                {"dimensions": {"a": "b"}, "drop": false, "match": ""}
              ],
              "definitions": [{"name": "get_calls", "type": "COUNTER", "value": "1"}, {"name": "g", "type": 1, "value": "2"}]
            }"#,
        )
        .unwrap();
        assert_eq!(c.tcp_reporting_duration, Some(15_000));
        assert_eq!(c.max_peer_cache_size, 100);
        assert_eq!(c.reporter.value, ReporterConfig::ServerGateway);
        assert_eq!(c.metadata_mode.value, MetadataMode::UpstreamHostMetadata);
        assert_eq!(c.metrics[0].tags_to_remove, ["request_protocol"]);
        assert_eq!(c.definitions[1].kind.value, MetricKind::Gauge);
        assert_eq!(c.max_series_per_metric, None);
    }

    /// The forms Istio's own e2e tests configure, and the rest of protobuf's
    /// JSON mapping (istio/proxy testdata/filters/*_stats_network_filter
    /// and testdata/stats/*_disable_header_fallback.yaml).
    #[test]
    fn protobuf_json_forms_parse() {
        let c: PluginConfig =
            parse(br#"{ "debug": "false", "field_separator": ";.;", "tcp_reporting_duration": "1s" }"#).unwrap();
        assert!(!c.debug);
        assert_eq!(c.field_separator, ";.;");
        assert_eq!(c.tcp_reporting_duration, Some(1000));
        let c: PluginConfig = parse(br#"{"disable_host_header_fallback":"true"}"#).unwrap();
        assert!(c.disable_host_header_fallback);
        let c: PluginConfig = parse(
            br#"{"debug":"TRUE","maxPeerCacheSize":"1e2","max_series_per_metric":5.0,"reporter":"1","metadataMode":"2",
                "strict":"no","metrics":[{"drop":"1","name":null,"tagsToRemove":null,"dimensions":null}],
                "definitions":[{"name":"x","value":"1","type":"2"}],"stat_prefix":null,"rotation_interval":null}"#,
        )
        .unwrap();
        assert!(c.debug && !c.strict);
        assert_eq!(c.max_peer_cache_size, 100);
        assert_eq!(c.max_series_per_metric, Some(5));
        assert_eq!(c.reporter.value, ReporterConfig::ServerGateway);
        assert_eq!(c.metadata_mode.value, MetadataMode::ClusterMetadata);
        assert!(c.metrics[0].drop && c.metrics[0].name.is_empty() && c.metrics[0].tags_to_remove.is_empty());
        assert_eq!(c.definitions[0].kind.value, MetricKind::Histogram);
        assert_eq!(c.rotation_interval, None);
        let c: PluginConfig =
            parse(br#"{"metrics":null,"definitions":null,"reporter":null,"max_series_per_metric":null}"#).unwrap();
        assert!(c.metrics.is_empty() && c.definitions.is_empty() && c.reporter.value == ReporterConfig::Unspecified);
        assert_eq!(c.max_series_per_metric, None, "null is the default");
    }

    #[test]
    fn camel_case_names_parse() {
        let c: PluginConfig = parse(
            br#"{"statPrefix":"mesh","disableHostHeaderFallback":true,"tcpReportingDuration":"0.5s",
                "metrics":[{"tagsToRemove":["reporter"]}],"maxSeriesPerMetric":"7","gracefulDeletionInterval":"1m"}"#,
        )
        .unwrap();
        assert_eq!(c.stat_prefix, "mesh");
        assert!(c.disable_host_header_fallback);
        assert_eq!(c.tcp_reporting_duration, Some(500));
        assert_eq!(c.metrics[0].tags_to_remove, ["reporter"]);
        assert_eq!(c.max_series_per_metric, Some(7));
        assert_eq!(c.graceful_deletion_interval, Some(60_000));
    }

    /// Envoy parses the native filter's configuration with
    /// `case_insensitive_enum_parsing`: a lower-case name is upper-cased.
    #[test]
    fn enum_names_in_any_case() {
        let c: PluginConfig =
            parse(br#"{"reporter":"server_gateway","metadata_mode":"Cluster_Metadata_Mode","definitions":[{"type":"gauge"}]}"#)
                .unwrap();
        assert_eq!(c.reporter.value, ReporterConfig::ServerGateway);
        assert_eq!(c.metadata_mode.value, MetadataMode::ClusterMetadata);
        assert_eq!(c.definitions[0].kind.value, MetricKind::Gauge);
    }

    /// Unknown fields parse (values of any type, at any level) and are
    /// listed by path, for `Stats::new` to tolerate or, with `strict`, refuse.
    #[test]
    fn unknown_fields_are_listed() {
        let c: PluginConfig = parse(
            br#"{"metrix":[],"stat_prefix":"p","metrics":[{"name":"requests_total","dimension":{"a":1}},{"drop":true}],
                "definitions":[{"name":"x","value":"1","unit":"s"}],"future":{"x":[null]}}"#,
        )
        .unwrap();
        assert_eq!(c.stat_prefix, "p");
        assert_eq!(c.metrics[0].name, "requests_total");
        let paths: Vec<String> = c.unknown_fields().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["metrix", "future", "metrics[0].dimension", "definitions[0].unit"]);
        assert!(parse::<PluginConfig>(b"{}").unwrap().unknown_fields().is_empty());
    }

    /// Unknown enum names are ignored as protobuf ignores them with
    /// `ignore_unknown_fields` (Envoy's lenient pass): the default, listed.
    #[test]
    fn unknown_enum_names_are_listed() {
        let c: PluginConfig = parse(
            br#"{"reporter":"CLIENT","metadata_mode":"server-gateway","definitions":[{"name":"x","value":"1","type":"SUMMARY"}]}"#,
        )
        .unwrap();
        assert_eq!(c.reporter.value, ReporterConfig::Unspecified);
        assert_eq!(c.definitions[0].kind.value, MetricKind::Counter);
        let errors = c.unknown_fields();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["reporter", "metadata_mode", "definitions[0].type"]);
        assert!(errors[2].message.contains("unknown metric type `SUMMARY`"), "{}", errors[2]);
        assert!(errors[2].message.contains("the default COUNTER"), "{}", errors[2]);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases: &[(&[u8], &str, &str)] = &[
            (br#"{"metrics":[{"dimensions":{"a":1}}]}"#, "metrics[0].dimensions.a", "expected a string"),
            (
                br#"{"metrics":[{"tags_to_remove":"request_protocol"}]}"#,
                "metrics[0].tags_to_remove",
                "expected a sequence",
            ),
            (
                br#"{"definitions":[{"name":"x","value":"1","type":7}]}"#,
                "definitions[0].type",
                "unknown metric type number 7",
            ),
            (br#"{"tcp_reporting_duration":"5 seconds"}"#, "tcp_reporting_duration", "invalid duration"),
            (br#"{"tcp_reporting_duration":5}"#, "tcp_reporting_duration", "a duration"),
            (br#"{"disable_host_header_fallback":"maybe"}"#, "disable_host_header_fallback", "invalid boolean"),
            (br#"{"disable_host_header_fallback":1}"#, "disable_host_header_fallback", "a boolean"),
            (br#"{"max_series_per_metric":-1}"#, "max_series_per_metric", "out of range"),
            (br#"{"max_series_per_metric":"1.5"}"#, "max_series_per_metric", "fractional part"),
            (br#"{"max_peer_cache_size":" 5"}"#, "max_peer_cache_size", "invalid integer"),
            (br#"{"tcp_reporting_duration":"-1s"}"#, "tcp_reporting_duration", "invalid duration"),
            (br#"{"reporter":2}"#, "reporter", "unknown reporter number 2"),
            (br#"{"metrics":[["requests_total"]]}"#, "metrics[0]", "expected a JSON object"),
            (br#"{"definitions":{"name":"x"}}"#, "definitions", "expected a sequence"),
            (br#"{"metrics":[{"dimensions":{"a":"x","a":"y"}}]}"#, "metrics[0].dimensions", "duplicate key `a`"),
            (br#"[false, 0, "evil"]"#, ".", "expected a JSON object"),
            (br#"[]"#, ".", "expected a JSON object"),
            (br#""stat_prefix""#, ".", "expected a JSON object"),
            (br#"{"strict":"sometimes"}"#, "strict", "invalid boolean"),
            (br#"{"statPrefix":"a","stat_prefix":"b"}"#, ".", "duplicate field"),
        ];
        for (json, path, message) in cases {
            let e = parse::<PluginConfig>(json).unwrap_err();
            assert_eq!(e.path, *path, "{}: {e}", String::from_utf8_lossy(json));
            assert!(e.message.contains(message), "{}: {e}", String::from_utf8_lossy(json));
        }
    }
}
