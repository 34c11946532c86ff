//! The circuit-breaker filter's configuration. Every field is documented,
//! with its default, in `filters/circuit-breaker/README.md`.

use super::expr::{Expr, Operand};
use super::window::Shape;
use crate::config::{check_reply_status, parse_json, ConfigError, NonZeroDuration};
use crate::duration::parse_traefik_duration;
use serde::Deserialize;

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "CircuitBreakerConfig"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_max_breakers")]
    max_breakers: u32,
    #[serde(default = "default_window")]
    window: NonZeroDuration,
    #[serde(default = "default_buckets")]
    buckets: u32,
    #[serde(default)]
    min_requests: Option<u32>,
    #[serde(default)]
    failure_ratio: Option<f64>,
    #[serde(default)]
    consecutive_failures: Option<u32>,
    #[serde(default)]
    slow_call_threshold: Option<NonZeroDuration>,
    #[serde(default)]
    slow_call_ratio: Option<f64>,
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::statuses"))]
    failure_statuses: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    open_for: Option<NonZeroDuration>,
    #[serde(default)]
    max_open_for: Option<NonZeroDuration>,
    #[serde(default)]
    half_open_requests: Option<u32>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    traefik: Option<RawTraefik>,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    trace: bool,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    metrics_path: Option<String>,
}

/// Traefik's `circuitBreaker` middleware, its field names and defaults.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "TraefikCircuitBreaker"))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTraefik {
    expression: String,
    #[serde(default)]
    check_period: Option<TraefikDuration>,
    #[serde(default)]
    fallback_duration: Option<TraefikDuration>,
    #[serde(default)]
    recovery_duration: Option<TraefikDuration>,
    #[serde(default)]
    response_code: Option<u16>,
}

/// A duration as Traefik reads one: a string in Go's syntax (`"100ms"`,
/// `"1m30s"`), a string of digits or a JSON integer (seconds).
struct TraefikDuration(i128);

#[cfg(feature = "schema")]
impl schemars::JsonSchema for TraefikDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("TraefikDuration")
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::schema::traefik_duration(generator)
    }
}

impl<'de> Deserialize<'de> for TraefikDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => parse_traefik_duration(&s).map(TraefikDuration).map_err(D::Error::custom),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(secs) => crate::duration::traefik_seconds(secs).map(TraefikDuration).map_err(D::Error::custom),
                None => Err(D::Error::custom("must be a whole number of seconds or a string such as \"10s\"")),
            },
            _ => Err(D::Error::custom("must be a string such as \"10s\" or a number of seconds")),
        }
    }
}

/// Traefik's defaults (`checkPeriod`, `fallbackDuration`, `recoveryDuration`).
pub const TRAEFIK_CHECK_PERIOD_NS: u64 = 100_000_000;
/// Traefik's `fallbackDuration` default.
pub const TRAEFIK_FALLBACK_NS: u64 = 10_000_000_000;
/// Traefik's `recoveryDuration` default.
pub const TRAEFIK_RECOVERY_NS: u64 = 10_000_000_000;

/// A breaker that behaves as Traefik's: the expression is checked at most
/// once per `checkPeriod`; it opens for `fallbackDuration` (never longer),
/// then recovers over `recoveryDuration`, admitting a growing share of
/// requests, while still checking the expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraefikTiming {
    /// `checkPeriod` (ns).
    pub check_period_ns: u64,
    /// `recoveryDuration` (ns).
    pub recovery_ns: u64,
}

fn default_key() -> String {
    "cluster".into()
}
fn default_max_breakers() -> u32 {
    DEFAULT_MAX_BREAKERS
}
fn default_window() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}
fn default_buckets() -> u32 {
    10
}
const DEFAULT_MIN_REQUESTS: u32 = 10;
const DEFAULT_OPEN_FOR_NS: u64 = 10_000_000_000;

/// Default bound on the number of breakers tracked.
pub const DEFAULT_MAX_BREAKERS: u32 = 256;
/// How many times `open_for` may grow, when `max_open_for` is not given.
pub const DEFAULT_MAX_OPEN_FACTOR: u64 = 6;

