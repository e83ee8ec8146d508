//! One HTTP stream through the filter chain, with Envoy's ordering: request
//! hooks in chain order, response hooks in reverse, a plugin's local reply
//! encoded only through the filters that saw the request, then on_log for
//! every filter followed by on_done and on_delete (Envoy calls the access
//! log before destroying filters).

use super::filter_chain::FilterChain;
use super::http1::{
    add_envoy_framing, add_peer_framing, as_received, forward_client_cert, http_date, is_grpc_request,
    local_reply_message, response_map,
};
use super::stream::{HeaderMap, HttpStream, LocalReplyRequest, Phase, Side};
use super::Proxy;
use crate::abi::{is_continue, LogLevel};
use crate::http1_framing::{Body, Encoded, PeerMessage};
use crate::result::{HttpMessage, HttpResponse, LocalReply, LogLine, StreamResult};
use crate::scenario::{ConnectionSpec, PluginType, ResponseSpec, StreamSpec};
use std::cell::RefCell;
use std::collections::VecDeque;
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

/// The stream hooks a side has.
#[derive(Clone, Copy)]
enum Hook {
    Headers,
    Body,
    Trailers,
}

/// The phase a hook runs in, and its export.
fn hook_export(side: Side, hook: Hook) -> (Phase, &'static str) {
    match (side, hook) {
        (Side::Request, Hook::Headers) => (Phase::RequestHeaders, "proxy_on_request_headers"),
        (Side::Request, Hook::Body) => (Phase::RequestBody, "proxy_on_request_body"),
        (Side::Request, Hook::Trailers) => (Phase::RequestTrailers, "proxy_on_request_trailers"),
        (Side::Response, Hook::Headers) => (Phase::ResponseHeaders, "proxy_on_response_headers"),
        (Side::Response, Hook::Body) => (Phase::ResponseBody, "proxy_on_response_body"),
        (Side::Response, Hook::Trailers) => (Phase::ResponseTrailers, "proxy_on_response_trailers"),
    }
}

/// What a headers pass does with a local reply asked for during it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnReply {
    /// Stop the pass: the caller encodes the reply.
    Stop,
    /// Go on: a reply is being encoded already, and the first one wins.
    Ignore,
}

struct Run<'p> {
    chain: FilterChain<'p>,
    /// The chain's stream (the same as `chain.stream`).
    stream: Rc<RefCell<HttpStream>>,
    /// Filters whose response hooks are skipped (their VM failed closed).
    skip_response: Vec<bool>,
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
        let (logs_before, calls_before) = {
            let mut st = self.state.borrow_mut();
            st.canned_http_calls.extend(spec.http_calls.iter().cloned());
            (st.logs.len(), st.http_calls.len())
        };
        let connection = spec.connection.clone().unwrap_or_else(|| default_conn.clone());
        let request_headers = self.request_headers(spec, &connection);
        let stream = HttpStream { request_headers, connection, ..Default::default() };
        let chain = FilterChain::new(self, PluginType::Http, spec.worker, stream);
        let n = chain.len();
        let mut run = Run {
            stream: chain.stream.clone(),
            chain,
            skip_response: vec![false; n],
            reply_started: false,
            direct_reply: false,
            sent_headers: None,
            sent_body: Vec::new(),
        };
        let mut result = StreamResult { name: spec.name.clone(), ..Default::default() };

        match run.request_path(spec) {
            Flow::Next => {
                let sent = run.send_upstream(spec);
                let from_hop = run.chain.proxy.forward_to_next_hop(spec, &sent);
                result.upstream_request = Some(sent);
                if from_hop.is_none() && run.chain.proxy.has_next_hop() {
                    run.upstream_reset_reply(&mut result);
                } else {
                    match run.upstream_response(spec, from_hop) {
                        Flow::Next => result.downstream_response = Some(run.downstream_response()),
                        Flow::Reply => run.reply(&mut result),
                        Flow::Reset => run.reset_after_headers(&mut result),
                        Flow::Stalled | Flow::Paused => run.note_stall(),
                    }
                }
            }
            Flow::Reply => run.reply(&mut result),
            Flow::Reset => result.reset = true,
            Flow::Stalled | Flow::Paused => run.note_stall(),
        }
        run.finish();
        result.plugin_failure = run.chain.failure.take();
        let st = run.chain.proxy.state.borrow();
        result.logs = st.logs[logs_before..].to_vec();
        result.http_calls = st.http_calls[calls_before..].to_vec();
        result
    }

    /// The request map as the first filter sees it: as the codec received
    /// it, plus what the connection manager adds before any filter runs.
    fn request_headers(&mut self, spec: &StreamSpec, connection: &ConnectionSpec) -> HeaderMap {
        let mut headers = as_received(&spec.request, connection.is_tls());
        if headers.get("x-forwarded-proto").is_none() {
            headers.add("x-forwarded-proto", if connection.is_tls() { b"https" } else { b"http" });
        }
        if headers.get("x-request-id").is_none() {
            let id = self.next_request_id();
            headers.add("x-request-id", id.as_bytes());
        }
        let inbound =
            self.vms.first().is_some_and(|v| v.store.data().facts.direction == crate::scenario::Direction::Inbound);
        forward_client_cert(&mut headers, connection, inbound);
        headers
    }

    fn next_request_id(&mut self) -> String {
        let mut st = self.state.borrow_mut();
        st.next_request_id += 1;
        // A fixed, recognisable UUID per stream keeps results repeatable.
        format!("00000000-0000-4000-8000-{:012x}", st.next_request_id)
    }
}

