//! `host-sim bench`: replays a scenario's streams (or, in a scenario with
//! none, its TCP connections) many times on one started proxy and reports
//! the wall-clock cost per request (per connection). Compare plugins by the
//! ratio to a `noop` run on the same machine, not by absolute numbers.
//!
//! A second, metered pass replays the same requests on VMs that count what
//! each callback costs: wasm instructions (wasmtime fuel) and host calls.
//! Those counts are deterministic, so unlike the wall time they can be
//! compared across runs and machines to catch regressions.

use crate::scenario::Scenario;
use crate::vm::HookCost;
use crate::{vm::VmLimits, Proxy};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub scenario: String,
    /// `streams` or `connections`: what one "request" is.
    pub replayed: String,
    /// The plugins of the replayed chain (HTTP or network).
    pub plugins: Vec<String>,
    pub requests: usize,
    pub total_seconds: f64,
    pub ns_per_request: f64,
    pub requests_per_second: f64,
    /// Deterministic counts from the metered pass (absent with
    /// [`Options::counts`] off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

/// What the plugins executed, from a pass on metered VMs.
#[derive(Debug, Serialize, PartialEq)]
pub struct Counts {
    /// The unit: wasmtime fuel, about one unit per wasm operator executed.
    pub instructions_unit: String,
    /// All callbacks of the measured requests, divided by the requests.
    pub per_request: PerRequest,
    /// Per plugin (VM) and callback, over the measured requests (after the
    /// warm-up).
    pub hooks: Vec<HookRow>,
    /// Per plugin and callback, while the proxy started (VM start, root
    /// contexts, configuration): paid once, not per request.
    pub startup: Vec<HookRow>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PerRequest {
    pub instructions: f64,
    pub host_calls: f64,
    pub callbacks: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HookRow {
    /// The VM's plugins (names joined by `+` when plugins share a VM).
    pub plugin: String,
    /// The export called, e.g. `proxy_on_request_headers`.
    pub hook: String,
    pub calls: u64,
    pub instructions: u64,
    pub host_calls: u64,
    pub instructions_per_call: f64,
    /// Divided by the measured requests (startup rows: the totals again).
    pub calls_per_request: f64,
    pub instructions_per_request: f64,
    pub host_calls_per_request: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Run the metered pass and report [`Counts`].
    pub counts: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { counts: true }
    }
}

pub fn run(scenario: &Scenario, requests: usize) -> anyhow::Result<BenchReport> {
    run_with(scenario, requests, Options::default())
}

pub fn run_with(scenario: &Scenario, requests: usize, options: Options) -> anyhow::Result<BenchReport> {
    let tcp = scenario.streams.is_empty();
    let units = if tcp { scenario.connections.len() } else { scenario.streams.len() };
    anyhow::ensure!(units > 0, "the scenario has no streams or connections to replay");
    let mut proxy = start(scenario, VmLimits::default())?;
    let warm_up = units.min(10);
    let total = {
        let mut replay = |i: usize| replay(&mut proxy, scenario, tcp, units, i);
        // Warm up: first calls pay for lazy initialisation in the plugin.
        for i in 0..warm_up {
            replay(i);
        }
        let start = Instant::now();
        for i in 0..requests {
            replay(i);
        }
        start.elapsed().as_secs_f64()
    };
    drop(proxy);
    let counts = if options.counts {
        let mut proxy = start(scenario, VmLimits { metered: true, ..VmLimits::default() })?;
        let startup = collect(&proxy);
        for i in 0..warm_up {
            replay(&mut proxy, scenario, tcp, units, i);
        }
        for vm in &mut proxy.vms {
            if let Some(m) = vm.meter.as_mut() {
                m.reset();
            }
        }
        for i in 0..requests {
            replay(&mut proxy, scenario, tcp, units, i);
        }
        Some(counts(collect(&proxy), startup, requests))
    } else {
        None
    };
    Ok(BenchReport {
        scenario: scenario.name.clone(),
        replayed: if tcp { "connections" } else { "streams" }.into(),
        plugins: scenario
            .plugins
            .iter()
            .filter(|p| (p.plugin_type == crate::scenario::PluginType::Network) == tcp)
            .map(|p| p.display_name())
            .collect(),
        requests,
        total_seconds: total,
        ns_per_request: total * 1e9 / requests as f64,
        requests_per_second: requests as f64 / total,
        counts,
    })
}

fn start(scenario: &Scenario, limits: VmLimits) -> anyhow::Result<Proxy> {
    let proxy = Proxy::start(scenario, limits)?;
    if !proxy.ready() {
        let why: Vec<String> = proxy.statuses().iter().filter_map(|s| s.error.clone()).collect();
        anyhow::bail!("plugins did not start: {}", why.join("; "));
    }
    Ok(proxy)
}

fn replay(proxy: &mut Proxy, scenario: &Scenario, tcp: bool, units: usize, i: usize) {
    if tcp {
        proxy.bench_connection(&scenario.connections[i % units], &scenario.connection);
    } else {
        proxy.bench_stream(&scenario.streams[i % units], &scenario.connection);
    }
}

/// Every metered VM's counts, summed over threads per (plugins, export), in
/// the order first seen.
fn collect(proxy: &Proxy) -> Vec<(String, &'static str, HookCost)> {
    let mut rows: Vec<(String, &'static str, HookCost)> = Vec::new();
    for vm in &proxy.vms {
        let Some(meter) = vm.meter.as_ref() else { continue };
        let plugin: Vec<&str> = vm.store.data().plugins.iter().map(|p| p.name.as_str()).collect();
        let plugin = plugin.join("+");
        for (hook, cost) in &meter.hooks {
            match rows.iter_mut().find(|(p, h, _)| *p == plugin && h == hook) {
                Some((_, _, c)) => c.add(cost),
                None => rows.push((plugin.clone(), hook, *cost)),
            }
        }
    }
    rows
}

fn counts(
    measured: Vec<(String, &'static str, HookCost)>,
    startup: Vec<(String, &'static str, HookCost)>,
    requests: usize,
) -> Counts {
    let n = requests.max(1) as f64;
    let row = |(plugin, hook, c): (String, &'static str, HookCost), per: f64| HookRow {
        plugin,
        hook: hook.to_string(),
        calls: c.calls,
        instructions: c.instructions,
        host_calls: c.host_calls,
        instructions_per_call: c.instructions as f64 / c.calls.max(1) as f64,
        calls_per_request: c.calls as f64 / per,
        instructions_per_request: c.instructions as f64 / per,
        host_calls_per_request: c.host_calls as f64 / per,
    };
    let mut total = HookCost::default();
    for (_, _, c) in &measured {
        total.add(c);
    }
    Counts {
        instructions_unit: "wasmtime fuel (about one unit per wasm operator)".into(),
        per_request: PerRequest {
            instructions: total.instructions as f64 / n,
            host_calls: total.host_calls as f64 / n,
            callbacks: total.calls as f64 / n,
        },
        hooks: measured.into_iter().map(|r| row(r, n)).collect(),
        startup: startup.into_iter().map(|r| row(r, 1.0)).collect(),
    }
}
