//! Consistent hashing of session keys onto backends.
//!
//! * [`Maglev`] (the default): Envoy's weighted Maglev. Every backend walks
//!   its own permutation of a prime-sized table (`offset + skip x j`), taking
//!   turns in proportion to its weight, until the table is full. Lookup is
//!   one index, and removing one of N backends moves about 1/N of keys.
//! * [`Ketama`]: a ring of `points_per_weight x weight` points per backend,
//!   binary-searched.
//!
//! Both hash with [`crate::hash::StableHasher`], a fixed function, and sort
//! backends by name first. The same backends therefore give the same table in
//! every worker, every proxy and every restart.

use crate::hash::StableHasher;

/// A backend as the hashing sees it: a name and a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Relative weight (at least 1).
    pub weight: u32,
}

fn hash_with(seed: &[u8], data: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write_field(seed);
    h.write_field(data);
    h.finish()
}

/// The hash of a session key.
pub fn key_hash(key: &[u8]) -> u64 {
    hash_with(b"key", key)
}

/// The hash of a key for failover round `round` (round 0 is [`key_hash`]).
pub fn failover_hash(key: &[u8], round: u32) -> u64 {
    if round == 0 {
        return key_hash(key);
    }
    let mut h = StableHasher::default();
    h.write_field(b"failover");
    h.write(&round.to_le_bytes());
    h.write_field(key);
    h.finish()
}

/// Weighted Maglev lookup table. `table[i]` is an index into the members as
/// given to [`Maglev::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Vec<u16>,
}

impl Maglev {
    /// Builds the table; `size` must be a prime larger than the number of
    /// members (checked by the configuration), `members` non-empty.
    pub fn build(members: &[Member], size: u32) -> Maglev {
        let m = u64::from(size.max(2));
        // Members in name order, remembering their original index.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|a, b| members.get(*a).map(|x| &x.name).cmp(&members.get(*b).map(|x| &x.name)));
        struct Entry {
            index: u16,
            offset: u64,
            skip: u64,
            next: u64,
            weight: u64,
            target: u64,
        }
        let max_weight = members.iter().map(|x| u64::from(x.weight.max(1))).max().unwrap_or(1);
        let mut entries: Vec<Entry> = order
            .iter()
            .filter_map(|&i| {
                let member = members.get(i)?;
                let name = member.name.as_bytes();
                Some(Entry {
                    index: u16::try_from(i).ok()?,
                    offset: hash_with(b"maglev-offset", name) % m,
                    skip: hash_with(b"maglev-skip", name) % (m - 1) + 1,
                    next: 0,
                    weight: u64::from(member.weight.max(1)),
                    target: 0,
                })
            })
            .collect();
        let mut table: Vec<Option<u16>> = vec![None; m as usize];
        let mut filled: u64 = 0;
        if entries.is_empty() {
            return Maglev { table: Vec::new() };
        }
        let mut iteration: u64 = 1;
        while filled < m {
            for e in entries.iter_mut() {
                if filled >= m {
                    break;
                }
                // A member of the largest weight places an entry every
                // iteration; one of a third of that, every third iteration.
                if iteration * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                loop {
                    let c = ((e.offset + e.skip * e.next) % m) as usize;
                    e.next += 1;
                    if let Some(slot) = table.get_mut(c) {
                        if slot.is_none() {
                            *slot = Some(e.index);
                            filled += 1;
                            break;
                        }
                    }
                }
            }
            iteration += 1;
        }
        Maglev { table: table.into_iter().map(|s| s.unwrap_or(0)).collect() }
    }

    /// The member for a hash.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let n = self.table.len() as u64;
        if n == 0 {
            return None;
        }
        self.table.get((hash % n) as usize).map(|&i| usize::from(i))
    }

    /// Entries per member, for tests and diagnostics.
    pub fn counts(&self, members: usize) -> Vec<usize> {
        let mut c = vec![0; members];
        for &i in &self.table {
            if let Some(x) = c.get_mut(usize::from(i)) {
                *x += 1;
            }
        }
        c
    }
}

/// A ketama ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ketama {
    points: Vec<(u64, u16)>,
}

impl Ketama {
    /// Builds the ring with `points_per_weight x weight` points per member.
    pub fn build(members: &[Member], points_per_weight: u32) -> Ketama {
        let mut points = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let Ok(index) = u16::try_from(i) else { continue };
            for p in 0..points_per_weight.saturating_mul(member.weight.max(1)) {
                let mut h = StableHasher::default();
                h.write_field(b"ketama");
                h.write_field(member.name.as_bytes());
                h.write(&p.to_le_bytes());
                points.push((h.finish(), index));
            }
        }
        // Ties (astronomically rare) resolve by member index, so the ring is
        // the same whatever the input order.
        points.sort_unstable();
        Ketama { points }
    }

    /// The member owning the first point at or after `hash` (wrapping).
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let i = self.points.partition_point(|(p, _)| *p < hash);
        self.points.get(i).or_else(|| self.points.first()).map(|(_, m)| usize::from(*m))
    }
}

