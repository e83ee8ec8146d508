//! `host-sim bench`: the cost per request of a scenario's plugins.

use super::Failure;
use host_sim::bench::{BenchReport, HookRow, Options};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// Measure the plugins' cost per request on host-sim
///
/// Replays the scenario's streams (or, without streams, its TCP
/// connections) N times on one started proxy and reports the cost per
/// request: wall time, and from a second, metered pass the wasm
/// instructions (wasmtime fuel, about one unit per wasm operator) and host
/// calls per callback and per request. The counts are deterministic:
/// compare them across runs; compare wall times only by their ratio to noop
/// in one run.
#[derive(clap::Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct Args {
    /// How many streams (connections) to replay
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    requests: usize,
    /// JSON, or readable tables
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "json")]
    format: Format,
    /// Skip the metered pass (no instruction and host-call counts)
    #[arg(long)]
    no_counts: bool,
    /// Compile the plugins without the persistent module cache
    #[arg(long)]
    no_module_cache: bool,
    /// The scenario file (docs/scenario-format.md)
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
}

pub fn main(a: Args) -> Result<u8, Failure> {
    if a.no_module_cache {
        host_sim_simulator::disable_module_cache();
    }
    let scenario = super::load(&a.scenario)?;
    // Its errors are the scenario's: nothing to replay, plugins that do not
    // load or start.
    let options = Options { counts: !a.no_counts };
    let report = host_sim::bench::run_with(&scenario, a.requests, options).map_err(|e| Failure::engine("bench", e))?;
    match a.format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&report).map_err(|e| Failure::bad_input(e.to_string()))?;
            println!("{json}");
        }
        Format::Text => print!("{}", render(&report)),
    }
    Ok(super::OK)
}

/// The report as text: the wall time, then the counts per request and per
/// callback.
fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {} {} of {}", r.scenario, r.requests, r.replayed, r.plugins.join(", "));
    let _ = writeln!(
        out,
        "wall: {:.2} µs/request ({:.0} requests/s, {:.3} s)",
        r.ns_per_request / 1e3,
        r.requests_per_second,
        r.total_seconds
    );
    let Some(c) = &r.counts else { return out };
    let _ = writeln!(
        out,
        "per request: {:.1} instructions, {:.2} host calls, {:.2} callbacks  (instructions: {})",
        c.per_request.instructions, c.per_request.host_calls, c.per_request.callbacks, c.instructions_unit
    );
    table(&mut out, "per callback, per request", &c.hooks, true);
    table(&mut out, "startup (once)", &c.startup, false);
    out
}

fn table(out: &mut String, title: &str, rows: &[HookRow], per_request: bool) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    let pw = rows.iter().map(|r| r.plugin.chars().count()).max().unwrap_or(0).max("plugin".len());
    let hw = rows.iter().map(|r| r.hook.len()).max().unwrap_or(0).max("callback".len());
    if per_request {
        let _ = writeln!(
            out,
            "  {:pw$}  {:hw$}  {:>10}  {:>13}  {:>10}  {:>12}",
            "plugin", "callback", "calls/req", "instr/req", "host/req", "instr/call"
        );
        for h in rows {
            let _ = writeln!(
                out,
                "  {:pw$}  {:hw$}  {:>10.2}  {:>13.1}  {:>10.2}  {:>12.1}",
                h.plugin,
                h.hook,
                h.calls_per_request,
                h.instructions_per_request,
                h.host_calls_per_request,
                h.instructions_per_call
            );
        }
    } else {
        let _ = writeln!(
            out,
            "  {:pw$}  {:hw$}  {:>6}  {:>13}  {:>10}",
            "plugin", "callback", "calls", "instructions", "host calls"
        );
        for h in rows {
            let _ = writeln!(
                out,
                "  {:pw$}  {:hw$}  {:>6}  {:>13}  {:>10}",
                h.plugin, h.hook, h.calls, h.instructions, h.host_calls
            );
        }
    }
}
