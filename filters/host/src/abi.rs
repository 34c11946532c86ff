//! The Proxy-Wasm ABI (0.2.1), written by hand: the host functions the
//! filters call, each behind a safe wrapper, and the memory hand-over the
//! host uses to return bytes. This module holds every `unsafe` block of the
//! workspace (the lint denies `unsafe` everywhere else), so every call into
//! the proxy goes through here.
//!
//! Why not the SDK: `bench/COST-MODEL.md` measured its dispatcher
//! (context maps, boxed contexts, every callback exported) at about 0.2-0.5
//! of a no-op filter's cost per request, and its wrappers panic on a status
//! they do not expect. Here a status the wrapper does not expect is an
//! error value, never a panic.
//!
//! Memory: a call that returns bytes makes the host call
//! `proxy_on_memory_allocate` (exported by [`crate::filter_entry!`], served
//! by [`allocate`]) and write into the buffer it got; the wrapper then owns
//! that buffer as a `Vec<u8>` of exactly that length and capacity, which is
//! how [`allocate`] made it.
#![allow(unsafe_code)]

use std::ptr::{null, null_mut};

/// The status a host function answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    /// Done.
    pub const OK: Status = Status(0);
    /// No such key, header or property.
    pub const NOT_FOUND: Status = Status(1);
    /// Shared data: the compare-and-swap value did not match.
    pub const CAS_MISMATCH: Status = Status(8);
}

/// Which header map a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Map {
    /// The request's headers.
    RequestHeaders = 0,
    /// The response's headers.
    ResponseHeaders = 2,
    /// The headers of a dispatched HTTP call's answer.
    CallResponseHeaders = 6,
}

/// Which buffer a call reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Buffer {
    /// The chunk of the response body being delivered.
    HttpResponseBody = 1,
    /// The body of a dispatched HTTP call's answer.
    CallResponseBody = 4,
    /// The message of a gRPC call's answer.
    GrpcReceive = 5,
    /// The plugin configuration.
    PluginConfiguration = 7,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warning.
    Warn = 3,
    /// Error.
    Error = 4,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, out: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, out: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, out: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_grpc_call(
        upstream: *const u8,
        upstream_size: usize,
        service: *const u8,
        service_size: usize,
        method: *const u8,
        method_size: usize,
        metadata: *const u8,
        metadata_size: usize,
        message: *const u8,
        message_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(millis: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_metric(id: u32, out: *mut u64) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
}

/// Serves `proxy_on_memory_allocate`: a buffer of `size` bytes that the
/// host fills and a wrapper below takes back with [`take`].
pub fn allocate(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    ptr
}

/// Takes back a buffer the host returned (`None`: it returned none).
///
/// Safety: `ptr` and `size` are what the host wrote after a call that
/// returns bytes; the host got `ptr` from [`allocate`] with that very size.
unsafe fn take(ptr: *mut u8, size: usize) -> Option<Vec<u8>> {
    // SAFETY: `allocate` made a Vec with capacity `size` at `ptr`, and the
    // host initialised its `size` bytes.
    (!ptr.is_null()).then(|| unsafe { Vec::from_raw_parts(ptr, size, size) })
}

/// A host function that returns bytes: `Ok(None)` when the host says
/// "not found" or returns nothing.
fn returning_bytes(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let (mut ptr, mut size) = (null_mut(), 0usize);
    match Status(call(&mut ptr, &mut size)) {
        // SAFETY: the host answered OK, so `ptr`/`size` describe its buffer.
        Status::OK => Ok(unsafe { take(ptr, size) }),
        Status::NOT_FOUND => Ok(None),
        status => Err(status),
    }
}

fn status(code: u32) -> Result<(), Status> {
    match Status(code) {
        Status::OK => Ok(()),
        status => Err(status),
    }
}

/// Writes a line to the proxy's log.
pub fn log(level: Level, message: &str) {
    // SAFETY: the pointer and length describe `message`, read by the host during the call.
    unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The host's wall clock, in nanoseconds since the epoch (0 if refused).
pub fn now_nanos() -> u64 {
    let mut now = 0u64;
    // SAFETY: `now` outlives the call, which writes one u64 into it.
    let code = unsafe { proxy_get_current_time_nanoseconds(&mut now) };
    if code == 0 {
        now
    } else {
        0
    }
}

/// Up to `max` bytes of a buffer.
pub fn buffer(kind: Buffer, max: usize) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-pointers are valid for the call.
    returning_bytes(|out, size| unsafe { proxy_get_buffer_bytes(kind as u32, 0, max, out, size) })
}

/// Every pair of a header map, serialized as the ABI does (see [`Pairs`]).
pub fn header_pairs(map: Map) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-pointers are valid for the call.
    returning_bytes(|out, size| unsafe { proxy_get_header_map_pairs(map as u32, out, size) })
}

/// The first value of header `name`.
pub fn header(map: Map, name: &str) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: `name` is read during the call; the out-pointers are valid for it.
    returning_bytes(|out, size| unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), out, size) })
}

/// Sets header `name` to `value` (replacing every value), or removes it.
pub fn set_header(map: Map, name: &str, value: Option<&str>) -> Result<(), Status> {
    // SAFETY: `name` and `value` are read during the call.
    status(unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), v.as_ptr(), v.len()),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    })
}