/// Is `n` prime? (For the table size check.)
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n).map(|i| Member { name: format!("backend-{i}"), weight: 1 }).collect()
    }

    /// Fixed vectors: if these change, every deployed session moves.
    #[test]
    fn fixed_vectors() {
        let ms = members(3);
        let table = Maglev::build(&ms, 65537);
        let picks: Vec<Option<usize>> =
            ["alice", "bob", "carol", "dave", "erin"].iter().map(|k| table.lookup(key_hash(k.as_bytes()))).collect();
        assert_eq!(picks, FIXED_MAGLEV, "Maglev assignments changed");
        let ring = Ketama::build(&ms, 160);
        let picks: Vec<Option<usize>> =
            ["alice", "bob", "carol", "dave", "erin"].iter().map(|k| ring.lookup(key_hash(k.as_bytes()))).collect();
        assert_eq!(picks, FIXED_KETAMA, "ketama assignments changed");
        assert_eq!(key_hash(b"alice"), FIXED_ALICE);
    }

    const FIXED_MAGLEV: [Option<usize>; 5] = [Some(2), Some(0), Some(1), Some(1), Some(2)];
    const FIXED_KETAMA: [Option<usize>; 5] = [Some(0), Some(0), Some(0), Some(0), Some(1)];
    const FIXED_ALICE: u64 = 0x03f1_7803_3ebd_eec5;

    #[test]
    fn input_order_does_not_matter() {
        let ms = members(5);
        let mut reversed = ms.clone();
        reversed.reverse();
        let (a, b) = (Maglev::build(&ms, 251), Maglev::build(&reversed, 251));
        let (ra, rb) = (Ketama::build(&ms, 40), Ketama::build(&reversed, 40));
        let name = |list: &[Member], i: Option<usize>| i.and_then(|i| list.get(i)).map(|m| m.name.clone());
        for k in 0..2000u64 {
            let h = key_hash(&k.to_le_bytes());
            assert_eq!(name(&ms, a.lookup(h)), name(&reversed, b.lookup(h)), "maglev {k}");
            assert_eq!(name(&ms, ra.lookup(h)), name(&reversed, rb.lookup(h)), "ketama {k}");
        }
    }

    #[test]
    fn maglev_spreads_evenly_and_respects_weight() {
        let table = Maglev::build(&members(3), 65537);
        let c = table.counts(3);
        assert!(c.iter().all(|&n| (21000..=22700).contains(&n)), "{c:?}");
        let weighted = vec![
            Member { name: "a".into(), weight: 1 },
            Member { name: "b".into(), weight: 2 },
            Member { name: "c".into(), weight: 1 },
        ];
        let c = Maglev::build(&weighted, 65537).counts(3);
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((1.9..=2.1).contains(&ratio), "{c:?}");
    }

    /// Removing one of N backends moves about 1/N of keys: only its own.
    #[test]
    fn disruption_when_a_backend_leaves_is_about_one_nth() {
        let n = 5usize;
        let all = members(n);
        let without: Vec<Member> = all.iter().filter(|m| m.name != "backend-2").cloned().collect();
        let name_of = |ms: &[Member], i: Option<usize>| i.and_then(|i| ms.get(i)).map(|m| m.name.clone());
        let lookups: [(&str, Box<dyn Fn(u64) -> (Option<String>, Option<String>)>); 2] = [
            ("maglev", {
                let (t1, t2) = (Maglev::build(&all, 65537), Maglev::build(&without, 65537));
                let (all, without) = (all.clone(), without.clone());
                Box::new(move |h| (name_of(&all, t1.lookup(h)), name_of(&without, t2.lookup(h))))
            }),
            ("ketama", {
                let (t1, t2) = (Ketama::build(&all, 160), Ketama::build(&without, 160));
                let (all, without) = (all.clone(), without.clone());
                Box::new(move |h| (name_of(&all, t1.lookup(h)), name_of(&without, t2.lookup(h))))
            }),
        ];
        for (label, lookup) in lookups.iter() {
            let (mut moved, mut moved_from_others) = (0, 0);
            let keys = 10_000u64;
            for k in 0..keys {
                let (before, after) = lookup(key_hash(format!("session-{k}").as_bytes()));
                if before != after {
                    moved += 1;
                    if before.as_deref() != Some("backend-2") {
                        moved_from_others += 1;
                    }
                }
            }
            let share = moved as f64 / keys as f64;
            println!("{label}: removing 1 of {n} moved {share:.3} of keys ({moved_from_others} from other backends)");
            assert!((0.15..=0.25).contains(&share), "{label} moved {share}");
            // Maglev may move a few keys between survivors; ketama none.
            assert!(
                moved_from_others as f64 / keys as f64 <= 0.02,
                "{label}: {moved_from_others} keys of surviving backends moved"
            );
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(9));
    }
}
