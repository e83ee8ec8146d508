//! Plugin configuration parsing with errors that name the field, so a bad
//! config is rejected at configure time with a log line a user can act on:
//! ``invalid configuration at `metrics[0].dimensions.foo`: invalid type: integer `1`, expected a string``.
//!
//! Config structs use `#[serde(deny_unknown_fields)]` so typos are errors too.

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

/// Parses a JSON configuration; empty input (no configuration) parses as
/// `{}` so that all-default configs need not be written out.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { bytes };
    let de = &mut serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(if path.is_empty() { ".".to_string() } else { path }, e.into_inner().to_string())
    })?;
    Ok(value)
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
        #[serde(default)]
        metrics: Vec<Metric>,
        #[serde(default)]
        debug: bool,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Config>(br#"{"metrics":[{"dimensions":{"a":1}}]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0].dimensions.a");
        assert!(e.to_string().starts_with("invalid configuration at `metrics[0].dimensions.a`"), "{e}");
        let e = parse::<Config>(br#"{"metrix":[]}"#).unwrap_err();
        assert!(e.message.contains("unknown field `metrix`"), "{e}");
        let e = parse::<Config>(br#"{"debug":"yes"}"#).unwrap_err();
        assert_eq!(e.path, "debug");
    }

    #[test]
    fn empty_configuration_means_defaults() {
        let c = parse::<Config>(b"").unwrap();
        assert!(c.metrics.is_empty() && !c.debug);
        assert!(parse::<Config>(b"not json").is_err());
        let c = parse::<Config>(br#"{"metrics":[{"dimensions":{"a":"b"}}]}"#).unwrap();
        assert_eq!(c.metrics[0].dimensions["a"], "b", "a well-typed value is kept");
    }
}
