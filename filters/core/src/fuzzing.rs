//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`): every parser that
//! sees untrusted or operator input, driven with arbitrary bytes. Each must
//! return (never panic, never loop) whatever it is given, and each checks
//! the invariants its parser promises (round trips, idempotence).
//!
//! They live here, on stable Rust, so that `make test` replays every
//! target's corpus (`fuzz/corpus/<target>/`) deterministically without
//! the nightly toolchain that `cargo fuzz` needs (`corpus_replays` below);
//! `make fuzz` runs the targets themselves under libFuzzer.
//!
//! A failed invariant panics on purpose: that is how a fuzzer reports it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::breaker::config::BreakerConfig;
use crate::breaker::expr::{Expr, Metrics, Operand};
use crate::breaker::{BreakerFilter, Breakers};
use crate::config::NonZeroDuration;
use crate::duration::parse_duration;
use crate::host::{CallReply, Flow};
use crate::net::{client_ip, network_key, parse_addr, Cidr};
use crate::ratelimit::config::RateLimitConfig;
use crate::ratelimit::{global, protocol, RateLimitFilter};
use crate::request::RequestView;
use crate::retry::{RetryConfig, RetryFilter};
use crate::sticky::config::StaticConfig;
use crate::sticky::cookie::{cookie_values, Signer};
use crate::sticky::StickyFilter;
use crate::store::CasRule;
use crate::testing::Exchange;

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the corpus folder and the cargo-fuzz binary) and
/// its body. (The engine's configuration has its own, in
/// `ratelimit_engine::fuzz_config`.)
pub const TARGETS: &[(&str, Body)] = &[
    ("rate_limit_config", rate_limit_config),
    ("circuit_breaker_config", circuit_breaker_config),
    ("retry_config", retry_config),
    ("sticky_session_config", sticky_session_config),
    ("breaker_expression", breaker_expression),
    ("cookie_header", cookie_header),
    ("forwarded_for", forwarded_for),
    ("duration", duration),
    ("rls_answer", rls_answer),
    ("rls_json_request", rls_json_request),
    ("breaker_record", breaker_record),
    ("path", path),
    ("usage_body", usage_body),
];

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A filter configured from the bytes must serve a request without
/// panicking.
fn serve<F: crate::host::Filter>(data: &[u8]) {
    // Configuring builds every table; keep the fuzzer away from the
    // (refused above a bound, but still slow) largest legal ones.
    if data.len() > 4096 {
        return;
    }
    let Ok(x) = Exchange::<F>::new(CasRule::NginxStrict, &text(data)) else { return };
    x.host.set_property("source.address", "192.0.2.1:1");
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/api/x"), ("x-api-key", "k")]);
    let flow = match (flow, x.host.dispatched().last()) {
        (Flow::Pause, Some(call)) => x.reply(&mut stream, call.token, CallReply::Grpc { status: 14, size: 0 }),
        _ => flow,
    };
    x.finish(&mut stream, flow, Some(&[(":status", "503")]));
}

/// A response body scanned for its usage: never panics, and what it finds
/// does not depend on how the body is cut into chunks (the first byte says
/// the framing and the chunk size).
pub fn usage_body(data: &[u8]) {
    use crate::usage::{Framing, UsagePaths, UsageScanner};
    let Some((&mode, body)) = data.split_first() else { return };
    let framing = if mode & 1 == 0 { Framing::Json } else { Framing::EventStream };
    let mut paths = UsagePaths::default();
    for p in ["usage.total_tokens", "usage.input_tokens", "a", "u.v.w"] {
        paths.add(p).unwrap();
    }
    let scan = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut s = UsageScanner::new(framing);
        let mut complete_at_some_point = false;
        for piece in pieces {
            s.feed(piece, &paths);
            complete_at_some_point |= s.document_complete();
        }
        s.finish();
        (s, complete_at_some_point)
    };
    let (whole, whole_complete) = scan(&mut std::iter::once(body));
    let (cut, _) = scan(&mut body.chunks(usize::from(mode >> 1).max(1)));
    for t in 0..4 {
        assert_eq!(whole.found(t), cut.found(t), "path {t} depends on the chunking");
    }
    assert_eq!(whole.document_complete(), cut.document_complete());
    assert_eq!(whole_complete, whole.document_complete(), "a complete document stays complete");
}

/// The rate limiter's configuration, then one request.
pub fn rate_limit_config(data: &[u8]) {
    if let Ok(c) = RateLimitConfig::from_json(data) {
        if c.limits.iter().map(|l| u64::from(l.slots)).sum::<u64>() <= 4096 {
            serve::<RateLimitFilter>(data);
        }
    }
}

/// The breaker's configuration, then one request.
pub fn circuit_breaker_config(data: &[u8]) {
    if let Ok(c) = BreakerConfig::from_json(data) {
        if c.max_breakers <= 4096 {
            serve::<BreakerFilter>(data);
        }
    }
}

