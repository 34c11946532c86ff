//! Proxy-Wasm sticky-session filter: consistent hashing onto backends, a
//! signed pinning cookie, passive health with failover. The whole filter is
//! `filters_core::sticky::StickyFilter`; this crate is its entry point.

filters_host::filter_entry!(filters_core::observe::Observed<filters_core::sticky::StickyFilter>);
