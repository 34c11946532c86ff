//! Proxy-Wasm circuit-breaker filter: glue between the host and
//! `filters_core::breaker`. The state machine, window, expression language
//! and shared table live in the core; this file resolves the key, admits or
//! rejects, and records the outcome when the stream ends.

use filters_core::breaker::config::{BreakerConfig, KeyKind};
use filters_core::breaker::{network_failure, Admission, Breakers, State, Transition};
use filters_core::request::RequestView;
use filters_core::store::SharedStore;
use filters_host::{
    now_nanos, property_string, property_u64, request_view, response_header, send_local_reply, Counter, Gauge,
    HostStore,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

filters_host::filter_entry!(Root);

/// Longest key kept, in bytes: a longer header value is cut here.
const MAX_KEY_BYTES: usize = 128;
/// Metric name component for keys beyond `max_breakers` metric sets.
const OTHER_KEYS: &str = "_other";

struct BreakerMetrics {
    state: Gauge,
    requests: Counter,
    failures: Counter,
    rejected: Counter,
    opened: Counter,
    half_opened: Counter,
    closed: Counter,
}

impl BreakerMetrics {
    fn define(key: &str) -> Self {
        let name = |m: &str| format!("circuit_breaker.{key}.{m}");
        BreakerMetrics {
            state: Gauge::define(&name("state")),
            requests: Counter::define(&name("requests")),
            failures: Counter::define(&name("failures")),
            rejected: Counter::define(&name("rejected")),
            opened: Counter::define(&name("opened")),
            half_opened: Counter::define(&name("half_opened")),
            closed: Counter::define(&name("closed")),
        }
    }

    fn transition(&self, t: Option<Transition>) {
        let Some(t) = t else { return };
        self.state.set(t.to.gauge());
        match t.to {
            State::Open => self.opened.inc(),
            State::HalfOpen => self.half_opened.inc(),
            State::Closed => self.closed.inc(),
        }
    }
}

struct Shared {
    breakers: Breakers,
    /// Where each key's breaker was last found (a hint; verified on use).
    slots: RefCell<HashMap<String, u32>>,
    metrics: RefCell<HashMap<String, Rc<BreakerMetrics>>>,
    untracked: Counter,
    store_errors: Counter,
}

impl Shared {
    fn metrics(&self, key: &str) -> Rc<BreakerMetrics> {
        let name = metric_component(key);
        let mut all = self.metrics.borrow_mut();
        if let Some(m) = all.get(&name) {
            return m.clone();
        }
        let name =
            if all.len() >= self.breakers.config().max_breakers as usize { OTHER_KEYS.to_string() } else { name };
        all.entry(name.clone()).or_insert_with(|| Rc::new(BreakerMetrics::define(&name))).clone()
    }

    /// Runs `f` on `key`'s record, finding (or claiming) its slot first.
    /// `None`: not tracked (table full) or the store failed (counted).
    fn with_record<R>(
        &self,
        key: &str,
        now: u64,
        mut f: impl FnMut(&mut filters_core::breaker::Record) -> (bool, R),
    ) -> Option<R> {
        let cached = self.slots.borrow().get(key).copied();
        if let Some(slot) = cached {
            match self.breakers.update(&HostStore, slot, key, &mut f) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {
                    self.slots.borrow_mut().remove(key);
                }
                Err(e) => return self.store_failed(e),
            }
        }
        let slot = match self.breakers.find(&HostStore, key, now) {
            Ok(Some((slot, _))) => slot,
            Ok(None) => {
                self.untracked.inc();
                return None;
            }
            Err(e) => return self.store_failed(e),
        };
        {
            let mut slots = self.slots.borrow_mut();
            if slots.len() >= self.breakers.config().max_breakers as usize {
                slots.clear();
            }
            slots.insert(key.to_string(), slot);
        }
        match self.breakers.update(&HostStore, slot, key, f) {
            Ok(r) => r,
            Err(e) => self.store_failed(e),
        }
    }

    fn store_failed<R>(&self, e: filters_core::store::StoreError) -> Option<R> {
        log::warn!("{e}");
        self.store_errors.inc();
        None
    }
}

