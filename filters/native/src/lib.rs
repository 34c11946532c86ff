//! The resilience filters as one native Envoy dynamic module
//! (`libresilience.so`): the same core as the Proxy-Wasm modules, driven
//! through Envoy's dynamic-module C ABI instead of a Wasm VM.
//!
//! Envoy loads the module once per process; each HTTP filter configuration
//! names a policy by `filter_name` (`rate_limit`, `circuit_breaker`,
//! `retry`, `sticky_session`, `bundle`) and gives the JSON its Wasm module
//! takes. The configuration is checked and built once on the main thread
//! (tables created, metrics defined, a refusal logged in the Wasm build's
//! one line); each worker thread then clones that instance at its first
//! request (the filters keep per-worker caches, as each Wasm VM does).
//! Shared state is process memory ([`store`]).
//!
//! No panic crosses into Envoy: every event hook catches, logs one line and
//! lets the request go on (as a filter that failed open).
//!
//! `unsafe` is allowed in this file (the exported event hooks, and the
//! pointers Envoy hands back to them) and in [`abi`]; [`host`] and [`store`]
//! deny it.
#![allow(unsafe_code)]

pub mod abi;
#[cfg(any(test, feature = "fake-envoy"))]
pub mod fake_envoy;
pub mod host;
pub mod store;
#[cfg(test)]
mod tests;

use filters_core::breaker::BreakerFilter;
use filters_core::bundle::BundleFilter;
use filters_core::host::{Filter, Flow, Refused};
use filters_core::observe::{Observed, ObservedStream};
use filters_core::ratelimit::RateLimitFilter;
use filters_core::retry::RetryFilter;
use filters_core::sticky::StickyFilter;
use host::{Metrics, NativeHost};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

macro_rules! policies {
    ($($variant:ident => $filter:ty, $name:literal;)*) => {
        /// A policy's filter (one worker's instance; one per worker and
        /// configuration, so its size does not matter).
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone)]
        enum AnyFilter { $($variant(Observed<$filter>),)* }

        /// One request's state in its policy (boxed once per request with
        /// the stream).
        #[allow(clippy::large_enum_variant)]
        enum AnyStream { $($variant(ObservedStream<<$filter as Filter>::Stream>),)* }

        /// The policies by `filter_name`.
        const NAMES: &[&str] = &[$($name),*];

        impl AnyFilter {
            fn check(name: &str, bytes: &[u8]) -> Result<(), Refused> {
                match name {
                    $($name => <Observed<$filter>>::check(bytes).map(drop).map_err(Refused::from),)*
                    _ => Err(Refused::from(filters_core::config::ConfigError::new(
                        "filter_name",
                        format!("unknown policy \"{name}\"; one of {}", NAMES.join(", ")),
                    ))),
                }
            }

            fn configure(name: &str, host: &NativeHost<'_>, bytes: &[u8]) -> Result<AnyFilter, Refused> {
                match name {
                    $($name => filters_core::host::configure::<Observed<$filter>, _>(host, bytes).map(AnyFilter::$variant),)*
                    _ => Err(Refused::from(filters_core::config::ConfigError::new("filter_name", "unknown policy"))),
                }
            }

            fn new_stream(&self) -> AnyStream {
                match self { $(AnyFilter::$variant(_) => AnyStream::$variant(Default::default()),)* }
            }

            fn request_headers(&self, stream: &mut AnyStream, host: &NativeHost<'_>) -> Flow {
                match (self, stream) {
                    $((AnyFilter::$variant(f), AnyStream::$variant(s)) => f.on_request_headers(s, host),)*
                    _ => Flow::Continue,
                }
            }

            fn response_headers(&self, stream: &mut AnyStream, host: &NativeHost<'_>) {
                match (self, stream) {
                    $((AnyFilter::$variant(f), AnyStream::$variant(s)) => f.on_response_headers(s, host),)*
                    _ => {}
                }
            }

            fn call_reply(&self, stream: &mut AnyStream, host: &NativeHost<'_>, token: u32, reply: filters_core::host::CallReply) -> Flow {
                match (self, stream) {
                    $((AnyFilter::$variant(f), AnyStream::$variant(s)) => f.on_call_reply(s, host, token, reply),)*
                    _ => Flow::Continue,
                }
            }

            fn response_body(&self, stream: &mut AnyStream, host: &NativeHost<'_>, end: bool) -> Flow {
                match (self, stream) {
                    $((AnyFilter::$variant(f), AnyStream::$variant(s)) => f.on_response_body(s, host, usize::MAX, end),)*
                    _ => Flow::Continue,
                }
            }

            fn complete(&self, stream: &mut AnyStream, host: &NativeHost<'_>) {
                match (self, stream) {
                    $((AnyFilter::$variant(f), AnyStream::$variant(s)) => f.on_log(s, host),)*
                    _ => {}
                }
            }
        }
    };
}

