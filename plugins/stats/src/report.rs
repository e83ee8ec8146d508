//! Reports: a finished HTTP request ([`Stats::record_http`]) and a TCP
//! connection's periodic and final reports ([`Stats::report_tcp`], with the
//! per-connection state [`TcpConnection`]), as Istio's stats filter makes
//! them. The metrics and their series are in [`crate::metrics`].

use crate::facts::RequestFacts;
use crate::metrics::{Expression, MetricSink, MetricValue, StandardValue, Stats};
use meshwasm_sdk::attributes::AttributeSource;
use std::borrow::Cow;

/// One TCP connection as the stats filter follows it: the bytes offered to
/// the filter each way, what has been reported, and the labels, which are
/// fixed at the first report (as Istio's stats filter does).
#[derive(Debug, Default)]
pub struct TcpConnection {
    /// Bytes from the client offered to the filter so far.
    received: u64,
    /// Bytes to the client offered to the filter so far.
    sent: u64,
    reported_received: u64,
    reported_sent: u64,
    /// Standard label values and dimension values, once reported.
    labels: Option<(Vec<String>, Vec<String>)>,
}

impl TcpConnection {
    pub fn reported(&self) -> bool {
        self.labels.is_some()
    }

    /// Counts bytes from the client that reached the filter.
    pub fn add_received(&mut self, bytes: u64) {
        self.received = self.received.saturating_add(bytes);
    }

    /// Counts bytes to the client that reached the filter.
    pub fn add_sent(&mut self, bytes: u64) {
        self.sent = self.sent.saturating_add(bytes);
    }
}

impl<E: Expression> Stats<E> {
    /// Records Istio's HTTP metrics and the custom metrics for a finished
    /// request. `attrs` serves the dimension and value expressions.
    pub fn record_http(&mut self, facts: &RequestFacts, attrs: &dyn AttributeSource, sink: &mut dyn MetricSink) {
        let mut standard: Vec<String> = self.standard_values(facts).into_iter().map(Cow::into_owned).collect();
        let mut dims = self.dimension_values(attrs);
        // Client-controlled values (the host header, peer metadata,
        // dimensions) are made safe and bounded before any stat name or
        // cache key is built from them.
        self.bound_label_values(&mut standard, sink);
        self.bound_label_values(&mut dims, sink);
        let values = self.custom_values(attrs);
        self.emit(&standard, &dims, sink, |value| match value {
            MetricValue::Standard(StandardValue::Requests) => Some(1),
            MetricValue::Standard(StandardValue::DurationMs) => {
                facts.duration_ns.map(|ns| (ns.max(0) / 1_000_000) as u64)
            }
            MetricValue::Standard(StandardValue::RequestBytes) => facts.request_size.map(|n| n.max(0) as u64),
            MetricValue::Standard(StandardValue::ResponseBytes) => facts.response_size.map(|n| n.max(0) as u64),
            MetricValue::Standard(StandardValue::RequestMessages) => {
                facts.grpc_messages.filter(|_| facts.grpc).map(|(r, _)| r)
            }
            MetricValue::Standard(StandardValue::ResponseMessages) => {
                facts.grpc_messages.filter(|_| facts.grpc).map(|(_, r)| r)
            }
            MetricValue::Standard(_) => None,
            MetricValue::Custom(i) => values.get(i).copied(),
        });
    }

