//! The retry-headers filter's logic: per-route retry policy written as the
//! request headers Envoy's router reads, a retry budget shared by the whole
//! proxy, and removal of retry headers a client tries to smuggle in.
//!
//! # Why budgets and not just max retries
//!
//! `max_retries: 3` is right when one request in a hundred fails and wrong
//! when all of them do: then every request becomes four, and a struggling
//! upstream gets four times the load at the worst moment. A budget ties
//! retries to the request rate ([`budget`]), so retries help during partial
//! failures and fade out during total ones.
//!
//! # Per request
//!
//! 1. Every retry-control header the client sent is removed
//!    ([`is_retry_control_header`]), unless the peer is a trusted source; a
//!    trusted peer's own retry headers are then left as they are.
//! 2. The first policy whose match holds applies. A request that is not
//!    idempotent (anything but GET, HEAD, OPTIONS, PUT, DELETE, TRACE) is
//!    only retried when it carries the idempotency header or the policy says
//!    `retry_non_idempotent`; otherwise it gets `x-envoy-max-retries: 0`,
//!    which also overrides a route `retry_policy`.
//! 3. The policy's retries are reserved from the budget; what is granted is
//!    written as `x-envoy-max-retries`, with `x-envoy-retry-on` and the other
//!    headers of the policy. When nothing is granted the request gets
//!    `x-envoy-max-retries: 0`.
//! 4. When the response arrives, the attempts the proxy made
//!    (`upstream.request_attempt_count` in Envoy) tell how many reserved
//!    retries were used; the rest go back to the budget. A 429 or 503 without
//!    `Retry-After` gets one.

pub mod budget;
mod filter;

pub use filter::{create_budget, with_budget, PolicyMetrics, RetryFilter, RetryMetrics, RetryStream};

use crate::config::{check_name, parse_json, same_metric_name, ConfigError, NonZeroDuration};
use crate::matcher::{valid_header_name, Matcher, RawMatch};
use crate::net::Cidr;
use crate::request::RequestView;
use budget::Budget;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Longest budget window: one minute.
pub const MAX_BUDGET_WINDOW_NS: u64 = 60_000_000_000;
/// Most retries per second a budget grants regardless of traffic.
pub const MAX_MIN_PER_SECOND: u32 = 100_000;

/// Shared-data key of the budget (the `shm_kv` zone in nginx is `retry_budget`).
pub const BUDGET_KEY: &str = "retry_budget/budget";

/// The `retry_on` conditions Envoy's router understands.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

/// Headers that order Envoy's router to retry or change timeouts: what a
/// client must not be able to send (`x-envoy-retry-*`, `x-envoy-max-retries`,
/// `x-envoy-retriable-*`, `x-envoy-hedge-on-per-try-timeout`,
/// `x-envoy-upstream-rq-*timeout*`).
pub fn is_retry_control_header(name: &str) -> bool {
    // Compared without lower-casing a copy (once per request header).
    let starts = |prefix: &str| name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    let contains = |part: &str| name.as_bytes().windows(part.len()).any(|w| w.eq_ignore_ascii_case(part.as_bytes()));
    starts("x-envoy-retry")
        || name.eq_ignore_ascii_case("x-envoy-max-retries")
        || starts("x-envoy-retriable-")
        || starts("x-envoy-hedge-")
        || (starts("x-envoy-upstream-rq-") && contains("timeout"))
}

#[cfg(feature = "schema")]
pub(crate) use RawConfig as RawRetryConfig;

/// The JSON Schema of the configuration (see [`crate::schema`]).
#[cfg(feature = "schema")]
pub fn config_schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "RetryConfig"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    policies: Vec<RawPolicy>,
    #[serde(default = "default_idempotency_header")]
    idempotency_header: String,
    #[serde(default)]
    trusted_sources: Vec<String>,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default = "default_retry_after")]
    retry_after: BTreeMap<String, u32>,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    trace: bool,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    metrics_path: Option<String>,
}

fn default_idempotency_header() -> String {
    "idempotency-key".into()
}

fn default_retry_after() -> BTreeMap<String, u32> {
    BTreeMap::from([("429".to_string(), 1), ("503".to_string(), 1)])
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Budget"))]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default = "default_ratio")]
    ratio: f64,
    #[serde(default = "default_min_per_second")]
    min_per_second: u32,
    #[serde(default = "default_window")]
    window: NonZeroDuration,
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget { ratio: default_ratio(), min_per_second: default_min_per_second(), window: default_window() }
    }
}

fn default_ratio() -> f64 {
    0.2
}
fn default_min_per_second() -> u32 {
    10
}
fn default_window() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Policy"))]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(default, rename = "match")]
    matcher: RawMatch,
    #[serde(default = "default_retry_on")]
    retry_on: String,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default)]
    per_try_timeout: Option<NonZeroDuration>,
    #[serde(default)]
    retriable_status_codes: Vec<u16>,
    #[serde(default)]
    hedge_on_per_try_timeout: bool,
    #[serde(default)]
    retry_non_idempotent: bool,
}

