//! Plugin metrics as Envoy's `/stats/prometheus` shows them: tags extracted
//! from the stat name by the bootstrap's `stats_tags` regexes (in list order:
//! the first capture group is cut from the name, the second is the value),
//! names sanitized, counters then gauges then histograms, each family sorted.

use crate::abi::MetricType;
use crate::scenario::StatsTag;
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Envoy's default histogram bucket bounds (Istio sets none by default).
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

#[derive(Debug, Clone)]
/// A plugin metric as a host holds it.
pub struct Stat {
    pub name: String,
    pub kind: MetricType,
    /// Counter/gauge value.
    pub value: i64,
    /// Histogram samples.
    pub samples: Vec<u64>,
}

/// Istio's standard labels, in the order Istio's bootstrap lists their tag
/// regexes (and so the order `/stats/prometheus` prints them).
pub use meshwasm_wire::istio::STANDARD_LABELS as ISTIO_LABELS;

/// The tag regex Istio generates for a label: `(label=\.=(.*?);\.;)`.
pub fn istio_tag(label: &str) -> StatsTag {
    StatsTag { tag_name: label.to_string(), regex: format!(r"({}=\.=(.*?);\.;)", regex::escape(label)) }
}

/// Istio's bootstrap list: a regex per standard label, then the two that
/// `istio_build{component="proxy",tag="<version>"}` is named for.
pub fn istio_default_stats_tags() -> Vec<StatsTag> {
    let mut tags: Vec<StatsTag> = ISTIO_LABELS.iter().map(|l| istio_tag(l)).collect();
    for (tag_name, regex) in [("component", r"(component\.(.+?)\.)"), ("tag", r"(tag\.(.+?);\.)")] {
        tags.push(StatsTag { tag_name: tag_name.into(), regex: regex.into() });
    }
    tags
}

/// Envoy keeps histogram samples in log-linear bins of two significant
/// digits (libcircllhist) and counts a bin under every bucket bound its
/// lower edge does not exceed: 102 lies in [100, 110) and shows under
/// `le="100"` (observed in Envoy 1.40). This is that lower edge.
pub fn envoy_bin_lower_edge(v: u64) -> u64 {
    if v < 100 {
        return v;
    }
    let digits = v.ilog10() + 1;
    let scale = 10u64.pow(digits - 2);
    v / scale * scale
}

/// A stat name split into its Prometheus name and tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub name: String,
    pub tags: Vec<(String, String)>,
}

pub fn extract(stat_name: &str, rules: &[(String, Regex)]) -> Extracted {
    let (name, tags) = extract_raw(stat_name, rules);
    Extracted { name: sanitize(&name), tags }
}

/// The name left once the tags are cut, before sanitizing, and the tags.
fn extract_raw(stat_name: &str, rules: &[(String, Regex)]) -> (String, Vec<(String, String)>) {
    let mut name = stat_name.to_string();
    let mut tags = Vec::new();
    for (tag, re) in rules {
        let Some(caps) = re.captures(&name) else { continue };
        let (Some(cut), Some(value)) = (caps.get(1), caps.get(2)) else { continue };
        tags.push((tag.clone(), value.as_str().to_string()));
        let (start, end) = (cut.start(), cut.end());
        name.replace_range(start..end, "");
    }
    (name, tags)
}

/// Labels Istio's stat naming put in a metric name (`<label>=.=<value>;.;`)
/// that no tag rule extracted: in `/stats/prometheus` they stay in the
/// metric's name (`custom___x___istio_requests_total`), one family per
/// value. One warning per label name, naming a metric that carries it and
/// the fix (`extra_stat_tags`).
pub fn unextracted_label_warnings(stats: &[Stat], tags: &[StatsTag]) -> Vec<String> {
    unextracted_label_warnings_in(stats.iter().map(|s| s.name.as_str()), tags)
}

/// [`unextracted_label_warnings`] over metric names alone (the Envoy
/// engine reads full stat names from the admin interface).
pub fn unextracted_label_warnings_in<'a>(names: impl Iterator<Item = &'a str>, tags: &[StatsTag]) -> Vec<String> {
    let rules = compile(tags);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for name in names {
        let (rest, _) = extract_raw(name, &rules);
        for field in rest.split(";.;") {
            if let Some((label, _)) = field.split_once("=.=") {
                seen.entry(label.to_string()).or_insert_with(|| name.to_string());
            }
        }
    }
    seen.into_iter()
        .map(|(label, metric)| {
            format!(
                "metric `{metric}`: label `{label}` has no stats tag, so it stays in the Prometheus name; \
                 add it to `extra_stat_tags` (Istio's extraStatTags)"
            )
        })
        .collect()
}

fn compile(tags: &[StatsTag]) -> Vec<(String, Regex)> {
    tags.iter().filter_map(|t| Regex::new(&t.regex).ok().map(|r| (t.tag_name.clone(), r))).collect()
}

/// Envoy's Prometheus name rule: anything but `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{s}")
    } else {
        s
    }
}

