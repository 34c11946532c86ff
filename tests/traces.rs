//! The filters' decisions on real spans: Envoy (`envoy/observability.yaml`,
//! its OpenTelemetry tracer and `custom_tags`) exports each request's span
//! over OTLP/gRPC to a real receiver (`scripts/otlp-sink.py`), and a
//! limited, a retried, a breaker-rejected and a pinned request each carry
//! the attributes the filters' READMEs list. The same for nginx, through
//! `nginx-otel/otel/`'s includes, is in `tests/nginx.rs`. Both builds:
//! the native module tags the span itself (the sample's `custom_tags`
//! then find no filter state, and add nothing).

use integration_tests::otlp::{OtlpSink, Span};
use integration_tests::*;
use std::time::Duration;

integration_tests::both_builds!(envoy_spans_carry_each_policys_decision, without_trace_no_decision_reaches_the_span,);

/// The bundle with every policy at thresholds a test reaches quickly, and
/// `trace` on.
const BUNDLE: &str = r#"{
  "trace": true,
  "rate_limit": { "limits": [ { "name": "tight", "requests": 2, "period": "1m", "burst": 2,
                                "key": "header:x-client", "match": { "path_prefix": "/limited" } } ] },
  "circuit_breaker": { "key": "header:x-breaker", "consecutive_failures": 3, "open_for": "60s" },
  "sticky_session": {
    "backends": [ { "name": "a", "address": "127.0.0.1:8081" }, { "name": "b", "address": "127.0.0.1:8082" },
                  { "name": "c", "address": "127.0.0.1:8083" } ],
    "session_key": ["header:x-session-id", "client_ip"],
    "cookie": { "name": "sticky", "secret": "trace-test-secret-0123456789abcdef" },
    "health": { "failures": 50, "eject_for": "10s" }
  },
  "retry": { "policies": [ { "name": "reads", "match": { "methods": ["GET"] }, "retry_on": "5xx", "max_retries": 2 } ],
             "budget": { "ratio": 1.0, "min_per_second": 10, "window": "10s" } }
}"#;

/// Spans leave Envoy every second (the sample's runtime); generous for a
/// busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn url_path(span: &Span) -> String {
    let url = span.attr("http.url").unwrap_or_default();
    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default()
}

fn span_for(sink: &OtlpSink, path: &str, extra: impl Fn(&Span) -> bool) -> Span {
    sink.wait_for(PATIENCE, |s| url_path(s) == path && extra(s))
        .unwrap_or_else(|| panic!("no span for {path}; received: {:#?}", sink.spans()))
}

