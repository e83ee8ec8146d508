//! Protobuf's JSON mapping for configuration fields, as serde helpers
//! (`#[serde(default, deserialize_with = "protojson::bool")]`).
//!
//! Istio's plugins read their configuration with protobuf's
//! `JsonStringToMessage` (attributegen; stats before Istio 1.17) or got it
//! from Envoy, which converts a filter's `typed_config` to its proto the
//! same way (stats since 1.17). That parser runs with protobuf's
//! `allow_legacy_syntax` on (protobuf `src/google/protobuf/json/json.cc`),
//! and its rules (`json/internal/parser.cc`) are the ones followed here:
//!
//! * bool: `true`/`false`, or a string absl's `SimpleAtob` reads
//!   (`"true"`, `"false"`, `"t"`, `"f"`, `"yes"`, `"no"`, `"y"`, `"n"`,
//!   `"1"`, `"0"`, any case);
//! * integers: a JSON number or a string holding one, without whitespace;
//!   exponents and fractions are accepted when the value is integral
//!   (`1e2`, `"1.0"`), within ±2^53 (signed) or [0, 2^54] (unsigned), and
//!   32-bit fields are range-checked;
//! * enums: the value's name, its number, or a string holding the number;
//!   with [`Enum`], a name the proto does not define is ignored (the
//!   default), as with `ignore_unknown_fields`, and kept to be reported;
//! * `google.protobuf.Duration`: a string of seconds with up to 9
//!   fractional digits and an `s` (`"1s"`, `"0.250s"`). meshwasm also takes
//!   the Go/absl forms Istio's Wasm-era stats plugin parsed (`"100ms"`,
//!   `"1m30s"`); negative durations are refused;
//! * `null` for any field means its default;
//! * nested messages, like the whole configuration, must be objects.
//!
//! Field names are accepted as written in the proto (`stat_prefix`) or in
//! lowerCamelCase (`statPrefix`, a serde `alias`); giving both is an error
//! (serde's duplicate-field check). A field the proto does not have is not
//! an error: Istio's plugins parsed with `ignore_unknown_fields` (istio/proxy
//! `extensions/attributegen/plugin.cc`; the stats plugin until it moved to
//! field-by-field JSON lookups, which ignore other fields too), and Envoy,
//! converting a filter's dynamic configuration, warns about unknown fields
//! and ignores them (`MessageUtil::loadFromJson`). Messages keep those
//! fields' names in an [`Unknown`] so the plugin can log and count them,
//! and refuse them under its `strict` option. Where meshwasm is stricter
//! than the legacy parser (a field given twice, a single value in place of
//! a list, `null` inside a list, an enum number the proto does not define),
//! the configuration is refused with the field named.

use super::ConfigError;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// A message: a JSON object only (serde's derived structs would also read
/// an array by field position, which protobuf never does).
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The fields of a message that its proto does not have (use it as
/// `#[serde(flatten)] unknown: Unknown`): their names, in order, values
/// skipped unread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unknown(pub Vec<String>);

impl<'de> Deserialize<'de> for Unknown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Unknown;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unknown, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value::<de::IgnoredAny>()?;
                    names.push(name);
                }
                Ok(Unknown(names))
            }
        }
        d.deserialize_map(V)
    }
}

impl Unknown {
    /// One error per unknown field of the message at `path` (`""` for the
    /// whole configuration, else `metrics[0]`), naming it.
    pub fn errors(&self, path: &str) -> impl Iterator<Item = ConfigError> + '_ {
        self.errors_at(path.to_string())
    }

    /// [`errors`](Self::errors) with an owned path.
    pub fn errors_at(&self, path: String) -> impl Iterator<Item = ConfigError> + '_ {
        let prefix = if path.is_empty() { path } else { format!("{path}.") };
        self.0.iter().map(move |name| {
            ConfigError::new(
                format!("{prefix}{name}"),
                "unknown field, ignored (as protobuf's JSON parser ignored it for Istio)",
            )
        })
    }
}

/// A nested message field; `null` is the default message.
pub fn message<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0).unwrap_or_default())
}

/// A repeated message field; `null` is the empty list.
pub fn messages<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<Object<T>>>::deserialize(d)?.map(|v| v.into_iter().map(|o| o.0).collect()).unwrap_or_default())
}

