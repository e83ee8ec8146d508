//! Plugin configurations (JSON read with protobuf's JSON mapping). Asserts:
//! the SDK's `config::parse` accepts exactly the inputs that are one JSON
//! object (or blank), checked against serde_json reading a map of values on
//! a message whose every field is unknown (the flattened `Unknown` buffers
//! every value, so invalid UTF-8 anywhere is refused, as `Value` refuses
//! it); every error names a path; and the stats, metadata_exchange and
//! attributegen configuration parsers (CEL compile included) return Ok or
//! Err without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_sdk::config::{self, protojson::Unknown};
use serde::Deserialize;

/// A message with no known field: any object parses, its keys listed.
#[derive(Deserialize)]
struct AnyMessage {
    #[serde(flatten)]
    unknown: Unknown,
}

fuzz_target!(|data: &[u8]| {
    let blank = data.iter().all(u8::is_ascii_whitespace);
    let as_object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data);
    match config::parse::<AnyMessage>(data) {
        Ok(m) => {
            assert!(blank || as_object.is_ok(), "accepted what is not one JSON object");
            if let Ok(object) = &as_object {
                // Duplicate keys: the map keeps one, `Unknown` lists each.
                assert!(m.unknown.0.len() >= object.len());
            }
        }
        Err(e) => {
            assert!(!blank && as_object.is_err(), "refused a JSON object: {e}");
            assert!(!e.path.is_empty());
        }
    }
    if let Err(e) = config::parse::<stats::config::PluginConfig>(data) {
        assert!(!e.path.is_empty());
    }
    if let Err(e) = metadata_exchange::config::parse(data) {
        assert!(!e.path.is_empty());
    }
    if let Err(e) = attributegen::rules::AttributeGen::from_config(data) {
        assert!(!e.path.is_empty());
    }
});
