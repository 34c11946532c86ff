//! The rate limiter: which limits a request matches, its key in each, and
//! the GCRA decision made against shared state.
//!
//! # Bounded memory
//!
//! Each limit owns a fixed table of `table_size` slots in shared data, keys
//! `rate_limit/<limit name>:<slot>`, each holding one `u64` TAT (a limit keyed on
//! `global` alone has one slot). A request's key is hashed (a fixed hash, so
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
//! # Several limits
//!
//! When more than one limit matches, every bucket is first read without
//! charging it; if any would refuse, the request is refused and charges none.
//! Otherwise each is charged by compare-and-swap. A race lost between the read
//! and the charge can still refuse at the charge, after earlier limits were
//! charged: the request then counts against those limits, the conservative
//! side.

pub mod config;
pub mod gcra;

use crate::clock::Clock;
use crate::hash::StableHasher;
use crate::net::{client_ip, ClientIpSource};
use crate::request::RequestView;
use crate::store::{read_u64, update_u64, SharedStore, StoreError};
use config::{HeaderStyle, KeyPart, Limit, Mode, RateLimitConfig};
use gcra::GcraDecision;

const NANOS_PER_SEC: u64 = 1_000_000_000;

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
}

/// The decision for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// One entry per matching limit, in configuration order.
    pub outcomes: Vec<LimitOutcome>,
    /// The limit that refused (the one with the longest wait when several did).
    pub refused_by: Option<usize>,
    /// The client address came from the peer because `X-Forwarded-For` was
    /// missing, short or malformed.
    pub client_ip_fallback: bool,
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
}

impl RateLimiter {
    /// A limiter for a checked configuration.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter { config }
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Creates every slot that does not exist yet, holding TAT 0 (a full
    /// bucket). Call once per VM before serving; a slot that already exists
    /// (created by another worker, or before a VM reload) is left alone, so
    /// live state survives a VM restart. Returns how many slots were created.
    pub fn initialize<S: SharedStore + ?Sized>(&self, store: &S) -> Result<u32, StoreError> {
        let mut created = 0;
        for limit in &self.config.limits {
            for slot in 0..limit.slots {
                let key = slot_key(limit, u64::from(slot));
                if store.get(&key)?.is_none() && store.set(&key, &0u64.to_le_bytes(), None)? {
                    created += 1;
                }
            }
        }
        Ok(created)
    }

    /// Decides one request.
    pub fn check<C: Clock + ?Sized, S: SharedStore + ?Sized>(
        &self,
        req: &RequestView,
        clock: &C,
        store: &S,
    ) -> Decision {
        let mut decision = Decision::default();
        let mut matched: Vec<(usize, &Limit, String)> = Vec::new();
        let mut ip_cache = None;
        for (i, limit) in self.config.limits.iter().enumerate() {
            if !limit.matcher.matches(req) {
                continue;
            }
            let slot = self.slot(limit, req, &mut ip_cache, &mut decision.client_ip_fallback);
            matched.push((i, limit, slot_key(limit, slot)));
        }
        if matched.is_empty() {
            return decision;
        }
        let now = clock.now_nanos();

        if matched.len() > 1 {
            let mut any_refused = false;
            for (i, limit, key) in &matched {
                let outcome = match read_u64(store, key) {
                    Ok(tat) => {
                        let d = limit.gcra.peek(tat, now);
                        any_refused |= !d.allowed;
                        outcome(*i, &d, if d.allowed { LimitState::NotCharged } else { LimitState::Refused })
                    }
                    Err(_) => store_error(*i),
                };
                decision.outcomes.push(outcome);
            }
            if any_refused {
                decision.refused_by = longest_wait(&decision.outcomes);
                return decision;
            }
            decision.outcomes.clear();
        }

        for (i, limit, key) in &matched {
            let result = update_u64(store, key, |tat| {
                let d = limit.gcra.decide(tat, now);
                (d.write, d)
            });
            let o = match result {
                Ok(d) => outcome(*i, &d, if d.allowed { LimitState::Allowed } else { LimitState::Refused }),
                Err(_) => store_error(*i),
            };
            decision.outcomes.push(o);
            if o.state == LimitState::Refused {
                decision.refused_by = Some(*i);
                break;
            }
        }
        decision
    }

    fn slot(&self, limit: &Limit, req: &RequestView, ip_cache: &mut Option<String>, fallback: &mut bool) -> u64 {
        let mut h = StableHasher::default();
        h.write_field(limit.name.as_bytes());
        for part in &limit.key {
            match part {
                KeyPart::ClientIp => {
                    let ip = ip_cache.get_or_insert_with(|| {
                        let (ip, source) = client_ip(req, self.config.trusted_hops);
                        *fallback = source == ClientIpSource::PeerFallback;
                        ip.map(|ip| ip.to_string()).unwrap_or_default()
                    });
                    h.write_field(ip.as_bytes());
                }
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
                KeyPart::Global => {}
            }
        }
        h.finish() % u64::from(limit.slots)
    }

    /// The rate-limit headers for a decision, in the configured style.
    pub fn headers(&self, decision: &Decision) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let known: Vec<(&LimitOutcome, &Limit)> = decision
            .outcomes
            .iter()
            .filter(|o| o.state != LimitState::StoreError)
            .filter_map(|o| self.config.limits.get(o.limit).map(|l| (o, l)))
            .collect();
        if known.is_empty() {
            return out;
        }
        let style = self.config.headers;
        if matches!(style, HeaderStyle::Draft | HeaderStyle::Both) {
            let policy: Vec<String> = known
                .iter()
                .map(|(_, l)| format!("\"{}\";q={};w={}", l.name, l.requests, ceil_secs_of(l.period.as_nanos())))
                .collect();
            let state: Vec<String> = known
                .iter()
                .map(|(o, l)| format!("\"{}\";r={};t={}", l.name, o.remaining, ceil_secs(o.reset_after)))
                .collect();
            out.push(("ratelimit-policy".to_string(), policy.join(", ")));
            out.push(("ratelimit".to_string(), state.join(", ")));
        }
        if matches!(style, HeaderStyle::XRatelimit | HeaderStyle::Both) {
            // The limit closest to refusing speaks for the request.
            let tightest = known.iter().min_by_key(|(o, _)| (o.state != LimitState::Refused, o.remaining));
            if let Some((o, l)) = tightest {
                out.push(("x-ratelimit-limit".to_string(), l.requests.to_string()));
                out.push(("x-ratelimit-remaining".to_string(), o.remaining.to_string()));
                out.push(("x-ratelimit-reset".to_string(), ceil_secs(o.reset_after).to_string()));
            }
        }
        out
    }

