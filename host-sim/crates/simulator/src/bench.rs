//! `host-sim bench`: replays a scenario's streams (or, in a scenario with
//! none, its TCP connections) many times on one started proxy and reports
//! the wall-clock cost per request (per connection). Compare plugins by the
//! ratio to a `noop` run on the same machine, not by absolute numbers.

use crate::scenario::Scenario;
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
}

pub fn run(scenario: &Scenario, requests: usize) -> anyhow::Result<BenchReport> {
    let tcp = scenario.streams.is_empty();
    let units = if tcp { scenario.connections.len() } else { scenario.streams.len() };
    anyhow::ensure!(units > 0, "the scenario has no streams or connections to replay");
    let mut proxy = Proxy::start(scenario, VmLimits::default())?;
    if !proxy.ready() {
        let why: Vec<String> = proxy.statuses().iter().filter_map(|s| s.error.clone()).collect();
        anyhow::bail!("plugins did not start: {}", why.join("; "));
    }
    let mut replay = |i: usize| {
        if tcp {
            proxy.bench_connection(&scenario.connections[i % units], &scenario.connection);
        } else {
            proxy.bench_stream(&scenario.streams[i % units], &scenario.connection);
        }
    };
    // Warm up: first calls pay for lazy initialisation in the plugin.
    for i in 0..units.min(10) {
        replay(i);
    }
    let start = Instant::now();
    for i in 0..requests {
        replay(i);
    }
    let total = start.elapsed().as_secs_f64();
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
    })
}
