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
use crate::host::{
    with_property, with_request_header, with_response_header, Call, CallReply, DefinedMetric, Host, HostKind,
    MetricKind,
};
use crate::store::{Entry, Key, SharedStore, StoreError};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};

/// What a pass remembers of one kind: a few entries kept inline, their keys
/// in pooled strings (a bundle reads a handful of properties and headers
/// per callback: nothing here allocates until a fifth).
type Memo<V> = RefCell<SmallVec<[(Key, V); 4]>>;

/// A host seen through one callback of a bundle.
pub struct Pass<'h, H: Host> {
    host: &'h H,
    /// Read all request headers in one call (some policy needs them all).
    all_at_once: bool,
    all_headers: RefCell<Option<Headers>>,
    /// A header was written while `all_headers` was lent: read them again.
    stale: Cell<bool>,
    headers: Memo<Option<Key>>,
    /// Kept inline up to 48 bytes (an address, a short cluster name).
    properties: Memo<Option<SmallVec<[u8; 48]>>>,
    integers: Memo<Option<u64>>,
    response: Memo<Option<Key>>,
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
            stale: Cell::new(false),
            headers: RefCell::default(),
            properties: RefCell::default(),
            integers: RefCell::default(),
            response: RefCell::default(),
            now: Cell::new(None),
        }
    }

    /// Reads every request header once per callback. (The pass's cells are
    /// borrowed mutably only where nothing of theirs is lent: `try_` keeps a
    /// policy that writes while reading from panicking, which it must
    /// never do.)
    fn fetch_all(&self) {
        let missing = self.all_headers.try_borrow().is_ok_and(|all| all.is_none());
        if missing || self.stale.get() {
            let read = self.host.request_headers();
            if let Ok(mut all) = self.all_headers.try_borrow_mut() {
                *all = Some(read);
                self.stale.set(false);
            }
        }
    }

    fn all(&self) -> Headers {
        self.fetch_all();
        self.all_headers.borrow().clone().unwrap_or_default()
    }
}

/// Lends `f` the value `memo` holds under the key `is_key` accepts; read
/// first (`read()`, remembered under `key()`) when it holds none.
fn lend<V, R>(
    memo: &Memo<V>,
    is_key: impl Fn(&str) -> bool,
    key: impl FnOnce() -> Key,
    read: impl FnOnce() -> V,
    f: impl FnOnce(&V) -> R,
) -> R {
    if let Some((_, v)) = memo.borrow().iter().find(|(k, _)| is_key(k)) {
        return f(v);
    }
    let v = read();
    let r = f(&v);
    // Held only while a value is lent: an `f` that reads again through the
    // pass leaves this value unremembered (read again later), never panics.
    if let Ok(mut memo) = memo.try_borrow_mut() {
        memo.push((key(), v));
    }
    r
}

/// Is `key` (a remembered property's, dotted) the property at `path`?
fn is_path(key: &str, path: &[&str]) -> bool {
    key.split('.').eq(path.iter().copied())
}

