//! The TCP exchange (Istio's `istio-peer-exchange`), free of host calls:
//! per connection, what to drain from and prepend to each direction's bytes.
//!
//! Istio's filter writes its frame first thing on a connection whose ALPN is
//! `istio-peer-exchange` and reads the peer's from the incoming bytes.
//! Envoy 1.40 gives a Wasm filter neither the negotiated ALPN nor a way to
//! write on its own, so here:
//! * server side (inbound listener): the client's frame is read and drained
//!   from the downstream bytes; ours is answered in kind, prepended to the
//!   first bytes going back, only when the client's bytes began with the
//!   magic number (a client that did not speak the exchange never gets a
//!   frame in its stream);
//! * client side (outbound listener, in front of `tcp_proxy`, because a
//!   Wasm filter cannot run on a cluster's upstream connection in Envoy
//!   1.40): ours is prepended to the first bytes the application sends, and
//!   the server's frame is read and drained from the upstream bytes.

use crate::config::Trust;
use crate::exchange::{Counter, Exchange, Side, Sink};
use meshwasm_sdk::istio::peer::{decode_tcp_frame, TcpFrame, TCP_EXCHANGE_HEADER_BYTES};

/// The value Istio's Wasm-era TCP exchange stored as the peer id when the
/// peer sent no metadata (istio/proxy `extensions/common/context.h`,
/// `kMetadataNotFoundValue`).
pub const PEER_UNKNOWN_ID: &str = "envoy.wasm.metadata_exchange.peer_unknown";
/// Marker property: the exchange ran and found no peer (the name Istio's
/// native filter uses, which `stats` looks for before reporting).
pub const PEER_NOT_FOUND: &str = "peer_not_found";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// What the shell does with the bytes of one data callback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataAction {
    /// Bytes to drain from the front of the buffer.
    pub drain: usize,
    /// Bytes to put in front of what is left.
    pub prepend: Vec<u8>,
    /// Hold the bytes (a frame is incomplete): Envoy keeps them and calls
    /// again with more.
    pub pause: bool,
}

/// One connection's exchange.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// The peer's frame was read (or is known absent).
    read_done: bool,
    /// The peer spoke the exchange (its bytes began with the magic).
    peer_speaks: bool,
    /// Our frame went out (or never will).
    sent: bool,
    /// Bytes of an oversized frame still to drain.
    skip: usize,
    /// `mtls_only` and the connection is not mTLS: nothing of ours goes
    /// out on it (as for HTTP, where no response header is added).
    untrusted_link: bool,
}

