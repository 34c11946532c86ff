//! The native adapter driven through its exported hooks by the fake Envoy
//! ([`crate::fake_envoy`]): the ABI calls a request costs, per policy, with
//! the sample configurations users copy (`envoy/*.yaml`), pinned here and
//! in the README's table; refusals; what a request sees. The store is the
//! process's: each test keeps to its own clients and keys (the fuzz
//! corpus, which fails upstreams, replays in a process of its own:
//! tests/fuzz_corpus.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fake_envoy::{sample_config, FakeConfig, FakeEnvoy, Outcome, Upstream, POLICIES};
use std::collections::BTreeMap;

const OK: Upstream<'static> = Upstream { status: 200, address: "127.0.0.1:8081" };

fn get_from(config: &FakeConfig, peer: &str) -> Outcome {
    config.request(peer, &[(":method", "GET"), (":path", "/"), (":authority", "example.com")], OK)
}

/// A steady request's ABI calls (the second: the first finds and caches
/// its table slots) with the sample configuration of `policy`.
fn calls_per_request(policy: &str, peer: &str) -> Outcome {
    let config = FakeEnvoy::configure(policy, &sample_config(policy)).unwrap();
    get_from(&config, peer);
    get_from(&config, peer)
}

fn table_row(calls: &BTreeMap<&'static str, u32>) -> String {
    calls.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(", ")
}

#[test]
fn abi_calls_per_request_are_pinned() {
    let pinned: [(&str, &[(&str, u32)]); 5] = [
        (
            "rate_limit",
            &[
                ("add_header", 5),
                ("get_attribute_string", 1),
                ("get_header", 1),
                ("get_most_specific_route_config", 1),
                ("increment_counter (labelled)", 1),
            ],
        ),
        (
            "circuit_breaker",
            &[
                ("get_attribute_string", 1),
                ("get_header", 1),
                ("get_most_specific_route_config", 1),
                ("increment_counter (labelled)", 1),
            ],
        ),
        (
            "retry",
            &[
                ("get_attribute_int", 1),
                ("get_header", 1),
                ("get_headers", 1),
                ("get_headers_size", 1),
                ("get_most_specific_route_config", 1),
                ("increment_counter (labelled)", 1),
                ("set_header", 2),
            ],
        ),
        (
            "sticky_session",
            &[
                ("add_header", 2),
                ("get_attribute_int", 1),
                ("get_attribute_string", 1),
                ("get_header", 1),
                ("get_headers", 1),
                ("get_headers_size", 1),
                ("get_most_specific_route_config", 1),
                ("increment_counter (labelled)", 1),
                ("set_header", 1),
            ],
        ),
        (
            "bundle",
            &[
                ("add_header", 7),
                ("get_attribute_int", 1),
                ("get_attribute_string", 2),
                ("get_header", 1),
                ("get_headers", 1),
                ("get_headers_size", 1),
                ("get_most_specific_route_config", 1),
                ("increment_counter (labelled)", 4),
                ("set_header", 3),
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (policy, (_, want)) in POLICIES.iter().zip(pinned) {
        let got = calls_per_request(policy, "10.0.0.2:5000");
        let want: BTreeMap<&str, u32> = want.iter().copied().collect();
        if got.calls != want {
            wrong.push(format!("{policy} ({} calls): {}", got.total(), table_row(&got.calls)));
        }
    }
    assert!(wrong.is_empty(), "measured:\n{}", wrong.join("\n"));
}

/// The README's table of ABI calls per request is the pinned one.
#[test]
fn the_readme_table_of_abi_calls_is_the_measured_one() {
    let readme = include_str!("../README.md");
    let rows: Vec<String> = POLICIES
        .iter()
        .map(|policy| {
            let got = calls_per_request(policy, "10.0.0.3:5000");
            format!("| `{policy}` | {} | {} |", got.total(), table_row(&got.calls))
        })
        .collect();
    assert!(rows.iter().all(|row| readme.contains(row.as_str())), "README.md's table should be\n{}", rows.join("\n"));
}

/// A breaker's state gauge is set when the state changes, not on every
/// request (Envoy's gauge is one for the process; each set of a labelled
/// gauge is a lookup by name in Envoy).
#[test]
fn a_gauge_is_set_only_when_its_value_changes() {
    // Keyed on a header of its own: the store is the process's, shared
    // with the other tests.
    let json = r#"{"key":"header:x-gauge-test","consecutive_failures":2,"open_for":"1h"}"#;
    let config = FakeEnvoy::configure("circuit_breaker", json).unwrap();
    let failing = Upstream { status: 500, ..OK };
    let headers = [(":method", "GET"), (":path", "/"), ("x-gauge-test", "only-here")];
    let send = |upstream| config.request("10.0.0.1:5000", &headers, upstream);
    let sets = |o: &Outcome| o.calls.get("set_gauge (labelled)").copied().unwrap_or(0);
    assert_eq!(sets(&send(OK)), 1, "the first request sets the key's gauge (closed)");
    assert_eq!(sets(&send(OK)), 0, "still closed");
    assert_eq!(sets(&send(failing)), 0, "one failure: still closed");
    assert_eq!(sets(&send(failing)), 1, "the second failure opens the breaker");
    let refused = send(OK);
    assert_eq!(refused.sent, Some(503), "open: failing fast");
    assert_eq!(sets(&refused), 0, "still open");
}

/// A configuration the Wasm module refuses is refused here, in one line
/// naming the field.
#[test]
fn a_bad_configuration_is_refused_in_one_line_naming_the_field() {
    let lines =
        FakeEnvoy::configure("rate_limit", r#"{"limits":[{"name":"x","requests":0,"period":"1s","key":"all"}]}"#)
            .unwrap_err();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("requests"), "{}", lines[0]);
    let lines = FakeEnvoy::configure("rate_limits", "{}").unwrap_err();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("filter_name") && lines[0].contains("rate_limit"), "{}", lines[0]);
}

/// A cost read from the response body through the native hooks: each body
/// chunk's slices lent by Envoy, the bucket settled at the end of the body.
#[test]
fn a_token_limit_reads_the_answer_body_through_the_body_hook() {
    use crate::fake_envoy::Answer;
    let config = FakeEnvoy::configure(
        "rate_limit",
        r#"{"limits":[{"name":"native-tokens","requests":1000,"period":"1h","key":"header:x-api-key",
            "cost":{"response_body":"usage.total_tokens"}}]}"#,
    )
    .unwrap();
    let body = br#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":390,"total_tokens":400}}"#;
    let (head, tail) = body.split_at(40);
    let answer = Answer { headers: &[("content-type", "application/json")], body: &[head, tail], ends: true };
    let headers = [(":method", "POST"), (":path", "/v1/chat/completions"), ("x-api-key", "native-token-test")];
    let sent: Vec<Option<u16>> = (0..4).map(|_| config.exchange("10.1.2.3:1000", &headers, OK, &answer).sent).collect();
    assert_eq!(sent, [None, None, None, Some(429)], "400 x 3 takes 1000 into debt: the fourth waits");
    let one = config.exchange("10.1.2.3:1000", &[(":method", "POST"), ("x-api-key", "other")], OK, &answer);
    assert_eq!(one.calls.get("get_body_chunks"), Some(&2), "each chunk read once, lent, not copied");
}
