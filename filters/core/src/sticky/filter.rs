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
//!   (`upstream.address`, read only when there is something to record),
//!   else to the chosen one; when a retry moved the request to another
//!   backend, the chosen one failed. An answer from an address that is none
//!   of the backends (a route to another cluster) is recorded nowhere. A **failure** is a network-level failure, any 5xx
//!   or a status outside 100-599 ([`crate::upstream`]); a request whose client went away before any
//!   answer is not recorded.

use super::config::{Fallback, KeySource, StickyConfig};
use super::dynamic::{DynamicMode, Placement, Recorded};
use super::{Health, StaticMode};
use crate::config::ConfigError;
use crate::hash::mix64;
use crate::host::{property_text, property_u64, Filter, Flow, Host, Refused};
use crate::request::RequestView;
use crate::upstream::Upstream;
use std::cell::Cell;
use std::net::SocketAddr;

crate::metrics! {
    /// One backend's counters (`sticky.<backend>.*`).
    pub struct BackendMetrics { gauges: [], counters: [assigned, failovers, ejected] }
}

crate::metrics! {
    /// The filter's own counters (`sticky.*`).
    pub struct FilterMetrics { gauges: [], counters: [cookie_rejected, all_down, store_errors] }
}

crate::metrics! {
    /// The dynamic mode's counters (`sticky.*`): sessions placed by Envoy's
    /// hash and pinned, requests sent to their pinned host, sessions moved to
    /// another host, ejections, hosts not tracked for want of a slot.
    pub struct DynamicMetrics { gauges: [], counters: [placed, pinned, repinned, ejected, untracked] }
}

/// The sticky-session filter, one per worker.
#[derive(Debug, Clone)]
pub struct StickyFilter {
    mode: Mode,
    metrics: FilterMetrics,
    needs_peer: bool,
    /// Per-worker counter mixed into the `random` fallback's seed.
    random_counter: Cell<u64>,
}

#[derive(Debug, Clone)]
enum Mode {
    /// `addresses`: each backend's `ip:port`, spelled once at configure time.
    Static {
        sticky: StaticMode,
        per_backend: Vec<BackendMetrics>,
        addresses: Vec<String>,
    },
    Dynamic {
        dynamic: DynamicMode,
        metrics: DynamicMetrics,
    },
}

/// One request's state.
#[derive(Debug, Default)]
pub struct SessionStream {
    chosen: Option<usize>,
    set_cookie: Option<std::sync::Arc<str>>,
    /// The chosen backend's record showed no failure streak when the
    /// request was placed: a success then has nothing to record.
    clean: bool,
    /// The dynamic mode's placement, until the response settles it.
    placement: Option<Placement>,
    /// For the span: how the request was placed, on which backend (static:
    /// its index; dynamic: the host), and whether a pinning cookie was
    /// refused.
    placed: Option<Seen>,
    backend: Option<usize>,
    host: Option<SocketAddr>,
    cookie_rejected: bool,
}

/// `sticky.placement`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A valid pinning cookie sent it to its backend.
    Pinned,
    /// The session key's hash chose (static mode).
    Hashed,
    /// No session key: the fallback chose (static mode).
    Fallback,
    /// Its backend was down: sent elsewhere.
    Failover,
    /// No valid pin: Envoy's hash placed it and the answering host is pinned
    /// (dynamic mode).
    Placed,
    /// The pin moved to the host that answered (dynamic mode).
    Repinned,
    /// Every backend was down: answered 503.
    AllDown,
}

impl Seen {
    fn as_str(self) -> &'static str {
        match self {
            Seen::Pinned => "pinned",
            Seen::Hashed => "hashed",
            Seen::Fallback => "fallback",
            Seen::Failover => "failover",
            Seen::Placed => "placed",
            Seen::Repinned => "repinned",
            Seen::AllDown => "all_down",
        }
    }
}

impl StickyFilter {
    /// The sticky-session logic of the static mode.
    pub fn sticky(&self) -> Option<&StaticMode> {
        match &self.mode {
            Mode::Static { sticky, .. } => Some(sticky),
            Mode::Dynamic { .. } => None,
        }
    }

