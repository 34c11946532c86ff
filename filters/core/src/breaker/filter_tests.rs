//! The circuit-breaker filter driven through the recording host: its
//! README's states, failures and responses, request by request, and the host
//! calls each request makes.

use super::{BreakerFilter, BreakerMetrics, FilterMetrics, Role};
use crate::host::Flow;
use crate::store::CasRule;
use crate::testing::{Exchange, HostCalls, Outcome};

const S: u64 = 1_000_000_000;
const CONFIG: &str = r#"{"consecutive_failures":3,"open_for":"10s"}"#;

fn breaker(config: &str) -> Exchange<BreakerFilter> {
    let x = Exchange::<BreakerFilter>::new(CasRule::Envoy, config).unwrap();
    x.host.set_property("xds.cluster_name", "backend");
    x
}

fn send(x: &Exchange<BreakerFilter>, status: u16) -> Outcome {
    x.request(&[(":method", "GET"), (":path", "/"), (":authority", "example.com")], status, &[])
}

/// A request whose client goes away before any answer: no status, no
/// details.
fn abandoned(x: &Exchange<BreakerFilter>) -> Outcome {
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/")]);
    x.finish(&mut stream, flow, None)
}

#[test]
fn trips_after_consecutive_failures_and_rejects_with_retry_after() {
    let x = breaker(CONFIG);
    for _ in 0..3 {
        assert_eq!(send(&x, 500).status(500), 500);
    }
    let rejected = send(&x, 200);
    let reply = rejected.reply.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("10"));
    assert_eq!(reply.header("x-circuit-breaker"), Some("backend; state=open"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.body.contains(r#""error":"circuit_open""#), "{}", reply.body);
    assert_eq!(x.host.metric("circuit_breaker.backend.failures"), 3);
    assert_eq!(x.host.metric("circuit_breaker.backend.opened"), 1);
    assert_eq!(x.host.metric("circuit_breaker.backend.rejected"), 1);
    assert_eq!(x.host.metric("circuit_breaker.backend.state"), 1);
}

#[test]
fn a_success_resets_the_streak() {
    let x = breaker(CONFIG);
    for status in [500, 500, 200, 500, 500] {
        send(&x, status);
    }
    assert_eq!(send(&x, 200).status(200), 200, "never three in a row");
}

#[test]
fn half_open_probe_success_closes_and_failure_reopens_for_longer() {
    let x = breaker(CONFIG);
    for _ in 0..3 {
        send(&x, 500);
    }
    x.host.clock.advance(10 * S);
    assert_eq!(send(&x, 502).status(502), 502, "the probe reaches the upstream");
    let reopened = send(&x, 200).reply.unwrap();
    assert_eq!(reopened.header("retry-after"), Some("20"), "open_for doubled after a failed probe");
    x.host.clock.advance(20 * S);
    assert_eq!(send(&x, 200).status(200), 200, "probe");
    assert_eq!(send(&x, 200).status(200), 200, "closed again");
    assert_eq!(x.host.metric("circuit_breaker.backend.closed"), 1);
    assert_eq!(x.host.metric("circuit_breaker.backend.half_opened"), 2);
}

#[test]
fn half_open_admits_only_its_probes() {
    let x = breaker(CONFIG);
    for _ in 0..3 {
        send(&x, 500);
    }
    x.host.clock.advance(10 * S);
    let (mut probe, flow) = x.start(&[(":method", "GET"), (":path", "/")]);
    assert_eq!((flow, probe.role()), (Flow::Continue, Role::Probe));
    let other = send(&x, 200).reply.unwrap();
    assert_eq!(other.header("x-circuit-breaker"), Some("backend; state=half-open"));
    x.host.set_property_u64("response.code", 200);
    x.finish(&mut probe, Flow::Continue, Some(&[(":status", "200")]));
    assert_eq!(send(&x, 200).status(200), 200);
}

#[test]
fn an_abandoned_probe_gives_its_place_back() {
    let x = breaker(CONFIG);
    for _ in 0..3 {
        send(&x, 500);
    }
    x.host.clock.advance(10 * S);
    abandoned(&x);
    let (probe, _) = x.start(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(probe.role(), Role::Probe, "the next request may probe at once");
}

#[test]
fn abandoned_requests_are_not_recorded() {
    let x = breaker(CONFIG);
    for _ in 0..5 {
        abandoned(&x);
    }
    assert_eq!(x.host.metric("circuit_breaker.backend.requests"), 0);
}

/// A request answered `status` as Envoy reports it: `flags` and `details`.
fn envoy(x: &Exchange<BreakerFilter>, status: u16, flags: u64, details: &str) -> Outcome {
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/")]);
    x.host.set_property_u64("response.flags", flags);
    x.host.set_property("response.code_details", details);
    let code = status.to_string();
    x.finish(&mut stream, flow, Some(&[(":status", code.as_str())]))
}

#[test]
fn network_failures_count_even_when_envoy_answers_for_the_upstream() {
    let only_500 = CONFIG.replace('}', r#","failure_statuses":[500]}"#);
    let x = breaker(&only_500);
    for _ in 0..3 {
        envoy(&x, 503, 0x20, "upstream_reset_before_response_started{connection_failure}");
    }
    assert_eq!(send(&x, 200).status(200), 503, "three connect failures tripped it");
    // A 503 the upstream sent itself is no failure here (only 500 is).
    let y = breaker(&only_500);
    for _ in 0..3 {
        envoy(&y, 503, 0, "via_upstream");
    }
    assert_eq!(envoy(&y, 200, 0, "via_upstream").status(200), 200);
}

#[test]
fn in_nginx_a_502_to_504_is_a_network_failure() {
    let x = breaker(&CONFIG.replace('}', r#","failure_statuses":[500]}"#));
    for _ in 0..3 {
        send(&x, 504); // no flags, no details: nginx
    }
    assert_eq!(send(&x, 200).status(200), 503);
}

#[test]
fn keys_follow_the_cluster_else_the_authority() {
    let x = Exchange::<BreakerFilter>::new(CasRule::NginxStrict, CONFIG).unwrap();
    // nginx: no xds.* properties, so the authority stands in.
    for _ in 0..3 {
        x.request(&[(":method", "GET"), (":path", "/"), (":authority", "shop")], 500, &[]);
    }
    let r = x.request(&[(":method", "GET"), (":path", "/"), (":authority", "shop")], 200, &[]);
    assert_eq!(r.reply.unwrap().header("x-circuit-breaker"), Some("shop; state=open"));
    let other = x.request(&[(":method", "GET"), (":path", "/"), (":authority", "blog")], 200, &[]);
    assert_eq!(other.status(200), 200, "another authority has its own breaker");
}

#[test]
fn header_keys_are_cut_at_128_bytes_and_a_missing_header_is_dash() {
    let x = breaker(&CONFIG.replace("}", r#","key":"header:x-tenant"}"#));
    let long = "é".repeat(100);
    for _ in 0..3 {
        x.request(&[(":method", "GET"), ("x-tenant", &long)], 500, &[]);
    }
    let r = x.request(&[(":method", "GET"), ("x-tenant", &long)], 200, &[]).reply.unwrap();
    let key = r.header("x-circuit-breaker").unwrap().split(';').next().unwrap().to_string();
    assert_eq!(key.len(), 128);
    for _ in 0..3 {
        x.request(&[(":method", "GET")], 500, &[]);
    }
    let r = x.request(&[(":method", "GET")], 200, &[]).reply.unwrap();
    assert_eq!(r.header("x-circuit-breaker"), Some("-; state=open"));
}

#[test]
fn an_open_breaker_rejects_on_every_worker() {
    let a = breaker(CONFIG);
    let b = Exchange::<BreakerFilter>::on(a.host.worker(), CONFIG).unwrap();
    b.host.set_property("xds.cluster_name", "backend");
    for _ in 0..3 {
        send(&a, 500);
    }
    assert_eq!(send(&b, 200).status(200), 503);
}

#[test]
fn a_configured_body_replaces_the_json_one() {
    let x = breaker(&CONFIG.replace("}", r#","body":"down\n","status":429}"#));
    for _ in 0..3 {
        send(&x, 500);
    }
    let r = send(&x, 200).reply.unwrap();
    assert_eq!((r.status, r.body.as_str(), r.header("content-type")), (429, "down\n", None));
}

/// A request through a closed breaker under the documented defaults (key
/// `cluster`; one trip condition is required).
pub(crate) fn calls_per_request() -> HostCalls {
    let x = breaker(r#"{"consecutive_failures":5}"#);
    send(&x, 200); // finds and caches the slot
    send(&x, 200).calls
}

#[test]
fn host_calls_per_request_are_pinned() {
    // Request callback: xds.cluster_name and the record's head (bytes); the
    // clock. Response callback: :status (bytes; a 200 came from the
    // upstream, so flags and code details are not read); the clock, the
    // `requests` counter and the `state` gauge. The record is neither read
    // nor written again: with consecutive_failures alone there is no
    // window, and a success on a record whose head showed no failure
    // streak changes nothing.
    assert_eq!(calls_per_request(), HostCalls { returning_bytes: 3, returning_nothing: 4, callbacks_reading: 2 });
}

#[test]
fn a_clean_success_skips_the_record_and_failures_still_open_the_breaker() {
    let x = breaker(r#"{"consecutive_failures":3}"#);
    send(&x, 200);
    // Two failures, a success (which reads the record: it has a streak to
    // reset), two failures: no three in a row yet.
    for status in [500, 500, 200, 500, 500] {
        assert_eq!(send(&x, status).reply, None);
    }
    // The third in a row opens it; the next request is refused.
    send(&x, 500);
    assert_eq!(send(&x, 200).reply.map(|r| r.status), Some(503));
    // With a window (a failure ratio), every completion is recorded: the
    // record is read again at the response.
    let windowed = breaker(r#"{"failure_ratio":0.5,"min_requests":100}"#);
    send(&windowed, 200);
    assert_eq!(send(&windowed, 200).calls.returning_bytes, 4);
}

#[test]
fn the_metrics_table_in_the_readme_matches_the_metrics_defined() {
    crate::testing::assert_metrics_table::<BreakerFilter>(
        include_str!("../../../circuit-breaker/README.md"),
        &[("circuit_breaker.<key>.", BreakerMetrics::SUFFIXES), ("circuit_breaker.", FilterMetrics::SUFFIXES)],
    );
}

/// A request whose client gives up while the upstream hangs, as Envoy 1.40
/// reports it: no response code, flag DC, details `downstream_remote_disconnect`.
fn aborted_in_envoy(x: &Exchange<BreakerFilter>) -> Outcome {
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/")]);
    x.host.set_property_u64("response.code", 0);
    x.host.set_property_u64("response.flags", 0x4000);
    x.host.set_property("response.code_details", "downstream_remote_disconnect");
    x.finish(&mut stream, flow, None)
}

#[test]
fn a_probe_the_client_gave_up_on_gives_its_place_back_and_closes_nothing() {
    let x = breaker(CONFIG);
    for _ in 0..3 {
        send(&x, 500);
    }
    x.host.clock.advance(10 * S);
    aborted_in_envoy(&x);
    assert_eq!(x.host.metric("circuit_breaker.backend.closed"), 0, "an aborted probe closed the breaker");
    let (next, _) = x.start(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(next.role(), Role::Probe, "the probe's place was given back");
}

#[test]
fn requests_the_client_gave_up_on_neither_reset_the_streak_nor_count() {
    let x = breaker(CONFIG);
    send(&x, 500);
    send(&x, 500);
    for _ in 0..5 {
        aborted_in_envoy(&x);
    }
    assert_eq!(x.host.metric("circuit_breaker.backend.requests"), 2);
    send(&x, 500);
    assert_eq!(send(&x, 200).status(200), 503, "three failures in a row, the aborted ones aside");
}

#[test]
fn an_invalid_status_is_a_failure_whatever_failure_statuses_say() {
    let x = breaker(&CONFIG.replace('}', r#","failure_statuses":[500]}"#));
    for _ in 0..3 {
        send(&x, 999);
    }
    assert_eq!(send(&x, 200).status(200), 503);
}

#[test]
fn respelling_the_authority_is_the_same_breaker() {
    let x = breaker(&CONFIG.replace('}', r#","key":"authority"}"#));
    for authority in ["Shop.Example.com", "shop.example.com.", "shop.example.com:443"] {
        x.request(&[(":method", "GET"), (":authority", authority)], 500, &[]);
    }
    let r = x.request(&[(":method", "GET"), (":authority", "SHOP.example.com:80")], 200, &[]);
    assert_eq!(r.reply.unwrap().header("x-circuit-breaker"), Some("shop.example.com; state=open"));
}

#[test]
fn in_nginx_the_properties_it_lacks_are_never_read() {
    let x = Exchange::<BreakerFilter>::new(CasRule::NginxStrict, CONFIG).unwrap();
    // As nginx hands them: the server's own name as :authority, the
    // client's in Host.
    let req = [(":method", "GET"), (":path", "/"), (":authority", "localhost:10000"), ("host", "example.com")];
    x.request(&req, 200, &[]);
    let out = x.request(&req, 200, &[]);
    // Host and the record's head; :status (a clean success reads the record
    // no more): no xds.*, no response.flags or response.code_details (nginx
    // logs an error line for each).
    assert_eq!(out.calls.returning_bytes, 3, "{out:?}");
}

/// Issue 30, defect 11: in nginx the authority is the client's Host, not
/// the server's name ngx_wasm_module gives as `:authority`: two hosts, two
/// breakers.
#[test]
fn in_nginx_the_authority_is_the_host_header() {
    let x =
        Exchange::<BreakerFilter>::new(CasRule::NginxStrict, &CONFIG.replace('}', r#","key":"authority"}"#)).unwrap();
    let req = |h: &'static str| [(":method", "GET"), (":path", "/"), (":authority", "localhost:10000"), ("host", h)];
    for _ in 0..5 {
        x.request(&req("bad.example.com"), 500, &[]);
    }
    let bad = x.request(&req("bad.example.com"), 200, &[]);
    assert_eq!(bad.reply.unwrap().header("x-circuit-breaker"), Some("bad.example.com; state=open"));
    let good = x.request(&req("good.example.com"), 200, &[]);
    assert!(good.reply.is_none(), "another host's breaker is its own");
}

#[test]
fn the_outcome_is_recorded_at_the_response_headers_once() {
    use crate::host::Filter;
    let x = breaker(r#"{"consecutive_failures":1,"open_for":"10s"}"#);
    let (mut stream, _) = x.start(&[(":method", "GET"), (":path", "/")]);
    x.host.respond(&[(":status", "503")]);
    x.host.enter_callback();
    x.filter.on_response_headers(&mut stream, &x.host);
    // Open before the first request completes: its answer was enough.
    assert_eq!(x.host.metric("circuit_breaker.backend.opened"), 1);
    assert_eq!(send(&x, 200).status(200), 503);
    // Completion does not count the request a second time.
    x.host.enter_callback();
    x.filter.on_log(&mut stream, &x.host);
    assert_eq!(x.host.metric("circuit_breaker.backend.requests"), 1);
    assert_eq!(x.host.metric("circuit_breaker.backend.failures"), 1);
}

#[test]
fn a_traefik_breaker_answers_as_traefik_and_recovers_gradually() {
    let x = breaker(
        r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","fallbackDuration":"5s","recoveryDuration":"10s"}}"#,
    );
    // The upstream's own 502s are Traefik's network errors.
    assert_eq!(send(&x, 502).status(502), 502);
    let reply = send(&x, 200).reply.expect("tripped at the first check");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "Service Unavailable");
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(reply.header("retry-after"), Some("5"));
    x.host.clock.advance(5 * S);
    let first = send(&x, 200).reply.expect("nothing passes at the start of recovery");
    assert_eq!(first.header("x-circuit-breaker"), Some("backend; state=recovering"));
    assert_eq!(first.header("retry-after"), Some("1"));
    assert_eq!(x.host.metric("circuit_breaker.backend.recovering"), 1);
    assert_eq!(x.host.metric("circuit_breaker.backend.state"), 3);
    // Two requests a second through the recovery: a growing share passes.
    let mut passed = Vec::new();
    for _ in 0..20 {
        x.host.clock.advance(S / 2);
        passed.push(send(&x, 200).reply.is_none());
    }
    let early = passed.iter().take(10).filter(|p| **p).count();
    let late = passed.iter().skip(10).filter(|p| **p).count();
    assert!(early < late && late > 0, "passed {early} in the first half, {late} in the second");
    x.host.clock.advance(S);
    assert_eq!(send(&x, 200).status(200), 200);
    assert_eq!(x.host.metric("circuit_breaker.backend.closed"), 1);
    assert_eq!(x.host.metric("circuit_breaker.backend.state"), 0);
}

#[test]
fn a_traefik_breaker_makes_the_host_calls_of_an_expression_breaker() {
    // Closed, the Traefik state machine reads and writes what the same
    // expression under the filter's own state machine does.
    let calls = |config: &str| {
        let x = breaker(config);
        send(&x, 200);
        send(&x, 200).calls
    };
    let expression = r#"{"expression":"NetworkErrorRatio() > 0.5","min_requests":1}"#;
    let traefik = r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5"}}"#;
    assert_eq!(calls(traefik), calls(expression));
}

/// A host that refuses the local reply: the request goes through (one
/// helper, `host::reply_or_pass`, for every filter).
#[test]
fn a_refused_local_reply_lets_the_request_through() {
    let x = breaker(r#"{"key":"fixed:k","consecutive_failures":1,"open_for":"60s"}"#);
    send(&x, 500);
    x.host.refuse_replies(true);
    let out = send(&x, 200);
    assert_eq!(out.flow, Flow::Continue);
    assert!(out.reply.is_none());
}

/// A fixed key's metrics are defined at configure time, on every worker
/// (nginx's exporter serves the names its worker defined); other keys'
/// at their first request.
#[test]
fn a_fixed_keys_metrics_exist_before_any_request() {
    let x =
        Exchange::<BreakerFilter>::new(CasRule::NginxStrict, r#"{"key":"fixed:backends","consecutive_failures":3}"#)
            .unwrap();
    assert!(x.host.has_metric("circuit_breaker.backends.state"));
    assert!(x.host.has_metric("circuit_breaker.backends.requests"));
    let y = breaker(CONFIG);
    assert!(!y.host.metric_names().iter().any(|n| n.starts_with("circuit_breaker.backend.")));
    send(&y, 200);
    assert!(y.host.has_metric("circuit_breaker.backend.requests"));
}
