//! Serialized `envoy.config.core.v3.Node` (the `node` property). Asserts:
//! no panic; whatever decodes re-encodes to bytes that decode to the same
//! node (compared as encoded bytes), and the encoding is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_wire::protobuf;

fuzz_target!(|data: &[u8]| {
    let Some(node) = protobuf::decode_node(data) else { return };
    let bytes = protobuf::encode(&node);
    let again = protobuf::decode_node(&bytes).expect("our own encoding must decode");
    assert_eq!(protobuf::encode(&again), bytes);
    assert_eq!(again.id, node.id);
    assert_eq!(again.cluster, node.cluster);
});
