//! The rate limiter as a proxy filter: read the request, decide the local
//! limits, ask the rate limit service for the global ones, reply or pass,
//! add the quota headers to the response, count.
//!
//! # A global limit's call, step by step
//!
//! Local limits are decided first; only a request they let through is sent
//! to the service. The request then waits ([`Flow::Pause`]) for the answer:
//! * an answer that decodes: its verdict (refusal, or headers for the
//!   request and the response);
//! * no usable answer (the host refused to dispatch, a gRPC status other
//!   than OK, no HTTP response, a body that does not decode, an unknown
//!   code): `failure_mode` decides, in [`RateLimitFilter::service_failed`],
//!   the one place it is decided. A failure counts as a timeout when gRPC
//!   says `DEADLINE_EXCEEDED`, or when the call took its whole timeout (5 ms
//!   of slack: Envoy's clock is the event loop's cached time).

use super::config::{Mode, RateLimitConfig};
use super::global::{self, AnswerError, FailureMode, GlobalService, Protocol};
use super::protocol;
use super::{quota_headers, Decision, GlobalCall, LimitState, QuotaItem, RateLimiter, Refusal};
use crate::config::ConfigError;
use crate::host::{Call, CallReply, Counter, Filter, Flow, Host, Refused};
use crate::request::RequestView;
use std::cell::Cell;
use std::time::Duration;

crate::metrics! {
    /// One limit's verdicts (`rate_limit.<limit>.*`).
    pub struct LimitMetrics { gauges: [], counters: [allowed, refused, shadow_refused] }
}

crate::metrics! {
    /// The filter's own counters (`rate_limit.*`).
    pub struct FilterMetrics { gauges: [], counters: [store_errors, client_ip_fallback] }
}

crate::metrics! {
    /// Calls to the rate limit service (`rate_limit.global.*`, defined only
    /// when a limit is global).
    pub struct GlobalMetrics {
        gauges: [failing],
        counters: [calls, ok, over_limit, errors, timeouts, failure_mode_allowed, failure_mode_denied, degraded, no_limit],
    }
}

/// The rate-limit filter, one per worker.
#[derive(Debug)]
pub struct RateLimitFilter {
    limiter: RateLimiter,
    /// The service's target as the host takes it (Envoy gRPC: a serialized
    /// `GrpcService`).
    target: String,
    per_limit: Vec<LimitMetrics>,
    metrics: FilterMetrics,
    global: Option<GlobalMetrics>,
    needs_peer: bool,
    /// The headers the limits read (`None`: all of them).
    needed_headers: Option<Vec<String>>,
    /// Calls are failing (as last seen by this worker): the first failure
    /// after a success, or after start, logs a warning.
    failing: Cell<Option<bool>>,
    /// An answer without any limit was logged.
    warned_no_limit: Cell<bool>,
}

/// A request paused for the service's answer.
#[derive(Debug)]
struct Pending {
    token: u32,
    call: GlobalCall,
    local: Vec<QuotaItem>,
    req: RequestView,
    started: u64,
}

/// One request's state.
#[derive(Debug, Default)]
pub struct RateLimitStream {
    response_headers: Vec<(String, String)>,
    pending: Option<Pending>,
}

impl RateLimitFilter {
    /// The limiter (configuration and algorithm).
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Does a request's decision read every request header (a repeated
    /// `X-Forwarded-For`), rather than a few by name?
    pub fn needs_all_headers(&self) -> bool {
        self.needed_headers.is_none()
    }

    fn count<H: Host>(&self, host: &H, limit: usize, state: LimitState) {
        let Some(m) = self.per_limit.get(limit) else { return };
        match (state, self.limiter.config().mode) {
            (LimitState::Allowed, _) => m.allowed.inc(host),
            (LimitState::Refused, Mode::Enforce) => m.refused.inc(host),
            (LimitState::Refused, Mode::Shadow) => m.shadow_refused.inc(host),
            (LimitState::StoreError, _) => self.metrics.store_errors.inc(host),
            (LimitState::NotCharged, _) => {}
        }
    }

    fn record<H: Host>(&self, host: &H, decision: &Decision) {
        for o in &decision.outcomes {
            self.count(host, o.limit, o.state);
        }
        if decision.client_ip_fallback {
            self.metrics.client_ip_fallback.inc(host);
        }
    }

    fn global_metric<H: Host>(&self, host: &H, pick: impl Fn(&GlobalMetrics) -> Counter) {
        if let Some(m) = &self.global {
            pick(m).inc(host);
        }
    }

    /// Sends `refusal`; `Continue` (the request goes through) when the host
    /// refused to send it.
    fn reply<H: Host>(host: &H, refusal: &Refusal) -> Flow {
        crate::host::reply_or_pass(host, "rate-limit", refusal.status, &refusal.headers, refusal.body.as_bytes())
    }