impl Run<'_> {
    /// The filters a side's hooks run through, up to the `through`th: the
    /// request in chain order; the response in reverse, without the filters
    /// whose VM failed closed (Envoy skips their encoder hooks).
    fn order(&self, side: Side, through: usize) -> Vec<usize> {
        match side {
            Side::Request => (0..through).collect(),
            Side::Response => (0..through).rev().filter(|f| !self.skip_response[*f]).collect(),
        }
    }

    /// Runs one hook and turns its result into the chain's next step.
    fn hook(&mut self, filter: usize, side: Side, hook: Hook, args: &[i32]) -> Flow {
        let (phase, export) = hook_export(side, hook);
        let Some(action) = self.chain.hook(filter, phase, export, args) else { return self.failed_filter(filter) };
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
    fn hook_and_wait(&mut self, filter: usize, side: Side, hook: Hook, args: &[i32]) -> Flow {
        match self.hook(filter, side, hook, args) {
            Flow::Paused => self.wait_for_resume(side, hook_export(side, hook).0),
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
        if self.chain.fails_open(filter) {
            return Flow::Next;
        }
        self.skip_response[filter] = true;
        let mut s = self.stream.borrow_mut();
        if s.local_reply.is_none() {
            s.local_reply = Some(LocalReplyRequest {
                plugin: self.chain.plugin(filter).name.clone(),
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
    fn wait_for_resume(&mut self, side: Side, phase: Phase) -> Flow {
        loop {
            {
                let mut s = self.stream.borrow_mut();
                if std::mem::take(s.resumed_mut(side)) {
                    s.phase = Some(phase);
                    return Flow::Next;
                }
            }
            if let Some(f) = self.after_callback() {
                return f;
            }
            if !self.chain.proxy.run_next_event(None) {
                return Flow::Stalled;
            }
        }
    }

    /// One side of the stream through `order`: headers, then the body as
    /// the codec delivers it, then trailers. Once the response headers leave
    /// the last filter they get the connection manager's last touches, and
    /// the client has them.
    fn message(&mut self, side: Side, order: &[usize], chunks: Vec<Vec<u8>>, trailers: HeaderMap) -> Flow {
        let headers_end = chunks.is_empty() && trailers.is_empty();
        let flow = self.headers_pass(side, order, headers_end, OnReply::Stop);
        if !matches!(flow, Flow::Next) {
            return flow;
        }
        if side == Side::Response {
            self.headers_leave();
            self.sent_headers = Some(self.stream.borrow().response_headers.clone());
        }
        if !headers_end {
            let flow = self.body(side, chunks, trailers.is_empty(), order);
            if !matches!(flow, Flow::Next) {
                return flow;
            }
        }
        if !trailers.is_empty() {
            return self.trailers_pass(side, order, trailers);
        }
        Flow::Next
    }

    /// The side's headers hooks through `order`. A filter holds the map from
    /// its hook until it continues or is resumed.
    fn headers_pass(&mut self, side: Side, order: &[usize], end_of_stream: bool, on_reply: OnReply) -> Flow {
        for &i in order {
            let count = self.stream.borrow().headers(side).len() as i32;
            self.stream.borrow_mut().held_headers_mut(side)[i] = true;
            match self.hook_and_wait(i, side, Hook::Headers, &[count, end_of_stream as i32]) {
                Flow::Next => {}
                Flow::Reply if on_reply == OnReply::Ignore => {}
                other => return other,
            }
            self.stream.borrow_mut().held_headers_mut(side)[i] = false;
        }
        Flow::Next
    }

    /// The side's trailers hooks through `order`.
    fn trailers_pass(&mut self, side: Side, order: &[usize], trailers: HeaderMap) -> Flow {
        *self.stream.borrow_mut().trailers_mut(side) = trailers;
        for &i in order {
            let count = self.stream.borrow().trailers(side).len() as i32;
            let flow = self.hook_and_wait(i, side, Hook::Trailers, &[count]);
            if !matches!(flow, Flow::Next) {
                return flow;
            }
        }
        Flow::Next
    }

    /// Delivers body chunks through `order`, as Envoy's HTTP/1 codec does:
    /// each chunk without end_of_stream, then (without trailers) an empty
    /// chunk with end_of_stream. A filter that pauses buffers: its next call
    /// sees everything buffered so far.
    fn body(&mut self, side: Side, chunks: Vec<Vec<u8>>, ends_stream: bool, order: &[usize]) -> Flow {
        // (data, end_of_stream, position in `order` it is delivered from)
        let mut deliveries: VecDeque<(Vec<u8>, bool, usize)> = chunks.into_iter().map(|c| (c, false, 0)).collect();
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
            if side == Side::Request && from == 0 {
                // Bytes received from the client so far (`request.size`
                // without a content-length).
                self.stream.borrow_mut().request_body_bytes += chunk.len() as u64;
            }
            let mut data = chunk;
            let mut passed = true;
            for (pos, &filter) in order.iter().enumerate().skip(from) {
                if side == Side::Response && self.skip_response[filter] {
                    continue;
                }
                let mut buf = std::mem::take(&mut buffered[pos]);
                buf.extend_from_slice(&data);
                let len = buf.len() as i32;
                *self.stream.borrow_mut().body_mut(side) = buf;
                let take_body = |run: &mut Self| std::mem::take(run.stream.borrow_mut().body_mut(side));
                match self.hook(filter, side, Hook::Body, &[len, eos as i32]) {
                    Flow::Next => data = take_body(self),
                    Flow::Paused if !eos => {
                        // Buffering: hold the data here until more arrives.
                        buffered[pos] = take_body(self);
                        passed = false;
                        break;
                    }
                    Flow::Paused => match self.wait_for_resume(side, hook_export(side, Hook::Body).0) {
                        // Resumed at end of stream: the buffer moves on.
                        Flow::Next => data = take_body(self),
                        other => return other,
                    },
                    other => return other,
                }
            }
            if passed {
                delivered.extend_from_slice(&data);
                if side == Side::Response {
                    self.sent_body.extend_from_slice(&data);
                    self.stream.borrow_mut().response_body_bytes = self.sent_body.len() as u64;
                }
            }
        }
        *self.stream.borrow_mut().body_mut(side) = delivered;
        Flow::Next
    }

    fn request_path(&mut self, spec: &StreamSpec) -> Flow {
        let order = self.order(Side::Request, self.chain.len());
        self.message(Side::Request, &order, spec.request.chunks(), HeaderMap::from_list(&spec.request.trailers))
    }

    fn send_upstream(&mut self, spec: &StreamSpec) -> HttpMessage {
        let mut s = self.stream.borrow_mut();
        s.reached_upstream = true;
        // The router announces its timeout in the request's own header map
        // (on_log sees it, and `request.total_size` counts it: observed).
        // Set, not appended: a client proxy downstream sent its own
        // (observed in Envoy 1.40 with two Envoys in a chain).
        s.request_headers.replace("x-envoy-expected-rq-timeout-ms", ROUTE_TIMEOUT_MS.as_bytes());
        let mut headers = s.request_headers.clone();
        // HTTP/1.1 upstreams have no `:scheme`: it is not on the wire.
        headers.remove(":scheme");
        // The upstream codec frames what has no framing header left.
        let more = !spec.request.chunks().is_empty() || !spec.request.trailers.is_empty();
        let method = headers.get(":method").map(<[u8]>::to_vec);
        add_envoy_framing(&mut headers, Encoded::Request { method: method.as_deref() }, more);
        HttpMessage {
            headers: headers.to_list(),
            body: String::from_utf8_lossy(&s.request_body).into_owned(),
            trailers: s.request_trailers.to_list(),
        }
    }

    /// The upstream's answer, encoded through every filter in reverse chain
    /// order.
    fn upstream_response(&mut self, spec: &StreamSpec, from_hop: Option<ResponseSpec>) -> Flow {
        let upstream = from_hop.unwrap_or_else(|| spec.upstream.clone().unwrap_or_default());
        // While the request travels upstream Envoy's event loop runs what
        // was posted meanwhile (queue notifications) and what falls due.
        self.chain.proxy.advance(upstream.delay_ms);
        let chunks = upstream.chunks();
        let trailers = HeaderMap::from_list(&upstream.trailers);
        {
            let mut s = self.stream.borrow_mut();
            let mut h = response_map(upstream.status, &upstream.headers);
            // The upstream (as the envoy engine's server does) frames a body
            // with trailers or in several chunks as chunked, any other with
            // a content-length; Envoy keeps either header in the response
            // map. host-sim's upstream always frames a body: it does not
            // model the bodiless answers (HEAD, 1xx/204/304) that the envoy
            // engine's server sends without one.
            let body = Body::of(&chunks, !trailers.is_empty());
            add_peer_framing(&mut h, body, PeerMessage::Response { bodiless: false });
            // Set, not appended: a server proxy upstream sent its own
            // (observed in Envoy 1.40 with two Envoys in a chain).
            h.replace("x-envoy-upstream-service-time", upstream.delay_ms.to_string().as_bytes());
            s.response_code_details = "via_upstream".into();
            s.response_headers = h;
            s.response_code = Some(upstream.status);
            // `response.size` is the bytes sent downstream (counted as the
            // body passes every filter): a rewrite or a reset changes it.
            s.response_body_bytes = 0;
        }
        let order = self.order(Side::Response, self.chain.len());
        self.message(Side::Response, &order, chunks, trailers)
    }

    /// What the client receives: the response map as the downstream HTTP/1
    /// codec encodes it.
    fn downstream_response(&self) -> HttpResponse {
        let s = self.stream.borrow();
        let status: u16 = s.response_headers.get_str(":status").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut headers = s.response_headers.clone();
        let more = !s.response_body.is_empty() || !s.response_trailers.is_empty();
        add_envoy_framing(&mut headers, Encoded::Response { status }, more);
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
        let grpc = is_grpc_request(&self.stream.borrow().request_headers);
        let (status, map, body) = local_reply_message(&r, grpc);
        self.stream.borrow_mut().response_code_details = r.details.clone();
        result.local_reply = Some(reply_record(&r, String::from_utf8_lossy(&body).into_owned()));
        let through = if self.direct_reply { 0 } else { r.filter_index + 1 };
        match self.local_reply_path(status, &map.to_list(), body, through) {
            Flow::Next | Flow::Reply => result.downstream_response = Some(self.downstream_response()),
            Flow::Reset => result.reset = true,
            Flow::Stalled | Flow::Paused => self.note_stall(),
        }
    }

    /// A local reply through the first `through` filters in reverse chain
    /// order. Its body arrives in one piece with end_of_stream.
    fn local_reply_path(&mut self, status: u16, headers: &[(String, String)], body: Vec<u8>, through: usize) -> Flow {
        let order = self.order(Side::Response, through);
        {
            let mut s = self.stream.borrow_mut();
            s.response_headers = response_map(status, headers);
            s.response_code = Some(status);
            s.response_body_bytes = body.len() as u64;
            // The reply replaces whatever the upstream had sent so far.
            s.response_body.clear();
            s.response_trailers = HeaderMap::default();
        }
        let flow = self.headers_pass(Side::Response, &order, body.is_empty(), OnReply::Ignore);
        if !matches!(flow, Flow::Next) {
            return flow;
        }
        self.headers_leave();
        if !body.is_empty() {
            self.stream.borrow_mut().response_body = body;
            for &i in &order {
                let len = self.stream.borrow().response_body.len() as i32;
                match self.hook_and_wait(i, Side::Response, Hook::Body, &[len, 1]) {
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
        let now = self.chain.proxy.state.borrow().now_ns();
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
            result.local_reply = Some(reply_record(&r, String::new()));
        }
        let status: u16 = headers.get_str(":status").and_then(|v| v.parse().ok()).unwrap_or(0);
        add_envoy_framing(&mut headers, Encoded::Response { status }, true);
        result.downstream_response = Some(HttpResponse {
            status,
            headers: headers.to_list(),
            body: String::from_utf8_lossy(&self.sent_body).into_owned(),
            trailers: Vec::new(),
        });
    }

    /// The server proxy of a two-proxy chain reset the stream before its
    /// response started: the router answers 503 itself, through every
    /// filter's response hooks, with response flag UC (upstream connection
    /// termination: an HTTP/1 reset closes the connection) and no
    /// `x-envoy-upstream-service-time`. Observed in Envoy 1.40 with two
    /// Envoys in a chain; not a plugin's local reply, so `local_reply` stays
    /// null. (A reset after the response started is not modelled.)
    fn upstream_reset_reply(&mut self, result: &mut StreamResult) {
        const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
        let r = LocalReplyRequest {
            plugin: String::new(),
            filter_index: self.chain.len(),
            status: 503,
            details: "upstream_reset_before_response_started{connection_termination}".into(),
            body: b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"
                .to_vec(),
            headers: Vec::new(),
            grpc_status: None,
        };
        let grpc = is_grpc_request(&self.stream.borrow().request_headers);
        let (status, map, body) = local_reply_message(&r, grpc);
        {
            let mut s = self.stream.borrow_mut();
            s.response_code_details = r.details.clone();
            s.response_flags |= UPSTREAM_CONNECTION_TERMINATION;
        }
        self.reply_started = true;
        match self.local_reply_path(status, &map.to_list(), body, self.chain.len()) {
            Flow::Next | Flow::Reply => result.downstream_response = Some(self.downstream_response()),
            Flow::Reset => result.reset = true,
            Flow::Stalled | Flow::Paused => self.note_stall(),
        }
    }

    fn note_stall(&mut self) {
        self.chain.proxy.state.borrow_mut().logs.push(LogLine {
            level: LogLevel::Warn,
            plugin: "host-sim".into(),
            message: "stream paused and nothing can resume it: the client would wait for Envoy's stream idle timeout"
                .into(),
        });
    }

    /// Access log then destruction: on_log for every filter (creating the
    /// contexts of filters the request never reached), then on_done and
    /// on_delete.
    fn finish(&mut self) {
        let n = self.chain.len();
        {
            let mut s = self.stream.borrow_mut();
            s.end_ns = Some(self.chain.proxy.state.borrow().now_ns());
            s.phase = Some(Phase::Log);
        }
        for i in 0..n {
            if let Some(ctx) = self.chain.context(i) {
                self.chain.call(i, "proxy_on_log", &[ctx as i32]);
            }
        }
        for i in 0..n {
            if let Some(ctx) = self.chain.contexts[i] {
                self.chain.call(i, "proxy_on_done", &[ctx as i32]);
                self.chain.call(i, "proxy_on_delete", &[ctx as i32]);
                self.chain.delete_context(i, ctx);
            }
        }
    }
}

/// The result's record of a local reply, with the body the client got.
fn reply_record(r: &LocalReplyRequest, body: String) -> LocalReply {
    LocalReply {
        plugin: r.plugin.clone(),
        status: r.status,
        details: r.details.clone(),
        body,
        headers: r.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect(),
        grpc_status: r.grpc_status,
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
