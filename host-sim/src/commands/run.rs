//! `host-sim run`: one scenario on one engine; the result as JSON or as a
//! readable summary.

use super::{Engine, Failure};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// Run a scenario and print its result
///
/// Runs the scenario's plugins over its streams and TCP connections and
/// prints the result: the whole of it as JSON (docs/scenario-format.md), or
/// a readable summary (what happened to each stream and connection, each
/// metric family as a small table).
#[derive(clap::Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct Args {
    /// host-sim, or a real Envoy ($MESHWASM_ENVOY, else .venv-envoy/bin/envoy, else envoy on PATH)
    #[arg(long, value_enum, value_name = "ENGINE", default_value = "host-sim")]
    engine: Engine,
    /// The whole result as JSON, or a readable summary
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "json")]
    format: Format,
    /// With --format text: also print the full Prometheus text
    #[arg(long)]
    prometheus: bool,
    /// Compile the plugins without the persistent module cache
    /// ($MESHWASM_MODULE_CACHE=off does the same)
    #[arg(long)]
    no_module_cache: bool,
    /// Write the output to FILE instead of stdout
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The scenario file (docs/scenario-format.md)
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
}

pub fn main(a: Args) -> Result<u8, Failure> {
    if a.no_module_cache {
        host_sim_simulator::disable_module_cache();
    }
    let scenario = super::load(&a.scenario)?;
    let result = a.engine.run(&scenario)?;
    let text = match a.format {
        Format::Json => serde_json::to_string_pretty(&result).map_err(|e| Failure::bad_input(e.to_string()))? + "\n",
        Format::Text => {
            let options = host_sim::summary::Options { scenario: Some(&scenario), prometheus: a.prometheus };
            host_sim::summary::render(&result, &options)
        }
    };
    match &a.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::bad_input(format!("cannot write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(super::expectations_code(&result))
}
