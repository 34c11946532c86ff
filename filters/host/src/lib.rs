//! The proxy-wasm side of `filters-core`'s seams, shared by every filter.
//!
//! This is the host-compatibility layer between Envoy and nginx
//! (`ngx_wasm_module`): everything that differs between the two hosts is
//! handled here or in the core's store protocol, never in a filter.
//!
//! * Shared data: [`HostStore`] maps proxy-wasm's `get/set_shared_data`
//!   onto [`SharedStore`]; the compare-and-swap protocol that is correct under
//!   both hosts lives in `filters_core::store::update_u64`.
//! * Request headers are fetched in one host call, values as bytes: a header
//!   value that is not UTF-8 (legal on the wire) is decoded lossily instead of
//!   trapping the VM as the SDK's string accessors would.
//! * `source.address` is `ip:port` in Envoy and `ip` in nginx; the core parses
//!   both.
//! * Every host call's error is returned, never unwrapped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use filters_core::config::ConfigError;
use filters_core::request::RequestView;
use filters_core::store::{Entry, SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType, Status};
use std::time::UNIX_EPOCH;

/// Declares a filter's proxy-wasm entry point: the log level and the root
/// context, created with `Default`. The one `unsafe` the SDK's `main!`
/// needs (`#[no_mangle]` exports) is allowed here and nowhere else.
#[macro_export]
macro_rules! filter_entry {
    ($root:ident) => {
        #[allow(unsafe_code)]
        mod proxy_wasm_entry {
            proxy_wasm::main! {{
                proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
                proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
                    Box::new(<super::$root as Default>::default())
                });
            }}
        }
    };
}

/// Reads the plugin configuration and parses it with `parse`. On failure
/// logs the one line that names the field and the reason, and returns
/// `None`: the filter's `on_configure` then returns false and the proxy
/// refuses the configuration.
pub fn load_config<T>(parse: impl FnOnce(&[u8]) -> Result<T, ConfigError>) -> Option<T> {
    let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default();
    match parse(&bytes) {
        Ok(config) => Some(config),
        Err(e) => {
            log::error!("{e}");
            None
        }
    }
}

/// The result of creating a filter's shared-data table at configure time:
/// the number of entries created, or `None` after logging the one line that
/// says what could not be created (the filter then refuses the configuration).
pub fn created_or_log(what: &str, result: Result<u32, StoreError>) -> Option<u32> {
    match result {
        Ok(n) => Some(n),
        Err(e) => {
            log::error!("shared data is unavailable, cannot create {what}: {e}");
            None
        }
    }
}

/// proxy-wasm shared data as a [`SharedStore`].
#[derive(Debug, Default, Clone, Copy)]
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Ok(Some(Entry { value, cas: cas.unwrap_or(0) })),
            Ok((None, _)) | Err(Status::NotFound) => Ok(None),
            Err(status) => Err(StoreError::Host(format!("{status:?}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(status) => Err(StoreError::Host(format!("{status:?}"))),
        }
    }
}

/// The host's wall clock in nanoseconds since the epoch, `None` if the host
/// refuses (the caller then skips its time-based decision).
pub fn now_nanos() -> Option<u64> {
    let t = hostcalls::get_current_time().ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()
}

/// The request headers and, when `with_peer`, the peer address, read in as
/// few host calls as possible.
pub fn request_view(with_peer: bool) -> RequestView {
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let peer = if with_peer { property_string(&["source", "address"]) } else { None };
    RequestView::new(headers, peer)
}

/// Like [`request_view`], but fetching only the named headers (lower case),
/// one host call each: cheaper when a filter needs few or none. Only the
/// first value of each is read.
pub fn request_view_of(names: &[String], with_peer: bool) -> RequestView {
    let headers = names
        .iter()
        .filter_map(|n| {
            let v = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, n).ok()??;
            Some((n.clone(), String::from_utf8_lossy(&v).into_owned()))
        })
        .collect();
    let peer = if with_peer { property_string(&["source", "address"]) } else { None };
    RequestView::new(headers, peer)
}

/// A property as text (nginx returns text; Envoy returns text for addresses).
pub fn property_string(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok()??;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A counter metric; a host that refuses to define it yields a counter that
/// counts nothing rather than a failed configuration.
#[derive(Debug, Clone, Copy)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines (or finds, on a second worker) the counter `name`.
    pub fn define(name: &str) -> Counter {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Counter(Some(id)),
            Err(status) => {
                log::warn!("could not define metric {name}: {status:?}");
                Counter(None)
            }
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        if let (Some(id), Ok(n)) = (self.0, i64::try_from(n)) {
            if n > 0 {
                let _ = hostcalls::increment_metric(id, n);
            }
        }
    }
}

/// A gauge metric; like [`Counter`], a refused definition yields a gauge
/// that records nothing.
#[derive(Debug, Clone, Copy)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// Defines (or finds) the gauge `name`.
    pub fn define(name: &str) -> Gauge {
        match hostcalls::define_metric(MetricType::Gauge, name) {
            Ok(id) => Gauge(Some(id)),
            Err(status) => {
                log::warn!("could not define metric {name}: {status:?}");
                Gauge(None)
            }
        }
    }

    /// Sets the value.
    pub fn set(&self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// A response header's value (first one).
pub fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// A property holding an integer: Envoy encodes integers as 8 little-endian
/// bytes, nginx as decimal text; both are accepted.
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes = hostcalls::get_property(path.to_vec()).ok()??;
    parse_integer_property(&bytes)
}

/// See [`property_u64`]: decimal text first (nginx), else 8 little-endian
/// bytes (Envoy). Envoy's encoding of a status or flag set is never all ASCII
/// digits, so the two cannot be confused.
pub fn parse_integer_property(bytes: &[u8]) -> Option<u64> {
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(bytes).ok()?.parse().ok();
    }
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::parse_integer_property;

    #[test]
    fn integer_properties_of_both_hosts() {
        assert_eq!(parse_integer_property(&503u64.to_le_bytes()), Some(503));
        assert_eq!(parse_integer_property(b"503"), Some(503));
        assert_eq!(parse_integer_property(b"12345678"), Some(12_345_678));
        assert_eq!(parse_integer_property(b""), None);
        assert_eq!(parse_integer_property(b"50x"), None);
    }
}

/// Sends a local reply; returns false if the host refused.
pub fn send_local_reply(status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    hostcalls::send_http_response(u32::from(status), headers, Some(body)).is_ok()
}

/// Adds a response header; errors are ignored (the response goes out without it).
pub fn add_response_header(name: &str, value: &str) {
    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
}