fn default_retry_on() -> String {
    "5xx,reset,connect-failure".into()
}
fn default_max_retries() -> u32 {
    2
}

/// One checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name, for metrics.
    pub name: String,
    /// Requests it applies to.
    pub matcher: Matcher,
    /// `x-envoy-retry-on`.
    pub retry_on: String,
    /// Retries wanted (before the budget).
    pub max_retries: u32,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`.
    pub per_try_timeout_ms: Option<u64>,
    /// `x-envoy-retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// The same, as the header spells them (joined once, at configure time).
    pub retriable_status_codes_text: String,
    /// `x-envoy-hedge-on-per-try-timeout: true`.
    pub hedge_on_per_try_timeout: bool,
    /// Retry POST/PATCH without an idempotency key.
    pub retry_non_idempotent: bool,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Policies, first match wins.
    pub policies: Vec<Policy>,
    /// Header that makes a non-idempotent request retriable (lower case).
    pub idempotency_header: String,
    /// Peers whose retry headers are kept.
    pub trusted_sources: Vec<Cidr>,
    /// The shared retry budget.
    pub budget: Budget,
    /// Seconds of `Retry-After` to add per status, when missing.
    pub retry_after: Vec<(u16, u32)>,
}

impl RetryConfig {
    /// Parses and checks the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_json(bytes)?;
        let mut policies: Vec<Policy> = Vec::with_capacity(raw.policies.len());
        for (i, p) in raw.policies.into_iter().enumerate() {
            let policy = check_policy(i, p)?;
            if policies.iter().any(|o| same_metric_name(&o.name, &policy.name)) {
                return Err(ConfigError::new(
                    format!("policies[{i}].name"),
                    format!("\"{}\" is used by another policy", policy.name),
                ));
            }
            policies.push(policy);
        }
        if !valid_header_name(&raw.idempotency_header) {
            return Err(ConfigError::new("idempotency_header", "must be a header name"));
        }
        let mut trusted_sources = Vec::new();
        for (i, t) in raw.trusted_sources.iter().enumerate() {
            trusted_sources.push(Cidr::parse(t).ok_or_else(|| {
                ConfigError::new(format!("trusted_sources[{i}]"), format!("\"{t}\" is not an address or CIDR range"))
            })?);
        }
        let b = raw.budget;
        if !(0.0..=10.0).contains(&b.ratio) {
            return Err(ConfigError::new("budget.ratio", "must be between 0 and 10"));
        }
        let window_ns = b.window.nanos();
        if window_ns < 10_000_000 {
            return Err(ConfigError::new("budget.window", "must be at least 10ms"));
        }
        // The whole window's floor is available at once: a long window is a
        // large burst of retries (1h at 10/s: 36,000 up front).
        if window_ns > MAX_BUDGET_WINDOW_NS {
            return Err(ConfigError::new(
                "budget.window",
                "must be at most 1m (min_per_second x window retries are available at once)",
            ));
        }
        if b.min_per_second > MAX_MIN_PER_SECOND {
            return Err(ConfigError::new("budget.min_per_second", format!("must be at most {MAX_MIN_PER_SECOND}")));
        }
        let mut retry_after = Vec::new();
        for (status, secs) in raw.retry_after {
            let code = status.parse::<u16>().ok().filter(|c| (400..=599).contains(c)).ok_or_else(|| {
                ConfigError::new(format!("retry_after.{status}"), "keys must be 4xx or 5xx status codes")
            })?;
            if secs == 0 || secs > 86_400 {
                return Err(ConfigError::new(format!("retry_after.{status}"), "must be 1 to 86400 seconds"));
            }
            retry_after.push((code, secs));
        }
        Ok(RetryConfig {
            policies,
            idempotency_header: raw.idempotency_header.to_ascii_lowercase(),
            trusted_sources,
            budget: Budget { ratio: b.ratio, min_per_second: b.min_per_second, window_ns, buckets: 10 },
            retry_after,
        })
    }

    /// Is this peer address a trusted source?
    pub fn trusted(&self, peer: Option<std::net::IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_sources.iter().any(|c| c.contains(ip)))
    }

    /// Decides what to do with a request's headers.
    pub fn plan(&self, req: &RequestView, trusted: bool) -> Plan {
        let mut names: Vec<String> = Vec::new();
        for n in req.header_names().filter(|n| is_retry_control_header(n)) {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        if trusted && !names.is_empty() {
            return Plan { strip: Vec::new(), policy: None, want: 0, outcome: Outcome::Trusted };
        }
        let strip = if trusted { Vec::new() } else { names };
        let Some((i, p)) = self.policies.iter().enumerate().find(|(_, p)| p.matcher.matches(req)) else {
            return Plan { strip, policy: None, want: 0, outcome: Outcome::NoPolicy };
        };
        let idempotent = IDEMPOTENT.contains(&req.method());
        if !idempotent && !p.retry_non_idempotent && req.header(&self.idempotency_header).is_none() {
            return Plan { strip, policy: Some(i), want: 0, outcome: Outcome::NotIdempotent };
        }
        Plan { strip, policy: Some(i), want: p.max_retries, outcome: Outcome::Retriable }
    }

    /// The headers to set for a policy with `granted` retries: fixed names,
    /// the configured values lent (only numbers are written per request).
    pub fn headers(&self, policy: usize, granted: u32) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut h = Vec::with_capacity(5);
        self.emit_headers(policy, granted, &mut |name, value| h.push((name, Cow::Owned(value.to_string()))));
        h
    }

    /// Hands each of [`RetryConfig::headers`] to `emit`, nothing spelled on
    /// the heap (numbers on the stack, the rest configured).
    pub fn emit_headers(&self, policy: usize, granted: u32, emit: &mut dyn FnMut(&'static str, &str)) {
        let Some(p) = self.policies.get(policy).filter(|_| granted > 0) else {
            return emit("x-envoy-max-retries", "0");
        };
        let mut digits = [0u8; 20];
        emit("x-envoy-retry-on", &p.retry_on);
        emit("x-envoy-max-retries", crate::text::decimal(u64::from(granted), &mut digits));
        if let Some(ms) = p.per_try_timeout_ms {
            emit("x-envoy-upstream-rq-per-try-timeout-ms", crate::text::decimal(ms, &mut digits));
        }
        if !p.retriable_status_codes.is_empty() {
            emit("x-envoy-retriable-status-codes", &p.retriable_status_codes_text);
        }
        if p.hedge_on_per_try_timeout {
            emit("x-envoy-hedge-on-per-try-timeout", "true");
        }
    }

    /// Seconds of `Retry-After` to add to a response with this status that
    /// has none.
    pub fn retry_after_for(&self, status: u16) -> Option<u32> {
        self.retry_after.iter().find(|(s, _)| *s == status).map(|(_, secs)| *secs)
    }
}

