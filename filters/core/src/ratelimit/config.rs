//! The rate-limit filter's configuration: the JSON users write, and the
//! checked form the limiter runs on. Every field is documented, with its
//! default, in `filters/rate-limit/README.md`.

use super::cost::{check_cost, check_tiers, check_trusted_sources, Cost, CostSource, RawTiers, Tiers};
use super::gcra::Gcra;
use super::global::{FailureMode, GlobalService, RawGlobalService};
use crate::config::{
    check_name, check_reply_status, check_trusted_hops, parse_json, same_metric_name, ConfigError, NonZeroDuration,
};
use crate::matcher::{valid_header_name, Matcher, RawMatch};
use crate::net::Cidr;
use crate::usage::UsagePaths;
use serde::Deserialize;
use std::time::Duration;

/// Default number of shared-data slots per limit.
pub const DEFAULT_TABLE_SIZE: u32 = 16_384;
/// Largest accepted `table_size` (about 93 MiB of Envoy shared data per limit).
pub const MAX_TABLE_SIZE: u32 = 1 << 20;
/// Largest accepted total of slots over all limits: every slot is created at
/// start-up, so this bounds the filter's memory (about 93 bytes of Envoy
/// shared data per slot: 93 MiB) and its start-up time (4,194,304 slots took
/// 45 s and 492 MB).
pub const MAX_TOTAL_SLOTS: u64 = 1 << 20;
/// Shortest accepted `period`.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// Fastest accepted sustained rate, per key: one request per microsecond.
pub const MAX_REQUESTS_PER_SECOND: u64 = 1_000_000;

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "RateLimitConfig"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    limits: Vec<RawLimit>,
    #[serde(default)]
    trusted_hops: u32,
    #[serde(default = "default_ipv4_prefix")]
    ipv4_prefix: u8,
    #[serde(default = "default_ipv6_prefix")]
    ipv6_prefix: u8,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    headers: HeaderStyle,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default = "default_table_size")]
    table_size: u32,
    #[serde(default)]
    global: Option<RawGlobalService>,
    #[serde(default)]
    trusted_sources: Vec<String>,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    trace: bool,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    metrics_path: Option<String>,
}

fn default_status() -> u16 {
    429
}

fn default_ipv4_prefix() -> u8 {
    32
}

/// A /64 is what one subscriber or host usually gets, and rotates addresses
/// inside: keyed per address, every rotation would be a fresh bucket.
fn default_ipv6_prefix() -> u8 {
    64
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Limit"))]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    requests: u64,
    period: NonZeroDuration,
    #[serde(default)]
    burst: Option<u64>,
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::rate_limit_key"))]
    key: serde_json::Value,
    #[serde(default, rename = "match")]
    matcher: RawMatch,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<super::cost::RawCost>"))]
    cost: Option<serde_json::Value>,
    #[serde(default)]
    tiers: Option<RawTiers>,
}

/// A rate as written: in a tier.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "TierRate"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRate {
    pub(crate) requests: u64,
    pub(crate) period: NonZeroDuration,
    #[serde(default)]
    pub(crate) burst: Option<u64>,
}

/// Where a limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In this proxy's shared data: exact across its workers.
    #[default]
    Local,
    /// By a rate limit service shared by every proxy of the fleet
    /// (the `global` section says which).
    Global,
}

/// Enforce limits, or only measure them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse requests over the limit.
    #[default]
    Enforce,
    /// Count and add headers, never refuse.
    Shadow,
}

/// Which rate-limit response headers to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
    #[default]
    Draft,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    XRatelimit,
    /// Both sets.
    Both,
    /// No rate-limit headers (a refusal still carries `Retry-After`).
    None,
}

/// One component of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address (peer, or `X-Forwarded-For` per `trusted_hops`).
    ClientIp,
    /// A request header's value (lower-case name).
    Header(String),
    /// The path without the query string.
    Path,
    /// The method.
    Method,
    /// Nothing: one bucket for all requests (`"all"`; `"global"` is an alias).
    All,
}

