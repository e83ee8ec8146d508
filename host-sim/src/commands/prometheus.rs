//! `host-sim prometheus`: only the metrics, as Envoy's `/stats/prometheus`
//! shows them.

use super::{Engine, Failure};
use std::path::PathBuf;

/// Run a scenario and print only its Prometheus text
///
/// The plugins' metrics as Envoy's /stats/prometheus shows them (the
/// scenario's stats_tags extracted).
#[derive(clap::Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct Args {
    /// host-sim, or a real Envoy (as for run)
    #[arg(long, value_enum, value_name = "ENGINE", default_value = "host-sim")]
    engine: Engine,
    /// The scenario file (docs/scenario-format.md)
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
}

pub fn main(a: Args) -> Result<u8, Failure> {
    let scenario = super::load(&a.scenario)?;
    let result = a.engine.run(&scenario)?;
    print!("{}", result.prometheus);
    Ok(super::expectations_code(&result))
}
