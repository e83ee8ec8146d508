//! How stat names carry their labels.

use super::{DEFAULT_FIELD_SEPARATOR, DEFAULT_STAT_PREFIX, DEFAULT_VALUE_SEPARATOR};
use std::borrow::Cow;

/// Default cut of a label value, in bytes (meshwasm; Istio has none). Real
/// values fit: a DNS name is at most 253 bytes (a host with its port 259),
/// a SPIFFE principal `spiffe://cluster.local/ns/<63>/sa/<253>` 346; a
/// client's 60 KB `Host` header does not.
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 512;

/// Characters a regex's `.` may refuse to match: line breaks for RE2 and
/// ECMAScript (`\n`, `\r`, U+2028, U+2029), and the other control
/// characters (NUL, C1's NEL) that have no business in a label either.
fn breaks_regex_dot(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

// ------------------------------------------------------------------ naming

/// How stat names are spelled: `label=.=value;.;...;.;<prefix>_<metric>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatNaming {
    pub prefix: String,
    pub field_separator: String,
    pub value_separator: String,
    /// Label values are cut to this many bytes ([`label_value`](Self::label_value));
    /// 0 = no cut.
    pub max_value_bytes: usize,
}

impl Default for StatNaming {
    fn default() -> Self {
        Self::new("", "", "")
    }
}

impl StatNaming {
    /// Empty arguments mean Istio's defaults (as proto3 leaves unset
    /// strings empty).
    pub fn new(prefix: &str, field_separator: &str, value_separator: &str) -> Self {
        let or = |v: &str, d: &str| if v.is_empty() { d.to_string() } else { v.to_string() };
        StatNaming {
            prefix: or(prefix, DEFAULT_STAT_PREFIX),
            field_separator: or(field_separator, DEFAULT_FIELD_SEPARATOR),
            value_separator: or(value_separator, DEFAULT_VALUE_SEPARATOR),
            max_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
        }
    }

    /// The same naming with another cut of label values (0 = none).
    pub fn with_max_value_bytes(mut self, max_value_bytes: usize) -> Self {
        self.max_value_bytes = max_value_bytes;
        self
    }

    /// `<prefix>_<metric>`: `istio_requests_total`.
    pub fn metric_name(&self, metric: &str) -> String {
        format!("{}_{}", self.prefix, metric)
    }

    /// The character that replaces what a label value may not contain:
    /// `_` (as Envoy's Prometheus names use it), or, when a separator
    /// contains `_`, the first printable ASCII character neither separator
    /// contains. As it occurs in no separator, a replacement can never
    /// complete a separator.
    pub fn replacement(&self) -> char {
        let free = |c: &char| !self.field_separator.contains(*c) && !self.value_separator.contains(*c);
        // Never `.`: trailing dots are dropped (see `sanitize`).
        std::iter::once('_').chain((b'!'..=b'~').map(char::from)).filter(|c| *c != '.').find(free).unwrap_or('_')
    }

