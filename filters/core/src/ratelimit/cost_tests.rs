//! Limits by cost and tiers, through the recording host: the README's
//! "Limits by cost" and "Tiers", request by request.

use super::RateLimitFilter;
use crate::host::Flow;
use crate::store::CasRule;
use crate::testing::{Exchange, Outcome};

const S: u64 = 1_000_000_000;

/// 1000 tokens a minute per API key, the cost from the answer's body.
const TOKENS: &str = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key",
  "cost":{"response_body":"usage.total_tokens","default":300}}]}"#;

fn filter(config: &str) -> Exchange<RateLimitFilter> {
    let x = Exchange::<RateLimitFilter>::new(CasRule::Envoy, config).unwrap();
    x.host.set_property("source.address", "10.0.0.1:5555");
    x
}

fn json_answer(tokens: u64) -> String {
    format!(
        r#"{{"id":"c1","choices":[{{"message":{{"content":"..."}}}}],"usage":{{"prompt_tokens":10,"completion_tokens":{},"total_tokens":{tokens}}}}}"#,
        tokens - 10
    )
}

fn sse_answer(tokens: u64) -> Vec<String> {
    vec![
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n".into(),
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n".into(),
        format!("data: {{\"choices\":[],\"usage\":{{\"total_tokens\":{tokens}}}}}\n\ndata: [DONE]\n\n"),
    ]
}

const KEY_A: (&str, &str) = ("x-api-key", "tenant-a");

/// One request from `headers`; when admitted, the upstream answers with
/// `content_type` and `chunks`.
fn ask(x: &Exchange<RateLimitFilter>, headers: &[(&str, &str)], content_type: &str, chunks: &[&[u8]]) -> Outcome {
    let mut all = vec![(":method", "POST"), (":path", "/v1/chat/completions")];
    all.extend_from_slice(headers);
    let (mut stream, flow) = x.start(&all);
    match flow {
        Flow::Pause => x.finish(&mut stream, flow, None),
        Flow::Continue => x.answer(&mut stream, &[(":status", "200"), ("content-type", content_type)], chunks, true),
    }
}

fn status(o: &Outcome) -> u16 {
    o.reply.as_ref().map_or(200, |r| r.status)
}

#[test]
fn answers_of_400_tokens_admit_three_then_the_debt_is_waited_out() {
    let x = filter(TOKENS);
    let body = json_answer(400);
    for i in 0..3 {
        let o = ask(&x, &[KEY_A], "application/json", &[body.as_bytes()]);
        assert_eq!(status(&o), 200, "answer {i}");
    }
    let refused = ask(&x, &[KEY_A], "application/json", &[body.as_bytes()]);
    let reply = refused.reply.unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("12"), "200 tokens of debt at 60 ms a token");
    assert_eq!(x.host.metric("rate_limit.tokens.cost_charged"), 1200);
    assert_eq!(x.host.metric("rate_limit.tokens.cost_defaulted"), 0);
    // Another tenant has its own bucket.
    assert_eq!(status(&ask(&x, &[("x-api-key", "tenant-b")], "application/json", &[body.as_bytes()])), 200);
    x.host.clock.advance(12 * S - 1);
    assert_eq!(status(&ask(&x, &[KEY_A], "application/json", &[])), 429);
    x.host.clock.advance(1);
    assert_eq!(status(&ask(&x, &[KEY_A], "application/json", &[b"{}"])), 200);
}

#[test]
fn a_streamed_answer_is_charged_its_last_events_usage_at_any_chunking() {
    for split in [1usize, 7, 4096] {
        let x = filter(TOKENS);
        let events = sse_answer(400).concat();
        let chunks: Vec<&[u8]> = events.as_bytes().chunks(split).collect();
        for _ in 0..3 {
            assert_eq!(status(&ask(&x, &[KEY_A], "text/event-stream", &chunks)), 200);
        }
        let refused = ask(&x, &[KEY_A], "text/event-stream", &chunks);
        assert_eq!(refused.reply.unwrap().header("retry-after"), Some("12"), "split {split}");
    }
}

