//! The Generic Cell Rate Algorithm: a token bucket whose whole state is one
//! number, the theoretical arrival time (TAT) of the next request.
//!
//! With emission interval `T = period / requests` and tolerance
//! `tau = (burst - 1) * T`, a request at `now` is admitted when
//! `max(TAT, now) - now <= tau`, and then `TAT = max(TAT, now) + T`. A full
//! bucket (TAT in the past) admits `burst` requests at once; after that one
//! request per `T`. Because the state is a single `u64`, one compare-and-swap
//! updates it atomically for every worker of the proxy.
//!
//! After any admission `TAT - now <= tau + T`. A stored TAT further ahead than
//! that means the clock stepped backwards (or the limit was reconfigured
//! tighter); it is clamped to `now + tau + T`, an empty bucket, so a clock step
//! of an hour costs clients at most one bucket's refill time, not an hour.
//!
//! # Costs and debt
//!
//! A request may cost `n` units instead of one ([`Gcra::decide_n`]): it is
//! admitted when the bucket holds all `n` (`max(TAT, now) - now + n*T <=
//! tau + T`), and moves the TAT `n*T` ahead. With `n = 0` (a cost known
//! only after the response) the test is "the bucket is not in debt". When
//! the cost is known, [`Gcra::settle`] moves the TAT by the difference
//! from what admission charged, past `tau + T` if it must: the bucket is in
//! debt, and refuses until the debt is repaid at the sustained rate. The
//! clamp above then allows the largest debt one settlement can make
//! ([`Gcra::with_debt`]).

/// One limit's parameters, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
    /// How far past a full bucket's horizon a settled cost may take the
    /// TAT (nanoseconds): the clamp's allowance.
    debt: u64,
}

/// The outcome of offering one request to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraDecision {
    /// Admitted?
    pub allowed: bool,
    /// The TAT to store (`None`: leave the stored value alone).
    pub write: Option<u64>,
    /// Requests that could still be admitted right now after this one.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_after: u64,
    /// Nanoseconds until this request would be admitted (0 when admitted).
    pub retry_after: u64,
}

impl Gcra {
    /// `requests` per `period_nanos`, up to `burst` at once. `None` when the
    /// rate is finer than one request per nanosecond or an argument is 0.
    pub fn new(requests: u64, period_nanos: u64, burst: u64) -> Option<Self> {
        if requests == 0 || burst == 0 {
            return None;
        }
        let interval = period_nanos / requests;
        if interval == 0 {
            return None;
        }
        let tolerance = interval.checked_mul(burst - 1)?;
        tolerance.checked_add(interval)?;
        Some(Gcra { interval, tolerance, debt: 0 })
    }

    /// Nanoseconds between requests at the sustained rate.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The same bucket, allowed to go into debt by up to `units` (the
    /// largest cost one settlement charges).
    pub fn with_debt(self, units: u64) -> Self {
        Gcra { debt: units.saturating_mul(self.interval), ..self }
    }

    fn horizon(&self) -> u64 {
        self.tolerance + self.interval
    }

    fn clamp(&self, tat: Option<u64>, now: u64) -> (u64, bool) {
        let tat = tat.unwrap_or(0);
        let limit = now.saturating_add(self.horizon()).saturating_add(self.debt);
        if tat > limit {
            (limit, true)
        } else {
            (tat, false)
        }
    }

    /// The bucket's parameters: emission interval and tolerance, in
    /// nanoseconds (what a table's identity is made of).
    pub fn params(&self) -> (u64, u64) {
        (self.interval, self.tolerance)
    }

    /// Offers one request arriving at `now` to a bucket whose stored TAT is
    /// `tat` (`None`: never used).
    pub fn decide(&self, tat: Option<u64>, now: u64) -> GcraDecision {
        self.decide_n(tat, now, 1)
    }

