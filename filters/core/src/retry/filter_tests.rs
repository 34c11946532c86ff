//! The retry filter driven through the recording host: its README's steps,
//! the budget's reserve and refund, and the host calls each request makes.

use super::{PolicyMetrics, RetryFilter, RetryMetrics};
use crate::store::CasRule;
use crate::testing::{Exchange, HostCalls, Outcome};

const S: u64 = 1_000_000_000;

const CONFIG: &str = r#"{"policies":[
    {"name":"reads","match":{"path_prefix":"/api"},"max_retries":3,"per_try_timeout":"500ms"},
    {"name":"default","max_retries":2}],
  "trusted_sources":["10.9.0.0/16"],
  "budget":{"ratio":0.2,"min_per_second":1,"window":"10s"}}"#;

fn retry(config: &str) -> Exchange<RetryFilter> {
    let x = Exchange::<RetryFilter>::new(CasRule::Envoy, config).unwrap();
    x.host.set_property("source.address", "192.0.2.7:4000");
    x
}

/// A request with `headers` that Envoy attempted `attempts` times.
fn send(x: &Exchange<RetryFilter>, headers: &[(&str, &str)], attempts: u64, status: u16) -> Outcome {
    let (mut stream, flow) = x.start(headers);
    x.host.set_property_u64("upstream.request_attempt_count", attempts);
    let code = status.to_string();
    x.finish(&mut stream, flow, Some(&[(":status", code.as_str())]))
}

fn get(x: &Exchange<RetryFilter>, path: &str, attempts: u64) -> Outcome {
    send(x, &[(":method", "GET"), (":path", path)], attempts, 200)
}

#[test]
fn forged_retry_headers_are_stripped_and_the_policy_written() {
    let x = retry(CONFIG);
    let out = send(
        &x,
        &[(":method", "GET"), (":path", "/api/x"), ("x-envoy-max-retries", "50"), ("x-envoy-retry-on", "5xx")],
        1,
        200,
    );
    assert_eq!(out.upstream_header("x-envoy-max-retries").as_deref(), Some("3"));
    assert_eq!(out.upstream_header("x-envoy-retry-on").as_deref(), Some("5xx,reset,connect-failure"));
    assert_eq!(out.upstream_header("x-envoy-upstream-rq-per-try-timeout-ms").as_deref(), Some("500"));
    assert_eq!(x.host.metric("retry.forged_stripped"), 2);
    assert_eq!(x.host.metric("retry.reads.requests"), 1);
}

#[test]
fn a_trusted_peer_keeps_its_own_retry_headers() {
    let x = retry(CONFIG);
    x.host.set_property("source.address", "10.9.1.1:4000");
    let out = send(&x, &[(":method", "GET"), (":path", "/api"), ("x-envoy-max-retries", "5")], 1, 200);
    assert_eq!(out.upstream_header("x-envoy-max-retries").as_deref(), Some("5"));
    assert_eq!(x.host.metric("retry.forged_stripped"), 0);
}

#[test]
fn non_idempotent_requests_get_no_retries_without_an_idempotency_key() {
    let x = retry(CONFIG);
    let post = send(&x, &[(":method", "POST"), (":path", "/api")], 1, 200);
    assert_eq!(post.upstream_header("x-envoy-max-retries").as_deref(), Some("0"));
    assert_eq!(x.host.metric("retry.not_idempotent"), 1);
    let keyed = send(&x, &[(":method", "POST"), (":path", "/api"), ("idempotency-key", "k1")], 1, 200);
    assert_eq!(keyed.upstream_header("x-envoy-max-retries").as_deref(), Some("3"));
}

#[test]
fn the_budget_bounds_retries_and_unused_ones_go_back() {
    // min_per_second 1 over 10 s: 10 retries; ratio 0.2 adds one per 5 requests.
    let x = retry(CONFIG);
    // Requests that use every reserved retry drain the budget.
    let grants: Vec<u32> =
        (0..10).map(|_| get(&x, "/api", 4).upstream_header("x-envoy-max-retries").unwrap().parse().unwrap()).collect();
    assert_eq!(grants.iter().sum::<u32>(), 12, "10 + 0.2 x 10 requests: {grants:?}");
    assert_eq!(&grants[..3], &[3, 3, 3], "the first requests get all they want");
    assert_eq!(x.host.metric("retry.retries"), 12);
    let refused = grants.iter().filter(|g| **g == 0).count() as u64;
    assert!(refused >= 3, "{grants:?}");
    assert_eq!(x.host.metric("retry.budget_refused"), refused);
    assert_eq!(get(&x, "/api", 1).upstream_header("x-envoy-max-retries").as_deref(), Some("0"));
}

#[test]
fn unused_reservations_are_refunded() {
    let x = retry(CONFIG);
    // Each request reserves 3 and uses none: the budget never runs dry.
    for _ in 0..50 {
        assert_eq!(get(&x, "/api", 1).upstream_header("x-envoy-max-retries").as_deref(), Some("3"));
    }
    assert_eq!(x.host.metric("retry.retries"), 0);
    assert_eq!(x.host.metric("retry.budget_refused"), 0);
    // Without the attempt count (nginx), everything reserved goes back too.
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/api")]);
    x.finish(&mut stream, flow, Some(&[(":status", "200")]));
    assert_eq!(x.host.metric("retry.retries"), 0);
}

