//! The conversation with the rate limit service, for the filter: entered
//! once at the request (`Caller::ask`: the call dispatched, the request
//! paused) and once at the answer (`Caller::on_reply`: the verdict, or
//! `failure_mode` when there is no usable answer, decided in one place,
//! `Caller::service_failed`).
//!
//! A failure counts as a timeout when gRPC says `DEADLINE_EXCEEDED`, or when
//! the call took its whole timeout (5 ms of slack: Envoy's clock is the
//! event loop's cached time).

use super::super::config::Mode;
use super::super::filter::{Outcome, RateLimitFilter, RateLimitStream, Verdict};
use super::super::{protocol, quota_headers, Decision, LimitState, QuotaItem};
use super::{Answer, AnswerError, FailureMode, GlobalCall, GlobalService, Protocol};
use crate::host::{Call, CallReply, Flow, Host, HostKind};
use crate::request::RequestView;
use std::cell::Cell;
use std::time::Duration;

crate::metrics! {
    /// Calls to the rate limit service (`rate_limit.global.*`, defined only
    /// when a limit is global).
    pub struct GlobalMetrics {
        gauges: [failing],
        counters: [
            calls, ok, over_limit, errors, timeouts, failure_mode_allowed, failure_mode_denied, degraded, no_limit,
            cost_calls, cost_errors
        ],
    }
}

/// A request paused for the service's answer.
#[derive(Debug)]
pub(in crate::ratelimit) struct Pending {
    token: u32,
    call: GlobalCall,
    local: Vec<QuotaItem>,
    req: RequestView,
    started: u64,
}

/// The filter's side of the service: where it is, what it counts, whether
/// calls fail as last seen by this worker.
#[derive(Debug, Clone)]
pub(in crate::ratelimit) struct Caller {
    /// The service's target as the host takes it (Envoy gRPC: a serialized
    /// `GrpcService`).
    target: String,
    metrics: GlobalMetrics,
    /// Calls are failing (as last seen by this worker): the first failure
    /// after a success, or after start, logs a warning.
    failing: Cell<Option<bool>>,
    /// An answer without any limit was logged.
    warned_no_limit: Cell<bool>,
    /// Cost charges are failing (as last seen by this worker): the first
    /// failure after a success, or after start, logs a warning; each is
    /// counted.
    charges_failing: Cell<bool>,
}

impl Caller {
    /// The caller for `g`, its metrics defined on `host`.
    pub(in crate::ratelimit) fn new<H: Host>(host: &H, g: &GlobalService) -> Caller {
        Caller {
            target: g.target(),
            metrics: GlobalMetrics::define(host, "rate_limit.global."),
            failing: Cell::new(None),
            warned_no_limit: Cell::new(false),
            charges_failing: Cell::new(false),
        }
    }

    /// Charges the rest of the costs the response said (`charges`: each
    /// descriptor and what it still owes) in one call. In Envoy, with the
    /// stream still going, the chunk in hand is held until the call answers
    /// (`Pause`): the client cannot have the whole answer before it is
    /// counted. Otherwise (`late`: the stream is ending; or nginx, which
    /// allows calls only from the request phases) the call goes detached
    /// ([`Host::dispatch_detached`]), or, where the host has no such call,
    /// with the ending stream, best effort.
    pub(in crate::ratelimit) fn charge<H: Host>(
        &self,
        f: &RateLimitFilter,
        host: &H,
        stream: &mut RateLimitStream,
        charges: GlobalCall,
        late: bool,
    ) -> Flow {
        let Some(g) = &f.limiter.config().global else { return Flow::Continue };
        if charges.descriptors.is_empty() {
            return Flow::Continue;
        }
        self.metrics.cost_calls.inc(host);
        let nginx = host.kind() == HostKind::Nginx;
        if late || nginx {
            let sent = match self.with_call(g, &charges, |c| host.dispatch_detached(c)) {
                Ok(()) => Ok(()),
                // Never from nginx's response phases: the call traps the VM.
                Err(why) if nginx => Err(why),
                Err(_) => self.dispatch(host, g, &charges).map(|_| ()),
            };
            match sent {
                Ok(()) => self.charges_go_through(),
                Err(why) => self.charge_failed(host, &why),
            }
            return Flow::Continue;
        }
        match self.dispatch(host, g, &charges) {
            Ok(token) => {
                stream.settling = Some(token);
                Flow::Pause
            }
            Err(why) => {
                self.charge_failed(host, &why);
                Flow::Continue
            }
        }
    }

