//! HTTP/1 framing: which header delimits a message's body on the wire,
//! `content-length` or `transfer-encoding: chunked`, as the two kinds of
//! HTTP/1 writer in a scenario frame it:
//!
//! - the peers, which have the whole message at hand ([`peer_framing`]): the
//!   envoy engine's client and servers write this way, and host-sim assumes
//!   the same of the client, upstream and callout servers it simulates;
//! - Envoy's own HTTP/1 codec, which frames a header map as it streams
//!   ([`envoy_framing`]): what goes upstream and back to the client.
//!
//! Both engines use these functions, so the rule is written once. Pure (no
//! wasmtime, no I/O): it belongs to the contract both engines share.

/// A framing header a writer adds to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingHeader {
    ContentLength(usize),
    Chunked,
}

impl FramingHeader {
    pub fn name(self) -> &'static str {
        match self {
            FramingHeader::ContentLength(_) => "content-length",
            FramingHeader::Chunked => "transfer-encoding",
        }
    }

    pub fn value(self) -> String {
        match self {
            FramingHeader::ContentLength(n) => n.to_string(),
            FramingHeader::Chunked => "chunked".into(),
        }
    }
}

/// The framing headers a message already carries (names compare
/// case-insensitively).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    pub content_length: bool,
    /// Any `transfer-encoding` header.
    pub transfer_encoding: bool,
    /// A `transfer-encoding` that lists `chunked`.
    pub chunked: bool,
}

impl Declared {
    pub fn of<K: AsRef<str>, V: AsRef<[u8]>>(headers: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut d = Declared::default();
        for (k, v) in headers {
            let k = k.as_ref();
            if k.eq_ignore_ascii_case("content-length") {
                d.content_length = true;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                d.transfer_encoding = true;
                d.chunked |= v.as_ref().split(|c| *c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        d
    }
}

/// The body a peer writes after the headers, known in advance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Body {
    pub chunks: usize,
    /// Bytes in all chunks.
    pub len: usize,
    pub trailers: bool,
}

impl Body {
    pub fn of(chunks: &[Vec<u8>], trailers: bool) -> Self {
        Body { chunks: chunks.len(), len: chunks.iter().map(Vec::len).sum(), trailers }
    }
}

/// What a peer writes, for [`peer_framing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMessage {
    Request,
    /// `bodiless`: the response may carry no body ([`bodiless_response`]).
    Response {
        bodiless: bool,
    },
}

/// How a peer frames a message it writes with its whole body at hand:
/// declared framing is kept; otherwise a message with trailers or several
/// chunks goes chunked, and one with a body gets a `content-length` (a
/// response always does: `content-length: 0` keeps an empty one from being
/// delimited by the connection's end); a bodiless response gets none.
/// Returns the header to add, if any, and whether the body goes out chunked.
pub fn peer_framing(declared: Declared, body: Body, message: PeerMessage) -> (Option<FramingHeader>, bool) {
    if declared.chunked {
        return (None, true);
    }
    if declared.content_length || message == (PeerMessage::Response { bodiless: true }) {
        return (None, false);
    }
    if body.trailers || body.chunks > 1 {
        return (Some(FramingHeader::Chunked), true);
    }
    if body.len > 0 || matches!(message, PeerMessage::Response { .. }) {
        return (Some(FramingHeader::ContentLength(body.len)), false);
    }
    (None, false)
}

/// A response that carries no body on HTTP/1: 1xx, 204, 304, or the answer
/// to a HEAD request.
pub fn bodiless_response(status: u16, head_request: bool) -> bool {
    head_request || status == 204 || status == 304 || (100..200).contains(&status)
}

/// The message Envoy's codec encodes, for [`envoy_framing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded<'a> {
    /// A request upstream, with its `:method`.
    Request { method: Option<&'a [u8]> },
    /// A response downstream, with its `:status`.
    Response { status: u16 },
}

/// Methods Envoy's HTTP/1 codec sends without `content-length: 0` when the
/// request has no body (`HeaderUtility::requestShouldHaveNoBody`).
pub fn bodiless_method(method: Option<&[u8]>) -> bool {
    matches!(method, Some(b"GET" | b"HEAD" | b"DELETE" | b"TRACE" | b"CONNECT"))
}

/// The framing header Envoy's HTTP/1 codec puts at the end of a message it
/// encodes from a header map without one (any `content-length` or
/// `transfer-encoding` counts): `transfer-encoding: chunked` when a body or
/// trailers follow the headers, else `content-length: 0` (not for 1xx/204
/// responses or bodiless request methods).
pub fn envoy_framing(declared: Declared, message: Encoded<'_>, more_follows: bool) -> Option<FramingHeader> {
    if declared.content_length || declared.transfer_encoding {
        return None;
    }
    if more_follows {
        return Some(FramingHeader::Chunked);
    }
    let zero_length_allowed = match message {
        Encoded::Request { method } => !bodiless_method(method),
        Encoded::Response { status } => status >= 200 && status != 204,
    };
    zero_length_allowed.then_some(FramingHeader::ContentLength(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(list: &[(&str, &str)]) -> Declared {
        Declared::of(list.iter().map(|(k, v)| (*k, v.as_bytes())))
    }

    #[test]
    fn peers_frame_what_they_know() {
        let none = Declared::default();
        let one = Body::of(&[b"abc".to_vec()], false);
        assert_eq!(peer_framing(none, one, PeerMessage::Request), (Some(FramingHeader::ContentLength(3)), false));
        assert_eq!(peer_framing(none, Body::default(), PeerMessage::Request), (None, false), "no body, no header");
        let empty = PeerMessage::Response { bodiless: false };
        assert_eq!(peer_framing(none, Body::default(), empty), (Some(FramingHeader::ContentLength(0)), false));
        let bodiless = PeerMessage::Response { bodiless: true };
        assert_eq!(peer_framing(none, one, bodiless), (None, false));
        let two = Body::of(&[b"a".to_vec(), b"b".to_vec()], false);
        assert_eq!(peer_framing(none, two, PeerMessage::Request), (Some(FramingHeader::Chunked), true));
        let trailers = Body::of(&[b"a".to_vec()], true);
        assert_eq!(peer_framing(none, trailers, empty), (Some(FramingHeader::Chunked), true));
        assert_eq!(peer_framing(declared(&[("Content-Length", "1")]), two, PeerMessage::Request), (None, false));
        let te = declared(&[("transfer-encoding", "gzip, Chunked")]);
        assert_eq!(peer_framing(te, one, PeerMessage::Request), (None, true));
    }

    #[test]
    fn envoy_frames_what_has_no_framing_header() {
        let none = Declared::default();
        let get = Encoded::Request { method: Some(b"GET") };
        let post = Encoded::Request { method: Some(b"POST") };
        assert_eq!(envoy_framing(none, get, false), None);
        assert_eq!(envoy_framing(none, post, false), Some(FramingHeader::ContentLength(0)));
        assert_eq!(envoy_framing(none, get, true), Some(FramingHeader::Chunked));
        assert_eq!(envoy_framing(none, Encoded::Response { status: 204 }, false), None);
        assert_eq!(
            envoy_framing(none, Encoded::Response { status: 200 }, false),
            Some(FramingHeader::ContentLength(0))
        );
        assert_eq!(envoy_framing(declared(&[("transfer-encoding", "gzip")]), post, true), None);
        assert_eq!(FramingHeader::Chunked.name(), "transfer-encoding");
        assert_eq!(FramingHeader::ContentLength(7).value(), "7");
    }
}
