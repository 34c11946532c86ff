//! Sticky sessions as a proxy filter: pick the backend for each request,
//! write its `ip:port` into the header the proxy's upstream selection reads
//! (Envoy's `override_host` load-balancing policy, or an nginx `map`), pin
//! the session with a signed cookie, and record each backend's outcomes in
//! shared data so that every worker fails over together.
//!
//! # Per request
//!
//! * A client never chooses the upstream itself: the upstream header is
//!   set to the chosen backend, replacing any value the client sent (and
//!   removed when the filter answers 503 itself).
//! * Each backend's health record is read at most once per request, and only
//!   when the choice needs it (the cache in [`SessionStream`]'s request
//!   callback). A health record that cannot be read counts as up (and as a
//!   store error).
//! * The `random` fallback's seed mixes the clock with a per-worker counter,
//!   so two requests in the same nanosecond still differ.
//! * At completion the outcome is attributed to the backend that answered
//!   (`upstream.address`, read only when Envoy reports more than one
//!   attempt), else to the chosen one; when the proxy answered
//!   from another backend than the chosen one (a retry moved away), the
//!   chosen one failed. A **failure** is a network-level failure, any 5xx
//!   or a status outside 100-599 ([`crate::upstream`]); a request whose client went away before any
//!   answer is not recorded.

use super::config::{Fallback, KeySource, StickyConfig};
use super::{Health, Sticky};
use crate::hash::mix64;
use crate::host::{property_text, property_u64, Filter, Flow, Host, Refused};
use crate::request::RequestView;
use crate::upstream::Upstream;
use std::cell::Cell;

crate::metrics! {
    /// One backend's counters (`sticky.<backend>.*`).
    pub struct BackendMetrics { gauges: [], counters: [assigned, failovers, ejected] }
}

crate::metrics! {
    /// The filter's own counters (`sticky.*`).
    pub struct FilterMetrics { gauges: [], counters: [cookie_rejected, all_down, store_errors] }
}

/// The sticky-session filter, one per worker.
#[derive(Debug)]
pub struct StickyFilter {
    sticky: Sticky,
    per_backend: Vec<BackendMetrics>,
    metrics: FilterMetrics,
    needs_peer: bool,
    /// Per-worker counter mixed into the `random` fallback's seed.
    random_counter: Cell<u64>,
}

/// One request's state.
#[derive(Debug, Default)]
pub struct SessionStream {
    chosen: Option<usize>,
    set_cookie: Option<String>,
    /// The chosen backend's record showed no failure streak when the
    /// request was placed: a success then has nothing to record.
    clean: bool,
}

impl StickyFilter {
    /// The sticky-session logic.
    pub fn sticky(&self) -> &Sticky {
        &self.sticky
    }

    fn record<H: Host>(&self, host: &H, backend: usize, now: u64, failure: bool) {
        match self.sticky.record(host, backend, now, failure) {
            Ok(true) => {
                if let Some(m) = self.per_backend.get(backend) {
                    m.ejected.inc(host);
                }
                log::warn!("backend {} ejected after failures in a row", self.sticky.name(backend));
            }
            Ok(false) => {}
            Err(_) => self.metrics.store_errors.inc(host),
        }
    }

    fn random_seed(&self, now: u64) -> u64 {
        let n = self.random_counter.get().wrapping_add(1);
        self.random_counter.set(n);
        mix64(now ^ n.rotate_left(32))
    }

    fn all_down<H: Host>(&self, host: &H) -> Flow {
        self.metrics.all_down.inc(host);
        let headers = vec![("retry-after".to_string(), "1".to_string())];
        if host.send_reply(503, &headers, b"no backend is available\n") {
            return Flow::Pause;
        }
        Flow::Continue
    }

