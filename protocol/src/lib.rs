//! Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), in one
//! place for both of its sides: the filter (client) and
//! `services/ratelimit-engine` (server).
//!
//! * The messages, hand-declared with `prost` derives (field numbers from
//!   `envoy/service/ratelimit/v3/rls.proto` and its imports; unknown fields
//!   are skipped). The engine's tests check them against Envoy's generated
//!   types.
//! * gRPC: the messages' protobuf encoding (`prost::Message`).
//! * JSON, as `envoyproxy/ratelimit`'s `/json` endpoint speaks it:
//!   protobuf's canonical JSON mapping (protojson), requests and responses,
//!   encoded and decoded.
//!
//! * The response codes and units as enums ([`Code`], [`Unit`]), the wire's
//!   numbers kept in the messages (a peer may send a number neither knows).
//!
//! What an answer means for a request is the filter's business
//! (`filters_core::ratelimit::global`); what a request counts is the
//! engine's (`services/ratelimit-engine`). This crate depends on neither.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// gRPC service of `ShouldRateLimit`.
pub const GRPC_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// gRPC method.
pub const GRPC_METHOD: &str = "ShouldRateLimit";

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    /// The domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// One per matching limit.
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Hits to charge (0 means 1).
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`: entries, the
/// `limit` override (Envoy's rate-limit actions can send one from dynamic
/// metadata) and hits_addend.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    /// The entries.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<DescriptorEntry>,
    /// A limit that replaces the configured one for this descriptor.
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
    /// Hits to charge this descriptor (overrides the request's).
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
}

/// `RateLimitDescriptor.RateLimitOverride`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitOverride {
    /// Requests per unit.
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// The unit (`RateLimitResponse.RateLimit.Unit`: 1 second ... 7 week).
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `google.protobuf.UInt64Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UInt64Value {
    /// The value.
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorEntry {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse` (the fields the filter uses).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    /// `Code`: 0 unknown, 1 OK, 2 OVER_LIMIT.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    /// One per descriptor, in the request's order.
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    /// Headers for the response to the client.
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    /// Headers for the request to the upstream.
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorStatus {
    /// `Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The limit the service applied.
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimitValue>,
    /// Requests left in the current unit.
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    /// Until the limit resets.
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitValue {
    /// Requests per unit.
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `Unit`: 1 second, 2 minute, 3 hour, 4 day, 5 month, 6 year, 7 week.
    #[prost(int32, tag = "2")]
    pub unit: i32,
    /// Optional name.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    /// Name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
    /// Value as bytes (used instead of `value` when set).
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `envoy.config.core.v3.GrpcService`, naming an Envoy cluster.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GrpcService {
    /// `envoy_grpc`.
    #[prost(message, optional, tag = "1")]
    pub envoy_grpc: Option<EnvoyGrpc>,
}

/// `GrpcService.EnvoyGrpc`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvoyGrpc {
    /// Cluster.
    #[prost(string, tag = "1")]
    pub cluster_name: String,
    /// `:authority` (the cluster name when empty).
    #[prost(string, tag = "2")]
    pub authority: String,
}

/// Response codes.
pub mod code {
    /// Not known: treated as a failed call.
    pub const UNKNOWN: i32 = 0;
    /// Under the limit.
    pub const OK: i32 = 1;
    /// Over the limit.
    pub const OVER_LIMIT: i32 = 2;
}

/// A verdict: `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Not known: a caller treats it as a failed call.
    Unknown = 0,
    /// Under the limit.
    Ok = 1,
    /// Over the limit.
    OverLimit = 2,
}

impl Code {
    /// The code a wire number stands for (anything else is `Unknown`).
    pub fn from_wire(n: i32) -> Code {
        match n {
            code::OK => Code::Ok,
            code::OVER_LIMIT => Code::OverLimit,
            _ => Code::Unknown,
        }
    }

    /// Its wire number.
    pub fn wire(self) -> i32 {
        self as i32
    }
}

/// A limit's unit: `RateLimitResponse.RateLimit.Unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second = 1,
    /// 60 seconds.
    Minute = 2,
    /// 3,600 seconds.
    Hour = 3,
    /// 86,400 seconds.
    Day = 4,
    /// 30 days, as `envoyproxy/ratelimit` counts a month.
    Month = 5,
    /// 365 days.
    Year = 6,
    /// 7 days.
    Week = 7,
}

