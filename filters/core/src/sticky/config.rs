//! The sticky-session filter's configuration. Every field is documented,
//! with its default, in `filters/sticky-session/README.md`.

use super::hashing::is_prime;
use crate::config::{check_name, check_trusted_hops, parse_json, ConfigError, NonZeroDuration};
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "StickySessionConfig"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    backends: Option<Vec<RawBackend>>,
    #[serde(default = "default_session_key")]
    session_key: Vec<String>,
    #[serde(default)]
    trusted_hops: u32,
    #[serde(default)]
    fallback: Fallback,
    #[serde(default)]
    hashing: Option<Hashing>,
    #[serde(default)]
    table_size: Option<u32>,
    #[serde(default)]
    cookie: Option<RawCookie>,
    #[serde(default = "default_upstream_header")]
    upstream_header: String,
    #[serde(default)]
    backend_header: Option<String>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    repin_on_failover: Option<bool>,
    #[serde(default)]
    all_down: Option<AllDown>,
    #[serde(default)]
    hash_header: Option<String>,
    #[serde(default)]
    max_hosts: Option<u32>,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    trace: bool,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    metrics_path: Option<String>,
}

fn default_session_key() -> Vec<String> {
    vec!["client_ip".into()]
}
/// Maglev's table size when none is given.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// The dynamic mode's header carrying the session key to the route's `hash_policy`.
pub const DEFAULT_HASH_HEADER: &str = "x-sticky-hash-key";
/// Hosts whose health the dynamic mode tracks at most, by default.
pub const DEFAULT_MAX_HOSTS: u32 = 1024;
/// Largest accepted `max_hosts`.
pub const MAX_MAX_HOSTS: u32 = 65536;
fn default_upstream_header() -> String {
    "x-sticky-upstream".into()
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Backend"))]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Cookie"))]
#[serde(deny_unknown_fields)]
struct RawCookie {
    #[serde(default = "default_cookie_name")]
    name: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    max_age: Option<NonZeroDuration>,
    #[serde(default = "yes")]
    http_only: bool,
    #[serde(default)]
    secure: bool,
    #[serde(default = "default_same_site")]
    same_site: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default = "yes")]
    sign: bool,
}

fn default_cookie_name() -> String {
    "sticky".into()
}
fn default_path() -> String {
    "/".into()
}
fn yes() -> bool {
    true
}
fn default_same_site() -> String {
    "Lax".into()
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Health"))]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default = "default_failures")]
    failures: u32,
    #[serde(default = "default_eject_for")]
    eject_for: NonZeroDuration,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth { failures: default_failures(), eject_for: default_eject_for() }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_eject_for() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}

/// Where a session key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An application cookie's value.
    Cookie(String),
    /// A request header's value (lower-case name).
    Header(String),
    /// A query-string parameter's value.
    Query(String),
    /// The client address (peer, or `X-Forwarded-For` per `trusted_hops`).
    ClientIp,
}

/// What to do with a request that has no session key at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Hash the client address.
    #[default]
    ClientIp,
    /// Pick at random (then pin with the cookie, if configured).
    Random,
}

/// Consistent-hashing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Hashing {
    /// Weighted Maglev.
    #[default]
    Maglev,
    /// A ketama ring.
    Ketama,
}

/// When every backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AllDown {
    /// Send the request to the hashed backend anyway (fail open).
    #[default]
    #[serde(rename = "hashed")]
    Hashed,
    /// Answer 503 without proxying.
    #[serde(rename = "503")]
    Unavailable,
}

/// A checked backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Unique name (the cookie and the metrics use it).
    pub name: String,
    /// `ip:port`, as the proxy's upstream selection expects it.
    pub address: SocketAddr,
    /// Relative weight.
    pub weight: u32,
}

/// The checked pinning-cookie settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// Cookie name.
    pub name: String,
    /// `Path`.
    pub path: String,
    /// `Max-Age` in seconds (`None`: a session cookie).
    pub max_age: Option<u64>,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `Secure`.
    pub secure: bool,
    /// `SameSite` (`Strict`, `Lax` or `None`).
    pub same_site: String,
    /// HMAC secret (`None` when `sign` is false).
    pub secret: Option<Vec<u8>>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct StaticConfig {
    /// Backends.
    pub backends: Vec<Backend>,
    /// Session-key sources, tried in order.
    pub session_key: Vec<KeySource>,
    /// Trusted proxies in front (for `client_ip`).
    pub trusted_hops: u32,
    /// No key at all.
    pub fallback: Fallback,
    /// Algorithm.
    pub hashing: Hashing,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// Pinning cookie, if any.
    pub cookie: Option<CookieConfig>,
    /// Request header carrying the chosen `ip:port` to the proxy.
    pub upstream_header: String,
    /// Response header naming the chosen backend (off by default).
    pub backend_header: Option<String>,
    /// Failures in a row that eject a backend.
    pub failures: u32,
    /// How long an ejected backend stays out (ns).
    pub eject_for_ns: u64,
    /// Move failed-over sessions for good.
    pub repin_on_failover: bool,
    /// Every backend down.
    pub all_down: AllDown,
}

