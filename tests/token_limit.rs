//! Limits by cost in a real Envoy (`--concurrency 2`, connections spread
//! over both workers): an OpenAI-shaped backend (the demo backend's
//! `/v1/...`) answering with the token counts each test chooses, the
//! limiter charging what the answers say, in JSON and in server-sent
//! events, per tenant and per tier.
//!
//! Bounds: the buckets refill at 1000 tokens a minute (one token per 60
//! ms): each `Retry-After` and `RateLimit` bound below allows up to 6 s
//! (about 100 tokens) of a busy machine between requests, and each count
//! of admitted answers holds until 12 s of refill.

use integration_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

integration_tests::both_builds!(
    answers_of_400_tokens_admit_three_and_the_fourth_waits_out_the_debt,
    streamed_answers_are_charged_their_last_events_usage,
    each_tier_has_its_own_rate_and_the_policy_header_names_it,
    a_forged_tier_header_from_outside_the_trusted_sources_gets_the_default,
    aborted_streams_charge_the_default,
    a_ten_megabyte_stream_goes_through_unbuffered_and_is_charged,
);

const TOKENS: &str = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key",
  "cost":{"response_body":"usage.total_tokens","default":300}}],"headers":"draft"}"#;

fn envoy(build: Build, json: &str) -> (Backends, Envoy) {
    let b = Backends::start(&["a", "b"]);
    let yaml = with_exact_balance(&sample_config_for(build, "rate-limit.yaml", &b.addrs(), Some(json)));
    let e = Envoy::start(&yaml, 2);
    (b, e)
}

/// One request on a fresh connection (the connections alternate between
/// the two workers).
fn ask(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Response {
    http_get(addr, &format!("/v1/chat/completions?{query}"), headers).expect("a response")
}

fn stat(build: Build, e: &Envoy, name: &str) -> u64 {
    e.stat(&build.stat_name(&format!("rate_limit.{name}"))).unwrap_or(0)
}

/// Waits for a stat to reach `want` (the log phase runs after the client
/// has its answer), up to 20 s; returns the last value seen.
fn stat_reaches(build: Build, e: &Envoy, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = stat(build, e, name);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn retry_after(r: &Response) -> u64 {
    r.header("retry-after").and_then(|v| v.parse().ok()).expect("a retry-after")
}

/// `r=` of the `RateLimit` header.
fn remaining(r: &Response) -> u64 {
    let v = r.header("ratelimit").expect("a RateLimit header");
    v.split(";r=").nth(1).and_then(|x| x.split(';').next()).and_then(|x| x.parse().ok()).expect("r=")
}

fn answers_of_400_tokens_admit_three_and_the_fourth_waits_out_the_debt(build: Build) {
    let (_b, e) = envoy(build, TOKENS);
    let key = [("x-api-key", "tenant-a")];
    for i in 0..3 {
        let r = ask(e.addr, "tokens=400", &key);
        assert_eq!(r.status, 200, "answer {i}: {}", r.text());
        assert!(r.text().contains("\"total_tokens\":400"), "{}", r.text());
    }
    let refused = ask(e.addr, "tokens=400", &key);
    assert_eq!(refused.status, 429, "the third answer took the bucket into debt");
    // 200 tokens of debt at 60 ms a token: 12 s, less what the seconds
    // between the answers refilled.
    let wait = retry_after(&refused);
    assert!((6..=12).contains(&wait), "Retry-After {wait}, the debt is 12 s");
    assert_eq!(stat(build, &e, "tokens.cost_charged"), 1200);
    assert_eq!(stat(build, &e, "tokens.cost_defaulted"), 0);
    assert_eq!(ask(e.addr, "tokens=400", &[("x-api-key", "tenant-b")]).status, 200, "another tenant's own bucket");
}

fn streamed_answers_are_charged_their_last_events_usage(build: Build) {
    let (_b, e) = envoy(build, TOKENS);
    let key = [("x-api-key", "tenant-s")];
    for i in 0..3 {
        let r = ask(e.addr, "tokens=400&stream=1&events=4&gap=20ms", &key);
        assert_eq!(r.status, 200, "answer {i}");
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    }
    assert_eq!(stat_reaches(build, &e, "tokens.cost_charged", 1200), 1200);
    let refused = ask(e.addr, "tokens=400&stream=1", &key);
    assert_eq!(refused.status, 429);
    assert!((6..=12).contains(&retry_after(&refused)), "Retry-After {}", retry_after(&refused));
    // Anthropic's shape: input and output tokens as two limits.
    let (_b, e) = envoy(
        build,
        r#"{"limits":[
          {"name":"input","requests":1000,"period":"1m","key":"header:x-api-key","cost":{"response_body":"usage.input_tokens"}},
          {"name":"output","requests":1000,"period":"1m","key":"header:x-api-key","cost":{"response_body":"usage.output_tokens"}}]}"#,
    );
    let r = ask(e.addr, "tokens=400&stream=1&shape=anthropic", &key);
    assert_eq!(r.status, 200);
    assert_eq!(stat_reaches(build, &e, "output.cost_charged", 300), 300);
    assert_eq!(stat(build, &e, "input.cost_charged"), 100);
}

