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
    // No panic is expected; if one happens its message reaches the proxy's
    // log before the VM aborts, as with proxy-wasm's `set_log_level` hook
    // (whose own log call unwraps).
    std::panic::set_hook(Box::new(|info| {
        let _ = meshwasm_sdk::host::log(meshwasm_sdk::host::LogLevel::Critical, &info.to_string());
    }));
    proxy_wasm::set_root_context(shell::root);
}}
