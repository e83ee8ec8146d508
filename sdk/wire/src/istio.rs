//! Istio's formats: the standard metric labels in the order Istio's
//! bootstrap lists their tag regexes (so the order `/stats/prometheus` prints
//! them), and the peer-metadata header of its HTTP metadata exchange.

use crate::protobuf::{self, Struct};
use base64::Engine;

/// Istio's standard labels, in Istio's order.
pub const STANDARD_LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Request header of Istio's HTTP metadata exchange: the peer's node id.
pub const PEER_METADATA_ID_HEADER: &str = "x-envoy-peer-metadata-id";
/// Request/response header of Istio's HTTP metadata exchange: base64 of the
/// peer's node metadata as a serialized `google.protobuf.Struct`.
pub const PEER_METADATA_HEADER: &str = "x-envoy-peer-metadata";

/// Standard base64 with or without padding: what Istio writes, and what
/// Envoy's `Base64::decodeWithoutPadding` reads back.
const STANDARD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
/// The URL-safe alphabet (`-_`), accepted too: a header that went through a
/// URL-safe encoder is still the peer's metadata.
const URL_SAFE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64 as the peer-metadata header carries it: standard or URL-safe
/// alphabet, padding optional, no whitespace. `None` on anything else.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(input).or_else(|_| URL_SAFE.decode(input)).ok()
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `x-envoy-peer-metadata` value for a workload's node metadata.
pub fn encode_peer_metadata(metadata: &Struct) -> String {
    base64_encode(&protobuf::encode(metadata))
}

/// The node metadata an `x-envoy-peer-metadata` value carries; `None` when it
/// is not base64 of a well-formed `Struct`.
pub fn decode_peer_metadata(value: &[u8]) -> Option<Struct> {
    protobuf::decode_struct(&base64_decode(value)?)
}

// ------------------------------------------------------------ exchange payloads

/// Top-level string keys of the node metadata Istio's Wasm-era exchange
/// sent (its flat node type kept only these; istio/proxy
/// `extensions/common/node_info.fbs`, 2023).
pub const WASM_ERA_STRING_KEYS: &[&str] =
    &["NAME", "NAMESPACE", "OWNER", "WORKLOAD_NAME", "ISTIO_VERSION", "MESH_ID", "CLUSTER_ID"];
/// String-map keys of the same (non-string map values were dropped).
pub const WASM_ERA_MAP_KEYS: &[&str] = &["LABELS", "PLATFORM_METADATA"];
/// Keys sent as one comma-joined string (a list is joined with `,`).
pub const WASM_ERA_JOINED_KEYS: &[&str] = &["APP_CONTAINERS", "INSTANCE_IPS"];

