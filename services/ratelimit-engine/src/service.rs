//! The `ShouldRateLimit` decision, as envoyproxy/ratelimit's `service`
//! package makes it: each descriptor's rule (or the request's `limit`
//! override), the hits charged in Redis ([`crate::redis`]), the verdict per
//! descriptor and overall, the metrics; and the reading and writing of the
//! protocol's messages for both transports ([`crate::server`]).

use crate::config::{Config, Found, Limit, Rule};
use crate::metrics::Metrics;
use crate::redis::{redis_key, Counter};
use rls_protocol::{self as wire, Code, Unit};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One descriptor's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// OK or OVER_LIMIT.
    pub code: Code,
    /// The limit applied (`None`: not limited).
    pub limit: Option<Limit>,
    /// Requests left.
    pub remaining: u32,
    /// Until reset (see the module docs).
    pub reset: Duration,
}

/// A config and where its limits count in the metrics.
struct Snapshot {
    config: Config,
    metric_ids: Vec<usize>,
}

/// The service: config (replaced whole on a reload), the Redis counter,
/// metrics.
pub struct Service {
    current: RwLock<Arc<Snapshot>>,
    /// Where hits are charged.
    pub counter: Counter,
    /// Admitted hits with more than this share of the limit used count as
    /// `near_limit`.
    pub near_limit_ratio: f64,
    /// The counters `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// `SHADOW_MODE`: every configured limit is counted but never refuses.
    pub global_shadow: bool,
    /// `CACHE_KEY_PREFIX`: in front of every Redis key.
    pub key_prefix: String,
    /// `HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED`: `/healthcheck` fails
    /// while no domain is configured.
    pub healthy_needs_config: bool,
    /// `TRACING_ENABLED`: a span per call.
    pub tracer: Option<crate::traces::Tracer>,
}

/// A request: domain, descriptors.
pub struct Request {
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
}

/// One descriptor of a request.
pub struct Descriptor {
    /// Its entries, in order.
    pub entries: Vec<(String, String)>,
    /// Hits to charge (0: check without counting).
    pub hits: u64,
    /// The `limit` override the request carries: requests per unit and the
    /// unit's wire number (checked in [`find`]).
    pub limit: Option<(u32, i32)>,
}

impl Service {
    /// The service for `config`, charging through `counter`.
    pub fn new(config: Config, counter: Counter, near_limit_ratio: f64, metrics: Arc<Metrics>) -> Self {
        let metric_ids = metrics.ids_for(&config.limit_names);
        Service {
            current: RwLock::new(Arc::new(Snapshot { config, metric_ids })),
            counter,
            near_limit_ratio,
            metrics,
            global_shadow: false,
            key_prefix: String::new(),
            healthy_needs_config: false,
            tracer: None,
        }
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.read().ok().map(|s| Arc::clone(&s))
    }

