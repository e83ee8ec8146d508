//! The standard labels: each of Istio's 25 label values for a request or a
//! connection, from its [`RequestFacts`], the reporter and this proxy's
//! workload (Istio's per-reporter rules and fallbacks, docs/stats.md).

use crate::facts::{Reporter, RequestFacts};
use crate::metrics::{Expression, Stats};
use meshwasm_sdk::istio::{
    or_latest, or_unknown, principal_namespace, response_flags_short_string, Label, STANDARD_LABELS, UNKNOWN,
};
use std::borrow::Cow;

/// Clusters whose name is the service name (Istio's passthrough and
/// blackhole clusters).
const PASSTHROUGH_CLUSTERS: &[&str] = &[
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
];

impl<E: Expression> Stats<E> {
    /// The 25 standard label values of a request, in [`Label`] order.
    pub fn standard_values<'a>(&'a self, f: &'a RequestFacts) -> Vec<Cow<'a, str>> {
        let mut v: Vec<Cow<str>> = vec![Cow::Borrowed(UNKNOWN); STANDARD_LABELS.len()];
        let mut set = |l: Label, value: Cow<'a, str>| v[l as usize] = value;
        let b = |s: &'a str| Cow::Borrowed(or_unknown(s));
        set(L::Reporter, Cow::Borrowed(self.reporter.label()));

        // Destination service: the host header (unless disabled), refined
        // by the upstream cluster.
        let mut service_host: &str = match (&f.host, self.disable_host_header_fallback) {
            (Some(h), false) => h,
            _ => "",
        };
        let mut service_name: Cow<str> = Cow::Borrowed(service_host);
        let mut service_namespace: &str = "";
        if f.route_name == "block_all" {
            service_name = Cow::Borrowed("BlackHoleCluster");
        } else if f.route_name == "allow_any" {
            service_name = Cow::Borrowed("PassthroughCluster");
        } else if PASSTHROUGH_CLUSTERS.contains(&f.cluster_name.as_str()) {
            service_name = Cow::Borrowed(&f.cluster_name);
        } else if let Some(s) = &f.cluster_service {
            if !s.host.is_empty() {
                service_host = &s.host;
            }
            service_namespace = &s.namespace;
            service_name = if s.name.is_empty() {
                Cow::Borrowed(service_host.split('.').next().unwrap_or(""))
            } else {
                Cow::Borrowed(&s.name)
            };
        }

        let (peer, peer_san, local_san) = if self.reporter.is_server() {
            (f.downstream_peer.as_ref(), f.downstream_peer_san.as_str(), f.downstream_local_san.as_str())
        } else {
            (f.upstream_peer.as_ref(), f.upstream_peer_san.as_str(), f.upstream_local_san.as_str())
        };
        let empty = &self.empty;
        let peer_info = peer.unwrap_or(empty);
        let peer_namespace = principal_namespace(peer_san).unwrap_or(&peer_info.namespace);
        let local = &self.local;

        use Label as L;
        match self.reporter {
            Reporter::Destination | Reporter::Waypoint => {
                set(L::SourceWorkload, b(&peer_info.workload_name));
                set(L::SourceCanonicalService, b(&peer_info.canonical_service));
                set(L::SourceCanonicalRevision, Cow::Borrowed(or_latest(&peer_info.canonical_revision)));
                set(L::SourceWorkloadNamespace, b(peer_namespace));
                set(L::SourcePrincipal, b(peer_san));
                set(L::SourceApp, b(&peer_info.app));
                set(L::SourceVersion, b(&peer_info.version));
                set(L::SourceCluster, b(&peer_info.cluster_id));
            }
            Reporter::Source => {
                set(L::SourceWorkload, b(&local.workload_name));
                set(L::SourceCanonicalService, b(&local.canonical_service));
                set(L::SourceCanonicalRevision, Cow::Borrowed(or_latest(&local.canonical_revision)));
                set(L::SourceWorkloadNamespace, b(&local.namespace));
                set(L::SourcePrincipal, b(local_san));
                set(L::SourceApp, b(&local.app));
                set(L::SourceVersion, b(&local.version));
                set(L::SourceCluster, b(&local.cluster_id));
            }
        }
        match self.reporter {
            Reporter::Destination => {
                set(L::DestinationWorkload, b(&local.workload_name));
                set(L::DestinationWorkloadNamespace, b(&local.namespace));
                set(L::DestinationPrincipal, b(local_san));
                set(L::DestinationApp, b(&local.app));
                set(L::DestinationVersion, b(&local.version));
                let canonical = or_unknown(&local.canonical_service);
                set(
                    L::DestinationService,
                    Cow::Borrowed(if service_host.is_empty() { canonical } else { service_host }),
                );
                set(L::DestinationCanonicalService, Cow::Borrowed(canonical));
                set(L::DestinationCanonicalRevision, Cow::Borrowed(or_latest(&local.canonical_revision)));
                set(
                    L::DestinationServiceName,
                    if service_name.is_empty() { Cow::Borrowed(canonical) } else { service_name },
                );
                set(L::DestinationServiceNamespace, b(&local.namespace));
                set(L::DestinationCluster, b(&local.cluster_id));
            }
            Reporter::Source | Reporter::Waypoint => {
                // The client's peer, or the waypoint's endpoint: the upstream.
                let dest = f.upstream_peer.as_ref().unwrap_or(empty);
                let (dest_san, dest_ns) = if self.reporter == Reporter::Source {
                    (peer_san, peer_namespace)
                } else {
                    let san = f.upstream_peer_san.as_str();
                    (san, principal_namespace(san).unwrap_or(&dest.namespace))
                };
                set(L::DestinationWorkload, b(&dest.workload_name));
                set(L::DestinationWorkloadNamespace, b(dest_ns));
                set(L::DestinationPrincipal, b(dest_san));
                set(L::DestinationApp, b(&dest.app));
                set(L::DestinationVersion, b(&dest.version));
                set(L::DestinationService, b(service_host));
                set(L::DestinationCanonicalService, b(&dest.canonical_service));
                set(
                    L::DestinationCanonicalRevision,
                    Cow::Borrowed(if self.reporter == Reporter::Source {
                        or_latest(&dest.canonical_revision)
                    } else {
                        or_unknown(&dest.canonical_revision)
                    }),
                );
                set(
                    L::DestinationServiceName,
                    if service_name.is_empty() { Cow::Borrowed(UNKNOWN) } else { service_name },
                );
                let ns = if !service_namespace.is_empty() {
                    service_namespace
                } else if self.reporter == Reporter::Source {
                    dest_ns
                } else {
                    ""
                };
                set(L::DestinationServiceNamespace, b(ns));
                set(L::DestinationCluster, b(&dest.cluster_id));
            }
        }
        set(
            L::RequestProtocol,
            Cow::Borrowed(match (f.tcp, f.grpc) {
                (true, _) => "tcp",
                (false, true) => "grpc",
                (false, false) => "http",
            }),
        );
        set(L::ResponseCode, Cow::Owned(f.response_code.unwrap_or(0).to_string()));
        set(
            L::GrpcResponseStatus,
            match (f.grpc, f.grpc_status) {
                (true, Some(s)) => Cow::Owned(s.to_string()),
                _ => Cow::Borrowed(""),
            },
        );
        set(L::ResponseFlags, Cow::Owned(response_flags_short_string(f.response_flags)));
        set(
            L::ConnectionSecurityPolicy,
            Cow::Borrowed(match self.reporter {
                Reporter::Source => UNKNOWN,
                _ if !peer_san.is_empty() && !local_san.is_empty() => "mutual_tls",
                _ => "none",
            }),
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricKind;
    use crate::facts::ClusterService;
    use crate::metrics::{OVERFLOW_COUNTER, TRUNCATED_COUNTER};
    use crate::testing::*;
    use meshwasm_sdk::istio::WorkloadInfo;

    #[test]
    fn server_side_labels() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.downstream_peer = Some(WorkloadInfo {
            workload_name: "productpage-v1".into(),
            namespace: "default".into(),
            app: "productpage".into(),
            canonical_service: "productpage".into(),
            ..Default::default()
        });
        f.downstream_peer_san = "spiffe://cluster.local/ns/bookinfo/sa/productpage".into();
        f.downstream_local_san = "spiffe://cluster.local/ns/default/sa/reviews".into();
        s.record_http(&f, &attrs("GET"), &mut sink);
        let name = sink.one("istio_requests_total").to_string();
        let labels = labels_of(&name);
        let expected = [
            ("reporter", "destination"),
            ("source_workload", "productpage-v1"),
            ("source_canonical_service", "productpage"),
            ("source_canonical_revision", "latest"),
            ("source_workload_namespace", "bookinfo"),
            ("source_principal", "spiffe://cluster.local/ns/bookinfo/sa/productpage"),
            ("source_app", "productpage"),
            ("source_version", "unknown"),
            ("source_cluster", "unknown"),
            ("destination_workload", "reviews-v1"),
            ("destination_workload_namespace", "default"),
            ("destination_principal", "spiffe://cluster.local/ns/default/sa/reviews"),
            ("destination_app", "reviews"),
            ("destination_version", "v1"),
            ("destination_service", "reviews:9080"),
            ("destination_canonical_service", "reviews"),
            ("destination_canonical_revision", "v1"),
            ("destination_service_name", "reviews:9080"),
            ("destination_service_namespace", "default"),
            ("destination_cluster", "Kubernetes"),
            ("request_protocol", "http"),
            ("response_code", "200"),
            ("grpc_response_status", ""),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
        ];
        let got: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
        assert_eq!(sink.counter(&name), Some(1));
        let d = sink.names.iter().position(|(_, n)| n.ends_with("istio_request_duration_milliseconds")).unwrap();
        assert_eq!(sink.values[&(d as u32)], [7]);
        assert_eq!(sink.names[d].0, MetricKind::Histogram);
        // No gRPC: no message counters.
        assert!(!sink.names.iter().any(|(_, n)| n.contains("messages_total")));
        // Same labels again: no new definitions.
        let before = sink.names.len();
        s.record_http(&f, &attrs("GET"), &mut sink);
        assert_eq!(sink.names.len(), before);
        assert_eq!(sink.counter(&name), Some(2));
    }

    #[test]
    fn client_side_and_fallbacks() {
        let s = stats(r#"{"disable_host_header_fallback": true}"#, Reporter::Source);
        let mut f = get_request();
        f.response_code = None;
        f.response_flags = 0x2;
        let v = s.standard_values(&f);
        let at = |l: Label| v[l as usize].as_ref().to_string();
        assert_eq!(at(Label::Reporter), "source");
        assert_eq!(at(Label::SourceWorkload), "reviews-v1");
        assert_eq!(at(Label::SourcePrincipal), "unknown");
        assert_eq!(at(Label::DestinationWorkload), "unknown");
        assert_eq!(at(Label::DestinationCanonicalRevision), "latest");
        assert_eq!(at(Label::DestinationService), "unknown", "host header fallback disabled");
        assert_eq!(at(Label::ResponseCode), "0");
        assert_eq!(at(Label::ResponseFlags), "UH");
        assert_eq!(at(Label::ConnectionSecurityPolicy), "unknown");
        // Cluster metadata names the service.
        f.cluster_service = Some(ClusterService {
            host: "reviews.default.svc.cluster.local".into(),
            name: String::new(),
            namespace: "default".into(),
        });
        let v = s.standard_values(&f);
        assert_eq!(v[Label::DestinationService as usize], "reviews.default.svc.cluster.local");
        assert_eq!(v[Label::DestinationServiceName as usize], "reviews");
        assert_eq!(v[Label::DestinationServiceNamespace as usize], "default");
        f.cluster_name = "PassthroughCluster".into();
        assert_eq!(s.standard_values(&f)[Label::DestinationServiceName as usize], "PassthroughCluster");
        // Plaintext on the server side: none; waypoint reporter label.
        let w = stats("{}", Reporter::Waypoint);
        let req = get_request();
        let v = w.standard_values(&req);
        assert_eq!(v[Label::Reporter as usize], "waypoint");
        assert_eq!(v[Label::ConnectionSecurityPolicy as usize], "none");
        assert_eq!(v[Label::DestinationCanonicalRevision as usize], "unknown");
        assert_eq!(v[Label::DestinationService as usize], "reviews:9080");
        // Server side without a host: the canonical service.
        let d = stats("{}", Reporter::Destination);
        let mut f = get_request();
        f.host = None;
        assert_eq!(d.standard_values(&f)[Label::DestinationService as usize], "reviews");
    }

    #[test]
    fn forged_values_stay_in_their_label() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.host = Some("evil;.;response_code=.=500".into());
        s.record_http(&f, &attrs("GET"), &mut sink);
        let labels = labels_of(sink.one("istio_requests_total"));
        assert_eq!(labels.len(), 25);
        assert!(labels.contains(&("destination_service".into(), "evil_response_code_500".into())));
    }

    /// The issue's two forgeries: `Host: reviews;.` (a partial field
    /// separator at the value's end) and a peer workload name with a
    /// newline. Each value stays in its own label, and the stat name still
    /// ends in the metric's name after exactly 25 fields.
    #[test]
    fn partial_separators_and_newlines_stay_in_their_label() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.host = Some("reviews;.".into());
        f.downstream_peer = Some(WorkloadInfo { workload_name: "evil\nname;.".into(), ..Default::default() });
        s.record_http(&f, &attrs("GET"), &mut sink);
        let name = sink.one("istio_requests_total").to_string();
        assert!(!name.contains('\n'), "{name:?}");
        let labels = labels_of(&name);
        assert_eq!(labels.len(), 25, "{name}");
        let value = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(value("destination_service"), "reviews;");
        assert_eq!(value("destination_service_name"), "reviews;");
        assert_eq!(value("source_workload"), "evil_name;");
        assert_eq!(sink.counter(TRUNCATED_COUNTER), None, "nothing was cut");
    }

