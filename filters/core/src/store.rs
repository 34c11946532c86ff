//! The shared-store seam: proxy-wasm shared data, reduced to the one
//! operation every filter needs, "read, decide, compare-and-swap replace".
//!
//! # Two hosts, two compare-and-swap rules
//!
//! * Envoy: a write with cas `0` is unconditional (it overwrites); a write
//!   with a non-zero cas succeeds if the key is absent or its cas matches.
//! * nginx (`ngx_wasm_module`): a write with cas `0` succeeds only when the
//!   key is absent; a stale cas is refused; entries can be evicted from a full
//!   zone between a read and a write.
//!
//! [`update_bytes`] is correct under both: it writes with cas `0` only when
//! its read found the key absent, and with the cas it read otherwise, and it
//! retries on a mismatch. The one race neither host lets us close is two
//! workers both finding a key absent and both inserting it: Envoy has no
//! insert-if-absent, so the second insert overwrites the first. That can
//! happen once per key per process lifetime (keys are never deleted) and
//! costs at most one extra admitted request per key; under nginx the second
//! insert is refused and retried, so it is exact.

#[cfg(any(test, feature = "testing"))]
use std::cell::RefCell;
use std::fmt;

/// Short text made per request (a shared-data key such as
/// `rate_limit/<limit>:<slot>`, an address, a header value), in a string
/// taken from this thread's pool ([`crate::pool`]) and given back when
/// dropped: spelling it allocates nothing once the pool holds strings,
/// and moving it moves a pointer.
#[derive(Clone, Default)]
pub struct Key(crate::pool::Text);

impl Key {
    /// The key `parts` spell, one after the other: no formatting machinery
    /// (the per-request keys are a configured prefix and a number).
    pub fn from_parts(parts: &[&str]) -> Key {
        let mut text = crate::pool::Text::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 8);
        for part in parts {
            text.push_str(part);
        }
        Key(text)
    }

    /// `parts` joined by `separator` (a property path: `source.address`).
    pub fn joined(parts: &[&str], separator: &str) -> Key {
        let mut key = Key::from_parts(&[]);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push_str(separator);
            }
            key.push_str(part);
        }
        key
    }

    /// Appends `s`.
    pub fn push_str(&mut self, s: &str) {
        self.0.push_str(s);
    }

    /// Appends `n` in decimal.
    pub fn push_u64(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let text = crate::text::decimal(n, &mut digits);
        self.push_str(text);
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl crate::text::Spell for Key {
    fn push_str(&mut self, s: &str) {
        Key::push_str(self, s);
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::from_parts(&[s])
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A value read from the store with its compare-and-swap token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The host's version token for this value (never 0 for a present key).
    pub cas: u32,
}

/// What went wrong talking to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The host refused the call (the status it returned, as text).
    Host(String),
    /// Every attempt lost its compare-and-swap to another worker.
    Contention,
    /// A key written while creating a table was gone by the end: the store
    /// evicted it (nginx's `shm_kv` zone is too small and evicts silently).
    Evicted(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Host(status) => write!(f, "shared data call failed: {status}"),
            StoreError::Contention => f.write_str("shared data compare-and-swap lost every attempt"),
            StoreError::Evicted(key) => write!(
                f,
                "\"{key}\" was evicted while the table was written: the shared-data zone is too small for it \
                 (in nginx, size the shm_kv zone by the filter's README)"
            ),
        }
    }
}

/// The proxy's shared key-value store.
pub trait SharedStore {
    /// Reads `key`; `Ok(None)` when it is absent.
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Writes `value` if `cas` still matches (`None`: only meant for a key
    /// the caller just found absent). `Ok(false)` on a compare-and-swap
    /// mismatch.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError>;

    /// Reads `key` into `out` (replacing what it held): its token, or
    /// `Ok(None)` when absent. A store that can copy into `out` in place
    /// overrides it (no allocation once `out` has grown); by default the
    /// entry [`get`](SharedStore::get) returns is moved in.
    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
        Ok(self.get(key)?.map(|e| {
            *out = e.value;
            e.cas
        }))
    }
}

