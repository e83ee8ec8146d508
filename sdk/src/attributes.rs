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
}
