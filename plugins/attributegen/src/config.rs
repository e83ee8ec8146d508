//! attributegen's configuration: Istio's `istio.attributegen.PluginConfig`
//! as protobuf JSON, parsed strictly and compiled into the [`AttributeGen`]
//! rules; every error names its field (`attributes[0].match[1].condition`).

use crate::rules::{AttributeGen, Generator, Match};
use meshwasm_sdk::cel::Expression;
use meshwasm_sdk::config::{self, ConfigError};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// When an attribute is generated (Istio's `Phase`, hidden from its docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// `AFTER_RESPONSE` / `PHASE_UNSPECIFIED` (0): in `on_log`, when
    /// everything about the request and response is known.
    #[default]
    AfterResponse,
    /// `ON_REQUEST` (1): in `on_request_headers`; response attributes are
    /// not available then.
    OnRequest,
}

impl<'de> Deserialize<'de> for Phase {
    /// Protobuf JSON enum forms: the name or the number; null is the default.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(i64),
        }
        let expected = "AFTER_RESPONSE, PHASE_UNSPECIFIED, ON_REQUEST, 0 or 1";
        match Option::<Raw>::deserialize(d)? {
            None => Ok(Phase::AfterResponse),
            Some(Raw::Name(n)) => match n.as_str() {
                "AFTER_RESPONSE" | "PHASE_UNSPECIFIED" => Ok(Phase::AfterResponse),
                "ON_REQUEST" => Ok(Phase::OnRequest),
                other => Err(de::Error::invalid_value(de::Unexpected::Str(other), &expected)),
            },
            Some(Raw::Number(0)) => Ok(Phase::AfterResponse),
            Some(Raw::Number(1)) => Ok(Phase::OnRequest),
            Some(Raw::Number(other)) => Err(de::Error::invalid_value(de::Unexpected::Signed(other), &expected)),
        }
    }
}

/// A field that protobuf JSON allows to be `null` (meaning its default).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Istio's `istio.attributegen.PluginConfig`, with protobuf JSON's field
/// names (`output_attribute` or `outputAttribute`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Logs each attribute set (debug level).
    #[serde(default, deserialize_with = "nullable")]
    pub debug: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub attributes: Vec<AttributeGeneration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeGeneration {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, alias = "outputAttribute", deserialize_with = "nullable")]
    pub output_attribute: String,
    #[serde(default, rename = "match", deserialize_with = "nullable")]
    pub matches: Vec<MatchConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub condition: String,
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
}

