//! Global limits: the rate limit service protocol.
//!
//! A limit of `"scope": "global"` is counted by a rate limit service shared
//! by every proxy of a fleet, through Envoy's rate limit service API
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`): over gRPC
//! where the host has it (Envoy), or as JSON posted to the service's `/json`
//! endpoint, the format `envoyproxy/ratelimit` serves, where it does not
//! (nginx's `ngx_wasm_module`).
//!
//! This module holds what the filter makes of the protocol
//! ([`super::protocol`]), nothing host-specific: the `global` section of the
//! configuration, the descriptors a request sends, and the reading of an
//! answer into what the filter does.
//!
//! # Descriptors
//!
//! Each matching global limit sends one descriptor. Its first entry is
//! `generic_key` = the limit's name, so that two limits with the same key
//! stay apart and a service config can pick limits by name; one entry per
//! key part follows, in the key's order:
//!
//! | key part | entry key | entry value |
//! | --- | --- | --- |
//! | `client_ip` | `remote_address` | the client address |
//! | `header:<name>` | `<name>` | the header's value (`""` when absent) |
//! | `path` | `path` | the path without the query string |
//! | `method` | `method` | the method |
//! | `all` | (none) | |
//!
//! A value longer than [`MAX_VALUE_LEN`] bytes is sent as `h:` and 16 hex
//! digits of its stable hash, so a client cannot make the service store
//! kilobyte keys.

pub mod answer;
pub mod call;

pub use answer::{GlobalCall, GlobalCharge, GlobalOutcome};
pub use call::GlobalMetrics;

use super::protocol::{
    self, code, unit_seconds, DescriptorEntry, HeaderValue, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use crate::config::{check_reply_status, ConfigError, NonZeroDuration};
use crate::hash::StableHasher;
use serde::Deserialize;
use std::time::Duration;

/// Longest descriptor value sent as is.
pub const MAX_VALUE_LEN: usize = 256;
/// Most headers taken from one answer (`response_headers_to_add` and
/// `request_headers_to_add` each).
pub const MAX_ANSWER_HEADERS: usize = 16;
/// Longest accepted `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "GlobalService"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobalService {
    cluster: String,
    domain: String,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: NonZeroDuration,
    #[serde(default)]
    failure_mode: RawFailureMode,
    #[serde(default)]
    replicas: Option<u32>,
    #[serde(default = "default_status_on_error")]
    status_on_error: u16,
}

fn default_path() -> String {
    "/json".to_string()
}

fn default_timeout() -> NonZeroDuration {
    NonZeroDuration::from_millis(50)
}

fn default_status_on_error() -> u16 {
    500
}

/// How the filter talks to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// gRPC `ShouldRateLimit` (Envoy; the cluster must speak HTTP/2).
    #[default]
    Grpc,
    /// JSON over HTTP/1.1 `POST <path>` (nginx, or any host without gRPC).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "FailureMode"))]
#[serde(rename_all = "lowercase")]
enum RawFailureMode {
    #[default]
    Allow,
    Deny,
    Local,
}

/// What a request gets when the service cannot answer (timeout, error, an
/// answer that does not decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Let it through (Envoy's own rate limit filter does the same by default).
    Allow,
    /// Refuse it with `status_on_error`.
    Deny,
    /// Judge it by a local bucket of `1/replicas` of each global limit: the
    /// fleet as a whole stays near the global limit while the service is down.
    Local {
        /// Proxies sharing the global limit.
        replicas: u32,
    },
}

/// The checked `global` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalService {
    /// Envoy: the cluster of the service. nginx: the `host:port` that
    /// `ngx_wasm_module` dispatches to.
    pub cluster: String,
    /// The `domain` of every request.
    pub domain: String,
    /// gRPC or JSON.
    pub protocol: Protocol,
    /// The JSON endpoint's path.
    pub path: String,
    /// `:authority` of the calls.
    pub authority: String,
    /// How long a request waits for the answer.
    pub timeout: Duration,
    /// What happens when there is none.
    pub failure_mode: FailureMode,
    /// Status of a refusal under `failure_mode: "deny"`.
    pub status_on_error: u16,
}

