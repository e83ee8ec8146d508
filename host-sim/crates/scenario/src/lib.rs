//! host-sim's contract: what both engines (the simulator and real Envoy)
//! read and write, with no engine in it.
//!
//! * [`scenario`]: the input file (plugins, node, connection, streams, TCP connections).
//! * [`result`]: the JSON result both engines produce.
//! * [`diff`]: the differences between two results.
//! * [`prometheus`]: plugin metrics as Envoy's `/stats/prometheus` renders them.
//! * [`summary`]: a result as a readable summary.
//! * [`http1_framing`]: Envoy's HTTP/1 framing rule, which both engines apply.

pub mod diff;
pub mod http1_framing;
pub mod prometheus;
pub mod result;
pub mod scenario;
pub mod summary;

/// The proxy-wasm ABI numbers (log levels and metric types appear in results).
pub use meshwasm_wire::abi;

/// The HTTP upstream cluster's name, as `xds.cluster_name` reports it (the
/// envoy engine's bootstrap uses the same).
pub const UPSTREAM_CLUSTER: &str = "upstream";
/// The cluster TCP connections go to, in both engines.
pub const TCP_UPSTREAM_CLUSTER: &str = "tcp_upstream";
