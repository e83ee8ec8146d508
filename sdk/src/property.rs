//! Envoy's properties: host calls that never panic, and decoders for Envoy's
//! property encodings (see docs/host-sim.md, "Properties").
//!
//! Every decoder takes arbitrary bytes and returns `None` (or skips) on
//! anything malformed: a property value is host input and must never make a
//! plugin trap.

use crate::attributes::AttrValue;

/// A proxy-wasm status code as the host returned it (`1` NOT_FOUND,
/// `2` BAD_ARGUMENT, `7` SERIALIZATION_FAILURE, ...).
pub type RawStatus = u32;

/// Status `NOT_FOUND`.
pub const NOT_FOUND: RawStatus = 1;

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

/// A property path for `get_property`: segments in order.
pub fn path(p: &str) -> Vec<&str> {
    p.split('.').collect()
}

/// The proxy-wasm pairs encoding (header maps, `request.headers`):
/// `u32 N`, N × (`u32 key_len`, `u32 value_len`), then each key and value
/// followed by a NUL byte. `None` if malformed.
pub fn decode_pairs(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let n = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    // Each pair takes at least 8 bytes of sizes and 2 NULs.
    if n > buf.len() / 10 + 1 {
        return None;
    }
    let mut sizes = Vec::with_capacity(n);
    let mut at = 4usize;
    for _ in 0..n {
        let k = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
        let v = u32::from_le_bytes(buf.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        sizes.push((k, v));
        at += 8;
    }
    let mut out = Vec::with_capacity(n);
    for (k, v) in sizes {
        let key = buf.get(at..at.checked_add(k)?)?;
        at += k;
        if *buf.get(at)? != 0 {
            return None;
        }
        at += 1;
        let value = buf.get(at..at.checked_add(v)?)?;
        at += v;
        if *buf.get(at)? != 0 {
            return None;
        }
        at += 1;
        out.push((key, value));
    }
    Some(out)
}

/// A string map in the pairs encoding as an [`AttrValue::Map`]: keys and
/// values as (lossy) UTF-8; a name that repeats gets its values joined with
/// `,` (one entry per name, as Envoy's CEL header maps have).
pub fn decode_string_map(buf: &[u8]) -> Option<AttrValue> {
    let mut entries: Vec<(String, AttrValue)> = Vec::new();
    for (k, v) in decode_pairs(buf)? {
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

/// A protobuf field's payload.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

/// Reads protobuf fields one by one; stops (returns None) at the first
/// malformed byte.
struct ProtoReader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> ProtoReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// The next field, `Some(None)` at the end, `None` if malformed.
    fn field(&mut self) -> Option<Option<(u64, Wire<'a>)>> {
        if self.at >= self.buf.len() {
            return Some(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            _ => return None,
        };
        Some(Some((key >> 3, wire)))
    }
}

/// Nesting deeper than this in a `Struct` is refused (no stack overflow on
/// hostile input).
const MAX_STRUCT_DEPTH: usize = 32;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A serialized `google.protobuf.Struct` as an [`AttrValue::Map`] (numbers
/// are doubles, as in protobuf).
pub fn decode_struct(buf: &[u8]) -> Option<AttrValue> {
    decode_struct_at(buf, 0)
}

fn decode_struct_at(buf: &[u8], depth: usize) -> Option<AttrValue> {
    if depth > MAX_STRUCT_DEPTH {
        return None;
    }
    let mut entries: Vec<(String, AttrValue)> = Vec::new();
    let mut r = ProtoReader::new(buf);
    while let Some((field, wire)) = r.field()? {
        let (1, Wire::Bytes(entry)) = (field, wire) else { continue };
        let mut key = String::new();
        let mut value = AttrValue::Null;
        let mut e = ProtoReader::new(entry);
        while let Some((f, w)) = e.field()? {
            match (f, w) {
                (1, Wire::Bytes(k)) => key = lossy(k),
                (2, Wire::Bytes(v)) => value = decode_value_at(v, depth + 1)?,
                _ => {}
            }
        }
        // Protobuf map semantics: the last entry for a key wins.
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => entries.push((key, value)),
        }
    }
    Some(AttrValue::Map(entries))
}

/// A serialized `google.protobuf.Value`.
fn decode_value_at(buf: &[u8], depth: usize) -> Option<AttrValue> {
    if depth > MAX_STRUCT_DEPTH {
        return None;
    }
    let mut value = AttrValue::Null;
    let mut r = ProtoReader::new(buf);
    while let Some((field, wire)) = r.field()? {
        value = match (field, wire) {
            (1, Wire::Varint(_)) => AttrValue::Null,
            (2, Wire::Fixed64(bits)) => AttrValue::Double(f64::from_bits(bits)),
            (3, Wire::Bytes(s)) => AttrValue::String(lossy(s)),
            (4, Wire::Varint(b)) => AttrValue::Bool(b != 0),
            (5, Wire::Bytes(s)) => decode_struct_at(s, depth + 1)?,
            (6, Wire::Bytes(l)) => {
                let mut items = Vec::new();
                let mut lr = ProtoReader::new(l);
                while let Some((f, w)) = lr.field()? {
                    if let (1, Wire::Bytes(item)) = (f, w) {
                        items.push(decode_value_at(item, depth + 1)?);
                    }
                }
                AttrValue::List(items)
            }
            _ => continue,
        };
    }
    Some(value)
}

/// Envoy's `xds.node` (a serialized `envoy.config.core.v3.Node`) as a map of
/// the fields expressions use: `id`, `cluster`, `metadata` (the `Struct` as a
/// map), `locality` (`region`, `zone`, `sub_zone`), `user_agent_name`,
/// `user_agent_version`. Absent fields have their protobuf defaults.
pub fn decode_node(buf: &[u8]) -> Option<AttrValue> {
    let mut id = String::new();
    let mut cluster = String::new();
    let mut metadata = AttrValue::Map(Vec::new());
    let mut locality = vec![
        ("region".to_string(), AttrValue::String(String::new())),
        ("zone".to_string(), AttrValue::String(String::new())),
        ("sub_zone".to_string(), AttrValue::String(String::new())),
    ];
    let mut ua_name = String::new();
    let mut ua_version = String::new();
    let mut r = ProtoReader::new(buf);
    while let Some((field, wire)) = r.field()? {
        match (field, wire) {
            (1, Wire::Bytes(s)) => id = lossy(s),
            (2, Wire::Bytes(s)) => cluster = lossy(s),
            (3, Wire::Bytes(s)) => metadata = decode_struct(s)?,
            (4, Wire::Bytes(s)) => {
                let mut lr = ProtoReader::new(s);
                while let Some((f, w)) = lr.field()? {
                    if let (1..=3, Wire::Bytes(v)) = (f, w) {
                        locality[(f - 1) as usize].1 = AttrValue::String(lossy(v));
                    }
                }
            }
            (6, Wire::Bytes(s)) => ua_name = lossy(s),
            (7, Wire::Bytes(s)) => ua_version = lossy(s),
            _ => {}
        }
    }
    Some(AttrValue::Map(vec![
        ("id".to_string(), AttrValue::String(id)),
        ("cluster".to_string(), AttrValue::String(cluster)),
        ("metadata".to_string(), metadata),
        ("locality".to_string(), AttrValue::Map(locality)),
        ("user_agent_name".to_string(), AttrValue::String(ua_name)),
        ("user_agent_version".to_string(), AttrValue::String(ua_version)),
    ]))
}

// ------------------------------------------------------------ host calls

/// `proxy_get_property` through [`crate::host::get_property`], with the
/// status as a number: `Ok(None)` when the property does not exist
/// (NOT_FOUND), `Err` with any other non-OK status.
pub fn get(path: &[&str]) -> Result<Option<Vec<u8>>, RawStatus> {
    crate::host::get_property(path).map_err(crate::host::Error::raw)
}

/// `proxy_set_property` through [`crate::host::set_property`] (Envoy stores
/// it as filter state `wasm.<path>`), returning the host's status instead of
/// panicking: NOT_FOUND in a root context, BAD_ARGUMENT for a read-only
/// property. Outside wasm there is no proxy: NOT_FOUND.
pub fn set(path: &[&str], value: &[u8]) -> Result<(), RawStatus> {
    crate::host::set_property(path, value).map_err(crate::host::Error::raw)
}

/// Which kind of stream context Envoy is creating, for a root context's
/// `get_type()`: the same plugin can be loaded as an HTTP filter and as a
/// network filter, and Envoy asks the root for each new context. An HTTP
/// stream's info has its protocol from the start, a TCP connection's has
/// none (observed in Envoy 1.40: `request.protocol` is `HTTP/1.1` while the
/// HTTP context is created and NOT_FOUND for a network filter's).
/// Only a plain NOT_FOUND means a connection: an unexpected error keeps the
/// HTTP answer, the type every plugin had before network filters.
pub fn new_context_type() -> proxy_wasm::types::ContextType {
    match get(&["request", "protocol"]) {
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
        assert_eq!(path("request.url_path"), vec!["request", "url_path"]);
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (p.len() as u32).to_le_bytes().to_vec();
        for (k, v) in p {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in p {
            out.extend(k.as_bytes());
            out.push(0);
            out.extend(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn pairs_decode_and_join_repeated_names() {
        let buf = pairs(&[(":method", "GET"), ("x-a", "1"), ("x-a", "2")]);
        let m = decode_string_map(&buf).unwrap();
        assert_eq!(m.get(":method").and_then(AttrValue::as_str), Some("GET"));
        assert_eq!(m.get("x-a").and_then(AttrValue::as_str), Some("1,2"));
        assert_eq!(decode_pairs(&[]).unwrap().len(), 0);
        // Truncated, lying counts, missing NULs: refused, never a panic.
        assert!(decode_pairs(&buf[..buf.len() - 1]).is_none());
        assert!(decode_pairs(&[0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(decode_pairs(&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'a', 1, 0]).is_none());
        assert!(decode_pairs(&[1, 0]).is_none());
    }

    // Minimal protobuf writer for the tests.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    fn struct_entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes_field(1, key.as_bytes(), &mut e);
        bytes_field(2, value, &mut e);
        let mut s = Vec::new();
        bytes_field(1, &e, &mut s);
        s
    }

    #[test]
    fn node_with_metadata_struct() {
        let mut string_value = Vec::new();
        bytes_field(3, b"mesh1", &mut string_value);
        let mut number_value = Vec::new();
        varint(2 << 3 | 1, &mut number_value);
        number_value.extend(2.5f64.to_bits().to_le_bytes());
        let mut bool_value = Vec::new();
        varint(4 << 3, &mut bool_value);
        varint(1, &mut bool_value);
        let mut inner = struct_entry("app", &string_value);
        let mut nested = Vec::new();
        bytes_field(5, &inner, &mut nested);
        let mut list = Vec::new();
        let mut list_value = Vec::new();
        bytes_field(1, &string_value, &mut list);
        bytes_field(1, &bool_value, &mut list);
        bytes_field(6, &list, &mut list_value);
        let mut metadata = struct_entry("MESH_ID", &string_value);
        metadata.extend(struct_entry("N", &number_value));
        metadata.extend(struct_entry("LABELS", &nested));
        metadata.extend(struct_entry("L", &list_value));
        metadata.extend(struct_entry("B", &bool_value));
        let mut node = Vec::new();
        bytes_field(1, b"sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", &mut node);
        bytes_field(2, b"pod.ns", &mut node);
        bytes_field(3, &metadata, &mut node);
        varint(9 << 3, &mut node); // an unknown varint field is skipped
        varint(5, &mut node);
        let n = decode_node(&node).unwrap();
        assert_eq!(n.get("cluster").and_then(AttrValue::as_str), Some("pod.ns"));
        let md = n.get("metadata").unwrap();
        assert_eq!(md.get("MESH_ID").and_then(AttrValue::as_str), Some("mesh1"));
        assert_eq!(md.get("N"), Some(&AttrValue::Double(2.5)));
        assert_eq!(md.get("B"), Some(&AttrValue::Bool(true)));
        assert_eq!(md.get("LABELS").and_then(|l| l.get("app")).and_then(AttrValue::as_str), Some("mesh1"));
        assert_eq!(md.get("L"), Some(&AttrValue::List(vec![AttrValue::String("mesh1".into()), AttrValue::Bool(true)])));
        assert_eq!(n.get("user_agent_name").and_then(AttrValue::as_str), Some(""));

        // Every truncation of a valid node decodes or is refused: no panic.
        for cut in 0..node.len() {
            let _ = decode_node(&node[..cut]);
        }
        // Hostile nesting is refused, not a stack overflow.
        for _ in 0..200 {
            let mut wrapped = Vec::new();
            bytes_field(5, &inner, &mut wrapped);
            inner = struct_entry("x", &wrapped);
        }
        assert!(decode_struct(&inner).is_none());
        assert!(decode_node(&[0xff; 11]).is_none());
        assert!(decode_node(&[0x0b]).is_none(), "wire type 3 (groups) is refused");
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn no_proxy_outside_wasm() {
        assert_eq!(get(&["request", "method"]), Ok(None));
        assert_eq!(set(&["x"], b"1"), Err(NOT_FOUND));
    }
}
