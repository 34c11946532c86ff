//! Sticky sessions over endpoints that change (no `backends` list): Envoy
//! places a session's first request with its own consistent hash over the
//! cluster's current endpoints (the `override_host` policy with Maglev or
//! ring hash as its fallback, the route's `hash_policy` on the header this
//! filter writes the session key into); the filter learns the host Envoy
//! chose (`upstream.address`) and pins the session to it with a signed
//! cookie. Later requests name the pinned host in the override header.
//!
//! * **Pinned, host up**: the override header names it. If Envoy no longer
//!   has that host (scaled down, redeployed), it falls back to the hash, and
//!   the filter re-pins the session to the host that answered, once.
//! * **Pinned, host ejected** (passive health, below): the override names
//!   another host this worker has seen answer well lately (chosen by the
//!   session key among them, so a session's choice is stable); with none,
//!   no override and the hash key salted with the ejected host
//!   (`<key>|after:<host>`), so Envoy's hash lands elsewhere with odds
//!   (N-1)/N. The answering host is pinned.
//! * **No valid pin** (none, forged, tampered, or naming no `ip:port`): no
//!   override, the session key as the hash key; the answering host is pinned.
//!
//! A request a retry moved away from its pinned host is not re-pinned (a
//! transient failure does not move a session); the pinned host's failure is
//! recorded, and ejection moves the session.
//!
//! A pin names the cluster it was made in (Envoy's `xds.cluster_name`,
//! signed with the host). An answer from another cluster (the session's
//! request went to a route of another cluster) neither re-pins the session
//! nor charges its pinned host: the session stays where it was pinned for
//! its own route. A pin that names no cluster (made where the proxy does
//! not report one) matches any.
//!
//! Passive health is kept per host address in a fixed table of `max_hosts`
//! shared-data slots (`sticky_hosts/<slot>`, the slot a hash of the address):
//! memory stays bounded however many pods come and go. A slot holds one
//! host; a host whose slot is busy with another host's failure streak is not
//! tracked (`sticky.untracked`), and an idle slot (no streak, not ejected) is
//! taken over by the next host that fails.

use super::config::DynamicConfig;
use super::cookie::{base64url, base64url_decode, cookie_values, Signer};
use super::{fallback_key, session_key_of, Health, MAX_PIN_COOKIES};
use crate::hash::hash_bytes;
use crate::request::RequestView;
use crate::store::{update_bytes, SharedStore, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Shared-data namespace of the host health table.
pub const HOSTS_NAMESPACE: &str = "sticky_hosts";
/// The pinning cookie's version prefix in this mode
/// (`v2.<base64url ip:port[|cluster]>.<signature>`).
pub const PIN_PREFIX: &str = "v2.";
/// Verified pins remembered per worker (each saves an HMAC).
const VERIFIED_CACHE: usize = 256;
/// Hosts remembered per worker as answering well lately (failover targets).
const RECENT_HOSTS: usize = 64;
/// How long a host counts as lately good after a success.
const RECENT_NS: u64 = 60_000_000_000;

/// A verified pin: the host, and the hash of the cluster it was made in
/// (`None`: a pin that names no cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The pinned host.
    pub host: SocketAddr,
    /// [`cluster_id`] of the cluster named in the pin.
    pub cluster: Option<u64>,
}

impl Pin {
    /// Whether an answer from `cluster` (`None`: unknown) is in this pin's
    /// cluster; a pin or an answer that names none matches any.
    pub fn same_cluster(&self, cluster: Option<&str>) -> bool {
        match (self.cluster, cluster) {
            (Some(pinned), Some(answered)) => pinned == cluster_id(answered),
            _ => true,
        }
    }
}