/// Metric-name-safe form of a key.
fn metric_component(key: &str) -> String {
    key.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The root context: parses and checks the configuration once per VM.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = filters_host::load_config(BreakerConfig::from_json) else { return false };
        let breakers = Breakers::new(config);
        let Some(created) = filters_host::created_or_log("the breaker table", breakers.initialize(&HostStore)) else {
            return false;
        };
        Counter::define("circuit_breaker.configured").inc();
        log::info!("configured, key {:?}, {created} new slot(s)", breakers.config().key);
        self.shared = Some(Rc::new(Shared {
            breakers,
            slots: RefCell::new(HashMap::new()),
            metrics: RefCell::new(HashMap::new()),
            untracked: Counter::define("circuit_breaker.untracked"),
            store_errors: Counter::define("circuit_breaker.store_errors"),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            shared: self.shared.clone(),
            key: String::new(),
            role: Role::None,
            start: 0,
            status: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not measured (no configuration, untracked, or the clock failed).
    None,
    /// Passed while closed.
    Pass,
    /// A half-open probe.
    Probe,
    /// Answered locally by the breaker.
    Rejected,
}

struct Filter {
    shared: Option<Rc<Shared>>,
    key: String,
    role: Role,
    start: u64,
    status: Option<u16>,
}

impl Context for Filter {}

fn resolve_key(kind: &KeyKind, req: &RequestView) -> String {
    let authority = || req.header(":authority").filter(|a| !a.is_empty()).unwrap_or("default").to_string();
    let property = |name: &str| property_string(&["xds", name]).filter(|v| !v.is_empty());
    let mut key = match kind {
        // nginx has no xds.* properties: the authority stands in.
        KeyKind::Cluster => property("cluster_name").unwrap_or_else(authority),
        KeyKind::Route => property("route_name").unwrap_or_else(authority),
        KeyKind::Authority => authority(),
        KeyKind::Header(name) => req.header(name).unwrap_or("-").to_string(),
        KeyKind::Fixed(name) => name.clone(),
    };
    if key.len() > MAX_KEY_BYTES {
        let mut cut = MAX_KEY_BYTES;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
    }
    key
}

impl Filter {
    fn reject(&self, shared: &Shared, retry_after_ns: u64, state: State) -> Action {
        let retry = retry_after_ns.div_ceil(1_000_000_000).max(1);
        let cfg = shared.breakers.config();
        let mut headers = vec![
            ("retry-after".to_string(), retry.to_string()),
            ("x-circuit-breaker".to_string(), format!("{}; state={}", self.key, state.name())),
        ];
        let body = match &cfg.body {
            Some(b) => b.clone(),
            None => {
                headers.push(("content-type".to_string(), "application/json".to_string()));
                serde_json::json!({"error": "circuit_open", "breaker": self.key, "state": state.name(), "retry_after": retry})
                    .to_string()
                    + "\n"
            }
        };
        if send_local_reply(cfg.status, &headers, body.as_bytes()) {
            return Action::Pause;
        }
        log::warn!("host refused the local reply; request let through");
        Action::Continue
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let Some(now) = now_nanos() else {
            shared.store_errors.inc();
            return Action::Continue;
        };
        let req = request_view(false);
        self.key = resolve_key(&shared.breakers.config().key, &req);
        // Fast path: a closed breaker admits without decoding its window.
        let cached = shared.slots.borrow().get(&self.key).copied();
        if let Some(slot) = cached {
            let head = HostStore
                .get(&Breakers::slot_key(slot))
                .ok()
                .flatten()
                .and_then(|e| shared.breakers.decode_head(&e.value).map(|(k, st)| (k == self.key, st)));
            if head == Some((true, State::Closed)) {
                self.start = now;
                self.role = Role::Pass;
                return Action::Continue;
            }
        }
        let admitted = shared.with_record(&self.key, now, |rec| {
            let (a, changed, t) = shared.breakers.admit(rec, now);
            (changed, (a, t, rec.state))
        });
        let Some((admission, transition, state)) = admitted else { return Action::Continue };
        let metrics = shared.metrics(&self.key);
        metrics.transition(transition);
        metrics.state.set(state.gauge());
        self.start = now;
        match admission {
            Admission::Pass => self.role = Role::Pass,
            Admission::Probe => self.role = Role::Probe,
            Admission::Reject { retry_after_ns, state } => {
                self.role = Role::Rejected;
                metrics.rejected.inc();
                return self.reject(&shared, retry_after_ns, state);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if matches!(self.role, Role::Pass | Role::Probe) {
            self.status = response_header(":status").and_then(|s| s.trim().parse().ok());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let probe = match self.role {
            Role::Pass => false,
            Role::Probe => true,
            Role::None | Role::Rejected => return,
        };
        let Some(shared) = self.shared.clone() else { return };
        let Some(now) = now_nanos() else { return };
        let details = property_string(&["response", "code_details"]);
        let status = self.status.or_else(|| property_u64(&["response", "code"]).and_then(|c| u16::try_from(c).ok()));
        let metrics = shared.metrics(&self.key);
        if status.unwrap_or(0) == 0 && details.is_none() {
            // The client went away before any answer: nothing to learn about the upstream.
            if probe {
                shared.with_record(&self.key, now, |rec| (shared.breakers.release_probe(rec), ()));
            }
            return;
        }
        let status = status.unwrap_or(0);
        let flags = property_u64(&["response", "flags"]);
        let network = network_failure(flags, details.as_deref(), status);
        let sample = shared.breakers.sample(status, network, now.saturating_sub(self.start));
        metrics.requests.inc();
        if sample.failure {
            metrics.failures.inc();
        }
        let outcome = shared.with_record(&self.key, now, |rec| {
            let (changed, t) = shared.breakers.complete(rec, now, &sample, probe);
            (changed, (t, rec.state))
        });
        if let Some((t, state)) = outcome {
            metrics.transition(t);
            if let Some(t) = t {
                log::info!("breaker {} {} -> {}", self.key, t.from.name(), t.to.name());
            }
            metrics.state.set(state.gauge());
        }
    }
}
