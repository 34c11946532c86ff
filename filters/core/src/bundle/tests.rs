//! The bundle against the single-policy modules, through the recording host.

use super::BundleFilter;
use crate::breaker::BreakerFilter;
use crate::host::{CallReply, Filter, Flow};
use crate::ratelimit::RateLimitFilter;
use crate::retry::RetryFilter;
use crate::sticky::StickyFilter;
use crate::store::CasRule;
use crate::testing::{Exchange, HostCalls, Outcome};

const RATE_LIMIT: &str =
    r#"{"limits":[{"name":"per-client","requests":10,"period":"1s","burst":5,"key":"client_ip"}],"headers":"both"}"#;
const BREAKER: &str = r#"{"consecutive_failures":3,"open_for":"10s"}"#;
const RETRY: &str = r#"{"policies":[{"name":"reads","match":{"methods":["GET"]},"max_retries":3}]}"#;
const STICKY: &str = r#"{"backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"}],
  "cookie":{"secret":"0123456789abcdef-secret"},"backend_header":"x-sticky-backend","health":{"failures":3}}"#;

fn bundle(sections: &[(&str, &str)]) -> Exchange<BundleFilter> {
    let body: Vec<String> = sections.iter().map(|(n, c)| format!("\"{n}\":{c}")).collect();
    let x = Exchange::<BundleFilter>::new(CasRule::Envoy, &format!("{{{}}}", body.join(","))).unwrap();
    x.host.set_property("source.address", "192.0.2.1:4000");
    x.host.set_property("xds.cluster_name", "backend");
    x
}

fn single<F: Filter>(config: &str) -> Exchange<F> {
    let x = Exchange::<F>::new(CasRule::Envoy, config).unwrap();
    x.host.set_property("source.address", "192.0.2.1:4000");
    x.host.set_property("xds.cluster_name", "backend");
    x
}

/// What a client and an upstream see of one exchange.
fn seen(o: &Outcome) -> (u16, Vec<(String, String)>, Vec<(String, String)>) {
    let response = o.reply.as_ref().map_or_else(|| o.response.clone(), |r| r.headers.clone());
    (o.status(200), response, o.upstream.clone())
}

/// The same requests, answered alike, through the single module and through
/// the bundle with only that policy on.
fn same_as_single<F: Filter>(name: &str, config: &str, requests: &[(u16, &[(&str, &str)])]) {
    let one = single::<F>(config);
    let all = bundle(&[(name, config)]);
    for (i, (status, headers)) in requests.iter().enumerate() {
        let a = one.request(headers, *status, &[]);
        let b = all.request(headers, *status, &[]);
        assert_eq!(seen(&a), seen(&b), "{name}, request {i}");
    }
    for metric in one.host.metric_names().iter().filter(|m| !m.ends_with(".configured")) {
        assert_eq!(one.host.metric(metric), all.host.metric(metric), "{name}: {metric}");
    }
}

const GET: &[(&str, &str)] = &[(":method", "GET"), (":path", "/api/x"), (":authority", "shop")];

#[test]
fn each_policy_in_the_bundle_behaves_as_its_single_module() {
    let gets: Vec<(u16, &[(&str, &str)])> = (0..8).map(|_| (200, GET)).collect();
    same_as_single::<RateLimitFilter>("rate_limit", RATE_LIMIT, &gets);
    let failing: Vec<(u16, &[(&str, &str)])> =
        [500, 500, 200, 500, 500, 500, 200, 200].iter().map(|s| (*s, GET)).collect();
    same_as_single::<BreakerFilter>("circuit_breaker", BREAKER, &failing);
    let forged: &[(&str, &str)] = &[(":method", "GET"), (":path", "/"), ("x-envoy-max-retries", "9")];
    same_as_single::<RetryFilter>("retry", RETRY, &[(503, forged), (200, GET), (429, GET)]);
    let sessions: Vec<(u16, &[(&str, &str)])> = [503, 503, 503, 200, 200].iter().map(|s| (*s, GET)).collect();
    same_as_single::<StickyFilter>("sticky_session", STICKY, &sessions);
}

