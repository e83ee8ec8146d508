//! `noop`: a root context whose stream contexts return `Continue`
//! everywhere. Its per-request (or per-connection) cost is the floor every
//! other plugin is measured against.
//!
//! * [`config`]: which filter it is (HTTP or network), from the
//!   configuration.
//! * `shell` (wasm only): the root and stream contexts.
//!
//! There is no core: the plugin decides nothing per request.

pub mod config;
#[cfg(target_arch = "wasm32")]
mod shell;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshwasm_sdk::host::log_panics();
    proxy_wasm::set_root_context(shell::root);
}}
