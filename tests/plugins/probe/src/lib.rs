//! `probe`: a test plugin for host-sim, written with the stock `proxy-wasm`
//! SDK, that can exercise every proxy-wasm host function.
//!
//! What it does is decided per request by the `x-probe` request header (the
//! name is configurable) and by its plugin configuration (see
//! [`config::Config`]): a comma-separated list of actions, each
//! `name[=arg][@phase]` (see [`actions`]). Results are logged so tests can
//! assert on them: `prop request.path=/x`, `status log_oob=6`, ...
//!
//! Actions (`k:v` arguments split at the first `:`):
//! * headers and trailers, with prefix `req_`, `resp_`, `reqt_`, `respt_`:
//!   `_get=k`, `_add=k:v`, `_set=k:v` (replace), `_del=k`, `_pairs` (log all),
//!   `_sort` (get all pairs, set them back sorted), `_size` (map byte size).
//! * bodies, prefix `req_body` / `resp_body` (any of them makes the stream
//!   buffer, returning Pause until end_of_stream): `_body` (log it),
//!   `_body_set=text`, `_body_append=text`, `_body_prepend=text`,
//!   `_body_status` (`proxy_get_buffer_status`), `_body_buffer` (only buffer).
//! * properties: `prop=path[:fmt]` logs, `echo=path[:fmt]` adds response
//!   header `x-echo-<path>`; path segments split at `/` if there is one, else
//!   at `.`; fmt is str (default), i64, u64, f64, bool, hex, len or pairs.
//!   `setprop=k:v` sets property (filter state) `k`.
//! * shared data: `shared_get=k`, `shared_set=k:v`, `shared_cas=k:v` (set
//!   with the current cas), `shared_stale=k:v` (set twice with the same cas),
//!   `shared_incr=k` (CAS loop). Queues: `enqueue=msg` (the root registered
//!   the queue in on_vm_start and logs what on_queue_ready dequeues).
//! * metrics: `count=name[:n]`, `gauge=name:n` (record), `gauge_add=name:n`
//!   (increment, may be negative), `hist=name:v`, `define=counter|gauge|histogram:name`
//!   (logs the id of a fresh define).
//! * `call=cluster[:path]` dispatches an http call and pauses; the answer
//!   resumes the stream with `x-call-status` (and `x-call-token` from the
//!   answer's `x-token`) added to the headers of the phase; a failed call
//!   (0 headers) logs `proxy_get_status` and replies 503; the answer's
//!   headers are logged with `x-envoy-upstream-service-time=<ms>` (a timing,
//!   masked). `call_reply=...`
//!   replies locally with the answer's status and body.
//! * `reply=status[:body]`, `grpc_reply=code[:message]`, `close` (reset the
//!   request, or the response from a response phase).
//! * `log_all=msg` (one line per level), `log_level`, `time`, `vm_seq`
//!   (VM-local counter), `tick=ms` (the root's timer, from a stream).
//! * WASI: `stdout=msg`, `stderr=msg`, `env=NAME`, `wasi_time`.
//! * `statuses[=cluster]` runs every raw status probe, `status=name[:cluster]`
//!   one of them (see [`raw`]).
//! * `panic[=msg]` panics (the SDK logs it, then traps); `trap` executes
//!   `unreachable`.

pub mod actions;
pub mod config;
pub mod network;
pub mod raw;

use actions::{Act, Phase};
use config::{Config, ContextKind};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{
    Action, BufferType, Bytes, ContextType, GrpcStatusCode, LogLevel, MapType, MetricType, Status,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
}}

pub(crate) fn log(level: LogLevel, msg: &str) {
    hostcalls::log(level, msg).unwrap();
}

pub(crate) fn info(msg: impl AsRef<str>) {
    log(LogLevel::Info, msg.as_ref());
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn res<T>(r: &Result<T, Status>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(s) => format!("{s:?}"),
    }
}

