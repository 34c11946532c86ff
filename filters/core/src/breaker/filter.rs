//! The circuit breaker as a proxy filter: resolve the request's key, admit
//! or reject it, and record its outcome at completion.
//!
//! # The request path
//!
//! * **Key**: `xds.cluster_name` / `xds.route_name` (Envoy; nginx has no
//!   `xds.*` properties, so the `:authority` stands in), the `:authority`
//!   (normalised: [`normalize_authority`]; `default` when empty), a request
//!   header (`-` when absent) or a fixed
//!   name; cut to [`MAX_KEY_BYTES`].
//! * **Admission**: the slot where each key's breaker was last found is
//!   cached per worker (a hint, checked against the record's key on use;
//!   the cache is cleared when it reaches `max_breakers` entries). A closed
//!   breaker admits from the record's head alone, without decoding its
//!   window. Otherwise the record is updated by compare-and-swap, and a
//!   rejection is answered with `status` (503), `Retry-After` in whole
//!   seconds (at least 1), `x-circuit-breaker: <key>; state=<state>` and the
//!   configured body or a JSON one.
//! * **Outcome**, at the response headers (at completion for a request
//!   that never got any): what happened upstream is read once
//!   ([`crate::upstream`]). A request whose client went away before any
//!   answer tells nothing about the upstream: it is not recorded, and a
//!   half-open probe gives its place back. Otherwise a **failure** is a
//!   network-level failure, a status in `failure_statuses` or a status
//!   outside 100-599, and slowness
//!   is the time from admission to the response headers.

use super::config::{BreakerConfig, KeyKind};
use super::{Admission, Breakers, Record, State, Transition};
use crate::config::ConfigError;
use crate::hash::FastMap;
use crate::host::{Filter, Flow, Host, HostKind, Refused};
use crate::store::Key;
use crate::store::StoreError;
use crate::upstream::Upstream;
use std::cell::RefCell;

/// Longest key kept, in bytes: a longer header value is cut here.
pub const MAX_KEY_BYTES: usize = 128;
/// Metric name component for keys beyond `max_breakers` metric sets.
pub const OTHER_KEYS: &str = "_other";

crate::metrics! {
    /// One breaker's metrics (`circuit_breaker.<key>.*`).
    pub struct BreakerMetrics { gauges: [state], counters: [requests, failures, rejected, opened, half_opened, recovering, closed] }
}

crate::metrics! {
    /// The filter's own counters (`circuit_breaker.*`).
    pub struct FilterMetrics { gauges: [], counters: [untracked, store_errors] }
}

impl BreakerMetrics {
    fn transition<H: Host>(&self, host: &H, t: Option<Transition>) {
        let Some(t) = t else { return };
        self.state.set(host, t.to.gauge());
        match t.to {
            State::Open => self.opened.inc(host),
            State::HalfOpen => self.half_opened.inc(host),
            State::Recovering => self.recovering.inc(host),
            State::Closed => self.closed.inc(host),
        }
    }
}

/// The circuit-breaker filter, one per worker.
#[derive(Debug, Clone)]
pub struct BreakerFilter {
    breakers: Breakers,
    /// Where each key's breaker was last found (a hint; verified on use).
    slots: RefCell<FastMap<String, u32>>,
    per_key: RefCell<FastMap<String, BreakerMetrics>>,
    /// The metrics of the keys beyond `max_breakers` (defined once).
    other: std::cell::Cell<Option<BreakerMetrics>>,
    metrics: FilterMetrics,
}

/// What a request is to its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Not measured (untracked, or the store failed).
    #[default]
    None,
    /// Passed while closed.
    Pass,
    /// A half-open probe.
    Probe,
    /// Answered locally by the breaker.
    Rejected,
}

/// One request's state.
#[derive(Debug, Default)]
pub struct BreakerStream {
    /// In a pooled string (no allocation per request).
    key: Key,
    /// Admitted through a closed breaker whose record had no failure streak.
    clean: bool,
    role: Role,
    start: u64,
    /// For the span: the role given at admission (kept after `role` is
    /// settled), the state then, and a transition the outcome made.
    decided: Role,
    state: Option<State>,
    transition: Option<(State, State)>,
}

