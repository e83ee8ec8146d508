//! Envoy's properties: decoders for Envoy's property encodings (see
//! docs/host-sim.md, "Properties"); the host calls are [`crate::host`]'s.
//!
//! Every decoder takes arbitrary bytes and returns `None` (or skips) on
//! anything malformed: a property value is host input and must never make a
//! plugin trap.

use crate::attributes::AttrValue;
use meshwasm_wire::protobuf::{Kind, Node, Struct, Value};

/// An 8-byte little-endian integer (`response.code`, `request.size`, ...).
pub fn decode_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.try_into().ok()?))
}

/// An 8-byte little-endian unsigned integer (`connection.id`).
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// An 8-byte little-endian double.
pub fn decode_f64(bytes: &[u8]) -> Option<f64> {
    Some(f64::from_le_bytes(bytes.try_into().ok()?))
}

/// A one-byte bool (`connection.mtls`).
pub fn decode_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [b] => Some(*b != 0),
        _ => None,
    }
}

/// A string map in the pairs encoding (`request.headers`; decoded by
/// [`meshwasm_wire::pairs`]) as an [`AttrValue::Map`]: keys and values as
/// (lossy) UTF-8; a name that repeats gets its values joined with `,` (one
/// entry per name, as Envoy's CEL header maps have). `None` if malformed.
pub fn decode_string_map(buf: &[u8]) -> Option<AttrValue> {
    let mut entries: Vec<(String, AttrValue)> = Vec::new();
    for (k, v) in meshwasm_wire::pairs::decode(buf)? {
        let key = String::from_utf8_lossy(k).into_owned();
        let value = String::from_utf8_lossy(v);
        match entries.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, AttrValue::String(joined))) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => entries.push((key, AttrValue::String(value.into_owned()))),
        }
    }
    Some(AttrValue::Map(entries))
}

// ------------------------------------------------------------ protobuf

/// A serialized `google.protobuf.Struct` (node metadata, a peer's exchanged
/// metadata) as an [`AttrValue::Map`], numbers as doubles. Decoded by
/// [`meshwasm_wire::protobuf::decode_struct`], whose rules on hostile input
/// apply (docs/wire.md): malformed bytes or a string that is not UTF-8
/// refuse the whole Struct (`None`), a repeated key keeps its last value,
/// nesting deeper than 33 Structs is refused.
pub fn decode_struct(buf: &[u8]) -> Option<AttrValue> {
    meshwasm_wire::protobuf::decode_struct(buf).map(|s| struct_to_attr(&s))
}

/// Envoy's `xds.node` (a serialized `envoy.config.core.v3.Node`, decoded by
/// [`meshwasm_wire::protobuf::decode_node`]) as a map of the fields
/// expressions use: `id`, `cluster`, `metadata` (the `Struct` as a map),
/// `locality` (`region`, `zone`, `sub_zone`), `user_agent_name`,
/// `user_agent_version`. Absent fields have their protobuf defaults.
pub fn decode_node(buf: &[u8]) -> Option<AttrValue> {
    meshwasm_wire::protobuf::decode_node(buf).map(|n| node_to_attr(&n))
}

// The one conversion from the wire crate's protobuf types to AttrValue.

/// A `Struct` as an [`AttrValue::Map`] (in the Struct's key order, sorted).
pub fn struct_to_attr(s: &Struct) -> AttrValue {
    AttrValue::Map(s.fields.iter().map(|(k, v)| (k.clone(), value_to_attr(v))).collect())
}

/// A `Value` as an [`AttrValue`]; a value without a kind is null.
pub fn value_to_attr(v: &Value) -> AttrValue {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => AttrValue::Null,
        Some(Kind::BoolValue(b)) => AttrValue::Bool(*b),
        Some(Kind::NumberValue(n)) => AttrValue::Double(*n),
        Some(Kind::StringValue(s)) => AttrValue::String(s.clone()),
        Some(Kind::ListValue(l)) => AttrValue::List(l.values.iter().map(value_to_attr).collect()),
        Some(Kind::StructValue(s)) => struct_to_attr(s),
    }
}

