//! The conformance suite: every scenario in tests/conformance/ runs on
//! host-sim and in a real Envoy, and any difference between the two results
//! (beyond the documented host-specific headers) fails the test.
//!
//! One test per scenario file, named by its file stem (a custom harness,
//! libtest-mimic, so the usual libtest arguments work):
//!
//! ```sh
//! cargo test -p meshwasm-tests --test conformance                        # all of them
//! cargo test -p meshwasm-tests --test conformance -- stats               # names containing "stats"
//! cargo test -p meshwasm-tests --test conformance -- --exact stats-tcp   # just stats-tcp.json
//! cargo test -p meshwasm-tests --test conformance -- --list
//! ```
//!
//! Scenarios run one at a time unless `--test-threads` (or
//! `RUST_TEST_THREADS`) says otherwise: each starts its own Envoy, and
//! several at once on a small machine make timings flaky.
//!
//! Without an Envoy binary every scenario is reported `ignored` (with the
//! reason) unless `CI` is set, which makes a missing Envoy a failure.
//! tests/conformance-pending/ is not run.

use host_sim::{diff, envoy, Scenario};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// The scenario files, sorted; only `*.json` directly in tests/conformance/.
fn scenarios() -> Result<Vec<PathBuf>, String> {
    let dir = scenario_dir();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        if path.is_file() && path.extension().is_some_and(|x| x == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `tests/conformance/<file>`, the way the failure messages name a scenario.
fn shown(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

/// The failing expectations of one side, one JSON object a line.
fn failed_expectations(result: &host_sim::result::RunResult) -> Vec<String> {
    result
        .expectations
        .iter()
        .filter(|e| !e.passed)
        .map(|e| serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}")))
        .collect()
}

/// Runs one scenario on host-sim and in Envoy; the error names the file and
/// lists every failed expectation and every difference.
fn check(path: &Path) -> Result<(), Failed> {
    let name = shown(path);
    let scenario = Scenario::load(path).map_err(|e| format!("{name}: bad scenario: {e}"))?;
    for p in &scenario.plugins {
        if !p.wasm.exists() {
            return Err(format!(
                "{name}: {} is missing: run `cargo build --target wasm32-wasip1 --release`",
                p.wasm.display()
            )
            .into());
        }
    }
    let on_sim = host_sim::run(&scenario).map_err(|e| format!("{name}: host-sim: {e:#}"))?;
    let on_envoy = envoy::run_scenario(&scenario).map_err(|e| format!("{name}: envoy: {e:#}"))?;

    let mut problems = Vec::new();
    for (side, result) in [("host-sim", &on_sim), ("envoy", &on_envoy)] {
        let failed = failed_expectations(result);
        if !failed.is_empty() {
            problems.push(format!("{side} failed {} expectation(s):", failed.len()));
            problems.extend(failed.into_iter().map(|f| format!("  {f}")));
        }
    }
    let ignore = diff::Ignore { headers: envoy::HOST_SPECIFIC_HEADERS };
    let differences = diff::diff(&on_sim, &on_envoy, &ignore);
    if !differences.is_empty() {
        problems.push(format!(
            "host-sim differs from Envoy ({} difference(s), each host-sim != envoy):",
            differences.len()
        ));
        problems.extend(differences.into_iter().map(|d| format!("  {d}")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:\n{}", problems.join("\n")).into())
    }
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        // Serial unless asked: each scenario runs its own Envoy.
        let from_env = std::env::var("RUST_TEST_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0);
        args.test_threads = Some(from_env.unwrap_or(1));
    }

    // Decided once: with no Envoy and no CI, every scenario is skipped.
    let skip = envoy::find_envoy(None).is_none() && std::env::var_os("CI").is_none();
    if skip && !args.list {
        eprintln!("conformance: SKIPPING every scenario: no envoy binary (run scripts/setup.sh; CI=true makes this a failure)");
    }

    let trials = match scenarios() {
        Ok(files) if files.is_empty() => {
            let dir = scenario_dir();
            vec![Trial::test("no-scenarios", move || {
                Err(format!("no conformance scenarios in {}", dir.display()).into())
            })]
        }
        Ok(files) => files
            .into_iter()
            .map(|path| {
                let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                Trial::ignorable_test(name, move || {
                    if skip {
                        Ok(Completion::ignored_with("no envoy binary"))
                    } else {
                        check(&path).map(|()| Completion::Completed)
                    }
                })
            })
            .collect(),
        Err(e) => vec![Trial::test("list-scenarios", move || Err(e.into()))],
    };

    libtest_mimic::run(&args, trials).exit();
}