impl BreakerStream {
    /// The request's role.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// Metric-name-safe form of a key.
fn metric_component(key: &str) -> String {
    key.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// One spelling per authority: lower case, no trailing dot, no default port
/// (`:80`, `:443`). A client cannot dodge an open breaker, or flood the table
/// with keys, by respelling the host.
pub fn normalize_authority(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let a = a.strip_suffix(":80").or_else(|| a.strip_suffix(":443")).unwrap_or(&a);
    a.strip_suffix('.').unwrap_or(a).to_string()
}

/// The breaker key of the request (see the module docs).
pub fn resolve_key<H: Host + ?Sized>(kind: &KeyKind, host: &H) -> Key {
    let authority = || {
        crate::host::authority(host)
            .map(|a| normalize_authority(&a))
            .filter(|a| !a.is_empty())
            .map_or_else(|| Key::from("default"), |a| Key::from(cut(&a)))
    };
    // nginx has no xds.* properties: not even asked there. Lent by the host
    // into a pooled string (nothing allocated for a cluster's name).
    let property = |name: &str| {
        if host.kind() != HostKind::Envoy {
            return None;
        }
        crate::host::with_property(host, &["xds", name], |v| {
            let v = String::from_utf8_lossy(v?);
            (!v.is_empty()).then(|| Key::from(cut(&v)))
        })
    };
    match kind {
        KeyKind::Cluster => property("cluster_name").unwrap_or_else(authority),
        KeyKind::Route => property("route_name").unwrap_or_else(authority),
        KeyKind::Authority => authority(),
        KeyKind::Header(name) => crate::host::with_request_header(host, name, |v| v.map(|v| Key::from(cut(v))))
            .unwrap_or_else(|| Key::from("-")),
        KeyKind::Fixed(name) => Key::from(cut(name)),
    }
}

/// `key` cut to [`MAX_KEY_BYTES`] at a character boundary.
fn cut(key: &str) -> &str {
    let mut at = key.len().min(MAX_KEY_BYTES);
    while !key.is_char_boundary(at) {
        at -= 1;
    }
    key.get(..at).unwrap_or("")
}

impl BreakerFilter {
    /// The breakers (configuration, state machine, table).
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// The metrics of `key`'s breaker: found by the key itself (nothing
    /// spelled per request); the first time, defined under the key's
    /// metric name, or under `other` once `max_breakers` keys have theirs.
    fn key_metrics<H: Host>(&self, host: &H, key: &str) -> BreakerMetrics {
        let mut all = self.per_key.borrow_mut();
        if let Some(m) = all.get(key) {
            return *m;
        }
        if all.len() >= self.breakers.config().max_breakers as usize {
            // Beyond the bound, keys are not remembered: all share `other`.
            let other = self
                .other
                .get()
                .unwrap_or_else(|| BreakerMetrics::define(host, &format!("circuit_breaker.{OTHER_KEYS}.")));
            self.other.set(Some(other));
            return other;
        }
        let metrics = BreakerMetrics::define(host, &format!("circuit_breaker.{}.", metric_component(key)));
        all.insert(key.to_string(), metrics);
        metrics
    }

    fn store_failed<H: Host, R>(&self, host: &H, e: StoreError) -> Option<R> {
        log::warn!("{e}");
        self.metrics.store_errors.inc(host);
        None
    }

    /// Runs `f` on `key`'s record, finding (or claiming) its slot first.
    /// `None`: not tracked (table full) or the store failed (counted).
    fn with_record<H: Host, R>(
        &self,
        host: &H,
        key: &str,
        now: u64,
        mut f: impl FnMut(&mut Record) -> (bool, R),
    ) -> Option<R> {
        let cached = self.slots.borrow().get(key).copied();
        if let Some(slot) = cached {
            match self.breakers.update(host, slot, key, &mut f) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {
                    self.slots.borrow_mut().remove(key);
                }
                Err(e) => return self.store_failed(host, e),
            }
        }
        let slot = match self.breakers.find(host, key, now) {
            Ok(Some((slot, _))) => slot,
            Ok(None) => {
                self.metrics.untracked.inc(host);
                return None;
            }
            Err(e) => return self.store_failed(host, e),
        };
        {
            let mut slots = self.slots.borrow_mut();
            if slots.len() >= self.breakers.config().max_breakers as usize {
                slots.clear();
            }
            slots.insert(key.to_string(), slot);
        }
        self.breakers.update(host, slot, key, f).unwrap_or_else(|e| self.store_failed(host, e))
    }

    /// A closed breaker admits from its record's head (the cached slot's):
    /// `Some(clean)` then, `clean` when the record had no failure streak.
    fn closed_fast<H: Host>(&self, host: &H, key: &str) -> Option<bool> {
        let slot = self.slots.borrow().get(key).copied()?;
        let head = crate::store::read_with(host, &Breakers::slot_key(slot), |current| {
            let (k, state, streak) = self.breakers.decode_head_streak(current?.0)?;
            (k == key && state == State::Closed).then_some(streak == 0)
        });
        head.ok().flatten()
    }

    /// A success that changes nothing: the breaker keeps no window (no
    /// Traefik expression either) and its record had no failure streak
    /// when the request was admitted, so the record is neither read nor
    /// written again (one call that returns bytes saved per request). A
    /// failure another worker counted in between is then not reset by this
    /// success: of two answers that crossed, either may be taken as the
    /// later one.
    fn changes_nothing(&self, stream: &BreakerStream, probe: bool, failure: bool) -> bool {
        let cfg = self.breakers.config();
        stream.clean && !probe && !failure && !cfg.needs_window() && cfg.traefik.is_none()
    }

    /// Records the request's outcome, once: at its response headers, or at
    /// completion when none came. The latency sample is the time from
    /// admission to the response headers (or to completion).
    fn settle<H: Host>(&self, stream: &mut BreakerStream, host: &H) {
        let probe = match std::mem::take(&mut stream.role) {
            Role::Pass => false,
            Role::Probe => true,
            Role::None | Role::Rejected => return,
        };
        let now = host.now_nanos();
        let upstream = Upstream::read(host);
        if upstream.client_gone() {
            if probe {
                self.with_record(host, &stream.key, now, |rec| (self.breakers.release_probe(rec), ()));
            }
            return;
        }
        let metrics = self.key_metrics(host, &stream.key);
        let mut sample =
            self.breakers.sample(upstream.status, upstream.network_failure(), now.saturating_sub(stream.start));
        sample.failure |= upstream.invalid_status();
        metrics.requests.inc(host);
        if sample.failure {
            metrics.failures.inc(host);
        }
        if self.changes_nothing(stream, probe, sample.failure) {
            metrics.state.set(host, State::Closed.gauge());
            return;
        }
        let outcome = self.with_record(host, &stream.key, now, |rec| {
            let (changed, t) = self.breakers.complete(rec, now, &sample, probe);
            (changed, (t, rec.state))
        });
        if let Some((t, state)) = outcome {
            metrics.transition(host, t);
            if let Some(t) = t {
                stream.transition = Some((t.from, t.to));
                log::info!("breaker {} {} -> {}", stream.key, t.from.name(), t.to.name());
            }
            metrics.state.set(host, state.gauge());
        }
    }

    fn reject<H: Host>(&self, host: &H, key: &str, retry_after_ns: u64, state: State) -> Flow {
        let retry = retry_after_ns.div_ceil(1_000_000_000).max(1);
        let cfg = self.breakers.config();
        let mut headers = vec![
            ("retry-after".to_string(), retry.to_string()),
            ("x-circuit-breaker".to_string(), format!("{key}; state={}", state.name())),
        ];
        let body = match &cfg.body {
            Some(b) => {
                if let Some(ct) = cfg.content_type {
                    headers.push(("content-type".to_string(), ct.to_string()));
                }
                b.clone()
            }
            None => {
                headers.push(("content-type".to_string(), "application/json".to_string()));
                serde_json::json!({"error": "circuit_open", "breaker": key, "state": state.name(), "retry_after": retry})
                    .to_string()
                    + "\n"
            }
        };
        crate::host::reply_or_pass(host, "circuit-breaker", cfg.status, &headers, body.as_bytes())
    }
}

impl Filter for BreakerFilter {
    type Stream = BreakerStream;
    type Config = BreakerConfig;
    const METRIC_PREFIX: &'static str = "circuit_breaker";