    /// A cost charge that failed: counted each time, said once until
    /// charges go through again (an outage of the service must not write a
    /// line per request).
    fn charge_failed<H: Host>(&self, host: &H, why: &str) {
        self.metrics.cost_errors.inc(host);
        if !self.charges_failing.replace(true) {
            log::warn!(
                "could not charge a cost to the rate limit service: {why} (each failure is counted in \
                 rate_limit.global.cost_errors; said again after charges go through)"
            );
        }
    }

    /// A cost charge sent (detached) or answered.
    fn charges_go_through(&self) {
        if self.charges_failing.replace(false) {
            log::info!("costs are charged to the rate limit service again");
        }
    }

    /// The answer to a cost charged: counted when it failed; the response
    /// goes on either way.
    pub(in crate::ratelimit) fn on_charged<H: Host>(&self, host: &H, reply: CallReply) -> Flow {
        let failure = match reply {
            CallReply::Grpc { status: 0, .. } => None,
            CallReply::Grpc { status, .. } => Some(format!("gRPC status {status}")),
            CallReply::Http { .. } => match host.call_status() {
                Some(200 | 429) => None,
                Some(s) => Some(format!("HTTP status {s}")),
                None => Some("no answer".to_string()),
            },
        };
        match failure {
            None => self.charges_go_through(),
            Some(why) => self.charge_failed(host, &why),
        }
        Flow::Continue
    }

    /// Entered once at the answer: the verdict, or the failure mode.
    pub(in crate::ratelimit) fn on_reply<H: Host>(
        &self,
        f: &RateLimitFilter,
        host: &H,
        stream: &mut RateLimitStream,
        token: u32,
        reply: CallReply,
    ) -> Flow {
        if stream.pending.as_ref().map(|p| p.token) != Some(token) {
            return Flow::Pause; // not ours: leave the request as it is
        }
        let Some(pending) = stream.pending.take() else { return Flow::Pause };
        match self.read_answer(f, host, &pending, reply) {
            Ok(answer) => self.answered(f, host, stream, pending, answer),
            Err(why) => self.service_failed(f, host, stream, pending, &why),
        }
    }

    fn dispatch<H: Host>(&self, host: &H, g: &GlobalService, call: &GlobalCall) -> Result<u32, String> {
        self.with_call(g, call, |c| host.dispatch(c))
    }

