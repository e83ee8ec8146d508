//! attributegen's configuration: Istio's `istio.attributegen.PluginConfig`
//! read with protobuf's JSON mapping as Istio read it (`JsonStringToMessage`:
//! `output_attribute` or `outputAttribute`, quoted bools, the phase by name
//! or number, `null` as the default; the SDK's `config::protojson`), and
//! compiled into the [`AttributeGen`] rules; every error names its field
//! (`attributes[0].match[1].condition`).
//!
//! What protobuf's parser refuses is refused (Istio's plugin logged it,
//! counted it and ran with nothing to generate; meshwasm refuses the
//! configuration, so a typo cannot pass unnoticed). What Istio's plugin
//! accepted is accepted (istio/proxy `extensions/attributegen/plugin.cc`,
//! `onConfigure`):
//! * unknown fields, and unknown phase names: Istio parsed with
//!   `ignore_unknown_fields`, which also leaves an enum at its default when
//!   its name is unknown; ignored (the phase is `AFTER_RESPONSE`);
//! * a condition that does not compile: Istio stopped at the first one,
//!   cleared every generator, counted one config error and went on; so
//!   does meshwasm (later conditions are not compiled);
//! * an attribute without `output_attribute`: Istio kept it (and could not
//!   set an attribute with no name); meshwasm skips it.
//!
//! Each is listed in [`AttributeGen::tolerated`] for the shell to log; the
//! shell counts one config error per configuration that has any, as Istio
//! counted one per failed configure. With `strict` the first one refuses
//! the configuration.

use crate::rules::{AttributeGen, Generator, Match};
use meshwasm_sdk::cel::Expression;
use meshwasm_sdk::config::protojson::{self, Enum, ProtoEnum, Unknown};
use meshwasm_sdk::config::{self, ConfigError};
use serde::de::Deserializer;
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

impl ProtoEnum for Phase {
    const WHAT: &'static str = "phase";
    const VALUES: &'static [(&'static str, i32, Self)] = &[
        ("PHASE_UNSPECIFIED", 0, Phase::AfterResponse),
        ("AFTER_RESPONSE", 0, Phase::AfterResponse),
        ("ON_REQUEST", 1, Phase::OnRequest),
    ];
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        protojson::enumeration(d)
    }
}

/// Istio's `istio.attributegen.PluginConfig`, with protobuf JSON's field
/// names (`output_attribute` or `outputAttribute`).
#[derive(Debug, Default, Deserialize)]
pub struct PluginConfig {
    /// Logs each attribute set (debug level).
    #[serde(default, deserialize_with = "protojson::bool")]
    pub debug: bool,
    #[serde(default, deserialize_with = "protojson::messages")]
    pub attributes: Vec<AttributeGeneration>,
    /// meshwasm: refuse the configuration on any error Istio tolerated,
    /// naming the field (by default such errors are logged and counted).
    #[serde(default, deserialize_with = "protojson::bool")]
    pub strict: bool,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct AttributeGeneration {
    #[serde(default)]
    pub phase: Enum<Phase>,
    #[serde(default, alias = "outputAttribute", deserialize_with = "protojson::string")]
    pub output_attribute: String,
    #[serde(default, rename = "match", deserialize_with = "protojson::messages")]
    pub matches: Vec<MatchConfig>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct MatchConfig {
    #[serde(default, deserialize_with = "protojson::string")]
    pub condition: String,
    #[serde(default, deserialize_with = "protojson::string")]
    pub value: String,
    #[serde(flatten)]
    pub unknown: Unknown,
}

impl AttributeGen {
    /// Parses and validates a configuration; every error names its field
    /// (`attributes[0].match[1].condition`). Errors Istio tolerated are in
    /// `tolerated` (or refuse the configuration with `strict`).
    pub fn from_config(bytes: &[u8]) -> Result<AttributeGen, ConfigError> {
        let cfg: PluginConfig = config::parse(bytes)?;
        let mut tolerated = Vec::new();
        let mut tolerate = |e: ConfigError| {
            if cfg.strict {
                return Err(e);
            }
            tolerated.push(e);
            Ok(())
        };
        for e in cfg.unknown.errors("") {
            tolerate(e)?;
        }
        for (i, a) in cfg.attributes.iter().enumerate() {
            for e in a.unknown.errors_at(format!("attributes[{i}]")) {
                tolerate(e)?;
            }
            if let Some(e) = a.phase.error(format!("attributes[{i}].phase")) {
                tolerate(e)?;
            }
            for (j, m) in a.matches.iter().enumerate() {
                for e in m.unknown.errors_at(format!("attributes[{i}].match[{j}]")) {
                    tolerate(e)?;
                }
            }
        }
        let mut generators = Vec::with_capacity(cfg.attributes.len());
        let mut uncompiled = false;
        'attributes: for (i, a) in cfg.attributes.into_iter().enumerate() {
            if a.output_attribute.is_empty() {
                tolerate(ConfigError::new(
                    format!("attributes[{i}].output_attribute"),
                    "missing: the name of the attribute to generate is required; the attribute is skipped",
                ))?;
                continue;
            }
            let mut matches = Vec::with_capacity(a.matches.len());
            for (j, m) in a.matches.into_iter().enumerate() {
                let condition = if m.condition.trim().is_empty() {
                    None
                } else {
                    match Expression::compile(&m.condition) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            tolerate(ConfigError::new(
                                format!("attributes[{i}].match[{j}].condition"),
                                format!("bad CEL: {e}; as in Istio, no attribute is generated"),
                            ))?;
                            // Istio stopped at the first (initAttributeGen
                            // returned false).
                            uncompiled = true;
                            break 'attributes;
                        }
                    }
                };
                matches.push(Match { condition, value: m.value });
            }
            generators.push(Generator { phase: a.phase.value, output_attribute: a.output_attribute, matches });
        }
        if uncompiled {
            // Istio's plugin cleared every generator when one condition did
            // not compile (cleanupAttributeGen after initAttributeGen failed).
            generators.clear();
        }
        Ok(AttributeGen { debug: cfg.debug, generators, tolerated })
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

