//! The retry budget (Finagle's and Linkerd's model): retries may add at
//! most `ratio` of the request rate, plus `min_per_second`, over `window`.
//!
//! The budget is a ring of sub-buckets in one shared-data record: each holds
//! the requests seen and the retries spent in its slice of time, so old
//! traffic ages out. At any moment
//!
//! ```text
//! available = floor(ratio x requests_in_window + min_per_second x window_seconds) - retries_in_window
//! ```
//!
//! A request reserves the retries its policy allows, up to what is available,
//! when it starts (one compare-and-swap, so concurrent requests on different
//! workers cannot spend the same tokens), and gives back what it did not use
//! once the proxy reports how many attempts it made. Under a total outage the
//! upstream therefore sees at most about `(1 + ratio)` times the request rate
//! plus `min_per_second` retries per second, instead of `1 + max_retries`
//! times.
//!
//! # Refunds go back where they were charged
//!
//! A refund goes into the slice its reservation was charged to, and only
//! while that slice is still in the window. A reservation therefore holds
//! budget for one window at most (its slice then ages out, and the tokens
//! with it), and a request that is held open longer, for example by a client
//! that sends its body slowly, cannot give back tokens that have already
//! aged out: refunding into the current slice instead would mint retries the
//! budget never had.

/// A budget's ring: up to 16 sub-buckets kept inline (the default window
/// has 10), so a request's read and write allocate nothing.
pub type Ring = smallvec::SmallVec<[Slice; 16]>;

/// A ring's encoding, in a buffer from this thread's pool.
pub type Encoded = crate::pool::Bytes;

/// The budget's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Retries allowed per request, on average.
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic.
    pub min_per_second: u32,
    /// Window length in nanoseconds.
    pub window_ns: u64,
    /// Sub-buckets of the window.
    pub buckets: u32,
}

/// One sub-bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slice {
    /// Which bucket-width interval since the epoch it holds.
    pub epoch: u64,
    /// Requests that deposited into the budget.
    pub requests: u32,
    /// Retries reserved minus retries given back (never below zero: a
    /// refund only returns what its own slice was charged).
    pub retries: i64,
}

impl Budget {
    fn bucket_ns(&self) -> u64 {
        (self.window_ns / u64::from(self.buckets.max(1))).max(1)
    }

    /// A fresh ring.
    pub fn empty(&self) -> Ring {
        smallvec::smallvec![Slice::default(); self.buckets as usize]
    }