    /// A label value made safe to put in a stat name, whatever its bytes.
    /// Envoy finds a label with a tag regex `label<vs>(.*?)<fs>` (Istio's
    /// bootstrap: `(reporter=\.=(.*?);\.;)`): the lazy group ends at the first
    /// field separator after the label, and `.` does not match line breaks
    /// (RE2 and ECMAScript regexes alike). So in `<vs>value<fs>`:
    ///
    /// * control characters (C0, DEL, C1) and U+2028/U+2029 become the
    ///   [`replacement`](Self::replacement): a regex's `.` stops at them;
    /// * every whole occurrence of either separator becomes the replacement;
    /// * trailing dots are dropped: Envoy drops them from a tag's value
    ///   (observed in Envoy 1.40: `x.` and `x..` show as `x`), so two values
    ///   differing only there would be two series with the same labels;
    /// * a separator that would straddle the value's edges (`reviews;.` then
    ///   `;.;` reads as `reviews` then `;.;` then `.;`) loses the value's
    ///   character inside it to the replacement.
    ///
    /// What remains cannot end the field early or start another, for any
    /// pair of separators (one that uses up every printable ASCII
    /// character aside). Everything else is kept: dots, colons, slashes,
    /// `=`/`;` not forming a separator, non-ASCII text, so real values
    /// (`reviews.default.svc.cluster.local:9080`,
    /// `spiffe://cluster.local/ns/default/sa/x`) are unchanged.
    /// Idempotent. Istio's Wasm stats plugin appended values as they were.
    pub fn sanitize<'a>(&self, value: &'a str) -> Cow<'a, str> {
        if self.is_clean(value) {
            return Cow::Borrowed(value);
        }
        let r = self.replacement();
        let mut out = Cow::Borrowed(value);
        if out.chars().any(breaks_regex_dot) {
            out = Cow::Owned(out.chars().map(|c| if breaks_regex_dot(c) { r } else { c }).collect());
        }
        let mut buf = [0u8; 4];
        let r_str: &str = r.encode_utf8(&mut buf);
        for sep in [&self.field_separator, &self.value_separator] {
            if !sep.is_empty() && out.contains(sep.as_str()) {
                out = Cow::Owned(out.replace(sep.as_str(), r_str));
            }
        }
        if out.ends_with('.') {
            out = match out {
                Cow::Borrowed(b) => Cow::Borrowed(b.trim_end_matches('.')),
                Cow::Owned(o) => Cow::Owned(o.trim_end_matches('.').to_string()),
            };
        }
        // Replacing a character by the replacement (never `.`) leaves no
        // trailing dot behind.
        while let Some(at) = self.edge_hazard(&out) {
            let mut s = out.into_owned();
            let end = at + s[at..].chars().next().map_or(1, char::len_utf8);
            s.replace_range(at..end, r_str);
            out = Cow::Owned(s);
        }
        out
    }

    /// Whether [`sanitize`](Self::sanitize) would leave `value` as it is,
    /// in one pass over its bytes (the common case, on every label of
    /// every report): no control byte, no separator starting at any byte,
    /// no trailing dot, and no separator straddling an edge.
    fn is_clean(&self, value: &str) -> bool {
        let (fs, vs) = (self.field_separator.as_bytes(), self.value_separator.as_bytes());
        let b = value.as_bytes();
        if b.last() == Some(&b'.') {
            return false;
        }
        // A whole separator inside the value starts with its first byte:
        // only there is it looked for.
        let (f0, v0) = (fs.first().copied(), vs.first().copied());
        for (i, &c) in b.iter().enumerate() {
            // C0 and DEL; 0xC2 and 0xE2 lead C1 controls and U+2028/U+2029
            // (other non-ASCII text is kept, so leave those to the full rule).
            if c < 0x20 || c == 0x7f || c == 0xc2 || c == 0xe2 {
                return false;
            }
            if (Some(c) == f0 && b[i..].starts_with(fs)) || (Some(c) == v0 && b[i..].starts_with(vs)) {
                return false;
            }
        }
        // Only a value starting or ending with any separator byte can have
        // a separator straddle its edges.
        let edge = fs.len().max(vs.len()).saturating_sub(1).min(b.len());
        let in_sep = |c: &u8| fs.contains(c) || vs.contains(c);
        !(b[..edge].iter().any(in_sep) || b[b.len() - edge..].iter().any(in_sep)) || self.edge_hazard(value).is_none()
    }

    /// A separator occurrence in `<vs>value<fs>` that shares a byte with the
    /// value (other than the two that frame it): the byte offset in `value`
    /// of the character to replace. Only straddling occurrences are left
    /// once whole ones are replaced, so only the edges are scanned, with
    /// no allocation (this runs for every label of every report).
    fn edge_hazard(&self, value: &str) -> Option<usize> {
        let (vs, fs) = (self.value_separator.as_bytes(), self.field_separator.as_bytes());
        let v = value.as_bytes();
        if v.is_empty() {
            return None;
        }
        let (a, b) = (vs.len(), vs.len() + v.len());
        let byte = |i: usize| -> u8 {
            if i < a {
                vs[i]
            } else if i < b {
                v[i - a]
            } else {
                fs[i - b]
            }
        };
        let total = b + fs.len();
        for sep in [fs, vs] {
            if sep.is_empty() {
                continue;
            }
            let first = a.saturating_sub(sep.len() - 1);
            // Whole occurrences inside the value are gone: scan the head
            // and the tail windows only.
            let head = first..a;
            let tail = b.saturating_sub(sep.len() - 1).max(a)..b;
            for p in head.chain(tail) {
                if p + sep.len() > total || (sep == vs && p == 0) || (sep == fs && p == b) {
                    continue;
                }
                if (0..sep.len()).all(|k| byte(p + k) == sep[k]) {
                    let mut at = p.max(a) - a;
                    while !value.is_char_boundary(at) {
                        at -= 1;
                    }
                    return Some(at);
                }
            }
        }
        None
    }

    /// A label value as it goes into a stat name: [`sanitize`](Self::sanitize)d,
    /// then cut to `max_value_bytes` (on a character boundary, and
    /// sanitized again, since a cut can leave a partial separator at the
    /// end). Returns the value and whether it was cut.
    pub fn label_value<'a>(&self, value: &'a str) -> (Cow<'a, str>, bool) {
        let clean = self.sanitize(value);
        if self.max_value_bytes == 0 || clean.len() <= self.max_value_bytes {
            return (clean, false);
        }
        let mut end = self.max_value_bytes;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        let cut = self.sanitize(&clean[..end]).into_owned();
        (Cow::Owned(cut), true)
    }

    /// The full stat name of a series: each `(label, value)` as
    /// `label<value_sep>value<field_sep>`, in the order given, then the
    /// metric's full name. Values are sanitized.
    pub fn stat_name<'a, I>(&self, full_metric_name: &str, labels: I) -> String
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut name = String::with_capacity(64 + full_metric_name.len());
        for (label, value) in labels {
            name.push_str(label);
            name.push_str(&self.value_separator);
            name.push_str(&self.sanitize(value));
            name.push_str(&self.field_separator);
        }
        name.push_str(full_metric_name);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_carry_labels() {
        let n = StatNaming::default();
        let metric = n.metric_name("requests_total");
        assert_eq!(metric, "istio_requests_total");
        assert_eq!(
            n.stat_name(&metric, [("reporter", "destination"), ("response_code", "200")]),
            "reporter=.=destination;.;response_code=.=200;.;istio_requests_total"
        );
        assert_eq!(n.stat_name(&n.metric_name("get_calls"), []), "istio_get_calls");
        let custom = StatNaming::new("mesh", ";;", "==");
        assert_eq!(custom.stat_name(&custom.metric_name("x"), [("a", "1")]), "a==1;;mesh_x");
    }

    #[test]
    fn values_cannot_forge_labels() {
        let n = StatNaming::default();
        assert_eq!(n.sanitize("a;.;response_code=.=500"), "a_response_code_500");
        assert_eq!(n.stat_name("m", [("k", "a;.;b"), ("l", "c")]), "k=.=a_b;.;l=.=c;.;m");
        // The cases: a partial field separator at the end (`Host:
        // reviews;.` read as `reviews` then `;.;`), a newline (`.` stops).
        assert_eq!(n.sanitize("reviews;."), "reviews;");
        assert_eq!(n.sanitize("evil\nname"), "evil_name");
        assert_eq!(n.sanitize("a\r\0\u{7f}\u{85}\u{2028}b"), "a_____b");
        // A partial value separator at the start straddles `=.=`.
        assert_eq!(n.sanitize(".=x"), "_=x");
        // Runs: each replacement leaves no separator behind.
        assert_eq!(n.sanitize(";.;.;.;"), "_._");
        assert_eq!(n.sanitize("=.=.=.=;.;.;"), "_.__.;");
        // Trailing dots go, as Envoy shows tag values; leading and inner
        // ones stay.
        assert_eq!(n.sanitize("reviews.default.svc.cluster.local."), "reviews.default.svc.cluster.local");
        assert_eq!(n.sanitize("trail.."), "trail");
        assert_eq!(n.sanitize(".."), "");
        assert_eq!(n.sanitize(".lead"), ".lead");
        assert_eq!(n.sanitize("mid..dle"), "mid..dle");
        assert_eq!(n.sanitize("x;.;."), "x_");
        // Real values, and separators' characters not forming one, stay.
        for real in [
            "reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local:9080",
            "spiffe://cluster.local/ns/default/sa/x",
            "a=b;c.d",
            "a;",
            ";.x",
            "=",
            "héllo wörld ✓",
            "",
        ] {
            assert_eq!(n.sanitize(real), real);
            assert!(matches!(n.sanitize(real), Cow::Borrowed(_)), "no copy for a clean value");
        }
    }

    /// Whether `value` framed as `<vs>value<fs>` holds its separators only
    /// where they frame it, and nothing a regex's `.` refuses.
    fn framed_safely(n: &StatNaming, value: &str) -> bool {
        let s = format!("{}{value}{}", n.value_separator, n.field_separator);
        let (vs, fs) = (n.value_separator.as_str(), n.field_separator.as_str());
        let at = |sep: &str| -> Vec<usize> {
            (0..s.len()).filter(|p| s.get(*p..).is_some_and(|t| t.starts_with(sep))).collect()
        };
        let vs_at = at(vs);
        let fs_at = at(fs);
        // Occurrences that share no byte with the value are the framing
        // (or lie inside a separator, when one contains the other).
        let touches = |p: &usize, len: usize| *p < vs.len() + value.len() && p + len > vs.len();
        !value.is_empty()
            && !value.chars().any(breaks_regex_dot)
            && !value.ends_with('.')
            && !vs_at.iter().any(|p| touches(p, vs.len()))
            && !fs_at.iter().any(|p| touches(p, fs.len()) && *p != vs.len() + value.len())
            || value.is_empty()
    }

    #[test]
    fn every_short_value_is_framed_safely_for_any_separators() {
        // Every string of up to 5 characters over the separators' own
        // characters (plus a letter, a newline, `_`, a non-ASCII letter, NEL
        // and U+2028),
        // for the default and some odd separator pairs.
        let pairs = [(";.;", "=.="), (";;", "=="), ("|", ":"), ("_;", "=_"), ("..", "."), ("ab", "ba"), ("aa", "a")];
        for (fs, vs) in pairs {
            let n = StatNaming::new("", fs, vs);
            let mut alphabet: Vec<char> = format!("{fs}{vs}x\n_é\u{85}\u{2028}").chars().collect();
            alphabet.sort();
            alphabet.dedup();
            let mut values = vec![String::new()];
            for _ in 0..5 {
                let longer: Vec<String> =
                    values.iter().flat_map(|v| alphabet.iter().map(move |c| format!("{v}{c}"))).collect();
                for v in &longer {
                    let clean = n.sanitize(v);
                    assert!(framed_safely(&n, &clean), "{fs:?} {vs:?}: {v:?} -> {clean:?}");
                    assert_eq!(n.sanitize(&clean), clean, "idempotent: {v:?}");
                    assert!(n.is_clean(&clean), "the fast path takes sanitized values: {clean:?}");
                    if n.is_clean(v) {
                        assert_eq!(clean, *v);
                    }
                    assert!(clean.len() <= v.len(), "never longer: {v:?}");
                }
                values = longer;
            }
        }
    }

    #[test]
    fn the_replacement_is_in_no_separator() {
        assert_eq!(StatNaming::default().replacement(), '_');
        let n = StatNaming::new("", "_;", "=_");
        assert_eq!(n.replacement(), '!');
        assert_eq!(n.sanitize("a_;b\n"), "a!b!");
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary_and_stay_safe() {
        let n = StatNaming::default().with_max_value_bytes(8);
        assert_eq!(n.label_value("short"), (Cow::Borrowed("short"), false));
        assert_eq!(n.label_value("abcdefghij").0, "abcdefgh");
        assert!(n.label_value("abcdefghij").1);
        // 'é' is two bytes at 7..9: the cut falls before it.
        assert_eq!(n.label_value("abcdefgé").0, "abcdefg");
        // A cut that leaves `;.` at the end is sanitized again.
        assert_eq!(n.label_value("abcdef;.xyz").0, "abcdef;");
        assert_eq!(n.label_value("abcdefg.xyz").0, "abcdefg", "nor a trailing dot");
        // Sanitizing first: a separator is replaced, not cut in half.
        assert_eq!(n.label_value("ab;.;cdefgh").0, "ab_cdefg");
        let unlimited = StatNaming::default().with_max_value_bytes(0);
        assert_eq!(unlimited.label_value(&"x".repeat(100_000)).0.len(), 100_000);
        assert_eq!(StatNaming::default().max_value_bytes, DEFAULT_MAX_LABEL_VALUE_BYTES);
    }
}
