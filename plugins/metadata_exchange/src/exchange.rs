//! The HTTP exchange, free of host calls: what to read, strip, store and
//! set on each side of a stream, the peer cache, and the checks meshwasm
//! adds. The shell gives it the stream's headers and facts through
//! [`Headers`] and [`Sink`].
//!
//! Istio's Wasm-era plugin (istio/proxy `extensions/metadata_exchange/
//! plugin.cc`, 2023) is the model: request headers: read and remove
//! `x-envoy-peer-metadata-id` and `x-envoy-peer-metadata`, store the peer as
//! the downstream peer, then, unless the listener is inbound, set ours
//! (replacing). Response headers: the same for the upstream peer, then,
//! unless outbound, set ours, each only if the request carried that header.

use crate::config::{Settings, Trust};
use meshwasm_sdk::istio::peer::{decode_peer_header, LocalPeer, PeerError};
use meshwasm_sdk::istio::{PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER};
use std::collections::{HashMap, VecDeque};

/// `xds.listener_direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Unspecified,
    Inbound,
    Outbound,
}

impl Direction {
    pub fn from_property(value: Option<i64>) -> Self {
        match value {
            Some(1) => Direction::Inbound,
            Some(2) => Direction::Outbound,
            _ => Direction::Unspecified,
        }
    }
}

/// Which side of the stream the peer is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
}

impl Side {
    /// The property the peer's metadata is stored under (filter state
    /// `wasm.<key>`, as Istio's Wasm-era plugin wrote it).
    pub fn peer_key(self) -> &'static str {
        match self {
            Side::Downstream => "downstream_peer",
            Side::Upstream => "upstream_peer",
        }
    }
    /// The property the peer's id is stored under.
    pub fn id_key(self) -> &'static str {
        match self {
            Side::Downstream => "downstream_peer_id",
            Side::Upstream => "upstream_peer_id",
        }
    }
}

/// The plugin's counters (names in [`Counter::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    MetadataAdded,
    CacheHit,
    BadBase64,
    BadProtobuf,
    Oversized,
    Untrusted,
    PropagationSkipped,
    AlpnFound,
    AlpnNotFound,
    InitialHeaderNotFound,
    HeaderNotFound,
}

impl Counter {
    pub const ALL: [Counter; 11] = [
        Counter::MetadataAdded,
        Counter::CacheHit,
        Counter::BadBase64,
        Counter::BadProtobuf,
        Counter::Oversized,
        Counter::Untrusted,
        Counter::PropagationSkipped,
        Counter::AlpnFound,
        Counter::AlpnNotFound,
        Counter::InitialHeaderNotFound,
        Counter::HeaderNotFound,
    ];

    /// Istio's names where Istio's TCP exchange has the counter
    /// (`metadata_added`, `alpn_protocol_found`, ...), meshwasm's otherwise.
    pub fn name(self) -> &'static str {
        match self {
            Counter::MetadataAdded => "metadata_exchange.metadata_added",
            Counter::CacheHit => "metadata_exchange.peer_cache_hit",
            Counter::BadBase64 => "metadata_exchange.malformed_base64",
            Counter::BadProtobuf => "metadata_exchange.malformed_protobuf",
            Counter::Oversized => "metadata_exchange.oversized",
            Counter::Untrusted => "metadata_exchange.untrusted_peer",
            Counter::PropagationSkipped => "metadata_exchange.propagation_skipped",
            Counter::AlpnFound => "metadata_exchange.alpn_protocol_found",
            Counter::AlpnNotFound => "metadata_exchange.alpn_protocol_not_found",
            Counter::InitialHeaderNotFound => "metadata_exchange.initial_header_not_found",
            Counter::HeaderNotFound => "metadata_exchange.header_not_found",
        }
    }
}

/// A header map of the stream (request or response).
pub trait Headers {
    fn get(&mut self, name: &str) -> Option<Vec<u8>>;
    fn remove(&mut self, name: &str);
    fn replace(&mut self, name: &str, value: &[u8]);
}

