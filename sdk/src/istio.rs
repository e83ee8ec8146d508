//! Istio's metric vocabulary, shared by plugins that emit Istio-compatible
//! metrics (`stats`) or read Istio's workload facts.
//!
//! * Stat names carry their labels: `label=.=value;.;label2=.=value2;.;istio_requests_total`
//!   ([`StatNaming`]); Envoy's `stats_tags` regexes (Istio's bootstrap lists one per
//!   standard label, e.g. `(reporter=\.=(.*?);\.;)`) turn them into Prometheus labels.
//! * The standard labels in the order Istio's `/stats/prometheus` shows them
//!   ([`Label`], [`STANDARD_LABELS`]), and per-metric label plans with Istio's
//!   override rules ([`LabelPlan`]).
//! * A per-metric cache from label values to metric ids with a cap on
//!   distinct label sets ([`SeriesCache`]).
//! * Workload facts from node metadata or a peer's metadata ([`WorkloadInfo`]),
//!   the peer-metadata header of Istio's metadata exchange
//!   ([`decode_peer_metadata_header`]), principals and their namespaces.
//! * Envoy's response-flag short strings ([`response_flags_short_string`]).

use crate::attributes::AttrValue;
use std::collections::HashMap;

/// Separator between `label=.=value` fields (Istio's default).
pub const DEFAULT_FIELD_SEPARATOR: &str = ";.;";
/// Separator between a label and its value (Istio's default).
pub const DEFAULT_VALUE_SEPARATOR: &str = "=.=";
/// Prefix of every metric name (`istio_requests_total`).
pub const DEFAULT_STAT_PREFIX: &str = "istio";
/// Istio's value for a fact nobody knows.
pub const UNKNOWN: &str = "unknown";
/// Istio's canonical revision when a workload has none.
pub const LATEST: &str = "latest";
/// Every label value of the series that takes label sets past a cap.
pub const OVERFLOW: &str = "overflow";

/// The label key of the canonical service name.
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
/// The label key of the canonical service revision.
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";

pub use meshwasm_wire::istio::{PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER, STANDARD_LABELS};

macro_rules! labels {
    ($($variant:ident,)*) => {
        /// Istio's standard labels, in the order Istio's bootstrap lists
        /// their tag regexes, which is the order `/stats/prometheus` prints
        /// them in. Each indexes its name in the one list of names,
        /// [`STANDARD_LABELS`] (from `meshwasm_wire::istio`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Label { $($variant,)* }

        impl Label {
            /// Every standard label, in order.
            pub const ALL: &'static [Label] = &[$(Label::$variant,)*];
        }
    };
}

labels! {
    Reporter,
    SourceWorkload,
    SourceCanonicalService,
    SourceCanonicalRevision,
    SourceWorkloadNamespace,
    SourcePrincipal,
    SourceApp,
    SourceVersion,
    SourceCluster,
    DestinationWorkload,
    DestinationWorkloadNamespace,
    DestinationPrincipal,
    DestinationApp,
    DestinationVersion,
    DestinationService,
    DestinationCanonicalService,
    DestinationCanonicalRevision,
    DestinationServiceName,
    DestinationServiceNamespace,
    DestinationCluster,
    RequestProtocol,
    ResponseCode,
    GrpcResponseStatus,
    ResponseFlags,
    ConnectionSecurityPolicy,
}

// One variant per name, in the same order (checked by the tests by name).
const _: () = assert!(Label::ALL.len() == STANDARD_LABELS.len());

impl Label {
    /// The label's name (`source_workload`).
    pub fn name(self) -> &'static str {
        STANDARD_LABELS.get(self as usize).copied().unwrap_or_default()
    }

    /// The standard label named `name`.
    pub fn from_name(name: &str) -> Option<Label> {
        let i = STANDARD_LABELS.iter().position(|n| *n == name)?;
        Label::ALL.get(i).copied()
    }
}

