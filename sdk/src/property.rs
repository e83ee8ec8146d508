//! Decoding Envoy's property encodings (see docs/host-sim.md, "Properties").

/// An 8-byte little-endian integer (`response.code`, `request.size`, ...).
pub fn decode_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.try_into().ok()?))
}

/// A one-byte bool (`connection.mtls`).
pub fn decode_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [b] => Some(*b != 0),
        _ => None,
    }
}

/// A property path for `get_property`: segments in order.
pub fn path(p: &str) -> Vec<&str> {
    p.split('.').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_envoy_encodings() {
        assert_eq!(decode_i64(&200i64.to_le_bytes()), Some(200));
        assert_eq!(decode_i64(&[1, 2]), None);
        assert_eq!(decode_bool(&[1]), Some(true));
        assert_eq!(decode_bool(&[]), None);
        assert_eq!(path("request.url_path"), vec!["request", "url_path"]);
    }
}