/// The retry filter's configuration, then one request.
pub fn retry_config(data: &[u8]) {
    if RetryConfig::from_json(data).is_ok() {
        serve::<RetryFilter>(data);
    }
}

/// Sticky sessions' configuration, then one request.
pub fn sticky_session_config(data: &[u8]) {
    if let Ok(c) = StaticConfig::from_json(data) {
        if c.table_size <= 70_000 {
            serve::<StickyFilter>(data);
        }
    }
}

struct Fixed;

impl Metrics for Fixed {
    fn value(&self, operand: &Operand) -> f64 {
        match operand {
            Operand::Num(n) => *n,
            _ => 0.5,
        }
    }

    fn latency_at_least(&self, _q: f64, ms: u64) -> bool {
        ms <= 50
    }
}

/// A Traefik expression: parsed (bounded) and, if valid, evaluated.
pub fn breaker_expression(data: &[u8]) {
    if let Ok(e) = Expr::parse(&text(data)) {
        e.eval(&Fixed);
        assert!(!e.operands().is_empty());
    }
}

/// `Cookie` headers and pinning-cookie values.
pub fn cookie_header(data: &[u8]) {
    let t = text(data);
    let signer = Signer::new(Some(b"0123456789abcdef"));
    for v in cookie_values(t.split('\n'), "sticky") {
        if let Some(name) = signer.verify(v) {
            // Only a value this signer issued verifies, spelt as issued.
            assert_eq!(signer.value(name), v, "a non-canonical signature verified");
        }
    }
}

/// `X-Forwarded-For`, peer addresses, CIDR ranges and network keys.
pub fn forwarded_for(data: &[u8]) {
    let t = text(data);
    let (peer, xff) = t.split_once('\n').unwrap_or(("192.0.2.1:1", &t));
    for hops in [0, 1, 2, 16] {
        let req = RequestView::new(vec![("x-forwarded-for".into(), xff.to_string())], Some(peer.to_string()));
        if let (Some(ip), _) = client_ip(&req, hops) {
            let _ = network_key(ip, 24, 64);
        }
    }
    let _ = parse_addr(&t);
    if let Some(c) = Cidr::parse(&t) {
        if let Some(ip) = parse_addr(peer) {
            let _ = c.contains(ip);
        }
    }
}

/// Durations as configurations write them.
pub fn duration(data: &[u8]) {
    let t = text(data);
    let parsed = parse_duration(&t);
    match NonZeroDuration::parse(&t) {
        Ok(d) => assert_eq!(parsed.ok(), Some(d.get())),
        Err(_) => assert!(parsed.map_or(true, |d| d.is_zero())),
    }
}

/// The rate limit service's answers, as protobuf and as JSON.
pub fn rls_answer(data: &[u8]) {
    let _ = global::decode_grpc_answer(data);
    for status in [200, 429, 500] {
        let _ = global::decode_json_answer(status, data);
    }
    if let Ok(r) = protocol::decode_json_response(data) {
        // What the engine writes back must read back the same.
        let again = protocol::decode_json_response(&protocol::encode_json_response(&r)).expect("own JSON");
        assert_eq!(again.overall_code, r.overall_code);
        assert_eq!(again.statuses.len(), r.statuses.len());
    }
}

/// A `/json` request, as the engine reads it.
pub fn rls_json_request(data: &[u8]) {
    if let Ok(r) = protocol::decode_json_request(data) {
        let again = protocol::decode_json_request(&protocol::encode_json_request(&r)).expect("own JSON");
        assert_eq!(again, r);
    }
}

/// The breaker's shared record, as another worker (or a damaged store)
/// might have left it.
pub fn breaker_record(data: &[u8]) {
    let expr = r#"{"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25"}"#;
    for json in [r#"{"consecutive_failures":5}"#, expr] {
        let b = Breakers::new(BreakerConfig::from_json(json.as_bytes()).expect("config"));
        let _ = b.decode_head(data);
        if let Some(rec) = b.decode(data) {
            assert_eq!(b.decode(&b.encode(&rec)), Some(rec), "a decoded record re-encodes to itself");
        }
    }
}

/// Request paths: normalising is idempotent and gives an absolute path.
pub fn path(data: &[u8]) {
    let t = text(data);
    let once = crate::path::normalize(&t).into_owned();
    assert!(once.starts_with('/'), "{once:?}");
    assert_eq!(crate::path::normalize(&once), once, "normalising twice changed {t:?}");
}

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::Path;

    /// Every target over every file of its corpus (what `make fuzz` found
    /// and kept, and the seeds): quick, deterministic, on stable Rust.
    #[test]
    fn corpus_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let mut files = 0;
        for (name, body) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                body(&std::fs::read(&path).unwrap());
                files += 1;
            }
        }
        assert!(files >= TARGETS.len(), "every target has a corpus");
    }
}
