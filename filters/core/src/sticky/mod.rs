//! Sticky sessions: consistent hashing of a session key onto backends, a
//! signed pinning cookie, and failover when a backend goes bad.
//!
//! # Choosing a backend
//!
//! 1. A pinning cookie with a valid signature naming a known backend wins.
//!    One with a bad signature, or naming an unknown backend, is ignored,
//!    counted, and the request is assigned afresh (and re-pinned).
//! 2. Otherwise the session key is the first source that is present
//!    (`cookie:<name>`, `header:<name>`, `query:<name>`, `client_ip`), or, with
//!    none, the fallback (client address, or random). It is hashed onto the
//!    backends with Maglev or ketama ([`hashing`]).
//! 3. If the chosen backend is down (passive health, below), the key is
//!    re-hashed with a failover salt, round after round, until an up backend
//!    comes out. Only the down backend's sessions move; they move to the same
//!    place in every worker and every proxy; and they come back when it
//!    recovers, because their cookie (or key) still names it, unless
//!    `repin_on_failover` re-pins them.
//! 4. When every backend is down, `all_down` decides: the hashed backend
//!    anyway (fail open), or 503.
//!
//! # Passive health
//!
//! Each backend has a shared-data record `sticky_health/<name>`: failures in a
//! row and, once ejected, until when. `failures` 5xx responses or network
//! failures in a row eject it for `eject_for`; a success resets the count.
//! Updated by compare-and-swap, so every worker sees an ejection at once.

pub mod config;
#[cfg(feature = "schema")]
pub(crate) use config::RawConfig as RawStickyConfig;

/// The JSON Schema of the configuration (see [`crate::schema`]).
#[cfg(feature = "schema")]
pub fn config_schema() -> schemars::Schema {
    schemars::schema_for!(config::RawConfig)
}
pub mod cookie;
pub mod dynamic;
mod filter;
pub mod hashing;

pub use filter::{BackendMetrics, FilterMetrics, SessionStream, StickyFilter};

use crate::net::client_ip;
use crate::request::RequestView;
use crate::store::{update_bytes, Key, SharedStore, StoreError};
use config::{AllDown, Fallback, Hashing, KeySource, StaticConfig};
use cookie::{cookie_values, Signer};
use hashing::{failover_hash, Ketama, Maglev, Member};
use std::sync::Arc;

/// Pinning cookies verified per request at most (each costs an HMAC); a
/// request carrying more has the rest ignored.
pub const MAX_PIN_COOKIES: usize = 4;

/// Shared-data namespace of the health records.
pub const SHARED_NAMESPACE: &str = "sticky_health";

#[derive(Clone)]
enum Table {
    Maglev(Maglev),
    Ketama(Ketama),
}

/// How the backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A valid pinning cookie.
    Cookie,
    /// The session key.
    Key,
    /// No key: the fallback.
    Fallback,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Index of the chosen backend.
    pub backend: usize,
    /// How.
    pub source: Source,
    /// The backend the session belongs to, when it was failed over from it.
    pub failed_over_from: Option<usize>,
    /// A pinning cookie was present but forged, tampered or stale.
    pub cookie_rejected: bool,
    /// `Set-Cookie` to send with the response (shared with the
    /// configuration: nothing copied per request).
    pub set_cookie: Option<Arc<str>>,
}

/// Every backend is down and `all_down` is 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllBackendsDown;

/// Passive health of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// Failures in a row.
    pub failures: u32,
    /// Ejected until (ns since the epoch; 0 when never).
    pub down_until: u64,
}

impl Health {
    /// Up at `now`?
    pub fn up(&self, now: u64) -> bool {
        now >= self.down_until
    }