#[test]
fn the_quota_headers_count_tokens_left_before_the_answer() {
    let x = filter(TOKENS);
    let body = json_answer(400);
    let first = ask(&x, &[KEY_A], "application/json", &[body.as_bytes()]);
    assert_eq!(first.header("ratelimit-policy").as_deref(), Some(r#""tokens";q=1000;w=60"#));
    assert_eq!(first.header("ratelimit").as_deref(), Some(r#""tokens";r=1000;t=0"#));
    let second = ask(&x, &[KEY_A], "application/json", &[body.as_bytes()]);
    assert_eq!(second.header("ratelimit").as_deref(), Some(r#""tokens";r=600;t=24"#));
}

#[test]
fn an_answer_without_usage_or_cut_short_charges_the_default() {
    let x = filter(TOKENS);
    // A body that says nothing usable.
    assert_eq!(status(&ask(&x, &[KEY_A], "application/json", &[b"<html>bad gateway</html>"])), 200);
    assert_eq!(x.host.metric("rate_limit.tokens.cost_defaulted"), 1);
    // The client goes away before the body ends (the log callback comes
    // without the end of the body): the default too.
    let (mut stream, flow) = x.start(&[(":method", "POST"), (":path", "/"), KEY_A]);
    assert_eq!(flow, Flow::Continue);
    x.answer(&mut stream, &[(":status", "200"), ("content-type", "text/event-stream")], &[b"data: {\"choi"], false);
    // Before any answer at all.
    let (mut stream, flow) = x.start(&[(":method", "POST"), (":path", "/"), KEY_A]);
    x.finish(&mut stream, flow, None);
    assert_eq!(x.host.metric("rate_limit.tokens.cost_defaulted"), 3);
    assert_eq!(x.host.metric("rate_limit.tokens.cost_charged"), 900);
    // 900 of 1000 used: admitted (not in debt), then 1200 used.
    assert_eq!(status(&ask(&x, &[KEY_A], "application/json", &[json_answer(300).as_bytes()])), 200);
    assert_eq!(ask(&x, &[KEY_A], "application/json", &[]).reply.unwrap().header("retry-after"), Some("12"));
}

#[test]
fn a_response_header_cost_is_charged_at_the_headers() {
    let x = filter(
        r#"{"limits":[{"name":"units","requests":10,"period":"10s","key":"all",
            "cost":{"response_header":"x-units","default":2,"max":8}}]}"#,
    );
    let ask_units = |units: &str| {
        let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/")]);
        if flow == Flow::Pause {
            return x.finish(&mut stream, flow, None);
        }
        x.answer(&mut stream, &[(":status", "200"), ("x-units", units)], &[], true)
    };
    assert_eq!(status(&ask_units("6")), 200);
    assert_eq!(status(&ask_units("100")), 200, "clamped to max 8: 14 used");
    assert_eq!(x.host.metric("rate_limit.units.cost_charged"), 14);
    let refused = ask_units("1");
    assert_eq!(refused.reply.unwrap().header("retry-after"), Some("4"), "4 units of debt at 1 s each");
    x.host.clock.advance(4 * S);
    assert_eq!(status(&ask_units("nonsense")), 200);
    assert_eq!(x.host.metric("rate_limit.units.cost_defaulted"), 1);
}

#[test]
fn a_weight_and_a_request_header_are_charged_whole_at_admission() {
    let x = filter(
        r#"{"limits":[{"name":"writes","requests":10,"period":"10s","key":"all","cost":4,"match":{"methods":["POST"]}},
                      {"name":"reads","requests":10,"period":"10s","key":"all","cost":1,"match":{"methods":["GET"]}}]}"#,
    );
    let post = || x.request(&[(":method", "POST"), (":path", "/")], 200, &[]).status(200);
    assert_eq!([post(), post(), post()], [200, 200, 429], "4 + 4, then 2 left is not 4");
    let get = x.request(&[(":method", "GET"), (":path", "/")], 200, &[]);
    assert_eq!(get.status(200), 200, "reads have their own limit");

    let x = filter(
        r#"{"limits":[{"name":"units","requests":10,"period":"10s","key":"all",
            "cost":{"request_header":"x-cost","max":5,"default":1}}],"trusted_sources":["10.0.0.0/8"]}"#,
    );
    let with_cost = |cost: &str| x.request(&[(":method", "GET"), (":path", "/"), ("x-cost", cost)], 200, &[]);
    assert_eq!(with_cost("3").status(200), 200);
    assert_eq!(with_cost("1000").header("ratelimit").as_deref(), Some(r#""units";r=2;t=8"#), "clamped to max 5");
    assert_eq!(with_cost("3").status(200), 429, "3 needed, 2 left");
    assert_eq!(with_cost("-1").status(200), 200, "not a number: the default 1");
    x.host.set_property("source.address", "192.0.2.7:1000");
    x.host.clock.advance(10 * S);
    assert_eq!(with_cost("0").header("ratelimit").as_deref(), Some(r#""units";r=9;t=1"#), "untrusted: the default");
}

#[test]
fn an_estimate_is_charged_at_admission_and_settled_to_the_actual_cost() {
    let x = filter(
        r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"all",
            "cost":{"response_body":"usage.total_tokens","estimate":500}}]}"#,
    );
    let first = ask(&x, &[], "application/json", &[json_answer(100).as_bytes()]);
    assert_eq!(first.header("ratelimit").as_deref(), Some(r#""tokens";r=500;t=30"#), "the estimate, at admission");
    let second = ask(&x, &[], "application/json", &[json_answer(100).as_bytes()]);
    assert_eq!(second.header("ratelimit").as_deref(), Some(r#""tokens";r=400;t=36"#), "settled at 100");
}

const TIERS: &str = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key",
  "cost":{"response_body":"usage.total_tokens"},
  "tiers":{"header":"x-tenant-tier","default":"free","rates":{"gold":{"requests":5000,"period":"1m"}}}}],
  "trusted_sources":["10.0.0.0/8"]}"#;

#[test]
fn each_tier_has_its_rate_and_names_it_in_the_policy_header() {
    let x = filter(TIERS);
    let body = json_answer(400);
    let gold = [("x-api-key", "g"), ("x-tenant-tier", "gold")];
    let first = ask(&x, &gold, "application/json", &[body.as_bytes()]);
    assert_eq!(first.header("ratelimit-policy").as_deref(), Some(r#""tokens";q=5000;w=60;tier="gold""#));
    for _ in 0..12 {
        assert_eq!(status(&ask(&x, &gold, "application/json", &[body.as_bytes()])), 200);
    }
    let refused = ask(&x, &gold, "application/json", &[body.as_bytes()]);
    assert_eq!(status(&refused), 429, "13 x 400 = 5200 of 5000: in debt");
    let free = [("x-api-key", "f"), ("x-tenant-tier", "bronze")];
    let o = ask(&x, &free, "application/json", &[body.as_bytes()]);
    assert_eq!(
        o.header("ratelimit-policy").as_deref(),
        Some(r#""tokens";q=1000;w=60;tier="free""#),
        "unknown: default"
    );
    for _ in 0..2 {
        assert_eq!(status(&ask(&x, &free, "application/json", &[body.as_bytes()])), 200);
    }
    assert_eq!(status(&ask(&x, &free, "application/json", &[])), 429);
}

#[test]
fn a_tier_header_from_outside_the_trusted_sources_gets_the_default() {
    let x = filter(TIERS);
    x.host.set_property("source.address", "203.0.113.9:4000");
    let forged = [("x-api-key", "f"), ("x-tenant-tier", "gold")];
    let o = ask(&x, &forged, "application/json", &[json_answer(400).as_bytes()]);
    assert_eq!(o.header("ratelimit-policy").as_deref(), Some(r#""tokens";q=1000;w=60;tier="free""#));
}

#[test]
fn bad_cost_and_tier_configurations_name_their_field() {
    let limit =
        |extra: &str| format!(r#"{{"limits":[{{"name":"a","requests":10,"period":"1m","key":"all",{extra}}}]}}"#);
    crate::testing::assert_each_refused(
        super::config::RateLimitConfig::from_json,
        &[
            (limit(r#""cost":11"#), "limits[0].cost: 11 is more than the burst 10: never admitted"),
            (limit(r#""cost":"five""#), "limits[0].cost: must be a whole number"),
            (
                limit(r#""cost":{"response_body":"usage..x"}"#),
                "limits[0].cost.response_body: \"usage..x\" is not a dotted path",
            ),
            (limit(r#""cost":{"response_header":"x","request_header":"y"}"#), "limits[0].cost: needs exactly one of"),
            (
                limit(r#""cost":{"response_header":"x y"}"#),
                "limits[0].cost.response_header: \"x y\" is not a header name",
            ),
            (limit(r#""cost":{"request_header":"x","max":20}"#), "limits[0].cost.max: 20 is more than the burst 10"),
            (
                limit(r#""cost":{"request_header":"x","estimate":2}"#),
                "limits[0].cost.estimate: applies only to a cost known after",
            ),
            (
                limit(r#""cost":{"response_body":"u.t","default":50,"max":20}"#),
                "limits[0].cost.default: 50 is more than max 20",
            ),
            (limit(r#""cost":{"response_body":"u.t","colour":1}"#), "limits[0].cost: unknown field `colour`"),
            (limit(r#""tiers":{"header":"x-tier","rates":{}}"#), "limits[0].tiers.rates: must name at least one tier"),
            (
                limit(r#""tiers":{"header":"x-tier","rates":{"gold":{"requests":0,"period":"1m"}}}"#),
                "limits[0].tiers.rates.gold.requests: must be at least 1",
            ),
            (
                limit(r#""tiers":{"header":"x-tier","rates":{"default":{"requests":5,"period":"1m"}}}"#),
                "limits[0].tiers.rates.default: is the default tier's name",
            ),
            (
                limit(r#""tiers":{"header":"x-tier","rates":{"gold":{"requests":5,"period":"1m"}}},"cost":8"#),
                "limits[0].cost: 8 is more than the burst 5",
            ),
            (
                r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"trusted_sources":["ten"]}"#
                    .to_string(),
                "trusted_sources[0]: \"ten\" is not an address or CIDR range",
            ),
        ],
    );
}
