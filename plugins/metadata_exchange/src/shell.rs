//! The plugin shell: the root context reads the configuration and the
//! node (once per configuration: the header value is computed here), the
//! HTTP context hands the stream's headers and facts to the exchange.
//! Every host call goes through `meshwasm_sdk::host`, which never panics: a
//! failed read is a missing fact, a failed write is skipped.

use crate::exchange::{Counter, Direction, Exchange, Facts, Headers, Received, Sink};
use crate::tcp::{Connection, DataAction, Role};
use meshwasm_sdk::host::BufferType;
use meshwasm_sdk::host::{self, LogLevel, MapType, MetricType};
use meshwasm_sdk::istio::peer::LocalPeer;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Configuration errors: each tolerated one (an unknown field) and a
/// refused configuration; counted once per configure of each VM.
pub const CONFIG_ERRORS: &str = "metadata_exchange.config_errors";

pub fn root(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(Root { shared: Rc::new(RefCell::new(None)) })
}

fn log(level: LogLevel, message: &str) {
    let _ = host::log(level, message);
}

struct State {
    exchange: Exchange,
    counters: HashMap<Counter, u32>,
}

type Shared = Rc<RefCell<Option<State>>>;

struct Root {
    shared: Shared,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = host::plugin_configuration_or_log("metadata_exchange") else { return false };
        // Defined first, so that a refused configuration is counted too.
        let config_errors = host::define_metric(MetricType::Counter, CONFIG_ERRORS).ok();
        let count_config_error = || {
            if let Some(id) = config_errors {
                let _ = host::increment_metric(id, 1);
            }
        };
        let settings = match crate::config::parse(&bytes) {
            Ok((settings, tolerated)) => {
                for e in tolerated {
                    log(LogLevel::Error, &format!("metadata_exchange: {e}"));
                    count_config_error();
                }
                settings
            }
            Err(e) => {
                log(LogLevel::Error, &format!("metadata_exchange: {e}"));
                count_config_error();
                return false;
            }
        };
        // The node never changes: its payload is computed once here.
        let local = property(&["xds", "node"]).and_then(|n| LocalPeer::from_node_proto(&n)).unwrap_or_default();
        if local.id.is_empty() {
            log(LogLevel::Warn, "metadata_exchange: no node id; the id header is not sent");
        }
        // Every counter exists from the start, so it reads 0 until it counts.
        let counters = Counter::ALL
            .iter()
            .filter_map(|c| host::define_metric(MetricType::Counter, c.name()).ok().map(|id| (*c, id)))
            .collect();
        *self.shared.borrow_mut() = Some(State { exchange: Exchange::new(settings, local), counters });
        true
    }

    /// Decided per context: the same configuration serves the HTTP filter
    /// and the network filter.
    fn get_type(&self) -> Option<ContextType> {
        Some(meshwasm_sdk::property::new_context_type())
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(TcpStream { shared: self.shared.clone(), conn: None }))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { shared: self.shared.clone(), direction: None, received: Received::default() }))
    }
}

struct Stream {
    shared: Shared,
    direction: Option<Direction>,
    received: Received,
}

impl Stream {
    fn direction(&mut self) -> Direction {
        *self.direction.get_or_insert_with(|| Direction::from_property(property_i64(&["xds", "listener_direction"])))
    }
}

struct HostHeaders(MapType);

impl Headers for HostHeaders {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        host::get_header(self.0, name).ok().flatten()
    }
    fn remove(&mut self, name: &str) {
        let _ = host::remove_header(self.0, name);
    }
    fn replace(&mut self, name: &str, value: &[u8]) {
        let _ = host::replace_header(self.0, name, value);
    }
}

struct HostSink<'a>(&'a HashMap<Counter, u32>);

impl Sink for HostSink<'_> {
    fn set_property(&mut self, key: &str, value: &[u8]) {
        let _ = host::set_property(&[key], value);
    }
    fn count(&mut self, counter: Counter) {
        if let Some(id) = self.0.get(&counter) {
            let _ = host::increment_metric(*id, 1);
        }
    }
}

fn downstream_mtls() -> bool {
    property(&["connection", "mtls"]).and_then(|b| meshwasm_sdk::property::decode_bool(&b)).unwrap_or(false)
}

