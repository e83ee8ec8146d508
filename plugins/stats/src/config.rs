//! The stats plugin's configuration: Istio's `stats.PluginConfig` as JSON,
//! the way Istio writes it (proto field names, `MarshalProtoNames`) and the
//! way proto JSON also allows (lowerCamelCase names, enums as names or
//! numbers, integers as strings, durations as `"5s"`), plus one meshwasm
//! field (`max_series_per_metric`).
//!
//! Parsing is strict: unknown fields, ill-typed values, unknown enum names
//! and bad durations are errors naming the field (`meshwasm_sdk::config`).
//! Semantic checks (CEL, names) happen when the core is built
//! (`metrics::Stats::new`), with the same kind of error.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Default cap on distinct label sets per metric (per VM); 0 = no cap.
pub const DEFAULT_MAX_SERIES_PER_METRIC: u64 = 10_000;

/// Istio's `stats.PluginConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Deprecated in Istio; accepted, ignored.
    pub debug: bool,
    /// Deprecated in Istio (peer metadata cache); accepted, ignored.
    #[serde(alias = "maxPeerCacheSize", deserialize_with = "proto_int")]
    pub max_peer_cache_size: i64,
    /// Metric name prefix; empty = `istio`.
    #[serde(alias = "statPrefix")]
    pub stat_prefix: String,
    /// Empty = `;.;`.
    #[serde(alias = "fieldSeparator")]
    pub field_separator: String,
    /// Empty = `=.=`.
    #[serde(alias = "valueSeparator")]
    pub value_separator: String,
    /// Do not take `destination_service` from the host header.
    #[serde(alias = "disableHostHeaderFallback")]
    pub disable_host_header_fallback: bool,
    /// TCP reporting period (milliseconds once parsed); Istio's default 5 s.
    #[serde(alias = "tcpReportingDuration", deserialize_with = "proto_duration_ms")]
    pub tcp_reporting_duration: Option<u64>,
    /// Metric overrides, applied in order.
    pub metrics: Vec<MetricConfig>,
    /// Custom metrics.
    pub definitions: Vec<MetricDefinition>,
    /// Istio <= 1.16's `metadata_mode`; accepted, ignored.
    #[serde(alias = "metadataMode")]
    pub metadata_mode: MetadataMode,
    /// `UNSPECIFIED` (from the listener direction) or `SERVER_GATEWAY`.
    pub reporter: ReporterConfig,
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
}

/// Istio's `stats.MetricConfig`: an override of one metric (`name`) or of
/// all (`name` empty).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricConfig {
    /// Label name → CEL expression giving its value.
    pub dimensions: BTreeMap<String, String>,
    /// `requests_total`, ..., or a custom definition's name; empty = all.
    pub name: String,
    /// Labels to remove.
    #[serde(alias = "tagsToRemove")]
    pub tags_to_remove: Vec<String>,
    /// "NOT IMPLEMENTED" in Istio; accepted, ignored.
    #[serde(rename = "match")]
    pub match_: String,
    /// Do not emit the metric(s).
    pub drop: bool,
}

/// Istio's `stats.MetricDefinition`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricDefinition {
    /// Metric name without the prefix (`get_calls` → `istio_get_calls`).
    pub name: String,
    /// CEL expression giving the value (a non-negative integer).
    pub value: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
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

/// A proto enum in JSON: its name, or its number.
fn proto_enum<'de, D, T: Copy>(d: D, what: &'static str, values: &'static [(&'static str, T)]) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T: 'static> {
        what: &'static str,
        values: &'static [(&'static str, T)],
    }
    impl<'de, T: Copy> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a {} name ({}) or number", self.what, self.names())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            self.values
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, v)| *v)
                .ok_or_else(|| E::custom(format!("unknown {} `{s}`, expected one of {}", self.what, self.names())))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            usize::try_from(n).ok().and_then(|i| self.values.get(i)).map(|(_, v)| *v).ok_or_else(|| {
                E::custom(format!("unknown {} number {n}, expected 0..{}", self.what, self.values.len() - 1))
            })
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!("unknown {} number {n}", self.what))),
            }
        }
    }
    impl<T> V<T> {
        fn names(&self) -> String {
            self.values.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        }
    }
    d.deserialize_any(V { what, values })
}

impl<'de> Deserialize<'de> for MetricKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const V: &[(&str, MetricKind)] =
            &[("COUNTER", MetricKind::Counter), ("GAUGE", MetricKind::Gauge), ("HISTOGRAM", MetricKind::Histogram)];
        proto_enum(d, "metric type", V)
    }
}

impl<'de> Deserialize<'de> for ReporterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const V: &[(&str, ReporterConfig)] =
            &[("UNSPECIFIED", ReporterConfig::Unspecified), ("SERVER_GATEWAY", ReporterConfig::ServerGateway)];
        proto_enum(d, "reporter", V)
    }
}

