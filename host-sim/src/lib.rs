//! host-sim: Envoy's proxy-wasm host (ABI 0.2.1 and WASI preview1) on
//! wasmtime, for testing and benchmarking plugins without Envoy.
//!
//! * [`scenario`]: the input file (plugins, node, connection, streams).
//! * [`sim`]: the simulated proxy that runs a scenario ([`sim::Proxy`]).
//! * [`envoy`]: the same scenario run in a real Envoy.
//! * [`result`]: the JSON result both engines produce.
//! * [`summary`]: a result as a readable summary (`host-sim run --format text`).

pub mod abi;
pub mod bench;
pub mod diff;
pub mod envoy;
pub mod http1_framing;
pub mod pairs;
pub mod prometheus;
pub mod result;
pub mod scenario;
pub mod sim;
pub mod summary;

pub use result::RunResult;
pub use scenario::Scenario;