#[test]
fn a_request_the_rate_limiter_refuses_reaches_no_other_policy() {
    let x = bundle(&[
        ("rate_limit", RATE_LIMIT),
        ("circuit_breaker", BREAKER),
        ("retry", RETRY),
        ("sticky_session", STICKY),
    ]);
    let statuses: Vec<u16> = (0..8).map(|_| x.request(GET, 200, &[]).status(200)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(x.host.metric("retry.reads.requests"), 5, "refused requests deposit nothing");
    assert_eq!(x.host.metric("sticky.a.assigned") + x.host.metric("sticky.b.assigned"), 5);
    assert_eq!(x.host.metric("circuit_breaker.backend.requests"), 5);
}

#[test]
fn a_request_the_breaker_rejects_takes_no_backend_and_no_retries() {
    let x = bundle(&[("circuit_breaker", BREAKER), ("retry", RETRY), ("sticky_session", STICKY)]);
    for _ in 0..3 {
        x.request(GET, 500, &[]);
    }
    let rejected = x.request(GET, 200, &[]);
    assert_eq!(rejected.status(200), 503);
    assert_eq!(rejected.upstream_header("x-sticky-upstream"), None);
    assert_eq!(x.host.metric("retry.reads.requests"), 3);
}

#[test]
fn after_a_global_limit_answers_the_pass_goes_on() {
    let global = r#"{"limits":[{"name":"fleet","requests":20,"period":"1m","key":"client_ip","scope":"global"}],
        "global":{"cluster":"ratelimit","domain":"edge","timeout":"50ms"}}"#;
    let x = bundle(&[("rate_limit", global), ("sticky_session", STICKY), ("retry", RETRY)]);
    let (mut stream, flow) = x.start(GET);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(x.host.upstream_header("x-sticky-upstream"), None, "nothing placed before the answer");
    let token = x.host.dispatched().last().unwrap().token;
    // The service fails; failure_mode allow: the request goes on through sticky and retry.
    let flow = x.reply(&mut stream, token, CallReply::Grpc { status: 14, size: 0 });
    assert_eq!(flow, Flow::Continue);
    let out = x.finish(&mut stream, flow, Some(&[(":status", "200")]));
    assert!(out.upstream_header("x-sticky-upstream").is_some());
    assert_eq!(out.upstream_header("x-envoy-max-retries").as_deref(), Some("3"));
}

