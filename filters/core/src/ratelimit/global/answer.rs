//! What the service's answer means for a request: the call's descriptors
//! (one per matching global limit) and the verdict, headers and refusal an
//! answer makes.

use super::super::config::{KeyPart, Mode, Scope};
use super::super::{ceil_secs, quota_headers, window_secs, LimitState, QuotaItem, RateLimiter, Refusal};
use super::{Answer, Descriptor, GlobalService};
use crate::request::RequestView;

/// A call to the rate limit service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalCall {
    /// The matching global limits (indices), in descriptor order.
    pub limits: Vec<usize>,
    /// One descriptor per limit.
    pub descriptors: Vec<Descriptor>,
    /// Per descriptor: its own `hits_addend` (a limit with a `cost`: the
    /// cost known at the request, or the estimate of one known after it),
    /// `None` for 1.
    pub hits: Vec<Option<u64>>,
    /// As [`crate::ratelimit::Decision::client_ip_fallback`].
    pub client_ip_fallback: bool,
}

/// A global limit's cost still to charge once the response says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalCharge {
    /// Index into the configured limits.
    pub limit: usize,
    /// The descriptor the request was counted under.
    pub descriptor: Descriptor,
    /// What the request charged (the estimate).
    pub charged: u64,
}

/// What an answer means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalOutcome {
    /// Send this instead of proxying (over the limit, enforce mode).
    pub refusal: Option<Refusal>,
    /// Otherwise: headers for the response (every limit's state, and the
    /// service's `response_headers_to_add`).
    pub response_headers: super::super::ResponseHeaders,
    /// Headers for the upstream request (`request_headers_to_add`).
    pub request_headers: Vec<(String, String)>,
    /// Each global limit's verdict (for metrics): `Allowed` or `Refused`.
    pub states: Vec<(usize, LimitState)>,
}

impl RateLimiter {
    /// The call to the rate limit service for a request, `None` when no
    /// global limit matches it. One descriptor per matching global limit (see
    /// [`crate::ratelimit::global`] for the entries).
    pub fn global_call(&self, req: &RequestView) -> Option<GlobalCall> {
        let mut call = GlobalCall::default();
        let mut ip_cache = None;
        let mut trusted = None;
        let path = req.path();
        for (i, limit) in self.config.limits.iter().enumerate() {
            if limit.scope != Scope::Global || !limit.matcher.matches(req) {
                continue;
            }
            let mut d: Descriptor = Vec::with_capacity(limit.key.len() + 1);
            d.push(("generic_key".to_string(), limit.name.clone()));
            for part in &limit.key {
                let (key, value) = match part {
                    KeyPart::ClientIp => {
                        ("remote_address", self.client_ip(req, &mut ip_cache, &mut call.client_ip_fallback))
                    }
                    KeyPart::Header(name) => (name.as_str(), req.header(name).unwrap_or("")),
                    KeyPart::Path => ("path", &*path),
                    KeyPart::Method => ("method", req.method()),
                    KeyPart::All => continue,
                };
                d.push((key.to_string(), super::descriptor_value(value)));
            }
            call.limits.push(i);
            call.descriptors.push(d);
            call.hits.push(limit.cost.as_ref().map(|c| {
                c.at_request(
                    req,
                    *trusted.get_or_insert_with(|| super::super::cost::trusted(&self.config.trusted_sources, req)),
                )
            }));
        }
        (!call.limits.is_empty()).then_some(call)
    }

    /// The global limits of an admitted call whose cost the response will
    /// say: what each descriptor was charged at the request.
    pub fn global_charges(&self, call: &GlobalCall) -> smallvec::SmallVec<[GlobalCharge; 1]> {
        let mut out = smallvec::SmallVec::new();
        for (j, &i) in call.limits.iter().enumerate() {
            let after = self.config.limits.get(i).and_then(|l| l.cost.as_ref()).is_some_and(|c| c.after_response());
            if let (true, Some(descriptor)) = (after, call.descriptors.get(j)) {
                let charged = call.hits.get(j).copied().flatten().unwrap_or(0);
                out.push(GlobalCharge { limit: i, descriptor: descriptor.clone(), charged });
            }
        }
        out
    }

    /// What the service's answer means for the request. `local` are the
    /// states of the local limits it passed, so that the headers show every
    /// limit.
    pub fn judge_answer(&self, call: &GlobalCall, answer: &Answer, local: Vec<QuotaItem>) -> GlobalOutcome {
        let mut items = local;
        let mut states = Vec::with_capacity(call.limits.len());
        let mut wait = 0;
        let mut refused_by = None;
        for (j, &i) in call.limits.iter().enumerate() {
            let Some(limit) = self.config.limits.get(i) else { continue };
            let status = answer.statuses.get(j);
            let over = status.map_or(answer.over_limit, |s| s.over_limit);
            states.push((i, if over { LimitState::Refused } else { LimitState::Allowed }));
            let Some(status) = status else { continue };
            if over && (refused_by.is_none() || status.reset_nanos > wait) {
                wait = status.reset_nanos;
                refused_by = Some(i);
            }
            let (quota, window) = status.quota.unwrap_or_else(|| (limit.requests, window_secs(limit)));
            items.push(QuotaItem {
                name: limit.name.clone(),
                quota,
                window_secs: window,
                remaining: status.remaining,
                reset_secs: ceil_secs(status.reset_nanos),
                refused: over,
                tier: None,
            });
        }
        let mut headers = quota_headers(self.config.headers, &items);
        headers.extend(answer.response_headers.iter().map(|(n, v)| (n.clone().into(), v.clone())));
        let refusal = if answer.over_limit && self.config.mode == Mode::Enforce {
            let name = refused_by
                .or_else(|| call.limits.first().copied())
                .and_then(|i| self.config.limits.get(i))
                .map(|l| l.name.as_str())
                .unwrap_or("");
            Some(self.rate_limited(name, wait, std::mem::take(&mut headers)))
        } else {
            None
        };
        GlobalOutcome { refusal, response_headers: headers, request_headers: answer.request_headers.clone(), states }
    }

    /// The reply under `failure_mode: "deny"` when the service cannot answer.
    pub fn service_failure_refusal(&self, global: &GlobalService) -> Refusal {
        Refusal {
            status: global.status_on_error,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: "{\"error\":\"rate_limit_service_unavailable\"}\n".to_string(),
        }
    }
}
