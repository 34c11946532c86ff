//! Limits by cost and tiers, through the recording host: the README's
//! "Limits by cost" and "Tiers", request by request.

use super::RateLimitFilter;
use crate::host::{Filter, Flow};
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

/// A global token limit per `x-api-key` (1000 a minute, the answer's
/// `usage.total_tokens`, 300 by default) whose service answers OK over gRPC:
/// the exchange and that answer.
fn global_tokens() -> (Exchange<RateLimitFilter>, Vec<u8>) {
    use super::protocol::{code, DescriptorStatus, RateLimitResponse};
    use prost::Message;
    let x = filter(
        r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key","scope":"global",
            "cost":{"response_body":"usage.total_tokens","default":300}}],
            "global":{"cluster":"ratelimit","domain":"llm","timeout":"1s"}}"#,
    );
    let ok = RateLimitResponse {
        overall_code: code::OK,
        statuses: vec![DescriptorStatus { code: code::OK, ..Default::default() }],
        ..Default::default()
    }
    .encode_to_vec();
    x.host.answer_with(None, ok.clone());
    (x, ok)
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

// ---- global limits ----

/// A global token limit: the request asks with `hits_addend` 0 (admitted
/// while the key is not over), the end of the body charges the answer's
/// tokens in a second call and waits for it.
#[test]
fn a_global_cost_is_checked_at_zero_and_charged_at_the_end_of_the_body() {
    use super::protocol;
    use crate::host::CallReply;
    use prost::Message;
    let (x, ok) = global_tokens();
    let (mut stream, flow) = x.start(&[(":method", "POST"), (":path", "/v1/chat/completions"), KEY_A]);
    assert_eq!(flow, Flow::Pause, "asks the service");
    let ask = x.host.dispatched().pop().unwrap();
    let sent = protocol::RateLimitRequest::decode(ask.body.as_slice()).unwrap();
    let hits: Vec<Option<u64>> = sent.descriptors.iter().map(|d| d.hits_addend.as_ref().map(|h| h.value)).collect();
    assert_eq!(hits, [Some(0)], "admission checks without counting");
    assert_eq!(x.reply(&mut stream, ask.token, CallReply::Grpc { status: 0, size: ok.len() }), Flow::Continue);

    x.host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    x.filter.on_response_headers(&mut stream, &x.host);
    let body = json_answer(400);
    let (head, tail) = body.as_bytes().split_at(20);
    x.host.body_chunk(head);
    assert_eq!(x.filter.on_response_body(&mut stream, &x.host, head.len(), false), Flow::Continue);
    x.host.body_chunk(tail);
    assert_eq!(x.filter.on_response_body(&mut stream, &x.host, tail.len(), true), Flow::Pause, "held for the charge");
    let charge = x.host.dispatched().pop().unwrap();
    assert_ne!(charge.token, ask.token);
    x.host.body_chunk(b"");
    assert_eq!(x.filter.on_response_body(&mut stream, &x.host, 0, true), Flow::Pause, "later chunks wait too");
    let sent = protocol::RateLimitRequest::decode(charge.body.as_slice()).unwrap();
    assert_eq!(sent.domain, "llm");
    let d = sent.descriptors.first().unwrap();
    assert_eq!(d.hits_addend.as_ref().map(|h| h.value), Some(400), "the answer's tokens");
    let entries: Vec<(&str, &str)> = d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(entries, [("generic_key", "tokens"), ("x-api-key", "tenant-a")], "the request's descriptor");
    assert!(x.filter.settles(&stream, charge.token));
    assert_eq!(x.reply(&mut stream, charge.token, CallReply::Grpc { status: 0, size: 0 }), Flow::Continue);
    x.filter.on_log(&mut stream, &x.host);
    assert_eq!(x.host.dispatched().len(), 2, "nothing more at the log");
    assert_eq!(x.host.metric("rate_limit.global.cost_calls"), 1);
    assert_eq!(x.host.metric("rate_limit.global.cost_errors"), 0);
    assert_eq!(x.host.metric("rate_limit.tokens.cost_charged"), 400);

    // A stream that ends without its body's end: the default, at the log,
    // detached (the stream's own calls end with it).
    let (mut stream, _) = x.start(&[(":method", "POST"), (":path", "/"), KEY_A]);
    let token = x.host.dispatched().pop().unwrap().token;
    x.reply(&mut stream, token, CallReply::Grpc { status: 0, size: ok.len() });
    x.filter.on_log(&mut stream, &x.host);
    let late = protocol::RateLimitRequest::decode(x.host.detached().pop().unwrap().body.as_slice()).unwrap();
    assert_eq!(late.descriptors.first().and_then(|d| d.hits_addend.as_ref()).map(|h| h.value), Some(300));
    assert_eq!(x.host.metric("rate_limit.tokens.cost_defaulted"), 1);
}