impl AttributeGen {
    /// Parses and validates a configuration; every error names its field
    /// (`attributes[0].match[1].condition`).
    pub fn from_config(bytes: &[u8]) -> Result<AttributeGen, ConfigError> {
        let cfg: PluginConfig = config::parse(bytes)?;
        let mut generators = Vec::with_capacity(cfg.attributes.len());
        for (i, a) in cfg.attributes.into_iter().enumerate() {
            if a.output_attribute.is_empty() {
                return Err(ConfigError::new(
                    format!("attributes[{i}].output_attribute"),
                    "missing: the name of the attribute to generate is required",
                ));
            }
            let mut matches = Vec::with_capacity(a.matches.len());
            for (j, m) in a.matches.into_iter().enumerate() {
                let condition = if m.condition.trim().is_empty() {
                    None
                } else {
                    let e = Expression::compile(&m.condition).map_err(|e| {
                        ConfigError::new(format!("attributes[{i}].match[{j}].condition"), format!("bad CEL: {e}"))
                    })?;
                    Some(e)
                };
                matches.push(Match { condition, value: m.value });
            }
            generators.push(Generator { phase: a.phase, output_attribute: a.output_attribute, matches });
        }
        Ok(AttributeGen { debug: cfg.debug, generators })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::request;
    use crate::rules::Outcome;
    use std::collections::BTreeMap;

    fn err(cfg: &str) -> ConfigError {
        match AttributeGen::from_config(cfg.as_bytes()) {
            Ok(_) => panic!("accepted: {cfg}"),
            Err(e) => e,
        }
    }

    #[test]
    fn phases_and_istio_json_names() {
        let cfg = r#"{"debug":true,"attributes":[
            {"outputAttribute":"early","phase":"ON_REQUEST","match":[{"value":"1"}]},
            {"output_attribute":"late","phase":"AFTER_RESPONSE","match":[{"value":"2"}]},
            {"output_attribute":"late0","phase":0,"match":[{"value":"3"}]},
            {"output_attribute":"early1","phase":1,"match":[{"value":"4"}]},
            {"output_attribute":"unspecified","phase":"PHASE_UNSPECIFIED","match":null},
            {"output_attribute":"nullphase","phase":null}]}"#;
        let ag = AttributeGen::from_config(cfg.as_bytes()).unwrap();
        assert!(ag.debug);
        let names =
            |p| ag.generators.iter().filter(|g| g.phase == p).map(|g| g.output_attribute.as_str()).collect::<Vec<_>>();
        assert_eq!(names(Phase::OnRequest), ["early", "early1"]);
        assert_eq!(names(Phase::AfterResponse), ["late", "late0", "unspecified", "nullphase"]);
        let none = BTreeMap::new();
        assert_eq!(ag.run(Phase::OnRequest, &none)[0], Outcome::Set { attribute: "early", value: "1" });
        assert_eq!(ag.run(Phase::AfterResponse, &none)[2], Outcome::NoMatch { attribute: "unspecified" });
        // No configuration, or an empty one: nothing to generate.
        assert!(AttributeGen::from_config(b"").unwrap().generators.is_empty());
        assert!(AttributeGen::from_config(b"{}").unwrap().generators.is_empty());
        assert!(AttributeGen::from_config(br#"{"attributes":null,"debug":null}"#).unwrap().generators.is_empty());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e =
            err(r#"{"attributes":[{"output_attribute":"a","match":[{"value":"v","condition":"request.method =="}]}]}"#);
        assert_eq!(e.path, "attributes[0].match[0].condition");
        assert!(
            e.to_string().starts_with("invalid configuration at `attributes[0].match[0].condition`: bad CEL: "),
            "{e}"
        );
        let e = err(
            r#"{"attributes":[{"output_attribute":"a","match":[{"value":"v"}]},{"output_attribute":"b","match":[{"value":"v"},{"value":"w","condition":"request.url_path.matches('(')"}]}]}"#,
        );
        assert_eq!(e.path, "attributes[1].match[1].condition");
        assert!(e.message.contains("invalid regex"), "{e}");
        let e = err(r#"{"attributes":[{"match":[{"value":"v"}]}]}"#);
        assert_eq!(e.path, "attributes[0].output_attribute");
        let e = err(r#"{"attributes":[{"output_attribute":"","match":[]}]}"#);
        assert_eq!(e.path, "attributes[0].output_attribute");
        let e = err(r#"{"attributes":[{"output_attribute":"a","matches":[]}]}"#);
        assert!(e.message.contains("unknown field `matches`"), "{e}");
        let e = err(r#"{"attributes":[{"output_attribute":"a","match":[{"value":1}]}]}"#);
        assert_eq!(e.path, "attributes[0].match[0].value");
        let e = err(r#"{"attributes":[{"output_attribute":7}]}"#);
        assert_eq!(e.path, "attributes[0].output_attribute");
        let e = err(r#"{"attributes":{"output_attribute":"a"}}"#);
        assert_eq!(e.path, "attributes");
        let e = err(r#"{"debug":"yes"}"#);
        assert_eq!(e.path, "debug");
        let e = err(r#"{"attributes":[{"output_attribute":"a","phase":"LATER"}]}"#);
        assert_eq!(e.path, "attributes[0].phase");
        assert!(e.message.contains("ON_REQUEST"), "{e}");
        let e = err(r#"{"attributes":[{"output_attribute":"a","phase":2}]}"#);
        assert_eq!(e.path, "attributes[0].phase");
        let e = err(r#"{"attributes":[{"output_attribute":"a","outputAttribute":"b"}]}"#);
        assert!(e.message.contains("duplicate"), "{e}");
        assert!(AttributeGen::from_config(b"[").is_err());
        assert!(AttributeGen::from_config(b"\xff\xfe").is_err());
    }

    #[test]
    fn arbitrary_configs_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = br#"{}[]":,. attributes output_attribute match condition value phase 0 1 true null 'GET' request.method == && ( ) \"#;
        for len in 0..400 {
            let cfg: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(ag) = AttributeGen::from_config(&cfg) {
                let _ = ag.run(Phase::AfterResponse, &request("GET", "/"));
            }
        }
    }
}