/// The `Struct` a proxy with this node metadata sends as its peer metadata,
/// in the key set of Istio's Wasm-era exchange: only the keys above, maps
/// holding only their string entries, values of the wrong type left out.
/// Every key of it is one Istio's current native filter reads too.
/// Encoding it (`protobuf::encode`) is deterministic: prost writes map
/// entries in key order, as protobuf's deterministic serialization does.
pub fn wasm_era_peer_struct(node_metadata: &Struct) -> Struct {
    use crate::protobuf::{Kind, Value};
    let string = |s: &str| Value { kind: Some(Kind::StringValue(s.to_string())) };
    let mut out = Struct::default();
    for (key, value) in &node_metadata.fields {
        let k = key.as_str();
        let kept = match &value.kind {
            Some(Kind::StringValue(s)) if WASM_ERA_STRING_KEYS.contains(&k) || WASM_ERA_JOINED_KEYS.contains(&k) => {
                Some(string(s))
            }
            Some(Kind::ListValue(list)) if WASM_ERA_JOINED_KEYS.contains(&k) => {
                let parts: Vec<&str> = list
                    .values
                    .iter()
                    .filter_map(|v| match &v.kind {
                        Some(Kind::StringValue(s)) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                Some(string(&parts.join(",")))
            }
            Some(Kind::StructValue(map)) if WASM_ERA_MAP_KEYS.contains(&k) => {
                let fields = map
                    .fields
                    .iter()
                    .filter(|(_, v)| matches!(v.kind, Some(Kind::StringValue(_))))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Some(Value { kind: Some(Kind::StructValue(Struct { fields })) })
            }
            _ => None,
        };
        if let Some(v) = kept {
            out.fields.insert(key.clone(), v);
        }
    }
    out
}

// ------------------------------------------------------------ TCP exchange frame

/// First four bytes (big-endian) of Istio's TCP metadata-exchange frame.
pub const TCP_EXCHANGE_MAGIC: u32 = 0x3D23_0467;
/// The frame's header: magic, then the payload length, both u32 big-endian.
pub const TCP_EXCHANGE_HEADER_BYTES: usize = 8;
/// ALPN Istio's TCP exchange is negotiated under by default.
pub const TCP_EXCHANGE_ALPN: &str = "istio-peer-exchange";
/// Type URL of the frame's `google.protobuf.Any` payload.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// One TCP exchange frame for a node: the header and an `Any`-wrapped
/// `Struct` holding `x-envoy-peer-metadata` (the node's peer `Struct`) and
/// `x-envoy-peer-metadata-id` (its id).
pub fn encode_tcp_frame(id: &str, metadata: &Struct) -> Vec<u8> {
    use crate::protobuf::{Kind, Value};
    let mut payload = Struct::default();
    payload.fields.insert(PEER_METADATA_HEADER.to_string(), Value { kind: Some(Kind::StructValue(metadata.clone())) });
    payload.fields.insert(PEER_METADATA_ID_HEADER.to_string(), Value { kind: Some(Kind::StringValue(id.to_string())) });
    let any = Any { type_url: STRUCT_TYPE_URL.to_string(), value: protobuf::encode(&payload) };
    let body = protobuf::encode(&any);
    let mut out = Vec::with_capacity(TCP_EXCHANGE_HEADER_BYTES + body.len());
    out.extend_from_slice(&TCP_EXCHANGE_MAGIC.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// What the start of a connection's bytes holds, read as an exchange frame.
#[derive(Clone, Debug, PartialEq)]
pub enum TcpFrame {
    /// Fewer bytes than the header, or than the header's length says: wait
    /// for more (`needed` bytes in all).
    Incomplete { needed: usize },
    /// The first four bytes are not the magic number: no frame, nothing to
    /// drain (Istio lets the bytes through and leaves the peer unknown).
    NoMagic,
    /// The header announces more than `max` payload bytes.
    Oversized { length: usize },
    /// A whole frame (`consumed` bytes) whose payload is not an `Any` of a
    /// `Struct` with the metadata: the frame is drained, the peer unknown.
    Malformed { consumed: usize },
    /// A whole frame: the peer's id and metadata, `consumed` bytes to drain.
    Peer { consumed: usize, id: String, metadata: Struct },
}

/// Reads an exchange frame at the start of `data`; `max` caps the payload
/// length a header may announce. Never panics, whatever the bytes.
pub fn decode_tcp_frame(data: &[u8], max: usize) -> TcpFrame {
    use crate::protobuf::Kind;
    if data.len() < 4 {
        // A prefix of the magic may still become a frame.
        if TCP_EXCHANGE_MAGIC.to_be_bytes().starts_with(data) {
            return TcpFrame::Incomplete { needed: TCP_EXCHANGE_HEADER_BYTES };
        }
        return TcpFrame::NoMagic;
    }
    if data[..4] != TCP_EXCHANGE_MAGIC.to_be_bytes() {
        return TcpFrame::NoMagic;
    }
    if data.len() < TCP_EXCHANGE_HEADER_BYTES {
        return TcpFrame::Incomplete { needed: TCP_EXCHANGE_HEADER_BYTES };
    }
    let length = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
    if length > max {
        return TcpFrame::Oversized { length };
    }
    let consumed = TCP_EXCHANGE_HEADER_BYTES + length;
    if data.len() < consumed {
        return TcpFrame::Incomplete { needed: consumed };
    }
    let payload = &data[TCP_EXCHANGE_HEADER_BYTES..consumed];
    let Ok(any) = <Any as prost::Message>::decode(payload) else { return TcpFrame::Malformed { consumed } };
    if any.type_url != STRUCT_TYPE_URL {
        return TcpFrame::Malformed { consumed };
    }
    let Some(mut outer) = protobuf::decode_struct(&any.value) else { return TcpFrame::Malformed { consumed } };
    let metadata = match outer.fields.remove(PEER_METADATA_HEADER).and_then(|v| v.kind) {
        Some(Kind::StructValue(s)) => s,
        _ => return TcpFrame::Malformed { consumed },
    };
    let id = match outer.fields.remove(PEER_METADATA_ID_HEADER).and_then(|v| v.kind) {
        Some(Kind::StringValue(s)) => s,
        _ => String::new(),
    };
    TcpFrame::Peer { consumed, id, metadata }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peer_metadata_round_trips() {
        let serde_json::Value::Object(meta) = json!({"NAME": "pod-1", "LABELS": {"app": "a"}}) else { return };
        let header = encode_peer_metadata(&protobuf::struct_from_json(&meta));
        let back = decode_peer_metadata(header.as_bytes()).map(|s| protobuf::struct_to_json(&s));
        assert_eq!(back, Some(meta.clone()));
        // Without padding, and URL-safe, it still decodes.
        let bytes = protobuf::encode_json_struct(&meta);
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        assert!(decode_peer_metadata(unpadded.as_bytes()).is_some());
        assert!(decode_peer_metadata(url_safe.as_bytes()).is_some());
    }

    #[test]
    fn bad_headers_decode_to_none() {
        assert_eq!(decode_peer_metadata(b"%%%not-base64%%%"), None);
        assert_eq!(decode_peer_metadata(b"aGk= "), None, "whitespace");
        assert_eq!(decode_peer_metadata(b"a"), None, "one character is no byte");
        assert_eq!(decode_peer_metadata(base64_encode(b"\x0a\xff\xff\xff\xff\x0f").as_bytes()), None, "not a Struct");
        assert_eq!(base64_decode(b"aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode(b"aGk"), Some(b"hi".to_vec()));
        assert_eq!(base64_decode(b""), Some(Vec::new()));
    }

    fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn wasm_era_struct_keeps_the_flat_node_keys() {
        let node = protobuf::struct_from_json(&object(json!({
            "NAME": "p", "NAMESPACE": "ns", "WORKLOAD_NAME": "w", "CLUSTER_ID": "c", "MESH_ID": "m",
            "ISTIO_VERSION": "1.19.0", "OWNER": "o",
            "LABELS": {"app": "a", "n": 1.0}, "PLATFORM_METADATA": {"gcp_project": "x"},
            "APP_CONTAINERS": ["c1", "c2"], "INSTANCE_IPS": "10.0.0.1,fe80::1",
            "INTERCEPTION_MODE": "REDIRECT", "SERVICE_ACCOUNT": "sa", "NAMESPACE_EXTRA": {"x": "y"},
            "POD_PORTS": "[]", "CLUSTER_ID_NUM": 3.0
        })));
        let got = protobuf::struct_to_json(&wasm_era_peer_struct(&node));
        assert_eq!(
            serde_json::Value::Object(got),
            json!({
                "NAME": "p", "NAMESPACE": "ns", "WORKLOAD_NAME": "w", "CLUSTER_ID": "c", "MESH_ID": "m",
                "ISTIO_VERSION": "1.19.0", "OWNER": "o",
                "LABELS": {"app": "a"}, "PLATFORM_METADATA": {"gcp_project": "x"},
                "APP_CONTAINERS": "c1,c2", "INSTANCE_IPS": "10.0.0.1,fe80::1"
            })
        );
        // Deterministic: the same metadata gives the same bytes, whatever
        // the order it was built in.
        let a = protobuf::encode(&wasm_era_peer_struct(&protobuf::struct_from_json(&object(
            json!({"NAME": "p", "LABELS": {"b": "2", "a": "1"}}),
        ))));
        let b = protobuf::encode(&wasm_era_peer_struct(&protobuf::struct_from_json(&object(
            json!({"LABELS": {"a": "1", "b": "2"}, "NAME": "p"}),
        ))));
        assert_eq!(a, b);
    }

    #[test]
    fn tcp_frame_round_trips_and_refuses_hostile_bytes() {
        let meta = protobuf::struct_from_json(&object(json!({"NAME": "p", "LABELS": {"app": "a"}})));
        let frame = encode_tcp_frame("sidecar~1.1.1.1~p.ns~ns.svc.cluster.local", &meta);
        assert_eq!(frame[..4], [0x3D, 0x23, 0x04, 0x67]);
        assert_eq!(u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize, frame.len() - 8);
        let mut with_app = frame.clone();
        with_app.extend_from_slice(b"GET / HTTP/1.1");
        assert_eq!(
            decode_tcp_frame(&with_app, 1 << 16),
            TcpFrame::Peer {
                consumed: frame.len(),
                id: "sidecar~1.1.1.1~p.ns~ns.svc.cluster.local".into(),
                metadata: meta.clone()
            }
        );
        // Every truncation waits for more; never a peer, never a panic.
        for cut in 0..frame.len() {
            assert!(matches!(decode_tcp_frame(&frame[..cut], 1 << 16), TcpFrame::Incomplete { .. }), "cut {cut}");
        }
        assert_eq!(decode_tcp_frame(b"GET / HTTP/1.1", 1 << 16), TcpFrame::NoMagic);
        assert_eq!(decode_tcp_frame(b"G", 1 << 16), TcpFrame::NoMagic);
        assert_eq!(decode_tcp_frame(&frame, 8), TcpFrame::Oversized { length: frame.len() - 8 });
        let huge = [&TCP_EXCHANGE_MAGIC.to_be_bytes()[..], &u32::MAX.to_be_bytes()[..]].concat();
        assert_eq!(decode_tcp_frame(&huge, 1 << 16), TcpFrame::Oversized { length: u32::MAX as usize });
        // A whole frame with garbage, a wrong type URL, or no metadata.
        let bad = |payload: &[u8]| {
            [&TCP_EXCHANGE_MAGIC.to_be_bytes()[..], &(payload.len() as u32).to_be_bytes()[..], payload].concat()
        };
        assert_eq!(decode_tcp_frame(&bad(&[0xff; 5]), 1 << 16), TcpFrame::Malformed { consumed: 13 });
        let wrong_url = protobuf::encode(&Any { type_url: "x".into(), value: vec![] });
        assert!(matches!(decode_tcp_frame(&bad(&wrong_url), 1 << 16), TcpFrame::Malformed { .. }));
        let empty = protobuf::encode(&Any { type_url: STRUCT_TYPE_URL.into(), value: vec![] });
        assert!(matches!(decode_tcp_frame(&bad(&empty), 1 << 16), TcpFrame::Malformed { .. }));
    }
}