policies! {
    RateLimit => RateLimitFilter, "rate_limit";
    Breaker => BreakerFilter, "circuit_breaker";
    Retry => RetryFilter, "retry";
    Sticky => StickyFilter, "sticky_session";
    Bundle => BundleFilter, "bundle";
}

/// One HTTP filter configuration, shared by every worker.
struct NativeConfig {
    id: u64,
    name: String,
    bytes: Vec<u8>,
    metrics: Metrics,
    destroyed: AtomicBool,
    /// The instance built on the main thread, which each worker clones at
    /// its first request (building it again there would create the tables
    /// again, some milliseconds in which that worker's first requests
    /// wait). `None` for a route's configuration (built per worker).
    prototype: Option<std::sync::Mutex<AnyFilter>>,
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);
/// Configurations destroyed so far: a worker drops the instances of
/// destroyed ones when this moved since it last looked.
static DESTROYED: AtomicU64 = AtomicU64::new(0);

/// A worker's instances, by configuration id, and the [`DESTROYED`] count
/// they were last swept at.
#[derive(Default)]
struct Instances {
    by_config: HashMap<u64, (Arc<NativeConfig>, Rc<AnyFilter>)>,
    swept_at: u64,
}

thread_local! {
    /// This worker's instance of each configuration it has served.
    static INSTANCES: RefCell<Instances> = RefCell::default();
    /// Stream slots given back by ended streams, reused by new ones (a
    /// stream then costs no allocation); at most `KEPT_SLOTS` kept.
    // Boxed: each is the address Envoy held, handed out again as is.
    #[allow(clippy::vec_box)]
    static FREE_SLOTS: RefCell<Vec<Box<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// Free stream slots kept per worker.
const KEPT_SLOTS: usize = 1024;

/// Where a stream's state lives: Envoy holds a pointer to it from
/// `on_http_filter_new` to `on_http_filter_destroy`; emptied then and kept
/// for the next stream.
struct Slot(Option<NativeStream>);

/// One request.
struct NativeStream {
    /// The filter's configuration (its metrics count for the route's too).
    config: Arc<NativeConfig>,
    /// The route's own configuration, when it has one.
    route: Option<Arc<NativeConfig>>,
    filter: Rc<AnyFilter>,
    state: AnyStream,
    /// The response is held (its last body chunk) until a callout answers.
    response_paused: bool,
}

/// Runs an event hook's body; a panic is logged in one line (with its
/// message) and `fallback` returned.
fn guarded<R>(what: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            abi::log(
                abi::Level::Error,
                &format!("resilience: {what} failed ({why}; a bug: the request goes on unfiltered)"),
            );
            fallback
        }
    }
}

fn text(b: abi::EnvoyBuffer) -> Vec<u8> {
    b.to_vec().unwrap_or_default()
}

/// The `log` crate's lines (the core's) into Envoy's log.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        abi::log_enabled(level(metadata.level()))
    }

    fn log(&self, record: &log::Record<'_>) {
        let l = level(record.level());
        if abi::log_enabled(l) {
            abi::log(l, &format!("{}", record.args()));
        }
    }

    fn flush(&self) {}
}

fn level(l: log::Level) -> abi::Level {
    match l {
        log::Level::Error => abi::Level::Error,
        log::Level::Warn => abi::Level::Warn,
        log::Level::Info => abi::Level::Info,
        log::Level::Debug => abi::Level::Debug,
        log::Level::Trace => abi::Level::Trace,
    }
}

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Called once when Envoy loads the module: its ABI version.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    // A panic is reported by `guarded`, in one line: the default hook's
    // lines on stderr are not wanted in Envoy's output. (The hook is this
    // module's own: the library has its own Rust runtime.)
    std::panic::set_hook(Box::new(|_| {}));
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    abi::ABI_VERSION.as_ptr()
}

