//! The `host-sim` command line. Exit codes: 0 ran (and every `expect`
//! passed), 1 an `expect` failed (or `diff` found a difference), 2 bad input.

use crate::scenario::Scenario;
use std::path::PathBuf;

const USAGE: &str = "\
host-sim: Envoy's proxy-wasm host, simulated on wasmtime

USAGE:
  host-sim run [--engine host-sim|envoy] [--output FILE] SCENARIO.json
      Run the scenario's plugins over its streams; print the JSON result.
  host-sim prometheus [--engine host-sim|envoy] SCENARIO.json
      Run the scenario and print only the Prometheus text.
  host-sim bench [--requests N] SCENARIO.json
      Replay the scenario's streams N times (default 20000) and report the
      cost per request.
  host-sim wasi-run MODULE.wasm [ARGS...]
      Run a WASI command module (used as the cargo runner for
      `cargo test --target wasm32-wasip1`).

Exit codes: 0 ran and every `expect` passed, 1 an `expect` failed,
2 bad input (the message says what and where).";

pub fn main(args: Vec<String>) -> i32 {
    match dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("host-sim: {e}");
            2
        }
    }
}

#[derive(Default)]
struct Options {
    engine: Option<String>,
    output: Option<PathBuf>,
    requests: Option<usize>,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--engine" => o.engine = Some(value("--engine")?),
            "--output" => o.output = Some(value("--output")?.into()),
            "--requests" => {
                let v = value("--requests")?;
                o.requests = Some(v.parse().map_err(|_| format!("--requests: not a number: {v}"))?);
            }
            f if f.starts_with("--") => return Err(format!("unknown option {f}\n\n{USAGE}")),
            p => o.positional.push(p.to_string()),
        }
    }
    Ok(o)
}

fn one_scenario(o: &Options) -> Result<Scenario, String> {
    match o.positional.as_slice() {
        [path] => Scenario::load(path.as_ref()).map_err(|e| e.to_string()),
        _ => Err(format!("expected one SCENARIO.json\n\n{USAGE}")),
    }
}

fn run_engine(o: &Options, scenario: &Scenario) -> Result<crate::RunResult, String> {
    match o.engine.as_deref().unwrap_or("host-sim") {
        "host-sim" => crate::sim::run(scenario).map_err(|e| format!("{e:#}")),
        "envoy" => Err("the envoy engine is not wired in yet".to_string()),
        other => Err(format!("unknown engine {other:?}: use host-sim or envoy")),
    }
}

fn dispatch(args: Vec<String>) -> Result<i32, String> {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return Ok(2);
    };
    match cmd.as_str() {
        "run" => {
            let o = parse(rest)?;
            let scenario = one_scenario(&o)?;
            let result = run_engine(&o, &scenario)?;
            let json = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
            match &o.output {
                Some(path) => std::fs::write(path, json + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                None => println!("{json}"),
            }
            Ok(if result.all_expectations_passed() { 0 } else { 1 })
        }
        "prometheus" => {
            let o = parse(rest)?;
            let scenario = one_scenario(&o)?;
            let result = run_engine(&o, &scenario)?;
            print!("{}", result.prometheus);
            Ok(if result.all_expectations_passed() { 0 } else { 1 })
        }
        "bench" => {
            let o = parse(rest)?;
            let scenario = one_scenario(&o)?;
            let report = crate::bench::run(&scenario, o.requests.unwrap_or(20_000)).map_err(|e| format!("{e:#}"))?;
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            Ok(0)
        }
        "wasi-run" => {
            let Some((module, args)) = rest.split_first() else { return Err(format!("wasi-run needs a MODULE.wasm\n\n{USAGE}")) };
            let mut argv = vec![module.clone()];
            argv.extend(args.iter().cloned());
            crate::sim::command::run_command(module.as_ref(), argv).map_err(|e| format!("{e:#}"))
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}