#[test]
fn sections_are_refused_with_the_section_in_front_of_the_field() {
    let refused = |json: &str| Exchange::<BundleFilter>::new(CasRule::Envoy, json).err().unwrap().to_string();
    assert_eq!(
        refused(r#"{"rate_limit":{"limits":[{"name":"a","requests":1,"period":"1s","burst":0,"key":"all"}]}}"#),
        "invalid plugin configuration: rate_limit.limits[0].burst: must be at least 1"
    );
    assert_eq!(
        refused(r#"{"circuit_breaker":{}}"#).split(": no trip").next().unwrap(),
        "invalid plugin configuration: circuit_breaker"
    );
    assert!(refused(r#"{"colour":1}"#).contains(
        "colour: unknown field `colour`, expected one of `rate_limit`, `circuit_breaker`, `retry`, `sticky_session`"
    ));
    assert!(refused("{}")
        .ends_with(".: turns no policy on: give at least one of rate_limit, circuit_breaker, retry, sticky_session"));
    assert!(refused(r#"{"retry":[]}"#).starts_with("invalid plugin configuration: retry: must be a JSON object"));
    // A section is checked from its own bytes, not re-serialised: a key
    // given twice is refused as the single module refuses it.
    let twice =
        r#"{"rate_limit":{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"status":429,"status":503}}"#;
    let single = r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"status":429,"status":503}"#;
    let alone = Exchange::<crate::ratelimit::RateLimitFilter>::new(CasRule::Envoy, single).err().unwrap().to_string();
    assert_eq!(alone, "invalid plugin configuration: .: duplicate field `status`");
    assert_eq!(refused(twice), "invalid plugin configuration: rate_limit: duplicate field `status`");
}

/// All four policies on: what one request costs in host calls, against the
/// four single modules' sum.
pub(crate) fn calls_per_request() -> HostCalls {
    let x = bundle(&[
        ("rate_limit", r#"{"limits":[{"name":"per-client","requests":10,"period":"1s","burst":5,"key":"client_ip"}]}"#),
        ("circuit_breaker", r#"{"consecutive_failures":5}"#),
        ("retry", r#"{"policies":[{"name":"default"}]}"#),
        (
            "sticky_session",
            r#"{"backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"}]}"#,
        ),
    ]);
    x.request(GET, 200, &[]); // learns the host's kind and caches the breaker's slot
    x.request(GET, 200, &[]).calls
}

#[test]
fn host_calls_per_request_are_pinned() {
    let all = calls_per_request();
    let singles = [
        crate::ratelimit::filter_tests::calls_per_request(),
        crate::breaker::filter_tests::calls_per_request(),
        crate::retry::filter_tests::calls_per_request(),
        crate::sticky::filter_tests::calls_per_request(),
    ];
    let sum = |f: fn(&HostCalls) -> u32| singles.iter().map(f).sum::<u32>();
    // The four modules chained: 14 calls returning bytes in 7 callbacks that
    // read, 17 returning nothing (and four filters entered per callback).
    assert_eq!((sum(|c| c.returning_bytes), sum(|c| c.callbacks_reading), sum(|c| c.returning_nothing)), (14, 7, 17));
    // The bundle: the request headers, the peer address, :status and the
    // outcome's properties (the attempt count among them) read once, the
    // clock once per callback, in 2 callbacks that read (request, response:
    // every policy settles there; the log callback reads nothing).
    assert_eq!(all, HostCalls { returning_bytes: 9, returning_nothing: 14, callbacks_reading: 2 });
}

#[test]
fn an_answer_from_another_backend_counts_against_the_chosen_one_in_the_bundle() {
    let x = bundle(&[("sticky_session", STICKY)]);
    let first = x.request(GET, 200, &[]);
    let chosen = first.header("x-sticky-backend").unwrap();
    let elsewhere = if chosen == "a" { "127.0.0.1:8082" } else { "127.0.0.1:8081" };
    for _ in 0..3 {
        let (mut stream, flow) = x.start(GET);
        x.host.set_property("upstream.address", elsewhere);
        x.host.set_property_u64("response.code", 200);
        x.finish(&mut stream, flow, Some(&[(":status", "200")]));
    }
    assert_eq!(x.host.metric(&format!("sticky.{chosen}.ejected")), 1);
}

#[test]
fn the_metrics_table_in_the_readme_matches_the_metrics_defined() {
    crate::testing::assert_metrics_table::<BundleFilter>(include_str!("../../../bundle/README.md"), &[]);
}

/// The bundle hands the response body to its rate limiter: a token limit
/// charged from the answers' usage.
#[test]
fn the_bundle_reads_the_body_for_its_rate_limiter() {
    let tokens = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key",
      "cost":{"response_body":"usage.total_tokens"}}]}"#;
    let x = crate::testing::Exchange::<BundleFilter>::new(
        crate::store::CasRule::Envoy,
        &format!(r#"{{"rate_limit":{tokens},"retry":{{"policies":[{{"name":"r"}}]}}}}"#),
    )
    .unwrap();
    let body = br#"{"usage":{"total_tokens":400}}"#;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (mut stream, flow) = x.start(&[(":method", "POST"), (":path", "/"), ("x-api-key", "a")]);
        let o = match flow {
            crate::host::Flow::Pause => x.finish(&mut stream, flow, None),
            crate::host::Flow::Continue => x.answer(&mut stream, &[(":status", "200")], &[body], true),
        };
        statuses.push(o.reply.map_or(200, |r| r.status));
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

/// A token limit with the breaker after it: a request the open breaker
/// answers (503) never reached the backend, and is charged no default.
#[test]
fn a_request_another_policy_answers_is_not_charged_a_default_cost() {
    let tokens = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"all",
      "cost":{"response_body":"usage.total_tokens","default":500}}]}"#;
    let x = crate::testing::Exchange::<BundleFilter>::new(
        crate::store::CasRule::Envoy,
        &format!(r#"{{"rate_limit":{tokens},"circuit_breaker":{{"key":"fixed:llm","consecutive_failures":1,"open_for":"1m"}}}}"#),
    )
    .unwrap();
    // One failure opens the breaker (its answer says no usage: 500 charged).
    x.request(&[(":method", "POST"), (":path", "/")], 503, &[]);
    assert_eq!(x.host.metric("rate_limit.tokens.cost_defaulted"), 1);
    for _ in 0..5 {
        let o = x.request(&[(":method", "POST"), (":path", "/")], 200, &[]);
        assert_eq!(o.reply.map(|r| r.status), Some(503), "the breaker answers");
    }
    assert_eq!(x.host.metric("rate_limit.tokens.cost_defaulted"), 1, "nothing charged for the breaker's answers");
    assert_eq!(x.host.metric("rate_limit.tokens.cost_charged"), 500);
}
