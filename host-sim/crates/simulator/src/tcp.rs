//! One TCP connection through the network filter chain in front of
//! `tcp_proxy`, with Envoy's ordering (network/filter_manager_impl.cc and the
//! Wasm network filter; sequences checked in Envoy 1.40 by
//! tests/conformance/tcp.json):
//!
//! - Reads run the read filters in chain order from the first one, each
//!   time: a filter not yet initialized gets `on_new_connection` first, then
//!   `on_downstream_data` with everything read and not yet passed on. A
//!   filter that returns StopIteration ends the pass and the data stays
//!   buffered, so the next read offers it again, with the new bytes, from the
//!   first filter. `tcp_proxy` comes last: it connects upstream when it is
//!   initialized and forwards (drains) what reaches it.
//! - Writes (upstream → client) run the filters in reverse chain order with
//!   `on_upstream_data`; the upstream's end of stream also raises
//!   `on_upstream_connection_close(Unknown)` in each filter.
//! - When the connection closes, each filter in chain order gets
//!   `on_downstream_connection_close` (Remote when the client ended it,
//!   Local when the proxy did) and then, at once, `on_done`, `on_log`,
//!   `on_delete`.

use super::filter_chain::FilterChain;
use super::stream::{HttpStream, Phase};
use super::Proxy;
use crate::abi::is_continue;
use crate::result::ConnectionResult;
use crate::scenario::{ConnectionSpec, PluginType, Side, TcpConnectionSpec, TcpStep};
use std::cell::RefCell;
use std::rc::Rc;

/// Envoy's response flags for a refused connect: UF (upstream connection
/// failure) and URX (tcp_proxy gave up on its connect attempts); observed
/// together in Envoy 1.40.
const UPSTREAM_CONNECT_REFUSED: u64 = 0x20 | 0x8000;

/// proxy-wasm PeerType / CloseType values.
const PEER_UNKNOWN: i32 = 0;
const PEER_LOCAL: i32 = 1;
const PEER_REMOTE: i32 = 2;

struct TcpRun<'p> {
    /// The network filter chain.
    chain: FilterChain<'p>,
    /// The chain's connection (the same as `chain.stream`).
    conn: Rc<RefCell<HttpStream>>,
    /// Filters that got `on_new_connection` (Envoy's `initialized_`).
    initialized: Vec<bool>,
    /// `tcp_proxy` has been initialized (it connects upstream then).
    proxy_initialized: bool,
    upstream_unreachable: bool,
    /// Client bytes read and not yet forwarded upstream.
    read_buffer: Vec<u8>,
    /// The client has half-closed (FIN read).
    read_end: bool,
    /// Upstream bytes not yet written to the client.
    write_buffer: Vec<u8>,
    write_end: bool,
    /// The upstream's FIN has been passed on to the client.
    client_got_fin: bool,
    /// The client's FIN has been passed on to the upstream.
    upstream_fin: bool,
    /// The read filter that returned StopIteration last, if the read side is
    /// held (a later `proxy_continue_stream(Downstream)` resumes after it).
    paused_at: Option<usize>,
    closed: bool,
    result: ConnectionResult,
    upstream_received: Vec<u8>,
    downstream_received: Vec<u8>,
}

impl Proxy {
    pub(crate) fn run_connection(
        &mut self,
        spec: &TcpConnectionSpec,
        default_conn: &ConnectionSpec,
    ) -> ConnectionResult {
        if self.next_hop.is_some() {
            return self.run_connection_via_hop(spec, default_conn);
        }
        let logs_before = self.state.borrow().logs.len();
        let mut run = TcpRun::open(self, spec, default_conn);
        for step in spec.steps() {
            if run.closed {
                break;
            }
            run.step(step);
        }
        // Whatever is still open closes: the client first, then the upstream.
        if !run.closed && !run.read_end {
            run.step(TcpStep::Close(Side::Downstream));
        }
        if !run.closed && !run.write_end {
            run.step(TcpStep::Close(Side::Upstream));
        }
        // Still open (a filter holds a FIN back): the client gives up and
        // drops the connection, as the envoy engine's client does.
        run.close(PEER_REMOTE);
        run.finish(logs_before)
    }

