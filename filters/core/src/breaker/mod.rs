//! The circuit breaker: closed -> open -> half-open -> closed, per key, with
//! its whole state in one shared-data record updated by compare-and-swap, so
//! a breaker opened by traffic on one worker rejects on every worker at once.
//!
//! # States
//!
//! * **Closed**: requests pass; each completed request is recorded in the
//!   sliding window ([`window`]). After each, the trip conditions are checked:
//!   `consecutive_failures` (regardless of volume), then, once the window holds
//!   `min_requests`, `failure_ratio`, `slow_call_ratio` and the Traefik
//!   `expression` ([`expr`]). Any one trips the breaker.
//! * **Open**: requests are answered locally until `until`. The open period
//!   is `open_for x 2^(trips-1)`, capped at `max_open_for`: it grows while
//!   the upstream keeps failing its probes.
//! * **Half-open**: up to `half_open_requests` probes pass; the rest are
//!   rejected. A failed probe re-opens the breaker (longer); when that many
//!   probes have succeeded it closes, with an empty window. Probes whose
//!   answers never come (the client went away) are forgotten after
//!   `open_for`, so a breaker cannot stay half-open forever.
//!
//! Requests admitted while closed that complete after the breaker opened are
//! not recorded (they describe the past), and the breaker's own rejections
//! are never recorded.
//!
//! # Bounded keys
//!
//! Breakers live in a fixed table of `max_breakers` shared-data slots
//! (`circuit_breaker/<slot>`), all created at configure time. A key hashes to
//! a slot and probes up to [`PROBES`] slots from there; each record holds its
//! key, so two keys never share a breaker. A slot whose breaker is closed,
//! idle (nothing in its window) and has no failure streak carries no state
//! and is reclaimed by the next new key. When all probed slots hold live
//! breakers of other keys, the request is not tracked (it passes, and the
//! filter counts it).

//!
//! # Where each job is
//!
//! `state.rs` is the state machine (admission, completion, trips, probes,
//! Traefik's recovery, a record of the other mode), `record.rs` the record's
//! encoding, `table.rs` the slot table; `filter.rs` drives them for a proxy,
//! `window.rs` is the sliding window and `expr.rs` Traefik's expressions.

pub mod config;
#[cfg(feature = "schema")]
pub(crate) use config::RawConfig as RawBreakerConfig;

/// The JSON Schema of the configuration (see [`crate::schema`]).
#[cfg(feature = "schema")]
pub fn config_schema() -> schemars::Schema {
    schemars::schema_for!(config::RawConfig)
}
pub mod expr;
mod filter;
mod record;
mod state;
mod table;
pub mod window;

pub use filter::{resolve_key, BreakerFilter, BreakerMetrics, BreakerStream, FilterMetrics, Role};

use config::BreakerConfig;
use expr::{Metrics, Operand};
use window::{latency_at_least, Ring, Shape, Totals};

/// Slots probed from a key's home slot.
pub const PROBES: u32 = 8;
/// Shared-data namespace (the `shm_kv` zone name in nginx).
pub const SHARED_NAMESPACE: &str = "circuit_breaker";

#[cfg(test)]
const FREE: &[u8] = &[0];
/// Where the table sizes configurations used are kept (see
/// [`Breakers::initialize`]).
const SIZES_KEY: &str = "circuit_breaker/sizes";
/// Table sizes remembered, this one included.
pub const SIZES_KEPT: usize = 4;
const VERSION: u8 = 2;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests pass and are measured.
    Closed,
    /// Requests are rejected.
    Open,
    /// A few probes pass.
    HalfOpen,
    /// A Traefik breaker after its fallback: a growing share of requests
    /// passes (and is measured) until `recoveryDuration` has elapsed.
    Recovering,
}

impl State {
    /// Lower-case name, as in headers and logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::Recovering => "recovering",
        }
    }

    /// Gauge value (and record byte): 0 closed, 1 open, 2 half-open,
    /// 3 recovering.
    pub fn gauge(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Recovering => 3,
        }
    }

    fn from_byte(b: u8) -> Option<State> {
        match b {
            0 => Some(State::Closed),
            1 => Some(State::Open),
            2 => Some(State::HalfOpen),
            3 => Some(State::Recovering),
            _ => None,
        }
    }
}

/// A state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: State,
    /// After.
    pub to: State,
}

/// One breaker's whole state: the shared-data record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key it belongs to (at most `MAX_KEY_BYTES`, 128), in a
    /// pooled string.
    pub key: crate::store::Key,
    /// Current state.
    pub state: State,
    /// Opens since the last close (grows `open_for`).
    pub trips: u32,
    /// Failures in a row (closed state).
    pub consecutive: u32,
    /// Open: when probing (or recovering) may start. Half-open: when
    /// unanswered probes are forgotten. Recovering: when recovery ends.
    pub until: u64,
    /// Half-open: probes admitted and not yet answered. Recovering:
    /// requests let through so far.
    pub probes: u32,
    /// Half-open: probes answered successfully. Recovering: requests turned
    /// away so far. (One counter, two states: it is what the state counts.)
    pub tally: u32,
    /// A Traefik breaker: the expression is not checked again before this.
    pub next_check: u64,
    /// The window.
    pub ring: Ring,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Let it through (closed).
    Pass,
    /// Let it through as a half-open probe.
    Probe,
    /// Answer it locally.
    Reject {
        /// Nanoseconds until probing may start.
        retry_after_ns: u64,
        /// The state that rejected it.
        state: State,
    },
}

/// The breaker logic for one configuration.
#[derive(Debug, Clone)]
pub struct Breakers {
    cfg: BreakerConfig,
    /// Table sizes earlier configurations used, newest first.
    other_sizes: Vec<u32>,
}

struct WindowMetrics<'a> {
    shape: &'a Shape,
    totals: &'a Totals,
}

impl Metrics for WindowMetrics<'_> {
    fn latency_at_least(&self, q: f64, ms: u64) -> bool {
        latency_at_least(self.shape, &self.totals.latency, q, ms)
    }

    fn value(&self, o: &Operand) -> f64 {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        match o {
            Operand::Num(n) => *n,
            Operand::NetworkErrorRatio => ratio(
                self.shape.count_status(self.totals, 502, 503) + self.shape.count_status(self.totals, 504, 505),
                self.totals.requests,
            ),
            Operand::NetworkFailureRatio => ratio(self.totals.network, self.totals.requests),
            Operand::RequestThreshold => self.totals.requests as f64,
            Operand::ResponseCodeRatio { from, to, div_from, div_to } => ratio(
                self.shape.count_status(self.totals, *from, *to),
                self.shape.count_status(self.totals, *div_from, *div_to),
            ),
            // Only ever compared with a number: see latency_at_least.
            Operand::LatencyAtQuantileMs(_) => 0.0,
        }
    }
}

impl Breakers {
    /// Logic for a checked configuration.
    pub fn new(cfg: BreakerConfig) -> Self {
        Breakers { cfg, other_sizes: Vec::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// A fresh, closed record for `key`.
    pub fn fresh(&self, key: &str) -> Record {
        Record {
            key: crate::store::Key::from(key),
            state: State::Closed,
            trips: 0,
            consecutive: 0,
            until: 0,
            probes: 0,
            tally: 0,
            next_check: 0,
            ring: self.cfg.shape.empty(),
        }
    }
}

#[cfg(test)]
pub(crate) mod filter_tests;
#[cfg(test)]
mod tests;