thread_local! {
    /// The buffer records are read into ([`read_with`]): one per thread,
    /// kept between requests, so that reading a record allocates nothing
    /// once it has grown (natively; a Proxy-Wasm host returns a fresh copy
    /// anyway).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `key`'s current bytes and token (`None`: absent), read into
/// this thread's scratch buffer. A nested call (from `f`) gets a buffer of
/// its own.
pub fn read_with<S, R>(store: &S, key: &str, f: impl FnOnce(Option<(&[u8], u32)>) -> R) -> Result<R, StoreError>
where
    S: SharedStore + ?Sized,
{
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let read = store.get_into(key, &mut buf);
    let result = read.map(|cas| f(cas.map(|c| (buf.as_slice(), c))));
    SCRATCH.with(|s| *s.borrow_mut() = buf);
    result
}

/// How many times [`update_bytes`] re-reads after losing a compare-and-swap.
/// Two workers would have to complete this many writes to the same key in the
/// window between our read and our write to exhaust it.
pub const CAS_ATTEMPTS: u32 = 16;

/// Read, decide, compare-and-swap replace, retried on conflict.
///
/// `decide` sees the current value (`None` when absent) and returns the
/// value to write (`None`: leave the key as it is) and a result. `decide` may
/// run several times; only the result of the attempt whose write succeeded
/// (or that wrote nothing) is returned. This is the one write path of every
/// filter, and the place where the two hosts' rules are reconciled: cas 0
/// only when the read found the key absent, the read cas otherwise.
pub fn update_bytes<S, R, V, F>(store: &S, key: &str, mut decide: F) -> Result<R, StoreError>
where
    S: SharedStore + ?Sized,
    V: AsRef<[u8]>,
    F: FnMut(Option<&[u8]>) -> (Option<V>, R),
{
    for _ in 0..CAS_ATTEMPTS {
        let (next, result, cas) = read_with(store, key, |current| {
            let (next, result) = decide(current.map(|(bytes, _)| bytes));
            (next, result, current.map(|(_, cas)| cas))
        })?;
        let Some(next) = next else {
            return Ok(result);
        };
        if store.set(key, next.as_ref(), cas)? {
            return Ok(result);
        }
    }
    Err(StoreError::Contention)
}

/// [`update_bytes`] for a value that is one little-endian `u64` (`None` when
/// absent or not 8 bytes): the store tests' counter. (The rate limiter's
/// slots hold their table's identity beside the TAT, through
/// [`update_bytes`].)
#[cfg(any(test, feature = "testing"))]
pub fn update_u64<S, R, F>(store: &S, key: &str, mut decide: F) -> Result<R, StoreError>
where
    S: SharedStore + ?Sized,
    F: FnMut(Option<u64>) -> (Option<u64>, R),
{
    update_bytes(store, key, |bytes| {
        let (next, result) = decide(bytes.and_then(decode_u64));
        (next.map(|v| v.to_le_bytes().to_vec()), result)
    })
}

/// After a table was written: every key of `keys` must still be there.
/// nginx's `shm_kv` zone, when full, evicts silently, and not in write
/// order (measured: a 1 MB zone given 20,000 keys kept the first 100 and
/// about 4,000 of the rest), so every key is read back. That costs one read
/// per key at configure time, and catches a zone too small for the tables
/// then rather than as wrong answers under load.
pub fn check_kept<S, I>(store: &S, keys: I) -> Result<(), StoreError>
where
    S: SharedStore + ?Sized,
    I: IntoIterator<Item = String>,
{
    for key in keys {
        if store.get(&key)?.is_none() {
            return Err(StoreError::Evicted(key));
        }
    }
    Ok(())
}

/// Creates each of `keys` that does not exist yet, holding `value`, then
/// checks that the store kept them all ([`check_kept`]). A key that exists
/// (created by another worker, or before a VM reload) is left alone, so live
/// state survives a VM restart. Returns how many were created.
pub fn create_absent<S, I>(store: &S, keys: I, value: &[u8]) -> Result<u32, StoreError>
where
    S: SharedStore + ?Sized,
    I: IntoIterator<Item = String> + Clone,
{
    let mut created = 0;
    for key in keys.clone() {
        if store.get(&key)?.is_none() && store.set(&key, value, None)? {
            created += 1;
        }
    }
    check_kept(store, keys)?;
    Ok(created)
}

/// Reads a u64 without writing (the store tests' counter).
#[cfg(any(test, feature = "testing"))]
pub fn read_u64<S: SharedStore + ?Sized>(store: &S, key: &str) -> Result<Option<u64>, StoreError> {
    Ok(store.get(key)?.and_then(|e| decode_u64(&e.value)))
}

#[cfg(any(test, feature = "testing"))]
fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

/// Which host's compare-and-swap rule a [`MemoryStore`] follows.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasRule {
    /// cas 0 overwrites unconditionally; a non-zero cas on an absent key inserts.
    Envoy,
    /// cas 0 only inserts an absent key; a non-zero cas must match a present key.
    NginxStrict,
}

