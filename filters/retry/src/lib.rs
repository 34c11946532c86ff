//! Proxy-Wasm retry-headers filter: glue between the host and
//! `filters_core::retry`. Policy matching, header stripping and the budget
//! arithmetic live in the core; this file edits headers, moves the budget by
//! compare-and-swap, and reads back how many attempts the proxy made.

use filters_core::net::parse_addr;
use filters_core::retry::budget::Budget;
use filters_core::retry::{Outcome, RetryConfig, BUDGET_KEY};
use filters_core::store::{update_bytes, StoreError};
use filters_host::{add_response_header, now_nanos, property_u64, request_view, response_header, Counter, HostStore};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};
use std::rc::Rc;

filters_host::filter_entry!(Root);

struct Metrics {
    per_policy: Vec<Counter>,
    retries: Counter,
    budget_refused: Counter,
    forged_stripped: Counter,
    not_idempotent: Counter,
    retry_after_added: Counter,
    store_errors: Counter,
}

struct Shared {
    config: RetryConfig,
    metrics: Metrics,
}

/// Applies `f` to the shared budget ring (created on first use if the slot
/// was lost); returns its result.
fn with_budget<R>(
    budget: &Budget,
    mut f: impl FnMut(&mut Vec<filters_core::retry::budget::Slice>) -> R,
) -> Result<R, StoreError> {
    update_bytes(&HostStore, BUDGET_KEY, |cur| {
        let mut ring = cur.and_then(|b| budget.decode(b)).unwrap_or_else(|| budget.empty());
        let r = f(&mut ring);
        (Some(budget.encode(&ring)), r)
    })
}

/// The root context: parses and checks the configuration once per VM.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = filters_host::load_config(RetryConfig::from_json) else { return false };
        // Create the budget record before the first request (an existing one,
        // from another worker or before a VM reload, is kept).
        let budget = config.budget;
        let created = update_bytes(&HostStore, BUDGET_KEY, |cur| match cur.and_then(|b| budget.decode(b)) {
            Some(_) => (None, false),
            None => (Some(budget.encode(&budget.empty())), true),
        });
        if let Err(e) = created {
            log::error!("shared data is unavailable, cannot create the retry budget: {e}");
            return false;
        }
        let per_policy =
            config.policies.iter().map(|p| Counter::define(&format!("retry.{}.requests", p.name))).collect();
        let metrics = Metrics {
            per_policy,
            retries: Counter::define("retry.retries"),
            budget_refused: Counter::define("retry.budget_refused"),
            forged_stripped: Counter::define("retry.forged_stripped"),
            not_idempotent: Counter::define("retry.not_idempotent"),
            retry_after_added: Counter::define("retry.retry_after_added"),
            store_errors: Counter::define("retry.store_errors"),
        };
        Counter::define("retry.configured").inc();
        log::info!("configured {} polic(ies)", config.policies.len());
        self.shared = Some(Rc::new(Shared { config, metrics }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { shared: self.shared.clone(), reserved: 0, settled: true }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    shared: Option<Rc<Shared>>,
    /// Retries reserved from the budget for this request.
    reserved: u32,
    /// The reservation has been reconciled with the attempts made.
    settled: bool,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let cfg = &shared.config;
        let m = &shared.metrics;
        let req = request_view(!cfg.trusted_sources.is_empty());
        let trusted = cfg.trusted(req.peer().and_then(parse_addr));
        let plan = cfg.plan(&req, trusted);
        for name in &plan.strip {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
            m.forged_stripped.inc();
        }
        let Some(policy) = plan.policy else { return Action::Continue };
        if let Some(c) = m.per_policy.get(policy) {
            c.inc();
        }
        if plan.outcome == Outcome::NotIdempotent {
            m.not_idempotent.inc();
        }
        // Every request under a policy deposits into the budget; retriable
        // ones reserve what they may use.
        let granted =
            match now_nanos().map(|now| with_budget(&cfg.budget, |ring| cfg.budget.reserve(ring, now, plan.want))) {
                Some(Ok(g)) => g,
                _ => {
                    m.store_errors.inc();
                    0
                }
            };
        if plan.want > 0 && granted == 0 {
            m.budget_refused.inc();
        }
        self.reserved = granted;
        self.settled = granted == 0;
        for (name, value) in cfg.headers(policy, granted) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &name, Some(&value));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else { return Action::Continue };
        let status = response_header(":status").and_then(|s| s.trim().parse::<u16>().ok());
        if let Some(secs) = status.and_then(|s| shared.config.retry_after_for(s)) {
            if response_header("retry-after").is_none() {
                add_response_header("retry-after", &secs.to_string());
                shared.metrics.retry_after_added.inc();
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let Some(shared) = self.shared.clone() else { return };
        // Envoy reports the attempts it made; without that (nginx, or a
        // request that never reached the router) nothing is known to be used
        // and everything reserved goes back.
        let used = property_u64(&["upstream", "request_attempt_count"]).map_or(0, |a| a.saturating_sub(1));
        let used = u32::try_from(used).unwrap_or(u32::MAX).min(self.reserved);
        shared.metrics.retries.add(u64::from(used));
        let refund = self.reserved - used;
        if refund > 0 {
            let budget = shared.config.budget;
            let done = now_nanos().map(|now| with_budget(&budget, |ring| budget.refund(ring, now, refund)));
            if !matches!(done, Some(Ok(()))) {
                shared.metrics.store_errors.inc();
            }
        }
    }
}