/// A cluster name's identity in a pin (a fixed hash: workers agree).
pub fn cluster_id(name: &str) -> u64 {
    hash_bytes(name.as_bytes())
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A valid pin to an up host: the override header names it.
    Pinned(Pin),
    /// A valid pin to an ejected host: hashed elsewhere.
    Failover(Pin),
    /// No valid pin: placed by Envoy's hash.
    New,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicChoice {
    /// Where it goes.
    pub placement: Placement,
    /// The host the override header names (`None`: Envoy's hash decides).
    pub override_to: Option<SocketAddr>,
    /// The value of the hash header (the route's `hash_policy` hashes it).
    pub hash_key: String,
    /// A pinning cookie was present but forged, tampered or malformed.
    pub cookie_rejected: bool,
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing to report.
    Nothing,
    /// This failure ejected the host.
    Ejected,
    /// The host's slot is busy with another host: not tracked.
    Untracked,
}

/// The dynamic mode's logic for one configuration.
#[derive(Clone)]
pub struct DynamicMode {
    cfg: DynamicConfig,
    signer: Signer,
    /// `; Path=...; ...` after the value of every `Set-Cookie`.
    cookie_attributes: String,
    slot_keys: Vec<String>,
    /// Pins verified on this worker: value to pin.
    verified: RefCell<HashMap<String, Pin>>,
    /// Hosts this worker saw answer well, and when last.
    recent: RefCell<Vec<(SocketAddr, u64)>>,
}

impl std::fmt::Debug for DynamicMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicMode").field("max_hosts", &self.cfg.max_hosts).finish()
    }
}

