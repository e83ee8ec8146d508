//! The start of a connection's bytes read as Istio's TCP exchange frame
//! (magic, length, `Any`-wrapped `Struct`). Asserts, for every input and
//! two caps: no panic; `Incomplete` asks for more bytes than there are and
//! only while the data is a prefix of a possible frame; `Oversized` only
//! when the announced length exceeds the cap; `consumed` never exceeds the
//! data and equals header + announced length; a frame's result does not
//! depend on the bytes after it, and one byte less is `Incomplete`; a peer
//! re-encoded with `encode_tcp_frame` decodes to the same id and metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_wire::istio::{
    decode_tcp_frame, encode_tcp_frame, TcpFrame, TCP_EXCHANGE_HEADER_BYTES, TCP_EXCHANGE_MAGIC,
};
use meshwasm_wire::protobuf;

fn announced(data: &[u8]) -> usize {
    u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize
}

fn check(data: &[u8], max: usize) {
    let magic = TCP_EXCHANGE_MAGIC.to_be_bytes();
    match decode_tcp_frame(data, max) {
        TcpFrame::NoMagic => assert!(!data.starts_with(&magic) && !magic.starts_with(data)),
        TcpFrame::Incomplete { needed } => {
            assert!(needed > data.len(), "Incomplete with enough bytes");
            assert!(data.starts_with(&magic) || magic.starts_with(data));
        }
        TcpFrame::Oversized { length } => {
            assert!(length > max);
            assert_eq!(length, announced(data));
        }
        TcpFrame::Malformed { consumed } => {
            assert!(consumed <= data.len());
            assert_eq!(consumed, TCP_EXCHANGE_HEADER_BYTES + announced(data));
            assert_eq!(decode_tcp_frame(&data[..consumed], max), TcpFrame::Malformed { consumed });
        }
        TcpFrame::Peer { consumed, id, metadata } => {
            assert!(consumed <= data.len());
            assert_eq!(consumed, TCP_EXCHANGE_HEADER_BYTES + announced(data));
            assert_eq!(
                decode_tcp_frame(&data[..consumed - 1], max),
                TcpFrame::Incomplete { needed: consumed },
                "a frame cut by one byte must wait for it"
            );
            match decode_tcp_frame(&data[..consumed], max) {
                TcpFrame::Peer { consumed: c, id: i, metadata: m } => {
                    assert_eq!((c, &i), (consumed, &id));
                    assert_eq!(protobuf::encode(&m), protobuf::encode(&metadata));
                }
                other => panic!("trailing bytes changed the frame: {other:?}"),
            }
            let frame = encode_tcp_frame(&id, &metadata);
            match decode_tcp_frame(&frame, usize::MAX) {
                TcpFrame::Peer { consumed: c, id: i, metadata: m } => {
                    assert_eq!(c, frame.len());
                    assert_eq!(i, id);
                    assert_eq!(protobuf::encode(&m), protobuf::encode(&metadata));
                }
                other => panic!("re-encoded frame did not decode: {other:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The plugin's default cap (64 KiB) and a small one, so both sides of
    // the cap are reached with short inputs.
    check(data, 64 * 1024);
    check(data, 64);
});