    /// Records the answering backend's health, once: at the response
    /// headers, or at completion when none came.
    fn settle<H: Host>(&self, stream: &mut SessionStream, host: &H) {
        let Some(chosen) = stream.chosen.take() else { return };
        let now = host.now_nanos();
        // Which backend answered: the chosen one, unless the proxy retried
        // elsewhere. Envoy reports its attempts; `upstream.address` is read
        // only when there was more than one (or the count is unknown).
        let retried = property_u64(host, &["upstream", "request_attempt_count"]).is_none_or(|a| a > 1);
        let used = if retried {
            property_text(host, &["upstream", "address"]).and_then(|a| self.sticky.by_address(&a)).unwrap_or(chosen)
        } else {
            chosen
        };
        let upstream = Upstream::read(host);
        if upstream.client_gone() {
            return;
        }
        let failure = upstream.status >= 500 || upstream.network_failure() || upstream.invalid_status();
        if used != chosen {
            self.record(host, chosen, now, true);
        } else if !failure && stream.clean {
            // A success on a record with no failure streak changes nothing:
            // not even read.
            return;
        }
        self.record(host, used, now, failure);
    }
}

impl Filter for StickyFilter {
    type Stream = SessionStream;
    const METRIC_PREFIX: &'static str = "sticky";

    fn configure<H: Host>(host: &H, config: &[u8]) -> Result<Self, Refused> {
        let sticky = Sticky::new(StickyConfig::from_json(config)?);
        let created = Refused::store("the health records", sticky.initialize(host))?;
        let cfg = sticky.config();
        let per_backend =
            cfg.backends.iter().map(|b| BackendMetrics::define(host, &format!("sticky.{}.", b.name))).collect();
        let needs_peer = cfg.fallback == Fallback::ClientIp || cfg.session_key.contains(&KeySource::ClientIp);
        let metrics = FilterMetrics::define(host, "sticky.");
        log::info!("configured {} backend(s), {created} new health record(s)", cfg.backends.len());
        Ok(StickyFilter { sticky, per_backend, metrics, needs_peer, random_counter: Cell::new(0) })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut SessionStream, host: &H) -> Flow {
        let sticky = &self.sticky;
        let upstream_header = &sticky.config().upstream_header;
        let now = host.now_nanos();
        let req = RequestView::fetch(host, None, self.needs_peer);
        // Each backend's health, read once (None: the store failed, counted;
        // the backend is then taken as up).
        let mut known: Vec<Option<Option<Health>>> = vec![None; sticky.config().backends.len()];
        let mut up = |i: usize| -> bool {
            if let Some(Some(h)) = known.get(i) {
                return h.is_none_or(|h| h.up(now));
            }
            let h = sticky.health(host, i).map_err(|_| self.metrics.store_errors.inc(host)).ok();
            if let Some(slot) = known.get_mut(i) {
                *slot = Some(h);
            }
            h.is_none_or(|h| h.up(now))
        };
        let Ok(choice) = sticky.choose(&req, &mut up, self.random_seed(now)) else {
            // A client never chooses the upstream itself (below, setting the
            // header replaces any value it sent).
            host.set_request_header(upstream_header, None);
            return self.all_down(host);
        };
        if choice.cookie_rejected {
            self.metrics.cookie_rejected.inc(host);
        }
        if let Some(m) = self.per_backend.get(choice.backend) {
            m.assigned.inc(host);
        }
        if let Some(m) = choice.failed_over_from.and_then(|f| self.per_backend.get(f)) {
            m.failovers.inc(host);
        }
        if let Some(b) = sticky.config().backends.get(choice.backend) {
            host.set_request_header(upstream_header, Some(&b.address.to_string()));
        }
        stream.chosen = Some(choice.backend);
        stream.set_cookie = choice.set_cookie;
        stream.clean = matches!(known.get(choice.backend), Some(Some(Some(h))) if h.failures == 0);
        Flow::Continue
    }

    fn on_response_headers<H: Host>(&self, stream: &mut SessionStream, host: &H) {
        let Some(chosen) = stream.chosen else { return };
        if let Some(c) = stream.set_cookie.take() {
            host.add_response_header("set-cookie", &c);
        }
        if let Some(h) = &self.sticky.config().backend_header {
            host.add_response_header(h, self.sticky.name(chosen));
        }
        // The backend's health is recorded now that its answer is known.
        self.settle(stream, host);
    }

    /// Only a request that never got response headers is settled here.
    fn on_log<H: Host>(&self, stream: &mut SessionStream, host: &H) {
        self.settle(stream, host);
    }
}