#[test]
fn the_budget_is_shared_by_every_worker() {
    let a = retry(CONFIG);
    let b = Exchange::<RetryFilter>::on(a.host.worker(), CONFIG).unwrap();
    b.host.set_property("source.address", "192.0.2.7:4000");
    let mut granted = 0;
    for i in 0..10 {
        let x = if i % 2 == 0 { &a } else { &b };
        granted += get(x, "/api", 4).upstream_header("x-envoy-max-retries").unwrap().parse::<u32>().unwrap();
    }
    assert_eq!(granted, 12);
}

#[test]
fn retry_after_is_added_to_429_and_503_when_missing() {
    let x = retry(CONFIG);
    let out = send(&x, &[(":method", "GET"), (":path", "/")], 1, 503);
    assert_eq!(out.header("retry-after").as_deref(), Some("1"));
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/")]);
    let kept = x.finish(&mut stream, flow, Some(&[(":status", "429"), ("retry-after", "30")]));
    assert_eq!(kept.response.iter().filter(|(n, _)| n == "retry-after").count(), 1);
    assert_eq!(send(&x, &[(":method", "GET"), (":path", "/")], 1, 500).header("retry-after"), None);
    assert_eq!(x.host.metric("retry.retry_after_added"), 1);
}

#[test]
fn a_request_no_policy_matches_is_only_stripped() {
    let x = retry(r#"{"policies":[{"name":"api","match":{"path_prefix":"/api"}}]}"#);
    let out = send(&x, &[(":method", "GET"), (":path", "/web"), ("x-envoy-retry-on", "5xx")], 1, 200);
    assert_eq!(out.upstream_header("x-envoy-retry-on"), None);
    assert_eq!(out.upstream_header("x-envoy-max-retries"), None, "the route's retry_policy applies");
}

/// A GET under the documented defaults (one catch-all policy), which
/// Envoy answered at the first attempt.
pub(crate) fn calls_per_request() -> HostCalls {
    let x = retry(r#"{"policies":[{"name":"default"}]}"#);
    get(&x, "/", 1); // the first request also learns which host this is
    get(&x, "/", 1).calls
}

#[test]
fn host_calls_per_request_are_pinned() {
    // Request callback: every request header (one call) and the budget's
    // read (bytes); the policy counter, the clock, the budget's
    // compare-and-swap (which also gives back the previous request's unused
    // retries) and the two retry headers (nothing). Response callback:
    // :status and the attempt count (bytes); the refund waits for the next
    // reservation. The log callback reads nothing.
    assert_eq!(calls_per_request(), HostCalls { returning_bytes: 4, returning_nothing: 5, callbacks_reading: 2 });
}

#[test]
fn the_metrics_table_in_the_readme_matches_the_metrics_defined() {
    crate::testing::assert_metrics_table::<RetryFilter>(
        include_str!("../../../retry/README.md"),
        &[("retry.<policy>.", PolicyMetrics::SUFFIXES), ("retry.", RetryMetrics::SUFFIXES)],
    );
}

#[test]
fn in_nginx_no_envoy_header_is_written_and_no_budget_kept() {
    let x = Exchange::<RetryFilter>::new(CasRule::NginxStrict, CONFIG).unwrap();
    x.host.set_property("source.address", "192.0.2.7");
    let out = send(&x, &[(":method", "GET"), (":path", "/api"), ("x-envoy-max-retries", "9")], 1, 503);
    // The forged header is left for the nginx config to drop; nothing is added.
    let envoy: Vec<_> = out.upstream.iter().filter(|(n, _)| n.starts_with("x-envoy-")).collect();
    assert_eq!(envoy, [&("x-envoy-max-retries".to_string(), "9".to_string())]);
    assert_eq!(x.host.metric("retry.forged_stripped"), 1);
    assert_eq!(x.host.metric("retry.reads.requests"), 1);
    assert_eq!(out.header("retry-after").as_deref(), Some("1"));
    assert_eq!(x.host.metric("retry.budget_refused"), 0);
}

#[test]
fn requests_held_open_past_the_window_do_not_mint_retries() {
    // min_per_second 1 over 10 s: 10 retries; ratio 0.2 adds one per 5 requests.
    let x = retry(CONFIG);
    // Four requests reserve what the budget has, then are held 11 s.
    let held: Vec<_> = (0..4).map(|_| x.start(&[(":method", "GET"), (":path", "/api")]).0).collect();
    x.host.clock.advance(11 * S);
    for mut stream in held {
        x.host.set_property_u64("upstream.request_attempt_count", 1);
        x.finish(&mut stream, crate::host::Flow::Continue, Some(&[(":status", "200")]));
    }
    // Failing requests now get what a fresh window allows, no more.
    let granted: u32 = (0..10)
        .map(|_| get(&x, "/api", 4).upstream_header("x-envoy-max-retries").unwrap().parse::<u32>().unwrap())
        .sum();
    assert!(granted <= 12, "{granted} retries: the held requests' refunds were minted into the new window");
}