/// A property path, dotted, in a pooled string.
fn dotted(path: &[&str]) -> Key {
    Key::joined(path, ".")
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
        let mut out = None;
        self.request_header_with(name, &mut |v| out = v.map(str::to_string));
        out
    }

    fn request_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        if self.all_at_once || self.all_headers.borrow().is_some() {
            self.fetch_all();
            let all = self.all_headers.borrow();
            return f(all.as_ref().and_then(|all| all.get(name)));
        }
        let read = || with_request_header(self.host, name, |v| v.map(Key::from));
        lend(&self.headers, |k| k == name, || Key::from_parts(&[name]), read, |v| f(v.as_deref()));
    }

    fn request_headers(&self) -> Headers {
        self.all()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let mut out = None;
        self.property_with(path, &mut |v| out = v.map(<[u8]>::to_vec));
        out
    }

    fn property_with(&self, path: &[&str], f: &mut dyn FnMut(Option<&[u8]>)) {
        let read = || with_property(self.host, path, |v| v.map(SmallVec::from_slice));
        lend(&self.properties, |k| is_path(k, path), || dotted(path), read, |v| f(v.as_deref()));
    }

    /// An integer property: from the bytes already read for another policy,
    /// else remembered as an integer (nothing copied per read).
    fn property_int(&self, path: &[&str]) -> Option<u64> {
        if let Some((_, bytes)) = self.properties.borrow().iter().find(|(k, _)| is_path(k, path)) {
            return crate::host::parse_integer_property(bytes.as_deref()?);
        }
        let read = || self.host.property_int(path);
        lend(&self.integers, |k| is_path(k, path), || dotted(path), read, |v| *v)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.host.set_request_header(name, value);
        match self.all_headers.try_borrow_mut() {
            Ok(mut all) => {
                if let Some(all) = &mut *all {
                    all.set(name, value);
                }
            }
            // Written while the headers are lent (a policy writing from
            // inside a read): forgotten, read again from the host next time.
            Err(_) => self.stale.set(true),
        }
        if let Ok(mut singles) = self.headers.try_borrow_mut() {
            if let Some(entry) = singles.iter_mut().find(|(n, _)| n.as_str() == name) {
                entry.1 = value.map(|v| Key::from_parts(&[v]));
            }
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        let mut out = None;
        self.response_header_with(name, &mut |v| out = v.map(str::to_string));
        out
    }

    fn response_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        let read = || with_response_header(self.host, name, |v| v.map(Key::from));
        lend(&self.response, |k| k == name, || Key::from_parts(&[name]), read, |v| f(v.as_deref()));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.host.add_response_header(name, value);
        if let Ok(mut response) = self.response.try_borrow_mut() {
            response.retain(|(n, _)| n.as_str() != name);
        }
    }

    fn response_body_with(&self, size: usize, f: &mut dyn FnMut(&[u8])) {
        self.host.response_body_with(size, f)
    }

    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
        self.host.send_reply(status, headers, body)
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        self.host.dispatch(call)
    }

    fn dispatch_detached(&self, call: &Call<'_>) -> Result<(), String> {
        self.host.dispatch_detached(call)
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

#[cfg(test)]
mod tests {
    use super::Pass;
    use crate::host::{with_property, with_response_header, Host};
    use crate::store::CasRule;
    use crate::testing::RecordingHost;

    #[test]
    fn what_a_pass_read_is_lent_again_without_a_second_call() {
        let host = RecordingHost::new(CasRule::Envoy);
        host.begin(&[(":method", "GET"), ("x-a", "1")]);
        host.set_property("source.address", "10.0.0.1:5000");
        host.respond(&[(":status", "503")]);
        let pass = Pass::new(&host, false);
        let before = host.calls().returning_bytes;
        for _ in 0..3 {
            assert_eq!(
                with_property(&pass, &["source", "address"], |v| Some(v?.to_vec())),
                Some(b"10.0.0.1:5000".to_vec())
            );
            assert_eq!(pass.property(&["source", "address"]), Some(b"10.0.0.1:5000".to_vec()));
            assert_eq!(with_response_header(&pass, ":status", |v| v.map(str::to_string)), Some("503".to_string()));
            assert_eq!(pass.request_header("x-a").as_deref(), Some("1"));
        }
        assert_eq!(host.calls().returning_bytes - before, 3, "each read once from the host");
    }

    #[test]
    fn a_write_made_while_a_value_is_lent_neither_panics_nor_is_lost() {
        let host = RecordingHost::new(CasRule::Envoy);
        host.begin(&[(":method", "GET"), ("x-a", "1")]);
        let pass = Pass::new(&host, true);
        pass.request_header_with("x-a", &mut |v| {
            assert_eq!(v, Some("1"));
            pass.set_request_header("x-a", Some("2"));
            pass.set_request_header("x-b", Some("3"));
        });
        assert_eq!(pass.request_header("x-a").as_deref(), Some("2"), "read again after the lent value");
        assert_eq!(pass.request_headers().get("x-b"), Some("3"));
        assert_eq!(host.upstream_header("x-a").as_deref(), Some("2"));
    }
}