/// One checked limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Unique name: metrics, headers and the refusal body use it.
    pub name: String,
    /// Requests per period.
    pub requests: u64,
    /// The period.
    pub period: Duration,
    /// Requests a full bucket admits at once.
    pub burst: u64,
    /// The bucket parameters.
    pub gcra: Gcra,
    /// The key, in order.
    pub key: Vec<KeyPart>,
    /// The requests it applies to.
    pub matcher: Matcher,
    /// Shared-data slots of this limit: `table_size`, or 1 when the key is
    /// `global` alone (every request maps to the same bucket). A limit of
    /// scope `global` has slots only for its degraded local bucket
    /// (`failure_mode: "local"`), otherwise none.
    pub slots: u32,
    /// Local or global.
    pub scope: Scope,
    /// For a global limit under `failure_mode: "local"`: the local bucket
    /// (`requests / replicas`, `burst / replicas`, rounded up) that stands in
    /// while the service is unreachable.
    pub degraded: Option<Gcra>,
    /// What one request charges (`None`: 1).
    pub cost: Option<Cost>,
    /// Rates by tier (`None`: the limit's own rate for every request).
    pub tiers: Option<Tiers>,
}

impl Limit {
    /// The bucket of tier `tier` (0: the limit's own rate).
    pub fn tier_gcra(&self, tier: u8) -> &Gcra {
        match (&self.tiers, tier.checked_sub(1)) {
            (Some(t), Some(i)) => t.tiers.get(usize::from(i)).map_or(&self.gcra, |t| &t.gcra),
            _ => &self.gcra,
        }
    }

    /// The quota (units per period) of tier `tier`.
    pub fn tier_requests(&self, tier: u8) -> u64 {
        match (&self.tiers, tier.checked_sub(1)) {
            (Some(t), Some(i)) => t.tiers.get(usize::from(i)).map_or(self.requests, |t| t.requests),
            _ => self.requests,
        }
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Limits, checked in order.
    pub limits: Vec<Limit>,
    /// Proxies in front of us whose `X-Forwarded-For` entries are trusted.
    pub trusted_hops: u32,
    /// `client_ip` keys are the client's IPv4 network of this many bits.
    pub ipv4_prefix: u8,
    /// `client_ip` keys are the client's IPv6 network of this many bits.
    pub ipv6_prefix: u8,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Response headers.
    pub headers: HeaderStyle,
    /// Status of a refusal.
    pub status: u16,
    /// Shared-data slots per limit.
    pub table_size: u32,
    /// The rate limit service of the `global` limits. Checked: `Some` exactly
    /// when at least one limit has scope `global`.
    pub global: Option<GlobalService>,
    /// The peers whose tier and cost headers are believed (empty: all).
    pub trusted_sources: Vec<Cidr>,
    /// The response-body paths the limits' costs read.
    pub usage_paths: UsagePaths,
}

impl RateLimitConfig {
    /// Parses and checks the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_json(bytes)?;
        if raw.limits.is_empty() {
            return Err(ConfigError::new("limits", "must hold at least one limit"));
        }
        check_reply_status("status", raw.status)?;
        if raw.table_size == 0 || raw.table_size > MAX_TABLE_SIZE {
            return Err(ConfigError::new("table_size", format!("must be between 1 and {MAX_TABLE_SIZE}")));
        }
        check_trusted_hops("trusted_hops", raw.trusted_hops)?;
        if !(8..=32).contains(&raw.ipv4_prefix) {
            return Err(ConfigError::new("ipv4_prefix", "must be between 8 and 32"));
        }
        if !(16..=128).contains(&raw.ipv6_prefix) {
            return Err(ConfigError::new("ipv6_prefix", "must be between 16 and 128"));
        }
        let global = match raw.global {
            Some(g) => Some(g.check()?),
            None => None,
        };
        let replicas = global.as_ref().and_then(|g| match g.failure_mode {
            FailureMode::Local { replicas } => Some(replicas),
            _ => None,
        });
        let trusted_sources = check_trusted_sources(&raw.trusted_sources)?;
        let mut usage_paths = UsagePaths::default();
        let mut limits: Vec<Limit> = Vec::with_capacity(raw.limits.len());
        for (i, l) in raw.limits.into_iter().enumerate() {
            if l.scope == Scope::Global && global.is_none() {
                return Err(ConfigError::new(
                    format!("limits[{i}].scope"),
                    "is \"global\" but the configuration has no `global` section naming the rate limit service",
                ));
            }
            let limit = check_limit(i, l, raw.table_size, replicas, &mut usage_paths)?;
            if limits.iter().any(|o| same_metric_name(&o.name, &limit.name)) {
                return Err(ConfigError::new(
                    format!("limits[{i}].name"),
                    format!(
                        "\"{}\" is used by another limit (names differing only in '-' and '_' share metrics)",
                        limit.name
                    ),
                ));
            }
            limits.push(limit);
        }
        if global.is_some() && !limits.iter().any(|l| l.scope == Scope::Global) {
            return Err(ConfigError::new("global", "is set but no limit has \"scope\": \"global\""));
        }
        let total: u64 = limits.iter().map(|l| u64::from(l.slots)).sum();
        if total > MAX_TOTAL_SLOTS {
            return Err(ConfigError::new(
                "table_size",
                format!("{} limits x table_size = {total} slots, more than {MAX_TOTAL_SLOTS}", limits.len()),
            ));
        }
        Ok(RateLimitConfig {
            limits,
            trusted_hops: raw.trusted_hops,
            ipv4_prefix: raw.ipv4_prefix,
            ipv6_prefix: raw.ipv6_prefix,
            mode: raw.mode,
            headers: raw.headers,
            status: raw.status,
            table_size: raw.table_size,
            global,
            trusted_sources,
            usage_paths,
        })
    }