    /// A connection through two proxies (scenario `server_proxy`): the
    /// client proxy's `tcp_proxy` connects to the server proxy, whose
    /// `tcp_proxy` connects to the TCP upstream. Each scenario step is
    /// applied where it happens (client bytes and FIN at the client proxy,
    /// upstream bytes and FIN at the server proxy), then whatever one proxy
    /// forwards is delivered to the other until nothing moves.
    fn run_connection_via_hop(&mut self, spec: &TcpConnectionSpec, default_conn: &ConnectionSpec) -> ConnectionResult {
        let Some(mut hop) = self.next_hop.take() else { return ConnectionResult::default() };
        let logs_before = self.state.borrow().logs.len();
        let server_logs_before = hop.proxy.state.borrow().logs.len();
        let server_spec = TcpConnectionSpec {
            name: spec.name.clone(),
            events: Vec::new(),
            upstream_unreachable: spec.upstream_unreachable,
            worker: None,
            connection: Some(hop.connection.clone()),
            advance_ms_before: 0,
        };
        let result;
        let server_result;
        {
            let mut client = TcpRun::open(self, spec, default_conn);
            let mut server: Option<TcpRun> = None;
            let mut link = Link { idle: Some(&mut hop.proxy), ..Default::default() };
            link.pump(&mut client, &mut server, &server_spec);
            for step in spec.steps() {
                if client.closed {
                    break;
                }
                match step {
                    TcpStep::UpstreamData(_) | TcpStep::Close(Side::Upstream) => {
                        if let Some(sv) = server.as_mut().filter(|sv| !sv.closed) {
                            sv.step(step);
                        }
                    }
                    TcpStep::Advance(ms) => {
                        client.step(TcpStep::Advance(ms));
                        match server.as_mut() {
                            Some(sv) => sv.step(TcpStep::Advance(ms)),
                            None => {
                                if let Some(p) = link.idle.as_mut() {
                                    p.advance(ms);
                                }
                            }
                        }
                    }
                    other => client.step(other),
                }
                link.pump(&mut client, &mut server, &server_spec);
            }
            if !client.closed && !client.read_end {
                client.step(TcpStep::Close(Side::Downstream));
                link.pump(&mut client, &mut server, &server_spec);
            }
            if let Some(sv) = server.as_mut().filter(|sv| !sv.closed && !sv.write_end) {
                sv.step(TcpStep::Close(Side::Upstream));
            }
            link.pump(&mut client, &mut server, &server_spec);
            client.close(PEER_REMOTE);
            link.pump(&mut client, &mut server, &server_spec);
            // The upstream closes once the client side is gone, as the
            // envoy engine's upstream does at the end of a connection.
            if let Some(sv) = server.as_mut().filter(|sv| !sv.closed && !sv.write_end) {
                sv.step(TcpStep::Close(Side::Upstream));
            }
            server_result = server.map(|mut sv| {
                sv.close(PEER_REMOTE);
                sv.finish(server_logs_before)
            });
            result = client.finish(logs_before);
        }
        let server_logs_after = hop.proxy.state.borrow().logs.len();
        hop.add_connection(
            server_result.unwrap_or_else(|| ConnectionResult { name: spec.name.clone(), ..Default::default() }),
            (server_logs_before, server_logs_after),
        );
        self.next_hop = Some(hop);
        result
    }
}

/// What has crossed the connection between the two proxies so far.
#[derive(Default)]
struct Link<'s> {
    /// The server proxy until it accepts the connection.
    idle: Option<&'s mut Proxy>,
    /// Bytes of the client proxy's `upstream_received` delivered to the
    /// server proxy.
    up: usize,
    /// Bytes of the server proxy's `downstream_received` delivered to the
    /// client proxy.
    down: usize,
    up_fin: bool,
    down_fin: bool,
    down_closed: bool,
}

