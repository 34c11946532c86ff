//! Proxy-Wasm rate-limit filter: GCRA per key, exact across the proxy's
//! workers, and global limits through the rate limit service protocol. The
//! whole filter is `filters_core::ratelimit::RateLimitFilter`; this crate is
//! its entry point.

#[cfg(not(feature = "trap-on-demand"))]
filters_host::filter_entry!(filters_core::observe::Observed<filters_core::ratelimit::RateLimitFilter>);

// Test-only build (`make build` puts it in target/trap-test): traps the VM on
// request, so the integration tests can show Envoy's `failure_policy`.
#[cfg(feature = "trap-on-demand")]
filters_host::filter_entry!(
    filters_host::TrapOnDemand<filters_core::observe::Observed<filters_core::ratelimit::RateLimitFilter>>
);