    /// Istio parsed with `ignore_unknown_fields`: unknown fields, at any
    /// level, are ignored (listed to be logged), refused with `strict`.
    #[test]
    fn unknown_fields_are_tolerated() {
        let cfg =
            r#"{"attributes":[{"output_attribute":"a","matches":[],"match":[{"value":"v","when":1}]}],"extra":{}}"#;
        let ag = AttributeGen::from_config(cfg.as_bytes()).unwrap();
        let paths: Vec<&str> = ag.tolerated.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["extra", "attributes[0].matches", "attributes[0].match[0].when"]);
        assert!(ag.tolerated[0].message.contains("unknown field"), "{}", ag.tolerated[0]);
        assert_eq!(ag.generators.len(), 1, "the rest of the configuration is in force");
        assert_eq!(ag.run(Phase::AfterResponse, &BTreeMap::new())[0], Outcome::Set { attribute: "a", value: "v" });
        let e = err(&cfg.replacen('{', r#"{"strict":true,"#, 1));
        assert_eq!(e.path, "extra");
        // An unknown phase name too (protobuf leaves the default,
        // AFTER_RESPONSE); an unknown number is still refused.
        let later = r#"{"attributes":[{"output_attribute":"a","phase":"LATER","match":[{"value":"v"}]}]}"#;
        let ag = AttributeGen::from_config(later.as_bytes()).unwrap();
        assert_eq!(ag.generators[0].phase, Phase::AfterResponse);
        assert_eq!(ag.tolerated[0].path, "attributes[0].phase");
        assert!(ag.tolerated[0].message.contains("unknown phase `LATER`"), "{}", ag.tolerated[0]);
        assert_eq!(err(&later.replacen('{', r#"{"strict":true,"#, 1)).path, "attributes[0].phase");
        assert!(
            err(r#"{"attributes":[{"output_attribute":"a","phase":"later"}],"strict":true}"#)
                .message
                .contains("unknown phase"),
            "names are case-sensitive, as in JsonStringToMessage's defaults"
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = err(r#"{"attributes":[{"output_attribute":"a","match":[{"value":1}]}]}"#);
        assert_eq!(e.path, "attributes[0].match[0].value");
        let e = err(r#"{"attributes":[{"output_attribute":7}]}"#);
        assert_eq!(e.path, "attributes[0].output_attribute");
        let e = err(r#"{"attributes":{"output_attribute":"a"}}"#);
        assert_eq!(e.path, "attributes");
        let e = err(r#"{"attributes":[["a"]]}"#);
        assert_eq!(e.path, "attributes[0]");
        assert!(e.message.contains("expected a JSON object"), "{e}");
        let e = err(r#"{"debug":"maybe"}"#);
        assert_eq!(e.path, "debug");
        let e = err(r#"{"attributes":[{"output_attribute":"a","phase":2}]}"#);
        assert_eq!(e.path, "attributes[0].phase");
        let e = err(r#"{"attributes":[{"output_attribute":"a","outputAttribute":"b"}]}"#);
        assert!(e.message.contains("duplicate"), "{e}");
        for top in [r#"[false, [], "evil"]"#, "[]", r#""attributes""#, "1", "null"] {
            assert_eq!(err(top).path, ".", "{top}");
        }
        assert!(AttributeGen::from_config(b"[").is_err());
        assert!(AttributeGen::from_config(b"\xff\xfe").is_err());
    }

    /// Quoted bools and numbers, as protobuf's JSON mapping takes them.
    #[test]
    fn protobuf_json_forms() {
        let ag = AttributeGen::from_config(
            br#"{"debug":"true","strict":"false","attributes":[{"outputAttribute":"a","phase":"1","match":[{"value":"v","condition":null}]}]}"#,
        )
        .unwrap();
        assert!(ag.debug);
        assert_eq!(ag.generators[0].phase, Phase::OnRequest);
        assert!(ag.generators[0].matches[0].condition.is_none(), "a null condition is empty: always true");
    }

    /// What Istio's plugin accepted but could not use: tolerated as it was
    /// (listed for the shell to log and count), refused with `strict`.
    #[test]
    fn istio_tolerated_errors() {
        let bad_condition = r#""attributes":[
            {"output_attribute":"ok","match":[{"value":"v"}]},
            {"output_attribute":"a","match":[{"value":"v","condition":"request.method =="}]}]"#;
        let ag = AttributeGen::from_config(format!("{{{bad_condition}}}").as_bytes()).unwrap();
        assert!(ag.generators.is_empty(), "as in Istio, one bad condition disables every attribute");
        assert_eq!(ag.tolerated.len(), 1);
        // Istio stopped at the first bad condition: one error, not two.
        let two_bad = r#"{"attributes":[{"output_attribute":"a","match":[{"value":"v","condition":"("},{"value":"w","condition":")"}]}]}"#;
        let first_only = AttributeGen::from_config(two_bad.as_bytes()).unwrap();
        assert_eq!(first_only.tolerated.len(), 1, "{:?}", first_only.tolerated);
        assert_eq!(first_only.tolerated[0].path, "attributes[0].match[0].condition");
        assert_eq!(ag.tolerated[0].path, "attributes[1].match[0].condition");
        assert!(ag.tolerated[0].message.starts_with("bad CEL: "), "{}", ag.tolerated[0]);
        let e = err(&format!(r#"{{"strict":true,{bad_condition}}}"#));
        assert_eq!(e, ag.tolerated[0], "strict refuses with the same error");
        let regex = r#"{"attributes":[{"output_attribute":"a","match":[{"value":"w","condition":"request.url_path.matches('(')"}]}]}"#;
        let ag = AttributeGen::from_config(regex.as_bytes()).unwrap();
        assert!(ag.tolerated[0].message.contains("invalid regex"), "{}", ag.tolerated[0]);

        let no_name = r#""attributes":[{"match":[{"value":"v"}]},{"output_attribute":"","match":[]},{"output_attribute":"b","match":[{"value":"x"}]}]"#;
        let ag = AttributeGen::from_config(format!("{{{no_name}}}").as_bytes()).unwrap();
        let paths: Vec<&str> = ag.tolerated.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["attributes[0].output_attribute", "attributes[1].output_attribute"]);
        let names: Vec<&str> = ag.generators.iter().map(|g| g.output_attribute.as_str()).collect();
        assert_eq!(names, ["b"], "only the nameless attributes are skipped");
        assert_eq!(err(&format!(r#"{{"strict":"true",{no_name}}}"#)).path, "attributes[0].output_attribute");
        assert!(AttributeGen::from_config(br#"{"strict":true}"#).unwrap().tolerated.is_empty());
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