impl GlobalService {
    /// The service's target as the host takes it: for gRPC, a serialized
    /// `GrpcService` naming the cluster and authority (lengths are checked
    /// at configure time, so the bytes are ASCII); for HTTP, the cluster.
    pub fn target(&self) -> String {
        match self.protocol {
            Protocol::Grpc => String::from_utf8(protocol::grpc_target(&self.cluster, &self.authority))
                .unwrap_or_else(|_| self.cluster.clone()),
            Protocol::Http => self.cluster.clone(),
        }
    }
}

impl RawGlobalService {
    pub(super) fn check(self) -> Result<GlobalService, ConfigError> {
        let printable = |s: &str| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(&self.cluster) {
            return Err(ConfigError::new("global.cluster", "must be 1 to 255 printable characters without spaces"));
        }
        if !printable(&self.domain) {
            return Err(ConfigError::new("global.domain", "must be 1 to 255 printable characters without spaces"));
        }
        if !self.path.starts_with('/') || !printable(&self.path) {
            return Err(ConfigError::new("global.path", "must start with '/' and hold no spaces"));
        }
        let authority = self.authority.unwrap_or_else(|| self.cluster.clone());
        if !printable(&authority) {
            return Err(ConfigError::new("global.authority", "must be 1 to 255 printable characters without spaces"));
        }
        if self.protocol == Protocol::Grpc && self.cluster.len() + authority.len() > 120 {
            return Err(ConfigError::new("global.cluster", "and authority together must be at most 120 characters"));
        }
        let timeout = self.timeout.get();
        if timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT {
            return Err(ConfigError::new("global.timeout", "must be between 1ms and 5s"));
        }
        let failure_mode = match (self.failure_mode, self.replicas) {
            (RawFailureMode::Allow, None) => FailureMode::Allow,
            (RawFailureMode::Deny, None) => FailureMode::Deny,
            (RawFailureMode::Local, Some(n)) if (1..=10_000).contains(&n) => FailureMode::Local { replicas: n },
            (RawFailureMode::Local, Some(_)) => {
                return Err(ConfigError::new("global.replicas", "must be between 1 and 10000"));
            }
            (RawFailureMode::Local, None) => {
                return Err(ConfigError::new(
                    "global.replicas",
                    "is required with failure_mode \"local\" (the number of proxies sharing the limit)",
                ));
            }
            (_, Some(_)) => {
                return Err(ConfigError::new("global.replicas", "is only used with failure_mode \"local\""));
            }
        };
        check_reply_status("global.status_on_error", self.status_on_error)?;
        Ok(GlobalService {
            cluster: self.cluster,
            domain: self.domain,
            protocol: self.protocol,
            path: self.path,
            authority,
            timeout,
            failure_mode,
            status_on_error: self.status_on_error,
        })
    }
}

/// One descriptor: its entries, in order.
pub type Descriptor = Vec<(String, String)>;

/// A descriptor value as sent: as is, or hashed when too long.
pub fn descriptor_value(value: &str) -> String {
    if value.len() <= MAX_VALUE_LEN {
        return value.to_string();
    }
    let mut h = StableHasher::default();
    h.write_field(value.as_bytes());
    format!("h:{:016x}", h.finish())
}

/// The request message for `domain` and `descriptors`; `hits[i]`, when
/// given, is descriptor `i`'s own `hits_addend` (a cost; 0 checks without
/// counting), else the service counts 1.
pub fn request(domain: &str, descriptors: &[Descriptor], hits: &[Option<u64>]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors: descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| RateLimitDescriptor {
                entries: d.iter().map(|(k, v)| DescriptorEntry { key: k.clone(), value: v.clone() }).collect(),
                limit: None,
                hits_addend: hits.get(i).copied().flatten().map(|value| protocol::UInt64Value { value }),
            })
            .collect(),
        hits_addend: 0,
    }
}

/// The gRPC request body (a serialized `RateLimitRequest`).
pub fn encode_grpc_request(domain: &str, descriptors: &[Descriptor], hits: &[Option<u64>]) -> Vec<u8> {
    prost::Message::encode_to_vec(&request(domain, descriptors, hits))
}

/// The `/json` request body.
pub fn encode_json_request(domain: &str, descriptors: &[Descriptor], hits: &[Option<u64>]) -> Vec<u8> {
    protocol::encode_json_request(&request(domain, descriptors, hits))
}

