//! Header maps a plugin hands the host, in the proxy-wasm pairs encoding
//! (meshwasm-wire's codec), decoded with the reference host's limits into
//! owned bytes.

pub use meshwasm_wire::pairs::encode;

/// Decodes a plugin's pairs buffer; `None` when it is malformed or over the
/// reference host's limits (1 MiB, 1024 pairs).
pub fn decode(buf: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let pairs = meshwasm_wire::pairs::decode_within_host_limits(buf)?;
    Some(pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
}
