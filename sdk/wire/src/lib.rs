//! The wire formats shared by the SDK, the plugins, host-sim and the tests:
//! one implementation of each, so the plugin that decodes a format and the
//! simulator that encodes it cannot drift apart.
//!
//! * [`abi`]: proxy-wasm ABI 0.2.1 numbers (statuses, map/buffer/stream
//!   types, log levels, metric types).
//! * [`pairs`]: the proxy-wasm "pairs" encoding of header maps.
//! * [`protobuf`]: `google.protobuf.Struct`/`Value`/`ListValue` and Envoy's
//!   `config.core.v3.Node`, with JSON conversions.
//! * [`istio`]: Istio's standard label list, the peer-metadata header of
//!   its HTTP metadata exchange (base64 of a `Struct`), the Wasm-era key set
//!   a proxy sends, and the frame of its TCP exchange.
//!
//! Every decoder takes arbitrary bytes and answers `None`/`Err` on malformed
//! input; none panics. This crate has no proxy-wasm or wasmtime dependency: it
//! builds natively and for `wasm32-wasip1`.

pub mod abi;
pub mod istio;
pub mod pairs;
pub mod protobuf;