/// The checked configuration of the dynamic mode (no `backends`): Envoy
/// places a session's first request by its consistent hash over the
/// cluster's current endpoints, the filter pins the host Envoy chose.
#[derive(Debug, Clone)]
pub struct DynamicConfig {
    /// Session-key sources, tried in order (hashed by the route's `hash_policy`).
    pub session_key: Vec<KeySource>,
    /// Trusted proxies in front (for `client_ip`).
    pub trusted_hops: u32,
    /// No key at all.
    pub fallback: Fallback,
    /// The pinning cookie (required in this mode).
    pub cookie: CookieConfig,
    /// Request header carrying the pinned `ip:port` to `override_host`.
    pub upstream_header: String,
    /// Request header carrying the session key to the route's `hash_policy`.
    pub hash_header: String,
    /// Response header naming the host that answered (off by default).
    pub backend_header: Option<String>,
    /// Failures in a row that eject a host.
    pub failures: u32,
    /// How long an ejected host stays out (ns).
    pub eject_for_ns: u64,
    /// Slots of the host health table.
    pub max_hosts: u32,
}

/// A configuration: a static backend list, or the dynamic mode.
#[derive(Debug, Clone)]
pub enum StickyConfig {
    /// `backends` given: the filter hashes onto them.
    Static(StaticConfig),
    /// No `backends`: Envoy hashes, the filter pins what it chose.
    Dynamic(DynamicConfig),
}

fn check_header(field: &str, name: &str) -> Result<(), ConfigError> {
    if crate::matcher::valid_header_name(name) {
        return Ok(());
    }
    Err(ConfigError::new(field, "must be a header name"))
}

/// Headers the filter must not write: HTTP framing and connection headers,
/// routing (`host`), cookies and credentials. Writing one would break the
/// response or the request, or overwrite what the application owns.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
    "host",
    "cookie",
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "location",
    "x-forwarded-for",
];

/// A header the filter writes: a header name that is not reserved.
fn check_written_header(field: &str, name: &str) -> Result<(), ConfigError> {
    check_header(field, name)?;
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(ConfigError::new(field, format!("\"{name}\" is a header the filter must not write")));
    }
    Ok(())
}

/// Ring points per unit of weight (ketama).
pub const KETAMA_POINTS_PER_WEIGHT: u32 = 160;
/// Most ketama points (16 bytes each, in every worker): 16 MB.
pub const MAX_KETAMA_POINTS: u64 = 1 << 20;
/// Most steps a Maglev table may take to build (each worker builds it at
/// start-up): about a tenth of a second natively.
pub const MAX_MAGLEV_STEPS: u64 = 1 << 26;

