//! Proxy-Wasm rate-limit filter: glue between the host and
//! `filters_core::ratelimit`. Configuration, algorithm and shared-state
//! protocol live in the core; this file only reads the request, calls the
//! limiter, and writes the reply, headers and metrics.

use filters_core::clock::FakeClock;
use filters_core::ratelimit::config::{Mode, RateLimitConfig};
use filters_core::ratelimit::{Decision, LimitState, RateLimiter};
use filters_host::{add_response_header, request_view, request_view_of, send_local_reply, Counter, HostStore};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

filters_host::filter_entry!(Root);

struct LimitMetrics {
    allowed: Counter,
    refused: Counter,
    shadow_refused: Counter,
}

struct Metrics {
    per_limit: Vec<LimitMetrics>,
    store_errors: Counter,
    client_ip_fallback: Counter,
}

impl Metrics {
    fn define(config: &RateLimitConfig) -> Self {
        let per_limit = config
            .limits
            .iter()
            .map(|l| LimitMetrics {
                allowed: Counter::define(&format!("rate_limit.{}.allowed", l.name)),
                refused: Counter::define(&format!("rate_limit.{}.refused", l.name)),
                shadow_refused: Counter::define(&format!("rate_limit.{}.shadow_refused", l.name)),
            })
            .collect();
        Metrics {
            per_limit,
            store_errors: Counter::define("rate_limit.store_errors"),
            client_ip_fallback: Counter::define("rate_limit.client_ip_fallback"),
        }
    }

    fn record(&self, decision: &Decision, mode: Mode) {
        for o in &decision.outcomes {
            let Some(m) = self.per_limit.get(o.limit) else { continue };
            match (o.state, mode) {
                (LimitState::Allowed, _) => m.allowed.inc(),
                (LimitState::Refused, Mode::Enforce) => m.refused.inc(),
                (LimitState::Refused, Mode::Shadow) => m.shadow_refused.inc(),
                (LimitState::StoreError, _) => self.store_errors.inc(),
                (LimitState::NotCharged, _) => {}
            }
        }
        if decision.client_ip_fallback {
            self.client_ip_fallback.inc();
        }
    }
}

struct Shared {
    limiter: RateLimiter,
    metrics: Metrics,
    needs_peer: bool,
    /// The headers the limits read (`None`: all of them).
    needed_headers: Option<Vec<String>>,
}

/// The root context: parses and checks the configuration once per worker.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = filters_host::load_config(RateLimitConfig::from_json) else { return false };
        let metrics = Metrics::define(&config);
        let needs_peer = config.needs_peer();
        let needed_headers = config.needed_headers();
        let limiter = RateLimiter::new(config);
        // Create every bucket before the first request (see the core's
        // "Bounded memory"); existing buckets, e.g. after a VM reload,
        // are kept.
        let Some(created) = filters_host::created_or_log("the rate-limit table", limiter.initialize(&HostStore)) else {
            return false;
        };
        Counter::define("rate_limit.configured").inc();
        log::info!(
            "configured {} limit(s), mode {:?}, {created} new slot(s)",
            limiter.config().limits.len(),
            limiter.config().mode
        );
        self.shared = Some(Rc::new(Shared { limiter, metrics, needs_peer, needed_headers }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { shared: self.shared.clone(), response_headers: Vec::new() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    shared: Option<Rc<Shared>>,
    response_headers: Vec<(String, String)>,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let Some(now) = filters_host::now_nanos() else {
            shared.metrics.store_errors.inc();
            return Action::Continue;
        };
        let req = match &shared.needed_headers {
            Some(names) => request_view_of(names, shared.needs_peer),
            None => request_view(shared.needs_peer),
        };
        // Read directly: `req` holds only the headers the limits need.
        #[cfg(feature = "trap-on-demand")]
        if matches!(
            proxy_wasm::hostcalls::get_map_value_bytes(
                proxy_wasm::types::MapType::HttpRequestHeaders,
                "x-rate-limit-test-trap"
            ),
            Ok(Some(_))
        ) {
            std::process::abort();
        }
        let decision = shared.limiter.check(&req, &FakeClock::at(now), &HostStore);
        shared.metrics.record(&decision, shared.limiter.config().mode);
        if let Some(refusal) = shared.limiter.refusal(&decision) {
            if send_local_reply(refusal.status, &refusal.headers, refusal.body.as_bytes()) {
                return Action::Pause;
            }
            log::warn!("host refused the local reply; request let through");
        }
        self.response_headers = shared.limiter.headers(&decision);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in self.response_headers.drain(..) {
            add_response_header(&name, &value);
        }
        Action::Continue
    }
}