/// Envoy 1.40 has no `upstream.mtls`: the upstream connection is mTLS when
/// the upstream presented a certificate and we presented ours.
fn upstream_mtls() -> bool {
    let present = |path: &[&str]| property(path).is_some_and(|v| !v.is_empty());
    (present(&["upstream", "uri_san_peer_certificate"]) || present(&["upstream", "subject_peer_certificate"]))
        && (present(&["upstream", "uri_san_local_certificate"]) || present(&["upstream", "subject_local_certificate"]))
}

/// A cluster metadata flag under `istio`: a bool, or the string `true`.
fn cluster_flag(key: &str) -> bool {
    match property(&["xds", "cluster_metadata", "filter_metadata", "istio", key]) {
        Some(v) => v == [1] || v.eq_ignore_ascii_case(b"true"),
        None => false,
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let direction = self.direction();
        let mut guard = self.shared.borrow_mut();
        let Some(state) = guard.as_mut() else { return Action::Continue };
        let mtls = downstream_mtls();
        // Only read when we may propagate.
        let skip_propagation = direction != Direction::Inbound && skip_propagation(&state.exchange.settings);
        let State { exchange, counters } = state;
        self.received = exchange.on_request(
            direction,
            Facts { mtls, skip_propagation },
            &mut HostHeaders(MapType::RequestHeaders),
            &mut HostSink(counters),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let direction = self.direction();
        let mut guard = self.shared.borrow_mut();
        let Some(state) = guard.as_mut() else { return Action::Continue };
        let strict = state.exchange.settings.trust == crate::config::Trust::MtlsOnly;
        // The TLS facts are only read when they matter.
        let upstream = Facts { mtls: strict && upstream_mtls(), skip_propagation: false };
        let down = strict && downstream_mtls();
        let State { exchange, counters } = state;
        exchange.on_response(
            direction,
            self.received,
            upstream,
            down,
            &mut HostHeaders(MapType::ResponseHeaders),
            &mut HostSink(counters),
        );
        Action::Continue
    }
}

/// Whether the upstream cluster must not get our metadata.
fn skip_propagation(settings: &crate::config::Settings) -> bool {
    let name = property(&["xds", "cluster_name"]).map(host::lossy).unwrap_or_default();
    crate::exchange::skip_cluster(
        settings,
        &name,
        cluster_flag("disable_mx"),
        settings.skip_external_clusters && cluster_flag("external"),
    )
}

/// A TCP connection through the network filter (see `tcp`).
struct TcpStream {
    shared: Shared,
    conn: Option<Connection>,
}

impl TcpStream {
    fn on_data(&mut self, buffer: BufferType, size: usize, eos: bool) -> Action {
        let mut guard = self.shared.borrow_mut();
        let Some(State { exchange, counters }) = guard.as_mut() else { return Action::Continue };
        let conn = self.conn.get_or_insert_with(|| {
            // Inbound (or unspecified): the server side, which only answers.
            let role = match Direction::from_property(property_i64(&["xds", "listener_direction"])) {
                Direction::Outbound => Role::Client,
                _ => Role::Server,
            };
            Connection::new(role)
        });
        let from_peer = matches!(
            (conn.role(), buffer),
            (Role::Server, BufferType::DownstreamData) | (Role::Client, BufferType::UpstreamData)
        );
        let mut sink = HostSink(counters);
        let action = if from_peer {
            let data = host::get_buffer(buffer, 0, size).ok().flatten().unwrap_or_default();
            let mtls = match conn.role() {
                Role::Server => downstream_mtls(),
                Role::Client => exchange.settings.trust == crate::config::Trust::MtlsOnly && upstream_mtls(),
            };
            conn.from_peer(exchange, &data, eos, mtls, &mut sink)
        } else {
            let skip = conn.role() == Role::Client && skip_propagation(&exchange.settings);
            conn.to_peer(exchange, skip, &mut sink)
        };
        let DataAction { drain, prepend, pause } = action;
        if drain > 0 || !prepend.is_empty() {
            // Envoy: start 0 drains `drain` bytes, then prepends.
            let _ = host::set_buffer(buffer, 0, drain, &prepend);
        }
        if pause {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for TcpStream {}

impl StreamContext for TcpStream {
    fn on_downstream_data(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.on_data(BufferType::DownstreamData, size, end_of_stream)
    }

    fn on_upstream_data(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.on_data(BufferType::UpstreamData, size, end_of_stream)
    }
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    host::get_property(path).ok().flatten()
}

fn property_i64(path: &[&str]) -> Option<i64> {
    meshwasm_sdk::property::decode_i64(&property(path)?)
}
