//! One HTTP stream through the filter chain, with Envoy's ordering: request
//! hooks in chain order, response hooks in reverse, a plugin's local reply
//! encoded only through the filters that saw the request, then on_log for
//! every filter followed by on_done and on_delete (Envoy calls the access
//! log before destroying filters).

use super::http1::{
    as_received, bodiless_method, forward_client_cert, http_date, http_to_grpc_status, is_grpc_request, percent_encode,
    wire_framing,
};
use super::stream::{HeaderMap, HttpStream, Phase};
use super::vm::CallOutcome;
use super::Proxy;
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
    /// The HTTP filter chain: plugin index of each filter position.
    chain: Vec<usize>,
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
        let chain = self.chain_of(crate::scenario::PluginType::Http);
        let n = chain.len();
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
        let inbound =
            self.vms.first().is_some_and(|v| v.store.data().facts.direction == crate::scenario::Direction::Inbound);
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
            chain,
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

impl Run<'_> {
    fn placement(&self, filter: usize) -> super::Placement {
        self.proxy.threads[self.worker][self.chain[filter]]
    }

    fn plugin(&self, filter: usize) -> &super::PluginInfo {
        &self.proxy.plugins[self.chain[filter]]
    }

    /// Creates the filter's stream context on first use (Envoy does it in
    /// decodeHeaders, or at access-log time for filters never reached).
    fn context(&mut self, filter: usize) -> Option<u32> {
        if let Some(id) = self.contexts[filter] {
            return Some(id);
        }
        let (id, created) = self.proxy.create_filter_context(
            self.worker,
            self.chain[filter],
            self.stream.clone(),
            filter,
            &mut self.failure,
        )?;
        self.contexts[filter] = Some(id);
        created.then_some(id)
    }

    /// Calls a stream hook on a filter's VM; None when the VM has failed.
    fn call(&mut self, filter: usize, export: &'static str, args: &[i32]) -> Option<CallOutcome> {
        self.proxy.call_filter(self.worker, self.chain[filter], export, args, &mut self.failure)
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
        if self.plugin(filter).fail_open {
            return Flow::Next;
        }
        self.skip_response[filter] = true;
        let mut s = self.stream.borrow_mut();
        if s.local_reply.is_none() {
            s.local_reply = Some(super::stream::LocalReplyRequest {
                plugin: self.plugin(filter).name.clone(),
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
        let n = self.chain.len();
        let chunks = spec.request.chunks();
        let trailers = HeaderMap::from_list(&spec.request.trailers);
        let headers_end = chunks.is_empty() && trailers.is_empty();
        for i in 0..n {
            let count = self.stream.borrow().request_headers.len() as i32;
            self.stream.borrow_mut().held_request_headers[i] = true;
            let flow =
                self.hook_and_wait(i, Phase::RequestHeaders, "proxy_on_request_headers", &[count, headers_end as i32]);
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
            let flow = self.hook_and_wait(
                i,
                Phase::ResponseHeaders,
                "proxy_on_response_headers",
                &[count, headers_end as i32],
            );
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

    fn local_reply_path(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        chunks: Vec<Vec<u8>>,
        through: usize,
    ) -> Flow {
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
            match self.hook_and_wait(
                i,
                Phase::ResponseHeaders,
                "proxy_on_response_headers",
                &[count, headers_end as i32],
            ) {
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