/// A configuration: checked and built once here (on the main thread), its
/// refusal logged in one line (then Envoy rejects the configuration).
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: abi::EnvoyPtr,
    name: abi::EnvoyBuffer,
    config: abi::EnvoyBuffer,
) -> *const c_void {
    guarded("configuration", std::ptr::null(), || {
        let Some((name, bytes)) = checked(name, config) else { return std::ptr::null() };
        // SAFETY: the pointer this hook received, used only in it.
        let config_envoy = unsafe { abi::Config::new(config_envoy) };
        let metrics = Metrics::default();
        metrics.define_families(config_envoy);
        let host =
            NativeHost { filter: abi::Stream::NONE, config: Some(config_envoy), metrics: &metrics, answer: None };
        // Built once here: the shared tables are created and the metrics
        // defined now; each worker clones this instance.
        let Some(prototype) = built(&name, &host, &bytes) else { return std::ptr::null() };
        NativeConfig::into_raw(name, bytes, metrics, Some(prototype))
    })
}

/// A configuration's policy and JSON, checked: `None` when refused (its one
/// line logged; Envoy then rejects the configuration).
fn checked(name: abi::EnvoyBuffer, config: abi::EnvoyBuffer) -> Option<(String, Vec<u8>)> {
    let name = String::from_utf8_lossy(&text(name)).into_owned();
    let bytes = text(config);
    match AnyFilter::check(&name, &bytes) {
        Ok(()) => Some((name, bytes)),
        Err(e) => {
            abi::log(abi::Level::Error, &e.to_string());
            None
        }
    }
}

/// `name`'s filter built on `host` (its tables created): `None` when
/// refused, its one line logged.
fn built(name: &str, host: &NativeHost<'_>, bytes: &[u8]) -> Option<AnyFilter> {
    AnyFilter::configure(name, host, bytes).map_err(|e| abi::log(abi::Level::Error, &e.to_string())).ok()
}

impl NativeConfig {
    /// A new configuration, as the pointer Envoy keeps for it.
    fn into_raw(name: String, bytes: Vec<u8>, metrics: Metrics, prototype: Option<AnyFilter>) -> *const c_void {
        let id = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
        let prototype = prototype.map(std::sync::Mutex::new);
        let cfg = NativeConfig { id, name, bytes, metrics, destroyed: AtomicBool::new(false), prototype };
        Arc::into_raw(Arc::new(cfg)).cast::<c_void>()
    }
}

/// The configuration is gone (its workers' instances go at their next request).
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded("configuration teardown", (), || {
        if config.is_null() {
            return;
        }
        // SAFETY: `config` is the pointer config_new made with Arc::into_raw,
        // given back once by Envoy.
        let cfg = unsafe { Arc::from_raw(config.cast::<NativeConfig>()) };
        cfg.destroyed.store(true, Ordering::Relaxed);
        DESTROYED.fetch_add(1, Ordering::Relaxed);
    })
}

/// A stream: this worker's instance of the configuration, built at its
/// first request, and a fresh request state.
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter_envoy: abi::EnvoyPtr,
) -> *const c_void {
    guarded("stream creation", std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        // SAFETY: `config` is alive (Envoy destroys a configuration after its
        // streams); one more strong count for the stream.
        let config = unsafe {
            Arc::increment_strong_count(config.cast::<NativeConfig>());
            Arc::from_raw(config.cast::<NativeConfig>())
        };
        // SAFETY: the pointer this hook received, used only in it.
        let stream = unsafe { abi::Stream::new(filter_envoy) };
        let Some(filter) = instance(&config, &config, stream) else { return std::ptr::null() };
        let state = filter.new_stream();
        let stream = NativeStream { config, route: None, filter, state, response_paused: false };
        let reused =
            FREE_SLOTS.try_with(|free| free.try_borrow_mut().ok().and_then(|mut free| free.pop())).ok().flatten();
        let slot = match reused {
            Some(mut slot) => {
                slot.0 = Some(stream);
                slot
            }
            None => Box::new(Slot(Some(stream))),
        };
        Box::into_raw(slot).cast::<c_void>()
    })
}