/// Where the exchange writes: properties (filter state) and counters.
pub trait Sink {
    fn set_property(&mut self, key: &str, value: &[u8]);
    fn count(&mut self, counter: Counter);
}

/// Peers by id, as Istio's plugin caches them per VM: a hit skips decoding.
/// When full, the oldest quarter is dropped (Istio drops `max / 4` entries
/// in its hash map's order; here the oldest, so a hot peer survives).
#[derive(Debug, Default)]
pub struct PeerCache {
    max: usize,
    map: HashMap<String, Vec<u8>>,
    order: VecDeque<String>,
}

impl PeerCache {
    pub fn new(max: usize) -> Self {
        PeerCache { max, map: HashMap::new(), order: VecDeque::new() }
    }
    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.map.get(id).map(Vec::as_slice)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Caches a peer. An empty id is never cached (Istio cached it, so
    /// every peer without an id got the first one's metadata).
    pub fn insert(&mut self, id: &str, peer: Vec<u8>) {
        if self.max == 0 || id.is_empty() || self.map.contains_key(id) {
            return;
        }
        if self.map.len() >= self.max {
            for _ in 0..(self.max / 4).max(1) {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
        self.map.insert(id.to_string(), peer);
        self.order.push_back(id.to_string());
    }
}

/// Facts of the stream the shell reads for the checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    /// The connection the peer is on is mTLS.
    pub mtls: bool,
    /// The upstream cluster must not receive our metadata.
    pub skip_propagation: bool,
}

/// What the request carried, for the response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub id: bool,
    pub metadata: bool,
}

/// One configured exchange (per VM).
pub struct Exchange {
    pub settings: Settings,
    pub local: LocalPeer,
    pub cache: PeerCache,
}

impl Exchange {
    pub fn new(settings: Settings, local: LocalPeer) -> Self {
        let cache = PeerCache::new(settings.max_peer_cache_size);
        Exchange { settings, local, cache }
    }

    /// Our TCP exchange frame (the same payload as the header).
    pub fn local_frame(&self) -> Vec<u8> {
        meshwasm_sdk::istio::peer::encode_tcp_frame(&self.local.id, &self.local.metadata)
    }

    /// Takes a peer's id and metadata header values (already stripped):
    /// stores what is acceptable for the side.
    pub fn take_peer(&mut self, side: Side, id: Option<&[u8]>, value: Option<&[u8]>, mtls: bool, sink: &mut dyn Sink) {
        if self.settings.trust == Trust::MtlsOnly && !mtls {
            if id.is_some() || value.is_some() {
                sink.count(Counter::Untrusted);
            }
            return;
        }
        let id = id.unwrap_or_default();
        if !id.is_empty() {
            sink.set_property(side.id_key(), id);
        }
        let Some(value) = value else { return };
        let id = String::from_utf8_lossy(id);
        if let Some(peer) = self.cache.get(&id) {
            sink.set_property(side.peer_key(), peer);
            sink.count(Counter::CacheHit);
            return;
        }
        if value.len() > self.settings.max_peer_metadata_bytes {
            sink.count(Counter::Oversized);
            return;
        }
        match decode_peer_header(value) {
            Ok(bytes) => {
                sink.set_property(side.peer_key(), &bytes);
                sink.count(Counter::MetadataAdded);
                self.cache.insert(&id, bytes);
            }
            Err(PeerError::BadBase64) => sink.count(Counter::BadBase64),
            Err(PeerError::BadProtobuf) => sink.count(Counter::BadProtobuf),
        }
    }

    /// Reads, strips and stores the peer headers of one side.
    fn read_side(&mut self, side: Side, headers: &mut dyn Headers, mtls: bool, sink: &mut dyn Sink) -> Received {
        let id = headers.get(PEER_METADATA_ID_HEADER);
        let value = headers.get(PEER_METADATA_HEADER);
        // Stripped whenever present (Istio left an empty one in place); an
        // empty value counts as absent, as in Istio.
        if id.is_some() {
            headers.remove(PEER_METADATA_ID_HEADER);
        }
        if value.is_some() {
            headers.remove(PEER_METADATA_HEADER);
        }
        let id = id.filter(|v| !v.is_empty());
        let value = value.filter(|v| !v.is_empty());
        self.take_peer(side, id.as_deref(), value.as_deref(), mtls, sink);
        Received { id: id.is_some(), metadata: value.is_some() }
    }