/// A `Node` as the map [`decode_node`] describes.
pub fn node_to_attr(n: &Node) -> AttrValue {
    let string = |s: &str| AttrValue::String(s.to_string());
    let locality = n.locality.clone().unwrap_or_default();
    AttrValue::Map(vec![
        ("id".to_string(), string(&n.id)),
        ("cluster".to_string(), string(&n.cluster)),
        ("metadata".to_string(), n.metadata.as_ref().map_or(AttrValue::Map(Vec::new()), struct_to_attr)),
        (
            "locality".to_string(),
            AttrValue::Map(vec![
                ("region".to_string(), string(&locality.region)),
                ("zone".to_string(), string(&locality.zone)),
                ("sub_zone".to_string(), string(&locality.sub_zone)),
            ]),
        ),
        ("user_agent_name".to_string(), string(&n.user_agent_name)),
        ("user_agent_version".to_string(), string(&n.user_agent_version)),
    ])
}

// ------------------------------------------------------------ host calls

/// Which kind of stream context Envoy is creating, for a root context's
/// `get_type()`: the same plugin can be loaded as an HTTP filter and as a
/// network filter, and Envoy asks the root for each new context. An HTTP
/// stream's info has its protocol from the start, a TCP connection's has
/// none (observed in Envoy 1.40: `request.protocol` is `HTTP/1.1` while the
/// HTTP context is created and NOT_FOUND for a network filter's).
/// Only a plain NOT_FOUND means a connection: an unexpected error keeps the
/// HTTP answer, the type every plugin had before network filters.
pub fn new_context_type() -> proxy_wasm::types::ContextType {
    match crate::host::get_property(&["request", "protocol"]) {
        Ok(None) => proxy_wasm::types::ContextType::StreamContext,
        _ => proxy_wasm::types::ContextType::HttpContext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_envoy_encodings() {
        assert_eq!(decode_i64(&200i64.to_le_bytes()), Some(200));
        assert_eq!(decode_i64(&[1, 2]), None);
        assert_eq!(decode_u64(&7u64.to_le_bytes()), Some(7));
        assert_eq!(decode_f64(&1.5f64.to_le_bytes()), Some(1.5));
        assert_eq!(decode_bool(&[1]), Some(true));
        assert_eq!(decode_bool(&[]), None);
    }

    #[test]
    fn pairs_decode_and_join_repeated_names() {
        let buf = meshwasm_wire::pairs::encode(&[(":method", "GET"), ("x-a", "1"), ("x-a", "2")]);
        let m = decode_string_map(&buf).unwrap();
        assert_eq!(m.get(":method").and_then(AttrValue::as_str), Some("GET"));
        assert_eq!(m.get("x-a").and_then(AttrValue::as_str), Some("1,2"));
        assert_eq!(decode_string_map(&[]), Some(AttrValue::Map(Vec::new())));
        // Truncated, lying counts, missing NULs, trailing bytes: refused, never a panic.
        assert!(decode_string_map(&buf[..buf.len() - 1]).is_none());
        assert!(decode_string_map(&[buf.as_slice(), &[0]].concat()).is_none());
        assert!(decode_string_map(&[0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(decode_string_map(&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'a', 1, 0]).is_none());
        assert!(decode_string_map(&[1, 0]).is_none());
        // Non-UTF-8 header bytes are lossy, not a refusal.
        let bin = meshwasm_wire::pairs::encode(&[(&b"x-bin"[..], &b"a\xff"[..])]);
        assert_eq!(decode_string_map(&bin).unwrap().get("x-bin").and_then(AttrValue::as_str), Some("a\u{fffd}"));
    }

    fn json_object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn node_with_metadata_struct() {
        use meshwasm_wire::protobuf::{encode, struct_from_json, Locality};
        let metadata = json_object(serde_json::json!({
            "MESH_ID": "mesh1",
            "N": 2.5,
            "B": true,
            "Z": null,
            "LABELS": {"app": "mesh1"},
            "L": ["mesh1", true],
        }));
        let node = Node {
            id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".into(),
            cluster: "pod.ns".into(),
            metadata: Some(struct_from_json(&metadata)),
            locality: Some(Locality { region: "r".into(), zone: String::new(), sub_zone: String::new() }),
            user_agent_name: String::new(),
            user_agent_version: String::new(),
        };
        let mut bytes = encode(&node);
        bytes.extend_from_slice(&[9 << 3, 5]); // an unknown varint field is skipped
        let n = decode_node(&bytes).unwrap();
        assert_eq!(n.get("cluster").and_then(AttrValue::as_str), Some("pod.ns"));
        assert_eq!(n.get("locality").and_then(|l| l.get("region")).and_then(AttrValue::as_str), Some("r"));
        let md = n.get("metadata").unwrap();
        assert_eq!(md.get("MESH_ID").and_then(AttrValue::as_str), Some("mesh1"));
        assert_eq!(md.get("N"), Some(&AttrValue::Double(2.5)));
        assert_eq!(md.get("B"), Some(&AttrValue::Bool(true)));
        assert_eq!(md.get("Z"), Some(&AttrValue::Null));
        assert_eq!(md.get("LABELS").and_then(|l| l.get("app")).and_then(AttrValue::as_str), Some("mesh1"));
        assert_eq!(md.get("L"), Some(&AttrValue::List(vec![AttrValue::String("mesh1".into()), AttrValue::Bool(true)])));
        assert_eq!(n.get("user_agent_name").and_then(AttrValue::as_str), Some(""));
        // A node without metadata or locality has empty ones.
        let bare = decode_node(&encode(&Node::default())).unwrap();
        assert_eq!(bare.get("metadata"), Some(&AttrValue::Map(Vec::new())));
        assert_eq!(bare.get("locality").and_then(|l| l.get("zone")).and_then(AttrValue::as_str), Some(""));

        // Every truncation of a valid node decodes or is refused: no panic.
        for cut in 0..bytes.len() {
            let _ = decode_node(&bytes[..cut]);
        }
        assert!(decode_node(&[0xff; 11]).is_none());
        assert!(decode_node(&[0x0b]).is_none(), "wire type 3 (groups) is refused");
    }

    #[test]
    fn hostile_structs_follow_the_wire_crates_rules() {
        use meshwasm_wire::protobuf::{encode, encode_json_struct};
        let s = encode_json_struct(&json_object(serde_json::json!({"k": "v"})));
        assert_eq!(decode_struct(&s), Some(AttrValue::Map(vec![("k".into(), AttrValue::String("v".into()))])));
        // A repeated key keeps its last value.
        let dup = [encode_json_struct(&json_object(serde_json::json!({"k": "first"}))), s.clone()].concat();
        assert_eq!(decode_struct(&dup).and_then(|m| m.get("k").cloned()), Some(AttrValue::String("v".into())));
        // A string that is not UTF-8 refuses the whole Struct (it was lossy
        // before the SDK used the wire crate). Bytes: entry{key "k", value{string "\xff"}}.
        assert_eq!(decode_struct(&[0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x1a, 0x00]).map(|_| ()), Some(()));
        assert_eq!(decode_struct(&[0x0a, 0x08, 0x0a, 0x01, b'k', 0x12, 0x03, 0x1a, 0x01, 0xff]), None);
        // Nesting: 33 Structs decode, 34 are refused (no stack overflow).
        let nested = |depth: usize| {
            let mut st = Struct::default();
            for _ in 0..depth {
                let inner = Value { kind: Some(Kind::StructValue(st)) };
                st = Struct { fields: [("x".to_string(), inner)].into() };
            }
            encode(&st)
        };
        assert!(decode_struct(&nested(33)).is_some());
        assert_eq!(decode_struct(&nested(34)), None);
    }
}
