//! Numbers of the proxy-wasm ABI (0.2.1): meshwasm-wire's, shared with the SDK.

pub use meshwasm_wire::abi::*;

/// A host function's result: a value, or the status the plugin gets back.
pub type HostResult<T> = Result<T, Status>;