impl Connection {
    pub fn new(role: Role) -> Self {
        Connection { role, read_done: false, peer_speaks: false, sent: false, skip: 0, untrusted_link: false }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    fn side(&self) -> Side {
        match self.role {
            Role::Server => Side::Downstream,
            Role::Client => Side::Upstream,
        }
    }

    fn not_found(&mut self, sink: &mut dyn Sink) {
        self.read_done = true;
        sink.set_property(self.side().id_key(), PEER_UNKNOWN_ID.as_bytes());
        sink.set_property(PEER_NOT_FOUND, b"true");
    }

    /// Bytes from the peer (server: downstream data; client: upstream data).
    pub fn from_peer(
        &mut self,
        x: &mut Exchange,
        data: &[u8],
        eos: bool,
        mtls: bool,
        sink: &mut dyn Sink,
    ) -> DataAction {
        if self.skip > 0 {
            let drain = self.skip.min(data.len());
            self.skip -= drain;
            return DataAction { drain, ..Default::default() };
        }
        if self.read_done {
            return DataAction::default();
        }
        self.untrusted_link = x.settings.trust == Trust::MtlsOnly && !mtls;
        match decode_tcp_frame(data, x.settings.max_peer_metadata_bytes) {
            TcpFrame::Incomplete { .. } if !eos => {
                if data.len() >= 4 {
                    self.peer_speaks = true;
                }
                DataAction { pause: true, ..Default::default() }
            }
            TcpFrame::Incomplete { .. } => {
                sink.count(Counter::InitialHeaderNotFound);
                self.not_found(sink);
                DataAction::default()
            }
            TcpFrame::NoMagic => {
                sink.count(Counter::InitialHeaderNotFound);
                self.not_found(sink);
                DataAction::default()
            }
            TcpFrame::Oversized { length } => {
                self.peer_speaks = true;
                sink.count(Counter::Oversized);
                self.not_found(sink);
                let total = TCP_EXCHANGE_HEADER_BYTES.saturating_add(length);
                let drain = total.min(data.len());
                self.skip = total - drain;
                DataAction { drain, ..Default::default() }
            }
            TcpFrame::Malformed { consumed } => {
                self.peer_speaks = true;
                sink.count(Counter::HeaderNotFound);
                self.not_found(sink);
                DataAction { drain: consumed, ..Default::default() }
            }
            TcpFrame::Peer { consumed, id, metadata } => {
                self.peer_speaks = true;
                self.read_done = true;
                if self.untrusted_link {
                    sink.count(Counter::Untrusted);
                    self.not_found(sink);
                } else {
                    if !id.is_empty() {
                        sink.set_property(self.side().id_key(), id.as_bytes());
                    }
                    let bytes = meshwasm_sdk::istio::peer::encode_struct(&metadata);
                    sink.set_property(self.side().peer_key(), &bytes);
                    sink.count(Counter::MetadataAdded);
                }
                DataAction { drain: consumed, ..Default::default() }
            }
        }
    }

    /// Bytes towards the peer (server: upstream data; client: downstream
    /// data): ours goes in front of the first of them when it should.
    pub fn to_peer(&mut self, x: &Exchange, skip_propagation: bool, sink: &mut dyn Sink) -> DataAction {
        if self.sent {
            return DataAction::default();
        }
        let send = match self.role {
            Role::Client => !skip_propagation,
            // In kind: only to a client that spoke the exchange, and (with
            // mtls_only) only over mTLS: our metadata is not revealed on a
            // link whose peer we would not believe.
            Role::Server => self.peer_speaks && !self.untrusted_link,
        };
        if self.role == Role::Server && !self.read_done {
            // The client's frame is not in yet: nothing of ours before it.
            return DataAction::default();
        }
        self.sent = true;
        if !send {
            if self.role == Role::Client {
                sink.count(Counter::PropagationSkipped);
                // The server will not answer a client that sent nothing.
                if !self.read_done {
                    self.not_found(sink);
                }
            }
            return DataAction::default();
        }
        DataAction { prepend: x.local_frame(), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwasm_sdk::istio::peer::{encode_tcp_frame, struct_from_json, LocalPeer};

    use crate::exchange::tests::Rec;

    fn meta(name: &str) -> meshwasm_sdk::istio::peer::Struct {
        let serde_json::Value::Object(m) = serde_json::json!({"WORKLOAD_NAME": name}) else { panic!() };
        struct_from_json(&m)
    }

    fn exchange(config: &str) -> Exchange {
        Exchange::new(crate::config::parse(config.as_bytes()).unwrap().0, LocalPeer::new("me".into(), &meta("me")))
    }

    #[test]
    fn server_reads_drains_and_answers_in_kind() {
        let mut x = exchange("{}");
        let mut c = Connection::new(Role::Server);
        let mut sink = Rec::default();
        let frame = encode_tcp_frame("client", &meta("client"));
        // The frame arrives in two pieces, then application bytes follow.
        let a = c.from_peer(&mut x, &frame[..5], false, false, &mut sink);
        assert!(a.pause && a.drain == 0);
        let mut all = frame.clone();
        all.extend_from_slice(b"hello");
        let a = c.from_peer(&mut x, &all, false, false, &mut sink);
        assert_eq!(a, DataAction { drain: frame.len(), ..Default::default() });
        assert_eq!(sink.props[0], ("downstream_peer_id".into(), b"client".to_vec()));
        assert_eq!(sink.props[1].0, "downstream_peer");
        assert_eq!(sink.counts, vec![Counter::MetadataAdded]);
        assert_eq!(c.from_peer(&mut x, b"more", false, false, &mut sink), DataAction::default());
        let back = c.to_peer(&x, false, &mut sink);
        assert_eq!(back.prepend, x.local_frame());
        assert_eq!(c.to_peer(&x, false, &mut sink), DataAction::default(), "once");
    }

    #[test]
    fn server_passes_plain_clients_through_untouched() {
        let mut x = exchange("{}");
        let mut c = Connection::new(Role::Server);
        let mut sink = Rec::default();
        assert_eq!(c.from_peer(&mut x, b"GET / HTTP/1.1\r\n", false, false, &mut sink), DataAction::default());
        assert_eq!(sink.counts, vec![Counter::InitialHeaderNotFound]);
        assert!(sink.props.iter().any(|(k, _)| k == PEER_NOT_FOUND));
        assert_eq!(c.to_peer(&x, false, &mut sink), DataAction::default(), "no frame to a plain client");
    }

    #[test]
    fn hostile_frames_are_drained_and_counted() {
        let mut x = exchange(r#"{"max_peer_metadata_bytes": 16}"#);
        let mut sink = Rec::default();
        // Oversized: the announced bytes are drained across calls.
        let mut c = Connection::new(Role::Server);
        let mut big = meshwasm_sdk::istio::peer::TCP_EXCHANGE_MAGIC.to_be_bytes().to_vec();
        big.extend_from_slice(&100u32.to_be_bytes());
        big.extend_from_slice(&[7; 50]);
        assert_eq!(c.from_peer(&mut x, &big, false, false, &mut sink).drain, 58);
        assert_eq!(c.from_peer(&mut x, &[7; 60], false, false, &mut sink).drain, 50);
        assert_eq!(c.from_peer(&mut x, b"app", false, false, &mut sink).drain, 0);
        // Malformed payload: drained, counted.
        let mut c = Connection::new(Role::Server);
        let mut bad = meshwasm_sdk::istio::peer::TCP_EXCHANGE_MAGIC.to_be_bytes().to_vec();
        bad.extend_from_slice(&3u32.to_be_bytes());
        bad.extend_from_slice(&[0xff; 3]);
        assert_eq!(c.from_peer(&mut x, &bad, false, false, &mut sink).drain, 11);
        // Truncated at the end of the stream: not found, nothing drained.
        let mut c = Connection::new(Role::Server);
        assert_eq!(c.from_peer(&mut x, &bad[..6], true, false, &mut sink), DataAction::default());
        assert_eq!(sink.counts, vec![Counter::Oversized, Counter::HeaderNotFound, Counter::InitialHeaderNotFound]);
        assert!(sink.props.iter().all(|(k, _)| k != "downstream_peer"));
    }

    #[test]
    fn client_sends_first_and_reads_the_server() {
        let mut x = exchange("{}");
        let mut c = Connection::new(Role::Client);
        let mut sink = Rec::default();
        assert_eq!(c.to_peer(&x, false, &mut sink).prepend, x.local_frame());
        let frame = encode_tcp_frame("server", &meta("server"));
        let a = c.from_peer(&mut x, &frame, false, false, &mut sink);
        assert_eq!(a.drain, frame.len());
        assert_eq!(sink.props[0], ("upstream_peer_id".into(), b"server".to_vec()));
        // A skipped cluster: nothing sent, the peer is known absent.
        let mut c = Connection::new(Role::Client);
        let mut sink = Rec::default();
        assert_eq!(c.to_peer(&x, true, &mut sink), DataAction::default());
        assert_eq!(sink.counts, vec![Counter::PropagationSkipped]);
        assert!(sink.props.iter().any(|(k, _)| k == PEER_NOT_FOUND));
    }

    #[test]
    fn mtls_only_refuses_plaintext_frames() {
        let mut x = exchange(r#"{"trust": "mtls_only"}"#);
        let mut c = Connection::new(Role::Server);
        let mut sink = Rec::default();
        let frame = encode_tcp_frame("client", &meta("client"));
        assert_eq!(c.from_peer(&mut x, &frame, false, false, &mut sink).drain, frame.len());
        assert_eq!(sink.counts, vec![Counter::Untrusted]);
        assert!(sink.props.iter().all(|(k, _)| k != "downstream_peer"));
        assert_eq!(c.to_peer(&x, false, &mut sink), DataAction::default(), "no frame of ours over plaintext");
        // Over mTLS the same frame is taken and answered.
        let mut c = Connection::new(Role::Server);
        assert_eq!(c.from_peer(&mut x, &frame, false, true, &mut sink).drain, frame.len());
        assert!(sink.props.iter().any(|(k, _)| k == "downstream_peer"));
        assert_eq!(c.to_peer(&x, false, &mut sink).prepend, x.local_frame());
    }
}