    /// Request headers: the downstream peer; ours to the upstream unless
    /// the listener is inbound (or the cluster must not get them).
    pub fn on_request(
        &mut self,
        direction: Direction,
        facts: Facts,
        headers: &mut dyn Headers,
        sink: &mut dyn Sink,
    ) -> Received {
        let received = self.read_side(Side::Downstream, headers, facts.mtls, sink);
        if direction != Direction::Inbound {
            if facts.skip_propagation {
                sink.count(Counter::PropagationSkipped);
            } else {
                if !self.local.header_value.is_empty() {
                    headers.replace(PEER_METADATA_HEADER, self.local.header_value.as_bytes());
                }
                if !self.local.id.is_empty() {
                    headers.replace(PEER_METADATA_ID_HEADER, self.local.id.as_bytes());
                }
            }
        }
        received
    }

    /// Response headers: the upstream peer; ours back to the downstream
    /// unless the listener is outbound, each only if the request carried
    /// it (and, with `mtls_only`, only over mTLS).
    pub fn on_response(
        &mut self,
        direction: Direction,
        received: Received,
        upstream: Facts,
        downstream_mtls: bool,
        headers: &mut dyn Headers,
        sink: &mut dyn Sink,
    ) {
        self.read_side(Side::Upstream, headers, upstream.mtls, sink);
        if direction == Direction::Outbound {
            return;
        }
        if self.settings.trust == Trust::MtlsOnly && !downstream_mtls {
            return;
        }
        if received.metadata && !self.local.header_value.is_empty() {
            headers.replace(PEER_METADATA_HEADER, self.local.header_value.as_bytes());
        }
        if received.id && !self.local.id.is_empty() {
            headers.replace(PEER_METADATA_ID_HEADER, self.local.id.as_bytes());
        }
    }
}

/// Whether a cluster must not receive our metadata: `istio.disable_mx`
/// always (current Istio honours it), and with `skip_external_clusters`
/// `PassthroughCluster` or `istio.external` (current Istio's option).
pub fn skip_cluster(settings: &Settings, cluster_name: &str, disable_mx: bool, external: bool) -> bool {
    disable_mx || (settings.skip_external_clusters && (cluster_name == "PassthroughCluster" || external))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use meshwasm_sdk::istio::peer::base64_encode;

    #[derive(Default)]
    struct Map(Vec<(String, Vec<u8>)>);
    impl Headers for Map {
        fn get(&mut self, name: &str) -> Option<Vec<u8>> {
            self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        }
        fn remove(&mut self, name: &str) {
            self.0.retain(|(k, _)| k != name);
        }
        fn replace(&mut self, name: &str, value: &[u8]) {
            self.remove(name);
            self.0.push((name.to_string(), value.to_vec()));
        }
    }
    /// What the exchange wrote (the TCP tests use it too).
    #[derive(Default)]
    pub(crate) struct Rec {
        pub(crate) props: Vec<(String, Vec<u8>)>,
        pub(crate) counts: Vec<Counter>,
    }
    impl Sink for Rec {
        fn set_property(&mut self, key: &str, value: &[u8]) {
            self.props.push((key.to_string(), value.to_vec()));
        }
        fn count(&mut self, c: Counter) {
            self.counts.push(c);
        }
    }

    fn local() -> LocalPeer {
        let serde_json::Value::Object(m) = serde_json::json!({"NAME": "me", "LABELS": {"app": "a"}}) else { panic!() };
        LocalPeer::new("sidecar~me".into(), &meshwasm_sdk_struct(&m))
    }
    fn meshwasm_sdk_struct(m: &serde_json::Map<String, serde_json::Value>) -> meshwasm_sdk::istio::peer::Struct {
        meshwasm_sdk::istio::peer::struct_from_json(m)
    }
    fn peer_value(name: &str) -> (Vec<u8>, Vec<u8>) {
        let serde_json::Value::Object(m) = serde_json::json!({"WORKLOAD_NAME": name}) else { panic!() };
        let l = LocalPeer::new(String::new(), &meshwasm_sdk_struct(&m));
        (l.header_value.into_bytes(), l.struct_bytes)
    }
    fn exchange(config: &str) -> Exchange {
        Exchange::new(crate::config::parse(config.as_bytes()).unwrap().0, local())
    }

    #[test]
    fn inbound_request_stores_and_strips_and_answers_in_kind() {
        let mut x = exchange("{}");
        let (value, bytes) = peer_value("client");
        let mut req = Map(vec![
            ("x-envoy-peer-metadata-id".into(), b"sidecar~client".to_vec()),
            ("x-envoy-peer-metadata".into(), value),
            ("x-other".into(), b"1".to_vec()),
        ]);
        let mut sink = Rec::default();
        let got = x.on_request(Direction::Inbound, Facts::default(), &mut req, &mut sink);
        assert_eq!(got, Received { id: true, metadata: true });
        assert_eq!(req.0, vec![("x-other".to_string(), b"1".to_vec())], "stripped, nothing added inbound");
        assert_eq!(
            sink.props,
            vec![("downstream_peer_id".into(), b"sidecar~client".to_vec()), ("downstream_peer".into(), bytes.clone())]
        );
        assert_eq!(sink.counts, vec![Counter::MetadataAdded]);
        let mut resp = Map::default();
        x.on_response(Direction::Inbound, got, Facts::default(), false, &mut resp, &mut sink);
        assert_eq!(resp.get("x-envoy-peer-metadata").unwrap(), x.local.header_value.as_bytes());
        assert_eq!(resp.get("x-envoy-peer-metadata-id").unwrap(), b"sidecar~me");
        // Only the id came: only the id goes back.
        let mut resp = Map::default();
        x.on_response(
            Direction::Inbound,
            Received { id: true, metadata: false },
            Facts::default(),
            false,
            &mut resp,
            &mut sink,
        );
        assert_eq!(resp.0.len(), 1);
        // The second request from the same peer is a cache hit.
        let mut sink = Rec::default();
        let mut req = Map(vec![
            ("x-envoy-peer-metadata-id".into(), b"sidecar~client".to_vec()),
            ("x-envoy-peer-metadata".into(), b"not even base64!".to_vec()),
        ]);
        x.on_request(Direction::Inbound, Facts::default(), &mut req, &mut sink);
        assert_eq!(sink.props[1], ("downstream_peer".into(), bytes));
        assert_eq!(sink.counts, vec![Counter::CacheHit]);
    }

    #[test]
    fn outbound_sets_ours_and_reads_the_upstream() {
        let mut x = exchange("{}");
        let mut req = Map(vec![(":path".into(), b"/".to_vec())]);
        let mut sink = Rec::default();
        let got = x.on_request(Direction::Outbound, Facts::default(), &mut req, &mut sink);
        assert_eq!(got, Received::default());
        assert_eq!(req.get("x-envoy-peer-metadata-id").unwrap(), b"sidecar~me");
        assert_eq!(req.get("x-envoy-peer-metadata").unwrap(), x.local.header_value.as_bytes());
        assert!(sink.props.is_empty());
        let (value, bytes) = peer_value("server");
        let mut resp = Map(vec![
            ("x-envoy-peer-metadata".into(), value),
            ("x-envoy-peer-metadata-id".into(), b"sidecar~server".to_vec()),
        ]);
        x.on_response(Direction::Outbound, got, Facts::default(), false, &mut resp, &mut sink);
        assert!(resp.0.is_empty(), "stripped, nothing added outbound");
        assert_eq!(
            sink.props,
            vec![("upstream_peer_id".into(), b"sidecar~server".to_vec()), ("upstream_peer".into(), bytes)]
        );
        // A skipped cluster gets nothing, and the app's own are still stripped.
        let mut req = Map(vec![("x-envoy-peer-metadata".into(), b"x".to_vec())]);
        x.on_request(Direction::Outbound, Facts { mtls: false, skip_propagation: true }, &mut req, &mut sink);
        assert!(req.0.is_empty());
        assert_eq!(sink.counts.last(), Some(&Counter::PropagationSkipped));
    }

    #[test]
    fn hostile_values_are_counted_never_stored() {
        let mut x = exchange(r#"{"max_peer_metadata_bytes": 100}"#);
        let long = base64_encode(&[b'a'; 200]);
        let cases: [(&[u8], Counter); 4] = [
            (b"%%%", Counter::BadBase64),
            (b"AAAA////", Counter::BadProtobuf),
            (long.as_bytes(), Counter::Oversized),
            (b"\xff\xfe\x00", Counter::BadBase64),
        ];
        for (value, counter) in cases {
            let mut sink = Rec::default();
            let mut req = Map(vec![("x-envoy-peer-metadata".into(), value.to_vec())]);
            x.on_request(Direction::Inbound, Facts::default(), &mut req, &mut sink);
            assert!(req.0.is_empty(), "stripped even when bad");
            assert!(sink.props.is_empty());
            assert_eq!(sink.counts, vec![counter]);
        }
        assert!(x.cache.is_empty());
    }

    #[test]
    fn mtls_only_refuses_plaintext_peers() {
        let mut x = exchange(r#"{"trust": "mtls_only"}"#);
        let (value, _) = peer_value("client");
        let req = || {
            Map(vec![
                ("x-envoy-peer-metadata".into(), value.clone()),
                ("x-envoy-peer-metadata-id".into(), b"i".to_vec()),
            ])
        };
        let mut sink = Rec::default();
        let mut r = req();
        let got = x.on_request(Direction::Inbound, Facts::default(), &mut r, &mut sink);
        assert!(r.0.is_empty() && sink.props.is_empty());
        assert_eq!(sink.counts, vec![Counter::Untrusted]);
        let mut resp = Map::default();
        x.on_response(Direction::Inbound, got, Facts::default(), false, &mut resp, &mut sink);
        assert!(resp.0.is_empty(), "nothing of ours to a plaintext peer");
        let mut sink = Rec::default();
        x.on_request(Direction::Inbound, Facts { mtls: true, skip_propagation: false }, &mut req(), &mut sink);
        assert_eq!(sink.props.len(), 2);
    }

    #[test]
    fn cache_evicts_the_oldest_quarter_and_can_be_off() {
        let mut c = PeerCache::new(8);
        for i in 0..8 {
            c.insert(&format!("p{i}"), vec![i]);
        }
        c.insert("p8", vec![8]);
        assert_eq!(c.len(), 7);
        assert!(c.get("p0").is_none() && c.get("p1").is_none() && c.get("p2").is_some() && c.get("p8").is_some());
        c.insert("", vec![1]);
        assert!(c.get("").is_none(), "no id, no cache");
        let mut off = PeerCache::new(0);
        off.insert("p", vec![1]);
        assert!(off.is_empty());
        let mut one = PeerCache::new(1);
        one.insert("a", vec![]);
        one.insert("b", vec![]);
        assert!(one.get("a").is_none() && one.get("b").is_some());
    }

    #[test]
    fn external_clusters() {
        let on = crate::config::parse(br#"{"skip_external_clusters": true}"#).unwrap().0;
        let off = Settings::default();
        assert!(skip_cluster(&off, "x", true, false), "disable_mx always");
        assert!(!skip_cluster(&off, "PassthroughCluster", false, true), "Istio's default propagates");
        assert!(skip_cluster(&on, "PassthroughCluster", false, false));
        assert!(skip_cluster(&on, "outbound|80||x", false, true));
        assert!(!skip_cluster(&on, "outbound|80||x", false, false));
    }
}