/// What a request's breaker is keyed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// Envoy's `xds.cluster_name` (the route's upstream cluster).
    Cluster,
    /// Envoy's `xds.route_name`.
    Route,
    /// The request's `:authority`.
    Authority,
    /// A request header's value.
    Header(String),
    /// One breaker with this name for every request.
    Fixed(String),
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// The key.
    pub key: KeyKind,
    /// Breakers tracked at most (shared-data slots).
    pub max_breakers: u32,
    /// The window's shape.
    pub shape: Shape,
    /// Requests in the window before a ratio or the expression can trip.
    pub min_requests: u32,
    /// Trip when failures / requests reaches this.
    pub failure_ratio: Option<f64>,
    /// Trip after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Calls slower than this (ns) are slow ...
    pub slow_call_threshold_ns: Option<u64>,
    /// ... and trip when slow / requests reaches this.
    pub slow_call_ratio: Option<f64>,
    /// Traefik expression.
    pub expression: Option<Expr>,
    /// Statuses that count as failures, as inclusive ranges.
    pub failure_statuses: Vec<(u16, u16)>,
    /// First open period (ns).
    pub open_for_ns: u64,
    /// Longest open period (ns).
    pub max_open_for_ns: u64,
    /// Probes admitted in half-open.
    pub half_open_requests: u32,
    /// Status of a rejection.
    pub status: u16,
    /// Body of a rejection.
    pub body: Option<String>,
    /// Content type of a configured or Traefik-style body.
    pub content_type: Option<&'static str>,
    /// Traefik's timing, when the breaker is configured as Traefik's.
    pub traefik: Option<TraefikTiming>,
    /// Arguments read as Traefik reads them although they look like
    /// mistakes, one line each (logged as warnings at configure).
    pub notes: Vec<String>,
}

/// The trip conditions, checked.
struct Conditions {
    failure_ratio: Option<f64>,
    consecutive_failures: Option<u32>,
    slow_call_threshold_ns: Option<u64>,
    slow_call_ratio: Option<f64>,
    expression: Option<Expr>,
    notes: Vec<String>,
}

fn check_ratio(field: &str, v: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match v {
        Some(r) if !(r > 0.0 && r <= 1.0) => Err(ConfigError::new(field, "must be a ratio above 0 and at most 1")),
        other => Ok(other),
    }
}

/// The expression, and a line per argument read as Traefik reads it (see
/// [`Expr::parse_noting`]), prefixed by the field.
fn parse_expression(field: &str, text: &str, notes: &mut Vec<String>) -> Result<Expr, ConfigError> {
    let (e, n) = Expr::parse_noting(text).map_err(|e| ConfigError::new(field, e.to_string()))?;
    notes.extend(n.into_iter().map(|n| format!("{field}: {n}")));
    Ok(e)
}

fn check_conditions(raw: &RawConfig) -> Result<Conditions, ConfigError> {
    if let Some(t) = &raw.traefik {
        let mut notes = Vec::new();
        let expression = Some(parse_expression("traefik.expression", &t.expression, &mut notes)?);
        let none = Conditions {
            failure_ratio: None,
            consecutive_failures: None,
            slow_call_threshold_ns: None,
            slow_call_ratio: None,
            expression,
            notes,
        };
        return Ok(none);
    }
    let failure_ratio = check_ratio("failure_ratio", raw.failure_ratio)?;
    let slow_call_ratio = check_ratio("slow_call_ratio", raw.slow_call_ratio)?;
    if raw.consecutive_failures == Some(0) {
        return Err(ConfigError::new("consecutive_failures", "must be at least 1"));
    }
    let slow_call_threshold_ns = match (raw.slow_call_threshold, slow_call_ratio) {
        (Some(t), Some(_)) => Some(t.nanos()),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::new("slow_call_ratio", "is needed with slow_call_threshold")),
        (None, Some(_)) => return Err(ConfigError::new("slow_call_threshold", "is needed with slow_call_ratio")),
    };
    let mut notes = Vec::new();
    let expression =
        raw.expression.as_deref().map(|text| parse_expression("expression", text, &mut notes)).transpose()?;
    if failure_ratio.is_none()
        && raw.consecutive_failures.is_none()
        && slow_call_ratio.is_none()
        && expression.is_none()
    {
        return Err(ConfigError::new(
            ".",
            "no trip condition: give failure_ratio, consecutive_failures, slow_call_ratio, expression or traefik",
        ));
    }
    let consecutive_failures = raw.consecutive_failures;
    Ok(Conditions { failure_ratio, consecutive_failures, slow_call_threshold_ns, slow_call_ratio, expression, notes })
}

