//! A stand-in for Envoy behind the dynamic-module ABI, for tests and fuzz
//! targets only (the crate's own tests, and the `fake-envoy` feature the
//! fuzz crate turns on; never in the shipped module): it defines the
//! `envoy_dynamic_module_callback_*` functions [`crate::abi`] declares, over
//! one in-memory request per thread, and counts each call. [`FakeEnvoy`]
//! drives the module's exported event hooks as Envoy does (configuration,
//! stream, request headers, response headers, completion, teardown), so a
//! test sees exactly the ABI calls a request costs in the real proxy, and a
//! fuzz target reaches the module through its real entry points.
//!
//! Envoy's pointers (`filter_envoy_ptr`, `filter_config_envoy_ptr`) are a
//! marker here: the state is this thread's.
#![allow(unsafe_code)]

use crate::abi::{EnvoyBuffer, EnvoyHeader, EnvoyPtr, ModuleBuffer, ModuleHeader};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::rc::Rc;

/// One request as the fake Envoy holds it, and what the module did to it.
#[derive(Debug, Default)]
struct State {
    request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    strings: BTreeMap<u32, Vec<u8>>,
    ints: BTreeMap<u32, u64>,
    calls: BTreeMap<&'static str, u32>,
    sent: Option<u16>,
    errors: Vec<String>,
    metrics: u64,
    callouts: u64,
    /// The response body chunk being delivered, in slices.
    body: Vec<Vec<u8>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
    /// [`fuzz_request`]'s sample configurations, by policy.
    static SAMPLE_CONFIGS: RefCell<BTreeMap<&'static str, Rc<FakeConfig>>> = RefCell::default();
}

/// The marker passed as Envoy's pointers.
static MARKER: u8 = 0;

fn marker() -> EnvoyPtr {
    std::ptr::addr_of!(MARKER).cast_mut().cast::<c_void>()
}