impl<'de> Deserialize<'de> for MetadataMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const V: &[(&str, MetadataMode)] = &[
            ("LOCAL_NODE_METADATA_MODE", MetadataMode::LocalNodeMetadata),
            ("UPSTREAM_HOST_METADATA_MODE", MetadataMode::UpstreamHostMetadata),
            ("CLUSTER_METADATA_MODE", MetadataMode::ClusterMetadata),
        ];
        proto_enum(d, "metadata mode", V)
    }
}

/// A proto JSON integer: a number, or a string holding one.
fn proto_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<i64, E> {
            Ok(n)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<i64, E> {
            i64::try_from(n).map_err(|_| E::custom(format!("integer {n} is too large")))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<i64, E> {
            s.parse().map_err(|_| E::custom(format!("invalid integer `{s}`")))
        }
    }
    d.deserialize_any(V)
}

fn proto_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = proto_int(d)?;
    u64::try_from(n).map(Some).map_err(|_| de::Error::custom(format!("must not be negative, got {n}")))
}

/// A proto JSON `google.protobuf.Duration` (`"5s"`, `"0.250s"`), also the
/// Go/absl forms Istio's old Wasm plugin accepted (`"100ms"`, `"1m30s"`), in
/// milliseconds.
fn proto_duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"5s\", \"0.5s\" or \"100ms\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
            parse_duration_ms(s).ok_or_else(|| {
                E::custom(format!("invalid duration `{s}`, expected e.g. \"5s\", \"0.5s\" or \"100ms\""))
            })
        }
    }
    d.deserialize_str(V).map(Some)
}

/// `<number><unit>` repeated (units `h`, `m`, `s`, `ms`, `us`, `µs`, `ns`),
/// non-negative; fractions allowed; a bare `0` as in Go and absl.
/// Milliseconds: a positive duration under 1 ms counts as 1 ms (it must not
/// turn into 0, which means "off" for the reporting interval), others are
/// rounded down.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += number * scale;
    }
    let ms = total_ns / 1e6;
    if !ms.is_finite() || ms > u64::MAX as f64 {
        return None;
    }
    Some(if total_ns > 0.0 && ms < 1.0 { 1 } else { ms as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwasm_sdk::config::parse;

    #[test]
    fn istio_configs_parse() {
        assert_eq!(parse::<PluginConfig>(br#"{"debug":"false"}"#).unwrap_err().path, "debug");
        let c: PluginConfig = parse(b"").unwrap();
        assert!(!c.debug && c.metrics.is_empty() && c.reporter == ReporterConfig::Unspecified);
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
        assert_eq!(c.reporter, ReporterConfig::ServerGateway);
        assert_eq!(c.metadata_mode, MetadataMode::UpstreamHostMetadata);
        assert_eq!(c.metrics[0].tags_to_remove, ["request_protocol"]);
        assert_eq!(c.definitions[1].kind, MetricKind::Gauge);
        assert_eq!(c.max_series_per_metric, None);
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

    #[test]
    fn bad_configs_name_the_field() {
        let cases: &[(&[u8], &str, &str)] = &[
            (br#"{"metrix":[]}"#, "metrix", "unknown field `metrix`"),
            (
                br#"{"metrics":[{"name":"requests_total","dimension":{}}]}"#,
                "metrics[0].dimension",
                "unknown field `dimension`",
            ),
            (br#"{"metrics":[{"dimensions":{"a":1}}]}"#, "metrics[0].dimensions.a", "expected a string"),
            (
                br#"{"metrics":[{"tags_to_remove":"request_protocol"}]}"#,
                "metrics[0].tags_to_remove",
                "expected a sequence",
            ),
            (
                br#"{"definitions":[{"name":"x","value":"1","type":"SUMMARY"}]}"#,
                "definitions[0].type",
                "unknown metric type `SUMMARY`",
            ),
            (
                br#"{"definitions":[{"name":"x","value":"1","type":7}]}"#,
                "definitions[0].type",
                "unknown metric type number 7",
            ),
            (br#"{"reporter":"CLIENT"}"#, "reporter", "unknown reporter `CLIENT`"),
            (br#"{"tcp_reporting_duration":"5 seconds"}"#, "tcp_reporting_duration", "invalid duration"),
            (br#"{"tcp_reporting_duration":5}"#, "tcp_reporting_duration", "a duration"),
            (br#"{"disable_host_header_fallback":"yes"}"#, "disable_host_header_fallback", "expected a boolean"),
            (br#"{"max_series_per_metric":-1}"#, "max_series_per_metric", "must not be negative"),
            (br#"{"statPrefix":"a","stat_prefix":"b"}"#, ".", "duplicate field"),
        ];
        for (json, path, message) in cases {
            let e = parse::<PluginConfig>(json).unwrap_err();
            assert_eq!(e.path, *path, "{}: {e}", String::from_utf8_lossy(json));
            assert!(e.message.contains(message), "{}: {e}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Some(5000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1000000ns"), Some(1));
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        assert_eq!(parse_duration_ms("500us"), Some(1), "positive stays positive");
        for bad in ["", "s", "5", "-5s", "5 s", "5d", "1e3s", "..s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }
}
