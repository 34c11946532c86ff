//! Proxy-Wasm rate-limit filter: glue between the host and
//! `filters_core::ratelimit`. Configuration, algorithm and shared-state
//! protocol live in the core; this file only reads the request, calls the
//! limiter, and writes the reply, headers and metrics.

use filters_core::clock::FakeClock;
use filters_core::ratelimit::config::{Mode, RateLimitConfig};
use filters_core::ratelimit::global::{self, AnswerError, FailureMode, GlobalService, Protocol};
use filters_core::ratelimit::{quota_headers, Decision, GlobalCall, LimitState, QuotaItem, RateLimiter, Refusal};
use filters_core::request::RequestView;
use filters_host::{add_response_header, request_view, request_view_of, send_local_reply, Counter, HostStore};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use std::rc::Rc;
use std::time::Duration;

filters_host::filter_entry!(Root);

struct LimitMetrics {
    allowed: Counter,
    refused: Counter,
    shadow_refused: Counter,
}

/// Calls to the rate limit service (defined only when a limit is global).
struct GlobalMetrics {
    calls: Counter,
    ok: Counter,
    over_limit: Counter,
    errors: Counter,
    timeouts: Counter,
    failure_mode_allowed: Counter,
    failure_mode_denied: Counter,
    degraded: Counter,
}

impl GlobalMetrics {
    fn define() -> Self {
        let c = |n: &str| Counter::define(&format!("rate_limit.global.{n}"));
        GlobalMetrics {
            calls: c("calls"),
            ok: c("ok"),
            over_limit: c("over_limit"),
            errors: c("errors"),
            timeouts: c("timeouts"),
            failure_mode_allowed: c("failure_mode_allowed"),
            failure_mode_denied: c("failure_mode_denied"),
            degraded: c("degraded"),
        }
    }
}

struct Metrics {
    per_limit: Vec<LimitMetrics>,
    store_errors: Counter,
    client_ip_fallback: Counter,
    global: Option<GlobalMetrics>,
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
            global: config.global.as_ref().map(|_| GlobalMetrics::define()),
        }
    }

    /// The service's verdicts (each `Allowed` or `Refused`).
    fn record_global(&self, states: &[(usize, LimitState)], mode: Mode) {
        for &(i, state) in states {
            self.count(i, state, mode);
        }
    }

    fn count(&self, limit: usize, state: LimitState, mode: Mode) {
        let Some(m) = self.per_limit.get(limit) else { return };
        match (state, mode) {
            (LimitState::Allowed, _) => m.allowed.inc(),
            (LimitState::Refused, Mode::Enforce) => m.refused.inc(),
            (LimitState::Refused, Mode::Shadow) => m.shadow_refused.inc(),
            (LimitState::StoreError, _) => self.store_errors.inc(),
            (LimitState::NotCharged, _) => {}
        }
    }

    fn record(&self, decision: &Decision, mode: Mode) {
        for o in &decision.outcomes {
            self.count(o.limit, o.state, mode);
        }
        if decision.client_ip_fallback {
            self.client_ip_fallback.inc();
        }
    }
}