const TIERS: &str = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key",
  "cost":{"response_body":"usage.total_tokens"},
  "tiers":{"header":"x-tenant-tier","default":"free","rates":{"gold":{"requests":2000,"period":"1m"}}}}],
  "trusted_sources":["TRUSTED"]}"#;

/// Requests until the first refusal (at most 20): how many were admitted,
/// and the first answer's `RateLimit-Policy`.
fn admitted_until_refused(addr: SocketAddr, headers: &[(&str, &str)]) -> (usize, String) {
    let mut policy = String::new();
    for n in 0..20 {
        let r = ask(addr, "tokens=400", headers);
        if n == 0 {
            policy = r.header("ratelimit-policy").unwrap_or_default().to_string();
        }
        if r.status == 429 {
            return (n, policy);
        }
        assert_eq!(r.status, 200);
    }
    (20, policy)
}

fn each_tier_has_its_own_rate_and_the_policy_header_names_it(build: Build) {
    let (_b, e) = envoy(build, &TIERS.replace("TRUSTED", "127.0.0.1/32"));
    let (gold, policy) = admitted_until_refused(e.addr, &[("x-api-key", "g"), ("x-tenant-tier", "gold")]);
    // 2000 a minute: five answers use 2000 (not yet in debt), the sixth
    // goes into debt, the seventh is refused.
    assert_eq!(gold, 6, "gold tier");
    assert_eq!(policy, r#""tokens";q=2000;w=60;tier="gold""#);
    let (free, policy) = admitted_until_refused(e.addr, &[("x-api-key", "f"), ("x-tenant-tier", "platinum")]);
    assert_eq!(free, 3, "an unknown tier is the default's 1000 a minute");
    assert_eq!(policy, r#""tokens";q=1000;w=60;tier="free""#);
}

fn a_forged_tier_header_from_outside_the_trusted_sources_gets_the_default(build: Build) {
    // The tier is believed only from 10.0.0.0/8 (say, the ingress); the
    // test's client is 127.0.0.1.
    let (_b, e) = envoy(build, &TIERS.replace("TRUSTED", "10.0.0.0/8"));
    let (admitted, policy) = admitted_until_refused(e.addr, &[("x-api-key", "g"), ("x-tenant-tier", "gold")]);
    assert_eq!(admitted, 3, "the forged gold tier gets the default rate");
    assert_eq!(policy, r#""tokens";q=1000;w=60;tier="free""#);
}

/// Sends a request, reads the response head and `bytes` of its body, then
/// goes away.
fn read_head_then_leave(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    status
}

fn aborted_streams_charge_the_default(build: Build) {
    let (_b, e) = envoy(build, TOKENS);
    let key = [("x-api-key", "tenant-x")];
    // The client goes away after the headers, before the usage event.
    let status = read_head_then_leave(e.addr, "/v1/chat/completions?tokens=400&stream=1&events=5&gap=300ms", &key);
    assert_eq!(status, 200);
    assert_eq!(stat_reaches(build, &e, "tokens.cost_defaulted", 1), 1);
    assert_eq!(stat(build, &e, "tokens.cost_charged"), 300, "the default, not the answer's 400");
    // The upstream goes away before the usage event: the client's answer
    // is cut short (its chunked body never ends).
    let cut = http_get(e.addr, "/v1/chat/completions?tokens=400&stream=1&abort=1", &key);
    assert!(cut.is_err(), "the answer was cut short, yet read whole: {:?}", cut.map(|r| r.text()));
    assert_eq!(stat_reaches(build, &e, "tokens.cost_defaulted", 2), 2);
    assert_eq!(stat(build, &e, "tokens.cost_charged"), 600);
    let next = ask(e.addr, "tokens=1", &key);
    let left = remaining(&next);
    assert!((400..=560).contains(&left), "{left} tokens left after two defaults of 300 (and refill)");
}

fn a_ten_megabyte_stream_goes_through_unbuffered_and_is_charged(build: Build) {
    let (_b, e) = envoy(build, TOKENS);
    let key = [("x-api-key", "tenant-big")];
    let r = ask(e.addr, "tokens=400&stream=1&events=200&pad=10000000", &key);
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 10_000_000, "{} bytes", r.body.len());
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(stat_reaches(build, &e, "tokens.cost_charged", 400), 400);
    assert_eq!(stat(build, &e, "tokens.cost_defaulted"), 0);
}