    /// True when some limit keys on the client address.
    pub fn needs_peer(&self) -> bool {
        let reads_trusted = |l: &Limit| {
            l.tiers.is_some()
                || l.cost.as_ref().is_some_and(|c| matches!(c.source, super::cost::CostSource::RequestHeader(_)))
        };
        self.limits.iter().any(|l| l.key.contains(&KeyPart::ClientIp))
            || (!self.trusted_sources.is_empty() && self.limits.iter().any(reads_trusted))
    }

    /// The request headers the limits read, so that the filter fetches only
    /// those; `None` when every header must be fetched (all values of a
    /// repeated `X-Forwarded-For` are needed, which one-header reads do not
    /// give).
    pub fn needed_headers(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        };
        for l in &self.limits {
            for k in &l.key {
                match k {
                    KeyPart::ClientIp if self.trusted_hops > 0 => return None,
                    KeyPart::Header(h) => add(h),
                    KeyPart::Path => add(":path"),
                    KeyPart::Method => add(":method"),
                    KeyPart::ClientIp | KeyPart::All => {}
                }
            }
            if !l.matcher.methods.is_empty() {
                add(":method");
            }
            if !l.matcher.path_prefix.is_empty() {
                add(":path");
            }
            for h in &l.matcher.headers {
                add(h.name());
            }
            if let Some(t) = &l.tiers {
                add(&t.header);
            }
            if let Some(super::cost::CostSource::RequestHeader(h)) = l.cost.as_ref().map(|c| &c.source) {
                add(h);
            }
        }
        Some(names)
    }
}

