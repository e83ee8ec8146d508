//! The `host-sim` command line. Exit codes: 0 ran (and every `expect`
//! passed), 1 an `expect` failed (or `diff` found a difference), 2 bad input.

use crate::scenario::Scenario;
use std::path::PathBuf;

const USAGE: &str = "\
host-sim: Envoy's proxy-wasm host, simulated on wasmtime

USAGE:
  host-sim run [--engine host-sim|envoy] [--format json|text] [--output FILE] SCENARIO.json
      Run the scenario's plugins over its streams; print the result as JSON
      (default) or as a readable summary followed by the Prometheus text.
  host-sim prometheus [--engine host-sim|envoy] SCENARIO.json
      Run the scenario and print only the Prometheus text.
  host-sim diff SCENARIO.json
      Run the scenario on host-sim and in real Envoy and list every
      difference (exit 1 if any), ignoring host-specific headers.
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
    format: Option<String>,
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
            "--format" => o.format = Some(value("--format")?),
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
        "envoy" => crate::envoy::run_scenario(scenario).map_err(|e| format!("{e:#}")),
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
            let text = match o.format.as_deref().unwrap_or("json") {
                "json" => serde_json::to_string_pretty(&result).map_err(|e| e.to_string())? + "\n",
                "text" => summary(&result),
                other => return Err(format!("unknown format {other:?}: use json or text")),
            };
            match &o.output {
                Some(path) => {
                    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?
                }
                None => print!("{text}"),
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
        "diff" => {
            let o = parse(rest)?;
            let scenario = one_scenario(&o)?;
            let sim = crate::sim::run(&scenario).map_err(|e| format!("host-sim engine: {e:#}"))?;
            let envoy = crate::envoy::run_scenario(&scenario).map_err(|e| format!("envoy engine: {e:#}"))?;
            let ignore = crate::diff::Ignore { headers: crate::envoy::HOST_SPECIFIC_HEADERS };
            let differences = crate::diff::diff(&sim, &envoy, &ignore);
            for d in &differences {
                println!("{d}");
            }
            println!("{} difference(s) between host-sim and envoy", differences.len());
            Ok(if differences.is_empty() { 0 } else { 1 })
        }
        "bench" => {
            let o = parse(rest)?;
            let scenario = one_scenario(&o)?;
            let report = crate::bench::run(&scenario, o.requests.unwrap_or(20_000)).map_err(|e| format!("{e:#}"))?;
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            Ok(0)
        }
        "wasi-run" => {
            let Some((module, args)) = rest.split_first() else {
                return Err(format!("wasi-run needs a MODULE.wasm\n\n{USAGE}"));
            };
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

/// A readable account of a run: plugins, each stream and TCP connection,
/// expectations, then the Prometheus text.
pub fn summary(r: &crate::RunResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {} (engine {})", r.scenario, r.engine);
    for p in &r.plugins {
        let state = if p.configured {
            "configured".to_string()
        } else {
            format!("REJECTED: {}", p.error.clone().unwrap_or_default())
        };
        let _ = writeln!(out, "plugin {} (root_id {:?}): {state}", p.name, p.root_id);
    }
    for l in &r.logs {
        let _ = writeln!(out, "  [{:?}] {}: {}", l.level, l.plugin, l.message);
    }
    for (i, s) in r.streams.iter().enumerate() {
        let _ = writeln!(out, "stream {i} {}:", s.name);
        match &s.upstream_request {
            Some(u) => {
                let line = |k: &str| crate::result::header(&u.headers, k).unwrap_or("").to_string();
                let _ = writeln!(
                    out,
                    "  upstream got {} {} ({} headers, {} body bytes)",
                    line(":method"),
                    line(":path"),
                    u.headers.len(),
                    u.body.len()
                );
            }
            None => {
                let _ = writeln!(out, "  upstream got nothing");
            }
        }
        if let Some(l) = &s.local_reply {
            let _ = writeln!(out, "  local reply {} from {} ({})", l.status, l.plugin, l.details);
        }
        match &s.downstream_response {
            Some(d) => {
                let _ = writeln!(out, "  client got {} ({} body bytes)", d.status, d.body.len());
            }
            None => {
                let _ = writeln!(out, "  client got no response{}", if s.reset { " (reset)" } else { "" });
            }
        }
        for c in &s.http_calls {
            let _ = writeln!(out, "  http_call to {} -> {:?}", c.cluster, c.response_status);
        }
        if let Some(f) = &s.plugin_failure {
            let _ = writeln!(out, "  plugin {} failed: {}", f.plugin, f.message.lines().next().unwrap_or(""));
        }
        for l in &s.logs {
            let _ = writeln!(out, "  [{:?}] {}: {}", l.level, l.plugin, l.message);
        }
    }
    for (i, c) in r.connections.iter().enumerate() {
        let _ = writeln!(out, "connection {i} {}:", c.name);
        if c.upstream_connected {
            let _ = writeln!(
                out,
                "  upstream got {} bytes, client got {} bytes",
                c.upstream_received.len(),
                c.downstream_received.len()
            );
        } else {
            let _ = writeln!(out, "  upstream not connected");
        }
        if let Some(f) = &c.plugin_failure {
            let _ = writeln!(out, "  plugin {} failed: {}", f.plugin, f.message.lines().next().unwrap_or(""));
        }
        for l in &c.logs {
            let _ = writeln!(out, "  [{:?}] {}: {}", l.level, l.plugin, l.message);
        }
    }
    for e in &r.expectations {
        let what = e
            .expectation
            .pointer
            .clone()
            .or(e.expectation.prometheus.clone())
            .or(e.expectation.log_contains.clone())
            .unwrap_or_default();
        let _ = writeln!(out, "expect {what}: {}", if e.passed { "ok" } else { "FAILED" });
    }
    let _ = writeln!(out, "--- prometheus ---");
    out.push_str(&r.prometheus);
    out
}
