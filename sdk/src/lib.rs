//! meshwasm SDK: the pure, testable pieces plugins share.
//!
//! * [`attributes`]: typed request attributes behind a trait (host or map).
//! * [`cel`]: CEL expressions compiled once, evaluated over attributes.
//! * [`config`]: JSON configuration parsing whose errors name the field.
//! * [`fingerprint`]: 128-bit fingerprints, to key maps by long values.
//! * [`host`]: every proxy-wasm host call, none of which can panic.
//! * [`istio`]: Istio's metric naming, labels, series cache, workload facts.
//! * [`property`]: decoding Envoy's property encodings; host calls that never panic.

pub mod attributes;
pub mod cel;
pub mod config;
pub mod fingerprint;
pub mod host;
pub mod istio;
pub mod property;