    /// Offers a request costing `n` units: admitted when the bucket holds
    /// all of them (with `n = 0`: when it is not in debt).
    pub fn decide_n(&self, tat: Option<u64>, now: u64, n: u64) -> GcraDecision {
        let (tat, clamped) = self.clamp(tat, now);
        let base = tat.max(now);
        let ahead = base - now;
        let need = n.saturating_mul(self.interval);
        let after = ahead.saturating_add(need);
        if after > self.horizon() {
            GcraDecision {
                allowed: false,
                write: clamped.then_some(tat),
                remaining: 0,
                reset_after: ahead,
                retry_after: after - self.horizon(),
            }
        } else {
            GcraDecision {
                allowed: true,
                write: (n > 0 || clamped).then_some(base + need),
                remaining: (self.horizon() - after) / self.interval,
                reset_after: after,
                retry_after: 0,
            }
        }
    }

    /// What [`Gcra::decide`] would say, without the admission being charged:
    /// `remaining` counts this request as not yet admitted.
    pub fn peek(&self, tat: Option<u64>, now: u64) -> GcraDecision {
        self.peek_n(tat, now, 1)
    }

    /// What [`Gcra::decide_n`] would say, nothing charged.
    pub fn peek_n(&self, tat: Option<u64>, now: u64, n: u64) -> GcraDecision {
        let mut d = self.decide_n(tat, now, n);
        if d.allowed {
            let need = n.saturating_mul(self.interval);
            d.remaining += n;
            d.reset_after -= need;
        }
        d.write = None;
        d
    }