/// A string field; `null` is `""`.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A repeated string field; `null` is the empty list.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// A `map<string, string>` field: `null` is the empty map, a `null` value
/// is `""`, and a key given twice is refused (as protobuf refuses it).
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value::<Option<String>>()?.unwrap_or_default();
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate key `{key}`")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// A bool field.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean (true, false, \"true\" or \"false\")")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
            Ok(b)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
            parse_bool(s).ok_or_else(|| E::custom(format!("invalid boolean `{s}`, expected 'true' or 'false'")))
        }
    }
    d.deserialize_any(V)
}

/// A quoted bool as absl's `SimpleAtob` reads it.
pub fn parse_bool(s: &str) -> Option<bool> {
    const TRUE: &[&str] = &["true", "t", "yes", "y", "1"];
    const FALSE: &[&str] = &["false", "f", "no", "n", "0"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(s)) {
        Some(false)
    } else {
        None
    }
}

/// The largest integer a double holds exactly: protobuf's bound for a
/// signed integer written with an exponent or a fraction.
const SIGNED_FLOAT_BOUND: f64 = 9_007_199_254_740_992.0;
/// Protobuf's bound for an unsigned one (2^54).
const UNSIGNED_FLOAT_BOUND: f64 = 18_014_398_509_481_984.0;

/// An integer from a JSON number or a string, as protobuf reads it into a
/// 64-bit field (range checks for narrower fields come after).
enum Int {
    Signed(i64),
    Unsigned(u64),
}

fn integer<'de, D: Deserializer<'de>>(d: D, signed: bool) -> Result<Option<Int>, D::Error> {
    struct V {
        signed: bool,
    }
    impl V {
        fn float<E: de::Error>(&self, f: f64, text: &dyn fmt::Display) -> Result<Option<Int>, E> {
            if !f.is_finite() {
                return Err(E::custom(format!("invalid number `{text}`")));
            }
            let (lo, hi) =
                if self.signed { (-SIGNED_FLOAT_BOUND, SIGNED_FLOAT_BOUND) } else { (0.0, UNSIGNED_FLOAT_BOUND) };
            if f < lo || f > hi {
                return Err(E::custom(format!("integer `{text}` out of range")));
            }
            if f.fract() != 0.0 {
                return Err(E::custom(format!("expected an integer, `{text}` has a fractional part")));
            }
            // In range and integral: the casts are exact.
            Ok(Some(if self.signed { Int::Signed(f as i64) } else { Int::Unsigned(f as u64) }))
        }
    }
    impl Visitor<'_> for V {
        type Value = Option<Int>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer (a number or a string holding one)")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            if self.signed {
                return Ok(Some(Int::Signed(n)));
            }
            u64::try_from(n)
                .map(|n| Some(Int::Unsigned(n)))
                .map_err(|_| E::custom(format!("integer `{n}` out of range (must not be negative)")))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            if !self.signed {
                return Ok(Some(Int::Unsigned(n)));
            }
            match i64::try_from(n) {
                Ok(n) => Ok(Some(Int::Signed(n))),
                Err(_) => Err(E::custom(format!("integer `{n}` out of range"))),
            }
        }
        fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
            self.float(f, &f)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if s.is_empty() || s.chars().any(char::is_whitespace) {
                return Err(E::custom(format!("invalid integer `{s}`")));
            }
            if self.signed {
                if let Ok(n) = s.parse::<i64>() {
                    return Ok(Some(Int::Signed(n)));
                }
            } else if let Ok(n) = s.parse::<u64>() {
                return Ok(Some(Int::Unsigned(n)));
            }
            // Not a plain integer: protobuf tries it as a double (`"1e2"`).
            let is_number_text = s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
            match s.parse::<f64>() {
                Ok(f) if is_number_text => self.float(f, &s),
                _ => Err(E::custom(format!("invalid integer `{s}`"))),
            }
        }
    }
    d.deserialize_any(V { signed })
}

fn signed<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match integer(d, true)? {
        Some(Int::Signed(n)) => Ok(n),
        Some(Int::Unsigned(n)) => i64::try_from(n).map_err(|_| de::Error::custom("integer out of range")),
        None => Ok(0),
    }
}

fn unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match integer(d, false)? {
        Some(Int::Unsigned(n)) => Ok(Some(n)),
        Some(Int::Signed(n)) => u64::try_from(n).map(Some).map_err(|_| de::Error::custom("integer out of range")),
        None => Ok(None),
    }
}