/// An in-memory store that follows one host's compare-and-swap rule, for
/// tests and benchmarks.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub struct MemoryStore {
    rule: CasRule,
    map: RefCell<crate::hash::FastMap<String, Entry>>,
    next_cas: RefCell<u32>,
    /// At most this many keys; a write beyond evicts the oldest written
    /// (as a full nginx zone does), `None`: unbounded.
    capacity: Option<usize>,
    order: RefCell<std::collections::VecDeque<String>>,
}

#[cfg(any(test, feature = "testing"))]
impl MemoryStore {
    /// An empty store with `rule`.
    pub fn new(rule: CasRule) -> Self {
        MemoryStore {
            rule,
            map: RefCell::default(),
            next_cas: RefCell::new(1),
            capacity: None,
            order: RefCell::default(),
        }
    }

    /// A store of at most `capacity` keys that evicts the oldest written,
    /// silently, as nginx's `shm_kv` zone does when full.
    pub fn evicting(rule: CasRule, capacity: usize) -> Self {
        MemoryStore { capacity: Some(capacity), ..MemoryStore::new(rule) }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }

    /// Removes a key, as nginx does when it evicts from a full zone.
    pub fn evict(&self, key: &str) {
        self.map.borrow_mut().remove(key);
    }

    fn bump(&self) -> u32 {
        let mut n = self.next_cas.borrow_mut();
        let cas = *n;
        *n = n.wrapping_add(1).max(1);
        cas
    }
}