    /// The TAT once a request's actual cost `cost` is known, admission
    /// having charged `charged`: moved ahead by the difference (into debt if
    /// it must) or back by it (never past a full bucket).
    pub fn settle(&self, tat: Option<u64>, now: u64, charged: u64, cost: u64) -> u64 {
        let (tat, _) = self.clamp(tat, now);
        let base = tat.max(now);
        if cost >= charged {
            let more = (cost - charged).saturating_mul(self.interval);
            base.saturating_add(more).min(now.saturating_add(self.horizon()).saturating_add(self.debt))
        } else {
            base.saturating_sub((charged - cost).saturating_mul(self.interval)).max(now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    /// Runs `n` requests at `now`, storing as the limiter would; returns admissions.
    fn offer(g: &Gcra, tat: &mut Option<u64>, now: u64, n: u32) -> u32 {
        let mut admitted = 0;
        for _ in 0..n {
            let d = g.decide(*tat, now);
            if let Some(w) = d.write {
                *tat = Some(w);
            }
            admitted += u32::from(d.allowed);
        }
        admitted
    }

    #[test]
    fn first_request_on_a_fresh_bucket_gets_the_whole_burst() {
        let g = Gcra::new(100, S, 50).unwrap();
        let d = g.decide(None, T0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 49);
        let mut tat = None;
        assert_eq!(offer(&g, &mut tat, T0, 1000), 50);
    }

    #[test]
    fn refills_at_the_sustained_rate() {
        let g = Gcra::new(100, S, 50).unwrap();
        let mut tat = None;
        let mut admitted = offer(&g, &mut tat, T0, 1000);
        // One second later, in 1 ms steps, everything offered: 100 more.
        for ms in 1..=1000u64 {
            admitted += offer(&g, &mut tat, T0 + ms * 1_000_000, 10);
        }
        assert_eq!(admitted, 150);
    }

    #[test]
    fn exactly_at_the_boundary_is_admitted_one_nanosecond_before_is_not() {
        let g = Gcra::new(1, S, 1).unwrap();
        let mut tat = None;
        assert_eq!(offer(&g, &mut tat, T0, 1), 1);
        let early = g.decide(tat, T0 + S - 1);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, 1);
        assert!(g.decide(tat, T0 + S).allowed);
    }

    #[test]
    fn long_idle_refills_to_burst_and_no_further() {
        let g = Gcra::new(10, S, 5).unwrap();
        let mut tat = None;
        assert_eq!(offer(&g, &mut tat, T0, 100), 5);
        assert_eq!(offer(&g, &mut tat, T0 + 3600 * S, 100), 5);
    }

    #[test]
    fn clock_stepping_backwards_costs_at_most_one_refill() {
        let g = Gcra::new(10, S, 5).unwrap();
        let mut tat = None;
        assert_eq!(offer(&g, &mut tat, T0, 100), 5);
        // The wall clock steps back an hour.
        let back = T0 - 3600 * S;
        let d = g.decide(tat, back);
        assert!(!d.allowed);
        // The stored TAT is pulled back to an empty bucket at the new time...
        assert_eq!(d.write, Some(back + 5 * (S / 10)));
        tat = d.write;
        // ...so the bucket refills from there: one request per 100 ms, not an hour's wait.
        assert_eq!(offer(&g, &mut tat, back + S / 10, 1), 1);
        assert_eq!(offer(&g, &mut tat, back + 10 * S, 100), 5);
    }

    #[test]
    fn refusal_reports_time_to_next_admission() {
        let g = Gcra::new(100, S, 50).unwrap();
        let mut tat = None;
        offer(&g, &mut tat, T0, 50);
        let d = g.decide(tat, T0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, S / 100);
        assert_eq!(d.reset_after, S / 2);
        assert_eq!(d.write, None);
    }

    #[test]
    fn peek_does_not_charge() {
        let g = Gcra::new(10, S, 3).unwrap();
        let p = g.peek(None, T0);
        assert!(p.allowed);
        assert_eq!(p.remaining, 3);
        assert_eq!(p.write, None);
        assert_eq!(p.reset_after, 0);
    }

    #[test]
    fn a_cost_takes_that_many_units_and_needs_them_all() {
        let g = Gcra::new(10, S, 10).unwrap();
        let d = g.decide_n(None, T0, 4);
        assert!(d.allowed);
        assert_eq!(d.remaining, 6);
        let mut tat = d.write;
        tat = g.decide_n(tat, T0, 6).write;
        let refused = g.decide_n(tat, T0, 3);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 3 * (S / 10), "three units refill in 300 ms");
        assert_eq!(g.peek_n(tat, T0 + 3 * (S / 10), 3).remaining, 3);
        assert!(g.decide_n(tat, T0 + 3 * (S / 10), 3).allowed);
    }

    /// 1000 units a minute, answers costing 400 known only after them: the
    /// first three are admitted (the third takes the bucket into debt), the
    /// fourth waits exactly the debt out.
    #[test]
    fn debt_is_repaid_at_the_sustained_rate() {
        let g = Gcra::new(1000, 60 * S, 1000).unwrap().with_debt(10_000);
        let mut tat = None;
        for i in 0..3 {
            let d = g.decide_n(tat, T0, 0);
            assert!(d.allowed, "answer {i}");
            assert_eq!(d.write, None, "admission at no cost writes nothing");
            tat = Some(g.settle(tat, T0, 0, 400));
        }
        let d = g.decide_n(tat, T0, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 12 * S, "200 units of debt at 60 ms each");
        assert!(!g.decide_n(tat, T0 + 12 * S - 1, 0).allowed);
        assert!(g.decide_n(tat, T0 + 12 * S, 0).allowed);
    }

    #[test]
    fn settling_below_the_estimate_gives_units_back_never_past_full() {
        let g = Gcra::new(10, S, 10).unwrap();
        let tat = g.decide_n(None, T0, 5).write;
        let back = g.settle(tat, T0, 5, 2);
        assert_eq!(g.peek_n(Some(back), T0, 1).remaining, 8);
        assert_eq!(g.settle(tat, T0, 5, 0), T0, "all back: a full bucket");
        assert_eq!(g.settle(Some(T0 - 10 * S), T0, 50, 0), T0);
    }

    #[test]
    fn debt_survives_the_clock_clamp_up_to_its_allowance() {
        let g = Gcra::new(10, S, 1).unwrap().with_debt(100);
        let deep = g.settle(None, T0, 0, 1000);
        assert_eq!(deep, T0 + S / 10 + 100 * (S / 10), "one settlement owes at most the allowance");
        let d = g.decide_n(Some(deep), T0, 0);
        assert_eq!(d.retry_after, 100 * (S / 10));
        assert_eq!(d.write, None, "a debt within the allowance is not a clock step");
    }

    #[test]
    fn rejects_degenerate_parameters() {
        assert!(Gcra::new(0, S, 1).is_none());
        assert!(Gcra::new(1, S, 0).is_none());
        assert!(Gcra::new(2, 1, 1).is_none());
        assert!(Gcra::new(1, u64::MAX, u64::MAX).is_none());
    }
}