fn join(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

thread_local! {
    /// Metric ids this VM defined, by (type, name).
    static METRIC_IDS: RefCell<HashMap<(u32, String), u32>> = RefCell::new(HashMap::new());
    /// Name of the shared queue the root registered.
    static QUEUE_NAME: RefCell<String> = const { RefCell::new(String::new()) };
    static VM_SEQ: Cell<u64> = const { Cell::new(0) };
}

fn metric_kind(name: &str) -> Option<MetricType> {
    match name {
        "counter" => Some(MetricType::Counter),
        "gauge" => Some(MetricType::Gauge),
        "histogram" => Some(MetricType::Histogram),
        _ => None,
    }
}

/// The VM's id for a metric, defined on first use.
fn metric(kind: MetricType, name: &str) -> u32 {
    let key = (kind as u32, name.to_string());
    if let Some(id) = METRIC_IDS.with(|m| m.borrow().get(&key).copied()) {
        return id;
    }
    let id = hostcalls::define_metric(kind, name).unwrap();
    log(LogLevel::Debug, &format!("metric_define {kind:?} {name} id={id}"));
    METRIC_IDS.with(|m| m.borrow_mut().insert(key, id));
    id
}

const FORMATS: &[&str] = &["str", "i64", "u64", "f64", "bool", "hex", "len", "pairs"];

/// `path[:fmt]` → (segments, display path, fmt).
fn property_spec(arg: &str) -> (Vec<String>, String, String) {
    let (path, fmt) = match arg.rsplit_once(':') {
        Some((p, f)) if FORMATS.contains(&f) => (p, f),
        _ => (arg, "str"),
    };
    let sep = if path.contains('/') { '/' } else { '.' };
    (path.split(sep).map(str::to_string).collect(), path.to_string(), fmt.to_string())
}

fn decode_pairs(b: &[u8]) -> Option<Vec<(String, String)>> {
    let pairs = meshwasm_wire::pairs::decode(b)?;
    Some(pairs.into_iter().map(|(k, v)| (lossy(k), lossy(v))).collect())
}

fn render(value: &Option<Bytes>, fmt: &str) -> String {
    let Some(b) = value else { return "<missing>".into() };
    let eight = || -> Option<[u8; 8]> { b.as_slice().try_into().ok() };
    let r = match fmt {
        "i64" => eight().map(|a| i64::from_le_bytes(a).to_string()),
        "u64" => eight().map(|a| u64::from_le_bytes(a).to_string()),
        "f64" => eight().map(|a| f64::from_le_bytes(a).to_string()),
        "bool" => (b.len() == 1).then(|| (b[0] != 0).to_string()),
        "hex" => Some(b.iter().map(|x| format!("{x:02x}")).collect()),
        "len" => Some(format!("len={}", b.len())),
        "pairs" => decode_pairs(b).map(|p| join(&p)),
        _ => Some(lossy(b)),
    };
    r.unwrap_or_else(|| format!("<{} bytes, not {fmt}>", b.len()))
}

fn read_property(arg: &str) -> (String, String) {
    let (path, display, fmt) = property_spec(arg);
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    let rendered = match hostcalls::get_property(refs) {
        Ok(v) => render(&v, &fmt),
        Err(s) => format!("<error {s:?}>"),
    };
    (display, rendered)
}

struct Root {
    cfg: Rc<Config>,
    ticks: u64,
}

impl Root {
    fn new(_id: u32) -> Root {
        Root { cfg: Rc::new(Config::default()), ticks: 0 }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let vm_config = self.get_vm_configuration().unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_slice(&vm_config).unwrap_or_default();
        if parsed.get("fail_start").and_then(|v| v.as_bool()) == Some(true) {
            log(LogLevel::Error, "vm_start refused: vm configuration has fail_start");
            return false;
        }
        let queue = parsed.get("queue").and_then(|v| v.as_str()).unwrap_or("probe").to_string();
        let id = self.register_shared_queue(&queue);
        QUEUE_NAME.with(|q| *q.borrow_mut() = queue.clone());
        info(format!("vm_start vm_config_size={vm_configuration_size} queue {queue}={id}"));
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match config::parse(&bytes) {
            Ok(c) => self.cfg = Rc::new(c),
            Err(e) => {
                log(LogLevel::Error, &e);
                return false;
            }
        }
        let cfg = self.cfg.clone();
        info(format!("configure size={plugin_configuration_size} name={}", cfg.name));
        if cfg.tick_ms > 0 {
            self.set_tick_period(Duration::from_millis(cfg.tick_ms));
        }
        for p in &cfg.root_props {
            let (path, value) = read_property(p);
            info(format!("root_prop {path}={value}"));
        }
        if cfg.root_statuses {
            for name in raw::ROOT_PROBES {
                raw::report(&format!("root_{name}"), raw::probe(name, "").unwrap());
            }
        }
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let id = metric(MetricType::Counter, "probe_ticks");
        hostcalls::increment_metric(id, 1).unwrap();
        info(format!("tick {}", self.ticks));
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        loop {
            match self.dequeue_shared_queue(queue_id) {
                Ok(Some(b)) => info(format!("queue {queue_id} dequeued {}", lossy(&b))),
                Ok(None) => {
                    info(format!("queue {queue_id} empty"));
                    break;
                }
                Err(s) => {
                    info(format!("queue {queue_id} dequeue failed {s:?}"));
                    break;
                }
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(match self.cfg.context {
            ContextKind::Http => ContextType::HttpContext,
            ContextKind::Network => ContextType::StreamContext,
            ContextKind::Auto => {
                // Called while Envoy creates the context: an HTTP stream has
                // its protocol in stream info already, a TCP connection none.
                let protocol = hostcalls::get_property(vec!["request", "protocol"]);
                let kind =
                    if matches!(protocol, Ok(Some(_))) { ContextType::HttpContext } else { ContextType::StreamContext };
                info(format!("context_type {kind:?} request.protocol={protocol:?}"));
                kind
            }
        })
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        if self.cfg.lifecycle {
            info("lifecycle create");
        }
        Some(Box::new(network::Connection::new(self.cfg.clone())))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.cfg.lifecycle {
            info("lifecycle create");
        }
        Some(Box::new(Stream { cfg: self.cfg.clone(), acts: Vec::new(), call: None }))
    }
}

/// An http call the stream waits for.
struct PendingCall {
    token: u32,
    /// Answer with a local reply instead of resuming.
    reply: bool,
    phase: Phase,
}

struct Stream {
    cfg: Rc<Config>,
    acts: Vec<Act>,
    call: Option<PendingCall>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The SDK drops the context in proxy_on_delete.
        self.lifecycle("delete");
    }
}

impl Stream {
    fn lifecycle(&self, what: &str) {
        if self.cfg.lifecycle {
            info(format!("lifecycle {what}"));
        }
    }

    fn buffering(&self, phase: Phase) -> bool {
        let prefix = if phase == Phase::ReqBody { "req_body" } else { "resp_body" };
        self.acts.iter().any(|a| a.phase == phase && a.name.starts_with(prefix))
    }

    fn run(&mut self, phase: Phase) -> Action {
        let acts: Vec<Act> = self.acts.iter().filter(|a| a.phase == phase).cloned().collect();
        let mut out = Action::Continue;
        for a in &acts {
            if self.exec(a, phase) == Action::Pause {
                out = Action::Pause;
            }
        }
        out
    }

    fn exec(&mut self, a: &Act, phase: Phase) -> Action {
        let name = a.name.as_str();
        if let Some((prefix, op)) = name.split_once('_') {
            let map = match prefix {
                "req" => Some(MapType::HttpRequestHeaders),
                "resp" => Some(MapType::HttpResponseHeaders),
                "reqt" => Some(MapType::HttpRequestTrailers),
                "respt" => Some(MapType::HttpResponseTrailers),
                _ => None,
            };
            if let Some(map) = map {
                if self.header_op(map, prefix, op, a) {
                    return Action::Continue;
                }
            }
            if prefix == "req" || prefix == "resp" {
                if let Some(body_op) = op.strip_prefix("body") {
                    let kind = if prefix == "req" { BufferType::HttpRequestBody } else { BufferType::HttpResponseBody };
                    self.body_op(kind, prefix, body_op, a);
                    return Action::Continue;
                }
            }
        }
        match name {
            "echo" => {
                let (path, value) = read_property(&a.arg);
                let header: String = path
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
                    .collect();
                self.add_http_response_header(&format!("x-echo-{header}"), &value);
            }
            "call" | "call_reply" => return self.call(a, phase, name == "call_reply"),
            "reply" => {
                let (status, body) = a.kv();
                let name = self.cfg.name.clone();
                let body = (!body.is_empty()).then_some(body.as_bytes());
                self.send_http_response(status.parse().unwrap_or(500), vec![("x-probe-reply", &name)], body);
                info(format!("reply {status}"));
                return Action::Pause;
            }
            "grpc_reply" => {
                let (code, msg) = a.kv();
                let code = match code {
                    "3" => GrpcStatusCode::InvalidArgument,
                    "7" => GrpcStatusCode::PermissionDenied,
                    "14" => GrpcStatusCode::Unavailable,
                    "16" => GrpcStatusCode::Unauthenticated,
                    _ => GrpcStatusCode::Unknown,
                };
                self.send_grpc_response(code, (!msg.is_empty()).then_some(msg), vec![("x-probe-reply", b"grpc")]);
                return Action::Pause;
            }
            "close" => {
                if phase.is_response() {
                    self.reset_http_response();
                } else {
                    self.reset_http_request();
                }
                info("close");
                return Action::Pause;
            }
            _ => {
                if !run_generic(a) {
                    log(LogLevel::Warn, &format!("unknown action {name}"));
                }
            }
        }
        Action::Continue
    }

    /// Returns false when `op` is not a header operation.
    fn header_op(&mut self, map: MapType, prefix: &str, op: &str, a: &Act) -> bool {
        let (k, v) = a.kv();
        match op {
            "get" => {
                let value = hostcalls::get_map_value(map, &a.arg).unwrap();
                info(format!("{prefix}_get {}={}", a.arg, value.unwrap_or_else(|| "<none>".into())));
            }
            "add" => hostcalls::add_map_value(map, k, v).unwrap(),
            "set" => hostcalls::set_map_value(map, k, Some(v)).unwrap(),
            "del" => hostcalls::remove_map_value(map, &a.arg).unwrap(),
            "pairs" => info(format!("{prefix}_pairs {}", join(&hostcalls::get_map(map).unwrap()))),
            "sort" => {
                let all = hostcalls::get_map(map).unwrap();
                let (mut pseudo, mut regular): (Vec<_>, Vec<_>) =
                    all.into_iter().partition(|(k, _)| k.starts_with(':'));
                regular.sort_by(|x, y| x.0.cmp(&y.0));
                let count = (pseudo.len() + regular.len()).to_string();
                pseudo.extend(regular);
                pseudo.push(("x-probe-sorted".into(), count));
                hostcalls::set_map(map, pseudo.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap();
            }
            "size" => match raw::header_map_size(map as u32) {
                Ok(n) => info(format!("{prefix}_size={n}")),
                Err(s) => info(format!("{prefix}_size status={s}")),
            },
            _ => return false,
        }
        true
    }

    fn body_op(&mut self, kind: BufferType, prefix: &str, op: &str, a: &Act) {
        let body = hostcalls::get_buffer(kind, 0, usize::MAX >> 1).unwrap().unwrap_or_default();
        let len = body.len();
        match op {
            "" => info(format!("{prefix}_body len={len} body={}", lossy(&body))),
            "_set" => hostcalls::set_buffer(kind, 0, len, a.arg.as_bytes()).unwrap(),
            "_append" => hostcalls::set_buffer(kind, len, 0, a.arg.as_bytes()).unwrap(),
            "_prepend" => hostcalls::set_buffer(kind, 0, 0, a.arg.as_bytes()).unwrap(),
            "_status" => match raw::buffer_status(kind as u32) {
                Ok((n, flags)) => info(format!("{prefix}_body_status len={n} flags={flags}")),
                Err(s) => info(format!("{prefix}_body_status status={s}")),
            },
            "_buffer" => {}
            other => log(LogLevel::Warn, &format!("unknown body action {prefix}_body{other}")),
        }
    }

    fn call(&mut self, a: &Act, phase: Phase, reply: bool) -> Action {
        let (cluster, path) = a.kv();
        let path = if path.is_empty() { "/probe" } else { path };
        let from = self.cfg.name.clone();
        let headers =
            vec![(":method", "POST"), (":path", path), (":authority", cluster), ("x-probe-from", from.as_str())];
        let timeout = Duration::from_millis(self.cfg.call_timeout_ms);
        match self.dispatch_http_call(cluster, headers, Some(b"probe-call"), vec![("x-call-trailer", "1")], timeout) {
            Ok(token) => {
                info(format!("call dispatched cluster={cluster} token={token}"));
                self.call = Some(PendingCall { token, reply, phase });
                Action::Pause
            }
            Err(s) => {
                info(format!("call dispatch failed cluster={cluster} status={s:?}"));
                Action::Continue
            }
        }
    }
}

/// Runs an action that works in any stream context (HTTP or network);
/// returns false when `a` is not one of them.
pub(crate) fn run_generic(a: &Act) -> bool {
    match a.name.as_str() {
        "prop" => {
            let (path, value) = read_property(&a.arg);
            info(format!("prop {path}={value}"));
        }
        "setprop" => {
            let (k, v) = a.kv();
            hostcalls::set_property(vec![k], Some(v.as_bytes())).unwrap();
            info(format!("setprop {k}={v}"));
        }
        "shared_get" => match hostcalls::get_shared_data(&a.arg).unwrap() {
            (Some(v), cas) => info(format!("shared_get {}={} cas={}", a.arg, lossy(&v), cas.unwrap_or(0))),
            (None, _) => info(format!("shared_get {}=<missing>", a.arg)),
        },
        "shared_set" => {
            let (k, v) = a.kv();
            let r = hostcalls::set_shared_data(k, Some(v.as_bytes()), None);
            info(format!("shared_set {k}={v} {}", res(&r)));
        }
        "shared_cas" => {
            let (k, v) = a.kv();
            let (_, cas) = hostcalls::get_shared_data(k).unwrap();
            let r = hostcalls::set_shared_data(k, Some(v.as_bytes()), cas);
            info(format!("shared_cas {k}={v} cas={} {}", cas.unwrap_or(0), res(&r)));
        }
        "shared_stale" => {
            let (k, v) = a.kv();
            let (_, cas) = hostcalls::get_shared_data(k).unwrap();
            let first = hostcalls::set_shared_data(k, Some(v.as_bytes()), cas);
            let second = hostcalls::set_shared_data(k, Some(v.as_bytes()), cas);
            info(format!("shared_stale {k} cas={} first={} second={}", cas.unwrap_or(0), res(&first), res(&second)));
        }
        "shared_incr" => {
            let key = a.arg.as_str();
            for _ in 0..8 {
                let (v, cas) = hostcalls::get_shared_data(key).unwrap();
                let n: u64 = v.map(|b| lossy(&b).parse().unwrap_or(0)).unwrap_or(0) + 1;
                match hostcalls::set_shared_data(key, Some(n.to_string().as_bytes()), cas) {
                    Ok(()) => {
                        info(format!("shared_incr {key}={n}"));
                        break;
                    }
                    Err(s) => info(format!("shared_incr {key} retry {s:?}")),
                }
            }
        }
        "enqueue" => {
            let queue = QUEUE_NAME.with(|q| q.borrow().clone());
            match hostcalls::resolve_shared_queue("", &queue).unwrap() {
                Some(id) => {
                    let r = hostcalls::enqueue_shared_queue(id, Some(a.arg.as_bytes()));
                    info(format!("enqueue {} queue={id} {}", a.arg, res(&r)));
                }
                None => info(format!("enqueue {}: queue {queue} not found", a.arg)),
            }
        }
        "count" => {
            let (n, by) = a.kv();
            let by: i64 = by.parse().unwrap_or(1);
            let id = metric(MetricType::Counter, n);
            let r = hostcalls::increment_metric(id, by);
            let value = hostcalls::get_metric(id);
            info(format!("count {n} +{by} {} value={}", res(&r), value.unwrap_or(0)));
        }
        "gauge" => {
            let (n, v) = a.kv();
            let id = metric(MetricType::Gauge, n);
            let r = hostcalls::record_metric(id, v.parse().unwrap_or(0));
            info(format!("gauge {n}={v} {} value={}", res(&r), hostcalls::get_metric(id).unwrap_or(0)));
        }
        "gauge_add" => {
            let (n, v) = a.kv();
            let id = metric(MetricType::Gauge, n);
            let r = hostcalls::increment_metric(id, v.parse().unwrap_or(0));
            info(format!("gauge_add {n} {v} {} value={}", res(&r), hostcalls::get_metric(id).unwrap_or(0) as i64));
        }
        "hist" => {
            let (n, v) = a.kv();
            let id = metric(MetricType::Histogram, n);
            let r = hostcalls::record_metric(id, v.parse().unwrap_or(0));
            info(format!("hist {n} {v} {}", res(&r)));
        }
        "define" => {
            let (k, n) = a.kv();
            match metric_kind(k) {
                Some(kind) => {
                    let id = hostcalls::define_metric(kind, n).unwrap();
                    info(format!("define {k} {n} id={id}"));
                }
                None => info(format!("define: unknown metric type {k}")),
            }
        }
        "log_all" => {
            for (level, n) in [
                (LogLevel::Trace, "trace"),
                (LogLevel::Debug, "debug"),
                (LogLevel::Info, "info"),
                (LogLevel::Warn, "warn"),
                (LogLevel::Error, "error"),
                (LogLevel::Critical, "critical"),
            ] {
                log(level, &format!("log {n} {}", a.arg));
            }
        }
        "log_level" => {
            let level = hostcalls::get_log_level().unwrap();
            log(LogLevel::Critical, &format!("log_level={}", level as u32));
        }
        "time" => {
            let ns = hostcalls::get_current_time().unwrap().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            info(format!("time={ns}"));
        }
        "tick" => {
            hostcalls::set_tick_period(Duration::from_millis(a.arg.parse().unwrap_or(0))).unwrap();
            info(format!("tick period {}", a.arg));
        }
        "vm_seq" => {
            let n = VM_SEQ.with(|s| {
                s.set(s.get() + 1);
                s.get()
            });
            info(format!("vm_seq={n}"));
        }
        "stdout" => println!("{}", a.arg),
        "stderr" => eprintln!("{}", a.arg),
        "env" => {
            let v = std::env::var(&a.arg).unwrap_or_else(|_| "<unset>".into());
            info(format!("env {}={v}", a.arg));
        }
        "wasi_time" => {
            let ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            info(format!("wasi_time={ns}"));
        }
        "statuses" => {
            for p in raw::STREAM_PROBES {
                raw::report(p, raw::probe(p, "").unwrap());
            }
            if !a.arg.is_empty() {
                for p in raw::CLUSTER_PROBES {
                    raw::report(p, raw::probe(p, &a.arg).unwrap());
                }
            }
        }
        "status" => {
            let (p, cluster) = a.kv();
            match raw::probe(p, cluster) {
                Some(s) => raw::report(p, s),
                None => info(format!("status {p}=<unknown probe>")),
            }
        }
        "panic" => panic!("probe panic: {}", a.arg),
        "trap" => trap(),
        _ => return false,
    }
    true
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        self.lifecycle("http_call_response");
        let Some(pending) = self.call.take().filter(|p| p.token == token_id) else {
            info(format!("call response for unexpected token {token_id}"));
            return;
        };
        info(format!(
            "call response token={token_id} headers={num_headers} body_size={body_size} trailers={num_trailers}"
        ));
        if num_headers == 0 {
            let (code, message) = self.get_grpc_status();
            info(format!("call failed status_code={code} message={}", message.unwrap_or_default()));
            self.send_http_response(503, vec![("x-probe-call", "failed")], Some(b"callout failed"));
            return;
        }
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size).map(|b| lossy(&b)).unwrap_or_default();
        let trailers = self.get_http_call_response_trailers();
        // The router's x-envoy-upstream-service-time is a timing: its value
        // is masked so logs repeat across runs and hosts.
        let headers: Vec<(String, String)> = self
            .get_http_call_response_headers()
            .into_iter()
            .map(|(k, v)| if k == "x-envoy-upstream-service-time" { (k, "<ms>".to_string()) } else { (k, v) })
            .collect();
        info(format!(
            "call response status={status} body={body} headers={} trailers={}",
            join(&headers),
            join(&trailers)
        ));
        if pending.reply {
            self.send_http_response(
                status.parse().unwrap_or(500),
                vec![("x-probe-call", "reply")],
                Some(body.as_bytes()),
            );
            return;
        }
        let token = self.get_http_call_response_header("x-token");
        if pending.phase.is_response() {
            self.add_http_response_header("x-call-status", &status);
            if let Some(t) = token {
                self.add_http_response_header("x-call-token", &t);
            }
            self.resume_http_response();
        } else {
            self.add_http_request_header("x-call-status", &status);
            if let Some(t) = token {
                self.add_http_request_header("x-call-token", &t);
            }
            self.resume_http_request();
        }
    }

    fn on_done(&mut self) -> bool {
        self.lifecycle("done");
        self.run(Phase::Done);
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.lifecycle(&format!("request_headers n={num_headers} eos={end_of_stream}"));
        let mut list = self.cfg.actions.join(",");
        if let Some(h) = self.get_http_request_header(&self.cfg.header) {
            list.push(',');
            list.push_str(&h);
        }
        self.acts = actions::parse_list(&list);
        self.run(Phase::ReqHeaders)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.lifecycle(&format!("request_body size={body_size} eos={end_of_stream}"));
        if !end_of_stream && self.buffering(Phase::ReqBody) {
            return Action::Pause;
        }
        self.run(Phase::ReqBody)
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.lifecycle(&format!("request_trailers n={num_trailers}"));
        self.run(Phase::ReqTrailers)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.lifecycle(&format!("response_headers n={num_headers} eos={end_of_stream}"));
        self.run(Phase::RespHeaders)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.lifecycle(&format!("response_body size={body_size} eos={end_of_stream}"));
        if !end_of_stream && self.buffering(Phase::RespBody) {
            return Action::Pause;
        }
        self.run(Phase::RespBody)
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.lifecycle(&format!("response_trailers n={num_trailers}"));
        self.run(Phase::RespTrailers)
    }

    fn on_log(&mut self) {
        self.lifecycle("log");
        self.run(Phase::Log);
    }
}
