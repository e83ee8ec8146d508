//! Serialized `google.protobuf.Struct` and `envoy.config.core.v3.Metadata`
//! (node metadata, endpoint and cluster metadata). Asserts: no panic;
//! whatever decodes re-encodes to bytes that decode to the same message
//! (compared as encoded bytes: deterministic, NaN-safe), and the encoding
//! is a fixed point; the JSON view and the Wasm-era key set never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_wire::istio::wasm_era_peer_struct;
use meshwasm_wire::protobuf;

fuzz_target!(|data: &[u8]| {
    if let Some(s) = protobuf::decode_struct(data) {
        let bytes = protobuf::encode(&s);
        let again = protobuf::decode_struct(&bytes).expect("our own encoding must decode");
        assert_eq!(protobuf::encode(&again), bytes);
        let _ = protobuf::struct_to_json(&s);
        let _ = protobuf::encode(&wasm_era_peer_struct(&s));
    }
    if let Some(m) = protobuf::decode_metadata(data) {
        let bytes = protobuf::encode(&m);
        let again = protobuf::decode_metadata(&bytes).expect("our own encoding must decode");
        assert_eq!(protobuf::encode(&again), bytes);
    }
});
