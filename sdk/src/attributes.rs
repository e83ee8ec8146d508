//! Request attributes as plugins see them: typed values decoded from Envoy's
//! property encodings, behind a trait so that CEL expressions and label
//! computations run the same on the host (plugins) and on plain maps (tests).

use std::collections::BTreeMap;

/// A decoded attribute value (CEL's value kinds).
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    /// Nanoseconds since the Unix epoch.
    Timestamp(i64),
    /// Nanoseconds.
    Duration(i64),
    /// String-keyed maps (headers, node metadata, peer labels).
    Map(Vec<(String, AttrValue)>),
    List(Vec<AttrValue>),
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Looks a key up in a map value.
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        match self {
            AttrValue::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Where attributes come from: the proxy in a plugin, a map in tests.
pub trait AttributeSource {
    /// The attribute at `path` (e.g. `["request", "method"]`), or None when
    /// the proxy does not have it.
    fn attribute(&self, path: &[&str]) -> Option<AttrValue>;
}

/// Test and fixture source: keys are dotted paths (`request.method`).
/// A lookup of a longer path indexes into map values
/// (`request.headers.x-user` finds key `x-user` in `request.headers`).
impl AttributeSource for BTreeMap<String, AttrValue> {
    fn attribute(&self, path: &[&str]) -> Option<AttrValue> {
        for split in (1..=path.len()).rev() {
            if let Some(v) = self.get(&path[..split].join(".")) {
                let mut v = v.clone();
                for key in &path[split..] {
                    v = v.get(key)?.clone();
                }
                return Some(v);
            }
        }
        None
    }
}

/// How Envoy encodes an attribute's value (its type in Envoy's attribute
/// vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Raw UTF-8.
    String,
    /// 8-byte little-endian int64.
    Int,
    /// 8-byte little-endian uint64.
    Uint,
    /// One byte.
    Bool,
    /// int64 nanoseconds since the epoch.
    Timestamp,
    /// int64 nanoseconds.
    Duration,
    /// A string map in the pairs encoding.
    StringMap,
    /// A serialized `envoy.config.core.v3.Node`.
    Node,
    /// Not in the table: a string if valid UTF-8, else bytes.
    Unknown,
}

/// The encoding of the attribute at `path`, from Envoy's attribute
/// vocabulary (docs/host-sim.md, "Properties"). `node` is Istio's older name
/// for `xds.node`.
pub fn encoding(path: &[&str]) -> Encoding {
    use Encoding::*;
    match path {
        ["request", "headers", _] | ["response", "headers" | "trailers", _] => String,
        ["request", field] => match *field {
            "time" => Timestamp,
            "duration" => Duration,
            "size" | "total_size" => Int,
            "headers" => StringMap,
            "path" | "url_path" | "host" | "scheme" | "method" | "referer" | "useragent" | "id" | "query"
            | "protocol" => String,
            _ => Unknown,
        },
        ["response", field] => match *field {
            "code" | "grpc_status" | "size" | "total_size" | "flags" => Int,
            "code_details" => String,
            "headers" | "trailers" => StringMap,
            _ => Unknown,
        },
        ["connection", field] => match *field {
            "id" => Uint,
            "mtls" => Bool,
            "requested_server_name"
            | "tls_version"
            | "subject_local_certificate"
            | "subject_peer_certificate"
            | "uri_san_local_certificate"
            | "uri_san_peer_certificate"
            | "dns_san_local_certificate"
            | "dns_san_peer_certificate"
            | "sha256_peer_certificate_digest"
            | "termination_details"
            | "transport_failure_reason" => String,
            _ => Unknown,
        },
        ["source" | "destination" | "upstream", "port"] => Int,
        ["source" | "destination" | "upstream", "address"] => String,
        ["upstream", "tls_version" | "local_address" | "transport_failure_reason"] => String,
        ["xds", "node"] | ["node"] => Node,
        ["xds", "listener_direction"] => Int,
        ["xds", "cluster_name" | "route_name" | "filter_chain_name"] => String,
        ["plugin_name" | "plugin_root_id" | "plugin_vm_id"] => String,
        _ => Unknown,
    }
}

/// Decodes a property value by its encoding; `None` when the bytes do not
/// fit it (a malformed value counts as missing). Never panics.
pub fn decode(encoding: Encoding, bytes: &[u8]) -> Option<AttrValue> {
    use crate::property as p;
    Some(match encoding {
        Encoding::String => AttrValue::String(String::from_utf8_lossy(bytes).into_owned()),
        Encoding::Int => AttrValue::Int(p::decode_i64(bytes)?),
        Encoding::Uint => AttrValue::Uint(p::decode_u64(bytes)?),
        Encoding::Bool => AttrValue::Bool(p::decode_bool(bytes)?),
        Encoding::Timestamp => AttrValue::Timestamp(p::decode_i64(bytes)?),
        Encoding::Duration => AttrValue::Duration(p::decode_i64(bytes)?),
        Encoding::StringMap => p::decode_string_map(bytes)?,
        Encoding::Node => p::decode_node(bytes)?,
        Encoding::Unknown => match std::str::from_utf8(bytes) {
            Ok(s) => AttrValue::String(s.to_string()),
            Err(_) => AttrValue::Bytes(bytes.to_vec()),
        },
    })
}

