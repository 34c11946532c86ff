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

/// The ring of sub-buckets, stored as the shared record holds it: for each
/// bucket, its epoch (u64) then its counts (u32: requests, failures, network
/// errors, slow calls, one per status interval, one per latency bin), all
/// little-endian. A completion reads and writes a few words in place; the
/// record is copied in and out whole, never decoded bucket by bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ring {
    bytes: Vec<u8>,
}

/// Counts per bucket before the status intervals.
const FIXED_COUNTS: usize = 4;
const REQUESTS: usize = 0;
const FAILURES: usize = 1;
const NETWORK: usize = 2;
const SLOW: usize = 3;

impl Ring {
    /// The ring's bytes, as written into the record.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A ring of `shape` from a record's bytes; `None` if the length is not
    /// the shape's.
    pub fn from_bytes(shape: &Shape, bytes: &[u8]) -> Option<Ring> {
        (bytes.len() == shape.ring_len()).then(|| Ring { bytes: bytes.to_vec() })
    }

    fn u32_at(&self, at: usize) -> u32 {
        self.bytes.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map_or(0, u32::from_le_bytes)
    }

    fn set_u32(&mut self, at: usize, v: u32) {
        if let Some(b) = self.bytes.get_mut(at..at + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn bump(&mut self, at: usize) {
        let v = self.u32_at(at);
        self.set_u32(at, v.saturating_add(1));
    }

    fn epoch_at(&self, at: usize) -> u64 {
        self.bytes.get(at..at + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_le_bytes)
    }
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
    fn codes(&self) -> usize {
        self.status_bounds.len().saturating_sub(1)
    }

    fn latency_bins(&self) -> usize {
        if self.latency {
            LATENCY_BINS + 1
        } else {
            0
        }
    }

    /// Bytes per bucket: the epoch, then the counts.
    fn bucket_len(&self) -> usize {
        8 + 4 * (FIXED_COUNTS + self.codes() + self.latency_bins())
    }

    /// Bytes of the whole ring.
    pub fn ring_len(&self) -> usize {
        self.buckets as usize * self.bucket_len()
    }

    /// A fresh ring: every bucket at epoch 0, empty.
    pub fn empty(&self) -> Ring {
        Ring { bytes: vec![0; self.ring_len()] }
    }

    /// Where count `i` of the bucket at `base` is.
    fn count_at(base: usize, i: usize) -> usize {
        base + 8 + 4 * i
    }

    fn epoch(&self, now: u64) -> u64 {
        now / self.bucket_ns.max(1)
    }

    /// Adds a sample at `now`.
    pub fn record(&self, ring: &mut Ring, now: u64, s: &Sample) {
        let epoch = self.epoch(now);
        let n = u64::from(self.buckets);
        if n == 0 {
            return;
        }
        let len = self.bucket_len();
        let base = (epoch % n) as usize * len;
        if ring.epoch_at(base) != epoch {
            if let Some(b) = ring.bytes.get_mut(base..base + len) {
                b.fill(0);
                if let Some(e) = b.get_mut(..8) {
                    e.copy_from_slice(&epoch.to_le_bytes());
                }
            }
        }
        ring.bump(Self::count_at(base, REQUESTS));
        for (flag, i) in [(s.failure, FAILURES), (s.network, NETWORK), (s.slow, SLOW)] {
            if flag {
                ring.bump(Self::count_at(base, i));
            }
        }
        if let Some(i) = self.status_interval(s.status) {
            ring.bump(Self::count_at(base, FIXED_COUNTS + i));
        }
        if self.latency {
            let us = s.latency_ns / 1000;
            let bin = LATENCY_BOUNDS_US.iter().position(|&ub| us <= ub).unwrap_or(LATENCY_BINS);
            ring.bump(Self::count_at(base, FIXED_COUNTS + self.codes() + bin));
        }
    }

    fn status_interval(&self, status: u16) -> Option<usize> {
        self.status_bounds.windows(2).position(|w| matches!(w, [lo, hi] if *lo <= status && status < *hi))
    }

    /// Sums the buckets still inside the window at `now`.
    pub fn totals(&self, ring: &Ring, now: u64) -> Totals {
        let epoch = self.epoch(now);
        let n = u64::from(self.buckets);
        let (codes, bins) = (self.codes(), self.latency_bins());
        let mut t = Totals { codes: vec![0; codes], latency: vec![0; bins], ..Totals::default() };
        let len = self.bucket_len();
        for b in 0..self.buckets as usize {
            let base = b * len;
            let (be, requests) = (ring.epoch_at(base), ring.u32_at(Self::count_at(base, REQUESTS)));
            // A bucket is live if its epoch is one of the last n, and not from the future
            // (a clock that stepped back leaves such buckets; they are skipped until reused).
            if be > epoch || epoch - be >= n || requests == 0 {
                continue;
            }
            let count = |i: usize| u64::from(ring.u32_at(Self::count_at(base, i)));
            t.requests += u64::from(requests);
            t.failures += count(FAILURES);
            t.network += count(NETWORK);
            t.slow += count(SLOW);
            for (i, sum) in t.codes.iter_mut().enumerate() {
                *sum += count(FIXED_COUNTS + i);
            }
            for (i, sum) in t.latency.iter_mut().enumerate() {
                *sum += count(FIXED_COUNTS + codes + i);
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