/// Labels of the HTTP metrics: all 25.
pub const HTTP_LABELS: &[Label] = Label::ALL;
/// Labels of the gRPC message counters: the reporter and the peer labels
/// (`source_*`, `destination_*`), without protocol, code, flags or policy.
pub const PEER_LABELS: &[Label] = {
    let all = Label::ALL;
    // reporter .. destination_cluster
    let (peer, _) = all.split_at(Label::DestinationCluster as usize + 1);
    peer
};
/// Labels of the TCP metrics: all but `response_code` and `grpc_response_status`.
pub const TCP_LABELS: &[Label] = &[
    Label::Reporter,
    Label::SourceWorkload,
    Label::SourceCanonicalService,
    Label::SourceCanonicalRevision,
    Label::SourceWorkloadNamespace,
    Label::SourcePrincipal,
    Label::SourceApp,
    Label::SourceVersion,
    Label::SourceCluster,
    Label::DestinationWorkload,
    Label::DestinationWorkloadNamespace,
    Label::DestinationPrincipal,
    Label::DestinationApp,
    Label::DestinationVersion,
    Label::DestinationService,
    Label::DestinationCanonicalService,
    Label::DestinationCanonicalRevision,
    Label::DestinationServiceName,
    Label::DestinationServiceNamespace,
    Label::DestinationCluster,
    Label::RequestProtocol,
    Label::ResponseFlags,
    Label::ConnectionSecurityPolicy,
];

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

// ------------------------------------------------------------------ label plans

/// Where a label's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelSource {
    /// A standard label computed by the plugin.
    Standard(Label),
    /// A dimension expression (an index into the plugin's expressions).
    Dimension(usize),
}

/// The labels of one metric, in stat-name order, built the way Istio's stats
/// filter builds them: the metric's standard labels first (in [`Label`]
/// order), `tags_to_remove` removes a label, a dimension named like an
/// existing label (even a removed one) replaces its value and keeps its
/// position, any other dimension is appended. Overrides are applied entry by
/// entry, and within an entry removals first, then dimensions sorted by key,
/// so later entries win.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelPlan {
    /// `(name, source)`; `None` = removed.
    slots: Vec<(String, Option<LabelSource>)>,
    standard_metric: bool,
}

impl LabelPlan {
    /// A standard metric's plan: its standard labels.
    pub fn standard(labels: &[Label]) -> Self {
        LabelPlan {
            slots: labels.iter().map(|l| (l.name().to_string(), Some(LabelSource::Standard(*l)))).collect(),
            standard_metric: true,
        }
    }

    /// A custom metric's plan: no labels until dimensions add them.
    pub fn custom() -> Self {
        LabelPlan { slots: Vec::new(), standard_metric: false }
    }

    /// Removes a label; a label the plan does not have is ignored.
    pub fn remove(&mut self, name: &str) {
        if let Some(slot) = self.slots.iter_mut().find(|(n, _)| n == name) {
            slot.1 = None;
        }
    }

    /// Sets a label from a dimension expression. On a standard metric, a
    /// dimension named like a standard label the metric does not carry
    /// (e.g. `response_code` on a gRPC message counter) is ignored, as in
    /// Istio; on custom metrics every dimension becomes a label.
    pub fn set_dimension(&mut self, name: &str, expression: usize) {
        if let Some(slot) = self.slots.iter_mut().find(|(n, _)| n == name) {
            slot.1 = Some(LabelSource::Dimension(expression));
        } else if !(self.standard_metric && Label::from_name(name).is_some()) {
            self.slots.push((name.to_string(), Some(LabelSource::Dimension(expression))));
        }
    }

    /// Applies one override entry: removals, then dimensions in key order.
    /// `dimensions` yields `(label, expression index)`.
    pub fn apply<'a, R, D>(&mut self, remove: R, dimensions: D)
    where
        R: IntoIterator<Item = &'a str>,
        D: IntoIterator<Item = (&'a str, usize)>,
    {
        for r in remove {
            self.remove(r);
        }
        let mut dims: Vec<(&str, usize)> = dimensions.into_iter().collect();
        dims.sort_by(|a, b| a.0.cmp(b.0));
        for (name, expr) in dims {
            self.set_dimension(name, expr);
        }
    }

    /// The labels that remain, in stat-name order.
    pub fn labels(&self) -> impl Iterator<Item = (&str, LabelSource)> + '_ {
        self.slots.iter().filter_map(|(n, s)| s.map(|s| (n.as_str(), s)))
    }