    /// Serialises.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.failures.to_le_bytes().to_vec();
        v.extend_from_slice(&self.down_until.to_le_bytes());
        v
    }

    /// The record after one response at `now` (`failures` in a row eject
    /// for `eject_ns`): `None` when it does not change (a success with no
    /// streak, or a late failure of a backend already out), else the new
    /// record and whether this failure ejected it.
    pub fn after(mut self, now: u64, failure: bool, failures: u32, eject_ns: u64) -> Option<(Health, bool)> {
        if !failure {
            if self.failures == 0 {
                return None;
            }
            self.failures = 0;
            return Some((self, false));
        }
        if !self.up(now) {
            // Already out: late failures of requests sent before the ejection.
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        let ejected = self.failures >= failures;
        if ejected {
            self.failures = 0;
            self.down_until = now.saturating_add(eject_ns);
        }
        Some((self, ejected))
    }

    /// Parses (`None` for anything else).
    pub fn decode(b: &[u8]) -> Option<Health> {
        let (f, rest) = b.split_first_chunk::<4>()?;
        let d: [u8; 8] = rest.try_into().ok()?;
        Some(Health { failures: u32::from_le_bytes(*f), down_until: u64::from_le_bytes(d) })
    }
}

/// The sticky-session logic for one configuration.
#[derive(Clone)]
pub struct StaticMode {
    cfg: StaticConfig,
    table: Table,
    /// Each backend's pinning-cookie value and whole `Set-Cookie`, signed
    /// once at configure time (the signature depends only on the backend and
    /// the secret).
    pins: Vec<String>,
    set_cookies: Vec<Arc<str>>,
    /// Each backend's health record's shared-data key.
    health_keys: Vec<String>,
}

impl std::fmt::Debug for StaticMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticMode").field("backends", &self.cfg.backends.len()).finish()
    }
}

impl StaticMode {
    /// Builds the hash table (Maglev: O(table size); done once per VM).
    pub fn new(cfg: StaticConfig) -> StaticMode {
        let members: Vec<Member> =
            cfg.backends.iter().map(|b| Member { name: b.name.clone(), weight: b.weight }).collect();
        let table = match cfg.hashing {
            Hashing::Maglev => Table::Maglev(Maglev::build(&members, cfg.table_size)),
            Hashing::Ketama => Table::Ketama(Ketama::build(&members, config::KETAMA_POINTS_PER_WEIGHT)),
        };
        let signer = cfg.cookie.as_ref().map(|c| Signer::new(c.secret.as_deref()));
        let pins = match &signer {
            Some(s) => cfg.backends.iter().map(|b| s.value(&b.name)).collect(),
            None => Vec::new(),
        };
        let health_keys = cfg.backends.iter().map(|b| format!("{SHARED_NAMESPACE}/{}", b.name)).collect();
        let mut sticky = StaticMode { cfg, table, pins, set_cookies: Vec::new(), health_keys };
        sticky.set_cookies =
            (0..sticky.cfg.backends.len()).filter_map(|i| sticky.build_set_cookie(i)).map(Arc::from).collect();
        sticky
    }

    /// The configuration.
    pub fn config(&self) -> &StaticConfig {
        &self.cfg
    }

    fn lookup(&self, hash: u64) -> Option<usize> {
        match &self.table {
            Table::Maglev(t) => t.lookup(hash),
            Table::Ketama(t) => t.lookup(hash),
        }
    }

    /// The session key of a request, if any source has one.
    pub fn session_key(&self, req: &RequestView) -> Option<Key> {
        session_key_of(&self.cfg.session_key, self.cfg.trusted_hops, req)
    }

    /// The backend a key hashes to, skipping backends that are down; `None`
    /// when all are down. Returns (chosen, home).
    fn place(&self, key: &[u8], up: &mut dyn FnMut(usize) -> bool) -> (Option<usize>, Option<usize>) {
        let home = self.lookup(failover_hash(key, 0));
        if home.is_some_and(&mut *up) {
            return (home, home);
        }
        // Enough rounds to find any up backend with overwhelming probability.
        let rounds = (self.cfg.backends.len() as u32).saturating_mul(8).max(32);
        for round in 1..=rounds {
            let candidate = self.lookup(failover_hash(key, round));
            if candidate.is_some_and(|c| Some(c) != home && up(c)) {
                return (candidate, home);
            }
        }
        (None, home)
    }

