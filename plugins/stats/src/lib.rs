//! `stats`: Istio's stats extension as a proxy-wasm plugin (docs/stats.md).
//!
//! * [`config`]: Istio's `stats.PluginConfig` as JSON, strictly parsed.
//! * The core, free of host calls and unit-tested natively:
//!   [`facts`] (what the shell learns about a request or a connection),
//!   [`labels`] (Istio's standard label values), [`metrics`] (the metrics,
//!   overrides, custom definitions and the cardinality cap), [`report`]
//!   (HTTP requests and TCP connection reports).
//! * `shell` (wasm only): the root, HTTP and network contexts that read host
//!   facts, call the core and write metrics, through `meshwasm_sdk::host`.

pub mod config;
pub mod facts;
pub mod labels;
pub mod metrics;
pub mod report;
#[cfg(target_arch = "wasm32")]
mod shell;
#[cfg(test)]
mod testing;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshwasm_sdk::host::log_panics();
    proxy_wasm::set_root_context(shell::root);
}}
