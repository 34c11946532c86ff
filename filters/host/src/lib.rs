//! The one adapter between proxy-wasm and the core: [`ProxyHost`] implements
//! the core's [`Host`] seam over proxy-wasm's host calls, and
//! [`filter_entry!`] turns any core [`Filter`] into proxy-wasm root and HTTP
//! contexts. This crate is the only code in the workspace that calls
//! `proxy_wasm`'s host functions (`clippy.toml` refuses them elsewhere).
//!
//! Host differences handled here (the rest is in the core's store protocol
//! and parsers):
//! * Header values and properties are read as bytes: a value that is not
//!   UTF-8 (legal on the wire) is decoded lossily instead of trapping the VM
//!   as the SDK's string accessors would.
//! * Shared data: a missing key is `NotFound` in one host and an empty answer
//!   in the other; both are "absent". A compare-and-swap mismatch is `false`.
//! * Every host call's error is returned or ignored, never unwrapped.
#![forbid(unsafe_code)]
// This crate is where host calls are allowed (clippy.toml refuses them elsewhere).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![warn(missing_docs)]

pub use proxy_wasm;

use filters_core::clock::Clock;
use filters_core::host::{lossy_text, Call, CallReply, Filter, Flow, Host, HostKind, MetricKind};
use filters_core::store::{Entry, SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// Declares a filter's proxy-wasm entry point for a core [`Filter`] type:
/// log level, root context and HTTP contexts. The one `unsafe` the SDK's
/// `main!` needs (`#[no_mangle]` exports) is allowed here and nowhere else.
#[macro_export]
macro_rules! filter_entry {
    ($filter:ty) => {
        #[allow(unsafe_code, clippy::disallowed_types)]
        mod proxy_wasm_entry {
            #[allow(unused_imports)]
            use super::*;
            $crate::proxy_wasm::main! {{
                $crate::proxy_wasm::set_log_level($crate::proxy_wasm::types::LogLevel::Info);
                $crate::proxy_wasm::set_root_context(|_| -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
                    Box::new($crate::Root::<$filter>::default())
                });
            }}
        }
    };
}

/// The proxy, through proxy-wasm's host calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

impl Clock for ProxyHost {
    /// Both hosts always answer; were one to refuse, 0 reads as a clock
    /// stepped far back, which every algorithm in the core tolerates.
    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .unwrap_or(0)
    }
}

impl SharedStore for ProxyHost {
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

thread_local! {
    /// The host's kind, learnt at the first request of this VM.
    static KIND: Cell<Option<HostKind>> = const { Cell::new(None) };
}

impl Host for ProxyHost {
    /// nginx answers `ngx.pid` (inside a request: at configure time it logs
    /// an error instead); Envoy answers "not found", silently.
    fn kind(&self) -> HostKind {
        if let Some(kind) = KIND.with(Cell::get) {
            return kind;
        }
        let kind = match hostcalls::get_property(vec!["ngx", "pid"]) {
            Ok(Some(_)) => HostKind::Nginx,
            _ => HostKind::Envoy,
        };
        KIND.with(|k| k.set(Some(kind)));
        kind
    }

    fn request_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok()?.map(lossy_text)
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, lossy_text(value)))
            .collect()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok()?
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name).ok()?.map(lossy_text)
    }

    fn add_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        hostcalls::send_http_response(u32::from(status), headers, Some(body)).is_ok()
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        let sent = match *call {
            Call::Grpc { target, service, method, body, timeout } => {
                hostcalls::dispatch_grpc_call(target, service, method, Vec::new(), Some(body), timeout)
            }
            Call::Http { target, headers, body, timeout } => {
                hostcalls::dispatch_http_call(target, headers.to_vec(), Some(body), Vec::new(), timeout)
            }
        };
        sent.map_err(|status| format!("{status:?}"))
    }

    fn call_status(&self) -> Option<u16> {
        let bytes = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status").ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    fn call_body(&self, reply: CallReply) -> Vec<u8> {
        let (buffer, size) = match reply {
            CallReply::Grpc { size, .. } => (BufferType::GrpcReceiveBuffer, size),
            CallReply::Http { size } => (BufferType::HttpCallResponseBody, size),
        };
        hostcalls::get_buffer(buffer, 0, size).ok().flatten().unwrap_or_default()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(kind, name).ok()
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        if let Ok(delta) = i64::try_from(delta) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// The root context of filter `F`: configures it once per VM (worker) from
/// the plugin configuration; a refusal is logged in one line and the proxy
/// refuses the configuration.
pub struct Root<F: Filter> {
    filter: Option<Rc<F>>,
}

impl<F: Filter> Default for Root<F> {
    fn default() -> Self {
        Root { filter: None }
    }
}

impl<F: Filter> Context for Root<F> {}

impl<F: Filter> RootContext for Root<F> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes =
            hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default();
        match filters_core::host::configure::<F, _>(&ProxyHost, &bytes) {
            Ok(filter) => {
                self.filter = Some(Rc::new(filter));
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream::<F> { filter: self.filter.clone(), state: F::Stream::default() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request through filter `F`.
struct Stream<F: Filter> {
    filter: Option<Rc<F>>,
    state: F::Stream,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl<F: Filter> Stream<F> {
    fn call_reply(&mut self, token: u32, reply: CallReply) {
        let Some(filter) = self.filter.clone() else { return };
        if filter.on_call_reply(&mut self.state, &ProxyHost, token, reply) == Flow::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl<F: Filter> Context for Stream<F> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.call_reply(token_id, CallReply::Grpc { status: status_code, size: response_size });
    }

    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.call_reply(token_id, CallReply::Http { size: body_size });
    }
}

impl<F: Filter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &self.filter {
            Some(filter) => action(filter.on_request_headers(&mut self.state, &ProxyHost)),
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(filter) = &self.filter {
            filter.on_response_headers(&mut self.state, &ProxyHost);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(filter) = &self.filter {
            filter.on_log(&mut self.state, &ProxyHost);
        }
    }
}

/// Test-only wrapper: traps the VM when a request carries
/// `x-rate-limit-test-trap`, so the integration tests can show what Envoy's
/// `failure_policy` does when the VM dies. Used only by the rate limiter's
/// `trap-on-demand` build; never in a shipped `.wasm`.
pub struct TrapOnDemand<F: Filter>(F);

impl<F: Filter> Filter for TrapOnDemand<F> {
    type Stream = F::Stream;
    const METRIC_PREFIX: &'static str = F::METRIC_PREFIX;

    fn configure<H: Host>(host: &H, config: &[u8]) -> Result<Self, filters_core::host::Refused> {
        F::configure(host, config).map(TrapOnDemand)
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

    fn on_log<H: Host>(&self, stream: &mut Self::Stream, host: &H) {
        self.0.on_log(stream, host)
    }

    fn on_call_reply<H: Host>(&self, stream: &mut Self::Stream, host: &H, token: u32, reply: CallReply) -> Flow {
        self.0.on_call_reply(stream, host, token, reply)
    }
}
