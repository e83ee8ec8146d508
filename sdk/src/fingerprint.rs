//! 128-bit fingerprints of byte strings, for maps whose keys are long and
//! looked up on every request (series by label values, peers by their
//! metadata bytes).
//!
//! In wasm, hashing a long key with SipHash and comparing it with
//! `memcmp` (a byte at a time there) on every lookup was a large part of
//! `stats`' work per request (host-sim profiles, issue 18). A fingerprint
//! is computed once, and a map keyed by it hashes and compares 16 bytes.
//!
//! The two halves: SipHash-1-3 under a key drawn at random once per VM
//! (std's `RandomState`, from WASI `random_get`), and a word-at-a-time
//! multiply-rotate hash under another random seed. Two different keys
//! share a fingerprint only if both collide: a client cannot predict the
//! SipHash key, and by chance that is about 2^-64 per pair (10^4 keys:
//! about 3 * 10^-12 for any collision at all), before the second half.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// The fingerprint of a sequence of byte strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(u128);

/// A map keyed by fingerprints (which are random already, so the map uses
/// their bits as they are).
pub type FingerprintMap<V> = HashMap<Fingerprint, V, BuildHasherDefault<FingerprintHasher>>;

impl Fingerprint {
    /// Of `parts` in order; a 0xFF byte (which no UTF-8 text contains)
    /// follows each part, so `["ab", "c"]` and `["a", "bc"]` differ when
    /// the parts are text.
    pub fn of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Fingerprint {
        static KEYS: OnceLock<(RandomState, u64)> = OnceLock::new();
        let (sip, seed) = KEYS.get_or_init(|| {
            let seed = RandomState::new().build_hasher().finish();
            (RandomState::new(), seed)
        });
        let mut a = sip.build_hasher();
        let mut b = WordHash(*seed);
        for part in parts {
            a.write(part);
            a.write_u8(0xff);
            b.write(part);
            b.write(&[0xff]);
        }
        Fingerprint(u128::from(a.finish()) << 64 | u128::from(b.finish()))
    }

    /// Of one byte string.
    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        Fingerprint::of([bytes])
    }
}

/// Eight bytes at a time: a few operations per word, where SipHash takes
/// rounds.
struct WordHash(u64);

impl WordHash {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        // The length keeps a short tail from looking like zero bytes.
        self.mix(u64::from_le_bytes(word) ^ (rest.len() as u64) << 59);
    }

    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 27)
    }
}

/// Hashes a [`Fingerprint`] for a [`FingerprintMap`]: its bits as they are.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(7) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= v as u64 ^ (v >> 64) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn equal_parts_equal_fingerprints_and_boundaries_count() {
        let of = |parts: &[&str]| Fingerprint::of(parts.iter().map(|p| p.as_bytes()));
        assert_eq!(of(&["a", "bc"]), of(&["a", "bc"]));
        assert_ne!(of(&["a", "bc"]), of(&["ab", "c"]));
        assert_ne!(of(&["a", ""]), of(&["a"]));
        assert_ne!(of(&[""]), of(&[]));
        assert_ne!(Fingerprint::of_bytes(b"\0"), Fingerprint::of_bytes(b""));
        assert_ne!(Fingerprint::of_bytes(b"12345678\0"), Fingerprint::of_bytes(b"12345678"));
    }

    #[test]
    fn no_collisions_among_many_similar_keys() {
        let mut seen = HashSet::new();
        for i in 0..20_000u32 {
            let value = format!("reviews-v{i}");
            assert!(seen.insert(Fingerprint::of([value.as_bytes(), b"default", b"v1"])), "{value}");
        }
        // Each half alone tells them apart too.
        let lows: HashSet<u64> = seen.iter().map(|f| f.0 as u64).collect();
        let highs: HashSet<u64> = seen.iter().map(|f| (f.0 >> 64) as u64).collect();
        assert_eq!((lows.len(), highs.len()), (20_000, 20_000));
    }

    #[test]
    fn a_fingerprint_map_finds_its_keys() {
        let mut m: FingerprintMap<u32> = FingerprintMap::default();
        for i in 0..1000u32 {
            m.insert(Fingerprint::of_bytes(&i.to_le_bytes()), i);
        }
        assert!((0..1000u32).all(|i| m.get(&Fingerprint::of_bytes(&i.to_le_bytes())) == Some(&i)));
        assert_eq!(m.get(&Fingerprint::of_bytes(b"other")), None);
    }
}
