//! The rate limiter as a proxy filter: read the request, decide the local
//! limits, ask the rate limit service for the global ones, reply or pass,
//! add the quota headers to the response, count.
//!
//! # A global limit's call
//!
//! Local limits are decided first; only a request they let through is sent
//! to the service, and the request waits ([`Flow::Pause`]) for the answer:
//! an answer that decodes gives its verdict; no usable answer (the host
//! refused to dispatch, a gRPC status other than OK, no HTTP response, a
//! body that does not decode, an unknown code) leaves it to `failure_mode`.
//! All of that is `super::global` (`global/call.rs`), entered once here at
//! the request and once at the answer.

use super::config::{Mode, RateLimitConfig};
use super::cost::{Cost, CostSource};
use super::global::call::{Caller, Pending};
use super::{Decision, GlobalCall, LimitState, RateLimiter, Refusal};
use crate::config::ConfigError;
use crate::host::{CallReply, Filter, Flow, Host, Refused};
use crate::request::RequestView;
use crate::usage::{Framing, UsageScanner};

crate::metrics! {
    /// One limit's verdicts (`rate_limit.<limit>.*`).
    pub struct LimitMetrics { gauges: [], counters: [allowed, refused, shadow_refused] }
}

crate::metrics! {
    /// A limit's costs learnt from responses (`rate_limit.<limit>.*`), for a
    /// limit whose cost comes after the response.
    pub struct CostMetrics { gauges: [], counters: [cost_charged, cost_defaulted] }
}

crate::metrics! {
    /// The filter's own counters (`rate_limit.*`).
    pub struct FilterMetrics { gauges: [], counters: [store_errors, client_ip_fallback] }
}

/// The rate-limit filter, one per worker.
#[derive(Debug, Clone)]
pub struct RateLimitFilter {
    pub(super) limiter: RateLimiter,
    per_limit: Vec<LimitMetrics>,
    /// Per limit: its cost metrics, when its cost comes after the response.
    per_cost: Vec<Option<CostMetrics>>,
    pub(super) metrics: FilterMetrics,
    /// The rate limit service, when a limit is global.
    global: Option<Caller>,
    needs_peer: bool,
    /// The headers the limits read (`None`: all of them).
    needed_headers: Option<Vec<String>>,
}

/// One request's state.
#[derive(Debug, Default)]
pub struct RateLimitStream {
    pub(super) response_headers: super::ResponseHeaders,
    /// A local decision's outcomes: its headers are spelled when the
    /// response comes (nothing kept as text meanwhile).
    pub(super) local_quota: smallvec::SmallVec<[super::LimitOutcome; 4]>,
    pub(super) pending: Option<Pending>,
    /// What was decided, for the span ([`Filter::span_attributes`]).
    pub(super) verdict: Option<Verdict>,
    /// Costs to settle when the response says them.
    pub(super) charges: smallvec::SmallVec<[super::Charge; 1]>,
    /// The body's scan, while a charge waits for a number from it.
    usage: Option<Box<UsageScanner>>,
    /// Global limits' costs to charge when the response says them.
    pub(super) global_charges: smallvec::SmallVec<[super::GlobalCharge; 1]>,
    /// The call charging them, while the end of the response waits for it.
    pub(super) settling: Option<u32>,
}

/// A request's verdict: `ratelimit.result`, and the limit that refused
/// (index into the configured limits) for `ratelimit.limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) result: Outcome,
    pub(super) limit: Option<usize>,
}

