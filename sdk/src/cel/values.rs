//! Attribute values to and from CEL values, and Istio's string form.

use crate::attributes::AttrValue;
use cel::objects::{Key, Map};
use cel::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// An attribute as a CEL value. Timestamps and durations out of chrono's
/// range become null (never a panic).
pub fn to_cel(v: AttrValue) -> Value {
    match v {
        AttrValue::Null => Value::Null,
        AttrValue::Bool(b) => Value::Bool(b),
        AttrValue::Int(i) => Value::Int(i),
        AttrValue::Uint(u) => Value::UInt(u),
        AttrValue::Double(d) => Value::Float(d),
        AttrValue::String(s) => Value::String(Arc::new(s)),
        AttrValue::Bytes(b) => Value::Bytes(Arc::new(b)),
        AttrValue::Timestamp(ns) => Value::Timestamp(chrono::DateTime::from_timestamp_nanos(ns).fixed_offset()),
        AttrValue::Duration(ns) => Value::Duration(chrono::Duration::nanoseconds(ns)),
        AttrValue::Map(entries) => {
            let mut map: HashMap<Key, Value> = HashMap::with_capacity(entries.len());
            for (k, v) in entries {
                // The first entry for a key wins, as with AttrValue::get.
                map.entry(Key::String(Arc::new(k))).or_insert_with(|| to_cel(v));
            }
            Value::Map(Map { map: Arc::new(map) })
        }
        AttrValue::List(items) => Value::List(Arc::new(items.into_iter().map(to_cel).collect())),
    }
}

/// A CEL result as an attribute value.
pub fn from_cel(v: Value) -> Result<AttrValue, String> {
    Ok(match v {
        Value::Null => AttrValue::Null,
        Value::Bool(b) => AttrValue::Bool(b),
        Value::Int(i) => AttrValue::Int(i),
        Value::UInt(u) => AttrValue::Uint(u),
        Value::Float(d) => AttrValue::Double(d),
        Value::String(s) => AttrValue::String(Arc::unwrap_or_clone(s)),
        Value::Bytes(b) => AttrValue::Bytes(Arc::unwrap_or_clone(b)),
        Value::Timestamp(t) => {
            AttrValue::Timestamp(t.timestamp_nanos_opt().ok_or("timestamp out of the int64 nanosecond range")?)
        }
        Value::Duration(d) => {
            AttrValue::Duration(d.num_nanoseconds().ok_or("duration out of the int64 nanosecond range")?)
        }
        Value::List(items) => AttrValue::List(items.iter().cloned().map(from_cel).collect::<Result<Vec<_>, _>>()?),
        Value::Map(m) => {
            let mut entries = Vec::with_capacity(m.map.len());
            for (k, v) in m.map.iter() {
                let key = match k {
                    Key::String(s) => s.to_string(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                entries.push((key, from_cel(v.clone())?));
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            AttrValue::Map(entries)
        }
        other => return Err(format!("unsupported result type {}", other.type_of())),
    })
}

/// Istio's string form of a dimension value (see
/// [`Expression::evaluate_string`](super::Expression::evaluate_string)).
pub fn stringify(v: &AttrValue) -> Result<String, String> {
    Ok(match v {
        AttrValue::String(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Uint(u) => u.to_string(),
        AttrValue::Double(d) => d.to_string(),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        AttrValue::Timestamp(ns) => {
            chrono::DateTime::from_timestamp_nanos(*ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }
        AttrValue::Duration(ns) => duration_string(*ns),
        AttrValue::Null => return Err("null has no string value".into()),
        AttrValue::List(_) => return Err("a list has no string value".into()),
        AttrValue::Map(_) => return Err("a map has no string value".into()),
    })
}

/// Seconds with the fraction trimmed: `1.5s`, `-0.000000001s`, `3s`.
pub(super) fn duration_string(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    let (secs, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        format!("{sign}{secs}s")
    } else {
        let digits = format!("{frac:09}");
        format!("{sign}{secs}.{}s", digits.trim_end_matches('0'))
    }
}