struct Shared {
    limiter: RateLimiter,
    /// The service's target as the host takes it (Envoy gRPC: a serialized
    /// `GrpcService`).
    target: String,
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
        let target = config.global.as_ref().map(grpc_or_http_target).unwrap_or_default();
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
        if let Some(g) = &limiter.config().global {
            log::info!(
                "global limits: {:?} to {} ({}), domain {}, timeout {:?}, failure mode {:?}",
                g.protocol,
                g.cluster,
                g.path,
                g.domain,
                g.timeout,
                g.failure_mode
            );
        }
        self.shared = Some(Rc::new(Shared { limiter, target, metrics, needs_peer, needed_headers }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { shared: self.shared.clone(), response_headers: Vec::new(), pending: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn grpc_or_http_target(g: &GlobalService) -> String {
    match g.protocol {
        // Lengths are checked at configure time so that the bytes are ASCII.
        Protocol::Grpc => {
            String::from_utf8(global::grpc_target(&g.cluster, &g.authority)).unwrap_or_else(|_| g.cluster.clone())
        }
        Protocol::Http => g.cluster.clone(),
    }
}

/// A request paused for the service's answer.
struct Pending {
    token: u32,
    call: GlobalCall,
    local: Vec<QuotaItem>,
    req: RequestView,
    started: u64,
}

struct Filter {
    shared: Option<Rc<Shared>>,
    response_headers: Vec<(String, String)>,
    pending: Option<Pending>,
}

/// What became of a request once its verdict is known.
enum Verdict {
    /// Proxy it.
    Pass,
    /// A local reply was sent.
    Replied,
}

impl Filter {
    fn reply(refusal: &Refusal) -> Verdict {
        if send_local_reply(refusal.status, &refusal.headers, refusal.body.as_bytes()) {
            return Verdict::Replied;
        }
        log::warn!("host refused the local reply; request let through");
        Verdict::Pass
    }

    /// Sends the call; the answer arrives in `on_grpc_call_response` or
    /// `on_http_call_response`.
    fn dispatch(shared: &Shared, g: &GlobalService, call: &GlobalCall) -> Result<u32, proxy_wasm::types::Status> {
        match g.protocol {
            Protocol::Grpc => {
                let body = global::encode_grpc_request(&g.domain, &call.descriptors);
                hostcalls::dispatch_grpc_call(
                    &shared.target,
                    global::GRPC_SERVICE,
                    global::GRPC_METHOD,
                    Vec::new(),
                    Some(&body),
                    g.timeout,
                )
            }
            Protocol::Http => {
                let body = global::encode_json_request(&g.domain, &call.descriptors);
                hostcalls::dispatch_http_call(
                    &shared.target,
                    vec![
                        (":method", "POST"),
                        (":path", &g.path),
                        (":authority", &g.authority),
                        ("content-type", "application/json"),
                    ],
                    Some(&body),
                    Vec::new(),
                    g.timeout,
                )
            }
        }
    }

    /// The service gave no usable answer: `failure_mode` decides.
    fn service_failed(&mut self, shared: &Shared, pending: Pending, why: &str) -> Verdict {
        let Some(g) = &shared.limiter.config().global else { return Verdict::Pass };
        let m = shared.metrics.global.as_ref();
        if let Some(m) = m {
            m.errors.inc();
        }
        log::debug!("rate limit service failed ({why}); failure mode {:?}", g.failure_mode);
        let style = shared.limiter.config().headers;
        match g.failure_mode {
            FailureMode::Allow => {
                if let Some(m) = m {
                    m.failure_mode_allowed.inc();
                }
                self.response_headers = quota_headers(style, &pending.local);
                Verdict::Pass
            }
            FailureMode::Deny => match shared.limiter.service_failure_refusal() {
                Some(refusal) => {
                    if let Some(m) = m {
                        m.failure_mode_denied.inc();
                    }
                    Self::reply(&refusal)
                }
                None => Verdict::Pass, // shadow mode
            },
            FailureMode::Local { .. } => {
                if let Some(m) = m {
                    m.degraded.inc();
                }
                let Some(now) = filters_host::now_nanos() else { return Verdict::Pass };
                let decision = shared.limiter.check_degraded(&pending.req, &FakeClock::at(now), &HostStore);
                shared.metrics.record(&decision, shared.limiter.config().mode);
                if let Some(refusal) = shared.limiter.refusal(&decision) {
                    return Self::reply(&refusal);
                }
                let mut items = pending.local;
                items.extend(shared.limiter.quota_items(&decision));
                self.response_headers = quota_headers(style, &items);
                Verdict::Pass
            }
        }
    }

    fn answered(&mut self, shared: &Shared, pending: Pending, answer: Result<global::Answer, AnswerError>) -> Verdict {
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return self.service_failed(shared, pending, &e.to_string()),
        };
        let mode = shared.limiter.config().mode;
        let outcome = shared.limiter.judge_answer(&pending.call, &answer, pending.local);
        shared.metrics.record_global(&outcome.states, mode);
        if let Some(m) = &shared.metrics.global {
            if answer.over_limit {
                m.over_limit.inc()
            } else {
                m.ok.inc()
            }
        }
        if let Some(refusal) = &outcome.refusal {
            return Self::reply(refusal);
        }
        for (name, value) in &outcome.request_headers {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        }
        self.response_headers = outcome.response_headers;
        Verdict::Pass
    }

    /// Takes the pending call if `token` is its answer.
    fn take_pending(&mut self, token: u32) -> Option<(Rc<Shared>, Pending)> {
        if self.pending.as_ref().map(|p| p.token) != Some(token) {
            return None;
        }
        let pending = self.pending.take()?;
        Some((self.shared.clone()?, pending))
    }

    fn finish(verdict: Verdict) {
        if let Verdict::Pass = verdict {
            let _ = hostcalls::resume_http_request();
        }
    }

    /// Counts a failed call as a timeout when gRPC says DEADLINE_EXCEEDED
    /// or it took the whole timeout. Host clocks are coarse (Envoy's is the
    /// event loop's cached time), hence the 5 ms of slack.
    fn note_timeout(shared: &Shared, pending: &Pending, grpc_status: Option<u32>) {
        const DEADLINE_EXCEEDED: u32 = 4;
        let (Some(g), Some(m), Some(now)) =
            (&shared.limiter.config().global, &shared.metrics.global, filters_host::now_nanos())
        else {
            return;
        };
        let waited = Duration::from_nanos(now.saturating_sub(pending.started));
        if grpc_status == Some(DEADLINE_EXCEEDED) || waited + Duration::from_millis(5) >= g.timeout {
            m.timeouts.inc();
        }
    }
}

impl Context for Filter {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some((shared, pending)) = self.take_pending(token_id) else { return };
        let verdict = if status_code != 0 {
            Self::note_timeout(&shared, &pending, Some(status_code));
            self.service_failed(&shared, pending, &format!("gRPC status {status_code}"))
        } else {
            let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.answered(&shared, pending, global::decode_grpc_answer(&body))
        };
        Self::finish(verdict);
    }

    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some((shared, pending)) = self.take_pending(token_id) else { return };
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let verdict = match status {
            None => {
                // No response at all: timeout, reset or connection failure.
                Self::note_timeout(&shared, &pending, None);
                self.service_failed(&shared, pending, "no response")
            }
            Some(status) => {
                let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let answer = global::decode_json_answer(status, &body);
                if answer.is_err() {
                    // Envoy answers a timed-out call itself, with a 504.
                    Self::note_timeout(&shared, &pending, None);
                }
                self.answered(&shared, pending, answer)
            }
        };
        Self::finish(verdict);
    }
}

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
            if let Verdict::Replied = Self::reply(&refusal) {
                return Action::Pause;
            }
        }
        // Global limits: only when the local ones let the request through.
        if let (Some(g), Some(call)) = (&shared.limiter.config().global, shared.limiter.global_call(&req)) {
            if call.client_ip_fallback && !decision.client_ip_fallback {
                shared.metrics.client_ip_fallback.inc();
            }
            let local = shared.limiter.quota_items(&decision);
            if let Some(m) = &shared.metrics.global {
                m.calls.inc();
            }
            match Self::dispatch(&shared, g, &call) {
                Ok(token) => {
                    self.pending = Some(Pending { token, call, local, req, started: now });
                    return Action::Pause;
                }
                Err(status) => {
                    let pending = Pending { token: 0, call, local, req, started: now };
                    let why = format!("dispatch refused by the host: {status:?}");
                    return match self.service_failed(&shared, pending, &why) {
                        Verdict::Pass => Action::Continue,
                        Verdict::Replied => Action::Pause,
                    };
                }
            }
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