thread_local! {
    /// Is the module's code running (inside a hook, outside the fake's
    /// callbacks)? Const-initialised, no destructor: the counting allocator
    /// of the crate's tests reads it without allocating.
    static IN_MODULE: Cell<bool> = const { Cell::new(false) };
    /// Heap allocations the module made since the request began.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Called by a counting global allocator (the crate's tests install one)
/// on every allocation: counted when the module's code made it.
pub fn note_allocation() {
    if IN_MODULE.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

/// Is the module's code running (for an allocator that traces)?
pub fn in_module() -> bool {
    IN_MODULE.with(Cell::get)
}

/// While alive, the code running is the fake's (or the module's, `true`).
struct Running(bool);

impl Running {
    fn enter(module: bool) -> Running {
        Running(IN_MODULE.with(|m| m.replace(module)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        IN_MODULE.with(|m| m.set(self.0));
    }
}

/// Counts a callback; the fake's own work from here to the callback's end
/// is not the module's.
#[must_use]
fn count(name: &'static str) -> Running {
    let fake = Running::enter(false);
    STATE.with(|s| *s.borrow_mut().calls.entry(name).or_insert(0) += 1);
    fake
}

/// Runs a hook: the module's code.
fn module<R>(hook: impl FnOnce() -> R) -> R {
    let _module = Running::enter(true);
    hook()
}

/// The bytes a module buffer lends (empty for a null one).
///
/// # Safety
/// `b` points to `length` readable bytes, or is null.
unsafe fn lent(b: ModuleBuffer) -> Vec<u8> {
    let (ptr, len) = b.parts();
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: as the caller promises.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

fn view(bytes: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer { ptr: bytes.as_ptr(), length: bytes.len() }
}

/// Writes `found` through `out`, a result pointer the module owns: whether
/// there was something to write.
///
/// # Safety
/// `out` is writable.
unsafe fn answer<T>(found: Option<T>, out: *mut T) -> bool {
    match found {
        Some(v) => {
            // SAFETY: as the caller promises.
            unsafe { *out = v };
            true
        }
        None => false,
    }
}

fn map_of(s: &mut State, map: u32) -> &mut Vec<(Vec<u8>, Vec<u8>)> {
    if map == crate::abi::HeaderMap::Response as u32 {
        &mut s.response_headers
    } else {
        &mut s.request_headers
    }
}

// ---- the callbacks (the ABI's names and shapes, as abi.rs declares them) ----
//
// SAFETY (all of them): the module calls them as abi.rs's wrappers do, with
// buffers it lends for the call and result pointers it owns; the views
// handed back point into this thread's state, which nothing changes before
// the wrapper has copied them.

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer) {
    let _fake = count("log");
    // SAFETY: see above.
    let text = String::from_utf8_lossy(&unsafe { lent(message) }).into_owned();
    if level >= crate::abi::Level::Warn as u32 {
        STATE.with(|s| s.borrow_mut().errors.push(text));
    }
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool {
    let _fake = count("log_enabled");
    level >= crate::abi::Level::Warn as u32
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _filter: EnvoyPtr,
    map: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    count_out: *mut usize,
) -> bool {
    let _fake = count("get_header");
    // SAFETY: see above.
    let key = unsafe { lent(key) };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let values: Vec<EnvoyBuffer> =
            map_of(&mut s, map).iter().filter(|(n, _)| n.eq_ignore_ascii_case(&key)).map(|(_, v)| view(v)).collect();
        // SAFETY: see above.
        unsafe {
            if !count_out.is_null() {
                *count_out = values.len();
            }
            answer(values.get(index).copied(), result)
        }
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(_filter: EnvoyPtr, body: u32) -> usize {
    let _fake = count("get_body_chunks_size");
    if body != 2 {
        return 0;
    }
    STATE.with(|s| s.borrow().body.len())
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(
    _filter: EnvoyPtr,
    body: u32,
    result: *mut EnvoyBuffer,
) -> bool {
    let _fake = count("get_body_chunks");
    if body != 2 {
        return false;
    }
    STATE.with(|s| {
        for (i, slice) in s.borrow().body.iter().enumerate() {
            // SAFETY: the module sized `result` by get_body_chunks_size.
            unsafe { *result.add(i) = view(slice) };
        }
        true
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(_filter: EnvoyPtr, map: u32) -> usize {
    let _fake = count("get_headers_size");
    STATE.with(|s| map_of(&mut s.borrow_mut(), map).len())
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _filter: EnvoyPtr,
    map: u32,
    result: *mut EnvoyHeader,
) -> bool {
    let _fake = count("get_headers");
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        for (i, (n, v)) in map_of(&mut s, map).iter().enumerate() {
            // SAFETY: the module sized `result` by get_headers_size.
            unsafe { *result.add(i) = EnvoyHeader::new(view(n), view(v)) };
        }
        true
    })
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _filter: EnvoyPtr,
    map: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let _fake = count("set_header");
    // SAFETY: see above.
    let (key, remove, value) = unsafe { (lent(key), value.parts().0.is_null(), lent(value)) };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let headers = map_of(&mut s, map);
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&key));
        if !remove {
            headers.push((key, value));
        }
    });
    true
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _filter: EnvoyPtr,
    map: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let _fake = count("add_header");
    // SAFETY: see above.
    let header = unsafe { (lent(key), lent(value)) };
    STATE.with(|s| map_of(&mut s.borrow_mut(), map).push(header));
    true
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_send_response(
    _filter: EnvoyPtr,
    status: u32,
    headers: *const ModuleHeader,
    headers_len: usize,
    _body: ModuleBuffer,
    _details: ModuleBuffer,
) {
    let _fake = count("send_response");
    let headers: Vec<(Vec<u8>, Vec<u8>)> = (0..headers_len)
        .map(|i| {
            // SAFETY: see above.
            let (k, v) = unsafe { (*headers.add(i)).parts() };
            // SAFETY: see above.
            unsafe { (lent(k), lent(v)) }
        })
        .collect();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.sent = u16::try_from(status).ok();
        s.response_headers = headers;
    });
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
    _filter: EnvoyPtr,
    id: u32,
    result: *mut EnvoyBuffer,
) -> bool {
    let _fake = count("get_attribute_string");
    let found = STATE.with(|s| s.borrow().strings.get(&id).map(|v| view(v)));
    // SAFETY: see above.
    unsafe { answer(found, result) }
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
    _filter: EnvoyPtr,
    id: u32,
    result: *mut u64,
) -> bool {
    let _fake = count("get_attribute_int");
    let found = STATE.with(|s| s.borrow().ints.get(&id).copied());
    // SAFETY: see above.
    unsafe { answer(found, result) }
}

fn define(id: *mut usize) -> u32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        // SAFETY: see above.
        unsafe { *id = usize::try_from(s.metrics).unwrap_or(usize::MAX) };
        s.metrics += 1;
    });
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _config: EnvoyPtr,
    _name: ModuleBuffer,
    _labels: *const ModuleBuffer,
    _labels_len: usize,
    id: *mut usize,
) -> u32 {
    let _fake = count("define_counter");
    define(id)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
    _config: EnvoyPtr,
    _name: ModuleBuffer,
    _labels: *const ModuleBuffer,
    _labels_len: usize,
    id: *mut usize,
) -> u32 {
    let _fake = count("define_gauge");
    define(id)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
    _filter: EnvoyPtr,
    _id: usize,
    _labels: *const ModuleBuffer,
    labels_len: usize,
    _value: u64,
) -> u32 {
    let _fake = count(if labels_len == 0 { "increment_counter" } else { "increment_counter (labelled)" });
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _config: EnvoyPtr,
    _id: usize,
    _labels: *const ModuleBuffer,
    _labels_len: usize,
    _value: u64,
) -> u32 {
    let _fake = count("config_increment_counter");
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_set_gauge(
    _filter: EnvoyPtr,
    _id: usize,
    _labels: *const ModuleBuffer,
    labels_len: usize,
    _value: u64,
) -> u32 {
    let _fake = count(if labels_len == 0 { "set_gauge" } else { "set_gauge (labelled)" });
    0
}

#[no_mangle]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
    _filter: EnvoyPtr,
    callout_id: *mut u64,
    _cluster: ModuleBuffer,
    _headers: *const ModuleHeader,
    _headers_len: usize,
    _body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    let _fake = count("http_callout");
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.callouts += 1;
        // SAFETY: see above.
        unsafe { *callout_id = s.callouts };
    });
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_continue_encoding(_filter: EnvoyPtr) {
    let _fake = count("continue_encoding");
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(_filter: EnvoyPtr) {
    let _fake = count("continue_decoding");
}

/// No tracer: the module finds no span.
#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_active_span(_filter: EnvoyPtr) -> *mut c_void {
    let _fake = count("get_active_span");
    std::ptr::null_mut()
}

