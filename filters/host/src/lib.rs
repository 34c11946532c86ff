//! The one adapter between the proxy and the core: [`ProxyHost`] implements
//! the core's [`Host`] seam over the Proxy-Wasm ABI ([`abi`], written by
//! hand), and [`filter_entry!`] turns any core [`Filter`] into the module's
//! exports, routed by [`Dispatcher`]. This crate is the only code in the
//! workspace that calls the proxy: the host functions are declared in
//! [`abi`], and calling them takes `unsafe`, which the workspace denies
//! everywhere else.
//!
//! Host differences handled here (the rest is in the core's store protocol
//! and parsers):
//! * Header values and properties are read as bytes: a value that is not
//!   UTF-8 (legal on the wire) is decoded lossily instead of trapping the VM.
//! * Shared data: a missing key is `NotFound` in one host and an empty answer
//!   in the other; both are "absent". A compare-and-swap mismatch is `false`.
//! * Every host call's error is returned or ignored, never unwrapped.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;

use abi::{Buffer, Level, Map, Pairs, Status};
use filters_core::clock::Clock;
use filters_core::headers::Headers;
use filters_core::host::{lossy_text, Call, DefinedMetric, Filter, Flow, Host, HostKind, MetricKind};
use filters_core::store::{Entry, SharedStore, StoreError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Declares a filter's proxy-wasm entry point for a core [`Filter`] type:
/// the module's exports, each a one-line call into [`Dispatcher`]. Only the
/// callbacks a filter uses are exported, and those nginx calls without
/// checking (Envoy skips the rest): the root's start and configuration, a
/// request's context, headers, the response body (read as it goes by, for
/// a cost; never held), the request body and trailers (passed untouched),
/// log and end, and the answers to dispatched calls. The one
/// `unsafe` the exports need (`#[no_mangle]`) is allowed here and nowhere
/// else.
#[macro_export]
macro_rules! filter_entry {
    ($filter:ty) => {
        #[allow(unsafe_code)]
        mod proxy_wasm_entry {
            #[allow(unused_imports)]
            use super::*;
            use $crate::Dispatcher;

            thread_local! {
                static DISPATCHER: Dispatcher<$filter> = Dispatcher::default();
            }

            #[cfg(target_os = "wasi")]
            extern "C" {
                fn __wasm_call_ctors();
            }

            /// Run once by the proxy before anything else.
            #[no_mangle]
            pub extern "C" fn _initialize() {
                #[cfg(target_os = "wasi")]
                // SAFETY: the reactor's constructors, run once, first, as the WASI ABI wants.
                unsafe {
                    __wasm_call_ctors();
                }
                $crate::init_logger();
            }

            #[no_mangle]
            pub extern "C" fn proxy_abi_version_0_2_1() {}

            #[no_mangle]
            pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                $crate::abi::allocate(size)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_context_create(context_id: u32, root_id: u32) {
                DISPATCHER.with(|d| d.create(context_id, root_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_vm_start(_root_id: u32, _size: usize) -> bool {
                true
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_configure(root_id: u32, _size: usize) -> bool {
                DISPATCHER.with(|d| d.configure(root_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _end: bool) -> u32 {
                DISPATCHER.with(|d| d.request_headers(context_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, _end: bool) -> u32 {
                DISPATCHER.with(|d| d.response_headers(context_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_log(context_id: u32) {
                DISPATCHER.with(|d| d.log(context_id))
            }

            // nginx calls the callbacks below without checking that the module
            // exports them (a missing one crashes its worker): bodies and
            // trailers pass untouched, the context's end frees its state.
            #[no_mangle]
            pub extern "C" fn proxy_on_request_body(_context_id: u32, _size: usize, _end: bool) -> u32 {
                0
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_trailers(_context_id: u32, _trailers: usize) -> u32 {
                0
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, end: bool) -> u32 {
                DISPATCHER.with(|d| d.response_body(context_id, size, end))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _trailers: usize) -> u32 {
                0
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_done(_context_id: u32) -> bool {
                true
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_delete(context_id: u32) {
                DISPATCHER.with(|d| d.delete(context_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_http_call_response(
                _root_id: u32,
                token: u32,
                _headers: usize,
                size: usize,
                _trailers: usize,
            ) {
                DISPATCHER.with(|d| d.call_reply(token, $crate::CallReply::Http { size }))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_tick(root_id: u32) {
                DISPATCHER.with(|d| d.tick(root_id))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_receive(_root_id: u32, token: u32, size: usize) {
                DISPATCHER.with(|d| d.call_reply(token, $crate::CallReply::Grpc { status: 0, size }))
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_grpc_close(_root_id: u32, token: u32, status: u32) {
                DISPATCHER.with(|d| d.call_reply(token, $crate::CallReply::Grpc { status, size: 0 }))
            }
        }
    };
}

pub use filters_core::host::CallReply;

/// Sends the `log` crate's records at Info and above to the proxy's log.
pub fn init_logger() {
    static LOGGER: ProxyLogger = ProxyLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

struct ProxyLogger;

impl log::Log for ProxyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// The proxy, through the ABI, as seen from one context: a call it
/// dispatches is answered to that context.
#[derive(Debug, Clone, Copy)]
pub struct ProxyHost {
    context: u32,
}

impl Clock for ProxyHost {
    /// Both hosts always answer; were one to refuse, 0 reads as a clock
    /// stepped far back, which every algorithm in the core tolerates.
    fn now_nanos(&self) -> u64 {
        abi::now_nanos()
    }
}

fn store_error(status: Status) -> StoreError {
    StoreError::Host(format!("status {}", status.0))
}

impl SharedStore for ProxyHost {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        match abi::shared_get(key) {
            Ok((Some(value), cas)) => Ok(Some(Entry { value, cas })),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(store_error(status)),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
        match abi::shared_set(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(true),
            Err(Status::CAS_MISMATCH) => Ok(false),
            Err(status) => Err(store_error(status)),
        }
    }
}

thread_local! {
    /// The host's kind, learnt at the first request of this VM.
    static KIND: Cell<Option<HostKind>> = const { Cell::new(None) };
    /// Dispatched calls not yet answered: token, context.
    static CALLS: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
    /// Every metric this VM defined (the exporter's list).
    static DEFINED: RefCell<Vec<DefinedMetric>> = const { RefCell::new(Vec::new()) };
    /// Calls sent on the proxy's behalf at the next tick
    /// ([`Host::dispatch_detached`]).
    static DETACHED: RefCell<Vec<Detached>> = const { RefCell::new(Vec::new()) };
}

/// Calls queued for the next tick beyond which a new one is refused: a
/// service that cannot keep up must not grow memory.
pub const MAX_DETACHED: usize = 4096;

/// A call queued by [`Host::dispatch_detached`], owned.
#[derive(Debug)]
enum Detached {
    Grpc { target: String, service: String, method: String, body: Vec<u8>, timeout_ms: u32 },
    Http { target: String, headers: Vec<u8>, body: Vec<u8>, timeout_ms: u32 },
}

impl Host for ProxyHost {
    /// nginx answers `ngx.pid` (inside a request: at configure time it logs
    /// an error instead); Envoy answers "not found", silently.
    fn kind(&self) -> HostKind {
        if let Some(kind) = KIND.with(Cell::get) {
            return kind;
        }
        let kind = match abi::property(b"ngx\0pid") {
            Ok(Some(_)) => HostKind::Nginx,
            _ => HostKind::Envoy,
        };
        KIND.with(|k| k.set(Some(kind)));
        kind
    }

    fn request_header(&self, name: &str) -> Option<String> {
        abi::header(Map::RequestHeaders, name).ok()?.map(lossy_text)
    }

    fn request_headers(&self) -> Headers {
        let Ok(Some(bytes)) = abi::header_pairs(Map::RequestHeaders) else { return Headers::default() };
        let pairs = Pairs::new(&bytes);
        let mut headers = Headers::with_capacity(pairs.len(), bytes.len());
        for (name, value) in pairs {
            headers.push_bytes(name, value);
        }
        headers
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(abi_path(path).as_bytes()).ok()?
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = abi::set_header(Map::RequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        abi::header(Map::ResponseHeaders, name).ok()?.map(lossy_text)
    }

    fn add_response_header(&self, name: &str, value: &str) {
        let _ = abi::add_header(Map::ResponseHeaders, name, value);
    }

    fn response_body_with(&self, size: usize, f: &mut dyn FnMut(&[u8])) {
        if let Ok(Some(chunk)) = abi::buffer(Buffer::HttpResponseBody, size) {
            f(&chunk);
        }
    }

    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        abi::send_local_response(u32::from(status), &abi::serialize_pairs(&pairs), body).is_ok()
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        let millis = |t: std::time::Duration| u32::try_from(t.as_millis()).unwrap_or(u32::MAX);
        let sent = match *call {
            Call::Grpc { target, service, method, body, timeout } => {
                abi::grpc_call(target, service, method, body, millis(timeout))
            }
            Call::Http { target, headers, body, timeout } => {
                abi::http_call(target, &abi::serialize_pairs(headers), body, millis(timeout))
            }
        };
        let token = sent.map_err(|status| format!("status {}", status.0))?;
        CALLS.with(|c| c.borrow_mut().push((token, self.context)));
        Ok(token)
    }

    /// Queued, and sent from the root context at its next tick (both hosts
    /// allow calls there; nginx traps a call from a response phase, and
    /// Envoy cancels a request's calls when it ends). Answers are not read.
    fn dispatch_detached(&self, call: &Call<'_>) -> Result<(), String> {
        let millis = |t: std::time::Duration| u32::try_from(t.as_millis()).unwrap_or(u32::MAX);
        let owned = match *call {
            Call::Grpc { target, service, method, body, timeout } => Detached::Grpc {
                target: target.to_string(),
                service: service.to_string(),
                method: method.to_string(),
                body: body.to_vec(),
                timeout_ms: millis(timeout),
            },
            Call::Http { target, headers, body, timeout } => Detached::Http {
                target: target.to_string(),
                headers: abi::serialize_pairs(headers),
                body: body.to_vec(),
                timeout_ms: millis(timeout),
            },
        };
        DETACHED.with(|q| {
            let mut q = q.try_borrow_mut().map_err(|_| "the queue is busy".to_string())?;
            if q.len() >= MAX_DETACHED {
                return Err(format!("{MAX_DETACHED} calls already wait for the next tick"));
            }
            q.push(owned);
            Ok(())
        })
    }

    fn call_status(&self) -> Option<u16> {
        let bytes = abi::header(Map::CallResponseHeaders, ":status").ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    fn call_body(&self, reply: CallReply) -> Vec<u8> {
        let (buffer, size) = match reply {
            CallReply::Grpc { size, .. } => (Buffer::GrpcReceive, size),
            CallReply::Http { size } => (Buffer::CallResponseBody, size),
        };
        abi::buffer(buffer, size).ok().flatten().unwrap_or_default()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind_code = match kind {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
        };
        let id = abi::define_metric(kind_code, name).ok()?;
        DEFINED.with(|d| {
            let mut d = d.borrow_mut();
            if !d.iter().any(|m| m.id == id) {
                d.push(DefinedMetric { kind, name: name.to_string(), id });
            }
        });
        Some(id)
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        if let Ok(delta) = i64::try_from(delta) {
            abi::increment_metric(id, delta);
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        abi::record_metric(id, value);
    }

    fn metric_value(&self, id: u32) -> Option<u64> {
        abi::metric(id).ok()
    }

    fn defined_metrics(&self) -> Vec<DefinedMetric> {
        DEFINED.with(|d| d.borrow().clone())
    }

    fn set_property(&self, path: &[&str], value: &str) -> bool {
        abi::set_property(abi_path(path).as_bytes(), value.as_bytes()).is_ok()
    }
}

/// The ABI's spelling of a property path: its segments joined by NUL
/// bytes, in a pooled string ([`filters_core::store::Key`]).
fn abi_path(path: &[&str]) -> filters_core::store::Key {
    filters_core::store::Key::joined(path, "\0")
}

/// A multiplicative hash for context ids (sequential integers): cheap, and
/// spreads them over the table.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Streams in flight beyond which the oldest are dropped: a host that never
/// calls `proxy_on_log` for some stream cannot grow memory without bound.
pub const MAX_STREAMS: usize = 1 << 16;

/// Keeps the stream table under [`MAX_STREAMS`]: when full, the older half
/// (lower context ids: the proxy numbers contexts in creation order) is
/// dropped, with one warning.
fn make_room<V>(streams: &mut HashMap<u32, V, BuildHasherDefault<IdHasher>>) {
    if streams.len() < MAX_STREAMS {
        return;
    }
    log::warn!("{MAX_STREAMS} streams in flight: the proxy did not end some; dropping the oldest");
    let mut ids: Vec<u32> = streams.keys().copied().collect();
    ids.sort_unstable();
    for id in ids.iter().take(MAX_STREAMS / 2) {
        streams.remove(id);
    }
}

/// One request through filter `F`.
struct Stream<F: Filter> {
    filter: Rc<F>,
    state: F::Stream,
    /// The response is held (its last body chunk) until a call answers.
    response_paused: bool,
}

/// Routes the proxy's callbacks for filter `F`: its root contexts (one per
/// plugin configuration sharing this VM) and its requests in flight, keyed
/// by context id. A stream is created with its context and dropped at its
/// log callback, the last one a request gets.
pub struct Dispatcher<F: Filter> {
    roots: RefCell<Vec<(u32, Option<Rc<F>>)>>,
    streams: RefCell<HashMap<u32, Stream<F>, BuildHasherDefault<IdHasher>>>,
}

impl<F: Filter> Default for Dispatcher<F> {
    fn default() -> Self {
        Dispatcher { roots: RefCell::default(), streams: RefCell::default() }
    }
}

fn action(flow: Flow) -> u32 {
    match flow {
        Flow::Continue => 0,
        Flow::Pause => 1,
    }
}

impl<F: Filter> Dispatcher<F> {
    /// A context was created: a root (no parent) or a request of root `root_id`.
    pub fn create(&self, context_id: u32, root_id: u32) {
        if root_id == 0 {
            self.roots.borrow_mut().push((context_id, None));
            return;
        }
        let filter = self.roots.borrow().iter().find(|(id, _)| *id == root_id).and_then(|(_, f)| f.clone());
        let Some(filter) = filter else { return };
        let Ok(mut streams) = self.streams.try_borrow_mut() else { return };
        make_room(&mut streams);
        streams.insert(context_id, Stream { filter, state: F::Stream::default(), response_paused: false });
    }

    /// Configures root `root_id` from the plugin configuration; a refusal is
    /// logged in one line and the proxy refuses the configuration.
    pub fn configure(&self, root_id: u32) -> bool {
        let bytes = abi::buffer(Buffer::PluginConfiguration, usize::MAX).ok().flatten().unwrap_or_default();
        let host = ProxyHost { context: root_id };
        let filter = match filters_core::host::configure::<F, _>(&host, &bytes) {
            Ok(filter) => Rc::new(filter),
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        if let Some(period) = filter.tick_period() {
            let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX).max(1);
            if let Err(status) = abi::set_tick_period(millis) {
                log::warn!("the host refused a tick period (status {}): queued calls will not be sent", status.0);
            }
        }
        let mut roots = self.roots.borrow_mut();
        match roots.iter_mut().find(|(id, _)| *id == root_id) {
            Some(root) => root.1 = Some(filter),
            None => roots.push((root_id, Some(filter))),
        }
        true
    }

    /// Runs `f` on stream `context_id`, if it is known (and not already in a
    /// callback: a re-entrant call is ignored rather than trapping).
    fn with_stream<R>(&self, context_id: u32, f: impl FnOnce(&mut Stream<F>, &ProxyHost) -> R) -> Option<R> {
        let mut streams = self.streams.try_borrow_mut().ok()?;
        let stream = streams.get_mut(&context_id)?;
        Some(f(stream, &ProxyHost { context: context_id }))
    }

    /// The request headers arrived: 0 continue, 1 pause.
    pub fn request_headers(&self, context_id: u32) -> u32 {
        let flow = self.with_stream(context_id, |s, host| s.filter.on_request_headers(&mut s.state, host));
        action(flow.unwrap_or(Flow::Continue))
    }

    /// The response headers arrived: always continue.
    pub fn response_headers(&self, context_id: u32) -> u32 {
        self.with_stream(context_id, |s, host| s.filter.on_response_headers(&mut s.state, host));
        0
    }

    /// A chunk of the response body went by: continue, or (the last chunk,
    /// while a cost is charged to the rate limit service) hold it.
    pub fn response_body(&self, context_id: u32, size: usize, end: bool) -> u32 {
        let flow = self.with_stream(context_id, |s, host| {
            let flow = s.filter.on_response_body(&mut s.state, host, size, end);
            s.response_paused = flow == Flow::Pause;
            flow
        });
        action(flow.unwrap_or(Flow::Continue))
    }

    /// The request completed: the last callback that does work.
    pub fn log(&self, context_id: u32) {
        self.with_stream(context_id, |s, host| s.filter.on_log(&mut s.state, host));
        self.delete(context_id);
    }

    /// The root's timer: sends the calls queued by
    /// [`Host::dispatch_detached`] (their answers come to no stream, and are
    /// dropped).
    pub fn tick(&self, _root_id: u32) {
        let queued = DETACHED.with(|q| q.try_borrow_mut().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default());
        for call in queued {
            let sent = match &call {
                Detached::Grpc { target, service, method, body, timeout_ms } => {
                    abi::grpc_call(target, service, method, body, *timeout_ms)
                }
                Detached::Http { target, headers, body, timeout_ms } => {
                    abi::http_call(target, headers, body, *timeout_ms)
                }
            };
            if let Err(status) = sent {
                log::warn!("a queued call to the rate limit service was refused (status {})", status.0);
            }
        }
    }

    /// The context is gone: its state and its unanswered calls are dropped.
    pub fn delete(&self, context_id: u32) {
        if let Ok(mut streams) = self.streams.try_borrow_mut() {
            if streams.remove(&context_id).is_some() {
                CALLS.with(|c| c.borrow_mut().retain(|(_, ctx)| *ctx != context_id));
            }
        }
    }

    /// A dispatched call answered (on the root context): handed to the
    /// stream that dispatched it, which is resumed unless the filter replied.
    pub fn call_reply(&self, token: u32, reply: CallReply) {
        let context = CALLS.with(|c| {
            let mut calls = c.borrow_mut();
            let at = calls.iter().position(|(t, _)| *t == token)?;
            Some(calls.swap_remove(at).1)
        });
        let Some(context_id) = context else { return };
        if abi::set_effective_context(context_id).is_err() {
            return;
        }
        let flow = self.with_stream(context_id, |s, host| {
            let flow = s.filter.on_call_reply(&mut s.state, host, token, reply);
            let response = std::mem::take(&mut s.response_paused);
            (flow, response)
        });
        match flow {
            Some((Flow::Continue, true)) => {
                let _ = abi::resume_response();
            }
            Some((Flow::Continue, false)) => {
                let _ = abi::resume_request();
            }
            _ => {}
        }
    }
}

/// Test-only wrapper: traps the VM when a request carries
/// `x-rate-limit-test-trap`, so the integration tests can show what Envoy's
/// `failure_policy` does when the VM dies. Used only by the rate limiter's
/// `trap-on-demand` build; never in a shipped `.wasm`.
#[cfg(feature = "trap-on-demand")]
pub struct TrapOnDemand<F: Filter>(F);

#[cfg(feature = "trap-on-demand")]
impl<F: Filter> Filter for TrapOnDemand<F> {
    type Stream = F::Stream;
    type Config = F::Config;
    const METRIC_PREFIX: &'static str = F::METRIC_PREFIX;

    fn check(config: &[u8]) -> Result<F::Config, filters_core::config::ConfigError> {
        F::check(config)
    }

    fn build<H: Host>(host: &H, config: F::Config) -> Result<Self, filters_core::host::Refused> {
        F::build(host, config).map(TrapOnDemand)
    }

    fn on_request_headers<H: Host>(&self, stream: &mut Self::Stream, host: &H) -> Flow {
        if host.request_header("x-rate-limit-test-trap").is_some() {
            std::process::abort();
        }
        self.0.on_request_headers(stream, host)
    }

    fn on_response_headers<H: Host>(&self, stream: &mut Self::Stream, host: &H) {
        self.0.on_response_headers(stream, host)
    }

    fn on_response_body<H: Host>(&self, stream: &mut Self::Stream, host: &H, size: usize, end: bool) -> Flow {
        self.0.on_response_body(stream, host, size, end)
    }

    fn on_log<H: Host>(&self, stream: &mut Self::Stream, host: &H) {
        self.0.on_log(stream, host)
    }

    fn on_call_reply<H: Host>(&self, stream: &mut Self::Stream, host: &H, token: u32, reply: CallReply) -> Flow {
        self.0.on_call_reply(stream, host, token, reply)
    }

    fn tick_period(&self) -> Option<std::time::Duration> {
        self.0.tick_period()
    }
}

#[cfg(test)]
mod tests {
    use super::{abi_path, make_room, IdHasher, MAX_STREAMS};

    #[test]
    fn a_property_path_is_spelled_with_nul_separators() {
        assert_eq!(abi_path(&["source", "address"]).as_str(), "source\0address");
        assert_eq!(abi_path(&["ngx", "pid"]).as_bytes(), b"ngx\0pid");
        assert_eq!(abi_path(&[]).as_str(), "");
    }
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;

    #[test]
    fn the_stream_table_stays_bounded_and_keeps_the_newest() {
        let mut streams: HashMap<u32, (), BuildHasherDefault<IdHasher>> = HashMap::default();
        for id in 1..=MAX_STREAMS as u32 {
            make_room(&mut streams);
            streams.insert(id, ());
        }
        assert_eq!(streams.len(), MAX_STREAMS);
        make_room(&mut streams);
        assert_eq!(streams.len(), MAX_STREAMS / 2);
        assert!(streams.contains_key(&(MAX_STREAMS as u32)), "the newest stays");
        assert!(!streams.contains_key(&1), "the oldest goes");
    }
}
