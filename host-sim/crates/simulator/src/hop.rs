//! Two proxies in a chain (scenario `server_proxy`): the first proxy's
//! upstream is a second simulated proxy with its own node, direction,
//! plugins, VMs, metrics and virtual clock, whose upstream is the stream's
//! scripted `upstream`. The request the first proxy sends upstream (as its
//! HTTP/1 codec puts it on the wire) is what the second proxy's codec
//! receives; what the second proxy sends its client is the first proxy's
//! upstream response. The link between them is HTTP/1.1, plaintext or the
//! hop's mutual TLS (the server proxy's connection facts; the client
//! proxy's `upstream.*` TLS facts).

use super::{Proxy, VmLimits};
use crate::result::{ConnectionResult, HttpMessage, LogLine, RunResult, StreamResult};
use crate::scenario::{ConnectionSpec, MessageSpec, ResponseSpec, Scenario, StreamSpec};

/// The server proxy and what it has seen so far.
pub(crate) struct Hop {
    pub proxy: Proxy,
    /// Its side of each stream, in order.
    streams: Vec<StreamResult>,
    /// Its side of each TCP connection, in order.
    connections: Vec<ConnectionResult>,
    /// `logs[a..b]` of its state that belong to a stream (the rest are its
    /// root logs: start-up, ticks).
    stream_logs: Vec<(usize, usize)>,
    /// The link as the server proxy's downstream connection: plaintext, or
    /// the hop's mutual TLS (`server_proxy.mtls`).
    pub connection: ConnectionSpec,
}

impl Hop {
    pub fn start(server: &Scenario, limits: VmLimits) -> anyhow::Result<Hop> {
        Ok(Hop {
            proxy: Proxy::start(server, limits)?,
            streams: Vec::new(),
            connections: Vec::new(),
            stream_logs: Vec::new(),
            connection: server.connection.clone(),
        })
    }

    /// Runs one stream through the server proxy: `sent` is the request as
    /// the first proxy sent it upstream. Returns the server proxy's answer
    /// as the first proxy's upstream sees it (`delay_ms`: the virtual time
    /// the server proxy took), or None when it sent no response.
    pub fn forward(&mut self, spec: &StreamSpec, sent: &HttpMessage) -> Option<ResponseSpec> {
        // The server proxy's connection manager drops the client proxy's
        // router timeout header before any filter runs (observed in Envoy
        // 1.40: the server's plugins never see it; its own router sets it
        // again upstream).
        let headers = sent.headers.iter().filter(|(k, _)| k != "x-envoy-expected-rq-timeout-ms").cloned().collect();
        let request =
            MessageSpec { headers, body: Some(sent.body.clone()), body_chunks: None, trailers: sent.trailers.clone() };
        let hop_spec = StreamSpec {
            name: spec.name.clone(),
            request,
            upstream: spec.upstream.clone(),
            http_calls: Vec::new(),
            worker: None,
            connection: None,
            advance_ms_before: 0,
        };
        let (start_ns, logs_before) = {
            let st = self.proxy.state.borrow();
            (st.elapsed_ns, st.logs.len())
        };
        let r = self.proxy.run_stream(&hop_spec, &self.connection);
        let (end_ns, logs_after) = {
            let st = self.proxy.state.borrow();
            (st.elapsed_ns, st.logs.len())
        };
        self.stream_logs.push((logs_before, logs_after));
        let answer = r.downstream_response.as_ref().filter(|_| !r.reset).map(|resp| ResponseSpec {
            status: resp.status,
            headers: resp.headers.iter().filter(|(k, _)| !k.starts_with(':')).cloned().collect(),
            body: Some(resp.body.clone()),
            body_chunks: None,
            trailers: resp.trailers.clone(),
            delay_ms: (end_ns - start_ns) / 1_000_000,
        });
        self.streams.push(r);
        answer
    }

    /// Keeps the server proxy's streams aligned with the client's: a stream
    /// that never reached the server proxy (the client proxy answered it
    /// locally, or reset it) is an empty entry with only its name.
    pub fn align(&mut self, count: usize, name: &str) {
        while self.streams.len() < count {
            self.streams.push(StreamResult { name: name.to_string(), ..Default::default() });
        }
    }

    /// Records the server proxy's side of a TCP connection and the stretch
    /// of its logs that belongs to it.
    pub fn add_connection(&mut self, c: ConnectionResult, logs: (usize, usize)) {
        self.connections.push(c);
        self.stream_logs.push(logs);
    }

    /// The server proxy's own result.
    pub fn result(&self) -> RunResult {
        let st = self.proxy.state.borrow();
        let logs: Vec<LogLine> = st
            .logs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.stream_logs.iter().any(|(a, b)| i >= a && i < b))
            .map(|(_, l)| l.clone())
            .collect();
        RunResult {
            engine: "host-sim".into(),
            plugins: self.proxy.statuses.clone(),
            streams: self.streams.clone(),
            connections: self.connections.clone(),
            logs,
            metrics: st.metrics.values(),
            prometheus: self.proxy.prometheus(),
            ..Default::default()
        }
    }
}

impl Proxy {
    /// Lets virtual time pass in this proxy and the server proxy behind it.
    pub(crate) fn advance_chain(&mut self, ms: u64) {
        self.advance(ms);
        if let Some(hop) = &mut self.next_hop {
            hop.proxy.advance(ms);
        }
    }

    /// Sends the request upstream to the server proxy, if there is one.
    /// None: no server proxy (the scripted upstream answers) or it sent no
    /// response.
    pub(crate) fn forward_to_next_hop(&mut self, spec: &StreamSpec, sent: &HttpMessage) -> Option<ResponseSpec> {
        self.next_hop.as_mut()?.forward(spec, sent)
    }

    pub(crate) fn has_next_hop(&self) -> bool {
        self.next_hop.is_some()
    }
}
