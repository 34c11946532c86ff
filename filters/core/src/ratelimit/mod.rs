//! The rate limiter: which limits a request matches, its key in each, and
//! the GCRA decision made against shared state.
//!
//! # Bounded memory
//!
//! Each limit owns a fixed table of `table_size` slots in shared data, keys
//! `rate_limit/<limit name>:<slot>`, each holding one `u64` TAT and the
//! table's identity (a limit keyed on `global` alone has one slot). A request's key is hashed (a fixed hash, so
//! every worker agrees) to a slot; the table never grows, whatever the number
//! of distinct keys.
//!
//! Every slot is created when the filter is configured
//! ([`RateLimiter::initialize`]), before the first request. That fixes the
//! memory from the start, and it closes the one race the store protocol
//! cannot: Envoy has no insert-if-absent, so two workers creating the same
//! slot at once could each admit a request and one write would be lost. With
//! the slots already present, every write is a true compare-and-swap.
//!
//! Two keys that land in the same slot share one bucket. Sharing can only make
//! a limit stricter, never looser: every admission moves the shared TAT
//! forward, so a hot key cannot escape its limit by colliding with others, nor
//! can a flood of distinct keys reset it. An idle key's slot (TAT in the past)
//! carries no state, so a collision only matters when both keys are active
//! within one refill time. Size the table at ten or more times the number of
//! keys active at once; with `k` active keys in `n` slots a given key shares
//! its slot with probability about `1 - exp(-k/n)`.
//!
//! # Across a config push
//!
//! A table is identified by what defines its buckets: the limit's name, its
//! key, its rate and burst (or its degraded bucket's), the client-address
//! prefixes when the key has `client_ip`, and its size. Every slot carries
//! that identity's hash ([`table_id`]) beside its TAT. A push that leaves a
//! limit's identity as it was keeps its buckets (a push of the same config,
//! another limit added or removed, a matcher changed); a push that changes
//! it (a new rate, a resized table, a renamed limit, another key) starts
//! that limit's buckets full, and no table ever reads a slot written under
//! another identity as its own (two limits that swap names start full).
//!
//! Envoy never frees a shared-data key, so each new limit name claims slots
//! for the process's lifetime. The names and sizes ever created are kept in
//! `rate_limit/tables`; a configuration that would take the slots created
//! over all pushes past [`MAX_RETAINED_SLOTS`] is refused at load
//! ([`RateLimiter::reserve`]): reuse names, or restart Envoy.
//!
//! # Several limits
//!
//! When more than one limit matches, every bucket is first read without
//! charging it; if any would refuse, the request is refused and charges none.
//! Otherwise each is charged by compare-and-swap. A race lost between the read
//! and the charge can still refuse at the charge, after earlier limits were
//! charged: the request then counts against those limits, the conservative
//! side.
//!
//! # Where each job is
//!
//! This module decides the local limits and writes the quota headers;
//! `global/` holds everything about global limits (their configuration,
//! the descriptors, the call and its answer, the failure mode), entered once
//! at the request and once at the answer by `filter.rs`.

pub mod config;
#[cfg(feature = "schema")]
pub(crate) use config::RawConfig as RawRateLimitConfig;

/// The JSON Schema of the configuration (see [`crate::schema`]).
#[cfg(feature = "schema")]
pub fn config_schema() -> schemars::Schema {
    schemars::schema_for!(config::RawConfig)
}
pub mod cost;
mod filter;
pub mod gcra;
pub mod global;
/// The rate limit service protocol, shared with `ratelimit-engine`.
pub use rls_protocol as protocol;

pub use filter::{CostMetrics, FilterMetrics, LimitMetrics, RateLimitFilter, RateLimitStream};
pub use global::{GlobalCall, GlobalCharge, GlobalMetrics, GlobalOutcome};

use crate::clock::Clock;
use crate::config::ConfigError;
use crate::hash::StableHasher;
use crate::net::{client_ip, ClientIpSource};
use crate::request::RequestView;
use crate::store::{create_absent, update_bytes, SharedStore, StoreError};
use config::{HeaderStyle, KeyPart, Limit, Mode, RateLimitConfig, Scope};
use gcra::{Gcra, GcraDecision};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The most rate-limit slots that configurations pushed to one process may
/// create in all (twice what one configuration may hold).
pub const MAX_RETAINED_SLOTS: u64 = 2 * config::MAX_TOTAL_SLOTS;