impl Unit {
    /// The unit a wire number names; `None` for `UNKNOWN` (0) or a number
    /// outside the enum.
    pub fn from_wire(n: i32) -> Option<Unit> {
        Some(match n {
            1 => Unit::Second,
            2 => Unit::Minute,
            3 => Unit::Hour,
            4 => Unit::Day,
            5 => Unit::Month,
            6 => Unit::Year,
            7 => Unit::Week,
            _ => return None,
        })
    }

    /// Its wire number.
    pub fn wire(self) -> i32 {
        self as i32
    }

    /// Its name in the protocol (`MINUTE`).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
            Unit::Week => "WEEK",
        }
    }

    /// Its length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
            Unit::Week => 7 * 86_400,
        }
    }
}

/// Nanoseconds in a duration unit as both sides' settings spell them
/// (`ns`, `us`, `ms`, `s`, `m`, `h`: `100ms`, `2s`); `None` for anything
/// else.
pub fn nanos_per_unit(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Seconds in a `Unit` (`None` for UNKNOWN or an unknown value). A month is
/// 30 days and a year 365, as `envoyproxy/ratelimit` counts them.
pub fn unit_seconds(unit: i32) -> Option<u64> {
    Unit::from_wire(unit).map(Unit::seconds)
}

/// The unit's name in JSON.
pub fn unit_name(unit: i32) -> &'static str {
    match unit {
        1 => "SECOND",
        2 => "MINUTE",
        3 => "HOUR",
        4 => "DAY",
        5 => "MONTH",
        6 => "YEAR",
        7 => "WEEK",
        _ => "UNKNOWN",
    }
}

fn unit_from_name(name: &str) -> i32 {
    match name {
        "SECOND" => 1,
        "MINUTE" => 2,
        "HOUR" => 3,
        "DAY" => 4,
        "MONTH" => 5,
        "YEAR" => 6,
        "WEEK" => 7,
        _ => 0,
    }
}

fn code_name(code: i32) -> &'static str {
    match code {
        code::OK => "OK",
        code::OVER_LIMIT => "OVER_LIMIT",
        _ => "UNKNOWN",
    }
}

fn code_from_name(name: &str) -> i32 {
    match name {
        "OK" => code::OK,
        "OVER_LIMIT" => code::OVER_LIMIT,
        _ => code::UNKNOWN,
    }
}

/// What Envoy's `dispatch_grpc_call` takes as its target: a serialized
/// `GrpcService` naming the cluster. (A bare cluster name also works, unless
/// its bytes happen to parse as a `GrpcService`: `"h1"` does.)
pub fn grpc_target(cluster: &str, authority: &str) -> Vec<u8> {
    prost::Message::encode_to_vec(&GrpcService {
        envoy_grpc: Some(EnvoyGrpc { cluster_name: cluster.to_string(), authority: authority.to_string() }),
    })
}

/// The cluster and authority a [`grpc_target`] names (`None`: bytes that are
/// no `GrpcService` naming a cluster, such as a bare cluster name).
pub fn parse_grpc_target(bytes: &[u8]) -> Option<(String, String)> {
    let g: GrpcService = prost::Message::decode(bytes).ok()?;
    let e = g.envoy_grpc?;
    (!e.cluster_name.is_empty()).then_some((e.cluster_name, e.authority))
}