/// What the plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No policy matched: headers stripped only (a route retry_policy still applies).
    NoPolicy,
    /// A trusted peer sent its own retry headers: left alone.
    Trusted,
    /// Not idempotent and no idempotency key: `x-envoy-max-retries: 0`.
    NotIdempotent,
    /// Retries wanted from the budget.
    Retriable,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Header names to remove.
    pub strip: Vec<String>,
    /// The policy that applies.
    pub policy: Option<usize>,
    /// Retries to ask the budget for.
    pub want: u32,
    /// Why.
    pub outcome: Outcome,
}

fn check_policy(i: usize, raw: RawPolicy) -> Result<Policy, ConfigError> {
    let field = |f: &str| format!("policies[{i}].{f}");
    check_name(&field("name"), &raw.name)?;
    let matcher = raw.matcher.check(&field("match"))?;
    let conditions: Vec<&str> = raw.retry_on.split(',').map(str::trim).collect();
    if let Some(bad) = conditions.iter().find(|c| !RETRY_ON.contains(c)) {
        return Err(ConfigError::new(
            field("retry_on"),
            format!("unknown condition \"{bad}\"; Envoy knows {}", RETRY_ON.join(", ")),
        ));
    }
    if raw.max_retries > 10 {
        return Err(ConfigError::new(field("max_retries"), "must be at most 10"));
    }
    let per_try_timeout_ms = match raw.per_try_timeout {
        Some(t) => {
            let ms = u64::try_from(t.get().as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                return Err(ConfigError::new(field("per_try_timeout"), "must be at least 1ms"));
            }
            Some(ms)
        }
        None => None,
    };
    if let Some(bad) = raw.retriable_status_codes.iter().find(|c| !(100..=599).contains(*c)) {
        return Err(ConfigError::new(field("retriable_status_codes"), format!("{bad} is not a status code")));
    }
    if !raw.retriable_status_codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        return Err(ConfigError::new(
            field("retriable_status_codes"),
            "has no effect unless retry_on includes retriable-status-codes",
        ));
    }
    if raw.hedge_on_per_try_timeout && per_try_timeout_ms.is_none() {
        return Err(ConfigError::new(field("hedge_on_per_try_timeout"), "needs per_try_timeout"));
    }
    Ok(Policy {
        name: raw.name,
        matcher,
        retry_on: conditions.join(","),
        max_retries: raw.max_retries,
        per_try_timeout_ms,
        retriable_status_codes_text: raw
            .retriable_status_codes
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
        retriable_status_codes: raw.retriable_status_codes,
        hedge_on_per_try_timeout: raw.hedge_on_per_try_timeout,
        retry_non_idempotent: raw.retry_non_idempotent,
    })
}

#[cfg(test)]
pub(crate) mod filter_tests;
#[cfg(test)]
mod tests;