/// With `traefik`, the breaker is configured by Traefik's fields alone: a
/// field of our own state machine next to it is refused, by name.
fn check_traefik_alone(raw: &RawConfig) -> Result<(), ConfigError> {
    let ours = [
        ("min_requests", raw.min_requests.is_some()),
        ("failure_ratio", raw.failure_ratio.is_some()),
        ("consecutive_failures", raw.consecutive_failures.is_some()),
        ("slow_call_threshold", raw.slow_call_threshold.is_some()),
        ("slow_call_ratio", raw.slow_call_ratio.is_some()),
        ("expression", raw.expression.is_some()),
        ("failure_statuses", raw.failure_statuses.is_some()),
        ("open_for", raw.open_for.is_some()),
        ("max_open_for", raw.max_open_for.is_some()),
        ("half_open_requests", raw.half_open_requests.is_some()),
        ("status", raw.status.is_some()),
    ];
    match ours.iter().find(|(_, given)| *given) {
        Some((field, _)) if raw.traefik.is_some() => Err(ConfigError::new(
            *field,
            "cannot be combined with traefik, which is configured by Traefik's own fields \
             (expression, checkPeriod, fallbackDuration, recoveryDuration, responseCode)",
        )),
        _ => Ok(()),
    }
}

/// A Traefik duration, or its default when absent. Traefik itself reads zero
/// or a negative value as "use the default"; here that is refused, so a
/// typo does not silently become 100ms or 10s.
fn traefik_duration(field: &str, v: Option<&TraefikDuration>, default_ns: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default_ns),
        Some(TraefikDuration(ns)) if *ns <= 0 => Err(ConfigError::new(
            format!("traefik.{field}"),
            "must be longer than zero (Traefik would use its default instead: leave the field out for that)",
        )),
        Some(TraefikDuration(ns)) => Ok(u64::try_from(*ns).unwrap_or(u64::MAX)),
    }
}

/// The open period and the state machine's timing.
struct Timing {
    open_for_ns: u64,
    max_open_for_ns: u64,
    half_open_requests: u32,
    status: u16,
    traefik: Option<TraefikTiming>,
}

fn check_timing(raw: &RawConfig) -> Result<Timing, ConfigError> {
    if let Some(t) = &raw.traefik {
        let check_period_ns = traefik_duration("checkPeriod", t.check_period.as_ref(), TRAEFIK_CHECK_PERIOD_NS)?;
        let fallback_ns = traefik_duration("fallbackDuration", t.fallback_duration.as_ref(), TRAEFIK_FALLBACK_NS)?;
        let recovery_ns = traefik_duration("recoveryDuration", t.recovery_duration.as_ref(), TRAEFIK_RECOVERY_NS)?;
        if fallback_ns < 1_000_000 {
            return Err(ConfigError::new("traefik.fallbackDuration", "must be at least 1ms"));
        }
        let status = t.response_code.unwrap_or(503);
        check_reply_status("traefik.responseCode", status)?;
        let traefik = Some(TraefikTiming { check_period_ns, recovery_ns });
        return Ok(Timing {
            open_for_ns: fallback_ns,
            max_open_for_ns: fallback_ns,
            half_open_requests: 1,
            status,
            traefik,
        });
    }
    let open_for_ns = raw.open_for.map_or(DEFAULT_OPEN_FOR_NS, NonZeroDuration::nanos);
    // Shorter, and the breaker is open for no request at all.
    if open_for_ns < 1_000_000 {
        return Err(ConfigError::new("open_for", "must be at least 1ms"));
    }
    let max_open_for_ns =
        raw.max_open_for.map_or(open_for_ns.saturating_mul(DEFAULT_MAX_OPEN_FACTOR), NonZeroDuration::nanos);
    if max_open_for_ns < open_for_ns {
        return Err(ConfigError::new("max_open_for", "must not be shorter than open_for"));
    }
    let half_open_requests = raw.half_open_requests.unwrap_or(1);
    if half_open_requests == 0 || half_open_requests > 1000 {
        return Err(ConfigError::new("half_open_requests", "must be between 1 and 1000"));
    }
    let status = raw.status.unwrap_or(503);
    check_reply_status("status", status)?;
    Ok(Timing { open_for_ns, max_open_for_ns, half_open_requests, status, traefik: None })
}

