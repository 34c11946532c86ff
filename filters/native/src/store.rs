//! The store seam natively: Envoy's workers are threads of one process, so
//! the shared tables are process memory. Keys are spread over 64 shards,
//! each a short critical section; an entry's compare-and-swap token counts
//! its writes (never 0). The rule is Envoy's shared data's (a write with
//! token 0 or none replaces whatever is there), which the core's
//! `store::update_bytes` is written for. Memory is what the filters put
//! here: every table is created whole at configure time and keyed by slot,
//! never by request data.
#![deny(unsafe_code)]

use filters_core::store::{Entry, StoreError};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{LazyLock, Mutex, MutexGuard};

const SHARDS: usize = 64;

/// A fast hash for the shards' keys (the filters' own slot names, never
/// chosen by clients: no flooding to defend against here).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(chunk) {
                *w = *b;
            }
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

/// Entries: value and compare-and-swap token.
type Table = HashMap<String, (Vec<u8>, u32), std::hash::BuildHasherDefault<KeyHasher>>;
type Shard = Mutex<Table>;

static STORE: LazyLock<Vec<Shard>> = LazyLock::new(|| (0..SHARDS).map(|_| Mutex::default()).collect());

fn shard(key: &str) -> Option<MutexGuard<'static, Table>> {
    // The shard from a remix of the hash, so that the keys of one shard do
    // not share the bits its map indexes by.
    let h = std::hash::BuildHasherDefault::<KeyHasher>::default().hash_one(key);
    let i = ((h ^ (h >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS;
    // A worker that panicked while holding the lock left a whole entry (the
    // map is only changed by whole inserts): keep using it.
    Some(STORE.get(i)?.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Reads `key`.
pub fn get(key: &str) -> Result<Option<Entry>, StoreError> {
    let map = shard(key).ok_or_else(|| StoreError::Host("no shard".into()))?;
    Ok(map.get(key).map(|(value, cas)| Entry { value: value.clone(), cas: *cas }))
}

/// Reads `key` into `out` (its previous contents replaced): the token, or
/// `None` when absent. Nothing is allocated once `out` is big enough.
pub fn get_into(key: &str, out: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
    let map = shard(key).ok_or_else(|| StoreError::Host("no shard".into()))?;
    Ok(map.get(key).map(|(value, cas)| {
        out.clear();
        out.extend_from_slice(value);
        *cas
    }))
}

/// Writes `key` when `cas` (a token from [`get`]) is still current, or
/// whatever is there with no token or token 0; `false` on a mismatch.
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
    let mut map = shard(key).ok_or_else(|| StoreError::Host("no shard".into()))?;
    match map.get_mut(key) {
        Some((current, token)) => {
            if let Some(expected) = cas.filter(|c| *c != 0) {
                if expected != *token {
                    return Ok(false);
                }
            }
            current.clear();
            current.extend_from_slice(value);
            *token = token.wrapping_add(1).max(1);
        }
        None => {
            if cas.is_some_and(|c| c != 0) {
                return Ok(false);
            }
            map.insert(key.to_string(), (value.to_vec(), 1));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_under_envoys_rule() {
        let key = "native-store-test/a";
        assert!(get(key).unwrap().is_none());
        assert!(!set(key, b"x", Some(7)).unwrap(), "a token for an absent key");
        assert!(set(key, b"one", None).unwrap());
        let e = get(key).unwrap().unwrap();
        assert_eq!(e.value, b"one");
        assert!(set(key, b"two", Some(e.cas)).unwrap());
        assert!(!set(key, b"three", Some(e.cas)).unwrap(), "a stale token");
        assert!(set(key, b"four", Some(0)).unwrap(), "token 0 replaces, as in Envoy");
        assert_eq!(get(key).unwrap().unwrap().value, b"four");
    }

    #[test]
    fn counters_are_exact_across_threads() {
        let key = "native-store-test/counter";
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        loop {
                            let cur = get(key).unwrap();
                            let n = cur.as_ref().map_or(0, |e| u64::from_le_bytes(e.value[..8].try_into().unwrap()));
                            if set(key, &(n + 1).to_le_bytes(), Some(cur.map_or(0, |e| e.cas))).unwrap() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = u64::from_le_bytes(get(key).unwrap().unwrap().value[..8].try_into().unwrap());
        // Two threads can both create the key with token 0 (Envoy's rule):
        // at most one increment per racing creator is lost, only at the start.
        assert!((3997..=4000).contains(&n), "{n}");
    }
}