    pub fn len(&self) -> usize {
        self.labels().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ------------------------------------------------------------------ series cache

/// What a [`SeriesCache`] lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesLookup {
    /// The label set has a metric id.
    Hit(u32),
    /// A new label set, and there is room for it.
    Miss,
    /// A new label set past the cap: record into the overflow series.
    Full,
}

/// Metric ids of one metric by label set (the [`StatNaming::series_key`] of
/// its values), so `proxy_define_metric` runs once per series, with an
/// optional cap on the number of distinct label sets. Past the cap, new
/// label sets go to one overflow series (every label `overflow`).
#[derive(Clone, Debug, Default)]
pub struct SeriesCache {
    ids: HashMap<String, u32>,
    /// 0 = no cap.
    max_series: usize,
    overflow: Option<u32>,
}

impl SeriesCache {
    /// `max_series` 0 means unlimited.
    pub fn new(max_series: usize) -> Self {
        SeriesCache { ids: HashMap::new(), max_series, overflow: None }
    }

    pub fn lookup(&self, key: &str) -> SeriesLookup {
        match self.ids.get(key) {
            Some(id) => SeriesLookup::Hit(*id),
            None if self.max_series != 0 && self.ids.len() >= self.max_series => SeriesLookup::Full,
            None => SeriesLookup::Miss,
        }
    }

    pub fn insert(&mut self, key: String, id: u32) {
        self.ids.insert(key, id);
    }

    pub fn overflow_id(&self) -> Option<u32> {
        self.overflow
    }

    pub fn set_overflow_id(&mut self, id: u32) {
        self.overflow = Some(id);
    }

    /// Distinct label sets with an id (the overflow series not counted).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of the series for `key`: cached, or defined with
    /// `define(stat_name_is_overflow)` and cached. `define(false)` defines
    /// the regular series, `define(true)` the overflow one. Returns the id
    /// and whether the value went to the overflow series; None when the
    /// host refused to define the metric (nothing is cached then).
    pub fn resolve(&mut self, key: &str, define: impl FnOnce(bool) -> Option<u32>) -> Option<(u32, bool)> {
        match self.lookup(key) {
            SeriesLookup::Hit(id) => Some((id, false)),
            SeriesLookup::Miss => {
                let id = define(false)?;
                self.insert(key.to_string(), id);
                Some((id, false))
            }
            SeriesLookup::Full => {
                if let Some(id) = self.overflow {
                    return Some((id, true));
                }
                let id = define(true)?;
                self.overflow = Some(id);
                Some((id, true))
            }
        }
    }
}

// ------------------------------------------------------------------ workloads

/// What Istio knows about a workload, from its proxy's node metadata (the
/// local one, `xds.node.metadata`) or from a peer's exchanged metadata.
/// Empty strings are facts nobody provided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// `NAME`: the pod name.
    pub name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `WORKLOAD_NAME`: the deployment (or other owner) name.
    pub workload_name: String,
    /// `LABELS.app`.
    pub app: String,
    /// `LABELS.version`.
    pub version: String,
    /// `LABELS["service.istio.io/canonical-name"]`.
    pub canonical_service: String,
    /// `LABELS["service.istio.io/canonical-revision"]`.
    pub canonical_revision: String,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// `MESH_ID`.
    pub mesh_id: String,
    /// `ISTIO_VERSION`.
    pub istio_version: String,
}