    fn check(config: &[u8]) -> Result<BreakerConfig, ConfigError> {
        BreakerConfig::from_json(config)
    }

    fn build<H: Host>(host: &H, config: BreakerConfig) -> Result<Self, Refused> {
        let mut breakers = Breakers::new(config);
        for note in &breakers.config().notes {
            log::warn!("{note}");
        }
        let created = Refused::store("the breaker table", breakers.initialize(host))?;
        let metrics = FilterMetrics::define(host, "circuit_breaker.");
        log::info!("configured, key {:?}, {created} new slot(s)", breakers.config().key);
        let fixed = match &breakers.config().key {
            KeyKind::Fixed(name) => Some(name.clone()),
            _ => None,
        };
        let filter = BreakerFilter {
            breakers,
            slots: RefCell::default(),
            per_key: RefCell::default(),
            other: Default::default(),
            metrics,
        };
        // A fixed key's metrics exist from the start, on every worker (a
        // metrics page served by a worker that has not seen a request yet
        // still lists them: nginx's exporter knows the names its worker
        // defined). Other keys' metrics are defined at their first request.
        if let Some(name) = fixed {
            filter.key_metrics(host, &name);
        }
        Ok(filter)
    }

    fn on_request_headers<H: Host>(&self, stream: &mut BreakerStream, host: &H) -> Flow {
        let now = host.now_nanos();
        stream.key = resolve_key(&self.breakers.config().key, host);
        stream.start = now;
        if let Some(clean) = self.closed_fast(host, &stream.key) {
            stream.clean = clean;
            stream.role = Role::Pass;
            stream.decided = Role::Pass;
            stream.state = Some(State::Closed);
            return Flow::Continue;
        }
        let admitted = self.with_record(host, &stream.key, now, |rec| {
            let (a, changed, t) = self.breakers.admit(rec, now);
            (changed, (a, t, rec.state))
        });
        let Some((admission, transition, state)) = admitted else { return Flow::Continue };
        let metrics = self.key_metrics(host, &stream.key);
        metrics.transition(host, transition);
        metrics.state.set(host, state.gauge());
        stream.state = Some(state);
        stream.transition = transition.map(|t| (t.from, t.to));
        match admission {
            Admission::Pass => stream.role = Role::Pass,
            Admission::Probe => stream.role = Role::Probe,
            Admission::Reject { retry_after_ns, state } => {
                stream.role = Role::Rejected;
                stream.decided = Role::Rejected;
                metrics.rejected.inc(host);
                return self.reject(host, &stream.key, retry_after_ns, state);
            }
        }
        stream.decided = stream.role;
        Flow::Continue
    }

