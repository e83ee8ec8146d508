//! Protobuf messages that cross the proxy-wasm boundary:
//! `google.protobuf.Struct` (Envoy's node metadata, Istio's peer metadata in
//! the `x-envoy-peer-metadata` header and the `downstream_peer`/`upstream_peer`
//! filter state), Envoy's `config.core.v3.Node` (the `xds.node` property) and
//! `config.core.v3.Metadata` (`xds.upstream_host_metadata`,
//! `xds.cluster_metadata`).
//!
//! One implementation: prost's `Struct`/`Value`/`ListValue` (`prost-types`)
//! and a derived [`Node`] with the fields plugins read. Behaviour on hostile
//! input is prost's, which is protobuf's (what Envoy and Istio's C++ do):
//! * malformed bytes (truncation, lying lengths, wire type 3/4 groups, a
//!   wrong wire type for a known field): the whole message is refused;
//! * a string that is not UTF-8 (keys included): the whole message is
//!   refused, as proto3 requires;
//! * a key given twice: the last entry wins (protobuf map semantics);
//! * nesting: 33 `Struct`s inside each other decode, a 34th is refused
//!   (prost's limit of 100 nested messages; each level is a map entry, a
//!   `Value` and a `Struct`), so hostile input cannot exhaust the stack;
//! * unknown fields are skipped.

use prost::Message;
pub use prost_types::{value::Kind, ListValue, Struct, Value};
use serde_json::Value as Json;

/// `envoy.config.core.v3.Node`, the fields a plugin reads (unknown ones are
/// skipped when decoding). `user_agent_version` is one arm of a oneof in
/// Envoy's proto; a plain string field has the same wire form.
#[derive(Clone, PartialEq, Message)]
pub struct Node {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub cluster: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<Struct>,
    #[prost(message, optional, tag = "4")]
    pub locality: Option<Locality>,
    #[prost(string, tag = "6")]
    pub user_agent_name: String,
    #[prost(string, tag = "7")]
    pub user_agent_version: String,
}

/// `envoy.config.core.v3.Locality`.
#[derive(Clone, PartialEq, Message)]
pub struct Locality {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub zone: String,
    #[prost(string, tag = "3")]
    pub sub_zone: String,
}

/// `envoy.config.core.v3.Metadata`, its `filter_metadata` (namespace ->
/// Struct); `typed_filter_metadata` is skipped. A `BTreeMap`, so entries are
/// written in key order, as protobuf's deterministic serialization does.
#[derive(Clone, PartialEq, Message)]
pub struct Metadata {
    #[prost(btree_map = "string, message", tag = "1")]
    pub filter_metadata: std::collections::BTreeMap<String, Struct>,
}

/// A serialized `Struct`; `None` when malformed (see the module's rules).
pub fn decode_struct(bytes: &[u8]) -> Option<Struct> {
    Struct::decode(bytes).ok()
}

/// A serialized `Metadata`; `None` when malformed.
pub fn decode_metadata(bytes: &[u8]) -> Option<Metadata> {
    Metadata::decode(bytes).ok()
}

/// A serialized `Node`; `None` when malformed.
pub fn decode_node(bytes: &[u8]) -> Option<Node> {
    Node::decode(bytes).ok()
}

/// Serializes a message (a `Struct`, a `Node`, ...).
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// A JSON object as a serialized `Struct`.
pub fn encode_json_struct(map: &serde_json::Map<String, Json>) -> Vec<u8> {
    struct_from_json(map).encode_to_vec()
}

/// A JSON object as a `Struct` (numbers become doubles, as in protobuf).
pub fn struct_from_json(map: &serde_json::Map<String, Json>) -> Struct {
    Struct { fields: map.iter().map(|(k, v)| (k.clone(), value_from_json(v))).collect() }
}

/// A JSON value as a `Value`.
pub fn value_from_json(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(value_from_json).collect() }),
        Json::Object(o) => Kind::StructValue(struct_from_json(o)),
    };
    Value { kind: Some(kind) }
}

/// A `Value` as JSON; a value without a kind is null, a non-finite number
/// (which JSON cannot hold) is null too.
pub fn value_to_json(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(s)),
    }
}

