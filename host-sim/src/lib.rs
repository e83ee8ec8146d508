//! host-sim: Envoy's proxy-wasm host (ABI 0.2.1 and WASI preview1) on
//! wasmtime, for testing and benchmarking plugins without Envoy, and the same
//! scenarios in a real Envoy. This crate is the curated library API; the
//! `host-sim` binary (src/main.rs, src/commands/) is a thin user of it.
//!
//! ```no_run
//! let scenario = host_sim::Scenario::load("examples/noop.json".as_ref()).unwrap();
//! let simulated = host_sim::run(&scenario).unwrap();
//! let in_envoy = host_sim::envoy::run_scenario(&scenario).unwrap();
//! let ignore = host_sim::diff::Ignore { headers: host_sim::envoy::HOST_SPECIFIC_HEADERS };
//! let differences = host_sim::diff::diff(&simulated, &in_envoy, &ignore);
//! ```
//!
//! Crates behind it (see docs/architecture.md): `host-sim-scenario` (the
//! contract both engines share), `host-sim-simulator` (the simulated proxy),
//! `host-sim-envoy` (the real-Envoy engine).

/// What a run produced, in either engine.
pub use host_sim_scenario::result::RunResult;
/// The scenario file a run replays.
pub use host_sim_scenario::scenario::Scenario;
/// The contract both engines share: the scenario and result formats, the
/// differences between two results, Prometheus rendering, the text summary.
pub use host_sim_scenario::{diff, prometheus, result, scenario, summary};
/// The proxy-wasm ABI numbers (log levels, metric types, statuses).
pub use meshwasm_wire::abi;

/// Benchmarks: replaying a scenario's traffic many times (`host-sim bench`).
pub use host_sim_simulator::bench;
/// Runs a scenario on the simulated proxy.
pub use host_sim_simulator::run;
/// Runs a WASI command module the way Envoy's host would (`host-sim wasi-run`).
pub use host_sim_simulator::run_wasi_command;
/// The simulated proxy, step by step: start it, replay a scenario's
/// traffic, advance virtual time, read metrics.
pub use host_sim_simulator::Proxy;
/// Bounds on a plugin's VM (time per callback, memory).
pub use host_sim_simulator::VmLimits;

/// The real-Envoy engine: the same scenario in Envoy 1.40.
pub use host_sim_envoy as envoy;