/// No route has a configuration of its own.
#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_get_most_specific_route_config(_filter: EnvoyPtr) -> *const c_void {
    let _fake = count("get_most_specific_route_config");
    std::ptr::null()
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_span_set_tag(
    _span: *mut c_void,
    _key: ModuleBuffer,
    _value: ModuleBuffer,
) {
    let _fake = count("span_set_tag");
}

// ---- the driver ----

/// A configuration the module accepted, as Envoy holds it.
#[derive(Debug)]
pub struct FakeConfig {
    config: *const c_void,
}

/// What one request did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The ABI calls it made (configuration-time calls excluded), by name.
    pub calls: BTreeMap<&'static str, u32>,
    /// The status of the module's local reply, if it answered.
    pub sent: Option<u16>,
    /// The request's headers as the upstream would get them.
    pub request_headers: Vec<(String, String)>,
    /// The response's headers as the client would get them.
    pub response_headers: Vec<(String, String)>,
    /// Heap allocations the module's code made for the request (counted
    /// only under a counting global allocator, as the crate's tests install:
    /// 0 otherwise).
    pub allocations: u64,
}

impl Outcome {
    /// All ABI calls.
    pub fn total(&self) -> u32 {
        self.calls.values().sum()
    }
}

/// The response an upstream gives in [`FakeEnvoy::request`].
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// `:status`.
    pub status: u16,
    /// `upstream.address`.
    pub address: &'a str,
}

/// What an upstream's answer carries beyond its status.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Response headers after `:status`.
    pub headers: &'a [(&'a str, &'a str)],
    /// Body chunks, one body hook each.
    pub body: &'a [&'a [u8]],
    /// The last chunk ends the stream (else the client goes away mid-body).
    pub ends: bool,
}

impl Default for Answer<'_> {
    fn default() -> Self {
        Answer { headers: &[], body: &[], ends: true }
    }
}

/// The fake Envoy of this thread.
#[derive(Debug, Default)]
pub struct FakeEnvoy;