    /// Puts `config` in place for the requests that come next (those under
    /// way finish with the one they started with).
    pub fn replace(&self, config: Config) {
        let metric_ids = self.metrics.ids_for(&config.limit_names);
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(Snapshot { config, metric_ids });
        }
    }

    /// Domains configured now.
    pub fn domains(&self) -> usize {
        self.snapshot().map_or(0, |s| s.config.domains())
    }

    /// The configuration as upstream's debug `/rlconfig` prints it.
    pub fn dump(&self) -> String {
        self.snapshot().map(|s| s.config.dump()).unwrap_or_default()
    }

    /// Decides a request: overall code and one verdict per descriptor.
    /// `Err` when Redis failed (the caller answers UNAVAILABLE).
    ///
    /// As `envoyproxy/ratelimit`: a limit named in another matched limit's
    /// `replaces` is not applied; a shadow descriptor over its limit is
    /// answered OK; the request is over the limit when a descriptor that is
    /// not in quota mode is, or when every quota-mode descriptor is.
    pub async fn should_rate_limit(&self, req: &Request) -> Result<(Code, Vec<Verdict>), redis::RedisError> {
        let Some(snap) = self.snapshot() else { return Ok((Code::Ok, Vec::new())) };
        let found: Vec<Option<Found<'_>>> =
            req.descriptors.iter().map(|d| find(&snap.config, &req.domain, d, &self.metrics)).collect();
        let replaced: HashSet<&str> = found
            .iter()
            .flatten()
            .filter_map(|f| match &*f.rule {
                Rule::Limited(l) => Some(l.replaces.iter().map(String::as_str)),
                Rule::Unlimited => None,
            })
            .flatten()
            .collect();
        let checks = req
            .descriptors
            .iter()
            .zip(&found)
            .map(|(d, f)| self.check_one(&req.domain, &d.entries, d.hits, f.as_ref(), &replaced, &snap.metric_ids));
        let verdicts: Vec<Verdict> = futures_util::future::try_join_all(checks).await?;
        let quota = |v: &Verdict| v.limit.as_ref().is_some_and(|l| l.quota);
        let over_rate = verdicts.iter().any(|v| v.code == Code::OverLimit && !quota(v));
        let quotas: Vec<&Verdict> = verdicts.iter().filter(|v| quota(v)).collect();
        let over_quota = !quotas.is_empty() && quotas.iter().all(|v| v.code == Code::OverLimit);
        Ok((if over_rate || over_quota { Code::OverLimit } else { Code::Ok }, verdicts))
    }

    async fn check_one(
        &self,
        domain: &str,
        entries: &[(String, String)],
        hits: u64,
        found: Option<&Found<'_>>,
        replaced: &HashSet<&str>,
        metric_ids: &[usize],
    ) -> Result<Verdict, redis::RedisError> {
        let ok = |limit: Option<Limit>, remaining| Verdict { code: Code::Ok, limit, remaining, reset: Duration::ZERO };
        let Some(found) = found else {
            self.metrics.no_limit();
            return Ok(ok(None, 0));
        };
        let limit = match &*found.rule {
            // Upstream answers an unlimited descriptor with the most a u32 holds.
            Rule::Unlimited => return Ok(ok(None, u32::MAX)),
            Rule::Limited(l) if !l.name.is_empty() && replaced.contains(l.name.as_str()) => return Ok(ok(None, 0)),
            Rule::Limited(l) => l.clone(),
        };
        let key = redis_key(domain, &counted_entries(entries, &found.shared));
        let key = if self.key_prefix.is_empty() { key } else { format!("{}{key}", self.key_prefix) };
        // Upstream's global shadow mode spares the limits a request brings
        // itself (an override: no id).
        let shadow = limit.shadow || (self.global_shadow && limit.id != usize::MAX);
        let rpu = u64::from(limit.requests_per_unit);
        // More hits than the limit holds are over it whatever the count: one
        // more than the limit says so to both scripts, and keeps the numbers
        // Redis adds (an i64) and Lua reads (a double) far from their ends.
        let charged = hits.min(rpu + 1);
        let (allowed, remaining, reset) = self.counter.charge(&key, rpu, limit.unit_secs, charged).await?;
        let used = rpu.saturating_sub(remaining);
        let near = allowed && (used as f64) > self.near_limit_ratio * rpu as f64;
        if let Some(id) = metric_ids.get(limit.id) {
            self.metrics.descriptor(*id, hits, allowed, near, shadow);
        }
        Ok(Verdict {
            code: if allowed || shadow { Code::Ok } else { Code::OverLimit },
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset,
            limit: Some(limit),
        })
    }
}

/// The configured rule, or the request's `limit` override (which, as
/// upstream, replaces the configured limit, is never in shadow mode, and
/// counts under the same key).
///
/// An override only applies in a domain the config knows (upstream answers
/// OK with no limit elsewhere, its `TestConfigLimitOverride`), and only with
/// a unit that names a duration: an override without one (no unit,
/// `UNKNOWN`, a number outside the enum) is ignored and the configured rule
/// applies, so that a broken override can never lift a configured limit.
fn find<'a>(config: &'a Config, domain: &str, d: &Descriptor, metrics: &Metrics) -> Option<Found<'a>> {
    let Some((rpu, unit)) = d.limit else { return config.find(domain, &d.entries) };
    if !config.has_domain(domain) {
        return None;
    }
    let Some(unit) = Unit::from_wire(unit) else {
        metrics.override_ignored();
        return config.find(domain, &d.entries);
    };
    let unit_secs = unit.seconds();
    let rule = Cow::Owned(Rule::Limited(Limit {
        requests_per_unit: rpu,
        unit,
        unit_secs,
        name: String::new(),
        shadow: false,
        quota: false,
        replaces: Vec::new(),
        id: usize::MAX,
    }));
    Some(Found { rule, shared: Vec::new() })
}

