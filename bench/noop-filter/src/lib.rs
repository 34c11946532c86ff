//! The floor: a Proxy-Wasm filter written with the proxy-wasm Rust SDK that
//! does nothing. The VM is entered for every callback the SDK exports
//! (context create, request and response headers, response body, log, done,
//! delete) and nothing else happens. `bench/COST-MODEL.md` defines one
//! "floor" as what this module adds to Envoy's CPU per request, so every
//! figure in floors here is in the same unit as the cost model's. The
//! filters themselves no longer use the SDK (`filters/host/src/abi.rs`).
// The SDK's entry point macro exports functions with #[no_mangle].
#![allow(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A filter that does nothing.
struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
