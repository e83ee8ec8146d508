//! `host-sim bench`: the cost per request of a scenario's plugins.

use super::Failure;
use std::path::PathBuf;

/// Measure the plugins' cost per request on host-sim
///
/// Replays the scenario's streams (or, without streams, its TCP
/// connections) N times on one started proxy and reports the cost per
/// request as JSON. Compare plugins by their ratio to noop.
#[derive(clap::Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct Args {
    /// How many streams (connections) to replay
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    requests: usize,
    /// The scenario file (docs/scenario-format.md)
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
}

pub fn main(a: Args) -> Result<u8, Failure> {
    let scenario = super::load(&a.scenario)?;
    // Its errors are the scenario's: nothing to replay, plugins that do not
    // load or start.
    let report = host_sim::bench::run(&scenario, a.requests).map_err(|e| Failure::engine("bench", e))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| Failure::bad_input(e.to_string()))?;
    println!("{json}");
    Ok(super::OK)
}
