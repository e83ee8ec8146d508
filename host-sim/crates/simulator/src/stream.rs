//! Per-stream state that every plugin in the chain sees: the header maps and
//! bodies as the filters mutate them, filter state, the local reply, and the
//! facts properties are computed from.

use crate::abi::{HostResult, Status};
use crate::http1_framing::Declared;
use crate::scenario::ConnectionSpec;
use std::collections::HashMap;

/// A header map as Envoy keeps it: ordered, names lower-cased, values bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderMap(pub Vec<(String, Vec<u8>)>);

impl HeaderMap {
    pub fn from_list(list: &[(String, String)]) -> Self {
        Self(list.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect())
    }

    pub fn to_list(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect()
    }

    /// The first value of `key` (names compare case-insensitively).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_slice())
    }

    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Appends, as Envoy's header list does; a pseudo-header goes after the
    /// last pseudo-header instead (they always come first).
    pub fn add(&mut self, key: &str, value: &[u8]) {
        let key = key.to_ascii_lowercase();
        if key.starts_with(':') {
            let at = self.0.iter().position(|(k, _)| !k.starts_with(':')).unwrap_or(self.0.len());
            self.0.insert(at, (key, value.to_vec()));
        } else {
            self.0.push((key, value.to_vec()));
        }
    }

    /// Envoy's `setCopy`: removes every occurrence, then adds the new value
    /// (so a replaced header moves to the end; observed in Envoy 1.40).
    pub fn replace(&mut self, key: &str, value: &[u8]) {
        self.remove(key);
        self.add(key, value);
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of keys and values, as Envoy's `byteSize()` counts them.
    pub fn byte_size(&self) -> u64 {
        self.0.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    /// The HTTP/1 framing headers the map carries.
    pub fn declared(&self) -> Declared {
        Declared::of(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A half of an HTTP stream: the request (decoder hooks, in chain order) or
/// the response (encoder hooks, in reverse chain order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Where the stream is; decides which maps, buffers and properties a plugin
/// can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    /// `proxy_on_done` / `proxy_on_log` / `proxy_on_delete`.
    Log,
    /// A callout's answer (`proxy_on_http_call_response`) or another
    /// asynchronous callback.
    Async,
    /// Network filters: `proxy_on_downstream_data` (DownstreamData readable).
    DownstreamData,
    /// Network filters: `proxy_on_upstream_data` (UpstreamData readable).
    UpstreamData,
    /// Network filters: `proxy_on_new_connection` and the close callbacks.
    ConnectionEvent,
}

/// A reply a plugin asked for with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReplyRequest {
    pub plugin: String,
    /// Chain position of the plugin that sent it.
    pub filter_index: usize,
    pub status: u16,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub grpc_status: Option<i32>,
}

/// A property value stored in filter state (`set_property`, `wasm.<name>`).
#[derive(Debug, Clone)]
pub struct FilterStateEntry {
    pub value: Vec<u8>,
    pub read_only: bool,
}

/// What a filter context sees of its stream: an HTTP stream, or (with
/// `network` set) a TCP connection through network filters, which has no
/// header maps and no request/response properties.
#[derive(Debug, Default)]
pub struct HttpStream {
    /// A TCP connection seen by network filters, not an HTTP stream.
    pub network: bool,
    /// Network filters: the data the current `on_downstream_data` /
    /// `on_upstream_data` call is about (what Envoy's read or write buffer
    /// holds); filters may change it.
    pub downstream_data: Vec<u8>,
    pub upstream_data: Vec<u8>,
    /// Network filters: `proxy_continue_stream(Downstream)` was called.
    pub continue_reading: bool,
    /// Network filters: the TLS handshake has not finished yet (during
    /// `on_new_connection`), so the connection reads as plaintext.
    pub tls_pending: bool,
    /// `connection.tls_version` as first answered (Envoy caches it).
    pub tls_version_seen: std::cell::RefCell<Option<String>>,
    /// Network filters: bytes read from the client (each read's whole
    /// buffer, before any filter) and written to it (after the filters),
    /// Envoy's `bytesReceived` / `bytesSent` behind `request.size` /
    /// `response.size`.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub request_headers: HeaderMap,
    /// The body buffer the current filter sees (accumulated while it buffers).
    pub request_body: Vec<u8>,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_body: Vec<u8>,
    pub response_trailers: HeaderMap,
    pub phase: Option<Phase>,
    /// Per filter (chain index): whether it still holds Envoy's pointer to the
    /// request headers, from its `on_request_headers` until it returns
    /// Continue or is resumed. Header reads need it (BAD_ARGUMENT otherwise),
    /// and so do request-header properties (observed in Envoy 1.40:
    /// `request.path` is NOT_FOUND in response headers).
    pub held_request_headers: Vec<bool>,
    /// The same for the response headers.
    pub held_response_headers: Vec<bool>,
    pub filter_state: HashMap<String, FilterStateEntry>,
    pub local_reply: Option<LocalReplyRequest>,
    /// Set by `proxy_continue_stream` / `proxy_close_stream` during a callback.
    pub continue_request: bool,
    pub continue_response: bool,
    pub close_requested: bool,
    pub connection: ConnectionSpec,
    pub connection_id: u64,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub response_code: Option<u16>,
    pub response_code_details: String,
    pub response_flags: u64,
    pub reached_upstream: bool,
    pub route_cache_cleared: u32,
}

impl HttpStream {
    pub fn headers(&self, side: Side) -> &HeaderMap {
        match side {
            Side::Request => &self.request_headers,
            Side::Response => &self.response_headers,
        }
    }

    pub fn body_mut(&mut self, side: Side) -> &mut Vec<u8> {
        match side {
            Side::Request => &mut self.request_body,
            Side::Response => &mut self.response_body,
        }
    }

    pub fn trailers(&self, side: Side) -> &HeaderMap {
        match side {
            Side::Request => &self.request_trailers,
            Side::Response => &self.response_trailers,
        }
    }

    pub fn trailers_mut(&mut self, side: Side) -> &mut HeaderMap {
        match side {
            Side::Request => &mut self.request_trailers,
            Side::Response => &mut self.response_trailers,
        }
    }

    /// Per filter: whether it holds the side's headers.
    pub fn held_headers_mut(&mut self, side: Side) -> &mut Vec<bool> {
        match side {
            Side::Request => &mut self.held_request_headers,
            Side::Response => &mut self.held_response_headers,
        }
    }

    /// `proxy_continue_stream` was called for the side.
    pub fn resumed_mut(&mut self, side: Side) -> &mut bool {
        match side {
            Side::Request => &mut self.continue_request,
            Side::Response => &mut self.continue_response,
        }
    }

    pub fn holds_request_headers(&self, filter: usize) -> bool {
        self.held_request_headers.get(filter).copied().unwrap_or(false)
    }

    pub fn set_filter_state(&mut self, key: String, value: Vec<u8>) -> HostResult<()> {
        if let Some(existing) = self.filter_state.get(&key) {
            if existing.read_only {
                return Err(Status::BadArgument);
            }
        }
        self.filter_state.insert(key, FilterStateEntry { value, read_only: false });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_semantics() {
        let mut m =
            HeaderMap::from_list(&[("X-A".into(), "1".into()), ("b".into(), "2".into()), ("x-a".into(), "3".into())]);
        assert_eq!(m.get("x-a"), Some(&b"1"[..]), "first value, names lower-cased");
        m.replace("X-A", b"9");
        assert_eq!(
            m.to_list(),
            vec![("b".into(), "2".into()), ("x-a".into(), "9".into())],
            "replace = remove + append"
        );
        m.add("b", b"4");
        m.remove("B");
        assert_eq!(m.to_list(), vec![("x-a".into(), "9".into())]);
        m.replace("new", b"v");
        assert_eq!(m.get("new"), Some(&b"v"[..]));
    }
}
