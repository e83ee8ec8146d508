//! The proxy-wasm "pairs" encoding of header maps, with the reference host's
//! strictness: `u32 N`, N × (`u32 key_len`, `u32 value_len`), then every key and
//! value followed by a NUL byte; nothing may trail.

/// The reference host refuses maps larger than this ...
pub const MAX_PAIRS_BYTES: usize = 1 << 20;
/// ... or with more entries than this.
pub const MAX_PAIRS: usize = 1024;

pub type Pairs = Vec<(String, Vec<u8>)>;

pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut size = 4 + pairs.len() * 8;
    for (k, v) in pairs {
        size += k.as_ref().len() + v.as_ref().len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Decodes a pairs buffer; `None` when it is malformed or over the limits.
pub fn decode(buf: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if buf.len() > MAX_PAIRS_BYTES || buf.len() < 4 {
        return if buf.is_empty() { Some(Vec::new()) } else { None };
    }
    let n = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    if n > MAX_PAIRS {
        return None;
    }
    let sizes_end = 4usize.checked_add(n.checked_mul(8)?)?;
    if sizes_end > buf.len() {
        return None;
    }
    let mut data = sizes_end;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let at = 4 + i * 8;
        let klen = u32::from_le_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        let vlen = u32::from_le_bytes(buf[at + 4..at + 8].try_into().ok()?) as usize;
        let key = take_nul_terminated(buf, &mut data, klen)?;
        let value = take_nul_terminated(buf, &mut data, vlen)?;
        out.push((key.to_vec(), value.to_vec()));
    }
    (data == buf.len()).then_some(out)
}

fn take_nul_terminated<'a>(buf: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    if end >= buf.len() || buf[end] != 0 {
        return None;
    }
    let s = &buf[*at..end];
    *at = end + 1;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pairs = vec![(":path", "/a"), ("x-empty", ""), ("k", "v")];
        let enc = encode(&pairs);
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.len(), 3);
        assert_eq!(dec[0], (b":path".to_vec(), b"/a".to_vec()));
        assert_eq!(dec[1], (b"x-empty".to_vec(), Vec::new()));
    }

    #[test]
    fn rejects_trailing_bytes_missing_nul_and_overlong_counts() {
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
        let many: Vec<(String, String)> = (0..=MAX_PAIRS).map(|i| (i.to_string(), String::new())).collect();
        assert!(decode(&encode(&many)).is_none(), "over the pair limit");
    }

    #[test]
    fn empty_buffer_is_an_empty_map() {
        assert_eq!(decode(&[]).unwrap().len(), 0);
        assert_eq!(decode(&encode::<&str, &str>(&[])).unwrap().len(), 0);
    }
}