    /// The outcome is recorded when the response headers arrive (the
    /// status and, for a failure, the proxy's flags are known then, and the
    /// callback that reads `:status` pays for the record's read too).
    fn on_response_headers<H: Host>(&self, stream: &mut BreakerStream, host: &H) {
        self.settle(stream, host);
    }

    /// Only a request that never got response headers is settled here.
    fn on_log<H: Host>(&self, stream: &mut BreakerStream, host: &H) {
        self.settle(stream, host);
    }

    /// `circuit_breaker.key`, `circuit_breaker.state` (the breaker's state
    /// when the request arrived: `closed`, `open`, `half-open`,
    /// `recovering`), `circuit_breaker.decision` (`passed`, `probe`,
    /// `rejected`) and, when this request's admission or outcome moved the
    /// breaker, `circuit_breaker.transition` (`closed->open`, ...). Nothing
    /// for a request the breaker did not track (no slot, or the store failed).
    fn span_attributes(&self, stream: &BreakerStream, out: &mut Vec<(&'static str, String)>) {
        let decision = match stream.decided {
            Role::None => return,
            Role::Pass => "passed",
            Role::Probe => "probe",
            Role::Rejected => "rejected",
        };
        out.push(("circuit_breaker.key", stream.key.to_string()));
        if let Some(state) = stream.state {
            out.push(("circuit_breaker.state", state.name().to_string()));
        }
        out.push(("circuit_breaker.decision", decision.to_string()));
        if let Some((from, to)) = stream.transition {
            out.push(("circuit_breaker.transition", format!("{}->{}", from.name(), to.name())));
        }
    }
}