    /// Reports a TCP connection, periodically (`end` false) or when it
    /// closes (`end` true), as Istio's stats filter does: nothing is
    /// reported before the peer is known (`peer_known`: metadata exchange
    /// found the peer or gave up) unless the connection has ended; the first
    /// report fixes the labels (`gather` is only called then) and counts the
    /// connection opened; every report adds the bytes since the last one; the
    /// last one counts it closed and records the custom metrics.
    pub fn report_tcp(
        &mut self,
        conn: &mut TcpConnection,
        end: bool,
        peer_known: bool,
        gather: impl FnOnce() -> RequestFacts,
        attrs: &dyn AttributeSource,
        sink: &mut dyn MetricSink,
    ) {
        let first = conn.labels.is_none();
        if first && !peer_known && !end {
            return;
        }
        if conn.labels.is_none() {
            let facts = gather();
            let mut standard: Vec<String> = self.standard_values(&facts).into_iter().map(Cow::into_owned).collect();
            let mut dims = self.dimension_values(attrs);
            // Bounded once, when the labels are fixed (as for HTTP).
            self.bound_label_values(&mut standard, sink);
            self.bound_label_values(&mut dims, sink);
            conn.labels = Some((standard, dims));
        }
        let Some((standard, dims)) = conn.labels.as_ref() else { return };
        let received = conn.received.saturating_sub(conn.reported_received);
        let sent = conn.sent.saturating_sub(conn.reported_sent);
        conn.reported_received = conn.received;
        conn.reported_sent = conn.sent;
        let values = if end { self.custom_values(attrs) } else { Vec::new() };
        let (standard, dims) = (standard.clone(), dims.clone());
        self.emit(&standard, &dims, sink, |value| match value {
            MetricValue::Standard(StandardValue::TcpOpened) => Some(first as u64),
            MetricValue::Standard(StandardValue::TcpClosed) => Some(end as u64),
            MetricValue::Standard(StandardValue::TcpSentBytes) => Some(sent),
            MetricValue::Standard(StandardValue::TcpReceivedBytes) => Some(received),
            MetricValue::Standard(_) => None,
            MetricValue::Custom(i) => values.get(i).copied(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Reporter;
    use crate::testing::*;

    #[test]
    fn tcp_connection_reports() {
        let mut s = stats(
            r#"{"metrics":[{"name":"tcp_sent_bytes_total","dimensions":{"mesh":"'m1'"}}],
                "definitions":[{"name":"tcp_closes","type":"COUNTER","value":"1"}]}"#,
            Reporter::Destination,
        );
        let mut sink = Sink::default();
        let mut conn = TcpConnection::default();
        conn.add_received(5);
        conn.add_sent(8);
        let mut gathered = 0;
        // A tick before the peer is known reports nothing.
        s.report_tcp(&mut conn, false, false, || unreachable!(), &attrs(""), &mut sink);
        assert!(sink.names.is_empty() && !conn.reported());

        // The first report (peer known) fixes the labels and opens.
        let facts = || {
            gathered += 1;
            tcp_facts()
        };
        s.report_tcp(&mut conn, false, true, facts, &attrs(""), &mut sink);
        let opened = sink.one("istio_tcp_connections_opened_total").to_string();
        let labels = labels_of(&opened);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 23, "{keys:?}");
        assert!(!keys.contains(&"response_code") && !keys.contains(&"grpc_response_status"));
        let value = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(value("request_protocol"), "tcp");
        assert_eq!(value("response_flags"), "-");
        assert_eq!(value("connection_security_policy"), "none");
        assert_eq!(value("destination_service"), "reviews", "server side: the local canonical service");
        assert_eq!(sink.counter(&opened), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_connections_closed_total")), Some(0), "defined, not counted");
        assert_eq!(sink.counter(sink.one("istio_tcp_received_bytes_total")), Some(5));
        let sent = sink.one("istio_tcp_sent_bytes_total").to_string();
        assert!(sent.starts_with("reporter=.=destination;.;") && sent.contains(";.;mesh=.=m1;.;"), "{sent}");
        assert_eq!(sink.counter(&sent), Some(8));
        assert!(!sink.names.iter().any(|(_, n)| n.contains("tcp_closes")), "custom metrics wait for the close");

        // Later reports add only what is new; the close counts closed and
        // the custom metrics; the labels are not gathered again.
        conn.add_received(10);
        s.report_tcp(&mut conn, false, true, || unreachable!(), &attrs(""), &mut sink);
        conn.add_sent(2);
        s.report_tcp(&mut conn, true, true, || unreachable!(), &attrs(""), &mut sink);
        assert_eq!(gathered, 1);
        assert_eq!(sink.counter(&opened), Some(1), "opened once");
        assert_eq!(sink.counter(sink.one("istio_tcp_connections_closed_total")), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_received_bytes_total")), Some(15));
        assert_eq!(sink.counter(&sent), Some(10));
        assert_eq!(sink.counter(sink.one("istio_tcp_closes")), Some(1));
        assert!(!sink.names.iter().any(|(_, n)| n.contains("requests_total")), "no HTTP metrics for TCP");
    }

    /// A TCP connection's labels are bounded once, when they are fixed:
    /// later reports reuse them and count no more cuts.
    #[test]
    fn tcp_labels_are_bounded_once() {
        let mut s = stats(
            r#"{"max_label_value_bytes": 12, "metrics":[{"name":"tcp_sent_bytes_total","dimensions":{"d":"'a;.;b\ncdefghijkl'"}}]}"#,
            Reporter::Destination,
        );
        let mut sink = Sink::default();
        let mut conn = TcpConnection::default();
        for end in [false, false, true] {
            s.report_tcp(&mut conn, end, true, tcp_facts, &attrs(""), &mut sink);
        }
        let sent = sink.one("istio_tcp_sent_bytes_total").to_string();
        assert!(sent.contains(";.;d=.=a_b_cdefghij;.;"), "{sent}");
        assert_eq!(sink.counter(crate::metrics::TRUNCATED_COUNTER), Some(1));
    }

    #[test]
    fn tcp_connection_without_peer_reports_at_close() {
        let mut s = stats("{}", Reporter::Source);
        let mut sink = Sink::default();
        let mut conn = TcpConnection::default();
        s.report_tcp(&mut conn, false, false, || unreachable!(), &attrs(""), &mut sink);
        let mut facts = tcp_facts();
        facts.response_flags = 0x20; // UF: the upstream refused
        s.report_tcp(&mut conn, true, false, || facts, &attrs(""), &mut sink);
        let closed = sink.one("istio_tcp_connections_closed_total").to_string();
        assert_eq!(sink.counter(&closed), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_connections_opened_total")), Some(1));
        assert_eq!(sink.counter(sink.one("istio_tcp_sent_bytes_total")), Some(0));
        let labels = labels_of(&closed);
        let value = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(value("reporter"), "source");
        assert_eq!(value("response_flags"), "UF");
        assert_eq!(value("connection_security_policy"), "unknown");
        assert_eq!(value("destination_service"), "unknown");
    }

    #[test]
    fn grpc_requests() {
        let mut s = stats("{}", Reporter::Destination);
        let mut sink = Sink::default();
        let mut f = get_request();
        f.grpc = true;
        f.grpc_status = Some(14);
        f.grpc_messages = Some((1, 3));
        s.record_http(&f, &attrs("POST"), &mut sink);
        let labels = labels_of(sink.one("istio_requests_total"));
        assert!(labels.contains(&("request_protocol".into(), "grpc".into())));
        assert!(labels.contains(&("grpc_response_status".into(), "14".into())));
        let msgs = sink.one("istio_response_messages_total").to_string();
        assert_eq!(labels_of(&msgs).len(), 20);
        assert_eq!(labels_of(&msgs).last().unwrap().0, "destination_cluster");
        assert_eq!(sink.counter(&msgs), Some(3));
    }
}