    fn dispatch<H: Host>(&self, host: &H, g: &GlobalService, call: &GlobalCall) -> Result<u32, String> {
        match g.protocol {
            Protocol::Grpc => {
                let body = global::encode_grpc_request(&g.domain, &call.descriptors);
                host.dispatch(&Call::Grpc {
                    target: &self.target,
                    service: protocol::GRPC_SERVICE,
                    method: protocol::GRPC_METHOD,
                    body: &body,
                    timeout: g.timeout,
                })
            }
            Protocol::Http => {
                let body = global::encode_json_request(&g.domain, &call.descriptors);
                let headers = [
                    (":method", "POST"),
                    (":path", g.path.as_str()),
                    (":authority", g.authority.as_str()),
                    ("content-type", "application/json"),
                ];
                host.dispatch(&Call::Http { target: &self.target, headers: &headers, body: &body, timeout: g.timeout })
            }
        }
    }

    /// The service gave no usable answer: `failure_mode` decides.
    fn service_failed<H: Host>(&self, host: &H, stream: &mut RateLimitStream, pending: Pending, why: &str) -> Flow {
        let Some(g) = &self.limiter.config().global else { return Flow::Continue };
        self.global_metric(host, |m| m.errors);
        self.service_state(host, g, Some(why));
        let style = self.limiter.config().headers;
        match g.failure_mode {
            FailureMode::Allow => {
                self.global_metric(host, |m| m.failure_mode_allowed);
                stream.response_headers = quota_headers(style, &pending.local);
                Flow::Continue
            }
            FailureMode::Deny if self.limiter.config().mode == Mode::Shadow => Flow::Continue,
            FailureMode::Deny => {
                self.global_metric(host, |m| m.failure_mode_denied);
                Self::reply(host, &self.limiter.service_failure_refusal(g))
            }
            FailureMode::Local { .. } => {
                self.global_metric(host, |m| m.degraded);
                let decision = self.limiter.check_degraded(&pending.req, host, host);
                self.record(host, &decision);
                if let Some(refusal) = self.limiter.refusal(&decision) {
                    return Self::reply(host, &refusal);
                }
                let mut items = pending.local;
                items.extend(self.limiter.quota_items(&decision));
                stream.response_headers = quota_headers(style, &items);
                Flow::Continue
            }
        }
    }

    fn answered<H: Host>(
        &self,
        host: &H,
        stream: &mut RateLimitStream,
        pending: Pending,
        answer: global::Answer,
    ) -> Flow {
        if let Some(g) = &self.limiter.config().global {
            self.service_state(host, g, None);
            if !answer.statuses.is_empty() && answer.statuses.iter().all(|s| s.quota.is_none()) {
                self.global_metric(host, |m| m.no_limit);
                if !self.warned_no_limit.replace(true) {
                    log::warn!(
                        "the rate limit service applies no limit to domain \"{}\": check global.domain and the \
                         service's configuration (counted in rate_limit.global.no_limit)",
                        g.domain
                    );
                }
            }
        }
        let outcome = self.limiter.judge_answer(&pending.call, &answer, pending.local);
        for &(i, state) in &outcome.states {
            self.count(host, i, state);
        }
        self.global_metric(host, |m| if answer.over_limit { m.over_limit } else { m.ok });
        if let Some(refusal) = &outcome.refusal {
            return Self::reply(host, refusal);
        }
        for (name, value) in &outcome.request_headers {
            host.set_request_header(name, Some(value));
        }
        stream.response_headers = outcome.response_headers;
        Flow::Continue
    }

    /// Tracks whether calls fail: the `failing` gauge, and one warning line
    /// when they start failing (a wrong `global.cluster` fails every call).
    fn service_state<H: Host>(&self, host: &H, g: &GlobalService, failure: Option<&str>) {
        let failing = failure.is_some();
        if self.failing.replace(Some(failing)) == Some(failing) {
            return;
        }
        if let Some(m) = &self.global {
            m.failing.set(host, u64::from(failing));
        }
        match failure {
            Some(why) => log::warn!(
                "calls to the rate limit service (cluster \"{}\", domain \"{}\") fail: {why}; failure_mode {:?} \
                 decides until they succeed",
                g.cluster,
                g.domain,
                g.failure_mode
            ),
            None => log::info!("the rate limit service (cluster \"{}\") answers", g.cluster),
        }
    }

    /// Counts a failed call as a timeout (see the module docs).
    fn note_timeout<H: Host>(&self, host: &H, pending: &Pending, grpc_status: Option<u32>) {
        const DEADLINE_EXCEEDED: u32 = 4;
        let Some(g) = &self.limiter.config().global else { return };
        let waited = Duration::from_nanos(host.now_nanos().saturating_sub(pending.started));
        if grpc_status == Some(DEADLINE_EXCEEDED) || waited + Duration::from_millis(5) >= g.timeout {
            self.global_metric(host, |m| m.timeouts);
        }
    }

