//! One HTTP stream through the filter chain, with Envoy's ordering: request
//! hooks in chain order, response hooks in reverse, a plugin's local reply
//! encoded only through the filters that saw the request, then on_log for
//! every filter followed by on_done and on_delete (Envoy calls the access
//! log before destroying filters).

use super::stream::{HeaderMap, HttpStream, Phase};
use super::vm::CallOutcome;
use super::{set_active, Proxy};
use crate::abi::{is_continue, LogLevel};
use crate::result::{HttpMessage, HttpResponse, LocalReply, LogLine, PluginFailure, StreamResult};
use crate::scenario::{ConnectionSpec, StreamSpec};
use std::cell::RefCell;
use std::rc::Rc;

/// Envoy's route timeout default, which the router announces upstream.
const ROUTE_TIMEOUT_MS: &str = "15000";

/// How a step of the chain ended.
enum Flow {
    /// Go on to the next filter / phase.
    Next,
    /// A plugin replied locally (or failed closed): encode the reply.
    Reply,
    /// The stream was reset (`proxy_close_stream`).
    Reset,
    /// The hook returned a stop status (Pause); the caller decides whether
    /// that means buffering or waiting for `proxy_continue_stream`.
    Paused,
    /// Paused and nothing is left that could resume it.
    Stalled,
}

struct Run<'p> {
    proxy: &'p mut Proxy,
    stream: Rc<RefCell<HttpStream>>,
    worker: usize,
    /// Context id of each filter, once created.
    contexts: Vec<Option<u32>>,
    /// Filters whose response hooks are skipped (their VM failed closed).
    skip_response: Vec<bool>,
    failure: Option<PluginFailure>,
    /// A local reply is being encoded: later replies are ignored.
    reply_started: bool,
    /// The reply goes straight to the codec, past every encoder filter.
    direct_reply: bool,
    /// The upstream response's headers once every filter let them go
    /// downstream, and the body bytes that followed them: what the client
    /// has if the stream is reset afterwards.
    sent_headers: Option<HeaderMap>,
    sent_body: Vec<u8>,
}

impl Proxy {
    pub(crate) fn run_stream(&mut self, spec: &StreamSpec, default_conn: &ConnectionSpec) -> StreamResult {
        let worker = self.pick_worker(spec.worker);
        let n = self.plugins.len();
        self.next_stream_id += 1;
        let (logs_before, calls_before) = {
            let mut st = self.state.borrow_mut();
            st.canned_http_calls.extend(spec.http_calls.iter().cloned());
            (st.logs.len(), st.http_calls.len())
        };
        let connection = spec.connection.clone().unwrap_or_else(|| default_conn.clone());
        let mut request_headers = as_received(&spec.request, connection.is_tls());
        // The connection manager adds these before any filter runs.
        if request_headers.get("x-forwarded-proto").is_none() {
            request_headers.add("x-forwarded-proto", if connection.is_tls() { b"https" } else { b"http" });
        }
        if request_headers.get("x-request-id").is_none() {
            let id = self.next_request_id();
            request_headers.add("x-request-id", id.as_bytes());
        }
        let inbound = self.vms.first().is_some_and(|v| v.store.data().facts.direction == crate::scenario::Direction::Inbound);
        forward_client_cert(&mut request_headers, &connection, inbound);
        let stream = Rc::new(RefCell::new(HttpStream {
            id: self.next_stream_id,
            request_headers,
            held_request_headers: vec![false; n],
            held_response_headers: vec![false; n],
            connection,
            connection_id: self.next_stream_id,
            start_ns: self.state.borrow().now_ns(),
            ..Default::default()
        }));
        let mut run = Run {
            proxy: self,
            stream,
            worker,
            contexts: vec![None; n],
            skip_response: vec![false; n],
            failure: None,
            reply_started: false,
            direct_reply: false,
            sent_headers: None,
            sent_body: Vec::new(),
        };
        let mut result = StreamResult { name: spec.name.clone(), ..Default::default() };

        let flow = run.request_path(spec);
        match flow {
            Flow::Next => {
                result.upstream_request = Some(run.send_upstream(spec));
                let upstream = spec.upstream.clone().unwrap_or_default();
                match run.response_path(
                    upstream.status,
                    &upstream.headers,
                    upstream.chunks(),
                    &upstream.trailers,
                    n,
                    upstream.delay_ms,
                ) {
                    Flow::Next => result.downstream_response = Some(run.downstream_response()),
                    Flow::Reply => run.reply(&mut result),
                    Flow::Reset => run.reset_after_headers(&mut result),
                    Flow::Stalled | Flow::Paused => run.note_stall(),
                }
            }
            Flow::Reply => run.reply(&mut result),
            Flow::Reset => result.reset = true,
            Flow::Stalled | Flow::Paused => run.note_stall(),
        }
        run.finish();
        result.plugin_failure = run.failure.take();
        let st = run.proxy.state.borrow();
        result.logs = st.logs[logs_before..].to_vec();
        result.http_calls = st.http_calls[calls_before..].to_vec();
        result
    }