/// This worker's instance of `config` (built at its first use, counting
/// through `metrics_of`'s metrics).
fn instance(config: &Arc<NativeConfig>, metrics_of: &Arc<NativeConfig>, stream: abi::Stream) -> Option<Rc<AnyFilter>> {
    INSTANCES.with(|all| -> Option<Rc<AnyFilter>> {
        let mut all = all.borrow_mut();
        let destroyed = DESTROYED.load(Ordering::Relaxed);
        if all.swept_at != destroyed {
            all.by_config.retain(|_, (c, _)| !c.destroyed.load(Ordering::Relaxed));
            all.swept_at = destroyed;
        }
        if let Some((_, f)) = all.by_config.get(&config.id) {
            return Some(Rc::clone(f));
        }
        if let Some(prototype) = &config.prototype {
            let f = Rc::new(prototype.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone());
            all.by_config.insert(config.id, (Arc::clone(config), Rc::clone(&f)));
            return Some(f);
        }
        let host = NativeHost { filter: stream, config: None, metrics: &metrics_of.metrics, answer: None };
        match AnyFilter::configure(&config.name, &host, &config.bytes) {
            Ok(f) => {
                let f = Rc::new(f);
                all.by_config.insert(config.id, (Arc::clone(config), Rc::clone(&f)));
                Some(f)
            }
            Err(e) => {
                abi::log(abi::Level::Error, &format!("{}: {e}", config.name));
                None
            }
        }
    })
}

/// At the request headers: when the route has its own configuration, the
/// stream is served by it from now on.
fn switch_to_route(s: &mut NativeStream, stream: abi::Stream) {
    let Some(route) = abi::route_config(stream) else { return };
    // SAFETY: `route` is a pointer per_route_config_new made with
    // Arc::into_raw, alive while the route is (Envoy keeps it for the
    // stream); one more strong count for the stream.
    let route = unsafe {
        Arc::increment_strong_count(route.cast::<NativeConfig>());
        Arc::from_raw(route.cast::<NativeConfig>())
    };
    if let Some(filter) = instance(&route, &s.config, stream) {
        s.state = filter.new_stream();
        s.filter = filter;
        s.route = Some(route);
    }
}

fn with_stream<R>(ptr: *const c_void, f: impl FnOnce(&mut NativeStream) -> R) -> Option<R> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is the Box filter_new made, alive until
    // on_http_filter_destroy, and Envoy calls a stream's hooks one at a time
    // on its worker thread.
    let slot = unsafe { &mut *(ptr as *mut Slot) };
    slot.0.as_mut().map(f)
}

/// 0: continue; 1: stop (the filter answered).
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: abi::EnvoyPtr,
    stream: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded("request headers", 0, || {
        // SAFETY: the pointer this hook received, used only in it.
        let filter = unsafe { abi::Stream::new(filter_envoy) };
        #[cfg(feature = "panic-on-demand")]
        if abi::header(filter, abi::HeaderMap::Request, "x-resilience-test-panic").is_some() {
            #[allow(clippy::panic)]
            {
                panic!("panic on demand");
            }
        }
        with_stream(stream, |s| {
            switch_to_route(s, filter);
            let host = NativeHost { filter, config: None, metrics: &s.config.metrics, answer: None };
            match s.filter.request_headers(&mut s.state, &host) {
                Flow::Continue => 0,
                Flow::Pause => 1,
            }
        })
        .unwrap_or(0)
    })
}

/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: abi::EnvoyPtr,
    stream: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded("response headers", 0, || {
        // SAFETY: the pointer this hook received, used only in it.
        let filter = unsafe { abi::Stream::new(filter_envoy) };
        with_stream(stream, |s| {
            let host = NativeHost { filter, config: None, metrics: &s.config.metrics, answer: None };
            s.filter.response_headers(&mut s.state, &host);
        });
        0
    })
}

/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: abi::EnvoyPtr,
    stream: *const c_void,
) {
    guarded("stream completion", (), || {
        // SAFETY: the pointer this hook received, used only in it.
        let filter = unsafe { abi::Stream::new(filter_envoy) };
        with_stream(stream, |s| {
            let host = NativeHost { filter, config: None, metrics: &s.config.metrics, answer: None };
            s.filter.complete(&mut s.state, &host);
        });
    })
}

/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    guarded("stream teardown", (), || {
        if !stream.is_null() {
            // SAFETY: the Box filter_new made, given back once.
            let mut slot = unsafe { Box::from_raw(stream as *mut Slot) };
            slot.0 = None;
            // (While the worker exits, the list may be gone: the slot is freed.)
            let _ = FREE_SLOTS.try_with(|free| {
                if let Ok(mut free) = free.try_borrow_mut() {
                    if free.len() < KEPT_SLOTS {
                        free.push(slot);
                    }
                }
            });
        }
    })
}

/// The request body and trailer hooks: nothing to do, the request goes on.
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _f: abi::EnvoyPtr,
    _s: *const c_void,
    _end: bool,
) -> u32 {
    0
}

/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _f: abi::EnvoyPtr,
    _s: *const c_void,
) -> u32 {
    0
}

