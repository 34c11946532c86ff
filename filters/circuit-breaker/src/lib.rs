//! Proxy-Wasm circuit-breaker filter: closed / open / half-open per upstream,
//! exact across the proxy's workers. The whole filter is
//! `filters_core::breaker::BreakerFilter`; this crate is its entry point.

filters_host::filter_entry!(filters_core::observe::Observed<filters_core::breaker::BreakerFilter>);
