//! The rate-limit filter driven through the recording host: what its README
//! promises, request by request, and the host calls each request makes.

use super::protocol::{code, DescriptorStatus, RateLimitResponse, RateLimitValue};
use super::RateLimitFilter;
use crate::host::{CallReply, Flow};
use crate::store::CasRule;
use crate::testing::{Exchange, HostCalls};
use prost::Message;

const MS: u64 = 1_000_000;

const LOCAL: &str =
    r#"{"limits":[{"name":"per-client","requests":10,"period":"1s","burst":5,"key":"client_ip"}],"headers":"both"}"#;

fn filter(config: &str) -> Exchange<RateLimitFilter> {
    let x = Exchange::<RateLimitFilter>::new(CasRule::Envoy, config).unwrap();
    x.host.set_property("source.address", "10.0.0.1:5555");
    x
}

#[test]
fn burst_then_429_with_retry_after_and_quota_headers() {
    let x = filter(LOCAL);
    let statuses: Vec<u16> = (0..7).map(|_| x.get("/").status(200)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let refused = x.get("/");
    let reply = refused.reply.unwrap();
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert!(reply.body.contains(r#""limit":"per-client""#), "{}", reply.body);
    assert_eq!(x.host.metric("rate_limit.per-client.allowed"), 5);
    assert_eq!(x.host.metric("rate_limit.per-client.refused"), 3);
    // The bucket refills one request every 100 ms.
    x.host.clock.advance(100 * MS);
    let passed = x.get("/");
    assert_eq!(passed.status(200), 200);
    assert_eq!(passed.header("ratelimit").as_deref(), Some(r#""per-client";r=0;t=1"#));
    assert_eq!(passed.header("x-ratelimit-limit").as_deref(), Some("10"));
}

#[test]
fn each_client_address_has_its_own_bucket() {
    let x = filter(LOCAL);
    for _ in 0..5 {
        assert_eq!(x.get("/").status(200), 200);
    }
    assert_eq!(x.get("/").status(200), 429);
    x.host.set_property("source.address", "10.0.0.2:5555");
    assert_eq!(x.get("/").status(200), 200, "another client is not limited by the first");
}

#[test]
fn exact_across_workers_sharing_one_store() {
    let a = filter(LOCAL);
    let b = Exchange::<RateLimitFilter>::on(a.host.worker(), LOCAL).unwrap();
    b.host.set_property("source.address", "10.0.0.1:5555");
    let mut admitted = 0;
    for i in 0..20 {
        let x = if i % 2 == 0 { &a } else { &b };
        if x.get("/").status(200) == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "the burst is shared by every worker");
}

#[test]
fn shadow_mode_counts_but_never_refuses() {
    let x = filter(&LOCAL.replace(r#""headers":"both""#, r#""mode":"shadow""#));
    for _ in 0..8 {
        assert_eq!(x.get("/").status(200), 200);
    }
    assert_eq!(x.host.metric("rate_limit.per-client.shadow_refused"), 3);
    assert_eq!(x.host.metric("rate_limit.per-client.refused"), 0);
}

#[test]
fn refused_configuration_names_the_field() {
    let e = Exchange::<RateLimitFilter>::new(
        CasRule::Envoy,
        r#"{"limits":[{"name":"a","requests":1,"period":"1s","burst":0,"key":"all"}]}"#,
    )
    .err()
    .unwrap();
    assert_eq!(e.to_string(), "invalid plugin configuration: limits[0].burst: must be at least 1");
}

// ---- global limits ----

fn global(extra: &str) -> String {
    format!(
        r#"{{"limits":[{{"name":"fleet","requests":20,"period":"1m","key":"client_ip","scope":"global"}}],
            "global":{{"cluster":"ratelimit","domain":"edge","timeout":"50ms"{extra}}}}}"#
    )
}

fn answer(over: bool) -> Vec<u8> {
    let c = if over { code::OVER_LIMIT } else { code::OK };
    RateLimitResponse {
        overall_code: c,
        statuses: vec![DescriptorStatus {
            code: c,
            current_limit: Some(RateLimitValue { requests_per_unit: 20, unit: 2, name: String::new() }),
            limit_remaining: if over { 0 } else { 7 },
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Starts a request, which must pause for the service; answers it.
fn ask(x: &Exchange<RateLimitFilter>, reply: CallReply) -> crate::testing::Outcome {
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/"), (":authority", "a")]);
    assert_eq!(flow, Flow::Pause, "waits for the service");
    let token = x.host.dispatched().last().unwrap().token;
    let flow = x.reply(&mut stream, token, reply);
    x.finish(&mut stream, flow, Some(&[(":status", "200")]))
}

fn grpc_ok(body_len: usize) -> CallReply {
    CallReply::Grpc { status: 0, size: body_len }
}

#[test]
fn global_limit_asks_the_service_over_grpc() {
    let x = filter(&global(""));
    x.host.answer_with(None, answer(false));
    let out = ask(&x, grpc_ok(1));
    assert_eq!(out.reply, None);
    let call = x.host.dispatched().pop().unwrap();
    assert_eq!(call.protocol, "grpc");
    assert_eq!(call.headers[0].1, "envoy.service.ratelimit.v3.RateLimitService");
    assert_eq!(call.timeout, std::time::Duration::from_millis(50));
    let sent = super::protocol::RateLimitRequest::decode(call.body.as_slice()).unwrap();
    assert_eq!(sent.domain, "edge");
    assert_eq!(x.host.metric("rate_limit.global.calls"), 1);
    assert_eq!(x.host.metric("rate_limit.global.ok"), 1);
    assert_eq!(x.host.metric("rate_limit.fleet.allowed"), 1);
}

#[test]
fn over_limit_answer_is_a_429() {
    let x = filter(&global(""));
    x.host.answer_with(None, answer(true));
    let out = ask(&x, grpc_ok(1));
    assert_eq!(out.reply.map(|r| r.status), Some(429));
    assert_eq!(x.host.metric("rate_limit.global.over_limit"), 1);
    assert_eq!(x.host.metric("rate_limit.fleet.refused"), 1);
}

#[test]
fn failure_mode_allow_lets_the_request_through() {
    let x = filter(&global(""));
    let out = ask(&x, CallReply::Grpc { status: 14, size: 0 });
    assert_eq!(out.reply, None);
    assert_eq!(out.flow, Flow::Continue);
    assert_eq!(x.host.metric("rate_limit.global.errors"), 1);
    assert_eq!(x.host.metric("rate_limit.global.failure_mode_allowed"), 1);
    assert_eq!(x.host.metric("rate_limit.global.timeouts"), 0, "UNAVAILABLE at once is no timeout");
}

#[test]
fn failure_mode_deny_refuses_with_status_on_error() {
    let x = filter(&global(r#","failure_mode":"deny","status_on_error":503"#));
    let out = ask(&x, CallReply::Grpc { status: 14, size: 0 });
    let reply = out.reply.unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("rate_limit_service_unavailable"));
    assert_eq!(x.host.metric("rate_limit.global.failure_mode_denied"), 1);
}

#[test]
fn failure_mode_deny_in_shadow_mode_lets_through() {
    let x = filter(&global(r#","failure_mode":"deny""#).replacen('{', r#"{"mode":"shadow","#, 1));
    assert_eq!(ask(&x, CallReply::Grpc { status: 14, size: 0 }).reply, None);
}

#[test]
fn failure_mode_local_enforces_a_share_of_the_global_limit() {
    // 20 per minute over 4 replicas: each proxy admits 5 while the service is down.
    let x = filter(&global(r#","failure_mode":"local","replicas":4"#));
    let statuses: Vec<u16> = (0..7).map(|_| ask(&x, CallReply::Grpc { status: 14, size: 0 }).status(200)).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(x.host.metric("rate_limit.global.degraded"), 7);
}

#[test]
fn deadline_exceeded_or_a_call_that_took_the_whole_timeout_is_a_timeout() {
    let x = filter(&global(""));
    ask(&x, CallReply::Grpc { status: 4, size: 0 });
    assert_eq!(x.host.metric("rate_limit.global.timeouts"), 1);
    // HTTP: no response at all, after the whole 50 ms.
    let x = filter(&global(r#","protocol":"http""#));
    let (mut stream, _) = x.start(&[(":method", "GET"), (":path", "/")]);
    x.host.clock.advance(50 * MS);
    x.host.answer_with(None, Vec::new());
    let token = x.host.dispatched().last().unwrap().token;
    assert_eq!(x.reply(&mut stream, token, CallReply::Http { size: 0 }), Flow::Continue);
    assert_eq!(x.host.metric("rate_limit.global.timeouts"), 1);
    assert_eq!(x.host.metric("rate_limit.global.errors"), 1);
}

#[test]
fn json_protocol_posts_to_the_path_and_reads_the_answer() {
    let x = filter(&global(r#","protocol":"http","path":"/json""#));
    x.host.answer_with(Some(429), br#"{"overallCode":"OVER_LIMIT"}"#.to_vec());
    let out = ask(&x, CallReply::Http { size: 28 });
    assert_eq!(out.reply.map(|r| r.status), Some(429));
    let call = x.host.dispatched().pop().unwrap();
    assert_eq!(call.protocol, "http");
    assert!(call.headers.contains(&(":path".to_string(), "/json".to_string())));
    assert!(call.headers.contains(&(":method".to_string(), "POST".to_string())));
}

#[test]
fn a_refused_dispatch_follows_the_failure_mode_at_once() {
    let x = filter(&global(r#","failure_mode":"deny""#));
    x.host.refuse_dispatch(true);
    let out = x.request(&[(":method", "GET"), (":path", "/")], 200, &[]);
    assert_eq!(out.flow, Flow::Pause);
    assert_eq!(out.reply.map(|r| r.status), Some(500));
}

#[test]
fn an_answer_for_another_token_is_ignored() {
    let x = filter(&global(""));
    let (mut stream, _) = x.start(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(x.reply(&mut stream, 999, grpc_ok(0)), Flow::Pause, "not resumed by a stranger's answer");
    assert_eq!(x.host.metric("rate_limit.global.errors"), 0);
}

#[test]
fn local_refusal_skips_the_service() {
    let config = global("").replacen(
        r#""limits":["#,
        r#""limits":[{"name":"local","requests":1,"period":"1m","burst":1,"key":"all"},"#,
        1,
    );
    let x = filter(&config);
    x.host.answer_with(None, answer(false));
    ask(&x, grpc_ok(1));
    let out = x.request(&[(":method", "GET"), (":path", "/")], 200, &[]);
    assert_eq!(out.reply.map(|r| r.status), Some(429));
    assert_eq!(x.host.dispatched().len(), 1, "the refused request was not sent to the service");
}

// ---- host calls ----

/// One request through the documented defaults: one limit keyed on the
/// client address, `"headers": "draft"`.
pub(crate) fn calls_per_request() -> HostCalls {
    let x = filter(r#"{"limits":[{"name":"per-client","requests":10,"period":"1s","burst":5,"key":"client_ip"}]}"#);
    x.get("/").calls
}

#[test]
fn host_calls_per_request_are_pinned() {
    // Returning bytes: source.address and the bucket's shared-data read, in
    // the request-headers callback. Returning nothing: the clock, the
    // compare-and-swap write, the `allowed` counter and the two draft
    // headers on the response.
    assert_eq!(calls_per_request(), HostCalls { returning_bytes: 2, returning_nothing: 5, callbacks_reading: 1 });
    // "headers": "both" adds three response headers, nothing else.
    let both = filter(LOCAL).get("/").calls;
    assert_eq!(both, HostCalls { returning_bytes: 2, returning_nothing: 8, callbacks_reading: 1 });
}

#[test]
fn host_calls_of_a_global_limit_are_pinned() {
    let x = filter(&global(""));
    x.host.answer_with(None, answer(false));
    ask(&x, grpc_ok(1)); // the first answer also sets the `failing` gauge to 0
    let out = ask(&x, grpc_ok(1));
    // Returning bytes: source.address (request callback) and the answer's
    // body (call callback). Returning nothing: the `calls` counter, the
    // clock (the call's start), the dispatch, the `ok` and `fleet.allowed`
    // counters and the two draft headers on the response.
    assert_eq!(out.calls, HostCalls { returning_bytes: 2, returning_nothing: 7, callbacks_reading: 2 }, "{out:?}");
}

#[test]
fn the_metrics_table_in_the_readme_matches_the_metrics_defined() {
    use super::{CostMetrics, FilterMetrics, GlobalMetrics, LimitMetrics};
    crate::testing::assert_metrics_table::<RateLimitFilter>(
        include_str!("../../../rate-limit/README.md"),
        &[
            ("rate_limit.<limit>.", LimitMetrics::SUFFIXES),
            ("rate_limit.<limit>.", CostMetrics::SUFFIXES),
            ("rate_limit.", FilterMetrics::SUFFIXES),
            ("rate_limit.global.", GlobalMetrics::SUFFIXES),
        ],
    );
}

#[test]
fn exact_across_workers_under_nginx_strict_cas_too() {
    let a = Exchange::<RateLimitFilter>::new(CasRule::NginxStrict, LOCAL).unwrap();
    let b = Exchange::<RateLimitFilter>::on(a.host.worker(), LOCAL).unwrap();
    for x in [&a, &b] {
        x.host.set_property("source.address", "10.0.0.1"); // nginx: no port
    }
    let admitted = (0..20).filter(|i| [&a, &b][i % 2].get("/").status(200) == 200).count();
    assert_eq!(admitted, 5);
}

#[test]
fn a_path_limit_cannot_be_escaped_by_spelling_the_path_differently() {
    let x =
        filter(r#"{"limits":[{"name":"api","requests":1,"period":"1h","key":"all","match":{"path_prefix":"/api"}}]}"#);
    assert_eq!(x.get("/api/x").status(200), 200);
    for spelling in ["/api/x", "//api/x", "/%61pi/x", "/./api/x", "/x/../api/x", "/api/./x?y=1"] {
        assert_eq!(x.get(spelling).status(200), 429, "{spelling} escaped the limit");
    }
    assert_eq!(x.get("/API/x").status(200), 200, "paths are case-sensitive unless the match says otherwise");
    let ci = filter(
        r#"{"limits":[{"name":"api","requests":1,"period":"1h","key":"all","match":{"path_prefix":"/Api","case_sensitive":false}}]}"#,
    );
    assert_eq!(ci.get("/api/x").status(200), 200);
    assert_eq!(ci.get("/API/x").status(200), 429);
    assert_eq!(ci.get("/%41pi/x").status(200), 429);
}

#[test]
fn a_path_key_counts_every_spelling_of_a_path_in_one_bucket() {
    let x = filter(r#"{"limits":[{"name":"p","requests":1,"period":"1h","key":"path"}]}"#);
    assert_eq!(x.get("/a/b").status(200), 200);
    assert_eq!(x.get("//a/./b").status(200), 429);
    assert_eq!(x.get("/a/c").status(200), 200);
}

#[test]
fn a_wrong_cluster_or_domain_is_loud() {
    // Every call failing (a wrong cluster): the gauge says so until one succeeds.
    let x = filter(&global(""));
    ask(&x, CallReply::Grpc { status: 14, size: 0 });
    assert_eq!(x.host.metric("rate_limit.global.failing"), 1);
    x.host.answer_with(None, answer(false));
    ask(&x, grpc_ok(1));
    assert_eq!(x.host.metric("rate_limit.global.failing"), 0);
    // Answers that limit nothing (a wrong domain: OK without any current_limit).
    let unlimited = RateLimitResponse {
        overall_code: code::OK,
        statuses: vec![DescriptorStatus { code: code::OK, ..Default::default() }],
        ..Default::default()
    };
    x.host.answer_with(None, unlimited.encode_to_vec());
    ask(&x, grpc_ok(1));
    assert_eq!(x.host.metric("rate_limit.global.no_limit"), 1);
}

#[test]
fn ipv6_clients_rotating_inside_their_64_share_one_bucket() {
    let x = filter(LOCAL);
    for i in 0..5 {
        x.host.set_property("source.address", format!("[2001:db8:1:2::{i:x}]:4000"));
        assert_eq!(x.get("/").status(200), 200);
    }
    x.host.set_property("source.address", "[2001:db8:1:2:ffff::9]:4000");
    assert_eq!(x.get("/").status(200), 429, "a sixth address in the same /64 is the same client");
    x.host.set_property("source.address", "[2001:db8:1:3::1]:4000");
    assert_eq!(x.get("/").status(200), 200, "the next /64 is another client");
    // "ipv6_prefix": 128 keys each address.
    let per_address = filter(&LOCAL.replace(r#""headers":"both""#, r#""ipv6_prefix":128"#));
    for i in 0..7 {
        per_address.host.set_property("source.address", format!("[2001:db8:1:2::{i:x}]:4000"));
        assert_eq!(per_address.get("/").status(200), 200);
    }
}

#[test]
fn a_zone_too_small_for_the_table_is_refused_at_configure() {
    // nginx's shm_kv zone evicts silently when full: 16,385 slots in a zone
    // that holds 10,000 would lose buckets, and limits, without a word.
    let mut host = crate::testing::RecordingHost::new(CasRule::NginxStrict);
    host.store = std::rc::Rc::new(crate::store::MemoryStore::evicting(CasRule::NginxStrict, 10_000));
    let e = Exchange::<RateLimitFilter>::on(host, LOCAL).err().unwrap().to_string();
    assert!(
        e.starts_with(
            "shared data is unavailable, cannot create the rate-limit table: \"rate_limit/per-client:0\" was evicted"
        ),
        "{e}"
    );
    let mut big = crate::testing::RecordingHost::new(CasRule::NginxStrict);
    big.store = std::rc::Rc::new(crate::store::MemoryStore::evicting(CasRule::NginxStrict, 20_000));
    assert!(Exchange::<RateLimitFilter>::on(big, LOCAL).is_ok());
}

#[test]
fn a_host_key_gives_each_host_its_own_bucket() {
    let x = filter(r#"{"limits":[{"name":"per-host","requests":1,"period":"1m","burst":1,"key":"host"}]}"#);
    let get = |host: &str| x.request(&[(":method", "GET"), (":path", "/"), (":authority", host)], 200, &[]).status(200);
    assert_eq!(get("a.example"), 200);
    assert_eq!(get("a.example"), 429);
    assert_eq!(get("b.example"), 200, "another host, another bucket");
}

/// Issue 30, defect 11: in nginx the `host` key is the client's Host
/// header (ngx_wasm_module's `:authority` is the server's own name), so two
/// hosts have two buckets.
#[test]
fn in_nginx_the_host_key_is_the_host_header() {
    let json = r#"{"limits":[{"name":"per-host","requests":1,"period":"1h","key":"host"}]}"#;
    let x = Exchange::<RateLimitFilter>::new(CasRule::NginxStrict, json).unwrap();
    x.host.set_property("source.address", "192.0.2.1:3000");
    let req = |h: &'static str| [(":method", "GET"), (":path", "/"), (":authority", "localhost:10000"), ("host", h)];
    assert!(x.request(&req("a.example.com"), 200, &[]).reply.is_none());
    assert_eq!(x.request(&req("a.example.com"), 200, &[]).reply.map(|r| r.status), Some(429));
    assert!(x.request(&req("b.example.com"), 200, &[]).reply.is_none(), "another host shares the bucket");
}