    /// `f` of the call to the service asking `call`.
    fn with_call<R>(&self, g: &GlobalService, call: &GlobalCall, f: impl FnOnce(&Call<'_>) -> R) -> R {
        match g.protocol {
            Protocol::Grpc => {
                let body = super::encode_grpc_request(&g.domain, &call.descriptors, &call.hits);
                f(&Call::Grpc {
                    target: &self.target,
                    service: protocol::GRPC_SERVICE,
                    method: protocol::GRPC_METHOD,
                    body: &body,
                    timeout: g.timeout,
                })
            }
            Protocol::Http => {
                let body = super::encode_json_request(&g.domain, &call.descriptors, &call.hits);
                let headers = [
                    (":method", "POST"),
                    (":path", g.path.as_str()),
                    (":authority", g.authority.as_str()),
                    ("content-type", "application/json"),
                ];
                f(&Call::Http { target: &self.target, headers: &headers, body: &body, timeout: g.timeout })
            }
        }
    }

    /// The service gave no usable answer: `failure_mode` decides.
    fn service_failed<H: Host>(
        &self,
        f: &RateLimitFilter,
        host: &H,
        stream: &mut RateLimitStream,
        pending: Pending,
        why: &str,
    ) -> Flow {
        let Some(g) = &f.limiter.config().global else { return Flow::Continue };
        self.metrics.errors.inc(host);
        self.service_state(host, g, Some(why));
        let style = f.limiter.config().headers;
        let failed = |result| Some(Verdict { result, limit: None });
        match g.failure_mode {
            FailureMode::Allow => {
                self.metrics.failure_mode_allowed.inc(host);
                stream.verdict = failed(Outcome::FailureModeAllowed);
                stream.response_headers = quota_headers(style, &pending.local);
                Flow::Continue
            }
            FailureMode::Deny if f.limiter.config().mode == Mode::Shadow => Flow::Continue,
            FailureMode::Deny => {
                self.metrics.failure_mode_denied.inc(host);
                stream.verdict = failed(Outcome::FailureModeDenied);
                RateLimitFilter::reply(host, &f.limiter.service_failure_refusal(g))
            }
            FailureMode::Local { .. } => {
                self.metrics.degraded.inc(host);
                let mut decision = f.limiter.check_degraded(&pending.req, host, host);
                f.record(host, &decision);
                stream.charges.extend(std::mem::take(&mut decision.charges));
                stream.verdict = f.verdict(&decision).or(failed(Outcome::FailureModeAllowed));
                if let Some(refusal) = f.limiter.refusal(&decision) {
                    return RateLimitFilter::reply(host, &refusal);
                }
                let mut items = pending.local;
                items.extend(f.limiter.quota_items(&decision));
                stream.response_headers = quota_headers(style, &items);
                Flow::Continue
            }
        }
    }

    fn answered<H: Host>(
        &self,
        f: &RateLimitFilter,
        host: &H,
        stream: &mut RateLimitStream,
        pending: Pending,
        answer: Answer,
    ) -> Flow {
        if let Some(g) = &f.limiter.config().global {
            self.service_state(host, g, None);
            if !answer.statuses.is_empty() && answer.statuses.iter().all(|s| s.quota.is_none()) {
                self.metrics.no_limit.inc(host);
                if !self.warned_no_limit.replace(true) {
                    log::warn!(
                        "the rate limit service applies no limit to domain \"{}\": check global.domain and the \
                         service's configuration (counted in rate_limit.global.no_limit)",
                        g.domain
                    );
                }
            }
        }
        let outcome = f.limiter.judge_answer(&pending.call, &answer, pending.local);
        for &(i, state) in &outcome.states {
            f.count(host, i, state);
        }
        let refused_by = outcome.states.iter().find(|(_, s)| *s == LimitState::Refused).map(|(i, _)| *i);
        let result = match (refused_by, f.limiter.config().mode) {
            (None, _) => Outcome::Allowed,
            (Some(_), Mode::Enforce) => Outcome::Refused,
            (Some(_), Mode::Shadow) => Outcome::ShadowRefused,
        };
        stream.verdict = Some(Verdict { result, limit: refused_by });
        if answer.over_limit {
            self.metrics.over_limit.inc(host)
        } else {
            self.metrics.ok.inc(host)
        }
        if let Some(refusal) = &outcome.refusal {
            return RateLimitFilter::reply(host, refusal);
        }
        stream.global_charges = f.limiter.global_charges(&pending.call);
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
        self.metrics.failing.set(host, u64::from(failing));
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
    fn note_timeout<H: Host>(&self, f: &RateLimitFilter, host: &H, pending: &Pending, grpc_status: Option<u32>) {
        const DEADLINE_EXCEEDED: u32 = 4;
        let Some(g) = &f.limiter.config().global else { return };
        let waited = Duration::from_nanos(host.now_nanos().saturating_sub(pending.started));
        if grpc_status == Some(DEADLINE_EXCEEDED) || waited + Duration::from_millis(5) >= g.timeout {
            self.metrics.timeouts.inc(host);
        }
    }

    /// The answer to `reply`, or why there is none (a timeout noted).
    fn read_answer<H: Host>(
        &self,
        f: &RateLimitFilter,
        host: &H,
        pending: &Pending,
        reply: CallReply,
    ) -> Result<Answer, String> {
        match reply {
            CallReply::Grpc { status: 0, .. } => {
                super::decode_grpc_answer(&host.call_body(reply)).map_err(|e: AnswerError| e.to_string())
            }
            CallReply::Grpc { status, .. } => {
                self.note_timeout(f, host, pending, Some(status));
                Err(format!("gRPC status {status}"))
            }
            CallReply::Http { .. } => {
                let Some(status) = host.call_status() else {
                    // No response at all: timeout, reset or connection failure.
                    self.note_timeout(f, host, pending, None);
                    return Err("no response".to_string());
                };
                let answer = super::decode_json_answer(status, &host.call_body(reply));
                if answer.is_err() {
                    // Envoy answers a timed-out call itself, with a 504.
                    self.note_timeout(f, host, pending, None);
                }
                answer.map_err(|e| e.to_string())
            }
        }
    }

    /// Entered once at the request: local limits passed, so ask the
    /// service about the global ones, if any matches.
    pub(in crate::ratelimit) fn ask<H: Host>(
        &self,
        f: &RateLimitFilter,
        host: &H,
        stream: &mut RateLimitStream,
        req: RequestView,
        decision: &Decision,
    ) -> Flow {
        let (Some(g), Some(call)) = (&f.limiter.config().global, f.limiter.global_call(&req)) else {
            stream.response_headers = f.limiter.headers(decision);
            return Flow::Continue;
        };
        if call.client_ip_fallback && !decision.client_ip_fallback {
            f.metrics.client_ip_fallback.inc(host);
        }
        let local = f.limiter.quota_items(decision);
        self.metrics.calls.inc(host);
        let started = host.now_nanos();
        match self.dispatch(host, g, &call) {
            Ok(token) => {
                stream.pending = Some(Pending { token, call, local, req, started });
                Flow::Pause
            }
            Err(status) => {
                let pending = Pending { token: 0, call, local, req, started };
                self.service_failed(f, host, stream, pending, &format!("dispatch refused by the host: {status}"))
            }
        }
    }
}