/// Attributes read from the proxy with `proxy_get_property`, decoded by
/// [`encoding`] and memoized: make one per stream (or per callback), so
/// each path costs at most one host call.
///
/// * `node.*` and `xds.node.*` come from one read of `xds.node` (the
///   protobuf `Node`; see [`crate::property::decode_node`]), so
///   `node.metadata` is a typed map with `Struct` numbers as doubles.
/// * Paths below a string map (`request.headers.x-user`) are asked of the
///   host directly.
/// * A name Envoy does not know falls back, in Envoy, to the filter state
///   `wasm.<name>`: `istio_operationId` set by attributegen is just
///   `attribute(&["istio_operationId"])`.
/// * A host error (any status but OK and NOT_FOUND) reads as missing;
///   nothing here panics.
#[derive(Default)]
pub struct HostAttributes {
    memo: std::cell::RefCell<std::collections::HashMap<Vec<String>, Option<AttrValue>>>,
}

impl HostAttributes {
    pub fn new() -> Self {
        Self::default()
    }

    fn fetch(&self, path: &[&str]) -> Option<AttrValue> {
        match path {
            ["node", rest @ ..] | ["xds", "node", rest @ ..] => {
                let mut v = self.attribute(&["xds", "node"])?;
                for key in rest {
                    v = v.get(key)?.clone();
                }
                Some(v)
            }
            _ => {
                let bytes = crate::host::get_property(path).ok()??;
                decode(encoding(path), &bytes)
            }
        }
    }
}

impl AttributeSource for HostAttributes {
    fn attribute(&self, path: &[&str]) -> Option<AttrValue> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        if let Some(v) = self.memo.borrow().get(&key) {
            return v.clone();
        }
        let value = if path == ["xds", "node"] {
            crate::host::get_property(path).ok().flatten().and_then(|b| crate::property::decode_node(&b))
        } else {
            self.fetch(path)
        };
        self.memo.borrow_mut().insert(key, value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_source_indexes_into_maps() {
        let mut m = BTreeMap::new();
        m.insert("request.method".to_string(), AttrValue::String("GET".into()));
        m.insert(
            "request.headers".to_string(),
            AttrValue::Map(vec![("x-user".into(), AttrValue::String("alice".into()))]),
        );
        assert_eq!(m.attribute(&["request", "method"]), Some(AttrValue::String("GET".into())));
        assert_eq!(m.attribute(&["request", "headers", "x-user"]).unwrap().as_str(), Some("alice"));
        assert_eq!(m.attribute(&["request", "headers", "x-none"]), None);
        assert_eq!(m.attribute(&["response", "code"]), None);
    }

    #[test]
    fn encodings_follow_envoys_vocabulary() {
        assert_eq!(encoding(&["request", "time"]), Encoding::Timestamp);
        assert_eq!(encoding(&["request", "duration"]), Encoding::Duration);
        assert_eq!(encoding(&["response", "code"]), Encoding::Int);
        assert_eq!(encoding(&["request", "headers"]), Encoding::StringMap);
        assert_eq!(encoding(&["request", "headers", "x-user"]), Encoding::String);
        assert_eq!(encoding(&["connection", "mtls"]), Encoding::Bool);
        assert_eq!(encoding(&["node"]), Encoding::Node);
        assert_eq!(encoding(&["istio_operationId"]), Encoding::Unknown);
        assert_eq!(decode(Encoding::Int, &200i64.to_le_bytes()), Some(AttrValue::Int(200)));
        assert_eq!(decode(Encoding::Int, b"200"), None, "wrong width reads as missing");
        assert_eq!(decode(Encoding::Bool, &[1]), Some(AttrValue::Bool(true)));
        assert_eq!(decode(Encoding::Timestamp, &5i64.to_le_bytes()), Some(AttrValue::Timestamp(5)));
        assert_eq!(decode(Encoding::Duration, &5i64.to_le_bytes()), Some(AttrValue::Duration(5)));
        assert_eq!(decode(Encoding::Unknown, b"ListCatalog"), Some(AttrValue::String("ListCatalog".into())));
        assert_eq!(decode(Encoding::Unknown, &[0xff, 0]), Some(AttrValue::Bytes(vec![0xff, 0])));
        assert_eq!(decode(Encoding::String, &[b'a', 0xff]), Some(AttrValue::String("a\u{fffd}".into())));
        // Arbitrary bytes under every encoding: values or None, never a panic.
        let encodings = [
            Encoding::String,
            Encoding::Int,
            Encoding::Uint,
            Encoding::Bool,
            Encoding::Timestamp,
            Encoding::Duration,
            Encoding::StringMap,
            Encoding::Node,
            Encoding::Unknown,
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            for e in encodings {
                let _ = decode(e, &bytes);
            }
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn host_attributes_without_a_proxy_are_missing() {
        let h = HostAttributes::new();
        assert_eq!(h.attribute(&["request", "method"]), None);
        assert_eq!(h.attribute(&["node", "metadata"]), None);
        assert_eq!(h.attribute(&["request", "method"]), None, "memoized");
    }
}
