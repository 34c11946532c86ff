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

/// One limit's parameters, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
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
        Some(Gcra { interval, tolerance })
    }

    /// Nanoseconds between requests at the sustained rate.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    fn horizon(&self) -> u64 {
        self.tolerance + self.interval
    }

    fn clamp(&self, tat: Option<u64>, now: u64) -> (u64, bool) {
        let tat = tat.unwrap_or(0);
        let limit = now.saturating_add(self.horizon());
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
        let (tat, clamped) = self.clamp(tat, now);
        let base = tat.max(now);
        let ahead = base - now;
        if ahead > self.tolerance {
            GcraDecision {
                allowed: false,
                write: clamped.then_some(tat),
                remaining: 0,
                reset_after: ahead,
                retry_after: ahead - self.tolerance,
            }
        } else {
            let ahead = ahead + self.interval;
            GcraDecision {
                allowed: true,
                write: Some(base + self.interval),
                remaining: (self.horizon() - ahead) / self.interval,
                reset_after: ahead,
                retry_after: 0,
            }
        }
    }

    /// What [`Gcra::decide`] would say, without the admission being charged:
    /// `remaining` counts this request as not yet admitted.
    pub fn peek(&self, tat: Option<u64>, now: u64) -> GcraDecision {
        let mut d = self.decide(tat, now);
        if d.allowed {
            d.remaining += 1;
            d.reset_after -= self.interval;
        }
        d.write = None;
        d
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
    fn rejects_degenerate_parameters() {
        assert!(Gcra::new(0, S, 1).is_none());
        assert!(Gcra::new(1, S, 0).is_none());
        assert!(Gcra::new(2, 1, 1).is_none());
        assert!(Gcra::new(1, u64::MAX, u64::MAX).is_none());
    }
}