/// Where the names and sizes of the tables ever created are kept.
const TABLES_KEY: &str = "rate_limit/tables";

/// The shared-data namespace of every bucket. In nginx (`ngx_wasm_module`)
/// the part of a key before the first `/` names the `shm_kv` zone, so the
/// nginx config needs `shm_kv rate_limit <size>;`. In Envoy it is just part
/// of the key.
pub const SHARED_NAMESPACE: &str = "rate_limit";

/// What happened to one matching limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitState {
    /// Admitted and charged.
    Allowed,
    /// Refused this request.
    Refused,
    /// Would have admitted, but another limit refused the request; not charged.
    NotCharged,
    /// The shared store failed; the limit was skipped (fail open).
    StoreError,
}

/// One matching limit's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOutcome {
    /// Index into the configured limits.
    pub limit: usize,
    /// What happened.
    pub state: LimitState,
    /// Requests still admissible now.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full.
    pub reset_after: u64,
    /// Nanoseconds until a refused request would be admitted.
    pub retry_after: u64,
    /// The tier whose rate applied (0: the limit's own).
    pub tier: u8,
}

/// A cost still to settle once the response says it (see [`cost`]): the
/// bucket admission charged, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Index into the configured limits.
    pub limit: usize,
    key: crate::store::Key,
    id: u64,
    gcra: Gcra,
    charged: u64,
}

/// The decision for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// One entry per matching limit, in configuration order (up to four
    /// kept inline: no allocation per request).
    pub outcomes: smallvec::SmallVec<[LimitOutcome; 4]>,
    /// The limit that refused (the one with the longest wait when several did).
    pub refused_by: Option<usize>,
    /// The client address came from the peer because `X-Forwarded-For` was
    /// missing, short or malformed.
    pub client_ip_fallback: bool,
    /// Costs to settle after the response, for the limits that admitted
    /// the request and learn its cost from the response.
    pub charges: smallvec::SmallVec<[Charge; 1]>,
}

impl Decision {
    /// True when a limit refused the request (in shadow mode too).
    pub fn over_limit(&self) -> bool {
        self.refused_by.is_some()
    }

    fn retry_after(&self) -> u64 {
        self.outcomes.iter().map(|o| o.retry_after).max().unwrap_or(0)
    }
}

/// A refusal to send instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Headers, `Retry-After` and the configured rate-limit headers included.
    pub headers: Vec<(String, String)>,
    /// JSON body naming the limit.
    pub body: String,
}

/// The limiter: configuration plus the logic; state lives in the store.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    /// Each limit's table identity ([`table_id`]).
    ids: Vec<u64>,
}

/// The identity of a limit's table: what defines its buckets (see the
/// module's "Across a config push"). A fixed hash, so every worker agrees.
pub fn table_id(config: &RateLimitConfig, limit: &Limit) -> u64 {
    let mut h = StableHasher::default();
    h.write_field(limit.name.as_bytes());
    for part in &limit.key {
        match part {
            KeyPart::ClientIp => {
                h.write_field(b"client_ip");
                h.write(&[config.ipv4_prefix, config.ipv6_prefix]);
            }
            KeyPart::Header(name) => {
                h.write_field(b"header");
                h.write_field(name.as_bytes());
            }
            KeyPart::Path => h.write_field(b"path"),
            KeyPart::Method => h.write_field(b"method"),
            KeyPart::All => h.write_field(b"all"),
        }
    }
    let bucket = match limit.scope {
        Scope::Local => Some(&limit.gcra),
        Scope::Global => limit.degraded.as_ref(),
    };
    let (interval, tolerance) = bucket.map_or((0, 0), Gcra::params);
    h.write(&interval.to_le_bytes());
    h.write(&tolerance.to_le_bytes());
    h.write(&limit.slots.to_le_bytes());
    if let Some(tiers) = &limit.tiers {
        h.write_field(b"tiers");
        for t in &tiers.tiers {
            let (interval, tolerance) = t.gcra.params();
            h.write_field(t.name.as_bytes());
            h.write(&interval.to_le_bytes());
            h.write(&tolerance.to_le_bytes());
        }
    }
    h.finish()
}

/// A slot's value: the TAT and the table's identity.
fn encode_slot(tat: u64, id: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    let (t, i) = v.split_at_mut(8);
    t.copy_from_slice(&tat.to_le_bytes());
    i.copy_from_slice(&id.to_le_bytes());
    v
}