/// The window's shape: its buckets, and the status and latency bins the
/// expression reads.
fn check_shape(raw: &RawConfig, expression: Option<&Expr>) -> Result<Shape, ConfigError> {
    if raw.buckets == 0 || raw.buckets > 120 {
        return Err(ConfigError::new("buckets", "must be between 1 and 120"));
    }
    let bucket_ns = raw.window.nanos() / u64::from(raw.buckets);
    if bucket_ns < 1_000_000 {
        return Err(ConfigError::new("window", "must give each bucket at least 1ms"));
    }
    let mut status_bounds = vec![0u16, 1000];
    for op in expression.iter().flat_map(|e| e.operands()) {
        match op {
            Operand::ResponseCodeRatio { from, to, div_from, div_to } => {
                status_bounds.extend([*from, *to, *div_from, *div_to])
            }
            // Traefik's NetworkErrorRatio counts 502 and 504 responses.
            Operand::NetworkErrorRatio => status_bounds.extend([502, 503, 504, 505]),
            Operand::LatencyAtQuantileMs(_)
            | Operand::NetworkFailureRatio
            | Operand::RequestThreshold
            | Operand::Num(_) => {}
        }
    }
    status_bounds.sort_unstable();
    status_bounds.dedup();
    // Only the ratios and the expression read the window: with
    // consecutive_failures alone the record keeps none (a few bytes to
    // decode per request instead of `buckets` sub-buckets).
    let window = raw.failure_ratio.is_some() || raw.slow_call_ratio.is_some() || expression.is_some();
    let latency_bounds_ms = expression.map(Expr::latency_thresholds).unwrap_or_default();
    Ok(Shape { buckets: if window { raw.buckets } else { 0 }, bucket_ns, status_bounds, latency_bounds_ms })
}

fn check_failure_statuses(raw: &[serde_json::Value]) -> Result<Vec<(u16, u16)>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            parse_status_spec(v).ok_or_else(|| {
                ConfigError::new(
                    format!("failure_statuses[{i}]"),
                    "must be a status code (e.g. 502) or a class (e.g. \"5xx\")",
                )
            })
        })
        .collect()
}

impl BreakerConfig {
    /// Parses and checks the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_json(bytes)?;
        let key = parse_key(&raw.key).ok_or_else(|| {
            ConfigError::new(
                "key",
                format!("unknown key \"{}\"; use cluster, route, authority, header:<name> or fixed:<name>", raw.key),
            )
        })?;
        if raw.max_breakers == 0 || raw.max_breakers > 65_536 {
            return Err(ConfigError::new("max_breakers", "must be between 1 and 65536"));
        }
        check_traefik_alone(&raw)?;
        let conditions = check_conditions(&raw)?;
        let shape = check_shape(&raw, conditions.expression.as_ref())?;
        let default_statuses = [serde_json::Value::String("5xx".into())];
        let failure_statuses = check_failure_statuses(raw.failure_statuses.as_deref().unwrap_or(&default_statuses))?;
        let timing = check_timing(&raw)?;
        let Conditions {
            failure_ratio,
            consecutive_failures,
            slow_call_threshold_ns,
            slow_call_ratio,
            expression,
            notes,
        } = conditions;
        // Traefik's fallback answers with the status's text.
        let (body, content_type) = match (raw.body, timing.traefik) {
            (Some(b), _) => (Some(b), None),
            (None, Some(_)) => (Some(reason_phrase(timing.status).to_string()), Some("text/plain; charset=utf-8")),
            (None, None) => (None, None),
        };
        Ok(BreakerConfig {
            key,
            max_breakers: raw.max_breakers,
            shape,
            // Traefik has no minimum: its expression is checked after every
            // recorded request (at most once per checkPeriod).
            min_requests: if timing.traefik.is_some() { 0 } else { raw.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS) },
            failure_ratio,
            consecutive_failures,
            slow_call_threshold_ns,
            slow_call_ratio,
            expression,
            failure_statuses,
            open_for_ns: timing.open_for_ns,
            max_open_for_ns: timing.max_open_for_ns,
            half_open_requests: timing.half_open_requests,
            status: timing.status,
            body,
            content_type,
            traefik: timing.traefik,
            notes,
        })
    }

    /// Do the trip conditions read the sliding window? Only the ratios and
    /// the expression do; with `consecutive_failures` alone the window is
    /// not kept, and a success on a clean record writes nothing.
    /// (`check_shape` decides it once: no window, no buckets.)
    pub fn needs_window(&self) -> bool {
        self.shape.buckets > 0
    }

    /// Does this status count as a failure?
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// The reason phrase Go's `http.StatusText` gives a 4xx or 5xx status
/// (Traefik's fallback body); empty for a code it does not name.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

fn parse_key(text: &str) -> Option<KeyKind> {
    let valid = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    match text {
        "cluster" => Some(KeyKind::Cluster),
        "route" => Some(KeyKind::Route),
        "authority" => Some(KeyKind::Authority),
        _ => {
            if let Some(h) = text.strip_prefix("header:") {
                return valid(h).then(|| KeyKind::Header(h.to_ascii_lowercase()));
            }
            let f = text.strip_prefix("fixed:")?;
            valid(f).then(|| KeyKind::Fixed(f.to_string()))
        }
    }
}