    /// Chooses the backend for a request. `up(i)` says whether backend `i`
    /// is up; `random` seeds the `random` fallback.
    pub fn choose(
        &self,
        req: &RequestView,
        up: &mut dyn FnMut(usize) -> bool,
        random: u64,
    ) -> Result<Choice, AllBackendsDown> {
        let mut cookie_rejected = false;
        let mut pinned = None;
        if let Some(cc) = &self.cfg.cookie {
            let values = cookie_values(req.header_values("cookie"), &cc.name);
            // A request may make the filter check MAX_PIN_COOKIES of them,
            // no more.
            pinned = values.iter().take(MAX_PIN_COOKIES).find_map(|v| self.pinned_backend(v));
            cookie_rejected = pinned.is_none() && !values.is_empty();
        }
        if let Some(pin) = pinned {
            if up(pin) {
                return Ok(Choice {
                    backend: pin,
                    source: Source::Cookie,
                    failed_over_from: None,
                    cookie_rejected,
                    set_cookie: None,
                });
            }
            // The pinned backend is down: fail over deterministically from
            // the session key, or from the pin itself.
            let seed = self.session_key(req).unwrap_or_else(|| Key::from_parts(&["pin:", self.name(pin)]));
            let (chosen, _) = self.place(seed.as_bytes(), &mut |i| i != pin && up(i));
            return match chosen {
                Some(c) => Ok(Choice {
                    backend: c,
                    source: Source::Cookie,
                    failed_over_from: Some(pin),
                    cookie_rejected,
                    set_cookie: self.cfg.repin_on_failover.then(|| self.set_cookie(c)).flatten(),
                }),
                None => self.when_all_down(pin, Source::Cookie, cookie_rejected, false),
            };
        }
        let (key, source) = match self.session_key(req) {
            Some(k) => (k, Source::Key),
            None => (fallback_key(self.cfg.fallback, req, random), Source::Fallback),
        };
        let (chosen, home) = self.place(key.as_bytes(), up);
        match (chosen, home) {
            (Some(c), home) => Ok(Choice {
                backend: c,
                source,
                failed_over_from: home.filter(|h| *h != c),
                cookie_rejected,
                set_cookie: self.set_cookie(c),
            }),
            (None, Some(h)) => self.when_all_down(h, source, cookie_rejected, true),
            (None, None) => Err(AllBackendsDown),
        }
    }

    /// Every backend is down: `all_down` decides (a 503, or the session's
    /// home backend anyway); `send_cookie` says whether a placement by key
    /// pins the session with a `Set-Cookie` (not when a cookie already did).
    fn when_all_down(
        &self,
        home: usize,
        source: Source,
        cookie_rejected: bool,
        send_cookie: bool,
    ) -> Result<Choice, AllBackendsDown> {
        match self.cfg.all_down {
            AllDown::Unavailable => Err(AllBackendsDown),
            AllDown::Hashed => Ok(Choice {
                backend: home,
                source,
                failed_over_from: None,
                cookie_rejected,
                set_cookie: if send_cookie { self.set_cookie(home) } else { None },
            }),
        }
    }

    /// The `Set-Cookie` value pinning a session to backend `i` (signed at
    /// configure time: no HMAC per request).
    pub fn set_cookie(&self, i: usize) -> Option<Arc<str>> {
        self.set_cookies.get(i).cloned()
    }

    fn build_set_cookie(&self, i: usize) -> Option<String> {
        let (pin, c) = (self.pins.get(i)?, self.cfg.cookie.as_ref()?);
        Some(format!("{}={}{}", c.name, pin, cookie::attributes(c)))
    }

    /// The backend a pinning-cookie value names, if it is exactly the value
    /// issued for that backend. Compared in constant time with the value
    /// signed at configure time, so no HMAC is computed per request, and only
    /// the canonical spelling is accepted.
    fn pinned_backend(&self, value: &str) -> Option<usize> {
        let name = value.strip_prefix("v1.")?.split('.').next()?;
        let i = self.cfg.backends.iter().position(|b| b.name == name)?;
        let issued = self.pins.get(i)?;
        cookie::constant_time_eq(issued.as_bytes(), value.as_bytes()).then_some(i)
    }