impl WorkloadInfo {
    /// From node metadata: `field` reads a top-level string (`NAMESPACE`),
    /// `label` a key of `LABELS`.
    pub fn from_metadata(field: impl Fn(&str) -> Option<String>, label: impl Fn(&str) -> Option<String>) -> Self {
        let f = |k: &str| field(k).unwrap_or_default();
        let l = |k: &str| label(k).unwrap_or_default();
        WorkloadInfo {
            name: f("NAME"),
            namespace: f("NAMESPACE"),
            workload_name: f("WORKLOAD_NAME"),
            app: l("app"),
            version: l("version"),
            canonical_service: l(CANONICAL_NAME_LABEL),
            canonical_revision: l(CANONICAL_REVISION_LABEL),
            cluster_id: f("CLUSTER_ID"),
            mesh_id: f("MESH_ID"),
            istio_version: f("ISTIO_VERSION"),
        }
    }

    /// From node metadata as a struct value (a decoded
    /// `google.protobuf.Struct`). Non-string values are ignored.
    pub fn from_struct(metadata: &AttrValue) -> Self {
        let field = |k: &str| metadata.get(k).and_then(AttrValue::as_str).map(str::to_string);
        let labels = metadata.get("LABELS");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(AttrValue::as_str).map(str::to_string);
        Self::from_metadata(field, label)
    }

    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == WorkloadInfo::default()
    }
}

/// `value`, or `unknown` when it is empty.
pub fn or_unknown(value: &str) -> &str {
    if value.is_empty() {
        UNKNOWN
    } else {
        value
    }
}

/// A canonical revision, or `latest` when it is empty.
pub fn or_latest(value: &str) -> &str {
    if value.is_empty() {
        LATEST
    } else {
        value
    }
}

/// The namespace in a SPIFFE principal
/// (`spiffe://cluster.local/ns/<namespace>/sa/<account>`), as Istio reads
/// it: the text after `/ns/` up to the next `/`.
pub fn principal_namespace(principal: &str) -> Option<&str> {
    let start = principal.find("/ns/")? + 4;
    let rest = &principal[start..];
    let ns = rest.split('/').next().unwrap_or("");
    if ns.is_empty() {
        None
    } else {
        Some(ns)
    }
}

// ------------------------------------------------------------------ peer metadata

/// Decodes Istio's `x-envoy-peer-metadata` header: base64 of the peer's node
/// metadata serialized as a `google.protobuf.Struct`
/// ([`meshwasm_wire::istio::decode_peer_metadata`]). None when it is not
/// valid base64 or not a Struct.
pub fn decode_peer_metadata_header(value: &[u8]) -> Option<WorkloadInfo> {
    let metadata = meshwasm_wire::istio::decode_peer_metadata(value)?;
    Some(WorkloadInfo::from_struct(&crate::property::struct_to_attr(&metadata)))
}

/// A serialized `google.protobuf.Struct` as a map value
/// ([`crate::property::decode_struct`]).
pub use crate::property::decode_struct;

// ------------------------------------------------------------------ request facts

/// Envoy's short names of the response flags, by bit of the `response.flags`
/// bitmask (Envoy's `CoreResponseFlag` order).
pub const RESPONSE_FLAG_NAMES: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
];

/// The `response_flags` label: the short names of the set flags joined by
/// `,` (in bit order), `-` when none. Unknown bits are ignored.
pub fn response_flags_short_string(flags: u64) -> String {
    let names: Vec<&str> =
        RESPONSE_FLAG_NAMES.iter().enumerate().filter(|(bit, _)| flags & (1u64 << bit) != 0).map(|(_, n)| *n).collect();
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(",")
    }
}