/// A `Struct` as a JSON object.
pub fn struct_to_json(s: &Struct) -> serde_json::Map<String, Json> {
    s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Json) -> serde_json::Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// A hand-made length-delimited field (tags below 16).
    fn field(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![tag << 3 | 2];
        let mut len = payload.len();
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(payload);
        out
    }

    /// `Struct { key: Value { string_value: value } }`, byte by byte.
    fn one_string_entry(key: &[u8], value: &[u8]) -> Vec<u8> {
        let entry = [field(1, key), field(2, &field(3, value))].concat();
        field(1, &entry)
    }

    #[test]
    fn json_round_trips_through_struct_bytes() {
        let meta =
            object(json!({"NAME": "a", "N": 2.5, "B": true, "Z": null, "L": ["x", 1.0], "LABELS": {"app": "a"}}));
        let bytes = encode_json_struct(&meta);
        let back = struct_to_json(&decode_struct(&bytes).expect("valid"));
        assert_eq!(Json::Object(back), Json::Object(meta));
    }

    /// Namespaces are written in key order (deterministic), whatever order
    /// they were inserted in, and read back whole.
    #[test]
    fn metadata_is_written_in_key_order_and_round_trips() {
        let mut metadata = Metadata::default();
        for ns in ["z", "istio", "a"] {
            metadata.filter_metadata.insert(ns.into(), struct_from_json(&object(json!({"k": ns}))));
        }
        let bytes = encode(&metadata);
        let a = bytes.windows(3).position(|w| w == [0x0a, 0x01, b'a']).expect("a");
        let istio = bytes.windows(7).position(|w| w == [0x0a, 0x05, b'i', b's', b't', b'i', b'o']).expect("istio");
        let z = bytes.windows(3).position(|w| w == [0x0a, 0x01, b'z']).expect("z");
        assert!(a < istio && istio < z, "{bytes:?}");
        assert_eq!(decode_metadata(&bytes), Some(metadata));
        assert_eq!(decode_metadata(&bytes[..bytes.len() - 1]), None, "truncated");
    }

    #[test]
    fn node_round_trips() {
        let node = Node {
            id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
            cluster: "a.ns".into(),
            metadata: Some(struct_from_json(&object(json!({"NAMESPACE": "ns"})))),
            locality: Some(Locality { region: "r".into(), zone: "z".into(), sub_zone: String::new() }),
            user_agent_name: "envoy".into(),
            user_agent_version: String::new(),
        };
        let mut bytes = encode(&node);
        bytes.extend_from_slice(&[9 << 3, 5]); // an unknown varint field is skipped
        assert_eq!(decode_node(&bytes), Some(node));
    }

    #[test]
    fn hostile_structs_follow_one_documented_behaviour() {
        // Hand-built bytes agree with prost's encoding.
        let good = one_string_entry(b"k", b"v");
        assert_eq!(Json::Object(struct_to_json(&decode_struct(&good).expect("valid"))), json!({"k": "v"}));
        // Duplicate keys: the last entry wins.
        let dup = [one_string_entry(b"k", b"first"), one_string_entry(b"k", b"last")].concat();
        assert_eq!(Json::Object(struct_to_json(&decode_struct(&dup).expect("valid"))), json!({"k": "last"}));
        // Bad UTF-8 in a key or a string value: the whole Struct is refused.
        assert_eq!(decode_struct(&one_string_entry(b"\xff", b"v")), None);
        assert_eq!(decode_struct(&one_string_entry(b"k", b"\xc3\x28")), None);
        // Truncations and lying lengths are refused, never a panic.
        for cut in 1..good.len() {
            assert_eq!(decode_struct(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_struct(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        assert_eq!(decode_struct(&[0x0b]), None, "wire type 3 (groups)");
        assert_eq!(decode_node(&[0xff; 11]), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let nested = |depth: usize| {
            let mut s = Struct::default();
            for _ in 0..depth {
                let inner = Value { kind: Some(Kind::StructValue(s)) };
                s = Struct { fields: [("x".to_string(), inner)].into() };
            }
            encode(&s)
        };
        assert!(decode_struct(&nested(33)).is_some(), "33 levels are within prost's limit");
        assert_eq!(decode_struct(&nested(34)), None, "34 levels (102 messages) are refused");
        // Far deeper, built as bytes (an in-memory Struct that deep would
        // itself recurse when encoded or dropped).
        let mut deep = Vec::new();
        for _ in 0..10_000 {
            deep = field(1, &[field(1, b"x"), field(2, &field(5, &deep))].concat());
        }
        assert_eq!(decode_struct(&deep), None);
    }
}