/// Checks one rate (`requests` per `period`, up to `burst`) where
/// `field(name)` names its fields: the burst (default `requests`) and the
/// bucket.
fn check_rate(
    field: &dyn Fn(&str) -> String,
    requests: u64,
    period: NonZeroDuration,
    burst: Option<u64>,
) -> Result<(u64, Gcra), ConfigError> {
    if requests == 0 {
        return Err(ConfigError::new(field("requests"), "must be at least 1"));
    }
    if period.get() < MIN_PERIOD {
        return Err(ConfigError::new(field("period"), "must be at least 1ms"));
    }
    let burst = burst.unwrap_or(requests);
    if burst == 0 {
        return Err(ConfigError::new(field("burst"), "must be at least 1"));
    }
    let period_nanos = period.nanos();
    if period_nanos / requests < 1_000_000_000 / MAX_REQUESTS_PER_SECOND {
        return Err(ConfigError::new(
            field("requests"),
            format!("is more than {MAX_REQUESTS_PER_SECOND} per second for one key; that is no limit"),
        ));
    }
    let gcra = Gcra::new(requests, period_nanos, burst).ok_or_else(|| {
        ConfigError::new(field("burst"), "is too large: burst x period / requests must fit in 584 years")
    })?;
    Ok((burst, gcra))
}

fn check_limit(
    i: usize,
    raw: RawLimit,
    table_size: u32,
    replicas: Option<u32>,
    usage_paths: &mut UsagePaths,
) -> Result<Limit, ConfigError> {
    let field = |f: &str| format!("limits[{i}].{f}");
    check_name(&field("name"), &raw.name)?;
    let period = raw.period.get();
    let period_nanos = raw.period.nanos();
    let (burst, gcra) = check_rate(&field, raw.requests, raw.period, raw.burst)?;
    let tiers = match raw.tiers {
        None => None,
        Some(_) if raw.scope == Scope::Global => {
            return Err(ConfigError::new(
                field("tiers"),
                "is for local limits: a global limit's rates are the rate limit service's (put the tier in its \
                 descriptors)",
            ))
        }
        Some(t) => Some(check_tiers(&field("tiers"), t, |at, r| {
            check_rate(&|f: &str| format!("{at}.{f}"), r.requests, r.period, r.burst)
        })?),
    };
    let smallest_burst = tiers.iter().flat_map(|t| t.tiers.iter().map(|t| t.burst)).fold(burst, u64::min);
    let cost = match raw.cost {
        None => None,
        Some(c) => Some(check_cost(&field("cost"), c, smallest_burst, usage_paths)?),
    };
    if raw.scope == Scope::Global && cost.as_ref().is_some_and(|c| matches!(c.source, CostSource::ResponseHeader(_))) {
        return Err(ConfigError::new(
            field("cost.response_header"),
            "is for local limits: a global limit's cost from the response is read from its body (response_body)",
        ));
    }
    // A bucket may go into debt by the largest cost one settlement charges.
    let debt = cost.as_ref().filter(|c| c.after_response()).map_or(0, |c| c.max);
    let gcra = gcra.with_debt(debt);
    let tiers = tiers.map(|mut t| {
        for tier in &mut t.tiers {
            tier.gcra = tier.gcra.with_debt(debt);
        }
        t
    });
    let key = check_key(&field("key"), &raw.key)?;
    let matcher = raw.matcher.check(&field("match"))?;
    let degraded = match (raw.scope, replicas) {
        (Scope::Global, Some(n)) => {
            let share = |v: u64| v.div_ceil(u64::from(n)).max(1);
            let d = Gcra::new(share(raw.requests), period_nanos, share(burst)).ok_or_else(|| {
                ConfigError::new(
                    field("requests"),
                    "divided by global.failure_mode replicas gives no valid local bucket",
                )
            })?;
            Some(d)
        }
        _ => None,
    };
    let slots = match (raw.scope, &degraded) {
        (Scope::Global, None) => 0,
        _ if key.iter().all(|k| *k == KeyPart::All) => 1,
        _ => table_size,
    };
    Ok(Limit {
        name: raw.name,
        requests: raw.requests,
        period,
        burst,
        gcra,
        key,
        matcher,
        slots,
        scope: raw.scope,
        degraded,
        cost,
        tiers,
    })
}

