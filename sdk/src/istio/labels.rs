//! Istio's standard labels and per-metric label plans.

pub use meshwasm_wire::istio::STANDARD_LABELS;

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
    pub fn labels(&self) -> impl Iterator<Item = (&str, LabelSource)> + Clone + '_ {
        self.slots.iter().filter_map(|(n, s)| s.map(|s| (n.as_str(), s)))
    }

    pub fn len(&self) -> usize {
        self.labels().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
