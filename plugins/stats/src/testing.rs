//! Test helpers shared by the core's unit tests: a stand-in expression
//! language, a metric sink that remembers everything, sample facts.

use crate::config::{MetricKind, PluginConfig};
use crate::facts::{Reporter, RequestFacts};
use crate::metrics::{Expression, MetricSink, Stats};
use meshwasm_sdk::attributes::{AttrValue, AttributeSource};
use meshwasm_sdk::config::parse;
use meshwasm_sdk::istio::WorkloadInfo;
use std::collections::{BTreeMap, HashMap};

/// A stand-in expression language: `attr:<dotted path>`, `'literal'`,
/// an integer, `method_is_get` (1 for GET, else 0); anything with a
/// space fails to compile.
pub enum Fake {
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
pub struct Sink {
    pub names: Vec<(MetricKind, String)>,
    pub values: HashMap<u32, Vec<u64>>,
    pub increments: HashMap<u32, u64>,
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
    pub fn counter(&self, name: &str) -> Option<u64> {
        let id = self.names.iter().position(|(_, n)| n == name)? as u32;
        Some(self.increments.get(&id).copied().unwrap_or(0))
    }
    /// The stat name of the only series of a metric.
    pub fn one(&self, metric: &str) -> &str {
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

pub fn local() -> WorkloadInfo {
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

pub fn stats(config: &str, reporter: Reporter) -> Stats<Fake> {
    let c: PluginConfig = parse(config.as_bytes()).unwrap();
    Stats::new(&c, reporter, local()).unwrap().0
}

pub fn get_request() -> RequestFacts {
    RequestFacts {
        response_code: Some(200),
        duration_ns: Some(7_400_000),
        request_size: Some(120),
        response_size: Some(300),
        host: Some("reviews:9080".into()),
        ..Default::default()
    }
}

pub fn attrs(method: &str) -> BTreeMap<String, AttrValue> {
    let mut m = BTreeMap::new();
    m.insert("request.method".to_string(), AttrValue::String(method.into()));
    m.insert("node.metadata".to_string(), AttrValue::Map(vec![("MESH_ID".into(), AttrValue::String("mesh1".into()))]));
    m
}

pub fn labels_of(stat: &str) -> Vec<(String, String)> {
    let mut parts: Vec<&str> = stat.split(";.;").collect();
    parts.pop();
    parts.iter().map(|p| p.split_once("=.=").map(|(k, v)| (k.to_string(), v.to_string())).unwrap()).collect()
}

pub fn tcp_facts() -> RequestFacts {
    RequestFacts { tcp: true, response_flags: 0, ..Default::default() }
}
