//! meshwasm SDK: the pure, testable pieces plugins share.
//!
//! * [`attributes`]: typed request attributes behind a trait (host or map).
//! * [`config`]: JSON configuration parsing whose errors name the field.
//! * [`property`]: decoding Envoy's property encodings.

pub mod attributes;
pub mod config;
pub mod property;
