//! Istio's formats: the standard metric labels in the order Istio's
//! bootstrap lists their tag regexes (so the order `/stats/prometheus` prints
//! them), and the peer-metadata header of its HTTP metadata exchange.

use crate::protobuf::{self, Struct};
use base64::Engine;

/// Istio's standard labels, in Istio's order.
pub const STANDARD_LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Request header of Istio's HTTP metadata exchange: the peer's node id.
pub const PEER_METADATA_ID_HEADER: &str = "x-envoy-peer-metadata-id";
/// Request/response header of Istio's HTTP metadata exchange: base64 of the
/// peer's node metadata as a serialized `google.protobuf.Struct`.
pub const PEER_METADATA_HEADER: &str = "x-envoy-peer-metadata";

/// Standard base64 with or without padding: what Istio writes, and what
/// Envoy's `Base64::decodeWithoutPadding` reads back.
const STANDARD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
/// The URL-safe alphabet (`-_`), accepted too: a header that went through a
/// URL-safe encoder is still the peer's metadata.
const URL_SAFE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64 as the peer-metadata header carries it: standard or URL-safe
/// alphabet, padding optional, no whitespace. `None` on anything else.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(input).or_else(|_| URL_SAFE.decode(input)).ok()
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `x-envoy-peer-metadata` value for a workload's node metadata.
pub fn encode_peer_metadata(metadata: &Struct) -> String {
    base64_encode(&protobuf::encode(metadata))
}

/// The node metadata an `x-envoy-peer-metadata` value carries; `None` when it
/// is not base64 of a well-formed `Struct`.
pub fn decode_peer_metadata(value: &[u8]) -> Option<Struct> {
    protobuf::decode_struct(&base64_decode(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peer_metadata_round_trips() {
        let serde_json::Value::Object(meta) = json!({"NAME": "pod-1", "LABELS": {"app": "a"}}) else { return };
        let header = encode_peer_metadata(&protobuf::struct_from_json(&meta));
        let back = decode_peer_metadata(header.as_bytes()).map(|s| protobuf::struct_to_json(&s));
        assert_eq!(back, Some(meta.clone()));
        // Without padding, and URL-safe, it still decodes.
        let bytes = protobuf::encode_json_struct(&meta);
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        assert!(decode_peer_metadata(unpadded.as_bytes()).is_some());
        assert!(decode_peer_metadata(url_safe.as_bytes()).is_some());
    }

    #[test]
    fn bad_headers_decode_to_none() {
        assert_eq!(decode_peer_metadata(b"%%%not-base64%%%"), None);
        assert_eq!(decode_peer_metadata(b"aGk= "), None, "whitespace");
        assert_eq!(decode_peer_metadata(b"a"), None, "one character is no byte");
        assert_eq!(decode_peer_metadata(base64_encode(b"\x0a\xff\xff\xff\xff\x0f").as_bytes()), None, "not a Struct");
        assert_eq!(base64_decode(b"aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode(b"aGk"), Some(b"hi".to_vec()));
        assert_eq!(base64_decode(b""), Some(Vec::new()));
    }
}
