//! Proxy-Wasm sticky-session filter: glue between the host and
//! `filters_core::sticky`. It picks the backend for each request, writes its
//! `ip:port` into the header the proxy's upstream selection reads (Envoy's
//! `override_host` load-balancing policy, or an nginx `map`), pins the
//! session with a signed cookie, and records each backend's failures in
//! shared data so that every worker fails over together.

use filters_core::breaker::network_failure;
use filters_core::hash::mix64;
use filters_core::sticky::config::StickyConfig;
use filters_core::sticky::Sticky;
use filters_host::{
    add_response_header, now_nanos, property_string, property_u64, request_view, response_header, send_local_reply,
    Counter, HostStore,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};
use std::cell::Cell;
use std::rc::Rc;

filters_host::filter_entry!(Root);

struct BackendMetrics {
    assigned: Counter,
    failovers: Counter,
    ejected: Counter,
}

struct Shared {
    sticky: Sticky,
    per_backend: Vec<BackendMetrics>,
    cookie_rejected: Counter,
    all_down: Counter,
    store_errors: Counter,
    /// Per-VM counter mixed into the `random` fallback's seed.
    random_counter: Cell<u64>,
}

/// The root context: parses the configuration and builds the hash table
/// once per VM.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = filters_host::load_config(StickyConfig::from_json) else { return false };
        let sticky = Sticky::new(config);
        let Some(created) = filters_host::created_or_log("the health records", sticky.initialize(&HostStore)) else {
            return false;
        };
        let per_backend = sticky
            .config()
            .backends
            .iter()
            .map(|b| BackendMetrics {
                assigned: Counter::define(&format!("sticky.{}.assigned", b.name)),
                failovers: Counter::define(&format!("sticky.{}.failovers", b.name)),
                ejected: Counter::define(&format!("sticky.{}.ejected", b.name)),
            })
            .collect();
        Counter::define("sticky.configured").inc();
        log::info!("configured {} backend(s), {created} new health record(s)", sticky.config().backends.len());
        self.shared = Some(Rc::new(Shared {
            sticky,
            per_backend,
            cookie_rejected: Counter::define("sticky.cookie_rejected"),
            all_down: Counter::define("sticky.all_down"),
            store_errors: Counter::define("sticky.store_errors"),
            random_counter: Cell::new(0),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { shared: self.shared.clone(), chosen: None, set_cookie: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    shared: Option<Rc<Shared>>,
    chosen: Option<usize>,
    set_cookie: Option<String>,
}

impl Context for Filter {}

impl Filter {
    fn record(&self, shared: &Shared, backend: usize, now: u64, failure: bool) {
        match shared.sticky.record(&HostStore, backend, now, failure) {
            Ok(true) => {
                if let Some(m) = shared.per_backend.get(backend) {
                    m.ejected.inc();
                }
                log::warn!("backend {} ejected after failures in a row", shared.sticky.name(backend));
            }
            Ok(false) => {}
            Err(_) => shared.store_errors.inc(),
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let sticky = &shared.sticky;
        // A client must never choose the upstream itself.
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &sticky.config().upstream_header, None);
        let Some(now) = now_nanos() else {
            shared.store_errors.inc();
            return Action::Continue;
        };
        let req = request_view(true);
        let mut cache: Vec<Option<bool>> = vec![None; sticky.config().backends.len()];
        let mut up = |i: usize| -> bool {
            if let Some(Some(known)) = cache.get(i) {
                return *known;
            }
            let is_up = match sticky.health(&HostStore, i) {
                Ok(h) => h.up(now),
                Err(_) => {
                    shared.store_errors.inc();
                    true
                }
            };
            if let Some(slot) = cache.get_mut(i) {
                *slot = Some(is_up);
            }
            is_up
        };
        let n = shared.random_counter.get().wrapping_add(1);
        shared.random_counter.set(n);
        let choice = match sticky.choose(&req, &mut up, mix64(now ^ n.rotate_left(32))) {
            Ok(c) => c,
            Err(_) => {
                shared.all_down.inc();
                let headers = vec![("retry-after".to_string(), "1".to_string())];
                if send_local_reply(503, &headers, b"no backend is available\n") {
                    return Action::Pause;
                }
                return Action::Continue;
            }
        };
        if choice.cookie_rejected {
            shared.cookie_rejected.inc();
        }
        if let Some(m) = shared.per_backend.get(choice.backend) {
            m.assigned.inc();
        }
        if let Some(m) = choice.failed_over_from.and_then(|f| shared.per_backend.get(f)) {
            m.failovers.inc();
        }
        if let Some(b) = sticky.config().backends.get(choice.backend) {
            let _ = hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                &sticky.config().upstream_header,
                Some(&b.address.to_string()),
            );
        }
        self.chosen = Some(choice.backend);
        self.set_cookie = choice.set_cookie;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some(chosen) = self.chosen else { return Action::Continue };
        if let Some(c) = self.set_cookie.take() {
            add_response_header("set-cookie", &c);
        }
        if let Some(h) = &shared.sticky.config().backend_header {
            add_response_header(h, shared.sticky.name(chosen));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let Some(chosen) = self.chosen else { return };
        let Some(now) = now_nanos() else { return };
        // Attribute the outcome to the backend that answered (the proxy may
        // have used another one, e.g. on a retry), else to the chosen one.
        let used =
            property_string(&["upstream", "address"]).and_then(|a| shared.sticky.by_address(&a)).unwrap_or(chosen);
        let status = response_header(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .or_else(|| property_u64(&["response", "code"]).and_then(|c| u16::try_from(c).ok()))
            .unwrap_or(0);
        let flags = property_u64(&["response", "flags"]);
        let details = property_string(&["response", "code_details"]);
        if status == 0 && details.is_none() {
            return; // the client left before any answer
        }
        let failure = status >= 500 || network_failure(flags, details.as_deref(), status);
        // When the proxy had to answer from another backend (a retry moved
        // away from the chosen one), the chosen one failed.
        if used != chosen {
            self.record(&shared, chosen, now, true);
        }
        self.record(&shared, used, now, failure);
    }
}