    fn current<'a>(&self, ring: &'a mut [Slice], now: u64) -> Option<&'a mut Slice> {
        let epoch = now / self.bucket_ns();
        let n = ring.len() as u64;
        let slice = ring.get_mut((epoch % n.max(1)) as usize)?;
        if slice.epoch != epoch {
            *slice = Slice { epoch, ..Slice::default() };
        }
        Some(slice)
    }

    /// Retries available now.
    pub fn available(&self, ring: &[Slice], now: u64) -> i64 {
        let epoch = now / self.bucket_ns();
        let n = u64::from(self.buckets);
        let (mut requests, mut retries) = (0u64, 0i64);
        for s in ring.iter().filter(|s| s.epoch <= epoch && epoch - s.epoch < n) {
            requests += u64::from(s.requests);
            retries += s.retries;
        }
        let window_secs = self.window_ns as f64 / 1e9;
        let allowance = (self.ratio * requests as f64 + f64::from(self.min_per_second) * window_secs).floor() as i64;
        allowance - retries
    }

    /// Records a request and reserves up to `want` retries for it; returns
    /// how many were granted.
    pub fn reserve(&self, ring: &mut [Slice], now: u64, want: u32) -> u32 {
        if let Some(s) = self.current(ring, now) {
            s.requests = s.requests.saturating_add(1);
        }
        let grant = self.available(ring, now).clamp(0, i64::from(want)) as u32;
        if let Some(s) = self.current(ring, now) {
            s.retries += i64::from(grant);
        }
        grant
    }

    /// Gives back `n` retries that were reserved at `reserved_at` and not
    /// used: into the slice they were charged to, while it is still in the
    /// window at `now`; otherwise they are gone (see the module docs).
    pub fn refund(&self, ring: &mut [Slice], reserved_at: u64, now: u64, n: u32) {
        let (charged, current) = (reserved_at / self.bucket_ns(), now / self.bucket_ns());
        if charged > current || current - charged >= u64::from(self.buckets) {
            return;
        }
        let len = ring.len() as u64;
        if let Some(s) = ring.get_mut((charged % len.max(1)) as usize).filter(|s| s.epoch == charged) {
            s.retries = (s.retries - i64::from(n)).max(0);
        }
    }

    /// Serialises a ring.
    pub fn encode(&self, ring: &[Slice]) -> Encoded {
        let mut out = Encoded::with_capacity(2 + ring.len() * 20);
        out.extend_from_slice(&(ring.len() as u16).to_le_bytes());
        for s in ring {
            out.extend_from_slice(&s.epoch.to_le_bytes());
            out.extend_from_slice(&s.requests.to_le_bytes());
            out.extend_from_slice(&s.retries.to_le_bytes());
        }
        out
    }

    /// Parses a ring; `None` for anything not written with this many buckets.
    pub fn decode(&self, bytes: &[u8]) -> Option<Ring> {
        let (len, mut rest) = bytes.split_first_chunk::<2>()?;
        if u16::from_le_bytes(*len) as u32 != self.buckets {
            return None;
        }
        let mut ring = Ring::with_capacity(self.buckets as usize);
        for _ in 0..self.buckets {
            let (e, r) = rest.split_first_chunk::<8>()?;
            let (q, r) = r.split_first_chunk::<4>()?;
            let (t, r) = r.split_first_chunk::<8>()?;
            ring.push(Slice {
                epoch: u64::from_le_bytes(*e),
                requests: u32::from_le_bytes(*q),
                retries: i64::from_le_bytes(*t),
            });
            rest = r;
        }
        rest.is_empty().then_some(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_800_000_000 * S;

    fn budget() -> Budget {
        Budget { ratio: 0.2, min_per_second: 10, window_ns: 10 * S, buckets: 10 }
    }

    #[test]
    fn starts_with_the_floor_then_grows_with_traffic() {
        let b = budget();
        let ring = b.empty();
        assert_eq!(b.available(&ring, T0), 100, "10/s x 10 s");
        let mut ring = b.empty();
        for _ in 0..50 {
            b.reserve(&mut ring, T0, 0);
        }
        assert_eq!(b.available(&ring, T0), 110);
    }

    #[test]
    fn total_outage_spends_at_most_ratio_plus_floor() {
        // 100 requests/s for 60 s, each wanting 3 retries, all failing.
        let b = budget();
        let mut ring = b.empty();
        let mut retries = 0u64;
        for i in 0..6000u64 {
            let now = T0 + i * S / 100;
            retries += u64::from(b.reserve(&mut ring, now, 3));
        }
        // At most 0.2 x 6000 + 10/s x 60 s, plus one window's floor that the
        // first window spends up front.
        let bound = (0.2 * 6000.0 + 10.0 * 60.0 + 100.0) as u64;
        assert!(retries <= bound, "{retries} retries > {bound}");
        assert!(retries >= 1500, "the budget should still allow retries: {retries}");
    }

    #[test]
    fn unused_retries_are_refunded() {
        let b = Budget { ratio: 0.0, min_per_second: 1, window_ns: 10 * S, buckets: 10 };
        let mut ring = b.empty();
        assert_eq!(b.reserve(&mut ring, T0, 7), 7);
        assert_eq!(b.reserve(&mut ring, T0, 7), 3);
        assert_eq!(b.reserve(&mut ring, T0, 7), 0);
        b.refund(&mut ring, T0, T0 + S, 6);
        assert_eq!(b.reserve(&mut ring, T0 + S, 7), 6);
    }

    /// A client that holds its requests open past the window must not turn
    /// their unused reservations into retries the budget never had.
    #[test]
    fn refunds_after_the_window_mint_nothing() {
        let b = Budget { ratio: 0.0, min_per_second: 1, window_ns: 10 * S, buckets: 10 };
        let mut ring = b.empty();
        assert_eq!(b.reserve(&mut ring, T0, 10), 10);
        // Held 12 s: the reservation's slice has aged out.
        let later = T0 + 12 * S;
        b.refund(&mut ring, T0, later, 10);
        assert_eq!(b.available(&ring, later), 10, "the floor, nothing more");
        // A refund can never return more than its slice was charged.
        assert_eq!(b.reserve(&mut ring, later, 4), 4);
        b.refund(&mut ring, later, later, 100);
        assert_eq!(b.available(&ring, later), 10);
    }

    #[test]
    fn spent_retries_age_out_of_the_window() {
        let b = Budget { ratio: 0.0, min_per_second: 1, window_ns: 10 * S, buckets: 10 };
        let mut ring = b.empty();
        assert_eq!(b.reserve(&mut ring, T0, 10), 10);
        assert_eq!(b.reserve(&mut ring, T0 + 9 * S, 10), 0);
        assert_eq!(b.reserve(&mut ring, T0 + 10 * S, 10), 10);
    }

    #[test]
    fn encode_decode_round_trip() {
        let b = budget();
        let mut ring = b.empty();
        b.reserve(&mut ring, T0, 3);
        b.refund(&mut ring, T0, T0 + 3 * S, 2);
        let bytes = b.encode(&ring);
        assert_eq!(b.decode(&bytes), Some(ring));
        assert_eq!(b.decode(bytes.get(..bytes.len() - 1).unwrap()), None);
        assert_eq!(Budget { buckets: 5, ..b }.decode(&bytes), None);
    }
}
