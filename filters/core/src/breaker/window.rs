//! The sliding window: a fixed ring of sub-buckets, each covering
//! `window / buckets` of time. A sample lands in the bucket of its time; a
//! bucket whose time has passed out of the window is zeroed when reused and
//! ignored when summing. Memory is fixed by the configuration, whatever the
//! traffic.
//!
//! Besides request, failure, network-error and slow-call counts, a bucket
//! keeps what the configured expression needs and nothing more: counts per
//! status interval (the intervals cut at every bound any
//! `ResponseCodeRatio` names, so every ratio is exact) and, only when
//! `LatencyAtQuantileMS` is used, a latency histogram.

/// Upper bounds of the latency histogram's bins, in microseconds: geometric,
/// ratio 1.25, from 250 us to about 54 s; one more bin holds everything
/// slower. A quantile is interpolated inside its bin, so it is within the
/// bin's width (25%) of the true value.
pub fn latency_bounds_us() -> &'static [u64] {
    &LATENCY_BOUNDS_US
}

const LATENCY_BINS: usize = 56;
static LATENCY_BOUNDS_US: [u64; LATENCY_BINS] = latency_table();

// Evaluated at compile time (it initialises a static): an index out of
// bounds would fail the build, never a request.
#[allow(clippy::indexing_slicing)]
const fn latency_table() -> [u64; LATENCY_BINS] {
    let mut t = [0u64; LATENCY_BINS];
    // 250 us x 1.25^i, in integers (x 5 / 4 per step).
    let mut v: u64 = 250_000; // nanoseconds
    let mut i = 0;
    while i < LATENCY_BINS {
        t[i] = v / 1000;
        v = v * 5 / 4;
        i += 1;
    }
    t
}

/// One sub-bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Which bucket-width interval since the epoch this bucket holds.
    pub epoch: u64,
    /// Requests completed.
    pub requests: u32,
    /// Requests that counted as failures (status or network).
    pub failures: u32,
    /// Requests that failed at the network level.
    pub network: u32,
    /// Requests slower than the slow-call threshold.
    pub slow: u32,
    /// Requests per status interval.
    pub codes: Vec<u32>,
    /// Requests per latency bin (empty when no quantile is configured).
    pub latency: Vec<u32>,
}

/// One completed request, as the window records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Response status (0 when none).
    pub status: u16,
    /// Counted as a failure.
    pub failure: bool,
    /// A network-level failure (connect failure, reset, timeout).
    pub network: bool,
    /// Slower than the slow-call threshold.
    pub slow: bool,
    /// Time to the response, in nanoseconds.
    pub latency_ns: u64,
}

/// The window's shape, fixed by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Number of sub-buckets.
    pub buckets: u32,
    /// Nanoseconds each covers.
    pub bucket_ns: u64,
    /// Sorted status bounds; interval `i` is `[bounds[i], bounds[i+1])`.
    pub status_bounds: Vec<u16>,
    /// Keep a latency histogram.
    pub latency: bool,
}

/// Sums over the buckets inside the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Failures.
    pub failures: u64,
    /// Network failures.
    pub network: u64,
    /// Slow calls.
    pub slow: u64,
    /// Per status interval.
    pub codes: Vec<u64>,
    /// Per latency bin.
    pub latency: Vec<u64>,
}

impl Shape {
    fn empty_bucket(&self, epoch: u64) -> Bucket {
        Bucket {
            epoch,
            codes: vec![0; self.status_bounds.len().saturating_sub(1)],
            latency: if self.latency { vec![0; LATENCY_BINS + 1] } else { Vec::new() },
            ..Bucket::default()
        }
    }

    /// A fresh ring.
    pub fn empty(&self) -> Vec<Bucket> {
        (0..self.buckets).map(|_| self.empty_bucket(0)).collect()
    }

    fn epoch(&self, now: u64) -> u64 {
        now / self.bucket_ns.max(1)
    }