    /// Backend `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        self.cfg.backends.get(i).map(|b| b.name.as_str()).unwrap_or("")
    }

    /// The backend with this `ip:port` (how the proxy reports the upstream it used).
    pub fn by_address(&self, address: &str) -> Option<usize> {
        let addr: std::net::SocketAddr = address.trim().parse().ok()?;
        self.cfg.backends.iter().position(|b| b.address == addr)
    }

    fn health_key(&self, i: usize) -> &str {
        self.health_keys.get(i).map_or("", String::as_str)
    }

    /// Creates every backend's health record that does not exist yet.
    pub fn initialize<S: SharedStore + ?Sized>(&self, store: &S) -> Result<u32, StoreError> {
        crate::store::create_absent(store, self.health_keys.iter().cloned(), &Health::default().encode())
    }

    /// Backend `i`'s health.
    pub fn health<S: SharedStore + ?Sized>(&self, store: &S, i: usize) -> Result<Health, StoreError> {
        let health = crate::store::read_with(store, self.health_key(i), |c| c.and_then(|(b, _)| Health::decode(b)))?;
        Ok(health.unwrap_or_default())
    }

    /// Records a response from backend `i`; returns true when this response
    /// ejected it.
    pub fn record<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        i: usize,
        now: u64,
        failure: bool,
    ) -> Result<bool, StoreError> {
        let (threshold, eject) = (self.cfg.failures, self.cfg.eject_for_ns);
        update_bytes(store, self.health_key(i), |cur| {
            let h = cur.and_then(Health::decode).unwrap_or_default();
            match h.after(now, failure, threshold, eject) {
                Some((h, ejected)) => (Some(h.encode()), ejected),
                None => (None, false),
            }
        })
    }
}

/// The key of a request with no session key: the peer's address, or `random`.
pub(crate) fn fallback_key(fallback: Fallback, req: &RequestView, random: u64) -> Key {
    match fallback {
        Fallback::ClientIp => {
            let mut key = Key::from_parts(&["peer:"]);
            if let Some(ip) = req.peer().and_then(crate::net::parse_addr) {
                crate::net::push_ip(&mut key, ip);
            }
            key
        }
        Fallback::Random => {
            let mut key = Key::from_parts(&["random:"]);
            key.push_u64(random);
            key
        }
    }
}

/// The first session key `sources` find in a request, tagged with its kind.
pub(crate) fn session_key_of(sources: &[KeySource], trusted_hops: u32, req: &RequestView) -> Option<Key> {
    for source in sources {
        // The key spelled once, tag and value together.
        let tag = source_tag(source);
        let found = match source {
            KeySource::Cookie(name) => cookie_values(req.header_values("cookie"), name)
                .into_iter()
                .find(|v| !v.is_empty())
                .map(|v| Key::from_parts(&[tag, ":", v])),
            KeySource::Header(name) => {
                req.header(name).filter(|v| !v.is_empty()).map(|v| Key::from_parts(&[tag, ":", v]))
            }
            KeySource::Query(name) => {
                query_param(req.header(":path").unwrap_or(""), name).map(|v| Key::from_parts(&[tag, ":", &v]))
            }
            KeySource::ClientIp => client_ip(req, trusted_hops).0.map(|ip| {
                let mut key = Key::from_parts(&[tag, ":"]);
                crate::net::push_ip(&mut key, ip);
                key
            }),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn source_tag(s: &KeySource) -> &'static str {
    match s {
        KeySource::Cookie(_) => "cookie",
        KeySource::Header(_) => "header",
        KeySource::Query(_) => "query",
        KeySource::ClientIp => "ip",
    }
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
pub(crate) mod filter_tests;
#[cfg(test)]
mod tests;