    fn next_request_id(&mut self) -> String {
        let mut st = self.state.borrow_mut();
        st.next_request_id += 1;
        // A fixed, recognisable UUID per stream keeps results repeatable.
        format!("00000000-0000-4000-8000-{:012x}", st.next_request_id)
    }
}

/// The request headers as Envoy's HTTP/1 codec hands them to the filters:
/// `:authority`, `:path`, `:method`, `:scheme` first, then the client's
/// headers in order, with the body's framing header as the client sent it.
fn as_received(request: &crate::scenario::MessageSpec, tls: bool) -> HeaderMap {
    let given = HeaderMap::from_list(&request.headers);
    let mut h = HeaderMap::default();
    for pseudo in [":authority", ":path", ":method"] {
        if let Some(v) = given.get(pseudo) {
            h.add(pseudo, v);
        }
    }
    h.add(":scheme", given.get(":scheme").unwrap_or(if tls { b"https" } else { b"http" }));
    h.0.extend(given.0.iter().filter(|(k, _)| !k.starts_with(':')).cloned());
    // The client (like the envoy engine's) frames a body with trailers or in
    // several chunks as chunked, any other body with a content-length. The
    // HTTP/1 codec takes `transfer-encoding` out of the header map (observed
    // in Envoy 1.40: plugins never see it; the upstream codec re-frames).
    let chunks = request.chunks();
    let explicit = h.get("content-length").is_some() || h.get("transfer-encoding").is_some();
    if !explicit && request.trailers.is_empty() && chunks.len() == 1 && !chunks[0].is_empty() {
        h.add("content-length", chunks[0].len().to_string().as_bytes());
    }
    h.remove("transfer-encoding");
    h
}

