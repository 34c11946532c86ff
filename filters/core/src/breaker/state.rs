//! The state machine: admission and completion, trips, the half-open probes
//! and Traefik's recovery ramp, and how a record written under the other
//! mode is read (see the module docs of [`super`]).

use super::window::Sample;
use super::{Admission, Breakers, Record, State, Transition, WindowMetrics};

impl Breakers {
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
}
