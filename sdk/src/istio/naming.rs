//! How stat names carry their labels.

use super::{DEFAULT_FIELD_SEPARATOR, DEFAULT_STAT_PREFIX, DEFAULT_VALUE_SEPARATOR};

// ------------------------------------------------------------------ naming

/// How stat names are spelled: `label=.=value;.;...;.;<prefix>_<metric>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatNaming {
    pub prefix: String,
    pub field_separator: String,
    pub value_separator: String,
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
        }
    }

    /// `<prefix>_<metric>`: `istio_requests_total`.
    pub fn metric_name(&self, metric: &str) -> String {
        format!("{}_{}", self.prefix, metric)
    }

    /// A label value made safe to put in a stat name: every occurrence of
    /// either separator becomes `_`, so a value can never end its field
    /// early or forge another label for the tag regexes to find.
    pub fn sanitize<'a>(&self, value: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(value);
        for sep in [&self.field_separator, &self.value_separator] {
            if out.contains(sep.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(sep.as_str(), "_"));
            }
        }
        out
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

    /// The cache key of a label set: the sanitized values joined by the
    /// field separator (unambiguous, since sanitized values cannot contain it).
    pub fn series_key<'a, I>(&self, values: I) -> String
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut key = String::with_capacity(128);
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                key.push_str(&self.field_separator);
            }
            key.push_str(&self.sanitize(v));
        }
        key
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
        assert_eq!(n.sanitize("plain.value:80"), "plain.value:80");
        assert_eq!(n.series_key(["a;.;b", "c"]), "a_b;.;c");
        assert_ne!(n.series_key(["a", "b"]), n.series_key(["a;.;b"]));
    }
}