#[cfg(any(test, feature = "testing"))]
impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
        let cas = cas.unwrap_or(0);
        let present = self.map.borrow().get(key).map(|e| e.cas);
        let allowed = match (self.rule, present) {
            (CasRule::Envoy, None) => true,
            (CasRule::Envoy, Some(current)) => cas == 0 || cas == current,
            (CasRule::NginxStrict, None) => cas == 0,
            (CasRule::NginxStrict, Some(current)) => cas != 0 && cas == current,
        };
        if allowed {
            let cas = self.bump();
            let fresh = self.map.borrow_mut().insert(key.to_string(), Entry { value: value.to_vec(), cas }).is_none();
            if let (Some(cap), true) = (self.capacity, fresh) {
                let mut order = self.order.borrow_mut();
                order.push_back(key.to_string());
                while order.len() > cap {
                    if let Some(old) = order.pop_front() {
                        self.map.borrow_mut().remove(&old);
                    }
                }
            }
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_spelled_alike_however_it_is_made() {
        let mut parts = Key::from_parts(&["rate_limit/", "per-client", ":"]);
        parts.push_u64(42);
        assert_eq!(&*parts, format!("rate_limit/{}:{}", "per-client", 42));
        let name = "n".repeat(1000);
        let mut long = Key::from_parts(&["rate_limit/", &name, ":"]);
        long.push_u64(7);
        assert_eq!(&*long, format!("rate_limit/{name}:7"));
        assert_eq!(Key::joined(&["source", "address"], "."), "source.address");
        assert_eq!(Key::joined(&["ngx", "pid"], "\0").as_bytes(), b"ngx\0pid");
        assert_eq!(Key::joined(&[], ".").as_str(), "");
        assert_eq!(Key::default().as_str(), "");
    }

    /// A store that lets another "worker" write between our read and our write
    /// a fixed number of times.
    struct Interleaved<'a> {
        inner: &'a MemoryStore,
        races_left: RefCell<u32>,
    }

    impl SharedStore for Interleaved<'_> {
        fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
            let entry = self.inner.get(key)?;
            let mut left = self.races_left.borrow_mut();
            if *left > 0 {
                *left -= 1;
                // The other worker adds 100 using the protocol correctly.
                update_u64(self.inner, key, |v| (Some(v.unwrap_or(0) + 100), ()))?;
            }
            Ok(entry)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    fn increments_survive_races(rule: CasRule) {
        let store = MemoryStore::new(rule);
        update_u64(&store, "k", |v| (Some(v.unwrap_or(0) + 1), ())).unwrap();
        let racy = Interleaved { inner: &store, races_left: RefCell::new(3) };
        update_u64(&racy, "k", |v| (Some(v.unwrap_or(0) + 1), ())).unwrap();
        // 1 + 3 racing writes of 100 + our 1: nothing lost.
        assert_eq!(read_u64(&store, "k").unwrap(), Some(302));
    }

    #[test]
    fn cas_loop_is_exact_under_envoy_rule() {
        increments_survive_races(CasRule::Envoy);
    }

    #[test]
    fn cas_loop_is_exact_under_nginx_rule() {
        increments_survive_races(CasRule::NginxStrict);
    }

    #[test]
    fn nginx_rule_refuses_cas0_on_present_key_and_envoy_overwrites() {
        let nginx = MemoryStore::new(CasRule::NginxStrict);
        assert!(nginx.set("k", b"a", None).unwrap());
        assert!(!nginx.set("k", b"b", None).unwrap());
        let envoy = MemoryStore::new(CasRule::Envoy);
        assert!(envoy.set("k", b"a", None).unwrap());
        assert!(envoy.set("k", b"b", None).unwrap());
    }

    #[test]
    fn stale_cas_is_refused_by_both() {
        for rule in [CasRule::Envoy, CasRule::NginxStrict] {
            let s = MemoryStore::new(rule);
            s.set("k", b"a", None).unwrap();
            let old = s.get("k").unwrap().unwrap().cas;
            s.set("k", b"b", Some(old)).unwrap();
            assert!(!s.set("k", b"c", Some(old)).unwrap(), "{rule:?}");
        }
    }

    #[test]
    fn eviction_between_read_and_write_is_retried_under_nginx() {
        struct EvictOnce<'a>(&'a MemoryStore, RefCell<bool>);
        impl SharedStore for EvictOnce<'_> {
            fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
                let e = self.0.get(key);
                if self.1.replace(false) {
                    self.0.evict(key);
                }
                e
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
                self.0.set(key, value, cas)
            }
        }
        let store = MemoryStore::new(CasRule::NginxStrict);
        store.set("k", &5u64.to_le_bytes(), None).unwrap();
        let s = EvictOnce(&store, RefCell::new(true));
        update_u64(&s, "k", |v| (Some(v.unwrap_or(0) + 1), ())).unwrap();
        // The first attempt's write (stale cas on an evicted key) is refused;
        // the retry sees the key absent and starts from nothing.
        assert_eq!(read_u64(&store, "k").unwrap(), Some(1));
    }

    #[test]
    fn endless_contention_is_reported_not_looped() {
        let store = MemoryStore::new(CasRule::Envoy);
        store.set("k", &0u64.to_le_bytes(), None).unwrap();
        let racy = Interleaved { inner: &store, races_left: RefCell::new(u32::MAX) };
        let r = update_u64(&racy, "k", |v| (Some(v.unwrap_or(0) + 1), ()));
        assert_eq!(r, Err(StoreError::Contention));
    }

    #[test]
    fn garbage_value_is_treated_as_absent_and_replaced() {
        let store = MemoryStore::new(CasRule::NginxStrict);
        store.set("k", b"xyz", None).unwrap();
        let seen = update_u64(&store, "k", |v| (Some(7), v)).unwrap();
        assert_eq!(seen, None);
        assert_eq!(read_u64(&store, "k").unwrap(), Some(7));
    }
}
