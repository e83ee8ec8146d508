//! attributegen's rules and their evaluation, free of host calls so it is
//! unit-tested natively. [`crate::config`] builds them from the
//! configuration; the shell (`shell.rs`) feeds them the proxy's attributes
//! and writes what they decide with `set_property`.
//!
//! Semantics are those of Istio's attributegen (istio/proxy
//! `extensions/attributegen`, see docs/attributegen.md):
//! * each `attributes[]` entry is evaluated independently, in its phase:
//!   `AFTER_RESPONSE` (the default) in `on_log`, `ON_REQUEST` in
//!   `on_request_headers`;
//! * its `match[]` entries are tried in order; the first whose `condition`
//!   is true (an empty condition is true) sets `output_attribute` to its
//!   `value`;
//! * a condition that fails to evaluate (or is not a bool) ends that
//!   attribute's evaluation: it is not set, later matches are not tried, and
//!   the runtime error counter goes up.

use crate::config::Phase;
use meshwasm_sdk::attributes::{AttrValue, AttributeSource};
use meshwasm_sdk::cel::Expression;

/// One compiled match: no condition always matches.
pub struct Match {
    pub condition: Option<Expression>,
    pub value: String,
}

/// One attribute to generate.
pub struct Generator {
    pub phase: Phase,
    pub output_attribute: String,
    pub matches: Vec<Match>,
}

/// What evaluating one generator decided.
#[derive(Debug, PartialEq)]
pub enum Outcome<'a> {
    /// Set `attribute` to `value`.
    Set { attribute: &'a str, value: &'a str },
    /// No condition was true: the attribute is left alone.
    NoMatch { attribute: &'a str },
    /// Condition `index` failed to evaluate: the attribute is left alone.
    Error { attribute: &'a str, index: usize, message: String },
}

/// The configured plugin.
pub struct AttributeGen {
    pub debug: bool,
    pub generators: Vec<Generator>,
    /// Configuration errors Istio's plugin tolerated (see [`crate::config`]):
    /// the shell logs and counts them.
    pub tolerated: Vec<meshwasm_sdk::config::ConfigError>,
}

impl AttributeGen {
    /// Whether any attribute is generated in `phase` (so the plugin can skip
    /// the work entirely).
    pub fn has_phase(&self, phase: Phase) -> bool {
        self.generators.iter().any(|g| g.phase == phase)
    }

    /// Evaluates every generator of `phase`, in configuration order (when
    /// two set the same attribute, the later one wins, as in Istio).
    pub fn run<'a>(&'a self, phase: Phase, attrs: &dyn AttributeSource) -> Vec<Outcome<'a>> {
        self.generators.iter().filter(|g| g.phase == phase).map(|g| g.evaluate(attrs)).collect()
    }
}

