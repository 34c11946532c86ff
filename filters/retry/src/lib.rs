//! Proxy-Wasm retry-headers filter: per-route retry policy as Envoy retry
//! headers, under a retry budget shared by the whole proxy. The whole filter
//! is `filters_core::retry::RetryFilter`; this crate is its entry point.

filters_host::filter_entry!(filters_core::observe::Observed<filters_core::retry::RetryFilter>);
