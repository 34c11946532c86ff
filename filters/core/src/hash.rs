//! A fixed hash function: the same input hashes to the same value in every
//! worker, every proxy and every restart (no per-process seed), which is what
//! lets separate Envoy workers agree on which shared-data slot a key lives in.
//!
//! FNV-1a (64 bit) over the bytes, then the SplitMix64 finaliser so that
//! near-identical inputs (consecutive client addresses) spread over the whole
//! output range.

/// A streaming FNV-1a hasher with a SplitMix64 finish.
#[derive(Debug, Clone)]
pub struct StableHasher {
    state: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher { state: FNV_OFFSET }
    }
}

impl StableHasher {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds a field followed by a separator that cannot occur in header
    /// names, so that `("ab", "c")` and `("a", "bc")` hash differently.
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    /// The finished 64-bit hash.
    pub fn finish(&self) -> u64 {
        mix64(self.state)
    }
}

/// SplitMix64's finaliser: a bijection on u64 with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// [`StableHasher`] as a [`std::hash::Hasher`], for the in-memory tables
/// the request path looks keys up in (a breaker's slot and metrics by key,
/// the in-memory store). SipHash, the standard maps' default, resists
/// flooding by chosen colliding keys; these tables do not need that: each
/// holds at most a configured number of keys (`max_breakers`, the shared
/// tables' slots), so a flood of colliding keys costs a lookup at most that
/// many comparisons, while SipHash costs every request several times FNV's.
#[derive(Debug, Clone, Default)]
pub struct FastHasher(StableHasher);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

/// A map hashed with [`FastHasher`] (bounded tables only: see there).
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Hash of one byte string.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vectors: if these change, every deployed slot assignment moves.
    #[test]
    fn fixed_vectors() {
        assert_eq!(hash_bytes(b""), mix64(FNV_OFFSET));
        assert_eq!(hash_bytes(b"a"), mix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_bytes(b"foobar"), mix64(0x8594_4171_f739_67e8));
    }

    #[test]
    fn fields_are_delimited() {
        let mut a = StableHasher::default();
        a.write_field(b"ab");
        a.write_field(b"c");
        let mut b = StableHasher::default();
        b.write_field(b"a");
        b.write_field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn consecutive_addresses_spread_over_slots() {
        let slots = 1024u64;
        let mut used = vec![0u32; slots as usize];
        for i in 0..10_240u32 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            let slot = (hash_bytes(ip.as_bytes()) % slots) as usize;
            if let Some(c) = used.get_mut(slot) {
                *c += 1;
            }
        }
        // 10 keys per slot on average; a decent hash keeps every slot in use
        // and none wildly overloaded.
        assert!(used.iter().all(|&c| c > 0), "some slot never used");
        assert!(used.iter().all(|&c| c < 30), "a slot got {} keys", used.iter().max().copied().unwrap_or(0));
    }
}

/// CRC-32 (IEEE 802.3, as zlib computes it).
///
/// `ngx_wasm_module` finds shared-data entries by the CRC-32 of the key
/// alone, so two keys with the same CRC-32 share one entry there. The
/// filters check their own keys with this at configure time.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        let i = usize::from((crc as u8) ^ b);
        crc = (crc >> 8) ^ CRC_TABLE.get(i).copied().unwrap_or(0);
    }
    !crc
}

// `i` runs below 256, the table's length.
#[allow(clippy::indexing_slicing)]
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Would nginx keep `a` and `b` in one shared-data entry? (Their CRC-32s
/// agree, whole or after the zone name: both are checked, to be safe.)
pub fn same_nginx_entry(a: &str, b: &str) -> bool {
    let tail = |k: &str| k.split_once('/').map_or(k, |(_, t)| t).to_string();
    a != b && (crc32(a.as_bytes()) == crc32(b.as_bytes()) || crc32(tail(a).as_bytes()) == crc32(tail(b).as_bytes()))
}

#[cfg(test)]
mod crc_tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // Found by a birthday search: these two share an nginx entry.
        assert_eq!(crc32(b"sticky_health/pxpkadu"), 0x3e30_a940);
        assert!(same_nginx_entry("sticky_health/pxpkadu", "sticky_health/jwccnw"));
        assert!(!same_nginx_entry("sticky_health/a", "sticky_health/b"));
    }
}