/// The entries a descriptor is counted under: its own (not copied), except
/// that a `share_threshold` wildcard's entries count under the pattern.
fn counted_entries<'a>(entries: &'a [(String, String)], shared: &[Option<&str>]) -> Cow<'a, [(String, String)]> {
    if shared.iter().all(Option::is_none) {
        return Cow::Borrowed(entries);
    }
    entries
        .iter()
        .zip(shared.iter().chain(std::iter::repeat(&None)))
        .map(|((k, v), s)| (k.clone(), s.map_or_else(|| v.clone(), str::to_string)))
        .collect()
}

/// The limiter's request for a message: each descriptor charges its own
/// `hits_addend` when it has one (0 checks without counting, as upstream),
/// else the request's (at least 1).
pub fn request_of(r: wire::RateLimitRequest) -> Request {
    let hits = u64::from(r.hits_addend.max(1));
    Request {
        domain: r.domain,
        descriptors: r
            .descriptors
            .into_iter()
            .map(|d| Descriptor {
                hits: d.hits_addend.map_or(hits, |v| v.value),
                limit: d.limit.map(|l| (l.requests_per_unit, l.unit)),
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
            })
            .collect(),
    }
}

pub fn status_of(v: &Verdict) -> wire::DescriptorStatus {
    wire::DescriptorStatus {
        code: v.code.wire(),
        current_limit: v.limit.as_ref().map(|l| wire::RateLimitValue {
            requests_per_unit: l.requests_per_unit,
            unit: l.unit.wire(),
            name: l.name.clone(),
        }),
        limit_remaining: v.remaining,
        duration_until_reset: v.limit.as_ref().map(|_| wire::ProtoDuration {
            seconds: i64::try_from(v.reset.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(v.reset.subsec_nanos()).unwrap_or(0),
        }),
    }
}

/// Refuses what upstream refuses before deciding (gRPC INVALID_ARGUMENT,
/// HTTP 400).
pub fn invalid(r: &wire::RateLimitRequest) -> Option<&'static str> {
    if r.domain.is_empty() {
        return Some("rate limit domain must not be empty");
    }
    r.descriptors.is_empty().then_some("rate limit descriptor list must not be empty")
}

/// Decides a request for either transport; `Err` when Redis failed (counted).
/// [`decide`], traced when tracing is on: the span is the child of the
/// caller's `traceparent` (see `traces.rs`), `protocol` its `rpc.system`.
pub async fn decide_traced(
    limiter: &Service,
    r: wire::RateLimitRequest,
    traceparent: Option<&str>,
    protocol: &str,
) -> Result<wire::RateLimitResponse, String> {
    let Some(tracer) = &limiter.tracer else { return decide(limiter, r).await };
    let Some(span) = tracer.begin(traceparent) else { return decide(limiter, r).await };
    use crate::traces::otlp::{int, text};
    let mut attributes = vec![
        text("rpc.system", protocol),
        text("rpc.service", "envoy.service.ratelimit.v3.RateLimitService"),
        text("rpc.method", "ShouldRateLimit"),
        text("ratelimit.domain", &r.domain),
        int("ratelimit.descriptors", r.descriptors.len() as i64),
    ];
    let answer = decide(limiter, r).await;
    let code = match &answer {
        Ok(a) if Code::from_wire(a.overall_code) == Code::OverLimit => "OVER_LIMIT",
        Ok(_) => "OK",
        Err(_) => "UNAVAILABLE",
    };
    attributes.push(text("ratelimit.overall_code", code));
    tracer.end(span, attributes, answer.as_ref().err().map(String::as_str));
    answer
}

/// Decides one request: its answer, or why Redis could not say.
pub async fn decide(limiter: &Service, r: wire::RateLimitRequest) -> Result<wire::RateLimitResponse, String> {
    let started = std::time::Instant::now();
    let decided = limiter.should_rate_limit(&request_of(r)).await;
    limiter.metrics.decided_in(started.elapsed());
    match decided {
        Ok((code, verdicts)) => Ok(wire::RateLimitResponse {
            overall_code: code.wire(),
            statuses: verdicts.iter().map(status_of).collect(),
            response_headers_to_add: Vec::new(),
            request_headers_to_add: Vec::new(),
        }),
        Err(e) => {
            limiter.metrics.redis_error();
            Err(format!("redis: {e}"))
        }
    }
}
