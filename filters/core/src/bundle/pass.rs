//! One pass over a callback: a [`Host`] that remembers, for the length of
//! one callback, what the policies of a bundle read, so that the first
//! policy pays for a header, a property or the clock and the others read it
//! for free.
//!
//! What is remembered: request headers (all of them in one call when any
//! enabled policy needs them all, else each by name), properties (integer
//! ones as integers), response headers and the clock. Shared data is never
//! remembered: every read of it is part of a compare-and-swap. A write
//! through the pass (a request header set or removed) updates what it
//! remembers.

use crate::clock::Clock;
use crate::headers::Headers;
use crate::host::{Call, CallReply, DefinedMetric, Host, HostKind, MetricKind};
use crate::store::{Entry, SharedStore, StoreError};
use std::cell::{Cell, RefCell};

/// A host seen through one callback of a bundle.
pub struct Pass<'h, H: Host> {
    host: &'h H,
    /// Read all request headers in one call (some policy needs them all).
    all_at_once: bool,
    all_headers: RefCell<Option<Headers>>,
    headers: RefCell<Vec<(String, Option<String>)>>,
    properties: RefCell<Vec<(String, Option<Vec<u8>>)>>,
    integers: RefCell<Vec<(String, Option<u64>)>>,
    response: RefCell<Vec<(String, Option<String>)>>,
    now: Cell<Option<u64>>,
}

impl<'h, H: Host> Pass<'h, H> {
    /// A pass over `host`; with `all_headers`, the request headers are read
    /// in one call on first use (some policy needs them all).
    pub fn new(host: &'h H, all_headers: bool) -> Self {
        Pass {
            host,
            all_at_once: all_headers,
            all_headers: RefCell::new(None),
            headers: RefCell::default(),
            properties: RefCell::default(),
            integers: RefCell::default(),
            response: RefCell::default(),
            now: Cell::new(None),
        }
    }

    /// Reads every request header once per callback.
    fn fetch_all(&self) {
        if self.all_headers.borrow().is_none() {
            *self.all_headers.borrow_mut() = Some(self.host.request_headers());
        }
    }

    fn all(&self) -> Headers {
        self.fetch_all();
        self.all_headers.borrow().clone().unwrap_or_default()
    }
}

/// Is `key` (a remembered property's, dotted) the property at `path`?
fn is_path(key: &str, path: &[&str]) -> bool {
    key.split('.').eq(path.iter().copied())
}

/// The value remembered under `key`, or `read()`, then remembered.
fn remember<V: Clone>(list: &RefCell<Vec<(String, V)>>, key: &str, read: impl FnOnce() -> V) -> V {
    remember_by(list, |k| k == key, || key.to_string(), read)
}

/// The value remembered under the key `is_key` accepts, or `read()`, then
/// remembered under `key()` (built only then: a lookup allocates nothing).
fn remember_by<V: Clone>(
    list: &RefCell<Vec<(String, V)>>,
    is_key: impl Fn(&str) -> bool,
    key: impl FnOnce() -> String,
    read: impl FnOnce() -> V,
) -> V {
    if let Some((_, v)) = list.borrow().iter().find(|(k, _)| is_key(k)) {
        return v.clone();
    }
    let v = read();
    list.borrow_mut().push((key(), v.clone()));
    v
}

impl<H: Host> Clock for Pass<'_, H> {
    fn now_nanos(&self) -> u64 {
        if let Some(now) = self.now.get() {
            return now;
        }
        let now = self.host.now_nanos();
        self.now.set(Some(now));
        now
    }
}

impl<H: Host> SharedStore for Pass<'_, H> {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.host.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
        self.host.set(key, value, cas)
    }

    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
        self.host.get_into(key, out)
    }
}

impl<H: Host> Host for Pass<'_, H> {
    fn kind(&self) -> HostKind {
        self.host.kind()
    }

    fn request_header(&self, name: &str) -> Option<String> {
        if self.all_at_once || self.all_headers.borrow().is_some() {
            self.fetch_all();
            let all = self.all_headers.borrow();
            return all.as_ref()?.get(name).map(str::to_string);
        }
        remember(&self.headers, name, || self.host.request_header(name))
    }

    fn request_headers(&self) -> Headers {
        self.all()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        remember_by(&self.properties, |k| is_path(k, path), || path.join("."), || self.host.property(path))
    }

    /// An integer property: from the bytes already read for another policy,
    /// else remembered as an integer (nothing copied per read).
    fn property_int(&self, path: &[&str]) -> Option<u64> {
        if let Some((_, bytes)) = self.properties.borrow().iter().find(|(k, _)| is_path(k, path)) {
            return crate::host::parse_integer_property(bytes.as_deref()?);
        }
        remember_by(&self.integers, |k| is_path(k, path), || path.join("."), || self.host.property_int(path))
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.host.set_request_header(name, value);
        if let Some(all) = &mut *self.all_headers.borrow_mut() {
            all.set(name, value);
        }
        let mut singles = self.headers.borrow_mut();
        if let Some(entry) = singles.iter_mut().find(|(n, _)| n == name) {
            entry.1 = value.map(str::to_string);
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        remember(&self.response, name, || self.host.response_header(name))
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.host.add_response_header(name, value);
        self.response.borrow_mut().retain(|(n, _)| n != name);
    }

    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
        self.host.send_reply(status, headers, body)
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        self.host.dispatch(call)
    }

    fn call_status(&self) -> Option<u16> {
        self.host.call_status()
    }

    fn call_body(&self, reply: CallReply) -> Vec<u8> {
        self.host.call_body(reply)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.host.define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        self.host.increment_metric(id, delta)
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.host.record_metric(id, value)
    }

    fn metric_value(&self, id: u32) -> Option<u64> {
        self.host.metric_value(id)
    }

    fn defined_metrics(&self) -> Vec<DefinedMetric> {
        self.host.defined_metrics()
    }

    fn set_property(&self, path: &[&str], value: &str) -> bool {
        self.host.set_property(path, value)
    }
}