/// Adds a value to header `name`.
pub fn add_header(map: Map, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: `name` and `value` are read during the call.
    status(unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// A property; `path` is its segments joined by NUL bytes.
pub fn property(path: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: `path` is read during the call; the out-pointers are valid for it.
    returning_bytes(|out, size| unsafe { proxy_get_property(path.as_ptr(), path.len(), out, size) })
}

/// A shared-data value and its compare-and-swap number.
pub fn shared_get(key: &str) -> Result<(Option<Vec<u8>>, u32), Status> {
    let mut cas = 0u32;
    // SAFETY: `key` is read during the call; the out-pointers (and `cas`) are valid for it.
    let value =
        returning_bytes(|out, size| unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), out, size, &mut cas) })?;
    Ok((value, cas))
}

/// Writes a shared-data value, if `cas` still matches (0: unconditionally,
/// in Envoy; nginx only inserts an absent key with 0).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: `key` and `value` are read during the call.
    status(unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) })
}

/// Answers the request locally with `headers` serialized as [`serialize_pairs`] does.
pub fn send_local_response(code: u32, headers: &[u8], body: &[u8]) -> Result<(), Status> {
    // SAFETY: every pointer/length pair describes a live slice read during the call.
    status(unsafe {
        proxy_send_local_response(code, null(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1)
    })
}

/// Dispatches an HTTP call; its token.
pub fn http_call(upstream: &str, headers: &[u8], body: &[u8], timeout_ms: u32) -> Result<u32, Status> {
    let trailers = serialize_pairs::<&[u8]>(&[]);
    let mut token = 0u32;
    // SAFETY: every pointer/length pair describes a live slice read during the call; `token` is valid for it.
    status(unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Dispatches a unary gRPC call; its token.
pub fn grpc_call(upstream: &str, service: &str, method: &str, message: &[u8], timeout_ms: u32) -> Result<u32, Status> {
    let metadata = serialize_pairs::<&[u8]>(&[]);
    let mut token = 0u32;
    // SAFETY: every pointer/length pair describes a live slice read during the call; `token` is valid for it.
    status(unsafe {
        proxy_grpc_call(
            upstream.as_ptr(),
            upstream.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Resumes the paused request.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(0) })
}

/// Asks for `proxy_on_tick` every `millis` on the current (root) context.
pub fn set_tick_period(millis: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// Resumes the held response.
pub fn resume_response() -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(1) })
}

/// Makes `context_id` the context later calls act on (a call's answer
/// arrives on the root context).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Defines a metric (0: counter, 1: gauge); its id.
pub fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: `name` is read during the call; `id` is valid for it.
    status(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds to a counter.
pub fn increment_metric(id: u32, delta: i64) {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, delta) };
}

/// Sets a gauge.
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    unsafe { proxy_record_metric(id, value) };
}

/// A metric's value.
pub fn metric(id: u32) -> Result<u64, Status> {
    let mut value = 0u64;
    // SAFETY: `value` is valid for the call.
    status(unsafe { proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

/// Sets property `path` (segments joined by NUL bytes) to `value`.
pub fn set_property(path: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are read during the call.
    status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Serializes header pairs as the ABI wants them: the count, each pair's
/// two lengths, then each name and value followed by a NUL (all u32
/// little-endian).
pub fn serialize_pairs<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(n, v)| n.len() + v.as_ref().len() + 10).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// The pairs of a serialized header map, borrowed from the host's buffer.
/// A malformed buffer ends the iteration (no panic).
pub struct Pairs<'a> {
    bytes: &'a [u8],
    index: usize,
    count: usize,
    data: usize,
}

impl<'a> Pairs<'a> {
    /// Iterates over `bytes` as [`serialize_pairs`] lays them out.
    pub fn new(bytes: &'a [u8]) -> Self {
        let count = read_u32(bytes, 0).unwrap_or(0) as usize;
        let data = count.saturating_mul(8).saturating_add(4);
        Pairs { bytes, index: 0, count, data }
    }

    /// How many pairs the buffer announces (at most; a malformed buffer
    /// yields fewer).
    pub fn len(&self) -> usize {
        self.count.min(self.bytes.len() / 10)
    }

    /// The buffer announces no pairs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let lengths = 4 + self.index * 8;
        let name_len = read_u32(self.bytes, lengths)? as usize;
        let value_len = read_u32(self.bytes, lengths + 4)? as usize;
        let name = self.bytes.get(self.data..self.data.checked_add(name_len)?)?;
        let value_at = self.data + name_len + 1;
        let value = self.bytes.get(value_at..value_at.checked_add(value_len)?)?;
        self.data = value_at + value_len + 1;
        self.index += 1;
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::{serialize_pairs, Pairs};

    #[test]
    fn pairs_round_trip_and_malformed_buffers_end_quietly() {
        let bytes = serialize_pairs(&[(":method", "GET"), ("x-empty", ""), ("cookie", "a=1")]);
        let got: Vec<(&[u8], &[u8])> = Pairs::new(&bytes).collect();
        assert_eq!(got, vec![(&b":method"[..], &b"GET"[..]), (b"x-empty", b""), (b"cookie", b"a=1")]);
        for cut in 0..bytes.len() {
            assert!(Pairs::new(&bytes[..cut]).count() <= 3);
        }
        assert_eq!(Pairs::new(&[]).count(), 0);
        assert_eq!(Pairs::new(&[255, 255, 255, 255]).count(), 0);
    }
}