fn text(bytes: &[u8]) -> EnvoyBuffer {
    view(bytes)
}

fn strings(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

impl FakeEnvoy {
    /// The module's configuration `policy` with `json`; `Err` holds the
    /// lines it logged when it refused it.
    pub fn configure(policy: &str, json: &str) -> Result<FakeConfig, Vec<String>> {
        Self::configure_bytes(policy, json.as_bytes())
    }

    /// [`FakeEnvoy::configure`] with any bytes as the configuration.
    pub fn configure_bytes(policy: &str, json: &[u8]) -> Result<FakeConfig, Vec<String>> {
        STATE.with(|s| s.borrow_mut().errors.clear());
        // SAFETY: the hook as Envoy calls it: its name and configuration
        // lent for the call.
        let config = unsafe {
            crate::envoy_dynamic_module_on_http_filter_config_new(marker(), text(policy.as_bytes()), text(json))
        };
        if config.is_null() {
            return Err(STATE.with(|s| std::mem::take(&mut s.borrow_mut().errors)));
        }
        Ok(FakeConfig { config })
    }

    /// The lines at warning level or above the module logged since the last
    /// configuration.
    pub fn errors() -> Vec<String> {
        STATE.with(|s| s.borrow().errors.clone())
    }
}

impl FakeConfig {
    /// One request through the module, from `peer`, with `headers`, answered
    /// by `upstream` unless the module answers it.
    pub fn request(&self, peer: &str, headers: &[(&str, &str)], upstream: Upstream<'_>) -> Outcome {
        self.exchange(peer, headers, upstream, &Answer::default())
    }

    /// [`FakeConfig::request`], the upstream answering with `answer`'s
    /// extra headers and body.
    pub fn exchange(
        &self,
        peer: &str,
        headers: &[(&str, &str)],
        upstream: Upstream<'_>,
        answer: &Answer<'_>,
    ) -> Outcome {
        use crate::abi::Attribute as A;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let errors = std::mem::take(&mut s.errors);
            *s = State { errors, metrics: s.metrics, callouts: s.callouts, ..State::default() };
            s.request_headers = headers.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
            s.strings.insert(A::SourceAddress as u32, peer.as_bytes().to_vec());
            s.strings.insert(A::XdsClusterName as u32, b"demo".to_vec());
            s.strings.insert(A::XdsRouteName as u32, b"all".to_vec());
        });
        let f = marker();
        ALLOCATIONS.with(|n| n.set(0));
        // SAFETY: the hooks in Envoy's order, with the stream pointer the
        // first returned, destroyed once at the end.
        unsafe {
            let stream = module(|| crate::envoy_dynamic_module_on_http_filter_new(self.config, f));
            module(|| crate::envoy_dynamic_module_on_http_filter_request_headers(f, stream, true));
            let answered = STATE.with(|s| s.borrow().sent.is_some());
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                let status = s.sent.unwrap_or(upstream.status);
                s.ints.insert(A::ResponseCode as u32, u64::from(status));
                s.ints.insert(A::ResponseFlags as u32, 0);
                s.ints.insert(A::UpstreamRequestAttemptCount as u32, 1);
                s.strings.insert(A::ResponseCodeDetails as u32, b"via_upstream".to_vec());
                if !answered {
                    s.strings.insert(A::UpstreamAddress as u32, upstream.address.as_bytes().to_vec());
                    s.response_headers = vec![(b":status".to_vec(), status.to_string().into_bytes())];
                    for (n, v) in answer.headers {
                        s.response_headers.push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
                    }
                }
            });
            if !answered {
                let no_body = answer.body.is_empty();
                module(|| crate::envoy_dynamic_module_on_http_filter_response_headers(f, stream, no_body));
                for (i, chunk) in answer.body.iter().enumerate() {
                    // Each chunk lent in two slices, as Envoy's buffers may be.
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    STATE.with(|s| s.borrow_mut().body = vec![a.to_vec(), b.to_vec()]);
                    let end = answer.ends && i + 1 == answer.body.len();
                    module(|| crate::envoy_dynamic_module_on_http_filter_response_body(f, stream, end));
                }
                STATE.with(|s| s.borrow_mut().body.clear());
            }
            module(|| crate::envoy_dynamic_module_on_http_filter_stream_complete(f, stream));
            module(|| crate::envoy_dynamic_module_on_http_filter_destroy(stream));
        }
        let allocations = ALLOCATIONS.with(Cell::get);
        STATE.with(|s| {
            let s = s.borrow();
            Outcome {
                calls: s.calls.clone(),
                sent: s.sent,
                request_headers: strings(&s.request_headers),
                response_headers: strings(&s.response_headers),
                allocations,
            }
        })
    }
}

