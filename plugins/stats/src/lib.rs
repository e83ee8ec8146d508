//! `stats`: Istio's stats extension as a proxy-wasm plugin (docs/stats.md).
//!
//! * [`config`]: Istio's `stats.PluginConfig` as JSON, strictly parsed.
//! * [`core`]: the logic, free of host calls and unit-tested.
//! * `shell` (wasm only): the root and HTTP contexts that feed the core.

pub mod config;
pub mod core;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod shell;