/// A weight on a global limit is sent as the descriptor's hits_addend at
/// the request: nothing to settle afterwards.
#[test]
fn a_global_weight_is_the_descriptors_hits_addend() {
    use super::protocol;
    use prost::Message;
    let x = filter(
        r#"{"limits":[{"name":"writes","requests":100,"period":"1m","key":"all","scope":"global","cost":5}],
            "global":{"cluster":"ratelimit","domain":"d"}}"#,
    );
    let (_stream, flow) = x.start(&[(":method", "POST"), (":path", "/")]);
    assert_eq!(flow, Flow::Pause);
    let sent = protocol::RateLimitRequest::decode(x.host.dispatched().pop().unwrap().body.as_slice()).unwrap();
    assert_eq!(sent.descriptors.first().and_then(|d| d.hits_addend.as_ref()).map(|h| h.value), Some(5));
}

/// In nginx a call from the response phases traps the VM: the charge goes
/// detached (sent at the adapter's next tick), and the response is not
/// held. A stream that ends early charges its default detached, in Envoy
/// too.
#[test]
fn in_nginx_and_at_a_streams_early_end_the_charge_goes_detached() {
    use super::protocol::{self, code, RateLimitResponse};
    use crate::host::CallReply;
    let config = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"all","scope":"global",
        "cost":{"response_body":"usage.total_tokens","default":300}}],
        "global":{"cluster":"ratelimit","domain":"llm","protocol":"http"}}"#;
    let ok = RateLimitResponse { overall_code: code::OK, ..Default::default() };
    let ok = protocol::encode_json_response(&ok);
    for rule in [CasRule::NginxStrict, CasRule::Envoy] {
        let x = Exchange::<RateLimitFilter>::new(rule, config).unwrap();
        assert_eq!(x.filter.tick_period(), Some(std::time::Duration::from_millis(50)));
        x.host.answer_with(Some(200), ok.clone());
        let (mut stream, flow) = x.start(&[(":method", "POST"), (":path", "/")]);
        assert_eq!(flow, Flow::Pause);
        let token = x.host.dispatched().pop().unwrap().token;
        assert_eq!(x.reply(&mut stream, token, CallReply::Http { size: ok.len() }), Flow::Continue);
        x.host.respond(&[(":status", "200")]);
        x.filter.on_response_headers(&mut stream, &x.host);
        let body = json_answer(400);
        x.host.body_chunk(body.as_bytes());
        let flow = x.filter.on_response_body(&mut stream, &x.host, body.len(), true);
        if rule == CasRule::NginxStrict {
            assert_eq!(flow, Flow::Continue, "nginx: not held");
            let sent = x.host.detached();
            let charged = protocol::decode_json_request(&sent.first().unwrap().body).unwrap();
            assert_eq!(charged.descriptors[0].hits_addend.as_ref().map(|h| h.value), Some(400));
        } else {
            assert_eq!(flow, Flow::Pause, "Envoy: held until the charge answers");
            assert!(x.host.detached().is_empty());
        }
        // A stream that ends before its body does: the default, detached.
        let (mut stream, _) = x.start(&[(":method", "POST"), (":path", "/")]);
        let token = x.host.dispatched().pop().unwrap().token;
        x.reply(&mut stream, token, CallReply::Http { size: ok.len() });
        x.filter.on_log(&mut stream, &x.host);
        let late = x.host.detached().pop().unwrap();
        let late = protocol::decode_json_request(&late.body).unwrap();
        assert_eq!(late.descriptors[0].hits_addend.as_ref().map(|h| h.value), Some(300), "{rule:?}");
    }
    let plain = Exchange::<RateLimitFilter>::new(CasRule::Envoy, TOKENS).unwrap();
    assert_eq!(plain.filter.tick_period(), None, "no timer unless a global cost needs one");
}

/// A charge the service cannot take is counted each time and said once,
/// until charges go through again: an outage of the service does not write
/// a line per request.
#[test]
fn failing_charges_are_counted_each_and_said_once() {
    use crate::host::CallReply;
    crate::testing::capture_logs();
    let (x, ok) = global_tokens();
    // A stream admitted, then ended early: its default charged detached,
    // which the host refuses while `refuse` holds.
    let early_end = |refuse: bool| {
        let (mut stream, _) = x.start(&[(":method", "POST"), (":path", "/"), KEY_A]);
        let token = x.host.dispatched().pop().unwrap().token;
        x.reply(&mut stream, token, CallReply::Grpc { status: 0, size: ok.len() });
        x.host.refuse_dispatch(refuse);
        x.filter.on_log(&mut stream, &x.host);
        x.host.refuse_dispatch(false);
    };
    let warnings = || {
        crate::testing::logged()
            .iter()
            .filter(|(level, line)| *level == log::Level::Warn && line.starts_with("could not charge a cost"))
            .count()
    };
    for _ in 0..3 {
        early_end(true);
    }
    assert_eq!(x.host.metric("rate_limit.global.cost_errors"), 3, "each failure counted");
    assert_eq!(warnings(), 1, "said once: {:?}", crate::testing::logged());
    early_end(false);
    assert!(crate::testing::logged().iter().any(|(_, l)| l == "costs are charged to the rate limit service again"));
    early_end(true);
    assert_eq!((x.host.metric("rate_limit.global.cost_errors"), warnings()), (4, 2), "said again after a success");
}
