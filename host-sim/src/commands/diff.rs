//! `host-sim diff`: the scenario on both engines, and every difference.

use super::{Engine, Failure, EXPECTATION_FAILED, OK};
use std::path::PathBuf;

/// Run a scenario on host-sim and in a real Envoy; list every difference
///
/// Compares the two results and prints every difference (exit 1 if any),
/// ignoring headers whose values depend on the host (date, server,
/// x-request-id, x-envoy-upstream-service-time).
#[derive(clap::Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct Args {
    /// The scenario file (docs/scenario-format.md)
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
}

pub fn main(a: Args) -> Result<u8, Failure> {
    let scenario = super::load(&a.scenario)?;
    let sim = Engine::HostSim.run(&scenario)?;
    let envoy = Engine::Envoy.run(&scenario)?;
    let ignore = host_sim::diff::Ignore { headers: host_sim::envoy::HOST_SPECIFIC_HEADERS };
    let differences = host_sim::diff::diff(&sim, &envoy, &ignore);
    for d in &differences {
        println!("{d}");
    }
    println!("{} difference(s) between host-sim and envoy", differences.len());
    Ok(if differences.is_empty() { OK } else { EXPECTATION_FAILED })
}