// --- JSON (protobuf's canonical mapping, as envoyproxy/ratelimit's /json speaks it). ---

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonRequest {
    domain: String,
    #[serde(default)]
    descriptors: Vec<JsonDescriptor>,
    #[serde(default, alias = "hits_addend", skip_serializing_if = "Option::is_none")]
    hits_addend: Option<JsonU64>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonDescriptor {
    #[serde(default)]
    entries: Vec<JsonEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<JsonOverride>,
    #[serde(default, alias = "hits_addend", skip_serializing_if = "Option::is_none")]
    hits_addend: Option<JsonU64>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JsonEntry {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JsonOverride {
    #[serde(default, alias = "requests_per_unit")]
    requests_per_unit: u32,
    /// The unit's name (`"MINUTE"`) or number, as protobuf's JSON mapping allows.
    #[serde(default)]
    unit: Option<serde_json::Value>,
}

fn json_unit(v: Option<&serde_json::Value>) -> Result<i32, String> {
    match v {
        None => Ok(0),
        Some(serde_json::Value::Number(n)) => {
            n.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or("unit is out of range".into())
        }
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "UNKNOWN" => Ok(0),
            "SECOND" => Ok(1),
            "MINUTE" => Ok(2),
            "HOUR" => Ok(3),
            "DAY" => Ok(4),
            "MONTH" => Ok(5),
            "YEAR" => Ok(6),
            "WEEK" => Ok(7),
            other => Err(format!("unit \"{other}\" is not a RateLimitResponse.RateLimit.Unit")),
        },
        Some(_) => Err("unit must be a name or a number".into()),
    }
}

/// A request as `/json` takes it (client side).
pub fn encode_json_request(r: &RateLimitRequest) -> Vec<u8> {
    let body = JsonRequest {
        domain: r.domain.clone(),
        descriptors: r
            .descriptors
            .iter()
            .map(|d| JsonDescriptor {
                entries: d.entries.iter().map(|e| JsonEntry { key: e.key.clone(), value: e.value.clone() }).collect(),
                limit: d.limit.as_ref().map(|l| JsonOverride {
                    requests_per_unit: l.requests_per_unit,
                    unit: Some(serde_json::Value::from(l.unit)),
                }),
                hits_addend: d.hits_addend.as_ref().map(|h| JsonU64::Number(h.value)),
            })
            .collect(),
        hits_addend: (r.hits_addend > 0).then_some(JsonU64::Number(u64::from(r.hits_addend))),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A `/json` request body as the message (server side; both proto and
/// lowerCamelCase field names are accepted, and 64-bit numbers as numbers or
/// strings, as protobuf's JSON mapping allows).
pub fn decode_json_request(body: &[u8]) -> Result<RateLimitRequest, String> {
    let r: JsonRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let hits_addend = r.hits_addend.map(|h| h.value()).transpose()?.unwrap_or(0);
    let mut descriptors = Vec::with_capacity(r.descriptors.len());
    for d in r.descriptors {
        let hits = d.hits_addend.map(|h| h.value()).transpose()?;
        let limit = match d.limit {
            Some(l) => {
                Some(RateLimitOverride { requests_per_unit: l.requests_per_unit, unit: json_unit(l.unit.as_ref())? })
            }
            None => None,
        };
        descriptors.push(RateLimitDescriptor {
            entries: d.entries.into_iter().map(|e| DescriptorEntry { key: e.key, value: e.value }).collect(),
            limit,
            hits_addend: hits.map(|value| UInt64Value { value }),
        });
    }
    Ok(RateLimitRequest {
        domain: r.domain,
        descriptors,
        hits_addend: u32::try_from(hits_addend).map_err(|_| "hitsAddend is out of range".to_string())?,
    })
}

/// A 64-bit number in JSON: a number, or a string holding one.
#[derive(Serialize, Deserialize, Clone)]
#[serde(untagged)]
enum JsonU64 {
    Number(u64),
    Text(String),
}

impl JsonU64 {
    fn value(self) -> Result<u64, String> {
        match self {
            JsonU64::Number(n) => Ok(n),
            JsonU64::Text(t) => t.parse().map_err(|_| format!("\"{t}\" is not a whole number")),
        }
    }
}

/// An enum in JSON: its name, or its number.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum JsonEnum {
    Name(String),
    Number(i32),
}

impl JsonEnum {
    fn value(&self, by_name: fn(&str) -> i32) -> i32 {
        match self {
            JsonEnum::Name(n) => by_name(n),
            JsonEnum::Number(n) => *n,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonResponse {
    #[serde(default, alias = "overall_code")]
    overall_code: Option<JsonEnum>,
    #[serde(default)]
    statuses: Vec<JsonStatus>,
    #[serde(default, alias = "response_headers_to_add")]
    response_headers_to_add: Vec<JsonHeader>,
    #[serde(default, alias = "request_headers_to_add")]
    request_headers_to_add: Vec<JsonHeader>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonStatus {
    #[serde(default)]
    code: Option<JsonEnum>,
    #[serde(default, alias = "current_limit")]
    current_limit: Option<JsonLimit>,
    #[serde(default, alias = "limit_remaining")]
    limit_remaining: u32,
    #[serde(default, alias = "duration_until_reset")]
    duration_until_reset: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonLimit {
    #[serde(default, alias = "requests_per_unit")]
    requests_per_unit: u32,
    #[serde(default)]
    unit: Option<JsonEnum>,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct JsonHeader {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResponseOut<'a> {
    overall_code: JsonEnumOut,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<JsonStatusOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonStatusOut<'a> {
    code: JsonEnumOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_limit: Option<JsonLimitOut<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    limit_remaining: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_until_reset: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLimitOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    requests_per_unit: u32,
    unit: JsonEnumOut,
}

/// An enum as protojson writes it: its name when the value is one the
/// protocol defines, else its number (so that it reads back the same; found
/// by the `rls_answer` fuzz target with `{"overallCode":67448}`).
#[derive(Serialize)]
#[serde(untagged)]
enum JsonEnumOut {
    Name(&'static str),
    Number(i32),
}

fn enum_out(value: i32, name: &'static str) -> JsonEnumOut {
    if name == "UNKNOWN" && value != 0 {
        JsonEnumOut::Number(value)
    } else {
        JsonEnumOut::Name(name)
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A response as `/json` returns it (protojson: zero values left out).
pub fn encode_json_response(r: &RateLimitResponse) -> Vec<u8> {
    let out = JsonResponseOut {
        overall_code: enum_out(r.overall_code, code_name(r.overall_code)),
        statuses: r
            .statuses
            .iter()
            .map(|s| JsonStatusOut {
                code: enum_out(s.code, code_name(s.code)),
                current_limit: s.current_limit.as_ref().map(|l| JsonLimitOut {
                    name: &l.name,
                    requests_per_unit: l.requests_per_unit,
                    unit: enum_out(l.unit, unit_name(l.unit)),
                }),
                limit_remaining: s.limit_remaining,
                duration_until_reset: s.duration_until_reset.as_ref().map(json_duration),
            })
            .collect(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

fn json_duration(d: &ProtoDuration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        format!("{}.{:09}", d.seconds, d.nanos.unsigned_abs()).trim_end_matches('0').to_string() + "s"
    }
}

/// Nanoseconds of a JSON duration (`"1.5s"`, `"12s"`, `"0.000001s"`).
fn parse_json_duration(text: &str) -> Option<u64> {
    let secs = text.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    let whole: u64 = whole.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_nanos: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    whole.checked_mul(1_000_000_000)?.checked_add(frac_nanos)
}

/// A `/json` answer body as the message (client side).
pub fn decode_json_response(body: &[u8]) -> Result<RateLimitResponse, String> {
    let r: JsonResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let header = |h: JsonHeader| HeaderValue { key: h.key, value: h.value, raw_value: Vec::new() };
    let mut statuses = Vec::with_capacity(r.statuses.len());
    for s in r.statuses {
        let reset = match s.duration_until_reset {
            Some(text) => {
                let nanos = parse_json_duration(&text).ok_or_else(|| format!("duration \"{text}\""))?;
                Some(ProtoDuration {
                    seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
                    nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
                })
            }
            None => None,
        };
        statuses.push(DescriptorStatus {
            code: s.code.map(|c| c.value(code_from_name)).unwrap_or(code::UNKNOWN),
            current_limit: s.current_limit.map(|l| RateLimitValue {
                requests_per_unit: l.requests_per_unit,
                unit: l.unit.map(|u| u.value(unit_from_name)).unwrap_or(0),
                name: l.name,
            }),
            limit_remaining: s.limit_remaining,
            duration_until_reset: reset,
        });
    }
    let r = RateLimitResponse {
        overall_code: r.overall_code.map(|c| c.value(code_from_name)).unwrap_or(code::UNKNOWN),
        statuses,
        response_headers_to_add: r.response_headers_to_add.into_iter().map(header).collect(),
        request_headers_to_add: r.request_headers_to_add.into_iter().map(header).collect(),
    };
    Ok(r)
}

#[cfg(test)]
mod enum_tests {
    use super::*;

    #[test]
    fn a_grpc_target_names_its_cluster_and_authority_back() {
        let t = grpc_target("rls", "ratelimit.local");
        assert_eq!(parse_grpc_target(&t), Some(("rls".to_string(), "ratelimit.local".to_string())));
        assert_eq!(parse_grpc_target(b""), None);
    }

    #[test]
    fn codes_and_units_round_trip_their_wire_numbers() {
        for c in [Code::Unknown, Code::Ok, Code::OverLimit] {
            assert_eq!(Code::from_wire(c.wire()), c);
        }
        assert_eq!(Code::from_wire(42), Code::Unknown);
        for n in 1..=7 {
            let u = Unit::from_wire(n).unwrap();
            assert_eq!((u.wire(), unit_seconds(n)), (n, Some(u.seconds())));
            assert_eq!(unit_name(n), format!("{u:?}").to_ascii_uppercase());
        }
        for n in [0, 8, 99, -1] {
            assert_eq!((Unit::from_wire(n), unit_seconds(n)), (None, None));
        }
        assert_eq!(Unit::Month.seconds(), 30 * 86_400);
    }
}