/// An `int64` field.
pub fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    signed(d)
}

/// An `int32` field.
pub fn int32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let n = signed(d)?;
    i32::try_from(n).map_err(|_| de::Error::custom(format!("integer `{n}` out of range for int32")))
}

/// A `uint64` field.
pub fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(unsigned(d)?.unwrap_or(0))
}

/// A `uint32` field.
pub fn uint32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = unsigned(d)?.unwrap_or(0);
    u32::try_from(n).map_err(|_| de::Error::custom(format!("integer `{n}` out of range for uint32")))
}

/// A `uint64` field whose absence (or `null`) means "the default", which
/// the caller picks (`None`).
pub fn opt_uint64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    unsigned(d)
}

/// A proto enum: its values by name, several names may share a number
/// (`allow_alias`); the first name of a number is its canonical one.
pub trait ProtoEnum: Copy + Default + 'static {
    /// What it is, for errors (`metric type`).
    const WHAT: &'static str;
    const VALUES: &'static [(&'static str, i32, Self)];
    /// Whether a name that matches no value is tried again in upper case
    /// (protobuf's `case_insensitive_enum_parsing`, which Envoy turns on
    /// when it converts a filter's configuration, `MessageUtil::loadFromJson`;
    /// off in `JsonStringToMessage`'s defaults, as Istio's Wasm plugins used it).
    const CASE_INSENSITIVE: bool = false;
}

/// An enum field (use it in the enum's `Deserialize` impl): the name, the
/// number, or a string holding the number; `null` is the default. A name
/// the proto does not define is an error (see [`Enum`] for the lenient form).
pub fn enumeration<'de, D: Deserializer<'de>, T: ProtoEnum>(d: D) -> Result<T, D::Error> {
    match enum_value::<D, T>(d, false)? {
        (v, None) => Ok(v),
        (_, Some(name)) => Err(de::Error::custom(format!("unknown {} `{name}`", T::WHAT))),
    }
}

/// An enum field read as protobuf reads it with `ignore_unknown_fields`
/// (Istio's attributegen, and Envoy's second, lenient pass over a filter's
/// configuration): a quoted name the proto does not define leaves the field
/// at its default (protobuf `json/internal/parser.cc`, `ParseEnumFromStr`);
/// the name is kept in `unknown` for the plugin to log, count, and refuse
/// under `strict`. A number the proto does not define is still refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enum<T> {
    pub value: T,
    /// The name given, when the proto has no such value.
    pub unknown: Option<String>,
}

impl<T> From<T> for Enum<T> {
    fn from(value: T) -> Self {
        Enum { value, unknown: None }
    }
}

impl<'de, T: ProtoEnum> Deserialize<'de> for Enum<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (value, unknown) = enum_value::<D, T>(d, true)?;
        Ok(Enum { value, unknown })
    }
}

impl<T: ProtoEnum> Enum<T> {
    /// The error to report for an unknown name, at `path`.
    pub fn error(&self, path: impl Into<String>) -> Option<ConfigError> {
        let name = self.unknown.as_ref()?;
        let default = T::VALUES.iter().find(|(_, n, _)| *n == 0).map_or("0", |(d, _, _)| *d);
        let names = T::VALUES.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(", ");
        Some(ConfigError::new(
            path,
            format!(
                "unknown {} `{name}` (expected one of {names}), ignored: the default {default} (as protobuf's JSON parser left it for Istio)",
                T::WHAT
            ),
        ))
    }
}