    /// The answer to `reply`, or why there is none (a timeout noted).
    fn read_answer<H: Host>(&self, host: &H, pending: &Pending, reply: CallReply) -> Result<global::Answer, String> {
        match reply {
            CallReply::Grpc { status: 0, .. } => {
                global::decode_grpc_answer(&host.call_body(reply)).map_err(|e: AnswerError| e.to_string())
            }
            CallReply::Grpc { status, .. } => {
                self.note_timeout(host, pending, Some(status));
                Err(format!("gRPC status {status}"))
            }
            CallReply::Http { .. } => {
                let Some(status) = host.call_status() else {
                    // No response at all: timeout, reset or connection failure.
                    self.note_timeout(host, pending, None);
                    return Err("no response".to_string());
                };
                let answer = global::decode_json_answer(status, &host.call_body(reply));
                if answer.is_err() {
                    // Envoy answers a timed-out call itself, with a 504.
                    self.note_timeout(host, pending, None);
                }
                answer.map_err(|e| e.to_string())
            }
        }
    }

    /// Local limits passed: ask the service about the global ones, if any
    /// matches.
    fn ask_service<H: Host>(
        &self,
        host: &H,
        stream: &mut RateLimitStream,
        req: RequestView,
        decision: &Decision,
    ) -> Flow {
        let (Some(g), Some(call)) = (&self.limiter.config().global, self.limiter.global_call(&req)) else {
            stream.response_headers = self.limiter.headers(decision);
            return Flow::Continue;
        };
        if call.client_ip_fallback && !decision.client_ip_fallback {
            self.metrics.client_ip_fallback.inc(host);
        }
        let local = self.limiter.quota_items(decision);
        self.global_metric(host, |m| m.calls);
        let started = host.now_nanos();
        match self.dispatch(host, g, &call) {
            Ok(token) => {
                stream.pending = Some(Pending { token, call, local, req, started });
                Flow::Pause
            }
            Err(status) => {
                let pending = Pending { token: 0, call, local, req, started };
                self.service_failed(host, stream, pending, &format!("dispatch refused by the host: {status}"))
            }
        }
    }
}

impl Filter for RateLimitFilter {
    type Stream = RateLimitStream;
    type Config = RateLimitConfig;
    const METRIC_PREFIX: &'static str = "rate_limit";

    fn check(config: &[u8]) -> Result<RateLimitConfig, ConfigError> {
        RateLimitConfig::from_json(config)
    }

    fn build<H: Host>(host: &H, config: RateLimitConfig) -> Result<Self, Refused> {
        let per_limit =
            config.limits.iter().map(|l| LimitMetrics::define(host, &format!("rate_limit.{}.", l.name))).collect();
        let metrics = FilterMetrics::define(host, "rate_limit.");
        let global = config.global.as_ref().map(|_| GlobalMetrics::define(host, "rate_limit.global."));
        let needs_peer = config.needs_peer();
        let needed_headers = config.needed_headers();
        let target = config.global.as_ref().map(GlobalService::target).unwrap_or_default();
        let limiter = RateLimiter::new(config);
        // Create every bucket before the first request (see the module's
        // "Bounded memory"); existing buckets, e.g. after a VM reload, are kept.
        Refused::store("the rate-limit table", limiter.reserve(host))??;
        let created = Refused::store("the rate-limit table", limiter.initialize(host))?;
        log::info!(
            "configured {} limit(s), mode {:?}, {created} new slot(s)",
            limiter.config().limits.len(),
            limiter.config().mode
        );
        if let Some(g) = &limiter.config().global {
            // A typo here silently turns every global limit into failure_mode:
            // say loudly what is in use.
            log::warn!(
                "global limits ask cluster \"{}\" ({:?}, {}) for domain \"{}\", timeout {:?}: if the cluster is \
                 wrong every call fails and failure mode {:?} decides; if the domain is wrong the service limits \
                 nothing",
                g.cluster,
                g.protocol,
                g.path,
                g.domain,
                g.timeout,
                g.failure_mode
            );
        }
        Ok(RateLimitFilter {
            limiter,
            target,
            per_limit,
            metrics,
            global,
            needs_peer,
            needed_headers,
            failing: Cell::new(None),
            warned_no_limit: Cell::new(false),
        })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut RateLimitStream, host: &H) -> Flow {
        let req = RequestView::fetch(host, self.needed_headers.as_deref(), self.needs_peer);
        let decision = self.limiter.check(&req, host, host);
        self.record(host, &decision);
        if let Some(refusal) = self.limiter.refusal(&decision) {
            if Self::reply(host, &refusal) == Flow::Pause {
                return Flow::Pause;
            }
        }
        self.ask_service(host, stream, req, &decision)
    }

    fn on_response_headers<H: Host>(&self, stream: &mut RateLimitStream, host: &H) {
        for (name, value) in stream.response_headers.drain(..) {
            host.add_response_header(&name, &value);
        }
    }

    fn on_call_reply<H: Host>(&self, stream: &mut RateLimitStream, host: &H, token: u32, reply: CallReply) -> Flow {
        if stream.pending.as_ref().map(|p| p.token) != Some(token) {
            return Flow::Pause; // not ours: leave the request as it is
        }
        let Some(pending) = stream.pending.take() else { return Flow::Pause };
        match self.read_answer(host, &pending, reply) {
            Ok(answer) => self.answered(host, stream, pending, answer),
            Err(why) => self.service_failed(host, stream, pending, &why),
        }
    }
}
