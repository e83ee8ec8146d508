//! Istio's peer metadata exchange as plugins use it: the local proxy's
//! payload (its node metadata in the Wasm-era key set, and its id) and the
//! checks on a peer's `x-envoy-peer-metadata` value. The codecs are
//! `meshwasm-wire`'s (one implementation, shared with host-sim and tests).

pub use meshwasm_wire::istio::{
    base64_encode, decode_tcp_frame, encode_tcp_frame, wasm_era_peer_struct, TcpFrame, TCP_EXCHANGE_ALPN,
    TCP_EXCHANGE_HEADER_BYTES, TCP_EXCHANGE_MAGIC,
};
use meshwasm_wire::protobuf;
pub use meshwasm_wire::protobuf::{struct_from_json, Struct};

/// What this proxy sends: its node id and its peer metadata (the serialized
/// Wasm-era `Struct` and the header value, base64 of those bytes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalPeer {
    pub id: String,
    pub metadata: Struct,
    pub struct_bytes: Vec<u8>,
    pub header_value: String,
}

impl LocalPeer {
    /// From the `xds.node` property (a serialized `config.core.v3.Node`);
    /// `None` when it does not decode.
    pub fn from_node_proto(node: &[u8]) -> Option<Self> {
        let node = protobuf::decode_node(node)?;
        Some(Self::new(node.id, &node.metadata.unwrap_or_default()))
    }

    /// From a node id and node metadata.
    pub fn new(id: String, node_metadata: &Struct) -> Self {
        let metadata = wasm_era_peer_struct(node_metadata);
        let struct_bytes = protobuf::encode(&metadata);
        let header_value = base64_encode(&struct_bytes);
        LocalPeer { id, metadata, struct_bytes, header_value }
    }
}

/// A `Struct` serialized (deterministically: prost writes map entries in
/// key order).
pub fn encode_struct(s: &Struct) -> Vec<u8> {
    protobuf::encode(s)
}

/// Why a peer's metadata was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerError {
    /// The header value is not base64.
    BadBase64,
    /// The bytes are not a serialized `google.protobuf.Struct`.
    BadProtobuf,
}

/// A peer's `x-envoy-peer-metadata` value as the serialized `Struct` it
/// carries (checked to decode).
pub fn decode_peer_header(value: &[u8]) -> Result<Vec<u8>, PeerError> {
    let bytes = meshwasm_wire::istio::base64_decode(value).ok_or(PeerError::BadBase64)?;
    protobuf::decode_struct(&bytes).ok_or(PeerError::BadProtobuf)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_peer_and_header_checks() {
        let serde_json::Value::Object(meta) =
            serde_json::json!({"NAME": "p", "LABELS": {"app": "a"}, "SERVICE_ACCOUNT": "sa"})
        else {
            panic!("object")
        };
        let node = protobuf::Node {
            id: "sidecar~1~p.ns~ns".into(),
            metadata: Some(protobuf::struct_from_json(&meta)),
            ..Default::default()
        };
        let local = LocalPeer::from_node_proto(&protobuf::encode(&node)).expect("decodes");
        assert_eq!(local.id, "sidecar~1~p.ns~ns");
        assert!(!local.metadata.fields.contains_key("SERVICE_ACCOUNT"));
        assert_eq!(decode_peer_header(local.header_value.as_bytes()), Ok(local.struct_bytes.clone()));
        assert_eq!(decode_peer_header(b"!!"), Err(PeerError::BadBase64));
        assert_eq!(decode_peer_header(base64_encode(&[0x0a, 0xff]).as_bytes()), Err(PeerError::BadProtobuf));
        assert_eq!(LocalPeer::from_node_proto(&[0xff; 3]), None);
    }
}