/// The value of an enum field; with `tolerate_names`, an unknown quoted
/// name is returned (with the default) instead of refused.
fn enum_value<'de, D: Deserializer<'de>, T: ProtoEnum>(
    d: D,
    tolerate_names: bool,
) -> Result<(T, Option<String>), D::Error> {
    struct V<T> {
        tolerate_names: bool,
        marker: PhantomData<T>,
    }
    impl<T: ProtoEnum> V<T> {
        fn names() -> String {
            T::VALUES.iter().map(|(n, i, _)| format!("{n} ({i})")).collect::<Vec<_>>().join(", ")
        }
        fn by_number<E: de::Error>(n: i64) -> Result<T, E> {
            T::VALUES
                .iter()
                .find(|(_, i, _)| i64::from(*i) == n)
                .map(|(_, _, v)| *v)
                .ok_or_else(|| E::custom(format!("unknown {} number {n}, expected one of {}", T::WHAT, Self::names())))
        }
    }
    impl<T: ProtoEnum> Visitor<'_> for V<T> {
        type Value = (T, Option<String>);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a {} name or number: {}", T::WHAT, Self::names())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok((T::default(), None))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if let Some((_, _, v)) = T::VALUES.iter().find(|(n, _, _)| *n == s) {
                return Ok((*v, None));
            }
            if T::CASE_INSENSITIVE {
                let upper = s.to_ascii_uppercase();
                if let Some((_, _, v)) = T::VALUES.iter().find(|(n, _, _)| *n == upper) {
                    return Ok((*v, None));
                }
            }
            match s.parse::<i32>() {
                Ok(n) => Self::by_number(i64::from(n)).map(|v| (v, None)),
                Err(_) if self.tolerate_names => Ok((T::default(), Some(s.to_string()))),
                Err(_) => Err(E::custom(format!("unknown {} `{s}`, expected one of {}", T::WHAT, Self::names()))),
            }
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Self::by_number(n).map(|v| (v, None))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Self::by_number(i64::try_from(n).unwrap_or(i64::MAX)).map(|v| (v, None))
        }
        fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
            if f.fract() == 0.0 && f.abs() <= SIGNED_FLOAT_BOUND {
                Self::by_number(f as i64).map(|v| (v, None))
            } else {
                Err(E::custom(format!("unknown {} number {f}", T::WHAT)))
            }
        }
    }
    d.deserialize_any(V::<T> { tolerate_names, marker: PhantomData })
}

/// A `google.protobuf.Duration` field in milliseconds; `null` (or absent,
/// with `#[serde(default)]`) is `None`, the caller's default.
pub fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration string such as \"5s\", \"0.5s\" or \"100ms\"")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            parse_duration_ms(s).map(Some).ok_or_else(|| {
                E::custom(format!("invalid duration `{s}`, expected e.g. \"5s\", \"0.5s\" or \"100ms\""))
            })
        }
    }
    d.deserialize_any(V)
}