fn parse_status_spec(v: &serde_json::Value) -> Option<(u16, u16)> {
    if let Some(n) = v.as_u64() {
        let n = u16::try_from(n).ok().filter(|n| (100..=599).contains(n))?;
        return Some((n, n));
    }
    let s = v.as_str()?;
    let class = s.strip_suffix("xx")?.parse::<u16>().ok().filter(|c| (1..=5).contains(c))?;
    Some((class * 100, class * 100 + 99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = BreakerConfig::from_json(br#"{"consecutive_failures":5}"#).unwrap();
        assert_eq!(c.key, KeyKind::Cluster);
        assert_eq!(c.shape.buckets, 0, "consecutive failures alone keep no window");
        let ratio = BreakerConfig::from_json(br#"{"failure_ratio":0.5}"#).unwrap();
        assert_eq!(ratio.shape.buckets, 10);
        assert_eq!(c.shape.bucket_ns, 1_000_000_000);
        assert_eq!(c.min_requests, 10);
        assert_eq!(c.open_for_ns, 10_000_000_000);
        assert_eq!(c.max_open_for_ns, 60_000_000_000);
        assert_eq!(c.half_open_requests, 1);
        assert_eq!(c.status, 503);
        assert!(c.is_failure_status(500) && c.is_failure_status(599) && !c.is_failure_status(404));
        assert!(c.shape.latency_bounds_ms.is_empty());
        assert_eq!(c.shape.status_bounds, vec![0, 1000]);
    }

    #[test]
    fn expression_shapes_the_window() {
        let c = BreakerConfig::from_json(
            br#"{"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25","key":"fixed:api","failure_statuses":[502,"4xx"]}"#,
        )
        .unwrap();
        // LatencyAtQuantileMS(50.0) > 100: the window counts samples below
        // 100 and below 101 ms (`> 100` is "at least 101").
        assert_eq!(c.shape.latency_bounds_ms, vec![100, 101]);
        assert_eq!(c.shape.status_bounds, vec![0, 500, 600, 1000]);
        assert_eq!(c.key, KeyKind::Fixed("api".into()));
        assert!(c.is_failure_status(502) && c.is_failure_status(404) && !c.is_failure_status(500));
    }

    #[test]
    fn each_bad_config_names_its_field() {
        let cases = [
            (r#"{"consecutive_failures":5,"colour":1}"#, "colour: unknown field `colour`"),
            (r#"{}"#, ".: no trip condition"),
            (r#"{"failure_ratio":1.5}"#, "failure_ratio: must be a ratio"),
            (r#"{"failure_ratio":0}"#, "failure_ratio: must be a ratio"),
            (r#"{"consecutive_failures":0}"#, "consecutive_failures: must be at least 1"),
            (r#"{"consecutive_failures":1,"window":"10 s"}"#, "window: \"10 s\" has an unknown unit"),
            (r#"{"consecutive_failures":1,"window":"5ms","buckets":10}"#, "window: must give each bucket at least 1ms"),
            (r#"{"slow_call_threshold":"500ms"}"#, "slow_call_ratio: is needed with slow_call_threshold"),
            (r#"{"slow_call_ratio":0.5}"#, "slow_call_threshold: is needed with slow_call_ratio"),
            (r#"{"expression":"NetworkErrorRatio() >"}"#, "expression: at column 22: expected a number or a function"),
            (r#"{"expression":"Latency() > 1"}"#, "expression: at column 1: unknown function `Latency`"),
            (
                r#"{"expression":"RequestThreshold() < LatencyAtQuantileMS(99.0)"}"#,
                "expression: at column 1: LatencyAtQuantileMS is compared with a number, as in Traefik",
            ),
            (r#"{"consecutive_failures":1,"key":"upstream"}"#, "key: unknown key \"upstream\""),
            (r#"{"consecutive_failures":1,"failure_statuses":["6xx"]}"#, "failure_statuses[0]: must be a status code"),
            (r#"{"consecutive_failures":1,"open_for":"10s","max_open_for":"5s"}"#, "max_open_for: must not be shorter"),
            (r#"{"consecutive_failures":1,"half_open_requests":0}"#, "half_open_requests: must be between 1 and 1000"),
            (r#"{"consecutive_failures":1,"max_breakers":0}"#, "max_breakers: must be between 1 and 65536"),
            (r#"{"consecutive_failures":1,"status":200}"#, "status: must be a 4xx or 5xx"),
            (r#"{"consecutive_failures":1,"open_for":"0s"}"#, "open_for: must be longer than zero"),
        ];
        crate::testing::assert_each_refused(BreakerConfig::from_json, &cases);
    }
}
