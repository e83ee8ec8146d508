//! `xds.node`: Envoy's `config.core.v3.Node` message, protobuf-encoded by
//! meshwasm-wire, with the scenario's id, cluster and metadata.

use meshwasm_wire::protobuf::{self, Node};

/// The scenario's node as the bytes of the `xds.node` property.
pub fn encode_node(spec: &crate::scenario::NodeSpec) -> Vec<u8> {
    protobuf::encode(&Node {
        id: spec.id.clone(),
        cluster: spec.cluster.clone(),
        metadata: Some(protobuf::struct_from_json(&spec.metadata)),
        locality: None,
        user_agent_name: "envoy".into(),
        user_agent_version: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwasm_wire::protobuf::Kind;

    #[test]
    fn node_round_trips_through_protobuf() {
        let spec: crate::scenario::NodeSpec = serde_json::from_value(serde_json::json!({
            "id": "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
            "metadata": {"NAMESPACE": "ns", "LABELS": {"app": "a"}}
        }))
        .unwrap();
        let node = protobuf::decode_node(&encode_node(&spec)).unwrap();
        assert_eq!(node.id, spec.id);
        let md = node.metadata.unwrap();
        assert_eq!(md.fields["NAMESPACE"].kind, Some(Kind::StringValue("ns".into())));
        assert!(matches!(md.fields["LABELS"].kind, Some(Kind::StructValue(_))));
    }
}
