//! `x-envoy-peer-metadata` values (base64 of a protobuf `Struct`), as a peer
//! sends them. Asserts: decoding never panics; a value that decodes
//! re-encodes to one that decodes to the same `Struct` (compared as encoded
//! bytes, which are deterministic and keep NaN bits); the encoder's output
//! is a fixed point; and the Wasm-era key set derived from it encodes too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_wire::istio::{decode_peer_metadata, encode_peer_metadata, wasm_era_peer_struct};
use meshwasm_wire::protobuf;

fuzz_target!(|data: &[u8]| {
    let Some(decoded) = decode_peer_metadata(data) else { return };
    let header = encode_peer_metadata(&decoded);
    let again = decode_peer_metadata(header.as_bytes()).expect("our own header must decode");
    assert_eq!(protobuf::encode(&again), protobuf::encode(&decoded), "round trip changed the Struct");
    assert_eq!(encode_peer_metadata(&again), header, "encoding is not a fixed point");
    // What the exchange derives from a peer's node metadata stays encodable.
    let era = wasm_era_peer_struct(&decoded);
    assert!(decode_peer_metadata(encode_peer_metadata(&era).as_bytes()).is_some());
    let _ = protobuf::struct_to_json(&decoded);
});