fn check_key(field: &str, value: &serde_json::Value) -> Result<Vec<KeyPart>, ConfigError> {
    let parts: Vec<(String, &serde_json::Value)> = match value {
        serde_json::Value::String(_) => vec![(field.to_string(), value)],
        serde_json::Value::Array(items) if !items.is_empty() => {
            items.iter().enumerate().map(|(j, v)| (format!("{field}[{j}]"), v)).collect()
        }
        serde_json::Value::Array(_) => return Err(ConfigError::new(field, "must name at least one key kind")),
        _ => return Err(ConfigError::new(field, "must be a key kind or a list of key kinds")),
    };
    parts
        .into_iter()
        .map(|(f, v)| {
            let text = v.as_str().ok_or_else(|| ConfigError::new(&f, "must be a string"))?;
            parse_key_part(text).ok_or_else(|| {
                ConfigError::new(
                    &f,
                    format!("unknown key kind \"{text}\"; use client_ip, header:<name>, host, path, method or all"),
                )
            })
        })
        .collect()
}

fn parse_key_part(text: &str) -> Option<KeyPart> {
    match text {
        "client_ip" => Some(KeyPart::ClientIp),
        "path" => Some(KeyPart::Path),
        "method" => Some(KeyPart::Method),
        // The request's host as sent (Traefik's `sourceCriterion.requestHost`).
        "host" => Some(KeyPart::Header(":authority".into())),
        // "global" is the old spelling, kept as an alias; it is unrelated to
        // `"scope": "global"` (counted by the rate limit service).
        "all" | "global" => Some(KeyPart::All),
        _ => {
            let name = text.strip_prefix("header:")?;
            valid_header_name(name).then(|| KeyPart::Header(name.to_ascii_lowercase()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match RateLimitConfig::from_json(json.as_bytes()) {
            Ok(_) => String::from("accepted"),
            Err(e) => e.to_string(),
        }
    }

    const OK: &str = r#"{"limits":[{"name":"per-ip","requests":100,"period":"1s","burst":50,"key":"client_ip"}]}"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = RateLimitConfig::from_json(OK.as_bytes()).unwrap();
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.headers, HeaderStyle::Draft);
        assert_eq!(c.status, 429);
        assert_eq!(c.trusted_hops, 0);
        assert_eq!(c.table_size, DEFAULT_TABLE_SIZE);
        let l = c.limits.first().unwrap();
        assert_eq!(l.burst, 50);
        assert_eq!(l.key, vec![KeyPart::ClientIp]);
        let c =
            RateLimitConfig::from_json(br#"{"limits":[{"name":"a","requests":7,"period":"1m","key":"all"}]}"#).unwrap();
        assert_eq!(c.limits.first().unwrap().burst, 7);
    }

    #[test]
    fn needed_headers_are_only_what_limits_read() {
        let c = RateLimitConfig::from_json(OK.as_bytes()).unwrap();
        assert_eq!(c.needed_headers(), Some(vec![]));
        let c = RateLimitConfig::from_json(
            br#"{"limits":[{"name":"a","requests":1,"period":"1s","key":["header:X-Key","path"],"match":{"methods":["GET"],"headers":[{"name":"x-tier","equals":"free"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(c.needed_headers(), Some(vec!["x-key".into(), ":path".into(), ":method".into(), "x-tier".into()]));
        let c = RateLimitConfig::from_json(
            br#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"client_ip"}],"trusted_hops":1}"#,
        )
        .unwrap();
        assert_eq!(c.needed_headers(), None, "X-Forwarded-For needs every value");
    }

    #[test]
    fn full_config() {
        let c = RateLimitConfig::from_json(
            br#"{"limits":[{"name":"api","requests":5,"period":"250ms","key":["client_ip","header:X-Api-Key","method","path"],
                "match":{"methods":["get","POST"],"path_prefix":"/api","headers":[{"name":"x-tier","equals":"free"},{"name":"x-internal","present":false}]}}],
               "trusted_hops":2,"mode":"shadow","headers":"both","status":503,"table_size":1024}"#,
        )
        .unwrap();
        let l = c.limits.first().unwrap();
        assert_eq!(l.key, vec![KeyPart::ClientIp, KeyPart::Header("x-api-key".into()), KeyPart::Method, KeyPart::Path]);
        let host = RateLimitConfig::from_json(br#"{"limits":[{"name":"h","requests":1,"period":"1s","key":"host"}]}"#)
            .unwrap();
        assert_eq!(host.limits[0].key, vec![KeyPart::Header(":authority".into())], "host is the :authority");
        assert_eq!(l.matcher.methods, vec!["GET", "POST"]);
        assert_eq!(l.matcher.headers.len(), 2);
        assert_eq!(
            (c.mode, c.headers, c.status, c.table_size, c.trusted_hops),
            (Mode::Shadow, HeaderStyle::Both, 503, 1024, 2)
        );
    }

    #[test]
    fn each_bad_config_names_its_field() {
        let cases = [
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all","colour":1}]}"#,
                "limits[0].colour: unknown field `colour`",
            ),
            (r#"{"limits":[],"bogus":true}"#, "bogus: unknown field `bogus`"),
            (
                r#"{"limits":[{"name":"a","requests":0,"period":"1s","key":"all"}]}"#,
                "limits[0].requests: must be at least 1",
            ),
            (r#"{"limits":[{"name":"a","requests":1,"period":"soon","key":"all"}]}"#, "limits[0].period: \"soon\""),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","burst":0,"key":"all"}]}"#,
                "limits[0].burst: must be at least 1",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"cookie:x"}]}"#,
                "limits[0].key: unknown key kind \"cookie:x\"",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":["global","ip"]}]}"#,
                "limits[0].key[1]: unknown key kind \"ip\"",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"0s","key":"all"}]}"#,
                "limits[0].period: must be longer than zero",
            ),
            (
                r#"{"limits":[{"name":"a","requests":-1,"period":"1s","key":"all"}]}"#,
                "limits[0].requests: invalid value",
            ),
            (r#"{"limits":[{"name":"a b","requests":1,"period":"1s","key":"all"}]}"#, "limits[0].name: must be"),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"},{"name":"a","requests":1,"period":"1s","key":"all"}]}"#,
                "limits[1].name: \"a\" is used",
            ),
            (r#"{"limits":[]}"#, "limits: must hold at least one limit"),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"mode":"audit"}"#,
                "mode: unknown variant `audit`",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"table_size":0}"#,
                "table_size: must be between",
            ),
            (
                r#"{"limits":[{"name":"a-b","requests":1,"period":"1s","key":"all"},{"name":"a_b","requests":1,"period":"1s","key":"all"}]}"#,
                "limits[1].name: \"a_b\" is used by another limit",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"path"},{"name":"b","requests":1,"period":"1s","key":"path"}],"table_size":1048576}"#,
                "table_size: 2 limits x table_size = 2097152 slots, more than 1048576",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"status":200}"#,
                "status: must be a 4xx or 5xx",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all","match":{"path_prefix":"api"}}]}"#,
                "limits[0].match.path_prefix: must start with '/'",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all","match":{"headers":[{"name":"x"}]}}]}"#,
                "limits[0].match.headers[0]: needs exactly one",
            ),
            (
                r#"{"limits":[{"name":"a","requests":2000000000,"period":"1s","key":"all"}]}"#,
                "limits[0].requests: is more than 1000000 per second for one key; that is no limit",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1ns","key":"all"}]}"#,
                "limits[0].period: must be at least 1ms",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1000h","burst":4294967295,"key":"all"}]}"#,
                "limits[0].burst: is too large: burst x period / requests must fit in 584 years",
            ),
            ("[]", "invalid plugin configuration: .: must be a JSON object"),
            ("not json", "invalid plugin configuration: .: expected ident at line 1 column 2"),
        ];
        for (json, want) in cases {
            let got = err(json);
            assert!(got.contains(want), "config {json}\n  got:  {got}\n  want: {want}");
            assert!(got.starts_with("invalid plugin configuration: "), "{got}");
        }
    }
}
