//! Plugin configuration parsing with errors that name the field, so a bad
//! config is rejected at configure time with a log line a user can act on:
//! ``invalid configuration at `metrics[0].dimensions.foo`: invalid type: integer `1`, expected a string``.
//!
//! A configuration is a JSON object read with protobuf's JSON mapping, the
//! way Istio's plugins read theirs (protobuf's `JsonStringToMessage`, or
//! Envoy converting a `typed_config` to the filter's proto): [`protojson`]
//! has one serde helper per proto field kind. Config structs keep the
//! fields their proto does not have in a `#[serde(flatten)]`
//! [`protojson::Unknown`] (ignored as Istio's parsers ignored them; the
//! plugin logs and counts them, and refuses them under `strict`), and
//! nested messages go through [`protojson::message`] /
//! [`protojson::messages`] so that, like the top level, they must be objects.

pub mod protojson;

use serde::de::DeserializeOwned;

/// A configuration problem, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `metrics[0].dimensions`, or `.` for the whole document.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration at `{}`: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// Parses a JSON configuration. Empty input (no configuration, or only
/// whitespace) means all defaults. Anything else must be one JSON object:
/// an array, a string, a number or `null` is refused at path `.` (serde
/// would otherwise read an array into a struct by field position).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { bytes };
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: protojson::Object<T> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(if path.is_empty() { ".".to_string() } else { path }, e.into_inner().to_string())
    })?;
    // Trailing garbage after the object (`{} x`) is an error too.
    de.end().map_err(|e| ConfigError::new(".", e.to_string()))?;
    Ok(value.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Metric {
        #[serde(default)]
        dimensions: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default, deserialize_with = "protojson::messages")]
        metrics: Vec<Metric>,
        #[serde(default, deserialize_with = "protojson::bool")]
        debug: bool,
        #[serde(default, alias = "statPrefix", deserialize_with = "protojson::string")]
        stat_prefix: String,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Config>(br#"{"metrics":[{"dimensions":{"a":1}}]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0].dimensions.a");
        assert!(e.to_string().starts_with("invalid configuration at `metrics[0].dimensions.a`"), "{e}");
        let e = parse::<Config>(br#"{"metrix":[]}"#).unwrap_err();
        assert!(e.message.contains("unknown field `metrix`"), "{e}");
        let e = parse::<Config>(br#"{"debug":"maybe"}"#).unwrap_err();
        assert_eq!(e.path, "debug");
    }

    #[test]
    fn empty_configuration_means_defaults() {
        for empty in [&b""[..], b"  \n\t", b"{}", b" { } "] {
            let c = parse::<Config>(empty).unwrap();
            assert!(c.metrics.is_empty() && !c.debug && c.stat_prefix.is_empty());
        }
        assert!(parse::<Config>(b"not json").is_err());
        let c = parse::<Config>(br#"{"metrics":[{"dimensions":{"a":"b"}}]}"#).unwrap();
        assert_eq!(c.metrics[0].dimensions["a"], "b", "a well-typed value is kept");
    }

    #[test]
    fn only_an_object_is_a_configuration() {
        // Without the check, serde reads `[false, 0, "evil"]` into the
        // struct by field position.
        for bad in [&br#"[false, [], "evil"]"#[..], b"[]", br#""debug""#, b"7", b"null", b"true", b"{} {}", b"{}x"] {
            let e = parse::<Config>(bad).unwrap_err();
            assert_eq!(e.path, ".", "{}: {e}", String::from_utf8_lossy(bad));
        }
        let e = parse::<Config>(b"[]").unwrap_err();
        assert!(e.message.contains("expected a JSON object"), "{e}");
        // Nested messages too.
        let e = parse::<Config>(br#"{"metrics":[[{"a":"b"}]]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0]", "{e}");
        assert!(e.message.contains("expected a JSON object"), "{e}");
    }
}
