//! The commands, one file each, and what they share: exit codes, loading
//! the scenario, choosing the engine.

pub mod bench;
pub mod diff;
pub mod prometheus;
pub mod run;
pub mod wasi_run;

use host_sim::envoy::EnvironmentError;
use host_sim::{RunResult, Scenario};
use std::path::Path;

/// Ran, and every `expect` passed (`diff`: no difference).
pub const OK: u8 = 0;
/// An `expect` failed (`diff`: the engines differ).
pub const EXPECTATION_FAILED: u8 = 1;
/// Bad input: arguments, the scenario or a plugin file.
pub const BAD_INPUT: u8 = 2;
/// The environment: Envoy missing or unable to start.
pub const ENVIRONMENT: u8 = 3;

/// The table `--help` ends with (also in docs/host-sim.md).
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  ran, and every `expect` passed (diff: no difference)
  1  an `expect` failed (diff: the engines differ)
  2  bad input: bad arguments, a scenario that cannot be read or is invalid,
     a plugin .wasm that is missing or does not load
  3  the environment: no Envoy binary, or Envoy could not start"
    };
}

/// For the commands that run a scenario.
pub const EXIT_CODES: &str = exit_codes!();
/// For `host-sim --help`.
pub const EXIT_CODES_ALL: &str = concat!(exit_codes!(), "\nwasi-run exits with the module's own exit code.");

/// Why a command stopped, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self { code: BAD_INPUT, message: message.into() }
    }

    /// An engine's error: the environment when the engine marked it so
    /// ([`EnvironmentError`]), else the input (the only other thing an
    /// engine can fail on: a plugin file missing or not loading).
    pub fn engine(what: &str, e: anyhow::Error) -> Self {
        let environment = e.downcast_ref::<EnvironmentError>().is_some()
            || e.chain().any(|c| c.downcast_ref::<EnvironmentError>().is_some());
        let message = format!("{what}: {e:#}");
        Self { code: if environment { ENVIRONMENT } else { BAD_INPUT }, message }
    }
}

/// `run` and `prometheus`: which engine runs the scenario: the simulator in
/// this process, or a real Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    HostSim,
    Envoy,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::HostSim => "host-sim",
            Engine::Envoy => "envoy",
        }
    }

    pub fn run(self, scenario: &Scenario) -> Result<RunResult, Failure> {
        let result = match self {
            Engine::HostSim => host_sim::run(scenario),
            Engine::Envoy => host_sim::envoy::run_scenario(scenario),
        };
        result.map_err(|e| Failure::engine(&format!("{} engine", self.name()), e))
    }
}

pub fn load(path: &Path) -> Result<Scenario, Failure> {
    Scenario::load(path).map_err(|e| Failure::bad_input(e.to_string()))
}

/// 0 when every expectation passed, else 1.
pub fn expectations_code(result: &RunResult) -> u8 {
    if result.all_expectations_passed() {
        OK
    } else {
        EXPECTATION_FAILED
    }
}