impl<'s> Link<'s> {
    /// Delivers what one proxy forwarded to the other until nothing moves.
    fn pump(&mut self, client: &mut TcpRun, server: &mut Option<TcpRun<'s>>, server_spec: &TcpConnectionSpec) {
        // The client proxy's tcp_proxy connected: the server proxy accepts.
        if server.is_none() && client.result.upstream_connected {
            if let Some(p) = self.idle.take() {
                // `server_spec.connection` is the hop's (plaintext or mTLS).
                *server = Some(TcpRun::open(p, server_spec, &ConnectionSpec::default()));
            }
        }
        let Some(sv) = server.as_mut() else { return };
        loop {
            let mut moved = false;
            if self.up < client.upstream_received.len() && !sv.closed {
                let delta = client.upstream_received[self.up..].to_vec();
                self.up = client.upstream_received.len();
                sv.step(TcpStep::DownstreamData(delta));
                moved = true;
            }
            if client.upstream_fin && !self.up_fin && !sv.closed {
                self.up_fin = true;
                sv.step(TcpStep::Close(Side::Downstream));
                moved = true;
            }
            if self.down < sv.downstream_received.len() && !client.closed {
                let delta = sv.downstream_received[self.down..].to_vec();
                self.down = sv.downstream_received.len();
                client.step(TcpStep::UpstreamData(delta));
                moved = true;
            }
            if sv.client_got_fin && !self.down_fin && !client.closed {
                self.down_fin = true;
                client.step(TcpStep::Close(Side::Upstream));
                moved = true;
            }
            // The server proxy closed the connection without a FIN first
            // (a plugin, a failed VM): the client proxy's upstream is gone.
            if sv.closed && !self.down_fin && !self.down_closed && !client.closed {
                self.down_closed = true;
                client.step(TcpStep::Close(Side::Upstream));
                moved = true;
            }
            // The client proxy's connection closed (its client reset it,
            // say): tcp_proxy closes the upstream connection gracefully, so
            // the server proxy reads a FIN and keeps its upstream side open
            // until the upstream closes (observed in Envoy 1.40 with two
            // Envoys in a chain).
            if client.closed && !self.up_fin && !sv.closed {
                self.up_fin = true;
                sv.step(TcpStep::Close(Side::Downstream));
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }
}

impl<'p> TcpRun<'p> {
    /// Accepts the connection: the read filters are initialized at once
    /// (the TLS handshake finishes after that, before any data).
    fn open(proxy: &'p mut Proxy, spec: &TcpConnectionSpec, default_conn: &ConnectionSpec) -> TcpRun<'p> {
        let conn = HttpStream {
            network: true,
            connection: spec.connection.clone().unwrap_or_else(|| default_conn.clone()),
            tls_pending: true,
            ..Default::default()
        };
        let mut chain = FilterChain::new(proxy, PluginType::Network, spec.worker, conn);
        // Outside a callback the data buffers are gone (NOT_FOUND), as in
        // Envoy.
        chain.phase_after_hook = Some(Phase::Async);
        let n = chain.len();
        let mut run = TcpRun {
            conn: chain.stream.clone(),
            chain,
            initialized: vec![false; n],
            proxy_initialized: false,
            upstream_unreachable: spec.upstream_unreachable,
            read_buffer: Vec::new(),
            read_end: false,
            write_buffer: Vec::new(),
            write_end: false,
            client_got_fin: false,
            upstream_fin: false,
            paused_at: None,
            closed: false,
            result: ConnectionResult { name: spec.name.clone(), ..Default::default() },
            upstream_received: Vec::new(),
            downstream_received: Vec::new(),
        };
        run.read_pass(0);
        run.conn.borrow_mut().tls_pending = false;
        run
    }

    /// The connection's result, with the logs since `logs_before`.
    fn finish(mut self, logs_before: usize) -> ConnectionResult {
        let mut result = std::mem::take(&mut self.result);
        result.upstream_received = String::from_utf8_lossy(&self.upstream_received).into_owned();
        result.downstream_received = String::from_utf8_lossy(&self.downstream_received).into_owned();
        result.plugin_failure = self.chain.failure.take();
        result.logs = self.chain.proxy.state.borrow().logs[logs_before..].to_vec();
        result
    }
}

impl TcpRun<'_> {
    fn step(&mut self, step: TcpStep) {
        match step {
            TcpStep::DownstreamData(bytes) => {
                self.read_buffer.extend_from_slice(&bytes);
                self.read_pass(0);
            }
            // Without an upstream connection there is nobody to send.
            TcpStep::UpstreamData(_) | TcpStep::Close(Side::Upstream) if !self.result.upstream_connected => {}
            TcpStep::UpstreamData(bytes) => {
                self.write_buffer.extend_from_slice(&bytes);
                self.write_pass();
            }
            TcpStep::Close(Side::Downstream) => {
                self.read_end = true;
                self.read_pass(0);
                // The client's FIN after the proxy's own: the socket is done.
                if !self.closed && self.client_got_fin {
                    self.close(PEER_REMOTE);
                }
            }
            TcpStep::Close(Side::Upstream) => {
                self.write_end = true;
                self.write_pass();
            }
            TcpStep::ResetDownstream => self.close(PEER_REMOTE),
            TcpStep::Advance(ms) => {
                self.chain.proxy.advance(ms);
                self.after_async_callbacks();
            }
        }
    }

    /// A timer or callout callback may have asked (through
    /// `proxy_set_effective_context`) to close the connection or to resume
    /// the held read side.
    fn after_async_callbacks(&mut self) {
        if std::mem::take(&mut self.conn.borrow_mut().close_requested) {
            self.close(PEER_LOCAL);
        } else if let Some(filter) = self.paused_at {
            self.resume_if_asked(filter);
        }
    }

    /// Runs a filter callback in `phase`; true when the filter lets the data
    /// (or the connection) go on. A failed VM closes the connection unless
    /// the plugin fails open. (Contexts are created on first use: Envoy does
    /// it in onNewConnection.)
    fn hook(&mut self, filter: usize, phase: Phase, export: &'static str, args: &[i32]) -> bool {
        let Some(action) = self.chain.hook(filter, phase, export, args) else { return self.failed(filter) };
        if std::mem::take(&mut self.conn.borrow_mut().close_requested) {
            self.close(PEER_LOCAL);
            return false;
        }
        is_continue(action)
    }

    fn failed(&mut self, filter: usize) -> bool {
        if self.chain.fails_open(filter) {
            return true;
        }
        self.close(PEER_LOCAL);
        false
    }

    /// One pass of the read filters from `from` (Envoy's onContinueReading),
    /// ending in `tcp_proxy`.
    fn read_pass(&mut self, from: usize) {
        if from == 0 {
            // Envoy counts a read into the connection's bytesReceived
            // (`request.size`) as the whole buffer it hands the filters, so
            // bytes a filter held are counted again with the next read
            // (observed in Envoy 1.40: 3, then 3+2 held, then 5 at the FIN
            // give 13).
            self.conn.borrow_mut().bytes_received += self.read_buffer.len() as u64;
        }
        for filter in from..self.chain.len() {
            if self.closed {
                return;
            }
            if !self.initialized[filter] {
                self.initialized[filter] = true;
                if !self.hook(filter, Phase::ConnectionEvent, "proxy_on_new_connection", &[]) {
                    self.paused_at = Some(filter);
                    return self.resume_if_asked(filter);
                }
            }
            if self.read_buffer.is_empty() && !self.read_end {
                continue;
            }
            let data = std::mem::take(&mut self.read_buffer);
            let (len, end) = (data.len() as i32, self.read_end);
            self.conn.borrow_mut().downstream_data = data;
            let go_on = self.hook(filter, Phase::DownstreamData, "proxy_on_downstream_data", &[len, end as i32]);
            self.read_buffer = std::mem::take(&mut self.conn.borrow_mut().downstream_data);
            if !go_on {
                self.paused_at = Some(filter);
                return self.resume_if_asked(filter);
            }
        }
        self.paused_at = None;
        if !self.closed {
            self.tcp_proxy_read();
        }
    }

    /// `proxy_continue_stream(Downstream)` during the pass: go on after the
    /// filter that called it (Envoy's continueReading).
    fn resume_if_asked(&mut self, filter: usize) {
        if !self.closed && std::mem::take(&mut self.conn.borrow_mut().continue_reading) {
            self.read_pass(filter + 1);
        }
    }

    /// `tcp_proxy` as the last read filter: connect when first reached,
    /// then forward the data and the client's FIN.
    fn tcp_proxy_read(&mut self) {
        if !self.proxy_initialized {
            self.proxy_initialized = true;
            // The host is picked (upstream.address is known) even when the
            // connect then fails.
            self.conn.borrow_mut().reached_upstream = true;
            if self.upstream_unreachable {
                self.conn.borrow_mut().response_flags |= UPSTREAM_CONNECT_REFUSED;
                self.close(PEER_LOCAL);
                return;
            }
            self.result.upstream_connected = true;
        }
        self.upstream_received.append(&mut self.read_buffer);
        if self.read_end {
            self.upstream_fin = true;
        }
    }

    /// Upstream data (and FIN) through the write filters, last filter first.
    fn write_pass(&mut self) {
        if self.closed {
            return;
        }
        for filter in (0..self.chain.len()).rev() {
            if self.chain.contexts[filter].is_none() {
                continue;
            }
            let data = std::mem::take(&mut self.write_buffer);
            let (len, end) = (data.len() as i32, self.write_end);
            self.conn.borrow_mut().upstream_data = data;
            let go_on = self.hook(filter, Phase::UpstreamData, "proxy_on_upstream_data", &[len, end as i32]);
            self.write_buffer = std::mem::take(&mut self.conn.borrow_mut().upstream_data);
            if self.closed {
                return;
            }
            if end {
                // Envoy's Wasm filter reports the upstream's end of stream as
                // an upstream close of unknown origin.
                if let Some(ctx) = self.chain.contexts[filter] {
                    self.conn.borrow_mut().phase = Some(Phase::ConnectionEvent);
                    self.chain.call(filter, "proxy_on_upstream_connection_close", &[ctx as i32, PEER_UNKNOWN]);
                }
            }
            if !go_on {
                return;
            }
        }
        self.conn.borrow_mut().bytes_sent += self.write_buffer.len() as u64;
        self.downstream_received.append(&mut self.write_buffer);
        if self.write_end && !self.client_got_fin {
            self.client_got_fin = true;
            // Both directions are finished: the proxy closes the connection.
            if self.read_end {
                self.close(PEER_LOCAL);
            }
        }
    }

    /// The connection closes: each filter hears it, then is done, logged and
    /// deleted (Envoy's onCloseTCP), in chain order.
    fn close(&mut self, peer: i32) {
        if self.closed {
            return;
        }
        self.closed = true;
        {
            let mut c = self.conn.borrow_mut();
            c.end_ns = Some(self.chain.proxy.state.borrow().now_ns());
        }
        for filter in 0..self.chain.len() {
            let Some(ctx) = self.chain.contexts[filter] else { continue };
            self.conn.borrow_mut().phase = Some(Phase::ConnectionEvent);
            self.chain.call(filter, "proxy_on_downstream_connection_close", &[ctx as i32, peer]);
            self.conn.borrow_mut().phase = Some(Phase::Log);
            self.chain.call(filter, "proxy_on_done", &[ctx as i32]);
            self.chain.call(filter, "proxy_on_log", &[ctx as i32]);
            self.chain.call(filter, "proxy_on_delete", &[ctx as i32]);
            self.chain.delete_context(filter, ctx);
        }
    }
}

impl Proxy {
    /// A connection for benchmarks: like `run_connection`, but the logs are
    /// dropped so memory stays flat.
    pub fn bench_connection(&mut self, spec: &TcpConnectionSpec, conn: &ConnectionSpec) {
        self.run_connection(spec, conn);
        self.state.borrow_mut().logs.clear();
    }
}
