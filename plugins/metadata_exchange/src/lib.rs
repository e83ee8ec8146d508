//! `metadata_exchange`: Istio's peer metadata exchange, drop-in, for the
//! `stats` plugin to fill Istio's `source_*` / `destination_*` labels.
//!
//! ```json
//! {"max_peer_cache_size": 20}
//! ```
//!
//! As an HTTP filter it reads, stores and strips the peer's
//! `x-envoy-peer-metadata-id` / `x-envoy-peer-metadata` headers and sets
//! this proxy's own on outbound requests and inbound responses, as Istio's
//! sidecars do. The peer's metadata (a serialized `google.protobuf.Struct`)
//! is stored with `set_property` as `downstream_peer` / `upstream_peer`
//! (and the id as `*_peer_id`), which Envoy keeps as the filter state
//! `wasm.<name>` that `stats` reads. docs/metadata_exchange.md has the
//! reference.
//!
//! * [`config`]: Istio's configuration and meshwasm's opt-ins.
//! * [`exchange`]: the exchange, the peer cache and the checks, free of
//!   host calls and unit-tested natively.
//! * `shell` (wasm only): the contexts, through `meshwasm_sdk::host`.

pub mod config;
pub mod exchange;
#[cfg(target_arch = "wasm32")]
mod shell;
pub mod tcp;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshwasm_sdk::host::log_panics();
    proxy_wasm::set_root_context(shell::root);
}}
