//! Istio's metric vocabulary, shared by plugins that emit Istio-compatible
//! metrics (`stats`) or read Istio's workload facts.
//!
//! * Stat names carry their labels: `label=.=value;.;label2=.=value2;.;istio_requests_total`
//!   ([`StatNaming`]); Envoy's `stats_tags` regexes (Istio's bootstrap lists one per
//!   standard label, e.g. `(reporter=\.=(.*?);\.;)`) turn them into Prometheus labels.
//! * The standard labels in the order Istio's `/stats/prometheus` shows them
//!   ([`Label`], [`STANDARD_LABELS`]), and per-metric label plans with Istio's
//!   override rules ([`LabelPlan`]).
//!   Label values are sanitized so that none can end its field or start
//!   another, whatever the separators, and cut to a byte bound
//!   ([`StatNaming::label_value`]).
//! * A per-metric cache from label values to metric ids with a cap on
//!   distinct label sets ([`SeriesCache`]) and a bound on the bytes all of
//!   a VM's series take ([`SeriesBudget`]).
//! * Workload facts from node metadata or a peer's metadata ([`WorkloadInfo`]),
//!   the peer-metadata header of Istio's metadata exchange
//!   ([`decode_peer_metadata_header`]), principals and their namespaces.
//! * Decoded peers remembered per VM by their encoded bytes ([`PeerMemo`]).
//! * Envoy's response-flag short strings ([`response_flags_short_string`]).
//!
//! One submodule per concern; everything is re-exported here, so plugins
//! use `meshwasm_sdk::istio::X`.

mod labels;
mod naming;
pub mod peer;
mod peer_memo;
mod request;
mod series;
mod workload;

pub use labels::*;
pub use naming::*;
pub use peer_memo::*;
pub use request::*;
pub use series::*;
pub use workload::*;

/// Separator between `label=.=value` fields (Istio's default).
pub const DEFAULT_FIELD_SEPARATOR: &str = ";.;";
/// Separator between a label and its value (Istio's default).
pub const DEFAULT_VALUE_SEPARATOR: &str = "=.=";
/// Prefix of every metric name (`istio_requests_total`).
pub const DEFAULT_STAT_PREFIX: &str = "istio";
/// Istio's value for a fact nobody knows.
pub const UNKNOWN: &str = "unknown";
/// Istio's canonical revision when a workload has none.
pub const LATEST: &str = "latest";
/// Every label value of the series that takes label sets past a cap.
pub const OVERFLOW: &str = "overflow";

/// The label key of the canonical service name.
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
/// The label key of the canonical service revision.
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";

pub use meshwasm_wire::istio::{PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER};
