//! The slot table: `max_breakers` shared-data slots created at configure
//! time, a key's breaker found among the [`PROBES`] slots from its home (or
//! under an earlier table size), claimed when new, updated by
//! compare-and-swap.

use super::{filter, Breakers, Record, PROBES, SHARED_NAMESPACE, SIZES_KEPT, SIZES_KEY};
use crate::hash::hash_bytes;
use crate::store::{update_bytes, SharedStore, StoreError};

impl Breakers {
    /// The shared-data key of a table slot.
    pub fn slot_key(slot: u32) -> crate::store::Key {
        let mut key = crate::store::Key::from_parts(&[SHARED_NAMESPACE, "/"]);
        key.push_u64(u64::from(slot));
        key
    }

    /// The longest record this configuration writes: a key of
    /// `MAX_KEY_BYTES` (128) and the whole window.
    pub fn max_record_len(&self) -> usize {
        // Records are fixed-size but for the key: the encoding of a fresh
        // record with the longest key is the longest there is.
        self.encode(&self.fresh(&"k".repeat(filter::MAX_KEY_BYTES))).len()
    }

    /// A free slot's value: as long as the longest record, so that creating
    /// the table takes the room its records can grow to, and a shared-data
    /// zone too small for them (nginx's `shm_kv`) is refused at start
    /// instead of evicting live breakers later. (The first byte, 0, is no
    /// record's version.)
    fn free_record(&self) -> Vec<u8> {
        vec![0; self.max_record_len()]
    }

    /// Creates every slot of the table that does not exist yet (free).
    /// Existing slots, and so live breakers, are kept. Learns the table
    /// sizes earlier configurations used (a config push that changed
    /// `max_breakers`), so that their breakers are still found
    /// ([`Breakers::find`]); this size is added to that list
    /// (`circuit_breaker/sizes`, the last [`SIZES_KEPT`]).
    pub fn initialize<S: SharedStore + ?Sized>(&mut self, store: &S) -> Result<u32, StoreError> {
        let free = self.free_record();
        let created = crate::store::create_absent(
            store,
            (0..self.cfg.max_breakers).map(|s| Self::slot_key(s).as_str().to_string()),
            &free,
        )?;
        let max = self.cfg.max_breakers;
        let sizes = update_bytes(store, SIZES_KEY, |cur| {
            let old: Vec<u32> = cur
                .unwrap_or_default()
                .chunks_exact(4)
                .filter_map(|c| c.try_into().ok().map(u32::from_le_bytes))
                .collect();
            let mut sizes = vec![max];
            sizes.extend(old.iter().copied().filter(|&s| s != max && s > 0).take(SIZES_KEPT - 1));
            let bytes: Vec<u8> = sizes.iter().flat_map(|s| s.to_le_bytes()).collect();
            (cur.is_none_or(|c| c != bytes.as_slice()).then_some(bytes), sizes)
        })?;
        self.other_sizes = sizes.into_iter().filter(|&s| s != max).collect();
        Ok(created)
    }

    /// The slots `key` is looked for in at table size `max`, in order.
    fn probes_from_home(key: &str, max: u32) -> impl Iterator<Item = u32> {
        let max = max.max(1);
        let home = (hash_bytes(key.as_bytes()) % u64::from(max)) as u32;
        (0..PROBES.min(max)).map(move |i| (home + i) % max)
    }

    /// Finds `key`'s breaker, claiming a free or reclaimable slot for a new
    /// key. `Ok(None)`: every probed slot holds another live breaker.
    pub fn find<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        key: &str,
        now: u64,
    ) -> Result<Option<(u32, Record)>, StoreError> {
        for _attempt in 0..2 {
            let mut candidate = None;
            for slot in Self::probes_from_home(key, self.cfg.max_breakers) {
                let rec = store.get(&Self::slot_key(slot))?.and_then(|e| self.decode(&e.value));
                match rec {
                    Some(r) if r.key == key => return Ok(Some((slot, r))),
                    Some(r) if !self.reclaimable(&r, now) => {}
                    _ => {
                        candidate.get_or_insert(slot);
                    }
                }
            }
            // Written under an earlier size (a push changed max_breakers):
            // still this key's breaker, used where it is.
            for &size in &self.other_sizes {
                for slot in Self::probes_from_home(key, size) {
                    let rec = store.get(&Self::slot_key(slot))?.and_then(|e| self.decode(&e.value));
                    if let Some(r) = rec.filter(|r| r.key == key) {
                        return Ok(Some((slot, r)));
                    }
                }
            }
            let Some(slot) = candidate else { return Ok(None) };
            let fresh = self.fresh(key);
            let claimed = update_bytes(store, &Self::slot_key(slot), |cur| {
                let free = match cur.and_then(|b| self.decode(b)) {
                    None => true,
                    Some(r) => r.key != key && self.reclaimable(&r, now),
                };
                if free {
                    (Some(self.encode(&fresh)), true)
                } else {
                    (None, false)
                }
            })?;
            if claimed {
                return Ok(Some((slot, fresh)));
            }
            // Another worker took the slot (maybe for this very key): look again.
        }
        Ok(None)
    }

    /// Read, change, compare-and-swap `key`'s record in `slot`. `f` returns
    /// whether it changed the record and a result. `Ok(None)` when the slot no
    /// longer holds `key` (it was reclaimed): call [`Breakers::find`] again.
    pub fn update<S, R, F>(&self, store: &S, slot: u32, key: &str, mut f: F) -> Result<Option<R>, StoreError>
    where
        S: SharedStore + ?Sized,
        F: FnMut(&mut Record) -> (bool, R),
    {
        update_bytes(store, &Self::slot_key(slot), |cur| {
            let Some(mut rec) = cur.and_then(|b| self.decode(b)).filter(|r| r.key == key) else {
                return (None, None);
            };
            let (changed, result) = f(&mut rec);
            (changed.then(|| self.encode(&rec)), Some(result))
        })
    }
}