/// Envoy's gRPC request test on `content-type`: `application/grpc`, alone or
/// followed by `+` or `;` (e.g. `application/grpc+proto`).
pub fn is_grpc_content_type(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    match content_type.strip_prefix(GRPC) {
        Some(rest) => rest.is_empty() || rest[0] == b'+' || rest[0] == b';',
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_in_istio_prometheus_order() {
        assert_eq!(STANDARD_LABELS.len(), 25);
        assert_eq!(STANDARD_LABELS[0], "reporter");
        assert_eq!(Label::SourceCluster.name(), "source_cluster");
        assert_eq!(
            STANDARD_LABELS[20..],
            [
                "request_protocol",
                "response_code",
                "grpc_response_status",
                "response_flags",
                "connection_security_policy"
            ]
        );
        for (i, l) in Label::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
            assert_eq!(Label::from_name(l.name()), Some(*l));
            // The variant is its name in CamelCase: the enum and the wire
            // crate's list agree label by label.
            let camel: String = l.name().split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
            assert_eq!(format!("{l:?}"), camel);
        }
        assert_eq!(Label::from_name("request_operation"), None);
        assert_eq!(PEER_LABELS.len(), 20);
        assert_eq!(PEER_LABELS.last(), Some(&Label::DestinationCluster));
        assert_eq!(TCP_LABELS.len(), 23);
        assert!(!TCP_LABELS.contains(&Label::ResponseCode) && !TCP_LABELS.contains(&Label::GrpcResponseStatus));
    }

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

    #[test]
    fn plans_follow_istio_override_rules() {
        let mut p = LabelPlan::standard(HTTP_LABELS);
        // Removal, an override of a standard label, and two additions given
        // out of order: additions come last, sorted by key.
        p.apply(["request_protocol"], [("source_mesh_id", 1), ("upstream_proxy_version", 0), ("response_code", 2)]);
        let labels: Vec<(&str, LabelSource)> = p.labels().collect();
        assert_eq!(labels.len(), 26);
        assert!(!labels.iter().any(|(n, _)| *n == "request_protocol"));
        let code = labels.iter().position(|(n, _)| *n == "response_code").unwrap();
        assert_eq!(labels[code], ("response_code", LabelSource::Dimension(2)));
        assert_eq!(labels[code - 1].0, "destination_cluster", "override keeps its position");
        assert_eq!(labels[24], ("source_mesh_id", LabelSource::Dimension(1)));
        assert_eq!(labels[25], ("upstream_proxy_version", LabelSource::Dimension(0)));
        // A later entry restores a removed label at its place.
        p.apply([], [("request_protocol", 3)]);
        let labels: Vec<&str> = p.labels().map(|(n, _)| n).collect();
        assert_eq!(labels[20], "request_protocol");
        // A standard label the metric lacks is not added.
        let mut m = LabelPlan::standard(PEER_LABELS);
        m.apply([], [("response_code", 0)]);
        assert_eq!(m.len(), 20);
        // Custom metrics get every dimension.
        let mut c = LabelPlan::custom();
        assert!(c.is_empty());
        c.apply(["nothing"], [("response_code", 0), ("a", 1)]);
        assert_eq!(c.labels().map(|(n, _)| n).collect::<Vec<_>>(), ["a", "response_code"]);
    }

    #[test]
    fn series_cache_defines_once_and_caps() {
        let mut c = SeriesCache::new(2);
        let mut defined = Vec::new();
        let mut next = 10;
        let mut define = |overflow: bool| {
            defined.push(overflow);
            next += 1;
            Some(next)
        };
        assert_eq!(c.resolve("a", &mut define), Some((11, false)));
        assert_eq!(c.resolve("a", &mut define), Some((11, false)));
        assert_eq!(c.resolve("b", &mut define), Some((12, false)));
        assert_eq!(c.lookup("c"), SeriesLookup::Full);
        assert_eq!(c.resolve("c", &mut define), Some((13, true)));
        assert_eq!(c.resolve("d", &mut define), Some((13, true)));
        assert_eq!(c.resolve("b", &mut define), Some((12, false)));
        assert_eq!(defined, [false, false, true]);
        assert_eq!(c.len(), 2);
        let mut unlimited = SeriesCache::new(0);
        for i in 0..100 {
            unlimited.insert(i.to_string(), i);
        }
        assert_eq!(unlimited.lookup("new"), SeriesLookup::Miss);
        assert_eq!(SeriesCache::new(1).resolve("x", |_| None), None);
    }

    #[test]
    fn workload_facts_and_fallbacks() {
        let meta = AttrValue::Map(vec![
            ("NAME".into(), AttrValue::String("reviews-v1-abc".into())),
            ("NAMESPACE".into(), AttrValue::String("default".into())),
            ("WORKLOAD_NAME".into(), AttrValue::String("reviews-v1".into())),
            ("CLUSTER_ID".into(), AttrValue::String("Kubernetes".into())),
            ("MESH_ID".into(), AttrValue::String("mesh1".into())),
            ("ISTIO_VERSION".into(), AttrValue::String("1.16.0".into())),
            (
                "LABELS".into(),
                AttrValue::Map(vec![
                    ("app".into(), AttrValue::String("reviews".into())),
                    ("version".into(), AttrValue::String("v1".into())),
                    (CANONICAL_NAME_LABEL.into(), AttrValue::String("reviews".into())),
                ]),
            ),
            ("PLATFORM".into(), AttrValue::Double(1.0)),
        ]);
        let w = WorkloadInfo::from_struct(&meta);
        assert_eq!(w.workload_name, "reviews-v1");
        assert_eq!(w.app, "reviews");
        assert_eq!(w.canonical_service, "reviews");
        assert_eq!(w.canonical_revision, "");
        assert_eq!(or_latest(&w.canonical_revision), "latest");
        assert_eq!(or_unknown(""), "unknown");
        assert_eq!(or_unknown("x"), "x");
        assert!(WorkloadInfo::from_struct(&AttrValue::Null).is_empty());
        assert_eq!(principal_namespace("spiffe://cluster.local/ns/foo/sa/bar"), Some("foo"));
        assert_eq!(principal_namespace("spiffe://cluster.local/ns/foo"), Some("foo"));
        assert_eq!(principal_namespace("spiffe://cluster.local/sa/bar"), None);
        assert_eq!(principal_namespace("spiffe://x/ns//sa"), None);
    }

    #[test]
    fn peer_metadata_header_decodes() {
        use meshwasm_wire::istio::encode_peer_metadata;
        use meshwasm_wire::protobuf::{encode_json_struct, struct_from_json};
        let serde_json::Value::Object(meta) = serde_json::json!({
            "WORKLOAD_NAME": "productpage-v1",
            "NAMESPACE": "bookinfo",
            "LABELS": {"app": "productpage", CANONICAL_REVISION_LABEL: "v1"},
            "N": 3.5,
            "L": ["x"],
            "B": true,
        }) else {
            panic!("an object")
        };
        let header = encode_peer_metadata(&struct_from_json(&meta));
        let w = decode_peer_metadata_header(header.as_bytes()).expect("decodes");
        assert_eq!(w.workload_name, "productpage-v1");
        assert_eq!(w.namespace, "bookinfo");
        assert_eq!(w.app, "productpage");
        assert_eq!(w.canonical_revision, "v1");
        // Unpadded and URL-safe forms decode too; garbage does not panic.
        assert!(decode_peer_metadata_header(header.trim_end_matches('=').as_bytes()).is_some());
        for bad in [&b"!!!!"[..], b"a", b"ab=c", b"abc===", b"\xff\xfe", b"AAAA////"] {
            assert_eq!(decode_peer_metadata_header(bad), None, "{bad:?}");
        }
        // Truncated or absurd protobuf is rejected, not trusted.
        let bytes = encode_json_struct(&meta);
        assert_eq!(decode_struct(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_struct(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        // A repeated key: the last value wins (this module kept both before
        // it used the wire crate).
        let twice = [
            encode_json_struct(&serde_json::Map::from_iter([("NAMESPACE".to_string(), "a".into())])),
            encode_json_struct(&serde_json::Map::from_iter([("NAMESPACE".to_string(), "b".into())])),
        ]
        .concat();
        let header = meshwasm_wire::istio::base64_encode(&twice);
        assert_eq!(decode_peer_metadata_header(header.as_bytes()).map(|w| w.namespace), Some("b".to_string()));
    }

    #[test]
    fn response_flags_and_grpc() {
        assert_eq!(response_flags_short_string(0), "-");
        assert_eq!(response_flags_short_string(0x2), "UH");
        assert_eq!(response_flags_short_string(0x20 | 0x4000), "UF,DC");
        assert_eq!(response_flags_short_string(1 << 29), "UDO");
        assert_eq!(response_flags_short_string(1 << 40), "-");
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"application/grpc;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
    }
}