impl Drop for FakeConfig {
    fn drop(&mut self) {
        // SAFETY: the pointer config_new returned, given back once.
        unsafe { crate::envoy_dynamic_module_on_http_filter_config_destroy(self.config) }
    }
}

/// The samples users copy (`envoy/*.yaml`), by policy.
const SAMPLES: [(&str, &str); 5] = [
    ("rate_limit", include_str!("../../../envoy/rate-limit.yaml")),
    ("circuit_breaker", include_str!("../../../envoy/circuit-breaker.yaml")),
    ("retry", include_str!("../../../envoy/retry.yaml")),
    ("sticky_session", include_str!("../../../envoy/sticky-session.yaml")),
    ("bundle", include_str!("../../../envoy/bundle.yaml")),
];

/// The policies, in the README's order.
pub const POLICIES: [&str; 5] = ["rate_limit", "circuit_breaker", "retry", "sticky_session", "bundle"];

/// The plugin configuration of `policy`'s sample (`envoy/*.yaml`): the JSON
/// of its first `value: |` block.
pub fn sample_config(policy: &str) -> String {
    let text = SAMPLES.iter().find(|(p, _)| *p == policy).map_or("", |(_, t)| t);
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim() == "value: |") else { return String::new() };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let block = lines.get(start + 1..).unwrap_or_default();
    let head = lines.get(start).map_or(0, |l| indent(l));
    block.iter().take_while(|l| l.trim().is_empty() || indent(l) > head).copied().collect::<Vec<_>>().join("\n")
}

/// A fuzz target's input through the module's exported hooks: byte 0
/// picks the policy (low bits) and whether the configuration is its sample
/// or the input's own (bit 7); then, up to a 0 byte, the configuration
/// (when the input's own); then request headers as `name: value` lines,
/// the last line's first byte picking the upstream's status. Whatever the
/// input, the module must neither panic (a panic is caught by the hook and
/// logged as a failure: that line is the fuzzer's finding) nor answer with
/// something other than its policies' statuses.
#[allow(clippy::panic)]
pub fn fuzz_request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let policy = POLICIES.get(usize::from(first & 0x7f) % POLICIES.len()).copied().unwrap_or("bundle");
    let (config, rest) = if first & 0x80 == 0 {
        // The samples are configured once per thread (a configuration
        // creates its tables: milliseconds), their state kept between inputs.
        let Some(config) = SAMPLE_CONFIGS.with(|all| {
            let mut all = all.borrow_mut();
            if !all.contains_key(policy) {
                all.insert(policy, Rc::new(FakeEnvoy::configure(policy, &sample_config(policy)).ok()?));
            }
            all.get(policy).cloned()
        }) else {
            return;
        };
        (config, rest)
    } else {
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let Ok(config) = FakeEnvoy::configure_bytes(policy, rest.get(..end).unwrap_or_default()) else { return };
        (Rc::new(config), rest.get(end + 1..).unwrap_or_default())
    };
    let text = String::from_utf8_lossy(rest);
    let mut headers: Vec<(&str, &str)> = vec![(":method", "GET"), (":path", "/"), (":authority", "example.com")];
    for line in text.lines() {
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() => headers.push((name, value.trim())),
            _ => {}
        }
    }
    let statuses = [200, 500, 503, 404, 0];
    let status = statuses.get(usize::from(rest.last().copied().unwrap_or(0)) % 5).copied().unwrap_or(200);
    for _ in 0..2 {
        let outcome = config.request("10.1.2.3:4000", &headers, Upstream { status, address: "127.0.0.1:8081" });
        if let Some(line) = FakeEnvoy::errors().iter().find(|l| l.contains("a bug:")) {
            panic!("{line}");
        }
        if let Some(sent) = outcome.sent {
            assert!(matches!(sent, 429 | 503), "{policy} answered {sent}");
        }
    }
}