fn envoy_spans_carry_each_policys_decision(build: Build) {
    let sink = OtlpSink::start();
    let b = Backends::start(&["a", "b", "c"]);
    let yaml = sample_config_for(build, "observability.yaml", &b.addrs(), Some(BUNDLE))
        .replace("port_value: 4317 ", &format!("port_value: {} ", sink.addr.port()));
    let envoy = Envoy::start(&yaml, 2);

    // Pinned: a session's cookie sends it back to its backend.
    let first = http_get(envoy.addr, "/placed", &[("x-session-id", "alice")]).expect("request");
    let cookie = first.header("set-cookie").expect("a pinning cookie").split(';').next().unwrap_or("").to_string();
    let backend = first.header("x-backend").expect("x-backend").to_string();
    let pinned = http_get(envoy.addr, "/pinned", &[("cookie", &cookie)]).expect("request");
    assert_eq!(pinned.status, 200);

    // Limited: two admitted, the third refused.
    for _ in 0..3 {
        let _ = http_get(envoy.addr, "/limited", &[("x-client", "c1")]);
    }

    // Retried: the backend these requests are placed on (by the client
    // address) fails every request (503); the retry goes to another host
    // (the sample route's previous_hosts predicate) and succeeds.
    let home = http_get(envoy.addr, "/home", &[]).expect("request");
    let home = home.header("x-backend").expect("x-backend").to_string();
    b.set(&home, "fail=1&status=503");
    let mut retried_paths = Vec::new();
    for i in 0..6 {
        let path = format!("/retried-{i}");
        let r = http_get(envoy.addr, &path, &[]).expect("request");
        assert_eq!(r.status, 200, "retried into success");
        retried_paths.push(path);
    }

    // Breaker: POSTs (no retry policy) fail three times in a row on one
    // breaker key, and the fourth is the breaker's own 503.
    for name in ["a", "b", "c"] {
        b.set(name, "fail=1&status=503");
    }
    let mut c = Conn::open(envoy.addr).expect("connect");
    for _ in 0..3 {
        let r = c.request("POST", "/breaker", &[("x-breaker", "orders")]).expect("request");
        assert_eq!(r.status, 503);
    }
    let rejected = c.request("POST", "/breaker-rejected", &[("x-breaker", "orders")]).expect("request");
    assert!(rejected.header("x-circuit-breaker").is_some(), "the breaker answered");

    let s = span_for(&sink, "/pinned", |_| true);
    assert_eq!(s.service, "resilience-filters");
    assert_eq!(s.attr("sticky.placement"), Some("pinned"));
    assert_eq!(s.attr("sticky.backend"), Some(backend.as_str()));
    assert_eq!(s.attr("ratelimit.result"), None, "no limit matched /pinned");
    assert_eq!(s.attr("circuit_breaker.decision"), Some("passed"));
    assert_eq!(s.attr("circuit_breaker.key"), Some("-"));
    assert_eq!(s.attr("retry.policy"), Some("reads"));
    let s = span_for(&sink, "/placed", |_| true);
    assert_eq!(s.attr("sticky.placement"), Some("hashed"));

    let s = span_for(&sink, "/limited", |s| s.attr("ratelimit.result") == Some("refused"));
    assert_eq!(s.attr("ratelimit.limit"), Some("tight"));
    assert_eq!(s.attr("http.status_code"), Some("429"));
    assert_eq!(s.attr("circuit_breaker.decision"), None, "a refused request goes no further");
    assert_eq!(s.attr("sticky.backend"), None);
    let admitted = span_for(&sink, "/limited", |s| s.attr("ratelimit.result") == Some("allowed"));
    assert_eq!(admitted.attr("ratelimit.limit"), None);

    let retried = sink
        .wait_for(PATIENCE, |s| retried_paths.contains(&url_path(s)) && s.attr("retry.retries") == Some("1"))
        .unwrap_or_else(|| panic!("no retried span: {:#?}", sink.spans()));
    assert_eq!(retried.attr("retry.policy"), Some("reads"));
    assert_eq!(retried.attr("retry.granted"), Some("2"));
    assert_eq!(retried.attr("retry.budget"), Some("ok"));
    assert_eq!(retried.attr("http.status_code"), Some("200"));

    let opened = span_for(&sink, "/breaker", |s| s.attr("circuit_breaker.transition").is_some());
    assert_eq!(opened.attr("circuit_breaker.transition"), Some("closed->open"));
    assert_eq!(opened.attr("circuit_breaker.key"), Some("orders"));
    let s = span_for(&sink, "/breaker-rejected", |_| true);
    assert_eq!(s.attr("circuit_breaker.key"), Some("orders"));
    assert_eq!(s.attr("circuit_breaker.state"), Some("open"));
    assert_eq!(s.attr("circuit_breaker.decision"), Some("rejected"));
    assert_eq!(s.attr("http.status_code"), Some("503"));
    assert_eq!(s.attr("retry.policy"), None, "a rejected request takes no retries");
    drop(envoy);
}

fn without_trace_no_decision_reaches_the_span(build: Build) {
    let sink = OtlpSink::start();
    let b = Backends::start(&["a", "b", "c"]);
    let json = BUNDLE.replacen("\"trace\": true,", "", 1);
    let yaml = sample_config_for(build, "observability.yaml", &b.addrs(), Some(&json))
        .replace("port_value: 4317 ", &format!("port_value: {} ", sink.addr.port()));
    let envoy = Envoy::start(&yaml, 1);
    for _ in 0..3 {
        let _ = http_get(envoy.addr, "/limited", &[("x-client", "c1")]);
    }
    let s = span_for(&sink, "/limited", |s| s.attr("http.status_code") == Some("429"));
    let ours: Vec<&String> = s
        .attributes
        .keys()
        .filter(|k| ["ratelimit.", "circuit_breaker.", "sticky.", "retry."].iter().any(|p| k.starts_with(p)))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}