/// A chunk of the response body: read for a cost; the last one held while
/// a cost is charged to the rate limit service.
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: abi::EnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded("response body", 0, || {
        // SAFETY: the pointer this hook received, used only in it.
        let filter = unsafe { abi::Stream::new(filter_envoy) };
        let flow = with_stream(stream, |s| {
            let host = NativeHost { filter, config: None, metrics: &s.config.metrics, answer: None };
            let flow = s.filter.response_body(&mut s.state, &host, end_of_stream);
            s.response_paused = flow == Flow::Pause;
            flow
        });
        // StopIterationAndBuffer holds the chunk until continue_encoding.
        u32::from(flow == Some(Flow::Pause))
    })
}

/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _f: abi::EnvoyPtr,
    _s: *const c_void,
) -> u32 {
    0
}

/// A route's own configuration (`typed_per_filter_config`): its
/// `per_route_config_name` is the policy and `filter_config` its JSON, as
/// for the filter. Checked and built once here (tables created; a refusal
/// is the one line and Envoy rejects the route configuration); a request on
/// that route is then served by it instead of the filter's configuration.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: abi::EnvoyBuffer,
    config: abi::EnvoyBuffer,
) -> *const c_void {
    guarded("per-route configuration", std::ptr::null(), || {
        let Some((name, bytes)) = checked(name, config) else { return std::ptr::null() };
        // No metrics can be defined here (Envoy lends no configuration to
        // define them on): a route's instance counts through the filter's
        // configuration's metrics (its labelled families, and the names that
        // configuration defined).
        let metrics = Metrics::default();
        let host = NativeHost { filter: abi::Stream::NONE, config: None, metrics: &metrics, answer: None };
        if built(&name, &host, &bytes).is_none() {
            return std::ptr::null();
        }
        NativeConfig::into_raw(name, bytes, metrics, None)
    })
}

/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: *const c_void) {
    // SAFETY: as for the filter's configuration.
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(config) }
}

/// A call to the rate limit service answered (or failed): handed to the
/// filter, and the request resumed unless the filter answered it.
///
/// # Safety
/// Called by Envoy with the pointers the ABI describes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: abi::EnvoyPtr,
    stream: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const abi::EnvoyHeader,
    headers_len: usize,
    chunks: *const abi::EnvoyBuffer,
    chunks_len: usize,
) {
    guarded("call answer", (), || {
        // SAFETY: the pointers this hook received, used only in it.
        let filter = unsafe { abi::Stream::new(filter_envoy) };
        // SAFETY: as the ABI lends them for this hook.
        let (headers, mut body) = unsafe { abi::callout_answer(headers, headers_len, chunks, chunks_len) };
        let header = |name: &str| headers.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.as_slice());
        let status = header(":status").and_then(|s| std::str::from_utf8(s).ok()?.trim().parse::<u16>().ok());
        let grpc = header("content-type").is_some_and(|c| c.starts_with(b"application/grpc"));
        let answer = host::CallAnswer { status: if result == 0 { status } else { None }, body: Vec::new() };
        let reply = if grpc {
            // The message, past its 5-byte frame header; the status from the
            // headers of a trailers-only answer, else OK for a 200.
            body = body.get(5..).map(<[u8]>::to_vec).unwrap_or_default();
            let code = header("grpc-status").and_then(|s| std::str::from_utf8(s).ok()?.trim().parse::<u32>().ok());
            let code = match (result, answer.status, code) {
                (0, _, Some(c)) => c,
                (0, Some(200), None) => 0,
                _ => 14, // UNAVAILABLE: no usable answer
            };
            filters_core::host::CallReply::Grpc { status: code, size: body.len() }
        } else {
            filters_core::host::CallReply::Http { size: body.len() }
        };
        let answer = host::CallAnswer { body, ..answer };
        let flow = with_stream(stream, |s| {
            let host = NativeHost { filter, config: None, metrics: &s.config.metrics, answer: Some(&answer) };
            let flow = s.filter.call_reply(&mut s.state, &host, u32::try_from(callout_id).unwrap_or(u32::MAX), reply);
            (flow, std::mem::take(&mut s.response_paused))
        });
        match flow {
            Some((Flow::Continue, true)) => abi::continue_encoding(filter),
            Some((Flow::Continue, false)) => abi::continue_decoding(filter),
            _ => {}
        }
    })
}

/// Hooks for what the module never starts (streams, schedules): nothing to do.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark() {}

/// A local reply: sent as is (0: continue).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply() -> u32 {
    0
}
