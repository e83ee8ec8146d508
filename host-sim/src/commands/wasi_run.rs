//! `host-sim wasi-run`: a WASI command module under host-sim's host
//! functions; the cargo runner for `cargo test --target wasm32-wasip1`
//! (scripts/wasm-test-runner).

use super::Failure;
use std::path::PathBuf;

/// Run a WASI command module (the cargo runner for wasm32-wasip1 tests)
///
/// Runs the module's _start under host-sim's host functions, with the
/// terminal as stdout/stderr and real clocks, and exits with its exit code.
/// Everything after MODULE.wasm goes to the module untouched.
// clap's own help flag is off: it would take a `--help` meant for the
// module (`cargo test --target wasm32-wasip1 -- --help`). `host-sim
// wasi-run --help` (nothing before it) still shows the help: see main.rs.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// The module to run (a .wasm with a _start export)
    #[arg(value_name = "MODULE.wasm", allow_hyphen_values = true)]
    module: PathBuf,
    /// The module's arguments, options included (e.g. a test binary's --nocapture)
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl Args {
    /// `host-sim wasi-run -h|--help`: the help, not a module.
    pub fn wants_help(&self) -> bool {
        self.module.as_os_str() == "-h" || self.module.as_os_str() == "--help"
    }
}

pub fn main(a: Args) -> Result<u8, Failure> {
    let mut argv = vec![a.module.to_string_lossy().into_owned()];
    argv.extend(a.args);
    let code = host_sim::run_wasi_command(&a.module, argv).map_err(|e| Failure::engine("wasi-run", e))?;
    // As a process would: the low byte of the module's code.
    Ok((code & 0xff) as u8)
}