impl DynamicMode {
    /// The logic for `cfg`.
    pub fn new(cfg: DynamicConfig) -> DynamicMode {
        let signer = Signer::new(cfg.cookie.secret.as_deref());
        let attributes = super::cookie::attributes(&cfg.cookie);
        let slot_keys = (0..cfg.max_hosts).map(|i| format!("{HOSTS_NAMESPACE}/{i}")).collect();
        DynamicMode {
            cfg,
            signer,
            cookie_attributes: attributes,
            slot_keys,
            verified: RefCell::default(),
            recent: RefCell::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DynamicConfig {
        &self.cfg
    }

    /// The pinning cookie's value for `host` in `cluster`.
    pub fn pin_value(&self, host: SocketAddr, cluster: Option<&str>) -> String {
        let text = match cluster {
            Some(c) => format!("{host}|{c}"),
            None => host.to_string(),
        };
        self.signer.value_with(PIN_PREFIX, &base64url(text.as_bytes()))
    }

    /// The `Set-Cookie` pinning a session to `host` in `cluster`.
    pub fn set_cookie(&self, host: SocketAddr, cluster: Option<&str>) -> String {
        format!("{}={}{}", self.cfg.cookie.name, self.pin_value(host, cluster), self.cookie_attributes)
    }

    /// The pin a value carries, if it is signed right and names exactly one
    /// `ip:port` in its canonical spelling (and, after a `|`, the cluster).
    pub fn verify(&self, value: &str) -> Option<Pin> {
        if let Some(pin) = self.verified.borrow().get(value) {
            return Some(*pin);
        }
        let encoded = self.signer.verify_with(PIN_PREFIX, value)?;
        let text = String::from_utf8(base64url_decode(encoded)?).ok()?;
        let (address, cluster) = match text.split_once('|') {
            Some((a, c)) => (a, Some(cluster_id(c))),
            None => (text.as_str(), None),
        };
        let host: SocketAddr = address.parse().ok()?;
        if host.to_string() != address {
            return None;
        }
        let pin = Pin { host, cluster };
        let mut cache = self.verified.borrow_mut();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(value.to_string(), pin);
        Some(pin)
    }

    /// Notes that `host` answered well at `now` (a failover target for this worker).
    pub fn note_good(&self, host: SocketAddr, now: u64) {
        let mut recent = self.recent.borrow_mut();
        if let Some(entry) = recent.iter_mut().find(|(h, _)| *h == host) {
            entry.1 = now;
            return;
        }
        if recent.len() >= RECENT_HOSTS {
            if let Some(oldest) = recent.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i) {
                recent.swap_remove(oldest);
            }
        }
        recent.push((host, now));
    }

    /// Another lately good host for a session failing over from `avoid`,
    /// chosen by its key among them (sorted, so the choice is stable).
    fn alternative(
        &self,
        key: &str,
        avoid: SocketAddr,
        now: u64,
        up: &mut dyn FnMut(SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let mut candidates: Vec<SocketAddr> = self
            .recent
            .borrow()
            .iter()
            .filter(|(h, t)| *h != avoid && now.saturating_sub(*t) <= RECENT_NS)
            .map(|(h, _)| *h)
            .collect();
        candidates.sort();
        candidates.retain(|h| up(*h));
        let n = candidates.len() as u64;
        (n > 0).then(|| candidates.get((hash_bytes(key.as_bytes()) % n.max(1)) as usize).copied()).flatten()
    }

    /// Chooses for one request at `now`; `up(host)` says whether a host is up.
    pub fn choose(
        &self,
        req: &RequestView,
        up: &mut dyn FnMut(SocketAddr) -> bool,
        now: u64,
        random: u64,
    ) -> DynamicChoice {
        let values = cookie_values(req.header_values("cookie"), &self.cfg.cookie.name);
        let pinned = values.iter().take(MAX_PIN_COOKIES).find_map(|v| self.verify(v));
        let cookie_rejected = pinned.is_none() && !values.is_empty();
        let key = session_key_of(&self.cfg.session_key, self.cfg.trusted_hops, req)
            .unwrap_or_else(|| fallback_key(self.cfg.fallback, req, random));
        let (placement, override_to, hash_key) = match pinned {
            Some(pin) if up(pin.host) => (Placement::Pinned(pin), Some(pin.host), key.to_string()),
            Some(pin) => {
                let host = pin.host;
                let alternative = self.alternative(&key, host, now, up);
                (Placement::Failover(pin), alternative, format!("{}|after:{host}", key.as_str()))
            }
            None => (Placement::New, None, key.to_string()),
        };
        DynamicChoice { placement, override_to, hash_key, cookie_rejected }
    }

    fn slot_key(&self, host: &str) -> &str {
        let slot = (hash_bytes(host.as_bytes()) % u64::from(self.cfg.max_hosts.max(1))) as usize;
        self.slot_keys.get(slot).map_or("", String::as_str)
    }

    /// Creates every slot of the host table that does not exist yet.
    pub fn initialize<S: SharedStore + ?Sized>(&self, store: &S) -> Result<u32, StoreError> {
        crate::store::create_absent(store, self.slot_keys.iter().cloned(), &encode(&Health::default(), ""))
    }

    /// `host`'s health, when its slot holds it (`None`: not tracked, up).
    pub fn health<S: SharedStore + ?Sized>(&self, store: &S, host: SocketAddr) -> Result<Option<Health>, StoreError> {
        let text = host.to_string();
        let entry = store.get(self.slot_key(&text))?;
        Ok(entry.and_then(|e| decode(&e.value)).filter(|(_, owner)| *owner == text).map(|(h, _)| h))
    }

    /// Records a response of `host` at `now`.
    pub fn record<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        host: SocketAddr,
        now: u64,
        failure: bool,
    ) -> Result<Recorded, StoreError> {
        let (threshold, eject) = (self.cfg.failures, self.cfg.eject_for_ns);
        let text = host.to_string();
        update_bytes(store, self.slot_key(&text), |cur| {
            let (mut h, owner) = cur.and_then(decode).unwrap_or_default();
            if owner != text {
                if !failure {
                    return (None, Recorded::Nothing);
                }
                let idle = owner.is_empty() || (h.failures == 0 && h.up(now));
                if !idle {
                    return (None, Recorded::Untracked);
                }
                h = Health::default();
            }
            match h.after(now, failure, threshold, eject) {
                Some((h, true)) => (Some(encode(&h, &text)), Recorded::Ejected),
                Some((h, false)) => (Some(encode(&h, &text)), Recorded::Nothing),
                None => (None, Recorded::Nothing),
            }
        })
    }
}

fn encode(h: &Health, owner: &str) -> Vec<u8> {
    let mut v = h.encode();
    v.extend_from_slice(owner.as_bytes());
    v
}

fn decode(bytes: &[u8]) -> Option<(Health, String)> {
    let (health, owner) = bytes.split_at_checked(12)?;
    Some((Health::decode(health)?, String::from_utf8(owner.to_vec()).ok()?))
}

#[cfg(test)]
mod tests;
