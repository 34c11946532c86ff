//! Host-independent core of the resilience filters.
//!
//! Nothing here depends on proxy-wasm: the filter crates are thin glue that
//! implement the two seams defined here over host calls.
//!
//! * [`clock::Clock`]: the current time, injected so that every
//!   timing-dependent decision is tested with `clock::FakeClock` (tests).
//! * [`store::SharedStore`]: the proxy's shared key-value store, whose one
//!   write operation is a compare-and-swap. [`store::update_bytes`] is the
//!   "read, decide, replace" loop every filter uses, written so that it is
//!   correct under both Envoy's and nginx's compare-and-swap rules.
//!
//! What only tests use (the recording host and its exchanges, the fuzz
//! bodies, the in-memory store and fake clock, test-only constructors) is
//! compiled for this crate's own tests and behind the `testing` feature
//! (benches, fuzz targets, the compute probe), never into a shipped module.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod breaker;
pub mod bundle;
pub mod clock;
pub mod config;
pub mod duration;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
pub mod hash;
pub mod headers;
pub mod host;
pub mod matcher;
pub mod modules;
pub mod net;
pub mod observe;
pub mod path;
pub mod pool;
pub mod ratelimit;
pub mod request;
pub mod retry;
#[cfg(feature = "schema")]
pub mod schema;
pub mod sticky;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod upstream;
pub mod usage;
