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
pub mod window;

pub use filter::{resolve_key, BreakerFilter, BreakerMetrics, BreakerStream, FilterMetrics, Role};

use crate::hash::hash_bytes;
use crate::store::{update_bytes, SharedStore, StoreError};
use config::BreakerConfig;
use expr::{Metrics, Operand};
use window::{latency_at_least, Ring, Sample, Shape, Totals};

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
    /// The key it belongs to.
    pub key: String,
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
            key: key.to_string(),
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

    /// Decides whether a request may pass; may change the record
    /// (open -> half-open or recovering, probe and recovery accounting).
    /// Returns the admission, whether the record changed, and the
    /// transition, if any; the caller writes the record back when it changed.
    pub fn admit(&self, rec: &mut Record, now: u64) -> (Admission, bool, Option<Transition>) {
        if let Some(t) = self.adopt(rec, now) {
            let (admission, _, _) = self.admit(rec, now);
            return (admission, true, Some(t));
        }
        match rec.state {
            State::Closed => (Admission::Pass, false, None),
            State::Open if now < rec.until => {
                (Admission::Reject { retry_after_ns: rec.until - now, state: State::Open }, false, None)
            }
            State::Open => match self.cfg.traefik {
                Some(t) => {
                    rec.state = State::Recovering;
                    rec.until = now.saturating_add(t.recovery_ns);
                    rec.probes = 0;
                    rec.tally = 0;
                    let (admission, _, _) = self.recover(rec, now);
                    (admission, true, Some(Transition { from: State::Open, to: State::Recovering }))
                }
                None => {
                    rec.state = State::HalfOpen;
                    rec.probes = 1;
                    rec.tally = 0;
                    rec.until = now.saturating_add(self.cfg.open_for_ns);
                    (Admission::Probe, true, Some(Transition { from: State::Open, to: State::HalfOpen }))
                }
            },
            State::Recovering => self.recover(rec, now),
            State::HalfOpen => {
                let mut changed = false;
                if now >= rec.until {
                    // Probes that never answered are forgotten.
                    rec.probes = 0;
                    rec.until = now.saturating_add(self.cfg.open_for_ns);
                    changed = true;
                }
                if rec.probes.saturating_add(rec.tally) < self.cfg.half_open_requests {
                    rec.probes += 1;
                    (Admission::Probe, true, None)
                } else {
                    let wait = rec.until.saturating_sub(now);
                    (Admission::Reject { retry_after_ns: wait, state: State::HalfOpen }, changed, None)
                }
            }
        }
    }

    /// A record written under the other mode (a config push turned a
    /// Traefik breaker into a native one, or back) in a state this mode does
    /// not have, mapped to the nearest one of this mode:
    ///
    /// * `recovering` under a native breaker: closed, its window kept (the
    ///   upstream had served its fallback and was taking traffic again);
    /// * `half-open` under a Traefik breaker: recovering from now, for
    ///   `recoveryDuration` (Traefik's state after its fallback).
    ///
    /// `open` means the same in both and keeps its end; `closed` too.
    fn adopt(&self, rec: &mut Record, now: u64) -> Option<Transition> {
        let from = rec.state;
        match (from, self.cfg.traefik) {
            (State::Recovering, None) => {
                rec.state = State::Closed;
                rec.trips = 0;
                rec.probes = 0;
                rec.tally = 0;
                rec.until = 0;
            }
            (State::HalfOpen, Some(t)) => {
                rec.state = State::Recovering;
                rec.until = now.saturating_add(t.recovery_ns);
                rec.probes = 0;
                rec.tally = 0;
            }
            _ => return None,
        }
        Some(Transition { from, to: rec.state })
    }

    /// Traefik's recovery: after `until`, the breaker is closed (its window
    /// kept, as Traefik keeps its metrics). Before, a request passes when
    /// the share admitted so far, counting it, stays below
    /// `0.5 x elapsed / recoveryDuration`: none at the start, about half at
    /// the end. Turned-away requests are told to come back in a second.
    fn recover(&self, rec: &mut Record, now: u64) -> (Admission, bool, Option<Transition>) {
        if now > rec.until {
            rec.state = State::Closed;
            rec.trips = 0;
            rec.probes = 0;
            rec.tally = 0;
            rec.until = 0;
            return (Admission::Pass, true, Some(Transition { from: State::Recovering, to: State::Closed }));
        }
        let recovery_ns = self.cfg.traefik.map_or(1, |t| t.recovery_ns);
        let start = rec.until.saturating_sub(recovery_ns);
        let target = 0.5 * now.saturating_sub(start) as f64 / recovery_ns.max(1) as f64;
        let (let_through, turned_away) = (rec.probes, rec.tally);
        let allowed = u64::from(let_through) + 1;
        let share = allowed as f64 / (allowed + u64::from(turned_away)) as f64;
        if share < target {
            rec.probes = rec.probes.saturating_add(1);
            return (Admission::Pass, true, None);
        }
        rec.tally = rec.tally.saturating_add(1);
        (Admission::Reject { retry_after_ns: 0, state: State::Recovering }, true, None)
    }

    /// Records a completed request. Returns whether the record changed and
    /// the transition, if any.
    pub fn complete(&self, rec: &mut Record, now: u64, sample: &Sample, probe: bool) -> (bool, Option<Transition>) {
        if probe {
            if rec.state != State::HalfOpen {
                return (false, None);
            }
            rec.probes = rec.probes.saturating_sub(1);
            if sample.failure {
                return (true, Some(self.trip(rec, now)));
            }
            rec.tally += 1;
            if rec.tally >= self.cfg.half_open_requests {
                *rec = self.fresh(&rec.key);
                return (true, Some(Transition { from: State::HalfOpen, to: State::Closed }));
            }
            return (true, None);
        }
        let measured = rec.state == State::Closed || (rec.state == State::Recovering && self.cfg.traefik.is_some());
        if !measured {
            return (false, None);
        }
        let window = self.cfg.needs_window();
        if window {
            self.cfg.shape.record(&mut rec.ring, now, sample);
        }
        let before = rec.consecutive;
        rec.consecutive = if sample.failure { rec.consecutive.saturating_add(1) } else { 0 };
        if let Some(t) = self.cfg.traefik {
            // Traefik checks at most once per checkPeriod.
            if now <= rec.next_check && rec.next_check != 0 {
                return (window, None);
            }
            rec.next_check = now.saturating_add(t.check_period_ns);
        }
        if self.should_trip(rec, now) {
            return (true, Some(self.trip(rec, now)));
        }
        // Written only when it changed: without a window, a success on a
        // record with no failure streak changes nothing.
        (window || rec.consecutive != before, None)
    }

    /// A probe that will never be answered (the client went away) gives its
    /// place back.
    pub fn release_probe(&self, rec: &mut Record) -> bool {
        if rec.state == State::HalfOpen && rec.probes > 0 {
            rec.probes -= 1;
            return true;
        }
        false
    }

    fn should_trip(&self, rec: &Record, now: u64) -> bool {
        if self.cfg.consecutive_failures.is_some_and(|n| rec.consecutive >= n) {
            return true;
        }
        let totals = self.cfg.shape.totals(&rec.ring, now);
        if totals.requests == 0 || totals.requests < u64::from(self.cfg.min_requests) {
            return false;
        }
        let requests = totals.requests as f64;
        if self.cfg.failure_ratio.is_some_and(|r| totals.failures as f64 / requests >= r) {
            return true;
        }
        if self.cfg.slow_call_ratio.is_some_and(|r| totals.slow as f64 / requests >= r) {
            return true;
        }
        match &self.cfg.expression {
            Some(e) => e.eval(&WindowMetrics { shape: &self.cfg.shape, totals: &totals }),
            None => false,
        }
    }

    fn trip(&self, rec: &mut Record, now: u64) -> Transition {
        let from = rec.state;
        rec.trips = rec.trips.saturating_add(1);
        let factor = 1u64.checked_shl(rec.trips.saturating_sub(1).min(63)).unwrap_or(u64::MAX);
        let open_for = self.cfg.open_for_ns.saturating_mul(factor).min(self.cfg.max_open_for_ns);
        rec.state = State::Open;
        rec.until = now.saturating_add(open_for);
        rec.probes = 0;
        rec.tally = 0;
        rec.consecutive = 0;
        rec.ring = self.cfg.shape.empty();
        Transition { from, to: State::Open }
    }

    /// True when the record carries no state worth keeping: its slot may be
    /// given to another key.
    pub fn reclaimable(&self, rec: &Record, now: u64) -> bool {
        rec.state == State::Closed && rec.consecutive == 0 && self.cfg.shape.totals(&rec.ring, now).requests == 0
    }

    /// The sample for a completed request.
    pub fn sample(&self, status: u16, network: bool, latency_ns: u64) -> Sample {
        Sample {
            status,
            failure: network || self.cfg.is_failure_status(status),
            network,
            slow: self.cfg.slow_call_threshold_ns.is_some_and(|t| latency_ns > t),
            latency_ns,
        }
    }

    // ---- encoding ----

    /// What a record states of the window's shape after its version:
    /// buckets, status intervals, latency intervals.
    fn shape_header(&self) -> [u16; 3] {
        let shape = &self.cfg.shape;
        let narrow = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        [
            narrow(shape.buckets as usize),
            narrow(shape.status_bounds.len().saturating_sub(1)),
            narrow(shape.latency_bins()),
        ]
    }

    /// Reads a record's version and shape: `None` for another version (or
    /// garbage), else whether the window's shape is this configuration's.
    fn read_header(&self, r: &mut Reader<'_>) -> Option<bool> {
        if r.u8()? != VERSION {
            return None;
        }
        let mut same = true;
        for expected in self.shape_header() {
            same &= r.u16()? == expected;
        }
        Some(same)
    }

    /// Serialises a record.
    pub fn encode(&self, rec: &Record) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + rec.key.len() + rec.ring.as_bytes().len());
        out.push(VERSION);
        for v in self.shape_header() {
            put_u16(&mut out, v);
        }
        out.push(rec.state.gauge() as u8);
        put_u32(&mut out, rec.trips);
        put_u32(&mut out, rec.consecutive);
        out.extend_from_slice(&rec.until.to_le_bytes());
        put_u32(&mut out, rec.probes);
        put_u32(&mut out, rec.tally);
        out.extend_from_slice(&rec.next_check.to_le_bytes());
        let key = rec.key.as_bytes();
        let key = key.get(..key.len().min(u16::MAX as usize)).unwrap_or(key);
        put_u16(&mut out, key.len() as u16);
        out.extend_from_slice(key);
        out.extend_from_slice(rec.ring.as_bytes());
        out
    }

    /// Parses a record; `None` for a free slot or garbage. A record written
    /// under a configuration whose window has another shape (a config push
    /// changed `window`, `buckets`, the statuses or latencies counted, or
    /// added an expression) keeps its key and state (an open breaker stays
    /// open until its end) with an empty window.
    pub fn decode(&self, bytes: &[u8]) -> Option<Record> {
        let shape = &self.cfg.shape;
        let mut r = Reader(bytes);
        let same_shape = self.read_header(&mut r)?;
        let state = State::from_byte(r.u8()?)?;
        let trips = r.u32()?;
        let consecutive = r.u32()?;
        let until = r.u64()?;
        let probes = r.u32()?;
        let tally = r.u32()?;
        let next_check = r.u64()?;
        let key_len = usize::from(r.u16()?);
        let key = String::from_utf8(r.take(key_len)?.to_vec()).ok()?;
        let ring = if same_shape {
            let ring = Ring::from_bytes(shape, r.take(shape.ring_len())?)?;
            if !r.0.is_empty() {
                return None;
            }
            ring
        } else {
            shape.empty()
        };
        Some(Record { key, state, trips, consecutive, until, probes, tally, next_check, ring })
    }

    /// The key and state of an encoded record, without decoding its window:
    /// what admitting a request through a closed breaker needs (the common
    /// case). `None` also for a record of another window shape (decoded
    /// whole, and rewritten in this shape, by the slow path).
    pub fn decode_head<'a>(&self, bytes: &'a [u8]) -> Option<(&'a str, State)> {
        let mut r = Reader(bytes);
        if !self.read_header(&mut r)? {
            return None;
        }
        let state = State::from_byte(r.u8()?)?;
        r.take(4 + 4 + 8 + 4 + 4 + 8)?;
        let key_len = usize::from(r.u16()?);
        let key = std::str::from_utf8(r.take(key_len)?).ok()?;
        Some((key, state))
    }

    // ---- the shared table ----

    /// The shared-data key of a table slot.
    pub fn slot_key(slot: u32) -> String {
        format!("{SHARED_NAMESPACE}/{slot}")
    }

    /// The longest record this configuration writes: a key of
    /// [`filter::MAX_KEY_BYTES`] and the whole window.
    pub fn max_record_len(&self) -> usize {
        1 + 2 * 3 + 1 + 4 + 4 + 8 + 4 + 4 + 8 + 2 + filter::MAX_KEY_BYTES + self.cfg.shape.ring_len()
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
        let created = crate::store::create_absent(store, (0..self.cfg.max_breakers).map(Self::slot_key), &free)?;
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
                for slot in Self::probes_from_home(key, size).filter(|&s| s < self.cfg.max_breakers.max(size)) {
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

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
pub(crate) mod filter_tests;
#[cfg(test)]
mod tests;