/// `x-forwarded-client-cert` as the connection manager sets it: on inbound
/// (Istio's sidecar: APPEND_FORWARD with subject, URI and DNS) an mTLS
/// client's details are appended (in place to the client's header, else a
/// new header after x-request-id); without a client certificate, and on
/// other listeners (SANITIZE, Envoy's default), the header is removed.
/// Observed in Envoy 1.40.
fn forward_client_cert(h: &mut HeaderMap, connection: &ConnectionSpec, inbound: bool) {
    let peer = super::properties::peer_certificate(connection);
    let Some(peer) = peer.filter(|_| inbound) else {
        h.remove("x-forwarded-client-cert");
        return;
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(local) = super::properties::local_certificate(connection) {
        parts.extend(local.uri_sans.iter().map(|u| format!("By={u}")));
    }
    parts.push(format!("Hash={}", super::properties::peer_digest(&peer)));
    parts.push(format!("Subject=\"{}\"", peer.subject));
    if peer.uri_sans.is_empty() {
        parts.push("URI=".into());
    }
    parts.extend(peer.uri_sans.iter().map(|u| format!("URI={u}")));
    parts.extend(peer.dns_sans.iter().map(|d| format!("DNS={d}")));
    let value = parts.join(";");
    match h.0.iter_mut().find(|(k, _)| k == "x-forwarded-client-cert") {
        Some((_, v)) => {
            v.push(b',');
            v.extend_from_slice(value.as_bytes());
        }
        None => h.add("x-forwarded-client-cert", value.as_bytes()),
    }
}

/// An IMF-fixdate (`Thu, 01 Jan 2026 00:00:00 GMT`) for nanoseconds since
/// the Unix epoch.
fn http_date(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days.rem_euclid(7)) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Methods Envoy's HTTP/1 codec sends without `content-length: 0` when the
/// request has no body (`HeaderUtility::requestShouldHaveNoBody`).
fn bodiless_method(method: Option<&[u8]>) -> bool {
    matches!(method, Some(b"GET" | b"HEAD" | b"DELETE" | b"TRACE" | b"CONNECT"))
}

/// The framing header an HTTP/1 codec puts at the end of a message it
/// encodes from a header map without one: `transfer-encoding: chunked` when
/// a body or trailers follow the headers, else `content-length: 0` (not for
/// 1xx/204 responses or bodiless request methods).
fn wire_framing(h: &mut HeaderMap, more_follows: bool, zero_length_allowed: bool) {
    if h.get("content-length").is_some() || h.get("transfer-encoding").is_some() {
        return;
    }
    if more_follows {
        h.add("transfer-encoding", b"chunked");
    } else if zero_length_allowed {
        h.add("content-length", b"0");
    }
}

/// Whether Envoy treats the request as gRPC (local replies become
/// trailers-only gRPC responses).
fn is_grpc_request(h: &HeaderMap) -> bool {
    h.get("content-type").is_some_and(|v| v == b"application/grpc" || v.starts_with(b"application/grpc+") || v.starts_with(b"application/grpc;"))
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub(crate) fn http_to_grpc_status(code: u16) -> i64 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Envoy's `PercentEncoding::encode` for `grpc-message`: bytes outside
/// printable ASCII and `%` are escaped.
fn percent_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if !(b' '..=b'~').contains(&c) || c == b'%' {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

impl Run<'_> {
    fn placement(&self, filter: usize) -> super::Placement {
        self.proxy.threads[self.worker][filter]
    }

    /// Creates the filter's stream context on first use (Envoy does it in
    /// decodeHeaders, or at access-log time for filters never reached).
    fn context(&mut self, filter: usize) -> Option<u32> {
        if let Some(id) = self.contexts[filter] {
            return Some(id);
        }
        let place = self.placement(filter);
        if self.proxy.vms[place.vm].failed.is_some() {
            return None;
        }
        let slot = self.proxy.vms[place.vm].store.data().contexts[&place.root_context].plugin;
        let id = self.proxy.new_context(place.vm, slot, Some((self.stream.clone(), filter, place.root_context)));
        self.contexts[filter] = Some(id);
        let outcome = self.call(filter, "proxy_on_context_create", &[id as i32, place.root_context as i32]);
        if let Some(CallOutcome::Trapped(_)) = outcome {
            return None;
        }
        Some(id)
    }

    /// Calls a stream hook on a filter's VM; None when the VM has failed.
    fn call(&mut self, filter: usize, export: &'static str, args: &[i32]) -> Option<CallOutcome> {
        let place = self.placement(filter);
        let vm = &mut self.proxy.vms[place.vm];
        if vm.failed.is_some() {
            return None;
        }
        set_active(vm, args[0] as u32);
        let outcome = vm.call(export, args);
        if let CallOutcome::Trapped(msg) = &outcome {
            // Envoy logs a trap as its own error, not as a plugin log line:
            // it is reported in `plugin_failure`.
            let plugin = self.proxy.plugins[filter].name.clone();
            if self.failure.is_none() {
                self.failure = Some(PluginFailure { plugin, message: msg.clone() });
            }
        }
        Some(outcome)
    }

    /// Runs one hook and turns its result into the chain's next step.
    fn hook(&mut self, filter: usize, phase: Phase, export: &'static str, args: &[i32]) -> Flow {
        let Some(ctx) = self.context(filter) else { return self.failed_filter(filter) };
        self.stream.borrow_mut().phase = Some(phase);
        let mut full = vec![ctx as i32];
        full.extend_from_slice(args);
        let action = match self.call(filter, export, &full) {
            None | Some(CallOutcome::Trapped(_)) => return self.failed_filter(filter),
            Some(CallOutcome::Returned(r)) => r.unwrap_or(0) as i32,
            Some(CallOutcome::Missing) => 0,
        };
        if let Some(f) = self.after_callback() {
            return f;
        }
        if is_continue(action) {
            Flow::Next
        } else {
            Flow::Paused
        }
    }

    /// A hook whose stop status waits for `proxy_continue_stream` (headers
    /// and trailers: Envoy stops all iteration).
    fn hook_and_wait(&mut self, filter: usize, phase: Phase, export: &'static str, args: &[i32]) -> Flow {
        match self.hook(filter, phase, export, args) {
            Flow::Paused => {
                let request_side = matches!(phase, Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers);
                self.wait_for_resume(request_side, phase)
            }
            other => other,
        }
    }

    /// A local reply or close requested during the last callback.
    fn after_callback(&mut self) -> Option<Flow> {
        let s = self.stream.borrow();
        if s.close_requested {
            return Some(Flow::Reset);
        }
        if s.local_reply.is_some() && s.response_code.is_none() {
            return Some(Flow::Reply);
        }
        if s.local_reply.is_some() && !self.reply_started {
            // Asked for once the upstream response has started (Envoy's
            // FilterManager::sendLocalReply): while the filters still hold
            // the response headers the reply goes directly to the codec;
            // once they have gone downstream the stream is reset.
            if s.phase == Some(Phase::ResponseHeaders) {
                self.direct_reply = true;
                return Some(Flow::Reply);
            }
            return Some(Flow::Reset);
        }
        None
    }

    /// Envoy's handling of a failed VM: fail open passes traffic, fail closed
    /// answers 503 `wasm_fail_stream`, and the failed plugin's response hooks
    /// are skipped.
    fn failed_filter(&mut self, filter: usize) -> Flow {
        if self.proxy.plugins[filter].fail_open {
            return Flow::Next;
        }
        self.skip_response[filter] = true;
        let mut s = self.stream.borrow_mut();
        if s.local_reply.is_none() {
            s.local_reply = Some(super::stream::LocalReplyRequest {
                plugin: self.proxy.plugins[filter].name.clone(),
                filter_index: filter,
                status: 503,
                details: "wasm_fail_stream".into(),
                body: Vec::new(),
                headers: Vec::new(),
                grpc_status: Some(14),
            });
        }
        if s.response_code.is_some() {
            // Too late for a reply: the response has started.
            return Flow::Reset;
        }
        Flow::Reply
    }

    /// Processes asynchronous events until the paused side is resumed.
    fn wait_for_resume(&mut self, request_side: bool, phase: Phase) -> Flow {
        loop {
            {
                let mut s = self.stream.borrow_mut();
                let resumed = if request_side { &mut s.continue_request } else { &mut s.continue_response };
                if *resumed {
                    *resumed = false;
                    s.phase = Some(phase);
                    return Flow::Next;
                }
            }
            if let Some(f) = self.after_callback() {
                return f;
            }
            if !self.proxy.run_next_event(None) {
                return Flow::Stalled;
            }
        }
    }

    fn request_path(&mut self, spec: &StreamSpec) -> Flow {
        let n = self.proxy.plugins.len();
        let chunks = spec.request.chunks();
        let trailers = HeaderMap::from_list(&spec.request.trailers);
        let headers_end = chunks.is_empty() && trailers.is_empty();
        for i in 0..n {
            let count = self.stream.borrow().request_headers.len() as i32;
            self.stream.borrow_mut().held_request_headers[i] = true;
            let flow = self.hook_and_wait(i, Phase::RequestHeaders, "proxy_on_request_headers", &[count, headers_end as i32]);
            if !matches!(flow, Flow::Next) {
                return flow;
            }
            self.stream.borrow_mut().held_request_headers[i] = false;
        }
        if !headers_end {
            let flow = self.body(true, chunks, trailers.is_empty(), (0..n).collect());
            if !matches!(flow, Flow::Next) {
                return flow;
            }
        }
        if !trailers.is_empty() {
            self.stream.borrow_mut().request_trailers = trailers;
            for i in 0..n {
                let count = self.stream.borrow().request_trailers.len() as i32;
                let flow = self.hook_and_wait(i, Phase::RequestTrailers, "proxy_on_request_trailers", &[count]);
                if !matches!(flow, Flow::Next) {
                    return flow;
                }
            }
        }
        Flow::Next
    }

    /// Delivers body chunks through `order`, as Envoy's HTTP/1 codec does:
    /// each chunk without end_of_stream, then (without trailers) an empty
    /// chunk with end_of_stream. A filter that pauses buffers: its next call
    /// sees everything buffered so far.
    fn body(&mut self, request: bool, chunks: Vec<Vec<u8>>, ends_stream: bool, order: Vec<usize>) -> Flow {
        let (phase, export) = if request {
            (Phase::RequestBody, "proxy_on_request_body")
        } else {
            (Phase::ResponseBody, "proxy_on_response_body")
        };
        // (data, end_of_stream, position in `order` it is delivered from)
        let mut deliveries: std::collections::VecDeque<(Vec<u8>, bool, usize)> =
            chunks.into_iter().map(|c| (c, false, 0)).collect();
        if ends_stream {
            deliveries.push_back((Vec::new(), true, 0));
        }
        let mut buffered: Vec<Vec<u8>> = vec![Vec::new(); order.len()];
        let mut delivered: Vec<u8> = Vec::new();
        loop {
            let Some((chunk, eos, from)) = deliveries.pop_front() else {
                // Trailers follow (no chunk ended the stream): what a filter
                // buffered moves on to the next filters when they arrive, as
                // in Envoy; it is never dropped.
                match buffered.iter().position(|b| !b.is_empty()) {
                    Some(pos) if !ends_stream => {
                        deliveries.push_back((std::mem::take(&mut buffered[pos]), false, pos + 1));
                        continue;
                    }
                    _ => break,
                }
            };
            if request && from == 0 {
                // Bytes received from the client so far (`request.size`
                // without a content-length).
                self.stream.borrow_mut().request_body_bytes += chunk.len() as u64;
            }
            let mut data = chunk;
            let mut passed = true;
            for (pos, &filter) in order.iter().enumerate().skip(from) {
                if !request && self.skip_response[filter] {
                    continue;
                }
                let mut buf = std::mem::take(&mut buffered[pos]);
                buf.extend_from_slice(&data);
                self.set_body(request, buf);
                let len = self.body_len(request) as i32;
                let flow = self.hook(filter, phase, export, &[len, eos as i32]);
                match flow {
                    Flow::Next => data = self.take_body(request),
                    Flow::Paused if !eos => {
                        // Buffering: hold the data here until more arrives.
                        buffered[pos] = self.take_body(request);
                        passed = false;
                        break;
                    }
                    Flow::Paused => match self.wait_for_resume(request, phase) {
                        // Resumed at end of stream: the buffer moves on.
                        Flow::Next => data = self.take_body(request),
                        other => return other,
                    },
                    other => return other,
                }
            }
            if passed {
                delivered.extend_from_slice(&data);
                if !request {
                    self.sent_body.extend_from_slice(&data);
                    self.stream.borrow_mut().response_body_bytes = self.sent_body.len() as u64;
                }
            }
        }
        if request {
            self.stream.borrow_mut().request_body = delivered;
        } else {
            self.stream.borrow_mut().response_body = delivered;
        }
        Flow::Next
    }

    fn set_body(&mut self, request: bool, data: Vec<u8>) {
        let mut s = self.stream.borrow_mut();
        if request {
            s.request_body = data;
        } else {
            s.response_body = data;
        }
    }

    fn body_len(&self, request: bool) -> usize {
        let s = self.stream.borrow();
        if request {
            s.request_body.len()
        } else {
            s.response_body.len()
        }
    }

    fn take_body(&mut self, request: bool) -> Vec<u8> {
        let mut s = self.stream.borrow_mut();
        std::mem::take(if request { &mut s.request_body } else { &mut s.response_body })
    }

    fn send_upstream(&mut self, spec: &StreamSpec) -> HttpMessage {
        let mut s = self.stream.borrow_mut();
        s.reached_upstream = true;
        // The router announces its timeout in the request's own header map
        // (on_log sees it, and `request.total_size` counts it: observed).
        s.request_headers.add("x-envoy-expected-rq-timeout-ms", ROUTE_TIMEOUT_MS.as_bytes());
        let mut headers = s.request_headers.clone();
        // HTTP/1.1 upstreams have no `:scheme`: it is not on the wire.
        headers.remove(":scheme");
        // The upstream codec frames what has no framing header left.
        let more = !spec.request.chunks().is_empty() || !spec.request.trailers.is_empty();
        let zero_ok = !bodiless_method(headers.get(":method"));
        wire_framing(&mut headers, more, zero_ok);
        HttpMessage {
            headers: headers.to_list(),
            body: String::from_utf8_lossy(&s.request_body).into_owned(),
            trailers: s.request_trailers.to_list(),
        }
    }

    /// Encodes a response through the first `through` filters in reverse
    /// chain order.
    fn response_path(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        chunks: Vec<Vec<u8>>,
        trailers: &[(String, String)],
        through: usize,
        delay_ms: u64,
    ) -> Flow {
        // While the request travels upstream Envoy's event loop runs what
        // was posted meanwhile (queue notifications) and what falls due.
        self.proxy.advance(delay_ms);
        let trailers = HeaderMap::from_list(trailers);
        let total: usize = chunks.iter().map(Vec::len).sum();
        {
            let mut s = self.stream.borrow_mut();
            let mut h = HeaderMap::default();
            h.add(":status", status.to_string().as_bytes());
            for (k, v) in headers {
                h.add(k, v.as_bytes());
            }
            if s.reached_upstream {
                // The upstream (as the envoy engine's server does) frames a
                // body with trailers or in several chunks as chunked, any
                // other with a content-length; Envoy keeps either header in
                // the response map.
                if h.get("content-length").is_none() && h.get("transfer-encoding").is_none() {
                    if !trailers.is_empty() || chunks.len() > 1 {
                        h.add("transfer-encoding", b"chunked");
                    } else {
                        h.add("content-length", total.to_string().as_bytes());
                    }
                }
                h.add("x-envoy-upstream-service-time", delay_ms.to_string().as_bytes());
                s.response_code_details = "via_upstream".into();
            }
            s.response_headers = h;
            s.response_code = Some(status);
            // `response.size` is the bytes sent downstream (counted as the
            // body passes every filter): a rewrite or a reset changes it.
            s.response_body_bytes = 0;
        }
        let order: Vec<usize> = (0..through).rev().filter(|f| !self.skip_response[*f]).collect();
        let headers_end = chunks.is_empty() && trailers.is_empty();
        for &i in &order {
            let count = self.stream.borrow().response_headers.len() as i32;
            self.stream.borrow_mut().held_response_headers[i] = true;
            let flow = self.hook_and_wait(i, Phase::ResponseHeaders, "proxy_on_response_headers", &[count, headers_end as i32]);
            if !matches!(flow, Flow::Next) {
                return flow;
            }
            self.stream.borrow_mut().held_response_headers[i] = false;
        }
        self.headers_leave();
        self.sent_headers = Some(self.stream.borrow().response_headers.clone());
        if !headers_end {
            let flow = self.body(false, chunks, trailers.is_empty(), order.clone());
            if !matches!(flow, Flow::Next) {
                return flow;
            }
        }
        if !trailers.is_empty() {
            self.stream.borrow_mut().response_trailers = trailers;
            for &i in &order {
                let count = self.stream.borrow().response_trailers.len() as i32;
                let flow = self.hook_and_wait(i, Phase::ResponseTrailers, "proxy_on_response_trailers", &[count]);
                if !matches!(flow, Flow::Next) {
                    return flow;
                }
            }
        }
        Flow::Next
    }

    /// What the client receives: the response map as the downstream HTTP/1
    /// codec encodes it.
    fn downstream_response(&self) -> HttpResponse {
        let s = self.stream.borrow();
        let status: u16 = s.response_headers.get_str(":status").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut headers = s.response_headers.clone();
        let more = !s.response_body.is_empty() || !s.response_trailers.is_empty();
        wire_framing(&mut headers, more, status >= 200 && status != 204);
        HttpResponse {
            status,
            headers: headers.to_list(),
            body: String::from_utf8_lossy(&s.response_body).into_owned(),
            trailers: s.response_trailers.to_list(),
        }
    }

    /// Sends the pending local reply through the filters that saw the
    /// request (including the sender) and records it.
    fn reply(&mut self, result: &mut StreamResult) {
        let Some(r) = self.stream.borrow().local_reply.clone() else { return };
        self.reply_started = true;
        // Envoy puts the plugin's headers first, then its own: for a body,
        // its length and a default content type; for a gRPC request, a
        // trailers-only gRPC answer (status 200, grpc-status from the call or
        // mapped from the HTTP status, the body as grpc-message).
        let grpc = is_grpc_request(&self.stream.borrow().request_headers);
        let mut map = HeaderMap(r.headers.clone());
        let (status, body) = if grpc {
            map.replace("content-type", b"application/grpc");
            if map.get("grpc-status").is_none() {
                let code = r.grpc_status.map(i64::from).unwrap_or_else(|| http_to_grpc_status(r.status));
                map.add("grpc-status", code.to_string().as_bytes());
            }
            if !r.body.is_empty() {
                map.replace("grpc-message", &percent_encode(&r.body));
            }
            map.remove("content-length");
            (200, Vec::new())
        } else {
            if !r.body.is_empty() {
                map.replace("content-length", r.body.len().to_string().as_bytes());
                if map.get("content-type").is_none() {
                    map.add("content-type", b"text/plain");
                }
            }
            (r.status, r.body.clone())
        };
        let headers = map.to_list();
        self.stream.borrow_mut().response_code_details = r.details.clone();
        result.local_reply = Some(LocalReply {
            plugin: r.plugin.clone(),
            status: r.status,
            details: r.details.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            headers: r.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect(),
            grpc_status: r.grpc_status,
        });
        let chunks = if body.is_empty() { Vec::new() } else { vec![body] };
        // A local reply's body arrives in one piece with end_of_stream.
        let through = if self.direct_reply { 0 } else { r.filter_index + 1 };
        match self.local_reply_path(status, &headers, chunks, through) {
            Flow::Next | Flow::Reply => result.downstream_response = Some(self.downstream_response()),
            Flow::Reset => result.reset = true,
            Flow::Stalled | Flow::Paused => self.note_stall(),
        }
    }

    fn local_reply_path(&mut self, status: u16, headers: &[(String, String)], chunks: Vec<Vec<u8>>, through: usize) -> Flow {
        let order: Vec<usize> = (0..through).rev().filter(|f| !self.skip_response[*f]).collect();
        {
            let mut s = self.stream.borrow_mut();
            let mut h = HeaderMap::default();
            h.add(":status", status.to_string().as_bytes());
            for (k, v) in headers {
                h.add(k, v.as_bytes());
            }
            s.response_headers = h;
            s.response_code = Some(status);
            s.response_body_bytes = chunks.iter().map(Vec::len).sum::<usize>() as u64;
            // The reply replaces whatever the upstream had sent so far.
            s.response_body.clear();
            s.response_trailers = HeaderMap::default();
        }
        let headers_end = chunks.is_empty();
        for &i in &order {
            let count = self.stream.borrow().response_headers.len() as i32;
            self.stream.borrow_mut().held_response_headers[i] = true;
            match self.hook_and_wait(i, Phase::ResponseHeaders, "proxy_on_response_headers", &[count, headers_end as i32]) {
                Flow::Next | Flow::Reply => {}
                other => return other,
            }
            self.stream.borrow_mut().held_response_headers[i] = false;
        }
        self.headers_leave();
        if let Some(body) = chunks.into_iter().next() {
            self.stream.borrow_mut().response_body = body;
            for &i in &order {
                let len = self.body_len(false) as i32;
                match self.hook_and_wait(i, Phase::ResponseBody, "proxy_on_response_body", &[len, 1]) {
                    Flow::Next | Flow::Reply => {}
                    other => return other,
                }
            }
        }
        Flow::Next
    }

    /// The connection manager's last touches once the response headers have
    /// passed every filter (`mutateResponseHeaders`): `transfer-encoding`
    /// is removed (the codec frames the body itself), `date` and
    /// `server: envoy` are set. `on_log` sees the result (observed in 1.40).
    fn headers_leave(&mut self) {
        let now = self.proxy.state.borrow().now_ns();
        let mut s = self.stream.borrow_mut();
        let h = &mut s.response_headers;
        h.remove("transfer-encoding");
        h.replace("date", http_date(now).as_bytes());
        h.replace("server", b"envoy");
    }

    /// The stream was reset on the response path. If the response headers had
    /// already gone downstream the client has them (and the body bytes sent
    /// since), as observed in Envoy 1.40; a local reply asked for then was
    /// accepted (Ok) but only resets the stream.
    fn reset_after_headers(&mut self, result: &mut StreamResult) {
        result.reset = true;
        let Some(mut headers) = self.sent_headers.clone() else { return };
        let reply = self.stream.borrow().local_reply.clone();
        if let Some(r) = reply {
            self.stream.borrow_mut().response_code_details = r.details.clone();
            result.local_reply = Some(LocalReply {
                plugin: r.plugin.clone(),
                status: r.status,
                details: r.details.clone(),
                body: String::new(),
                headers: r.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect(),
                grpc_status: r.grpc_status,
            });
        }
        let status: u16 = headers.get_str(":status").and_then(|v| v.parse().ok()).unwrap_or(0);
        wire_framing(&mut headers, true, status >= 200 && status != 204);
        result.downstream_response = Some(HttpResponse {
            status,
            headers: headers.to_list(),
            body: String::from_utf8_lossy(&self.sent_body).into_owned(),
            trailers: Vec::new(),
        });
    }

    fn note_stall(&mut self) {
        self.proxy.state.borrow_mut().logs.push(LogLine {
            level: LogLevel::Warn,
            plugin: "host-sim".into(),
            message: "stream paused and nothing can resume it: the client would wait for Envoy's stream idle timeout".into(),
        });
    }

    /// Access log then destruction: on_log for every filter (creating the
    /// contexts of filters the request never reached), then on_done and
    /// on_delete.
    fn finish(&mut self) {
        let n = self.proxy.plugins.len();
        {
            let mut s = self.stream.borrow_mut();
            s.end_ns = Some(self.proxy.state.borrow().now_ns());
            s.phase = Some(Phase::Log);
        }
        for i in 0..n {
            if let Some(ctx) = self.context(i) {
                self.call(i, "proxy_on_log", &[ctx as i32]);
            }
        }
        for i in 0..n {
            if let Some(ctx) = self.contexts[i] {
                self.call(i, "proxy_on_done", &[ctx as i32]);
                self.call(i, "proxy_on_delete", &[ctx as i32]);
                let place = self.placement(i);
                self.proxy.vms[place.vm].store.data_mut().contexts.remove(&ctx);
            }
        }
    }
}

impl Proxy {
    /// A stream for benchmarks: like `run_stream`, but the logs and call
    /// records are dropped so memory stays flat.
    pub fn bench_stream(&mut self, spec: &StreamSpec, conn: &ConnectionSpec) {
        self.run_stream(spec, conn);
        let mut st = self.state.borrow_mut();
        st.logs.clear();
        st.http_calls.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::http_date;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_767_225_600 * 1_000_000_000), "Thu, 01 Jan 2026 00:00:00 GMT");
        assert_eq!(http_date(1_803_811_907 * 1_000_000_000), "Sun, 28 Feb 2027 10:51:47 GMT");
        assert_eq!(http_date(1_764_325_907 * 1_000_000_000 + 999), "Fri, 28 Nov 2025 10:31:47 GMT");
    }
}