fn escape_value(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

fn labels(tags: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = tags.iter().map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape_value(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn format_bound(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{}", b as u64)
    } else {
        format!("{b}")
    }
}

pub fn render(stats: &[Stat], tags: &[StatsTag]) -> String {
    let rules = compile(tags);
    let mut out = String::new();
    for kind in [MetricType::Counter, MetricType::Gauge, MetricType::Histogram] {
        // Prometheus name -> (tags, stat) of each series in the family.
        type Series<'a> = Vec<(Vec<(String, String)>, &'a Stat)>;
        let mut families: BTreeMap<String, Series> = BTreeMap::new();
        for s in stats.iter().filter(|s| s.kind == kind) {
            let e = extract(&s.name, &rules);
            families.entry(e.name).or_default().push((e.tags, s));
        }
        for (name, mut series) in families {
            series.sort_by(|a, b| a.0.cmp(&b.0));
            let type_name = match kind {
                MetricType::Counter => "counter",
                MetricType::Gauge => "gauge",
                MetricType::Histogram => "histogram",
            };
            let _ = writeln!(out, "# TYPE {name} {type_name}");
            for (tags, stat) in series {
                if kind != MetricType::Histogram {
                    let _ = writeln!(out, "{name}{} {}", labels(&tags, None), stat.value);
                    continue;
                }
                for bound in DEFAULT_BUCKETS {
                    let count = stat.samples.iter().filter(|v| (envoy_bin_lower_edge(**v) as f64) <= bound).count();
                    let _ = writeln!(out, "{name}_bucket{} {count}", labels(&tags, Some(("le", &format_bound(bound)))));
                }
                let _ = writeln!(out, "{name}_bucket{} {}", labels(&tags, Some(("le", "+Inf"))), stat.samples.len());
                let sum: u64 = stat.samples.iter().sum();
                let _ = writeln!(out, "{name}_sum{} {sum}", labels(&tags, None));
                let _ = writeln!(out, "{name}_count{} {}", labels(&tags, None), stat.samples.len());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<(String, Regex)> {
        istio_default_stats_tags().into_iter().map(|t| (t.tag_name, Regex::new(&t.regex).unwrap())).collect()
    }

    #[test]
    fn istio_labels_are_extracted_in_bootstrap_order() {
        let e = extract("response_code=.=200;.;reporter=.=destination;.;istio_requests_total", &rules());
        assert_eq!(e.name, "istio_requests_total");
        assert_eq!(e.tags, vec![("reporter".into(), "destination".into()), ("response_code".into(), "200".into())]);
    }

    #[test]
    fn unextracted_labels_stay_in_the_sanitized_name() {
        let e = extract("custom=.=x;.;reporter=.=source;.;istio_requests_total", &rules());
        assert_eq!(e.name, "custom___x___istio_requests_total");
    }

    #[test]
    fn unextracted_labels_are_warned_once_per_label() {
        let stat = |name: &str| Stat { name: name.into(), kind: MetricType::Counter, value: 1, samples: vec![] };
        let stats = vec![
            stat("custom=.=x;.;reporter=.=source;.;istio_requests_total"),
            stat("custom=.=y;.;reporter=.=source;.;istio_requests_total"),
            stat("reporter=.=source;.;istio_requests_total"),
            stat("plain_counter"),
        ];
        let w = unextracted_label_warnings(&stats, &istio_default_stats_tags());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("label `custom`") && w[0].contains("extra_stat_tags"), "{w:?}");
        // With the label's rule added, nothing to warn about, and the label
        // is extracted.
        let mut tags = istio_default_stats_tags();
        tags.push(istio_tag("custom"));
        assert!(unextracted_label_warnings(&stats, &tags).is_empty());
        assert!(render(&stats, &tags).contains("istio_requests_total{reporter=\"source\",custom=\"x\"} 1\n"));
    }

    #[test]
    fn renders_counters_and_histograms() {
        let stats = vec![
            Stat {
                name: "reporter=.=destination;.;istio_requests_total".into(),
                kind: MetricType::Counter,
                value: 2,
                samples: vec![],
            },
            Stat { name: "lat".into(), kind: MetricType::Histogram, value: 0, samples: vec![3, 700] },
        ];
        let text = render(&stats, &istio_default_stats_tags());
        assert!(
            text.contains("# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"destination\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("lat_bucket{le=\"0.5\"} 0\n"), "{text}");
        assert!(text.contains("lat_bucket{le=\"5\"} 1\n"), "{text}");
        assert!(text.contains("lat_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("lat_sum{} 703\nlat_count{} 2\n"), "{text}");
    }

    #[test]
    fn histogram_buckets_follow_envoys_bins() {
        assert_eq!(envoy_bin_lower_edge(0), 0);
        assert_eq!(envoy_bin_lower_edge(7), 7);
        assert_eq!(envoy_bin_lower_edge(99), 99);
        assert_eq!(envoy_bin_lower_edge(102), 100);
        assert_eq!(envoy_bin_lower_edge(1_234), 1_200);
        assert_eq!(envoy_bin_lower_edge(u64::MAX), 18_000_000_000_000_000_000);
        let stats = vec![Stat { name: "size".into(), kind: MetricType::Histogram, value: 0, samples: vec![102, 111] }];
        let text = render(&stats, &[]);
        assert!(text.contains("size_bucket{le=\"100\"} 1\n"), "102 counts under 100, as in Envoy: {text}");
        assert!(text.contains("size_bucket{le=\"250\"} 2\n"), "{text}");
    }
}
