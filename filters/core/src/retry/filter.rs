//! The retry-headers filter as a proxy filter, and the budget's store
//! protocol.
//!
//! # The budget in shared data
//!
//! The budget is one record, [`BUDGET_KEY`], holding the ring of slices
//! ([`Budget::encode`]), created at configure time when absent (a record
//! left by another worker, or before a VM reload, is kept). Every change is
//! one read-decide-compare-and-swap ([`crate::store::update_bytes`]); a
//! record that does not decode (another version, damage) is replaced by an
//! empty ring. A request under a policy reserves at request time (each
//! request also deposits) and, at completion, gives back what it reserved
//! and did not use, into the slice it was charged to while that slice is in
//! the window ([`Budget::refund`]). The giving back rides on the same
//! worker's next reservation (one read and one compare-and-swap per request,
//! not two of each); until then the retries are held, which can only grant
//! fewer, never more. Used = `upstream.request_attempt_count` - 1 in Envoy;
//! where that property is missing (nginx, or a request that never reached
//! the router) nothing is known to be used and everything goes back. When
//! the store fails, the request is granted nothing (`x-envoy-max-retries:
//! 0`) and the failure is counted.
//!
//! # nginx
//!
//! nginx retries by `proxy_next_upstream`, not by request headers, and
//! reports no attempt count: there the filter writes no `x-envoy-*` header
//! and keeps no budget. Forged retry headers are dropped by the nginx
//! config (`proxy_set_header <name> "";`): the module's header removal does
//! not stop `proxy_pass` from sending a header, and a header the filter
//! removed escapes the config's drop as well, so there the filter only
//! counts them. It counts each policy's requests and adds `Retry-After`.

use super::budget::Budget;
use super::{Outcome, RetryConfig, BUDGET_KEY};
use crate::config::ConfigError;
use crate::host::{property_u64, Filter, Flow, Host, HostKind, Refused};
use crate::net::parse_addr;
use crate::request::RequestView;
use crate::store::{update_bytes, SharedStore, StoreError};
use std::cell::RefCell;

crate::metrics! {
    /// The filter's counters (`retry.*`).
    pub struct RetryMetrics {
        gauges: [],
        counters: [retries, budget_refused, forged_stripped, not_idempotent, retry_after_added, store_errors],
    }
}

crate::metrics! {
    /// One policy's counter (`retry.<policy>.*`).
    pub struct PolicyMetrics { gauges: [], counters: [requests] }
}

/// Applies `f` to the shared budget ring (an empty ring if the record is
/// missing or does not decode); returns its result.
pub fn with_budget<S: SharedStore + ?Sized, R>(
    store: &S,
    budget: &Budget,
    mut f: impl FnMut(&mut super::budget::Ring) -> R,
) -> Result<R, StoreError> {
    update_bytes(store, BUDGET_KEY, |cur| {
        let mut ring = cur.and_then(|b| budget.decode(b)).unwrap_or_else(|| budget.empty());
        let r = f(&mut ring);
        (Some(budget.encode(&ring)), r)
    })
}

/// Creates the budget record if it is absent or does not decode; true when
/// it was created.
pub fn create_budget<S: SharedStore + ?Sized>(store: &S, budget: &Budget) -> Result<bool, StoreError> {
    update_bytes(store, BUDGET_KEY, |cur| match cur.and_then(|b| budget.decode(b)) {
        Some(_) => (None, false),
        None => (Some(budget.encode(&budget.empty())), true),
    })
}

/// The retry filter, one per worker.
#[derive(Debug, Clone)]
pub struct RetryFilter {
    config: RetryConfig,
    metrics: RetryMetrics,
    per_policy: Vec<PolicyMetrics>,
    /// Unused reservations of this worker's finished requests, (reserved
    /// at, retries), given back with its next reservation's write.
    refunds: RefCell<Vec<(u64, u32)>>,
}

/// Refunds a worker holds at most before it drops the oldest (a dropped
/// refund only grants fewer retries, never more).
const MAX_HELD_REFUNDS: usize = 64;

/// One request's state.
#[derive(Debug, Default)]
pub struct RetryStream {
    /// Retries reserved from the budget for this request.
    reserved: u32,
    /// When they were reserved (the refund goes back to that slice).
    reserved_at: u64,
    /// For the span: the policy, forged headers met, retries wanted and
    /// granted, and the retries the proxy made.
    policy: Option<usize>,
    forged: u32,
    wanted: u32,
    granted: Option<u32>,
    used: Option<u32>,
}

impl RetryFilter {
    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }
}

impl RetryFilter {
    /// Counts the retries the proxy made and holds back the unused part of
    /// the reservation, once: at the response headers, or at completion when
    /// none came.
    fn settle<H: Host>(&self, stream: &mut RetryStream, host: &H) {
        let reserved = std::mem::take(&mut stream.reserved);
        if reserved == 0 {
            return;
        }
        let used = property_u64(host, &["upstream", "request_attempt_count"]).map_or(0, |a| a.saturating_sub(1));
        let used = u32::try_from(used).unwrap_or(u32::MAX).min(reserved);
        stream.used = Some(used);
        self.metrics.retries.add(host, u64::from(used));
        let refund = reserved - used;
        if refund > 0 {
            // Given back with this worker's next reservation (one read and
            // one write per request, not two of each).
            let mut held = self.refunds.borrow_mut();
            if held.len() >= MAX_HELD_REFUNDS {
                held.remove(0);
            }
            held.push((stream.reserved_at, refund));
        }
    }
}