    /// The local reply for a refused request, or `None` when the request
    /// goes through (not over a limit, or shadow mode).
    pub fn refusal(&self, decision: &Decision) -> Option<Refusal> {
        if self.config.mode == Mode::Shadow {
            return None;
        }
        let limit = self.config.limits.get(decision.refused_by?)?;
        let retry = ceil_secs(decision.retry_after()).max(1);
        let mut headers = vec![
            ("retry-after".to_string(), retry.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        headers.extend(self.headers(decision));
        let body = serde_json::json!({ "error": "rate_limited", "limit": limit.name, "retry_after": retry })
            .to_string()
            + "\n";
        Some(Refusal { status: self.config.status, headers, body })
    }
}

fn slot_key(limit: &Limit, slot: u64) -> String {
    format!("{SHARED_NAMESPACE}/{}:{}", limit.name, slot)
}

fn outcome(limit: usize, d: &GcraDecision, state: LimitState) -> LimitOutcome {
    LimitOutcome { limit, state, remaining: d.remaining, reset_after: d.reset_after, retry_after: d.retry_after }
}

fn store_error(limit: usize) -> LimitOutcome {
    LimitOutcome { limit, state: LimitState::StoreError, remaining: 0, reset_after: 0, retry_after: 0 }
}

fn longest_wait(outcomes: &[LimitOutcome]) -> Option<usize> {
    outcomes.iter().filter(|o| o.state == LimitState::Refused).max_by_key(|o| o.retry_after).map(|o| o.limit)
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

fn ceil_secs_of(nanos: u128) -> u128 {
    nanos.div_ceil(u128::from(NANOS_PER_SEC))
}

#[cfg(test)]
mod tests;
