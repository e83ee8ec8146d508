//! Facts of a request as Istio's labels spell them.

// ------------------------------------------------------------------ request facts

/// Envoy's short names of the response flags, by bit of the `response.flags`
/// bitmask (Envoy's `CoreResponseFlag` order).
pub const RESPONSE_FLAG_NAMES: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
];

/// The `response_flags` label: the short names of the set flags joined by
/// `,` (in bit order), `-` when none. Unknown bits are ignored.
pub fn response_flags_short_string(flags: u64) -> String {
    let names: Vec<&str> =
        RESPONSE_FLAG_NAMES.iter().enumerate().filter(|(bit, _)| flags & (1u64 << bit) != 0).map(|(_, n)| *n).collect();
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(",")
    }
}

/// Envoy's gRPC request test on `content-type`: `application/grpc`, alone or
/// followed by `+` or `;` (e.g. `application/grpc+proto`).
pub fn is_grpc_content_type(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    match content_type.strip_prefix(GRPC) {
        Some(rest) => rest.is_empty() || rest[0] == b'+' || rest[0] == b';',
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_flags_and_grpc() {
        assert_eq!(response_flags_short_string(0), "-");
        assert_eq!(response_flags_short_string(0x2), "UH");
        assert_eq!(response_flags_short_string(0x20 | 0x4000), "UF,DC");
        assert_eq!(response_flags_short_string(1 << 29), "UDO");
        assert_eq!(response_flags_short_string(1 << 40), "-");
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"application/grpc;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
    }
}