    /// Adds a sample at `now`.
    pub fn record(&self, ring: &mut [Bucket], now: u64, s: &Sample) {
        let epoch = self.epoch(now);
        let n = ring.len() as u64;
        if n == 0 {
            return;
        }
        let Some(b) = ring.get_mut((epoch % n) as usize) else { return };
        if b.epoch != epoch {
            *b = self.empty_bucket(epoch);
        }
        b.requests = b.requests.saturating_add(1);
        b.failures = b.failures.saturating_add(u32::from(s.failure));
        b.network = b.network.saturating_add(u32::from(s.network));
        b.slow = b.slow.saturating_add(u32::from(s.slow));
        if let Some(i) = self.status_interval(s.status) {
            if let Some(c) = b.codes.get_mut(i) {
                *c = c.saturating_add(1);
            }
        }
        if self.latency {
            let us = s.latency_ns / 1000;
            let bin = LATENCY_BOUNDS_US.iter().position(|&ub| us <= ub).unwrap_or(LATENCY_BINS);
            if let Some(c) = b.latency.get_mut(bin) {
                *c = c.saturating_add(1);
            }
        }
    }

    fn status_interval(&self, status: u16) -> Option<usize> {
        self.status_bounds.windows(2).position(|w| matches!(w, [lo, hi] if *lo <= status && status < *hi))
    }

    /// Sums the buckets still inside the window at `now`.
    pub fn totals(&self, ring: &[Bucket], now: u64) -> Totals {
        let epoch = self.epoch(now);
        let n = u64::from(self.buckets);
        let mut t = Totals {
            codes: vec![0; self.status_bounds.len().saturating_sub(1)],
            latency: if self.latency { vec![0; LATENCY_BINS + 1] } else { Vec::new() },
            ..Totals::default()
        };
        // A bucket is live if its epoch is one of the last n, and not from the future
        // (a clock that stepped back leaves such buckets; they are skipped until reused).
        for b in ring.iter().filter(|b| b.epoch <= epoch && epoch - b.epoch < n && b.requests > 0) {
            t.requests += u64::from(b.requests);
            t.failures += u64::from(b.failures);
            t.network += u64::from(b.network);
            t.slow += u64::from(b.slow);
            for (sum, c) in t.codes.iter_mut().zip(&b.codes) {
                *sum += u64::from(*c);
            }
            for (sum, c) in t.latency.iter_mut().zip(&b.latency) {
                *sum += u64::from(*c);
            }
        }
        t
    }

    /// Responses with a status in `[from, to)`.
    pub fn count_status(&self, totals: &Totals, from: u16, to: u16) -> u64 {
        self.status_bounds
            .windows(2)
            .zip(&totals.codes)
            .filter(|(w, _)| matches!(w, [lo, hi] if *lo >= from && *hi <= to))
            .map(|(_, c)| *c)
            .sum()
    }
}