    fn record<H: Host>(
        &self,
        host: &H,
        sticky: &StaticMode,
        per_backend: &[BackendMetrics],
        backend: usize,
        failure: bool,
    ) {
        match sticky.record(host, backend, host.now_nanos(), failure) {
            Ok(true) => {
                if let Some(m) = per_backend.get(backend) {
                    m.ejected.inc(host);
                }
                log::warn!("backend {} ejected after failures in a row", sticky.name(backend));
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

    fn reply_all_down<H: Host>(&self, host: &H) -> Flow {
        self.metrics.all_down.inc(host);
        let headers = vec![("retry-after".to_string(), "1".to_string())];
        crate::host::reply_or_pass(host, "sticky-session all-down", 503, &headers, b"no backend is available\n")
    }

    /// Records the answering backend's health, once: at the response
    /// headers, or at completion when none came.
    ///
    /// An outcome is charged only to a backend of this filter's list that
    /// answered: when the proxy names an answering address that is none of
    /// them (the route sent the request to another cluster), nothing is
    /// recorded, so requests to other routes can neither eject nor heal a
    /// backend. The address is read only when there is something to
    /// record (a failure, a streak to reset, or a retry); without one (a
    /// host that does not report it) the chosen backend answered.
    fn settle<H: Host>(
        &self,
        stream: &mut SessionStream,
        host: &H,
        sticky: &StaticMode,
        per_backend: &[BackendMetrics],
    ) {
        let Some(chosen) = stream.chosen.take() else { return };
        // Envoy reports its attempts: more than one (or an unknown count)
        // means a retry may have moved the request to another backend.
        let retried = property_u64(host, &["upstream", "request_attempt_count"]).is_none_or(|a| a > 1);
        let upstream = Upstream::read(host);
        if upstream.client_gone() {
            return;
        }
        let failure = failed(&upstream);
        if !failure && !retried && stream.clean {
            // A success on a record with no failure streak changes nothing:
            // not even read.
            return;
        }
        let used = match crate::upstream::answered_by(host) {
            Some(address) => match sticky.by_address(&address) {
                Some(used) => used,
                // Another cluster's host answered: not ours to judge.
                None => return,
            },
            None => chosen,
        };
        if used != chosen && retried {
            // A retry moved the request away: the chosen backend failed it.
            self.record(host, sticky, per_backend, chosen, true);
        } else if used == chosen && !failure && stream.clean {
            return;
        }
        self.record(host, sticky, per_backend, used, failure);
    }

    fn static_request<H: Host>(
        &self,
        stream: &mut SessionStream,
        host: &H,
        sticky: &StaticMode,
        per_backend: &[BackendMetrics],
        addresses: &[String],
    ) -> Flow {
        let upstream_header = &sticky.config().upstream_header;
        let now = host.now_nanos();
        let req = RequestView::fetch(host, None, self.needs_peer);
        // Each backend's health, read once (None: the store failed, counted;
        // the backend is then taken as up).
        let mut known: smallvec::SmallVec<[Option<Option<Health>>; 8]> =
            smallvec::smallvec![None; sticky.config().backends.len()];
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
            stream.placed = Some(Seen::AllDown);
            return self.reply_all_down(host);
        };
        if choice.cookie_rejected {
            self.metrics.cookie_rejected.inc(host);
        }
        stream.cookie_rejected = choice.cookie_rejected;
        stream.backend = Some(choice.backend);
        stream.placed = Some(match (choice.failed_over_from, choice.source) {
            (Some(_), _) => Seen::Failover,
            (None, super::Source::Cookie) => Seen::Pinned,
            (None, super::Source::Key) => Seen::Hashed,
            (None, super::Source::Fallback) => Seen::Fallback,
        });
        if let Some(m) = per_backend.get(choice.backend) {
            m.assigned.inc(host);
        }
        if let Some(m) = choice.failed_over_from.and_then(|f| per_backend.get(f)) {
            m.failovers.inc(host);
        }
        if let Some(address) = addresses.get(choice.backend) {
            host.set_request_header(upstream_header, Some(address));
        }
        stream.chosen = Some(choice.backend);
        stream.set_cookie = choice.set_cookie;
        stream.clean = matches!(known.get(choice.backend), Some(Some(Some(h))) if h.failures == 0);
        Flow::Continue
    }

    fn dynamic_request<H: Host>(
        &self,
        stream: &mut SessionStream,
        host: &H,
        dynamic: &DynamicMode,
        m: &DynamicMetrics,
    ) {
        let cfg = dynamic.config();
        let now = host.now_nanos();
        let req = RequestView::fetch(host, None, self.needs_peer);
        // The pinned host's record showed no failure streak (or is not
        // tracked): a success then has nothing to record.
        let mut clean = false;
        let mut up = |h| match dynamic.health(host, h) {
            Ok(health) => {
                clean = health.is_none_or(|health| health.failures == 0);
                health.is_none_or(|health| health.up(now))
            }
            Err(_) => {
                self.metrics.store_errors.inc(host);
                true
            }
        };
        let choice = dynamic.choose(&req, &mut up, now, self.random_seed(now));
        stream.clean = clean;
        if choice.cookie_rejected {
            self.metrics.cookie_rejected.inc(host);
        }
        stream.cookie_rejected = choice.cookie_rejected;
        stream.host = choice.override_to;
        stream.placed = match choice.placement {
            Placement::Pinned(_) => Some(Seen::Pinned),
            Placement::Failover(_) => Some(Seen::Failover),
            Placement::New => None,
        };
        if matches!(choice.placement, Placement::Pinned(_)) {
            m.pinned.inc(host);
        }
        // A client never chooses the upstream or the hash key itself: both
        // headers are written, or removed, here.
        let override_to = choice.override_to.map(|h| h.to_string());
        host.set_request_header(&cfg.upstream_header, override_to.as_deref());
        host.set_request_header(&cfg.hash_header, Some(&choice.hash_key));
        stream.placement = Some(choice.placement);
    }

    /// The dynamic mode at the response (or completion): the host that
    /// answered is pinned when the session had no pin, when its pinned host
    /// was ejected, or when Envoy no longer had it (one attempt, another
    /// host, in the pin's cluster); its outcome is recorded.
    /// Returns the host that answered, when the proxy names one.
    fn dynamic_settle<H: Host>(
        &self,
        stream: &mut SessionStream,
        host: &H,
        dynamic: &DynamicMode,
        m: &DynamicMetrics,
    ) -> Option<SocketAddr> {
        let placement = stream.placement.take()?;
        let used = crate::upstream::answered_by(host).and_then(|a| a.trim().parse::<SocketAddr>().ok());
        let upstream = Upstream::read(host);
        let used = used?;
        let failure = failed(&upstream);
        let attempts = property_u64(host, &["upstream", "request_attempt_count"]).unwrap_or(1);
        let now = host.now_nanos();
        // What the answer would do to the session: pin the host that
        // answered, or charge the pinned host a retry moved away from.
        let (repin, charge) = match placement {
            Placement::New => (true, None),
            Placement::Failover(p) => (used != p.host, None),
            Placement::Pinned(p) if used != p.host && attempts > 1 => (false, Some(p)),
            Placement::Pinned(p) => (used != p.host, None),
        };
        // Only then is the answering cluster read: a pin names it, and an
        // answer from another cluster's route moves and charges nothing.
        let cluster = if repin || charge.is_some() { property_text(host, &["xds", "cluster_name"]) } else { None };
        let own_cluster = match placement {
            Placement::Pinned(p) | Placement::Failover(p) => p.same_cluster(cluster.as_deref()),
            Placement::New => true,
        };
        if let Some(p) = charge.filter(|_| own_cluster) {
            // A retry moved this request: the pinned host failed it.
            self.dynamic_record(host, dynamic, m, p.host, true, now);
        }
        if !failure {
            dynamic.note_good(used, now);
        }
        stream.host = Some(used);
        if repin && own_cluster && !failure {
            if placement == Placement::New {
                m.placed.inc(host);
                stream.placed = Some(Seen::Placed);
            } else {
                m.repinned.inc(host);
                stream.placed = Some(Seen::Repinned);
            }
            stream.set_cookie = Some(dynamic.set_cookie(used, cluster.as_deref()).into());
        }
        let clean_success = !failure && stream.clean && matches!(placement, Placement::Pinned(p) if p.host == used);
        if !upstream.client_gone() && !clean_success {
            self.dynamic_record(host, dynamic, m, used, failure, now);
        }
        Some(used)
    }

    fn dynamic_record<H: Host>(
        &self,
        host: &H,
        dynamic: &DynamicMode,
        m: &DynamicMetrics,
        at: SocketAddr,
        failure: bool,
        now: u64,
    ) {
        match dynamic.record(host, at, now, failure) {
            Ok(Recorded::Ejected) => {
                m.ejected.inc(host);
                log::warn!("host {at} ejected after failures in a row");
            }
            Ok(Recorded::Untracked) => m.untracked.inc(host),
            Ok(Recorded::Nothing) => {}
            Err(_) => self.metrics.store_errors.inc(host),
        }
    }
}

/// A failed answer, in either mode: a network-level failure, any 5xx, or a
/// status outside 100-599.
fn failed(upstream: &Upstream) -> bool {
    upstream.status >= 500 || upstream.network_failure() || upstream.invalid_status()
}

impl Filter for StickyFilter {
    type Stream = SessionStream;
    type Config = StickyConfig;
    const METRIC_PREFIX: &'static str = "sticky";

    fn check(config: &[u8]) -> Result<StickyConfig, ConfigError> {
        StickyConfig::from_json(config)
    }

    fn build<H: Host>(host: &H, config: StickyConfig) -> Result<Self, Refused> {
        let metrics = FilterMetrics::define(host, "sticky.");
        let (mode, sources, fallback) = match config {
            StickyConfig::Static(cfg) => {
                let sticky = StaticMode::new(cfg);
                let created = Refused::store("the health records", sticky.initialize(host))?;
                let cfg = sticky.config();
                let per_backend =
                    cfg.backends.iter().map(|b| BackendMetrics::define(host, &format!("sticky.{}.", b.name))).collect();
                log::info!("configured {} backend(s), {created} new health record(s)", cfg.backends.len());
                let (sources, fallback) = (cfg.session_key.clone(), cfg.fallback);
                let addresses = cfg.backends.iter().map(|b| b.address.to_string()).collect();
                (Mode::Static { sticky, per_backend, addresses }, sources, fallback)
            }
            StickyConfig::Dynamic(cfg) => {
                let dynamic = DynamicMode::new(cfg);
                let created = Refused::store("the host health table", dynamic.initialize(host))?;
                let cfg = dynamic.config();
                log::info!("configured for dynamic endpoints, {} host slot(s), {created} new", cfg.max_hosts);
                let (sources, fallback) = (cfg.session_key.clone(), cfg.fallback);
                (Mode::Dynamic { dynamic, metrics: DynamicMetrics::define(host, "sticky.") }, sources, fallback)
            }
        };
        let needs_peer = fallback == Fallback::ClientIp || sources.contains(&KeySource::ClientIp);
        Ok(StickyFilter { mode, metrics, needs_peer, random_counter: Cell::new(0) })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut SessionStream, host: &H) -> Flow {
        match &self.mode {
            Mode::Static { sticky, per_backend, addresses } => {
                self.static_request(stream, host, sticky, per_backend, addresses)
            }
            Mode::Dynamic { dynamic, metrics } => {
                self.dynamic_request(stream, host, dynamic, metrics);
                Flow::Continue
            }
        }
    }

    fn on_response_headers<H: Host>(&self, stream: &mut SessionStream, host: &H) {
        match &self.mode {
            Mode::Static { sticky, per_backend, .. } => {
                let Some(chosen) = stream.chosen else { return };
                if let Some(c) = stream.set_cookie.take() {
                    host.add_response_header("set-cookie", &c);
                }
                if let Some(h) = &sticky.config().backend_header {
                    host.add_response_header(h, sticky.name(chosen));
                }
                // The backend's health is recorded now that its answer is known.
                self.settle(stream, host, sticky, per_backend);
            }
            Mode::Dynamic { dynamic, metrics } => {
                let used = self.dynamic_settle(stream, host, dynamic, metrics);
                if let Some(c) = stream.set_cookie.take() {
                    host.add_response_header("set-cookie", &c);
                }
                if let (Some(h), Some(used)) = (&dynamic.config().backend_header, used) {
                    host.add_response_header(h, &used.to_string());
                }
            }
        }
    }

    /// Only a request that never got response headers is settled here.
    fn on_log<H: Host>(&self, stream: &mut SessionStream, host: &H) {
        match &self.mode {
            Mode::Static { sticky, per_backend, .. } => self.settle(stream, host, sticky, per_backend),
            Mode::Dynamic { dynamic, metrics } => {
                self.dynamic_settle(stream, host, dynamic, metrics);
            }
        }
    }

    /// `sticky.placement` (`pinned`, `hashed`, `fallback`, `failover`,
    /// `all_down`; dynamic mode: `pinned`, `failover`, then at the response
    /// `placed` or `repinned` when the answering host is pinned),
    /// `sticky.backend` (static: the backend's name; dynamic: the host,
    /// `ip:port`, pinned or that answered) and `sticky.cookie` = `rejected`
    /// for a forged, tampered or stale pinning cookie.
    fn span_attributes(&self, stream: &SessionStream, out: &mut Vec<(&'static str, String)>) {
        if let Some(placed) = stream.placed {
            out.push(("sticky.placement", placed.as_str().to_string()));
        }
        match (&self.mode, stream.backend, stream.host) {
            (Mode::Static { sticky, .. }, Some(b), _) => out.push(("sticky.backend", sticky.name(b).to_string())),
            (Mode::Dynamic { .. }, _, Some(h)) => out.push(("sticky.backend", h.to_string())),
            _ => {}
        }
        if stream.cookie_rejected {
            out.push(("sticky.cookie", "rejected".to_string()));
        }
    }
}
