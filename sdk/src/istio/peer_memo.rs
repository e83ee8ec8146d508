//! Decoded peers, remembered per VM by their encoded bytes.
//!
//! Every request from the same peer carries the same metadata bytes (the
//! `x-envoy-peer-metadata` header, or the filter state a metadata-exchange
//! filter left), and decoding them (base64, protobuf, then the workload
//! facts) was about a third of `stats`' work per request (issue 18; see
//! docs/benchmarks.md). So a plugin decodes each distinct encoding once and
//! looks it up afterwards.
//!
//! Bounded, since the bytes come from the network: at most [`MAX_PEERS`]
//! entries, none larger than [`MAX_CACHED_BYTES`] (a larger encoding is
//! decoded every time, as before); when full, the oldest entry goes. A
//! malformed encoding is not remembered: it decodes to nothing each time.

use super::{decode_peer_metadata_struct, peer_attributes, WorkloadInfo};
use crate::attributes::AttrValue;
use crate::fingerprint::{Fingerprint, FingerprintMap};
use std::cell::OnceCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// Distinct peer encodings a VM remembers (a sidecar talks to few peers).
pub const MAX_PEERS: usize = 64;
/// The largest encoding remembered (Istio's are well under 2 KiB).
pub const MAX_CACHED_BYTES: usize = 8 * 1024;

/// Where a peer's metadata came from: the two are encoded differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerEncoding {
    /// The `x-envoy-peer-metadata` header: base64 of a `google.protobuf.Struct`.
    Header = 0,
    /// A filter-state value: the serialized `google.protobuf.Struct`.
    Struct = 1,
}

/// One decoded peer.
#[derive(Debug)]
pub struct DecodedPeer {
    /// The peer's metadata `Struct`.
    pub metadata: AttrValue,
    /// The workload facts Istio's labels use.
    pub workload: WorkloadInfo,
    /// [`peer_attributes`] of the metadata, for CEL; built on first use.
    attributes: OnceCell<AttrValue>,
}

impl DecodedPeer {
    fn new(metadata: AttrValue) -> Self {
        DecodedPeer { workload: WorkloadInfo::from_struct(&metadata), metadata, attributes: OnceCell::new() }
    }

    /// The peer as CEL sees it (`upstream_peer.*`, `downstream_peer.*`).
    pub fn attributes(&self) -> &AttrValue {
        self.attributes.get_or_init(|| peer_attributes(&self.metadata))
    }
}

/// Decodes peer metadata, remembering recent encodings ([module docs](self)).
#[derive(Debug, Default)]
pub struct PeerMemo {
    /// By the [`Fingerprint`] of the encoding and its bytes: a lookup
    /// hashes the bytes once and compares 16 bytes.
    peers: FingerprintMap<Rc<DecodedPeer>>,
    /// Insertion order, for dropping the oldest.
    order: VecDeque<Fingerprint>,
}

impl PeerMemo {
    /// The peer these bytes encode, decoded once per distinct encoding;
    /// `None` when they do not decode.
    pub fn decode(&mut self, encoding: PeerEncoding, bytes: &[u8]) -> Option<Rc<DecodedPeer>> {
        let key = Fingerprint::of([&[encoding as u8][..], bytes]);
        if let Some(p) = self.peers.get(&key) {
            return Some(Rc::clone(p));
        }
        let metadata = match encoding {
            PeerEncoding::Header => decode_peer_metadata_struct(bytes)?,
            PeerEncoding::Struct => crate::property::decode_struct(bytes)?,
        };
        let peer = Rc::new(DecodedPeer::new(metadata));
        if bytes.len() <= MAX_CACHED_BYTES {
            if self.len() >= MAX_PEERS {
                if let Some(oldest) = self.order.pop_front() {
                    self.peers.remove(&oldest);
                }
            }
            self.peers.insert(key, Rc::clone(&peer));
            self.order.push_back(key);
        }
        Some(peer)
    }

    /// Encodings remembered now.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::peer::{struct_from_json, LocalPeer};

    /// A peer's `x-envoy-peer-metadata` value, as a sidecar sends it.
    fn header(workload: &str) -> Vec<u8> {
        let node = serde_json::json!({"WORKLOAD_NAME": workload, "NAMESPACE": "default"});
        let node = struct_from_json(node.as_object().unwrap());
        LocalPeer::new("sidecar~10.0.0.1~x.default~default.svc.cluster.local".into(), &node).header_value.into_bytes()
    }

    #[test]
    fn decodes_each_encoding_once_and_gives_the_same_peer() {
        let mut memo = PeerMemo::default();
        let header = header("reviews-v1");
        let first = memo.decode(PeerEncoding::Header, &header).unwrap();
        assert_eq!(first.workload.workload_name, "reviews-v1");
        assert_eq!(first.workload, WorkloadInfo::from_struct(&decode_peer_metadata_struct(&header).unwrap()));
        let again = memo.decode(PeerEncoding::Header, &header).unwrap();
        assert!(Rc::ptr_eq(&first, &again), "a hit is the remembered peer");
        assert_eq!(memo.len(), 1);
        // The same bytes as a filter-state Struct are another encoding:
        // base64 text is no protobuf Struct here, so nothing is remembered.
        assert!(memo.decode(PeerEncoding::Struct, b"\xff\xff").is_none());
        assert_eq!(memo.len(), 1);
        assert_eq!(first.attributes(), &peer_attributes(&first.metadata));
    }

    #[test]
    fn malformed_and_oversized_encodings_are_not_remembered() {
        let mut memo = PeerMemo::default();
        assert!(memo.decode(PeerEncoding::Header, b"not base64 !").is_none());
        let big = header(&"w".repeat(MAX_CACHED_BYTES));
        let peer = memo.decode(PeerEncoding::Header, &big).unwrap();
        assert_eq!(peer.workload.workload_name.len(), MAX_CACHED_BYTES);
        assert!(memo.is_empty());
    }

    #[test]
    fn stays_bounded_dropping_the_oldest() {
        let mut memo = PeerMemo::default();
        let headers: Vec<Vec<u8>> = (0..MAX_PEERS + 10).map(|i| header(&format!("w{i}"))).collect();
        let first = memo.decode(PeerEncoding::Header, &headers[0]).unwrap();
        for h in &headers[1..] {
            memo.decode(PeerEncoding::Header, h).unwrap();
        }
        assert_eq!(memo.len(), MAX_PEERS);
        let again = memo.decode(PeerEncoding::Header, &headers[0]).unwrap();
        assert!(!Rc::ptr_eq(&first, &again), "the oldest was dropped and decoded again");
        assert_eq!(again.workload.workload_name, "w0");
        let last = headers.last().unwrap();
        let a = memo.decode(PeerEncoding::Header, last).unwrap();
        assert!(Rc::ptr_eq(&a, &memo.decode(PeerEncoding::Header, last).unwrap()));
    }
}