impl Generator {
    /// The first match whose condition holds, as Istio evaluates it.
    pub fn evaluate(&self, attrs: &dyn AttributeSource) -> Outcome<'_> {
        let attribute = self.output_attribute.as_str();
        for (index, m) in self.matches.iter().enumerate() {
            let Some(condition) = &m.condition else {
                return Outcome::Set { attribute, value: &m.value };
            };
            match condition.evaluate(attrs) {
                Ok(AttrValue::Bool(true)) => return Outcome::Set { attribute, value: &m.value },
                Ok(AttrValue::Bool(false)) => continue,
                Ok(other) => {
                    return Outcome::Error { attribute, index, message: format!("not a bool: {other:?}") };
                }
                Err(message) => return Outcome::Error { attribute, index, message },
            }
        }
        Outcome::NoMatch { attribute }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SEED: &str = r#"{"attributes":[{"output_attribute":"istio_operationId","match":[
        {"value":"ListCatalog","condition":"request.url_path == '/api/catalog' && request.method == 'GET'"}]}]}"#;

    pub(crate) fn request(method: &str, path: &str) -> BTreeMap<String, AttrValue> {
        let mut m = BTreeMap::new();
        m.insert("request.method".to_string(), AttrValue::String(method.into()));
        m.insert("request.url_path".to_string(), AttrValue::String(path.into()));
        m
    }

    fn with_code(mut m: BTreeMap<String, AttrValue>, code: i64) -> BTreeMap<String, AttrValue> {
        m.insert("response.code".to_string(), AttrValue::Int(code));
        m
    }

    #[test]
    fn seed_example() {
        let ag = AttributeGen::from_config(SEED.as_bytes()).unwrap();
        let set = Outcome::Set { attribute: "istio_operationId", value: "ListCatalog" };
        assert_eq!(ag.run(Phase::AfterResponse, &request("GET", "/api/catalog")), vec![set]);
        let none = Outcome::NoMatch { attribute: "istio_operationId" };
        assert_eq!(ag.run(Phase::AfterResponse, &request("POST", "/api/catalog")), vec![none]);
        assert_eq!(ag.run(Phase::AfterResponse, &request("GET", "/api/other")).len(), 1);
        assert!(
            ag.run(Phase::OnRequest, &request("GET", "/api/catalog")).is_empty(),
            "default phase is after response"
        );
        assert!(ag.has_phase(Phase::AfterResponse) && !ag.has_phase(Phase::OnRequest));
    }

    #[test]
    fn first_match_wins_and_empty_condition_matches() {
        let cfg = r#"{"attributes":[{"output_attribute":"istio_responseClass","match":[
            {"value":"2xx","condition":"response.code >= 200 && response.code <= 299"},
            {"value":"404","condition":"response.code == 404"},
            {"value":"4xx","condition":"response.code >= 400 && response.code <= 499"},
            {"value":"other"}]}]}"#;
        let ag = AttributeGen::from_config(cfg.as_bytes()).unwrap();
        let class = |code| match ag.run(Phase::AfterResponse, &with_code(request("GET", "/"), code)).pop() {
            Some(Outcome::Set { value, .. }) => value.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(class(200), "2xx");
        assert_eq!(class(404), "404", "404 matches before 4xx");
        assert_eq!(class(403), "4xx");
        assert_eq!(class(503), "other", "an empty condition always matches");
        let blank = r#"{"attributes":[{"output_attribute":"a","match":[{"value":"v","condition":"  "}]}]}"#;
        let ag = AttributeGen::from_config(blank.as_bytes()).unwrap();
        assert_eq!(ag.run(Phase::AfterResponse, &BTreeMap::new()), vec![Outcome::Set { attribute: "a", value: "v" }]);
    }

    #[test]
    fn evaluation_errors_leave_the_attribute_unset() {
        let cfg = r#"{"attributes":[
            {"output_attribute":"class","match":[{"value":"ok","condition":"response.code == 200"},{"value":"default"}]},
            {"output_attribute":"num","match":[{"value":"x","condition":"response.code"}]},
            {"output_attribute":"method","match":[{"value":"get","condition":"request.method == 'GET'"}]}]}"#;
        let ag = AttributeGen::from_config(cfg.as_bytes()).unwrap();
        // No response code: the first condition errors, so (as in Istio) the
        // default is not reached; other attributes are unaffected.
        let out = ag.run(Phase::AfterResponse, &request("GET", "/"));
        assert!(
            matches!(&out[0], Outcome::Error { attribute: "class", index: 0, message } if message.contains("code"))
        );
        assert!(matches!(&out[1], Outcome::Error { attribute: "num", .. }));
        assert_eq!(out[2], Outcome::Set { attribute: "method", value: "get" });
        // A non-bool result is an error too.
        let out = ag.run(Phase::AfterResponse, &with_code(request("GET", "/"), 200));
        assert!(matches!(&out[1], Outcome::Error { attribute: "num", message, .. } if message.contains("not a bool")));
    }
}