/// The TAT of a slot written under table `id`; `None` (a full bucket) for a
/// slot of another table or an older format.
fn decode_slot(bytes: &[u8], id: u64) -> Option<u64> {
    let (tat, owner) = bytes.split_at_checked(8)?;
    let owner: [u8; 8] = owner.try_into().ok()?;
    (u64::from_le_bytes(owner) == id).then(|| tat.try_into().ok().map(u64::from_le_bytes)).flatten()
}

impl RateLimiter {
    /// A limiter for a checked configuration.
    pub fn new(config: RateLimitConfig) -> Self {
        let ids = config.limits.iter().map(|l| table_id(&config, l)).collect();
        RateLimiter { config, ids }
    }

    /// Records this configuration's tables in `rate_limit/tables` (name and
    /// largest size ever created), unless the slots created over every
    /// configuration of the process would pass [`MAX_RETAINED_SLOTS`]: then
    /// the configuration is refused, naming the field. Call before
    /// [`RateLimiter::initialize`].
    pub fn reserve<S: SharedStore + ?Sized>(&self, store: &S) -> Result<Result<(), ConfigError>, StoreError> {
        update_bytes(store, TABLES_KEY, |cur| {
            let mut tables: Vec<(String, u64)> = cur
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|t| {
                    t.lines()
                        .filter_map(|l| l.rsplit_once(' ').and_then(|(n, s)| Some((n.to_string(), s.parse().ok()?))))
                        .collect()
                })
                .unwrap_or_default();
            let before = tables.clone();
            for l in self.config.limits.iter().filter(|l| l.slots > 0) {
                match tables.iter_mut().find(|(n, _)| *n == l.name) {
                    Some((_, s)) => *s = (*s).max(u64::from(l.slots)),
                    None => tables.push((l.name.clone(), u64::from(l.slots))),
                }
            }
            let total: u64 = tables.iter().map(|(_, s)| s).sum();
            if total > MAX_RETAINED_SLOTS {
                let held: u64 = before.iter().map(|(_, s)| s).sum();
                let why = format!(
                    "shared data already holds {held} rate-limit slots created by earlier configurations of this \
                     process (Envoy never frees them); this one would bring them to {total}, over {MAX_RETAINED_SLOTS}: \
                     reuse limit names and sizes, or restart Envoy"
                );
                return (None, Err(ConfigError::new("table_size", why)));
            }
            if tables == before {
                return (None, Ok(()));
            }
            let text: String = tables.iter().map(|(n, s)| format!("{n} {s}\n")).collect();
            (Some(text.into_bytes()), Ok(()))
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Creates every slot that does not exist yet, holding TAT 0 (a full
    /// bucket), then checks that the zone kept them ([`crate::store::check_kept`]). Call once per VM before serving; a slot that already exists
    /// (created by another worker, or before a VM reload) is left alone, so
    /// live state survives a VM restart. Returns how many slots were created.
    pub fn initialize<S: SharedStore + ?Sized>(&self, store: &S) -> Result<u32, StoreError> {
        let mut created = 0;
        for (l, id) in self.config.limits.iter().zip(&self.ids) {
            let keys = (0..l.slots).map(move |i| slot_key(l, u64::from(i)).as_str().to_string());
            created += create_absent(store, keys, &encode_slot(0, *id))?;
        }
        Ok(created)
    }

    /// Decides one request against the local limits (global ones are
    /// asked of the service: [`RateLimiter::global_call`]).
    pub fn check<C: Clock + ?Sized, S: SharedStore + ?Sized>(
        &self,
        req: &RequestView,
        clock: &C,
        store: &S,
    ) -> Decision {
        self.check_buckets(req, clock, store, |l| (l.scope == Scope::Local).then_some(&l.gcra))
    }

    /// Decides one request against the degraded local buckets of the global
    /// limits: what `failure_mode: "local"` does while the service cannot
    /// answer.
    pub fn check_degraded<C: Clock + ?Sized, S: SharedStore + ?Sized>(
        &self,
        req: &RequestView,
        clock: &C,
        store: &S,
    ) -> Decision {
        self.check_buckets(req, clock, store, |l| if l.scope == Scope::Global { l.degraded.as_ref() } else { None })
    }

    fn check_buckets<'a, C, S, F>(&'a self, req: &RequestView, clock: &C, store: &S, bucket: F) -> Decision
    where
        C: Clock + ?Sized,
        S: SharedStore + ?Sized,
        F: Fn(&'a Limit) -> Option<&'a Gcra>,
    {
        let mut decision = Decision::default();
        let mut matched: smallvec::SmallVec<[Matched<'a>; 2]> = smallvec::SmallVec::new();
        let mut ip_cache = None;
        let mut trusted = None;
        for ((i, limit), id) in self.config.limits.iter().enumerate().zip(&self.ids) {
            let Some(own) = bucket(limit) else { continue };
            if !limit.matcher.matches(req) {
                continue;
            }
            let slot = self.slot(limit, req, &mut ip_cache, &mut decision.client_ip_fallback);
            let mut trust = || *trusted.get_or_insert_with(|| cost::trusted(&self.config.trusted_sources, req));
            let tier = limit.tiers.as_ref().map_or(0, |t| t.choose(req, trust()));
            let gcra = if tier == 0 { own } else { limit.tier_gcra(tier) };
            let n = limit.cost.as_ref().map_or(1, |c| c.at_request(req, trust()));
            matched.push(Matched { limit: i, gcra, key: slot_key(limit, slot), id: *id, n, tier });
        }
        if matched.is_empty() {
            return decision;
        }
        let now = clock.now_nanos();

        if matched.len() > 1 {
            let mut any_refused = false;
            for m in &matched {
                let outcome = match store.get(&m.key).map(|e| e.and_then(|e| decode_slot(&e.value, m.id))) {
                    Ok(tat) => {
                        let d = m.gcra.peek_n(tat, now, m.n);
                        any_refused |= !d.allowed;
                        outcome(m, &d, if d.allowed { LimitState::NotCharged } else { LimitState::Refused })
                    }
                    Err(_) => store_error(m.limit),
                };
                decision.outcomes.push(outcome);
            }
            if any_refused {
                decision.refused_by = longest_wait(&decision.outcomes);
                return decision;
            }
            decision.outcomes.clear();
        }

        for m in matched {
            let result = update_bytes(store, &m.key, |bytes| {
                let d = m.gcra.decide_n(bytes.and_then(|b| decode_slot(b, m.id)), now, m.n);
                (d.write.map(|tat| encode_slot(tat, m.id)), d)
            });
            let o = match result {
                Ok(d) => outcome(&m, &d, if d.allowed { LimitState::Allowed } else { LimitState::Refused }),
                Err(_) => store_error(m.limit),
            };
            decision.outcomes.push(o);
            if o.state == LimitState::Refused {
                decision.refused_by = Some(m.limit);
                break;
            }
            let settles =
                self.config.limits.get(m.limit).and_then(|l| l.cost.as_ref()).is_some_and(|c| c.after_response());
            if o.state == LimitState::Allowed && settles {
                decision.charges.push(Charge { limit: m.limit, key: m.key, id: m.id, gcra: *m.gcra, charged: m.n });
            }
        }
        if decision.refused_by.is_some() {
            // Refused after all: nothing will come back to settle.
            decision.charges.clear();
        }
        decision
    }

    /// Settles a charge at the request's actual `cost` (see [`cost`]).
    pub fn settle<C: Clock + ?Sized, S: SharedStore + ?Sized>(
        &self,
        charge: &Charge,
        cost: u64,
        clock: &C,
        store: &S,
    ) -> Result<(), StoreError> {
        if cost == charge.charged {
            return Ok(());
        }
        let now = clock.now_nanos();
        update_bytes(store, &charge.key, |bytes| {
            let tat = charge.gcra.settle(bytes.and_then(|b| decode_slot(b, charge.id)), now, charge.charged, cost);
            (Some(encode_slot(tat, charge.id)), ())
        })
    }

    /// The client's key, spelled once per request in a pooled string.
    fn client_ip<'c>(
        &self,
        req: &RequestView,
        cache: &'c mut Option<crate::store::Key>,
        fallback: &mut bool,
    ) -> &'c str {
        cache.get_or_insert_with(|| {
            let (ip, source) = client_ip(req, self.config.trusted_hops);
            *fallback = source == ClientIpSource::PeerFallback;
            let mut key = crate::store::Key::from_parts(&[]);
            if let Some(ip) = ip {
                crate::net::push_network_key(&mut key, ip, self.config.ipv4_prefix, self.config.ipv6_prefix);
            }
            key
        })
    }

    fn slot(
        &self,
        limit: &Limit,
        req: &RequestView,
        ip_cache: &mut Option<crate::store::Key>,
        fallback: &mut bool,
    ) -> u64 {
        let mut h = StableHasher::default();
        h.write_field(limit.name.as_bytes());
        for part in &limit.key {
            match part {
                KeyPart::ClientIp => h.write_field(self.client_ip(req, ip_cache, fallback).as_bytes()),
                KeyPart::Header(name) => match req.header(name) {
                    // A missing header is its own key, distinct from an empty one,
                    // so leaving the header out cannot escape the limit.
                    None => h.write(&[0]),
                    Some(v) => {
                        h.write(&[1]);
                        h.write_field(v.as_bytes());
                    }
                },
                KeyPart::Path => h.write_field(req.path().as_bytes()),
                KeyPart::Method => h.write_field(req.method().as_bytes()),
                KeyPart::All => {}
            }
        }
        h.finish() % u64::from(limit.slots)
    }

    /// The rate-limit headers for a decision, in the configured style.
    pub fn headers(&self, decision: &Decision) -> ResponseHeaders {
        quota_headers(self.config.headers, &self.quota_items(decision))
    }

    /// Each matching limit's state, for [`quota_headers`].
    pub fn quota_items(&self, decision: &Decision) -> Vec<QuotaItem> {
        self.quota_refs(&decision.outcomes).into_iter().map(QuotaItem::owned).collect()
    }

    /// Each matching limit's state, its name lent by the configuration.
    pub fn quota_refs(&self, outcomes: &[LimitOutcome]) -> smallvec::SmallVec<[QuotaItem<&str>; 4]> {
        outcomes
            .iter()
            .filter(|o| o.state != LimitState::StoreError)
            .filter_map(|o| {
                let l = self.config.limits.get(o.limit)?;
                Some(QuotaItem {
                    name: l.name.as_str(),
                    quota: l.tier_requests(o.tier),
                    window_secs: window_secs(l),
                    remaining: o.remaining,
                    reset_secs: ceil_secs(o.reset_after),
                    refused: o.state == LimitState::Refused,
                    tier: l.tiers.as_ref().map(|t| t.name(o.tier)),
                })
            })
            .collect()
    }

    /// Adds the rate-limit headers of a local decision's `outcomes` to the
    /// response, each value spelled in a pooled string (no allocation with the
    /// usual one or two limits).
    pub fn add_headers<H: crate::host::Host + ?Sized>(&self, outcomes: &[LimitOutcome], host: &H) {
        emit_quota_headers(self.config.headers, &self.quota_refs(outcomes), &mut |name, value| {
            host.add_response_header(name, value)
        });
    }

    /// The local reply for a refused request, or `None` when the request
    /// goes through (not over a limit, or shadow mode).
    pub fn refusal(&self, decision: &Decision) -> Option<Refusal> {
        if self.config.mode == Mode::Shadow {
            return None;
        }
        let limit = self.config.limits.get(decision.refused_by?)?;
        Some(self.rate_limited(&limit.name, decision.retry_after(), self.headers(decision)))
    }

    /// The 429 (or `status`): `Retry-After` in whole seconds (at least 1),
    /// the rate-limit `headers`, and a JSON body naming the limit.
    fn rate_limited(&self, limit: &str, retry_after_nanos: u64, headers: ResponseHeaders) -> Refusal {
        let retry = ceil_secs(retry_after_nanos).max(1);
        let mut all = vec![
            ("retry-after".to_string(), retry.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        all.extend(headers.into_iter().map(|(n, v)| (n.into_owned(), v)));
        let body =
            serde_json::json!({ "error": "rate_limited", "limit": limit, "retry_after": retry }).to_string() + "\n";
        Refusal { status: self.config.status, headers: all, body }
    }
}

/// One limit's state as the rate-limit headers show it; the name owned
/// (kept across a call to the rate limit service) or lent (`&str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaItem<N = String> {
    /// The limit's name.
    pub name: N,
    /// Requests per window.
    pub quota: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Requests still admissible.
    pub remaining: u64,
    /// Seconds until the quota resets.
    pub reset_secs: u64,
    /// This limit refused the request.
    pub refused: bool,
    /// The tier whose rate applied, for a limit with tiers.
    pub tier: Option<N>,
}

impl QuotaItem<&str> {
    /// The same, its name copied.
    pub fn owned(self) -> QuotaItem {
        QuotaItem {
            name: self.name.to_string(),
            quota: self.quota,
            window_secs: self.window_secs,
            remaining: self.remaining,
            reset_secs: self.reset_secs,
            refused: self.refused,
            tier: self.tier.map(str::to_string),
        }
    }
}

/// Response headers a limiter adds: the rate-limit headers' names are
/// fixed (no string made for them per request); the rate limit service's
/// `response_headers_to_add` have their own.
pub type ResponseHeaders = Vec<(std::borrow::Cow<'static, str>, String)>;

/// The rate-limit headers for some limits' states, in `style`.
pub fn quota_headers<N: AsRef<str>>(style: HeaderStyle, items: &[QuotaItem<N>]) -> ResponseHeaders {
    let mut out = Vec::new();
    emit_quota_headers(style, items, &mut |name, value| out.push((name.into(), value.to_string())));
    out
}

/// Hands each rate-limit header for some limits' states, in `style`, to
/// `emit`: every value spelled in a pooled string ([`crate::store::Key`]:
/// no allocation once this thread's pool holds strings).
pub fn emit_quota_headers<N: AsRef<str>>(
    style: HeaderStyle,
    items: &[QuotaItem<N>],
    emit: &mut dyn FnMut(&'static str, &str),
) {
    use crate::store::Key;
    if items.is_empty() {
        return;
    }
    if matches!(style, HeaderStyle::Draft | HeaderStyle::Both) {
        let (mut policy, mut state) = (Key::from_parts(&[]), Key::from_parts(&[]));
        for (n, i) in items.iter().enumerate() {
            let sep = if n == 0 { "" } else { ", " };
            for (value, (a, b), (x, y)) in [
                (&mut policy, (";q=", ";w="), (i.quota, i.window_secs)),
                (&mut state, (";r=", ";t="), (i.remaining, i.reset_secs)),
            ] {
                value.push_str(sep);
                value.push_str("\"");
                value.push_str(i.name.as_ref());
                value.push_str("\"");
                value.push_str(a);
                value.push_u64(x);
                value.push_str(b);
                value.push_u64(y);
            }
            if let Some(tier) = &i.tier {
                policy.push_str(";tier=\"");
                policy.push_str(tier.as_ref());
                policy.push_str("\"");
            }
        }
        emit("ratelimit-policy", &policy);
        emit("ratelimit", &state);
    }
    if matches!(style, HeaderStyle::XRatelimit | HeaderStyle::Both) {
        // The limit closest to refusing speaks for the request.
        if let Some(i) = items.iter().min_by_key(|i| (!i.refused, i.remaining)) {
            let mut digits = [0u8; 20];
            emit("x-ratelimit-limit", crate::text::decimal(i.quota, &mut digits));
            emit("x-ratelimit-remaining", crate::text::decimal(i.remaining, &mut digits));
            emit("x-ratelimit-reset", crate::text::decimal(i.reset_secs, &mut digits));
        }
    }
}

/// A slot's shared-data key, spelled in a pooled string (one per request).
fn slot_key(limit: &Limit, slot: u64) -> crate::store::Key {
    let mut key = crate::store::Key::from_parts(&[SHARED_NAMESPACE, "/", &limit.name, ":"]);
    key.push_u64(slot);
    key
}

/// One matching limit of a request: its bucket (the tier's), slot, and
/// what admission charges.
struct Matched<'a> {
    limit: usize,
    gcra: &'a Gcra,
    key: crate::store::Key,
    id: u64,
    n: u64,
    tier: u8,
}

fn outcome(m: &Matched<'_>, d: &GcraDecision, state: LimitState) -> LimitOutcome {
    LimitOutcome {
        limit: m.limit,
        state,
        remaining: d.remaining,
        reset_after: d.reset_after,
        retry_after: d.retry_after,
        tier: m.tier,
    }
}

fn store_error(limit: usize) -> LimitOutcome {
    LimitOutcome { limit, state: LimitState::StoreError, remaining: 0, reset_after: 0, retry_after: 0, tier: 0 }
}

fn longest_wait(outcomes: &[LimitOutcome]) -> Option<usize> {
    outcomes.iter().filter(|o| o.state == LimitState::Refused).max_by_key(|o| o.retry_after).map(|o| o.limit)
}

/// A limit's period in whole seconds, rounded up (the `w` of `RateLimit-Policy`).
fn window_secs(limit: &Limit) -> u64 {
    ceil_secs(u64::try_from(limit.period.as_nanos()).unwrap_or(u64::MAX))
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

#[cfg(test)]
mod cost_tests;
#[cfg(test)]
pub(crate) mod filter_tests;
#[cfg(test)]
mod tests;