/// What the hash table costs, refused when it is more than a worker should
/// pay at start-up.
fn check_table_cost(hashing: Hashing, table_size: u32, backends: &[Backend]) -> Result<(), ConfigError> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let heaviest = backends.iter().map(|b| u64::from(b.weight)).max().unwrap_or(1);
    match hashing {
        Hashing::Ketama => {
            let points = total * u64::from(KETAMA_POINTS_PER_WEIGHT);
            if points > MAX_KETAMA_POINTS {
                return Err(ConfigError::new(
                    "backends",
                    format!(
                        "weights adding up to {total} need {points} ketama points, more than {MAX_KETAMA_POINTS} \
                         (16 MB in every worker); use smaller weights (only their ratios matter) or maglev"
                    ),
                ));
            }
        }
        Hashing::Maglev => {
            // Each round visits every backend and fills total/heaviest slots.
            let steps = u64::from(table_size) * heaviest * backends.len() as u64 / total.max(1);
            if steps > MAX_MAGLEV_STEPS {
                return Err(ConfigError::new(
                    "backends",
                    format!(
                        "weights from 1 to {heaviest} over {} backends take {steps} steps to build the Maglev table, \
                         more than {MAX_MAGLEV_STEPS}; use closer weights or a smaller table_size",
                        backends.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_backends(raw: Vec<RawBackend>) -> Result<Vec<Backend>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("backends", "must hold at least one backend"));
    }
    if raw.len() > 1024 {
        return Err(ConfigError::new("backends", "must hold at most 1024 backends"));
    }
    let mut backends: Vec<Backend> = Vec::with_capacity(raw.len());
    for (i, b) in raw.into_iter().enumerate() {
        let f = |x: &str| format!("backends[{i}].{x}");
        check_name(&f("name"), &b.name)?;
        if backends.iter().any(|o| o.name == b.name) {
            return Err(ConfigError::new(f("name"), format!("\"{}\" is used by another backend", b.name)));
        }
        let address: SocketAddr = b
            .address
            .parse()
            .map_err(|_| ConfigError::new(f("address"), format!("\"{}\" is not ip:port", b.address)))?;
        if b.weight == 0 || b.weight > 1000 {
            return Err(ConfigError::new(f("weight"), "must be between 1 and 1000"));
        }
        backends.push(Backend { name: b.name, address, weight: b.weight });
    }
    // nginx keeps shared data by the CRC-32 of the key: two backends whose
    // health records collide would share one, and eject each other.
    let key = |b: &Backend| format!("{}/{}", super::SHARED_NAMESPACE, b.name);
    for (i, b) in backends.iter().enumerate() {
        if let Some(other) = backends.iter().take(i).find(|o| crate::hash::same_nginx_entry(&key(o), &key(b))) {
            return Err(ConfigError::new(
                format!("backends[{i}].name"),
                format!(
                    "\"{}\" and \"{}\" would share one health record in nginx (their keys' CRC-32s agree); rename one",
                    b.name, other.name
                ),
            ));
        }
    }
    Ok(backends)
}

fn check_session_key(raw: &[String]) -> Result<Vec<KeySource>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("session_key", "must name at least one source"));
    }
    let header_ok = |n: &&str| crate::matcher::valid_header_name(n);
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            let bad = || {
                ConfigError::new(
                    format!("session_key[{i}]"),
                    format!("unknown source \"{s}\"; use cookie:<name>, header:<name>, query:<name> or client_ip"),
                )
            };
            Ok(if s == "client_ip" {
                KeySource::ClientIp
            } else if let Some(n) = s.strip_prefix("cookie:") {
                KeySource::Cookie(Some(n).filter(header_ok).ok_or_else(bad)?.to_string())
            } else if let Some(n) = s.strip_prefix("header:") {
                KeySource::Header(Some(n).filter(header_ok).ok_or_else(bad)?.to_ascii_lowercase())
            } else if let Some(n) = s.strip_prefix("query:") {
                KeySource::Query(Some(n).filter(|n| !n.is_empty()).ok_or_else(bad)?.to_string())
            } else {
                return Err(bad());
            })
        })
        .collect()
}

fn check_table(hashing: Hashing, table_size: u32, backends: usize) -> Result<(), ConfigError> {
    if hashing != Hashing::Maglev {
        return Ok(());
    }
    if !is_prime(table_size) || table_size > 1_000_003 {
        return Err(ConfigError::new("table_size", format!("{table_size} is not a prime up to 1000003 (e.g. 65537)")));
    }
    if (table_size as usize) < backends * 100 {
        return Err(ConfigError::new("table_size", "must be at least 100 x the number of backends"));
    }
    Ok(())
}

fn check_cookie(c: RawCookie) -> Result<CookieConfig, ConfigError> {
    // Max-Age is whole seconds, and Max-Age=0 deletes the cookie.
    let max_age = match c.max_age.map(|d| d.get().as_secs()) {
        Some(0) => {
            return Err(ConfigError::new("cookie.max_age", "must be at least 1s (Max-Age=0 deletes the cookie)"))
        }
        other => other,
    };
    check_header("cookie.name", &c.name).map_err(|_| ConfigError::new("cookie.name", "must be a cookie name"))?;
    if !c.path.starts_with('/') || c.path.contains(';') {
        return Err(ConfigError::new("cookie.path", "must start with '/' and hold no ';'"));
    }
    let same_site = match c.same_site.to_ascii_lowercase().as_str() {
        "strict" => "Strict",
        "lax" => "Lax",
        "none" => "None",
        _ => return Err(ConfigError::new("cookie.same_site", "must be Strict, Lax or None")),
    };
    if same_site == "None" && !c.secure {
        return Err(ConfigError::new("cookie.same_site", "None needs secure: true (browsers drop it otherwise)"));
    }
    let secret = match (c.sign, c.secret) {
        (true, Some(s)) if s.len() >= 16 => Some(s.into_bytes()),
        (true, Some(_)) => return Err(ConfigError::new("cookie.secret", "must be at least 16 characters")),
        (true, None) => return Err(ConfigError::new("cookie.secret", "is required while cookie.sign is true")),
        (false, _) => None,
    };
    Ok(CookieConfig {
        name: c.name,
        path: c.path,
        max_age,
        http_only: c.http_only,
        secure: c.secure,
        same_site: same_site.to_string(),
        secret,
    })
}

impl StaticConfig {
    /// Parses and checks a configuration with a static `backends` list.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        match StickyConfig::from_json(bytes)? {
            StickyConfig::Static(c) => Ok(c),
            StickyConfig::Dynamic(_) => Err(ConfigError::new("backends", "is required here")),
        }
    }
}