/// `<number><unit>` repeated (units `h`, `m`, `s`, `ms`, `us`, `µs`, `ns`),
/// non-negative; fractions allowed; a bare `0` as in Go and absl. Covers
/// protobuf's form (`"1.5s"`, up to 9 fractional digits). Milliseconds: a
/// positive duration under 1 ms counts as 1 ms (it must not turn into 0,
/// which means "off" for a reporting interval), others are rounded down.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += number * scale;
    }
    let ms = total_ns / 1e6;
    if !ms.is_finite() || ms > u64::MAX as f64 {
        return None;
    }
    Some(if total_ns > 0.0 && ms < 1.0 { 1 } else { ms as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::de::StrRead;

    /// Reads one JSON value with a helper.
    fn read<T>(
        helper: impl FnOnce(&mut serde_json::Deserializer<StrRead<'_>>) -> Result<T, serde_json::Error>,
        json: &str,
    ) -> Result<T, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        let v = helper(&mut de).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(v)
    }

    #[test]
    fn bools() {
        for (json, want) in [
            ("true", true),
            ("false", false),
            ("null", false),
            ("\"true\"", true),
            ("\"false\"", false),
            ("\"TRUE\"", true),
            ("\"t\"", true),
            ("\"yes\"", true),
            ("\"Y\"", true),
            ("\"1\"", true),
            ("\"f\"", false),
            ("\"No\"", false),
            ("\"0\"", false),
        ] {
            assert_eq!(read(|d| bool(d), json), Ok(want), "{json}");
        }
        for bad in ["1", "0", "\"\"", "\"maybe\"", "\" true\"", "[]", "{}"] {
            assert!(read(|d| bool(d), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers() {
        for (json, want) in [
            ("5", 5),
            ("-5", -5),
            ("\"5\"", 5),
            ("\"-5\"", -5),
            ("\"+5\"", 5),
            ("1e2", 100),
            ("\"1e2\"", 100),
            ("1.0", 1),
            ("\"1.0\"", 1),
            ("null", 0),
            ("\"9223372036854775807\"", i64::MAX),
            ("9007199254740992.0", 9_007_199_254_740_992),
        ] {
            assert_eq!(read(|d| int64(d), json), Ok(want), "{json}");
        }
        for bad in
            ["1.5", "\"1.5\"", "\" 5\"", "\"5 \"", "\"\"", "\"five\"", "true", "[]", "1e300", "\"0x10\"", "\"inf\""]
        {
            assert!(read(|d| int64(d), bad).is_err(), "{bad}");
        }
        assert!(read(|d| int64(d), "9223372036854775808").unwrap_err().contains("out of range"));
        assert!(read(|d| int32(d), "2147483648").unwrap_err().contains("out of range for int32"));
        assert_eq!(read(|d| int32(d), "\"-2147483648\""), Ok(i32::MIN));
        assert_eq!(read(|d| uint64(d), "\"18446744073709551615\""), Ok(u64::MAX));
        assert!(read(|d| uint64(d), "-1").unwrap_err().contains("out of range"));
        assert!(read(|d| uint64(d), "\"-1\"").is_err());
        assert!(read(|d| uint32(d), "4294967296").unwrap_err().contains("out of range for uint32"));
        assert_eq!(read(|d| uint32(d), "\"4e9\""), Ok(4_000_000_000));
        assert_eq!(read(|d| opt_uint64(d), "null"), Ok(None));
        assert_eq!(read(|d| opt_uint64(d), "\"7\""), Ok(Some(7)));
    }

    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    enum Color {
        #[default]
        Red,
        Green,
    }
    impl ProtoEnum for Color {
        const WHAT: &'static str = "color";
        const VALUES: &'static [(&'static str, i32, Self)] =
            &[("RED", 0, Color::Red), ("DEFAULT", 0, Color::Red), ("GREEN", 1, Color::Green)];
    }

    #[test]
    fn enums() {
        for (json, want) in [
            ("\"RED\"", Color::Red),
            ("\"DEFAULT\"", Color::Red),
            ("\"GREEN\"", Color::Green),
            ("1", Color::Green),
            ("\"1\"", Color::Green),
            ("0", Color::Red),
            ("1.0", Color::Green),
            ("null", Color::Red),
        ] {
            assert_eq!(read(|d| enumeration::<_, Color>(d), json), Ok(want), "{json}");
        }
        let e = read(|d| enumeration::<_, Color>(d), "\"BLUE\"").unwrap_err();
        assert!(e.contains("unknown color `BLUE`") && e.contains("GREEN (1)"), "{e}");
        assert!(read(|d| enumeration::<_, Color>(d), "2").unwrap_err().contains("unknown color number 2"));
        assert!(read(|d| enumeration::<_, Color>(d), "\"green\"").is_err(), "case-sensitive by default");
        assert!(read(|d| enumeration::<_, Color>(d), "true").is_err());
    }

    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    enum Mode {
        #[default]
        Off,
        ServerGateway,
    }
    impl ProtoEnum for Mode {
        const WHAT: &'static str = "mode";
        const VALUES: &'static [(&'static str, i32, Self)] =
            &[("OFF", 0, Mode::Off), ("SERVER_GATEWAY", 1, Mode::ServerGateway)];
        const CASE_INSENSITIVE: bool = true;
    }

    /// As protobuf with `ignore_unknown_fields`: an unknown name is the
    /// default, kept to be reported; unknown numbers and other types are
    /// still refused.
    #[test]
    fn lenient_enums() {
        let e: Enum<Color> = read(|d| Enum::deserialize(d), "\"BLUE\"").unwrap();
        assert_eq!(e, Enum { value: Color::Red, unknown: Some("BLUE".into()) });
        let err = e.error("items[0].color").unwrap();
        assert_eq!(err.path, "items[0].color");
        assert!(err.message.contains("unknown color `BLUE`") && err.message.contains("the default RED"), "{err}");
        assert_eq!(read(|d| Enum::<Color>::deserialize(d), "\"GREEN\""), Ok(Color::Green.into()));
        assert_eq!(read(|d| Enum::<Color>::deserialize(d), "null"), Ok(Color::Red.into()));
        assert!(Enum::from(Color::Green).error("x").is_none());
        assert!(read(|d| Enum::<Color>::deserialize(d), "7").is_err(), "an undefined number is refused");
        assert!(read(|d| Enum::<Color>::deserialize(d), "\"7\"").is_err());
        assert!(read(|d| Enum::<Color>::deserialize(d), "true").is_err());
    }

    /// As protobuf with `case_insensitive_enum_parsing`: the name upper-cased.
    #[test]
    fn case_insensitive_enums() {
        for json in ["\"SERVER_GATEWAY\"", "\"server_gateway\"", "\"Server_Gateway\"", "1"] {
            assert_eq!(read(|d| enumeration::<_, Mode>(d), json), Ok(Mode::ServerGateway), "{json}");
        }
        assert!(read(|d| enumeration::<_, Mode>(d), "\"servergateway\"").is_err(), "only the case is ignored");
        assert!(read(|d| enumeration::<_, Mode>(d), "\"server-gateway\"").is_err());
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Inner {
        #[serde(deserialize_with = "string")]
        name: String,
        #[serde(flatten)]
        unknown: Unknown,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Outer {
        #[serde(alias = "statPrefix", deserialize_with = "string")]
        stat_prefix: String,
        #[serde(deserialize_with = "messages")]
        items: Vec<Inner>,
        #[serde(flatten)]
        unknown: Unknown,
    }

    /// Unknown fields are kept by name, values unread (any JSON), at every
    /// level; known fields keep their checks (types, duplicates).
    #[test]
    fn unknown_fields_are_collected() {
        let o: Outer = crate::config::parse(
            br#"{"x":{"deep":[1,{"a":null}]},"statPrefix":"p","items":[{"name":"a","y":1,"z":"s"},{"name":"b"}],"w":[]}"#,
        )
        .unwrap();
        assert_eq!(o.stat_prefix, "p");
        assert_eq!(o.unknown, Unknown(vec!["x".into(), "w".into()]));
        assert_eq!(o.items[0].name, "a");
        assert_eq!(o.items[0].unknown.0, ["y", "z"]);
        assert!(o.items[1].unknown.0.is_empty());
        let paths: Vec<String> =
            o.unknown.errors("").chain(o.items[0].unknown.errors("items[0]")).map(|e| e.path).collect();
        assert_eq!(paths, ["x", "w", "items[0].y", "items[0].z"]);
        let e = crate::config::parse::<Outer>(br#"{"items":[{"name":1,"y":1}]}"#).unwrap_err();
        assert_eq!(e.path, "items[0].name");
        let e = crate::config::parse::<Outer>(br#"{"stat_prefix":"a","statPrefix":"b"}"#).unwrap_err();
        assert!(e.message.contains("duplicate field"), "{e}");
        assert!(crate::config::parse::<Outer>(br#"[1]"#).is_err(), "still an object only");
    }

    #[test]
    fn durations() {
        assert_eq!(read(|d| duration_ms(d), "\"1s\""), Ok(Some(1000)));
        assert_eq!(read(|d| duration_ms(d), "\"0.250s\""), Ok(Some(250)));
        assert_eq!(read(|d| duration_ms(d), "\"1.000000001s\""), Ok(Some(1000)));
        assert_eq!(read(|d| duration_ms(d), "null"), Ok(None));
        assert!(read(|d| duration_ms(d), "5").is_err(), "protobuf takes durations as strings only");
        assert_eq!(parse_duration_ms("5s"), Some(5000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1000000ns"), Some(1));
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        assert_eq!(parse_duration_ms("500us"), Some(1), "positive stays positive");
        for bad in ["", "s", "5", "-5s", "5 s", "5d", "1e3s", "..s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn strings_and_maps() {
        assert_eq!(read(|d| string(d), "null"), Ok(String::new()));
        assert_eq!(read(|d| string(d), "\"a\""), Ok("a".to_string()));
        assert!(read(|d| string(d), "1").is_err());
        assert_eq!(read(|d| strings(d), "null"), Ok(vec![]));
        assert!(read(|d| strings(d), "[null]").is_err(), "null inside a list is refused");
        assert!(read(|d| strings(d), "\"a\"").is_err(), "a single value is not a list");
        let m = read(|d| string_map(d), r#"{"a":"x","b":null}"#).unwrap();
        assert_eq!(m["a"], "x");
        assert_eq!(m["b"], "");
        assert_eq!(read(|d| string_map(d), "null"), Ok(BTreeMap::new()));
        assert!(read(|d| string_map(d), r#"{"a":"x","a":"y"}"#).unwrap_err().contains("duplicate key `a`"));
        assert!(read(|d| string_map(d), r#"["a"]"#).is_err());
    }
}
