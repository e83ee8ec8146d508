//! meshwasm SDK: the pure, testable pieces plugins share.
//!
//! * [`config`]: JSON configuration parsing whose errors name the field.
//! * [`property`]: decoding Envoy's property encodings.

pub mod config;
pub mod property;