// --- Reading an answer. ---

/// One descriptor's verdict, as the filter uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// Over the limit?
    pub over_limit: bool,
    /// The service's limit: requests per window of so many seconds.
    pub quota: Option<(u64, u64)>,
    /// Requests left.
    pub remaining: u64,
    /// Nanoseconds until the limit resets (for a refusal: until a request is
    /// admitted again, with the engine in this repository).
    pub reset_nanos: u64,
}

/// An answer, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// The overall verdict.
    pub over_limit: bool,
    /// Per descriptor, in the request's order (may be empty: services need
    /// not send them).
    pub statuses: Vec<StatusView>,
    /// Valid headers for the client's response (at most [`MAX_ANSWER_HEADERS`]).
    pub response_headers: Vec<(String, String)>,
    /// Valid headers for the upstream request (at most [`MAX_ANSWER_HEADERS`]).
    pub request_headers: Vec<(String, String)>,
}

/// Why an answer was not usable; the request then follows `failure_mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// The body did not decode.
    Undecodable(String),
    /// The overall code was UNKNOWN (or a value the protocol does not have).
    UnknownCode(i32),
    /// An HTTP status the `/json` endpoint does not give for a verdict.
    HttpStatus(u16),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Undecodable(e) => write!(f, "undecodable answer: {e}"),
            AnswerError::UnknownCode(c) => write!(f, "answer with overall code {c}"),
            AnswerError::HttpStatus(s) => write!(f, "HTTP status {s}"),
        }
    }
}

/// Decodes a gRPC answer (the serialized `RateLimitResponse`).
pub fn decode_grpc_answer(body: &[u8]) -> Result<Answer, AnswerError> {
    let r: RateLimitResponse = prost::Message::decode(body).map_err(|e| AnswerError::Undecodable(e.to_string()))?;
    answer_of(r)
}

/// Decodes a `/json` answer: 200 with OK, 429 with OVER_LIMIT.
pub fn decode_json_answer(status: u16, body: &[u8]) -> Result<Answer, AnswerError> {
    if status != 200 && status != 429 {
        return Err(AnswerError::HttpStatus(status));
    }
    answer_of(protocol::decode_json_response(body).map_err(AnswerError::Undecodable)?)
}

fn answer_of(r: RateLimitResponse) -> Result<Answer, AnswerError> {
    let over_limit = match r.overall_code {
        code::OK => false,
        code::OVER_LIMIT => true,
        other => return Err(AnswerError::UnknownCode(other)),
    };
    let statuses = r
        .statuses
        .iter()
        .map(|s| StatusView {
            over_limit: s.code == code::OVER_LIMIT,
            quota: s.current_limit.as_ref().and_then(|l| {
                let secs = unit_seconds(l.unit)?;
                (l.requests_per_unit > 0).then_some((u64::from(l.requests_per_unit), secs))
            }),
            remaining: u64::from(s.limit_remaining),
            reset_nanos: s
                .duration_until_reset
                .as_ref()
                .map(|d| {
                    let secs = u64::try_from(d.seconds).unwrap_or(0);
                    let nanos = u64::try_from(d.nanos).unwrap_or(0);
                    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
                })
                .unwrap_or(0),
        })
        .collect();
    Ok(Answer {
        over_limit,
        statuses,
        response_headers: valid_headers(&r.response_headers_to_add),
        request_headers: valid_headers(&r.request_headers_to_add),
    })
}