/// `ratelimit.result`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every matching limit admitted it.
    Allowed,
    /// A limit refused it (enforce mode).
    Refused,
    /// A limit would have refused it (shadow mode).
    ShadowRefused,
    /// The rate limit service failed; `failure_mode` let it through.
    FailureModeAllowed,
    /// The rate limit service failed; `failure_mode` refused it.
    FailureModeDenied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::ShadowRefused => "shadow_refused",
            Outcome::FailureModeAllowed => "failure_mode_allowed",
            Outcome::FailureModeDenied => "failure_mode_denied",
        }
    }
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

    pub(super) fn count<H: Host>(&self, host: &H, limit: usize, state: LimitState) {
        let Some(m) = self.per_limit.get(limit) else { return };
        match (state, self.limiter.config().mode) {
            (LimitState::Allowed, _) => m.allowed.inc(host),
            (LimitState::Refused, Mode::Enforce) => m.refused.inc(host),
            (LimitState::Refused, Mode::Shadow) => m.shadow_refused.inc(host),
            (LimitState::StoreError, _) => self.metrics.store_errors.inc(host),
            (LimitState::NotCharged, _) => {}
        }
    }

    pub(super) fn record<H: Host>(&self, host: &H, decision: &Decision) {
        for o in &decision.outcomes {
            self.count(host, o.limit, o.state);
        }
        if decision.client_ip_fallback {
            self.metrics.client_ip_fallback.inc(host);
        }
    }

    /// The verdict of a decision (`None`: no limit matched).
    pub(super) fn verdict(&self, decision: &Decision) -> Option<Verdict> {
        if decision.outcomes.is_empty() {
            return None;
        }
        let result = match (decision.refused_by, self.limiter.config().mode) {
            (None, _) => Outcome::Allowed,
            (Some(_), Mode::Enforce) => Outcome::Refused,
            (Some(_), Mode::Shadow) => Outcome::ShadowRefused,
        };
        Some(Verdict { result, limit: decision.refused_by })
    }

    /// The response headers came: charges whose cost is a response header
    /// settle now; a charge waiting for the body starts its scan. (A global
    /// limit's cost from the response is always its body's: refused
    /// otherwise at load.)
    fn costs_from_headers<H: Host>(&self, stream: &mut RateLimitStream, host: &H) {
        let cost_of = |limit: usize| self.limiter.config().limits.get(limit).and_then(|l| l.cost.as_ref());
        let mut i = 0;
        while let Some(charge) = stream.charges.get(i) {
            match cost_of(charge.limit).map(|c| (c, &c.source)) {
                Some((c, CostSource::ResponseHeader(name))) => {
                    let (n, defaulted) =
                        crate::host::with_response_header(host, name, |v| Some(c.of_response(v, None)))
                            .unwrap_or((c.default, true));
                    let charge = stream.charges.swap_remove(i);
                    self.settle(host, &charge, n, defaulted);
                }
                _ => i += 1,
            }
        }
        let reads_body =
            |limit: usize| cost_of(limit).is_some_and(|c| matches!(c.source, CostSource::ResponseBody(..)));
        if stream.charges.iter().map(|c| c.limit).chain(stream.global_charges.iter().map(|c| c.limit)).any(reads_body) {
            let framing =
                crate::host::with_response_header(host, "content-type", |v| Some(Framing::of_content_type(v)));
            let framing = framing.unwrap_or(Framing::Json);
            stream.usage = Some(Box::new(UsageScanner::new(framing)));
        }
    }

    /// Settles every charge left: a body's number where it gave one, else
    /// the limit's default.
    fn settle_all<H: Host>(&self, stream: &mut RateLimitStream, host: &H) {
        for charge in std::mem::take(&mut stream.charges) {
            let Some(cost) = self.limiter.config().limits.get(charge.limit).and_then(|l| l.cost.as_ref()) else {
                continue;
            };
            let (n, defaulted) = cost.of_response(None, stream.usage.as_deref());
            self.settle(host, &charge, n, defaulted);
        }
    }

    fn settle<H: Host>(&self, host: &H, charge: &super::Charge, cost: u64, defaulted: bool) {
        if self.limiter.settle(charge, cost, host, host).is_err() {
            self.metrics.store_errors.inc(host);
        }
        self.count_cost(host, charge.limit, cost, defaulted);
    }

    fn count_cost<H: Host>(&self, host: &H, limit: usize, cost: u64, defaulted: bool) {
        if let Some(Some(m)) = self.per_cost.get(limit) {
            m.cost_charged.add(host, cost);
            if defaulted {
                m.cost_defaulted.inc(host);
            }
        }
    }

    /// Charges the global limits' costs still owed, in one call (see
    /// [`super::global`]): a cost above what the request was charged adds
    /// the difference; one below it cannot be given back (the service
    /// counts up only).
    fn charge_global<H: Host>(&self, stream: &mut RateLimitStream, host: &H, late: bool) -> Flow {
        let (Some(caller), false) = (&self.global, stream.global_charges.is_empty()) else { return Flow::Continue };
        let mut call = GlobalCall::default();
        for charge in std::mem::take(&mut stream.global_charges) {
            let Some(cost) = self.limiter.config().limits.get(charge.limit).and_then(|l| l.cost.as_ref()) else {
                continue;
            };
            let (n, defaulted) = cost.of_response(None, stream.usage.as_deref());
            self.count_cost(host, charge.limit, n, defaulted);
            if n > charge.charged {
                call.limits.push(charge.limit);
                call.descriptors.push(charge.descriptor);
                call.hits.push(Some(n - charge.charged));
            }
        }
        caller.charge(self, host, stream, call, late)
    }

    /// The request was answered without reaching the upstream (another
    /// policy's local reply): nothing will come back to settle; what
    /// admission charged stays charged, as for any admitted request.
    pub fn forget_charges(&self, stream: &mut RateLimitStream) {
        stream.charges.clear();
        stream.global_charges.clear();
    }

    /// Is `token` the call charging this request's costs?
    pub fn settles(&self, stream: &RateLimitStream, token: u32) -> bool {
        stream.settling.is_some_and(|t| t == token)
    }

    /// Sends `refusal`; `Continue` (the request goes through) when the host
    /// refused to send it.
    pub(super) fn reply<H: Host>(host: &H, refusal: &Refusal) -> Flow {
        crate::host::reply_or_pass(host, "rate-limit", refusal.status, &refusal.headers, refusal.body.as_bytes())
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
        let per_cost = config
            .limits
            .iter()
            .map(|l| {
                let after = l.cost.as_ref().is_some_and(Cost::after_response);
                after.then(|| CostMetrics::define(host, &format!("rate_limit.{}.", l.name)))
            })
            .collect();
        let metrics = FilterMetrics::define(host, "rate_limit.");
        let global = config.global.as_ref().map(|g| Caller::new(host, g));
        let needs_peer = config.needs_peer();
        let needed_headers = config.needed_headers();
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
        Ok(RateLimitFilter { limiter, per_limit, per_cost, metrics, global, needs_peer, needed_headers })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut RateLimitStream, host: &H) -> Flow {
        let req = RequestView::fetch(host, self.needed_headers.as_deref(), self.needs_peer);
        let mut decision = self.limiter.check(&req, host, host);
        self.record(host, &decision);
        stream.charges = std::mem::take(&mut decision.charges);
        stream.verdict = self.verdict(&decision);
        if let Some(refusal) = self.limiter.refusal(&decision) {
            if Self::reply(host, &refusal) == Flow::Pause {
                return Flow::Pause;
            }
        }
        match &self.global {
            Some(caller) => caller.ask(self, host, stream, req, &decision),
            None => {
                stream.local_quota = std::mem::take(&mut decision.outcomes);
                Flow::Continue
            }
        }
    }

    fn on_response_headers<H: Host>(&self, stream: &mut RateLimitStream, host: &H) {
        for (name, value) in stream.response_headers.drain(..) {
            host.add_response_header(&name, &value);
        }
        self.limiter.add_headers(&std::mem::take(&mut stream.local_quota), host);
        if !stream.charges.is_empty() || !stream.global_charges.is_empty() {
            self.costs_from_headers(stream, host);
        }
    }

    /// Reads the body for the costs that wait for it; at its end (a JSON
    /// document's, or the stream's), settles them: local buckets at once,
    /// global limits in one call to the service, that chunk held until it
    /// answers.
    fn on_response_body<H: Host>(&self, stream: &mut RateLimitStream, host: &H, size: usize, end: bool) -> Flow {
        if stream.settling.is_some() {
            // Held for the charge: the proxy hands a held filter each later
            // chunk too; they wait with it.
            return Flow::Pause;
        }
        let Some(scan) = stream.usage.as_deref_mut() else { return Flow::Continue };
        let paths = &self.limiter.config().usage_paths;
        host.response_body_with(size, &mut |chunk| scan.feed(chunk, paths));
        // A JSON answer is settled in the chunk that completes it: held
        // there, the client cannot have the whole answer (and go away,
        // which would cancel the call) before the charge is made.
        if !end && !scan.document_complete() {
            return Flow::Continue;
        }
        scan.finish();
        self.settle_all(stream, host);
        let flow = self.charge_global(stream, host, false);
        stream.usage = None;
        flow
    }

    /// A request that ends with charges unsettled settles them now: from
    /// the body read so far, else at their default (the client went away,
    /// the upstream failed, the body said nothing). A request refused here
    /// or by the rate limit service has none to settle.
    fn on_log<H: Host>(&self, stream: &mut RateLimitStream, host: &H) {
        if stream.charges.is_empty() && stream.global_charges.is_empty() {
            return;
        }
        let refused = stream.verdict.is_some_and(|v| matches!(v.result, Outcome::Refused | Outcome::FailureModeDenied));
        if refused {
            self.forget_charges(stream);
            return;
        }
        if let Some(scan) = stream.usage.as_deref_mut() {
            scan.finish();
        }
        self.settle_all(stream, host);
        self.charge_global(stream, host, true);
    }

    fn on_call_reply<H: Host>(&self, stream: &mut RateLimitStream, host: &H, token: u32, reply: CallReply) -> Flow {
        if self.settles(stream, token) {
            stream.settling = None;
            return self.global.as_ref().map_or(Flow::Continue, |c| c.on_charged(host, reply));
        }
        match &self.global {
            Some(caller) => caller.on_reply(self, host, stream, token, reply),
            None => Flow::Pause,
        }
    }

    /// Global limits whose cost the response says send some charges
    /// detached (nginx; a stream that ended early): the Proxy-Wasm adapter
    /// sends them every 50 ms.
    fn tick_period(&self) -> Option<std::time::Duration> {
        let config = self.limiter.config();
        let detached = config.global.is_some()
            && config
                .limits
                .iter()
                .any(|l| l.scope == super::config::Scope::Global && l.cost.as_ref().is_some_and(Cost::after_response));
        detached.then(|| std::time::Duration::from_millis(50))
    }

    /// `ratelimit.result` (`allowed`, `refused`, `shadow_refused`,
    /// `failure_mode_allowed`, `failure_mode_denied`) once a limit matched,
    /// and `ratelimit.limit`, the limit that refused.
    fn span_attributes(&self, stream: &RateLimitStream, out: &mut Vec<(&'static str, String)>) {
        let Some(v) = stream.verdict else { return };
        out.push(("ratelimit.result", v.result.as_str().to_string()));
        if let Some(limit) = v.limit.and_then(|i| self.limiter.config().limits.get(i)) {
            out.push(("ratelimit.limit", limit.name.clone()));
        }
    }
}
