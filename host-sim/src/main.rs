//! The `host-sim` command line: a thin user of the `host_sim` library. Each
//! command is a file in `commands/`; this file parses and dispatches.

mod commands;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "host-sim",
    version,
    about = "Envoy's proxy-wasm host, simulated on wasmtime (and the same scenarios in a real Envoy)",
    after_help = commands::EXIT_CODES_ALL,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(commands::run::Args),
    Prometheus(commands::prometheus::Args),
    Diff(commands::diff::Args),
    Bench(commands::bench::Args),
    WasiRun(commands::wasi_run::Args),
}

fn main() -> ExitCode {
    // Usage errors: clap prints them with the usage and exits 2.
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(a) => commands::run::main(a),
        Command::Prometheus(a) => commands::prometheus::main(a),
        Command::Diff(a) => commands::diff::main(a),
        Command::Bench(a) => commands::bench::main(a),
        Command::WasiRun(a) if a.wants_help() => {
            let mut cli = Cli::command();
            cli.build(); // gives the subcommand its full name for the usage line
            let help = cli.find_subcommand_mut("wasi-run").map(|c| c.render_long_help().to_string());
            print!("{}", help.unwrap_or_default());
            Ok(commands::OK)
        }
        Command::WasiRun(a) => commands::wasi_run::main(a),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("host-sim: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
