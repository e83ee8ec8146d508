//! The proxy-wasm "pairs" encoding of header maps (and of string-map
//! properties such as `request.headers`): `u32 N`, N × (`u32 key_len`,
//! `u32 value_len`), then every key and value followed by a NUL byte; nothing
//! may trail. All integers little-endian. An empty buffer is an empty map.

/// The reference host (proxy-wasm cpp-host, Envoy) refuses a map a plugin
/// hands it that is larger than this ...
pub const HOST_MAX_BYTES: usize = 1 << 20;
/// ... or has more entries than this.
pub const HOST_MAX_PAIRS: usize = 1024;

/// Encodes key/value pairs.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(k, v)| 10 + k.as_ref().len() + v.as_ref().len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len_u32(k.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.as_ref().len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Lengths on the wire are u32; a longer item cannot be in a proxy's memory
/// on wasm32 anyway, so saturate rather than fail.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decodes a pairs buffer into borrowed keys and values, in order; `None`
/// when it is malformed: truncated, a count or size larger than the data, a
/// missing NUL, or bytes after the last value.
pub fn decode(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let n = read_u32(buf, 0)? as usize;
    // Each pair takes 8 bytes of sizes and two NULs: a larger count lies.
    let sizes_end = n.checked_mul(8)?.checked_add(4)?;
    if n.checked_mul(10)? > buf.len() - 4 {
        return None;
    }
    let mut data = sizes_end;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key_len = read_u32(buf, 4 + i * 8)? as usize;
        let value_len = read_u32(buf, 8 + i * 8)? as usize;
        let key = take_nul_terminated(buf, &mut data, key_len)?;
        let value = take_nul_terminated(buf, &mut data, value_len)?;
        out.push((key, value));
    }
    (data == buf.len()).then_some(out)
}

/// [`decode`] with the reference host's limits on what a plugin may hand it
/// ([`HOST_MAX_BYTES`], [`HOST_MAX_PAIRS`]).
pub fn decode_within_host_limits(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if buf.len() > HOST_MAX_BYTES {
        return None;
    }
    decode(buf).filter(|pairs| pairs.len() <= HOST_MAX_PAIRS)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn take_nul_terminated<'a>(buf: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    if *buf.get(end)? != 0 {
        return None;
    }
    let item = buf.get(*at..end)?;
    *at = end + 1;
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pairs = [(":path", "/a"), ("x-empty", ""), ("k", "v")];
        let enc = encode(&pairs);
        let dec = decode(&enc).expect("valid");
        assert_eq!(dec.len(), 3);
        assert_eq!(dec[0], (&b":path"[..], &b"/a"[..]));
        assert_eq!(dec[1], (&b"x-empty"[..], &b""[..]));
        assert_eq!(dec[2], (&b"k"[..], &b"v"[..]));
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let enc = encode(&[(&b"x-bin"[..], &b"\xff\xfe\x00z"[..])]);
        assert_eq!(decode(&enc).expect("valid")[0].1, b"\xff\xfe\x00z");
    }

    #[test]
    fn refuses_malformed_buffers() {
        let mut enc = encode(&[("a", "b")]);
        enc.push(0);
        assert!(decode(&enc).is_none(), "trailing byte");
        let mut enc = encode(&[("a", "b")]);
        let last = enc.len() - 1;
        enc[last] = b'x';
        assert!(decode(&enc).is_none(), "missing NUL");
        let mut enc = encode(&[("a", "b")]);
        enc[0] = 2;
        assert!(decode(&enc).is_none(), "count larger than the data");
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_none(), "a lying count allocates nothing");
        assert!(decode(&[1, 0]).is_none(), "truncated count");
        assert!(decode(&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'a', 1, 0]).is_none(), "key not NUL-terminated");
        let enc = encode(&[("key", "value")]);
        for cut in 1..enc.len() {
            assert!(decode(&enc[..cut]).is_none(), "truncated at {cut}");
        }
    }

    #[test]
    fn host_limits() {
        let many: Vec<(String, String)> = (0..=HOST_MAX_PAIRS).map(|i| (i.to_string(), String::new())).collect();
        let enc = encode(&many);
        assert_eq!(decode(&enc).map(|p| p.len()), Some(HOST_MAX_PAIRS + 1));
        assert!(decode_within_host_limits(&enc).is_none(), "over the pair limit");
        let big = encode(&[("k", "v".repeat(HOST_MAX_BYTES))]);
        assert!(decode(&big).is_some());
        assert!(decode_within_host_limits(&big).is_none(), "over the byte limit");
    }

    #[test]
    fn empty_buffer_is_an_empty_map() {
        assert_eq!(decode(&[]).map(|p| p.len()), Some(0));
        assert_eq!(decode(&encode::<&str, &str>(&[])).map(|p| p.len()), Some(0));
    }
}
