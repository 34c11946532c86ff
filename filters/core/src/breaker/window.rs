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
//! `LatencyAtQuantileMS` is used, counts per latency interval, cut at the
//! whole milliseconds the expression compares quantiles with: which side of
//! each threshold a quantile falls is then exact ([`latency_at_least`]).

/// The ring of sub-buckets, stored as the shared record holds it: for each
/// bucket, its epoch (u64) then its counts (u32: requests, failures, network
/// errors, slow calls, one per status interval, one per latency interval), all
/// little-endian. A completion reads and writes a few words in place; the
/// record is copied in and out whole, never decoded bucket by bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ring {
    /// From this thread's pool: decoding a record allocates nothing.
    bytes: crate::pool::Bytes,
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
        (bytes.len() == shape.ring_len()).then(|| {
            let mut ring = crate::pool::Bytes::with_capacity(bytes.len());
            ring.extend_from_slice(bytes);
            Ring { bytes: ring }
        })
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
    /// Sorted latency bounds in whole milliseconds; interval `i` is
    /// `[bounds[i-1], bounds[i])`, the first from 0, the last to infinity.
    /// Empty: no latency kept.
    pub latency_bounds_ms: Vec<u64>,
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
    /// Per status interval (inline up to 8: no allocation per request).
    pub codes: smallvec::SmallVec<[u64; 8]>,
    /// Per latency interval (inline up to 16).
    pub latency: smallvec::SmallVec<[u64; 16]>,
}

impl Shape {
    fn codes(&self) -> usize {
        self.status_bounds.len().saturating_sub(1)
    }

    /// Latency intervals per bucket (0: none kept).
    pub fn latency_bins(&self) -> usize {
        if self.latency_bounds_ms.is_empty() {
            0
        } else {
            self.latency_bounds_ms.len() + 1
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
        let mut bytes = crate::pool::Bytes::with_capacity(self.ring_len());
        bytes.resize(self.ring_len(), 0);
        Ring { bytes }
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
        if !self.latency_bounds_ms.is_empty() {
            let bin = self.latency_bounds_ms.partition_point(|&b| b.saturating_mul(1_000_000) <= s.latency_ns);
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
        let mut t =
            Totals { codes: smallvec::smallvec![0; codes], latency: smallvec::smallvec![0; bins], ..Totals::default() };
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

/// Whether the latency at quantile `q` (0 < q <= 100), in whole
/// milliseconds, is at least `ms`, over the per-interval counts of `shape`.
/// `ms` is one of the shape's bounds (the expression's thresholds put them
/// there; another value is answered for the nearest bound below it).
///
/// The quantile is the `k`-th smallest latency, `k = round(q / 100 x N)`
/// (as Traefik's HDR histogram counts it; `k = 0` reads as 0 ms), and it is
/// at least `ms` exactly when fewer than `k` samples are below `ms`.
pub fn latency_at_least(shape: &Shape, counts: &[u64], q: f64, ms: u64) -> bool {
    if ms == 0 {
        return true;
    }
    let total: u64 = counts.iter().sum();
    let k = ((q / 100.0) * total as f64 + 0.5) as u64;
    if k == 0 {
        return false;
    }
    let below_intervals = shape.latency_bounds_ms.partition_point(|&b| b <= ms);
    let below: u64 = counts.iter().take(below_intervals).sum();
    below < k
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn shape(latency: bool) -> Shape {
        let latency_bounds_ms = if latency { vec![20, 100, 101] } else { Vec::new() };
        Shape { buckets: 10, bucket_ns: 1000 * MS, status_bounds: vec![0, 500, 600, 1000], latency_bounds_ms }
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
    fn quantiles_are_placed_exactly_against_the_thresholds() {
        let s = shape(true);
        let mut ring = s.empty();
        // 10 samples: 5, 10, ..., 50 ms, then 100.9 ms (reads as 100) and 101 ms.
        for ms in [5u64, 10, 15, 20, 25, 30, 35, 40, 45, 50] {
            s.record(&mut ring, T0, &Sample { latency_ns: ms * MS, ..ok(200) });
        }
        s.record(&mut ring, T0, &Sample { latency_ns: 100 * MS + 900_000, ..ok(200) });
        s.record(&mut ring, T0, &Sample { latency_ns: 101 * MS, ..ok(200) });
        let t = s.totals(&ring, T0);
        assert_eq!(t.latency.as_slice(), [3, 7, 1, 1], "below 20, [20, 100), [100, 101), from 101");
        // k = round(0.5 x 12) = 6: the 6th smallest is 30 ms.
        assert!(latency_at_least(&s, &t.latency, 50.0, 20));
        assert!(!latency_at_least(&s, &t.latency, 50.0, 100));
        // k = round(0.917 x 12) = 11: 100.9 ms, which reads as 100.
        assert!(latency_at_least(&s, &t.latency, 91.7, 100));
        assert!(!latency_at_least(&s, &t.latency, 91.7, 101));
        // k = 12: 101 ms.
        assert!(latency_at_least(&s, &t.latency, 100.0, 101));
        // No samples, or k rounding to 0: 0 ms.
        assert!(!latency_at_least(&s, &[0, 0, 0, 0], 50.0, 20));
        assert!(latency_at_least(&s, &[0, 0, 0, 0], 50.0, 0));
    }
}
