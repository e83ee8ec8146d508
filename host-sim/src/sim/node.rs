//! `xds.node`: Envoy's `config.core.v3.Node` message, protobuf-encoded, with
//! the scenario's id, cluster and metadata (a `google.protobuf.Struct`).

use prost::Message;
use prost_types::{value::Kind, ListValue, Struct, Value};
use serde_json::Value as Json;

#[derive(Clone, PartialEq, Message)]
pub struct Node {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub cluster: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<Struct>,
    #[prost(string, tag = "6")]
    pub user_agent_name: String,
}

pub fn encode_node(spec: &crate::scenario::NodeSpec) -> Vec<u8> {
    Node {
        id: spec.id.clone(),
        cluster: spec.cluster.clone(),
        metadata: Some(json_object_to_struct(&spec.metadata)),
        user_agent_name: "envoy".into(),
    }
    .encode_to_vec()
}

/// A JSON object as a serialized `google.protobuf.Struct`: what Envoy's
/// node metadata and Istio's peer metadata (`x-envoy-peer-metadata`, the
/// `downstream_peer`/`upstream_peer` filter state) are made of.
pub fn encode_struct(map: &serde_json::Map<String, Json>) -> Vec<u8> {
    json_object_to_struct(map).encode_to_vec()
}

pub fn json_object_to_struct(map: &serde_json::Map<String, Json>) -> Struct {
    Struct { fields: map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

pub fn json_to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(json_to_value).collect() }),
        Json::Object(o) => Kind::StructValue(json_object_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trips_through_protobuf() {
        let spec: crate::scenario::NodeSpec = serde_json::from_value(serde_json::json!({
            "id": "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
            "metadata": {"NAMESPACE": "ns", "LABELS": {"app": "a"}}
        }))
        .unwrap();
        let node = Node::decode(encode_node(&spec).as_slice()).unwrap();
        assert_eq!(node.id, spec.id);
        let md = node.metadata.unwrap();
        assert_eq!(md.fields["NAMESPACE"].kind, Some(Kind::StringValue("ns".into())));
        assert!(matches!(md.fields["LABELS"].kind, Some(Kind::StructValue(_))));
    }
}