/// The latency at quantile `q` (0 < q <= 100) in milliseconds, interpolated
/// inside its histogram bin; 0 when there are no samples.
pub fn latency_quantile_ms(hist: &[u64], q: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((q / 100.0) * total as f64).ceil().max(1.0);
    let mut seen = 0.0;
    for (i, &c) in hist.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let c = c as f64;
        if seen + c >= rank {
            let lo = if i == 0 { 0 } else { LATENCY_BOUNDS_US.get(i - 1).copied().unwrap_or(0) };
            let Some(&hi) = LATENCY_BOUNDS_US.get(i) else {
                return lo as f64 / 1000.0;
            };
            let frac = (rank - seen) / c;
            return (lo as f64 + (hi - lo) as f64 * frac) / 1000.0;
        }
        seen += c;
    }
    LATENCY_BOUNDS_US.last().copied().unwrap_or(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn shape(latency: bool) -> Shape {
        Shape { buckets: 10, bucket_ns: 1000 * MS, status_bounds: vec![0, 500, 600, 1000], latency }
    }

    fn ok(status: u16) -> Sample {
        Sample { status, failure: status >= 500, network: false, slow: false, latency_ns: 5 * MS }
    }

    const T0: u64 = 1_800_000_000_000_000_000;

    #[test]
    fn samples_age_out_bucket_by_bucket() {
        let s = shape(false);
        let mut ring = s.empty();
        s.record(&mut ring, T0, &ok(200));
        s.record(&mut ring, T0 + 3000 * MS, &ok(503));
        assert_eq!(s.totals(&ring, T0 + 3000 * MS).requests, 2);
        // At T0 + 10 s the first bucket has left the 10 s window.
        let t = s.totals(&ring, T0 + 10_000 * MS);
        assert_eq!((t.requests, t.failures), (1, 1));
        assert_eq!(s.totals(&ring, T0 + 13_000 * MS).requests, 0);
        // Reusing a slot starts it from zero.
        s.record(&mut ring, T0 + 10_000 * MS, &ok(200));
        assert_eq!(s.totals(&ring, T0 + 10_000 * MS).failures, 1);
        assert_eq!(s.totals(&ring, T0 + 10_000 * MS).requests, 2);
    }

    #[test]
    fn window_edge_is_exact() {
        let s = shape(false);
        let mut ring = s.empty();
        s.record(&mut ring, T0, &ok(200));
        let bucket_start = T0 / (1000 * MS) * (1000 * MS);
        assert_eq!(s.totals(&ring, bucket_start + 10_000 * MS - 1).requests, 1);
        assert_eq!(s.totals(&ring, bucket_start + 10_000 * MS).requests, 0);
    }

    #[test]
    fn clock_stepping_back_ignores_future_buckets() {
        let s = shape(false);
        let mut ring = s.empty();
        s.record(&mut ring, T0 + 5000 * MS, &ok(500));
        assert_eq!(s.totals(&ring, T0).requests, 0);
    }

    #[test]
    fn status_intervals_make_ratios_exact() {
        let s = shape(false);
        let mut ring = s.empty();
        for st in [200, 200, 404, 500, 503, 599] {
            s.record(&mut ring, T0, &ok(st));
        }
        let t = s.totals(&ring, T0);
        assert_eq!(s.count_status(&t, 500, 600), 3);
        assert_eq!(s.count_status(&t, 0, 600), 6);
        assert_eq!(s.count_status(&t, 0, 500), 3);
    }

    #[test]
    fn latency_quantile_is_within_a_bin() {
        let s = shape(true);
        let mut ring = s.empty();
        for ms in [10u64, 20, 300, 300, 300] {
            s.record(&mut ring, T0, &Sample { latency_ns: ms * MS, ..ok(200) });
        }
        let t = s.totals(&ring, T0);
        let p50 = latency_quantile_ms(&t.latency, 50.0);
        assert!((240.0..=300.0 * 1.25).contains(&p50), "p50 {p50}");
        let p20 = latency_quantile_ms(&t.latency, 20.0);
        assert!((8.0..=12.5).contains(&p20), "p20 {p20}");
        assert_eq!(latency_quantile_ms(&[], 50.0), 0.0);
        // Slower than the last bound: reported as the last bound.
        let mut ring = s.empty();
        s.record(&mut ring, T0, &Sample { latency_ns: 600_000 * MS, ..ok(200) });
        let p = latency_quantile_ms(&s.totals(&ring, T0).latency, 99.0);
        assert!(p > 50_000.0, "{p}");
    }

    #[test]
    fn latency_bounds_grow_by_a_quarter() {
        let b = latency_bounds_us();
        assert_eq!(b.first(), Some(&250));
        assert!(b.windows(2).all(|w| matches!(w, [a, c] if *c > *a && *c <= a * 5 / 4 + 1)));
        assert!(*b.last().unwrap_or(&0) > 50_000_000);
    }
}