    /// A 50 KB host is cut to `max_label_value_bytes` in both labels it
    /// feeds, and every cut value is counted.
    #[test]
    fn long_values_are_cut_and_counted() {
        let mut s = stats(r#"{"max_label_value_bytes": "16"}"#, Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.host = Some(format!("h1-{}", "x".repeat(50_000)));
        s.record_http(&f, &attrs("GET"), &mut sink);
        let labels = labels_of(sink.one("istio_requests_total"));
        let value = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(value("destination_service"), "h1-xxxxxxxxxxxxx");
        assert_eq!(value("destination_service_name"), "h1-xxxxxxxxxxxxx");
        assert_eq!(sink.counter(TRUNCATED_COUNTER), Some(2));
        // Hosts that differ only past the cut share the series.
        f.host = Some(format!("h1-{}y", "x".repeat(50_000)));
        s.record_http(&f, &attrs("GET"), &mut sink);
        assert_eq!(sink.counter(sink.one("istio_requests_total")), Some(2));
        assert_eq!(sink.counter(TRUNCATED_COUNTER), Some(4));
        // The default cut keeps everyday values whole.
        let d = stats("{}", Reporter::Destination);
        assert_eq!(d.naming().max_value_bytes, meshwasm_sdk::istio::DEFAULT_MAX_LABEL_VALUE_BYTES);
    }

    /// Past `max_series_bytes`, new label sets go to the overflow series
    /// (counted), known ones keep their series, and the bytes stay under
    /// the bound however many distinct hosts arrive.
    #[test]
    fn series_bytes_are_bounded() {
        let mut s = stats(r#"{"max_series_bytes": 20000}"#, Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        for i in 0..200 {
            f.host = Some(format!("host-{i}-{}", "x".repeat(400)));
            s.record_http(&f, &attrs("GET"), &mut sink);
            assert!(s.series_bytes() <= 20_000, "{} after {i}", s.series_bytes());
        }
        let requests: Vec<String> =
            sink.names.iter().map(|(_, n)| n).filter(|n| n.ends_with("istio_requests_total")).cloned().collect();
        let overflow = requests.iter().find(|n| n.contains("destination_service=.=overflow")).unwrap();
        let regular = requests.len() - 1;
        assert!((1..10).contains(&regular), "{regular} regular series");
        assert_eq!(sink.counter(overflow), Some(200 - regular as u64));
        // Each of the four HTTP metrics counts its own overflowed values
        // (the last series to fit may fit for one metric and not the next).
        let overflowed: usize = ["requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes"]
            .iter()
            .map(|m| {
                let full = format!("istio_{m}");
                let regular = sink.names.iter().filter(|(_, n)| n.ends_with(&full) && !n.contains("overflow")).count();
                200 - regular
            })
            .sum();
        assert!(overflowed >= 4 * (200 - regular) - 3);
        assert_eq!(sink.counter(OVERFLOW_COUNTER), Some(overflowed as u64));
        // A known label set still goes to its own series.
        f.host = Some(format!("host-0-{}", "x".repeat(400)));
        s.record_http(&f, &attrs("GET"), &mut sink);
        assert_eq!(sink.counter(&requests[0]), Some(2));
        // 0 = unbounded.
        let mut u = stats(r#"{"maxSeriesBytes": "0"}"#, Reporter::Destination);
        for i in 0..50 {
            f.host = Some(format!("host-{i}-{}", "x".repeat(400)));
            u.record_http(&f, &attrs("GET"), &mut sink);
        }
        assert!(u.series_bytes() > 20_000);
    }
}