/// What both modes check alike.
struct Common {
    session_key: Vec<KeySource>,
    cookie: Option<CookieConfig>,
    upstream_header: String,
    backend_header: Option<String>,
}

fn check_common(raw: &mut RawConfig) -> Result<Common, ConfigError> {
    let session_key = check_session_key(&raw.session_key)?;
    check_trusted_hops("trusted_hops", raw.trusted_hops)?;
    let cookie = raw.cookie.take().map(check_cookie).transpose()?;
    check_written_header("upstream_header", &raw.upstream_header)?;
    let upstream = raw.upstream_header.to_ascii_lowercase();
    if session_key.contains(&KeySource::Header(upstream.clone())) {
        return Err(ConfigError::new(
            "upstream_header",
            format!("\"{upstream}\" is also a session_key source: the filter would overwrite the session id"),
        ));
    }
    if let Some(h) = &raw.backend_header {
        check_written_header("backend_header", h)?;
    }
    if raw.health.failures == 0 {
        return Err(ConfigError::new("health.failures", "must be at least 1"));
    }
    Ok(Common { session_key, cookie, upstream_header: upstream, backend_header: raw.backend_header.take() })
}

impl StickyConfig {
    /// Parses and checks the plugin configuration: static with `backends`,
    /// dynamic without.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = parse_json(bytes)?;
        let common = check_common(&mut raw)?;
        match raw.backends.take() {
            Some(backends) => Ok(StickyConfig::Static(static_config(raw, backends, common)?)),
            None => Ok(StickyConfig::Dynamic(dynamic_config(raw, common)?)),
        }
    }
}

fn static_config(raw: RawConfig, backends: Vec<RawBackend>, common: Common) -> Result<StaticConfig, ConfigError> {
    for (field, given) in [("hash_header", raw.hash_header.is_some()), ("max_hosts", raw.max_hosts.is_some())] {
        if given {
            return Err(ConfigError::new(field, "applies only without backends (the dynamic mode)"));
        }
    }
    let backends = check_backends(backends)?;
    let hashing = raw.hashing.unwrap_or_default();
    let table_size = raw.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
    check_table(hashing, table_size, backends.len())?;
    check_table_cost(hashing, table_size, &backends)?;
    Ok(StaticConfig {
        backends,
        session_key: common.session_key,
        trusted_hops: raw.trusted_hops,
        fallback: raw.fallback,
        hashing,
        table_size,
        cookie: common.cookie,
        upstream_header: common.upstream_header,
        backend_header: common.backend_header.map(|h| h.to_ascii_lowercase()),
        failures: raw.health.failures,
        eject_for_ns: raw.health.eject_for.nanos(),
        repin_on_failover: raw.repin_on_failover.unwrap_or(false),
        all_down: raw.all_down.unwrap_or_default(),
    })
}

fn dynamic_config(raw: RawConfig, common: Common) -> Result<DynamicConfig, ConfigError> {
    let envoy_hashes = "applies only with backends: without them Envoy's consistent hash places sessions";
    for (field, given) in [
        ("hashing", raw.hashing.is_some()),
        ("table_size", raw.table_size.is_some()),
        ("repin_on_failover", raw.repin_on_failover.is_some()),
        ("all_down", raw.all_down.is_some()),
    ] {
        if given {
            return Err(ConfigError::new(field, envoy_hashes));
        }
    }
    let cookie = common.cookie.ok_or_else(|| {
        ConfigError::new(
            "cookie",
            "is required without backends: the pin is how a session stays on the host Envoy chose",
        )
    })?;
    let hash_header = raw.hash_header.unwrap_or_else(|| DEFAULT_HASH_HEADER.to_string()).to_ascii_lowercase();
    check_written_header("hash_header", &hash_header)?;
    if hash_header == common.upstream_header || common.session_key.contains(&KeySource::Header(hash_header.clone())) {
        return Err(ConfigError::new(
            "hash_header",
            format!("\"{hash_header}\" is also the upstream_header or a session_key source"),
        ));
    }
    let max_hosts = raw.max_hosts.unwrap_or(DEFAULT_MAX_HOSTS);
    if max_hosts == 0 || max_hosts > MAX_MAX_HOSTS {
        return Err(ConfigError::new("max_hosts", format!("must be 1 to {MAX_MAX_HOSTS}")));
    }
    Ok(DynamicConfig {
        session_key: common.session_key,
        trusted_hops: raw.trusted_hops,
        fallback: raw.fallback,
        cookie,
        upstream_header: common.upstream_header,
        hash_header,
        backend_header: common.backend_header.map(|h| h.to_ascii_lowercase()),
        failures: raw.health.failures,
        eject_for_ns: raw.health.eject_for.nanos(),
        max_hosts,
    })
}