impl Filter for RetryFilter {
    type Stream = RetryStream;
    type Config = RetryConfig;
    const METRIC_PREFIX: &'static str = "retry";

    fn check(config: &[u8]) -> Result<RetryConfig, ConfigError> {
        RetryConfig::from_json(config)
    }

    fn build<H: Host>(host: &H, config: RetryConfig) -> Result<Self, Refused> {
        Refused::store("the retry budget", create_budget(host, &config.budget))?;
        let per_policy =
            config.policies.iter().map(|p| PolicyMetrics::define(host, &format!("retry.{}.", p.name))).collect();
        let metrics = RetryMetrics::define(host, "retry.");
        log::info!("configured {} polic(ies)", config.policies.len());
        Ok(RetryFilter { config, metrics, per_policy, refunds: RefCell::default() })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut RetryStream, host: &H) -> Flow {
        let (cfg, m) = (&self.config, &self.metrics);
        let req = RequestView::fetch(host, None, !cfg.trusted_sources.is_empty());
        let trusted = cfg.trusted(req.peer().and_then(parse_addr));
        let plan = cfg.plan(&req, trusted);
        // In nginx the config drops them (`proxy_set_header <name> "";`):
        // this module version's removal does not stop proxy_pass from sending
        // a header, and a removed header then escapes the config's drop too.
        let nginx = !plan.strip.is_empty() && host.kind() == HostKind::Nginx;
        for name in &plan.strip {
            if !nginx {
                host.set_request_header(name, None);
            }
            m.forged_stripped.inc(host);
        }
        stream.forged = u32::try_from(plan.strip.len()).unwrap_or(u32::MAX);
        let Some(policy) = plan.policy else { return Flow::Continue };
        stream.policy = Some(policy);
        if let Some(p) = self.per_policy.get(policy) {
            p.requests.inc(host);
        }
        if plan.outcome == Outcome::NotIdempotent {
            m.not_idempotent.inc(host);
        }
        // nginx retries with proxy_next_upstream: Envoy's retry headers mean
        // nothing to it (the backend would receive them), and no attempt count
        // comes back to settle a budget with.
        if host.kind() == HostKind::Nginx {
            return Flow::Continue;
        }
        // Every request under a policy deposits into the budget; retriable
        // ones reserve what they may use.
        let now = host.now_nanos();
        let held = self.refunds.borrow();
        let reserved = with_budget(host, &cfg.budget, |ring| {
            for &(at, n) in held.iter() {
                cfg.budget.refund(ring, at, now, n);
            }
            cfg.budget.reserve(ring, now, plan.want)
        });
        drop(held);
        let granted = match reserved {
            Ok(granted) => {
                // Given back: nothing else touched the list since (one VM,
                // one thread), so all of it.
                self.refunds.borrow_mut().clear();
                granted
            }
            Err(_) => {
                m.store_errors.inc(host);
                0
            }
        };
        if plan.want > 0 && granted == 0 {
            m.budget_refused.inc(host);
        }
        stream.reserved = granted;
        stream.reserved_at = now;
        stream.wanted = plan.want;
        stream.granted = Some(granted);
        cfg.emit_headers(policy, granted, &mut |name, value| host.set_request_header(name, Some(value)));
        Flow::Continue
    }

    fn on_response_headers<H: Host>(&self, stream: &mut RetryStream, host: &H) {
        let status = crate::host::with_response_header(host, ":status", |s| s?.trim().parse::<u16>().ok());
        if let Some(secs) = status.and_then(|s| self.config.retry_after_for(s)) {
            if host.response_header("retry-after").is_none() {
                host.add_response_header("retry-after", &secs.to_string());
                self.metrics.retry_after_added.inc(host);
            }
        }
        // The proxy has made its last attempt once the response is on its
        // way: the budget is settled now, in the callback that already read
        // `:status`.
        self.settle(stream, host);
    }

    /// Only a request that never got response headers is settled here.
    fn on_log<H: Host>(&self, stream: &mut RetryStream, host: &H) {
        self.settle(stream, host);
    }

    /// `retry.policy` (the policy that applied), `retry.granted` (the
    /// retries the headers allow), `retry.budget` (`refused` when retries
    /// were wanted and the budget granted none, else `ok`), `retry.retries`
    /// (the retries Envoy made, once the response is in) and
    /// `retry.forged` (forged retry headers met, when any). In nginx only
    /// the policy and the forged count (`proxy_next_upstream` retries).
    fn span_attributes(&self, stream: &RetryStream, out: &mut Vec<(&'static str, String)>) {
        if stream.forged > 0 {
            out.push(("retry.forged", stream.forged.to_string()));
        }
        let Some(policy) = stream.policy.and_then(|p| self.config.policies.get(p)) else { return };
        out.push(("retry.policy", policy.name.clone()));
        let Some(granted) = stream.granted else { return };
        out.push(("retry.granted", granted.to_string()));
        if stream.wanted > 0 {
            out.push(("retry.budget", if granted == 0 { "refused" } else { "ok" }.to_string()));
        }
        if let Some(used) = stream.used {
            out.push(("retry.retries", used.to_string()));
        }
    }
}
