//! `attributegen`: Istio's attribute generation plugin, drop-in.
//!
//! ```json
//! {"attributes": [{"output_attribute": "istio_operationId",
//!   "match": [{"value": "ListCatalog",
//!              "condition": "request.url_path == '/api/catalog' && request.method == 'GET'"}]}]}
//! ```
//!
//! For each attribute, the first match whose CEL condition is true (an empty
//! condition always is) sets the attribute with `set_property`, which Envoy
//! keeps as the filter state `wasm.<output_attribute>`: later filters (the
//! `stats` plugin) read it back as the property `istio_operationId`.
//! Attributes are generated in `on_log` (Istio's default phase) or, with
//! `"phase": "ON_REQUEST"`, in `on_request_headers`. docs/attributegen.md
//! has the reference.
//!
//! A configuration error (bad JSON, not an object, an unknown or
//! ill-typed field) is logged with the field's path and rejects the plugin
//! (`on_configure` returns false). What Istio's plugin accepted but could
//! not use (a missing `output_attribute`, a condition that is not valid
//! CEL) is logged and counted as Istio did, or refused with `strict`.
//!
//! * [`config`]: the configuration, parsed and compiled into rules.
//! * [`rules`]: the rules and their evaluation, free of host calls and
//!   unit-tested natively.
//! * `shell` (wasm only): the root and HTTP contexts that read the
//!   configuration, run the rules and set the attributes, through
//!   `meshwasm_sdk::host`.

pub mod config;
pub mod rules;
#[cfg(target_arch = "wasm32")]
mod shell;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshwasm_sdk::host::log_panics();
    proxy_wasm::set_root_context(shell::root);
}}
