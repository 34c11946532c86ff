//! Proxy-Wasm bundle: any subset of the four policies (rate limiting,
//! circuit breaking, retry headers, sticky sessions) in one module and one
//! pass over each request. The whole filter is
//! `filters_core::bundle::BundleFilter`; this crate is its entry point.

filters_host::filter_entry!(filters_core::observe::Observed<filters_core::bundle::BundleFilter>);
