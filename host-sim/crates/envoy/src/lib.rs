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

use host_sim_scenario::{http1_framing, result, scenario};
// Only bootstrap's tests name the tag list through `crate::prometheus`.
/// The result of a proxy that started: Envoy served its listeners, so every
/// plugin's VM started and took its configuration.
pub(crate) fn started_result(scenario: &Scenario) -> RunResult {
    RunResult {
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
    }
}

#[cfg(test)]
use host_sim_scenario::prometheus;
use meshwasm_wire::abi;

mod bootstrap;
mod exchange;
mod http;
mod listeners;
mod locate;
mod logs;
mod mitm;
mod process;
mod results;
mod servers;
mod stats;
mod tcp;
mod tls;
mod two;
mod workdir;

pub use bootstrap::{TCP_UPSTREAM_CLUSTER, UPSTREAM_CLUSTER};
pub use locate::find_envoy;
pub use process::EnvironmentError;

use crate::result::{PluginStatus, RunResult};
use crate::scenario::Scenario;
use anyhow::{bail, Context, Result};
use bootstrap::Layout;
use exchange::{exchange, settle};
use listeners::{effective_connection, effective_tcp_connection, ListenerPlan};
use locate::resolve_envoy;
use process::{environment, EnvoyProcess, Readiness};
use results::{connection_result, find_access_entry, idents, start_failure, stream_result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use workdir::Workdir;

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
    if let Some(server) = scenario.server_scenario() {
        return two::run_two(scenario, &server, &binary, &work.path, opts);
    }
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
        upstream_tls: None,
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

    let mut result = started_result(scenario);
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
                bail!("stream {i} ({}): {e:#}; {state}. {}", stream.name, envoy.log_tail_section(30));
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
                bail!("connection {i} ({}): {e:#}; {state}. {}", spec.name, envoy.log_tail_section(30));
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
    result.warnings = stats::warnings(&result.metrics, scenario);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specific_headers_are_lower_case() {
        assert!(HOST_SPECIFIC_HEADERS.iter().all(|h| h.chars().all(|c| !c.is_ascii_uppercase())));
    }
}