/// Headers from the service that are safe to set: a valid lower-case name,
/// not a pseudo-header nor hop-by-hop, a value without control characters;
/// the rest are dropped.
fn valid_headers(headers: &[HeaderValue]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|h| {
            let value =
                if h.raw_value.is_empty() { h.value.clone() } else { String::from_utf8(h.raw_value.clone()).ok()? };
            let name = h.key.to_ascii_lowercase();
            let name_ok = crate::matcher::valid_header_name(&name)
                && !matches!(
                    name.as_str(),
                    "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "content-length" | "host"
                );
            let value_ok = value.len() <= 1024 && value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            (name_ok && value_ok).then_some((name, value))
        })
        .take(MAX_ANSWER_HEADERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::protocol::*;
    use prost::Message;

    fn descriptors() -> Vec<Descriptor> {
        vec![vec![("generic_key".into(), "per-client".into()), ("remote_address".into(), "10.0.0.1".into())]]
    }

    #[test]
    fn grpc_request_has_rls_proto_field_numbers() {
        let bytes = encode_grpc_request("edge", &descriptors(), &[]);
        // Field 1 (domain, LEN) "edge", then field 2 (descriptor, LEN) holding
        // field 1 entries, each with field 1 key and field 2 value.
        let want: Vec<u8> = [
            vec![0x0a, 4],
            b"edge".to_vec(),
            vec![0x12, 55],
            vec![0x0a, 25, 0x0a, 11],
            b"generic_key".to_vec(),
            vec![0x12, 10],
            b"per-client".to_vec(),
            vec![0x0a, 26, 0x0a, 14],
            b"remote_address".to_vec(),
            vec![0x12, 8],
            b"10.0.0.1".to_vec(),
        ]
        .concat();
        assert_eq!(bytes, want);
        let back = RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.domain, "edge");
        assert_eq!(back.descriptors[0].entries[1].value, "10.0.0.1");
    }

    #[test]
    fn grpc_target_is_a_grpc_service_naming_the_cluster() {
        // GrpcService { envoy_grpc (1) { cluster_name (1): "rls", authority (2): "x" } }
        let want: Vec<u8> = [vec![0x0a, 8, 0x0a, 3], b"rls".to_vec(), vec![0x12, 1], b"x".to_vec()].concat();
        assert_eq!(grpc_target("rls", "x"), want);
    }

    fn grpc_answer(overall: i32, status: DescriptorStatus) -> Vec<u8> {
        RateLimitResponse {
            overall_code: overall,
            statuses: vec![status],
            response_headers_to_add: vec![
                HeaderValue { key: "X-From-Service".into(), value: "yes".into(), raw_value: vec![] },
                HeaderValue { key: "connection".into(), value: "close".into(), raw_value: vec![] },
                HeaderValue { key: "bad name".into(), value: "v".into(), raw_value: vec![] },
                HeaderValue { key: "x-ctl".into(), value: "a\r\nb".into(), raw_value: vec![] },
            ],
            request_headers_to_add: vec![],
        }
        .encode_to_vec()
    }

    fn status(code: i32, remaining: u32, secs: i64, nanos: i32) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: Some(RateLimitValue { requests_per_unit: 10, unit: 2, name: String::new() }),
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration { seconds: secs, nanos }),
        }
    }

    #[test]
    fn grpc_answers_decode_to_verdicts() {
        let a =
            decode_grpc_answer(&grpc_answer(code::OVER_LIMIT, status(code::OVER_LIMIT, 0, 5, 500_000_000))).unwrap();
        assert!(a.over_limit);
        assert_eq!(
            a.statuses,
            vec![StatusView { over_limit: true, quota: Some((10, 60)), remaining: 0, reset_nanos: 5_500_000_000 }]
        );
        assert_eq!(a.response_headers, vec![("x-from-service".to_string(), "yes".to_string())], "unsafe ones dropped");
        let a = decode_grpc_answer(&grpc_answer(code::OK, status(code::OK, 7, 1, 0))).unwrap();
        assert!(!a.over_limit);
        assert_eq!(a.statuses[0].remaining, 7);
    }

    #[test]
    fn unusable_answers_are_errors() {
        assert_eq!(decode_grpc_answer(&grpc_answer(0, status(0, 0, 0, 0))), Err(AnswerError::UnknownCode(0)));
        assert_eq!(decode_grpc_answer(&grpc_answer(9, status(0, 0, 0, 0))), Err(AnswerError::UnknownCode(9)));
        assert!(matches!(decode_grpc_answer(&[0xff, 0xff, 0xff]), Err(AnswerError::Undecodable(_))));
        assert_eq!(decode_grpc_answer(&[]), Err(AnswerError::UnknownCode(0)), "an empty body is all defaults");
        assert_eq!(decode_json_answer(500, b"{}"), Err(AnswerError::HttpStatus(500)));
        assert!(matches!(decode_json_answer(200, b"<html>"), Err(AnswerError::Undecodable(_))));
        assert!(matches!(
            decode_json_answer(200, br#"{"overallCode":"OK","statuses":[{"durationUntilReset":"soon"}]}"#),
            Err(AnswerError::Undecodable(_))
        ));
    }

    #[test]
    fn json_request_is_what_envoyproxy_ratelimit_reads() {
        let body = super::encode_json_request("edge", &descriptors(), &[]);
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"domain":"edge","descriptors":[{"entries":[{"key":"generic_key","value":"per-client"},{"key":"remote_address","value":"10.0.0.1"}]}]}"#
        );
        assert_eq!(decode_json_request(&body).unwrap(), request("edge", &descriptors(), &[]));
        let mut with_hits = request("edge", &descriptors(), &[]);
        with_hits.hits_addend = 2;
        with_hits.descriptors[0].hits_addend = Some(UInt64Value { value: 7 });
        let round = decode_json_request(&protocol::encode_json_request(&with_hits)).unwrap();
        assert_eq!(round, with_hits);
        let r = decode_json_request(br#"{"domain":"d","descriptors":[{"entries":[{"key":"k"}]}],"hits_addend":3}"#)
            .unwrap();
        assert_eq!((r.hits_addend, r.descriptors[0].entries[0].value.as_str()), (3, ""));
        // A descriptor's own hitsAddend (a UInt64Value: a number or a string in protojson).
        let r =
            decode_json_request(br#"{"domain":"d","descriptors":[{"entries":[],"hitsAddend":"5"},{"hitsAddend":0}]}"#)
                .unwrap();
        let hits: Vec<Option<u64>> = r.descriptors.iter().map(|d| d.hits_addend.as_ref().map(|h| h.value)).collect();
        assert_eq!(hits, [Some(5), Some(0)]);
        assert!(decode_json_request(br#"{"domain":"d","hitsAddend":"many"}"#).is_err());
    }

    #[test]
    fn json_answers_in_protojson_form_decode() {
        // As protojson writes it: camelCase, enum names, zero values left out.
        let body = br#"{"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT","currentLimit":{"requestsPerUnit":10,"unit":"MINUTE"},"durationUntilReset":"12.250s"}],"responseHeadersToAdd":[{"key":"x-a","value":"1"}]}"#;
        let a = decode_json_answer(429, body).unwrap();
        assert!(a.over_limit);
        assert_eq!(
            a.statuses,
            vec![StatusView { over_limit: true, quota: Some((10, 60)), remaining: 0, reset_nanos: 12_250_000_000 }]
        );
        assert_eq!(a.response_headers, vec![("x-a".to_string(), "1".to_string())]);
        // Proto field names and numeric enums are accepted too.
        let a = decode_json_answer(200, br#"{"overall_code":1,"statuses":[{"code":1,"limit_remaining":4}]}"#).unwrap();
        assert!(!a.over_limit);
        assert_eq!(a.statuses[0].remaining, 4);
    }

    #[test]
    fn json_responses_round_trip() {
        let r = RateLimitResponse {
            overall_code: code::OK,
            statuses: vec![status(code::OK, 3, 2, 5_000_000)],
            response_headers_to_add: vec![],
            request_headers_to_add: vec![],
        };
        let text = String::from_utf8(encode_json_response(&r)).unwrap();
        assert_eq!(
            text,
            r#"{"overallCode":"OK","statuses":[{"code":"OK","currentLimit":{"requestsPerUnit":10,"unit":"MINUTE"},"limitRemaining":3,"durationUntilReset":"2.005s"}]}"#
        );
        assert_eq!(decode_json_answer(200, text.as_bytes()).unwrap(), answer_of(r.clone()).unwrap());
        // An enum value the protocol does not name is written as its number,
        // and reads back the same (found by the rls_answer fuzz target).
        let odd = RateLimitResponse { overall_code: 67448, ..r };
        let again = decode_json_response(&encode_json_response(&odd)).unwrap();
        assert_eq!(again.overall_code, 67448);
    }

    #[test]
    fn long_values_are_hashed() {
        assert_eq!(descriptor_value("abc"), "abc");
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let h = descriptor_value(&long);
        assert!(h.starts_with("h:") && h.len() == 18, "{h}");
        assert_eq!(h, descriptor_value(&long), "stable");
        assert_ne!(h, descriptor_value(&"y".repeat(MAX_VALUE_LEN + 1)));
    }
}
