//! The time seam. Filters read the host's clock; tests use `FakeClock`.

#[cfg(any(test, feature = "testing"))]
use std::cell::Cell;

/// A source of the current time in nanoseconds since the Unix epoch.
///
/// Hosts differ in resolution (Envoy: nanoseconds, nginx: milliseconds) and
/// the wall clock can step backwards; every algorithm in this crate tolerates
/// both.
pub trait Clock {
    /// Nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
#[cfg(any(test, feature = "testing"))]
pub struct FakeClock {
    now: Cell<u64>,
}

#[cfg(any(test, feature = "testing"))]
impl FakeClock {
    /// A clock reading `nanos`.
    pub fn at(nanos: u64) -> Self {
        FakeClock { now: Cell::new(nanos) }
    }

    /// Moves the clock forward (or, with [`FakeClock::set`], anywhere).
    pub fn advance(&self, nanos: u64) {
        self.now.set(self.now.get().saturating_add(nanos));
    }

    /// Sets the clock to `nanos`, which may be in the past.
    pub fn set(&self, nanos: u64) {
        self.now.set(nanos);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for FakeClock {
    fn now_nanos(&self) -> u64 {
        self.now.get()
    }
}
