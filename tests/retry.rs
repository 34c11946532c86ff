//! The retry-headers filter in a real Envoy (`--concurrency 2`) in front of
//! a demo backend whose own request counter shows every attempt.

use integration_tests::*;
use std::time::{Duration, Instant};

integration_tests::both_builds!(
    random_failures_are_retried_to_at_least_99_percent_success,
    post_without_idempotency_key_is_not_retried,
    forged_retry_headers_are_stripped_and_attempts_stay_within_policy,
    trusted_sources_keep_their_own_retry_headers,
    budget_caps_upstream_attempts_under_total_failure,
    retry_after_is_added_to_429_and_503_that_lack_it,
    per_try_timeout_hedging_and_retriable_status_codes_take_effect,
    bad_configs_are_refused_at_load,
    requests_held_past_the_window_do_not_mint_retries,
);

struct Setup {
    backends: Backends,
    envoy: Envoy,
    build: Build,
}

impl Setup {
    fn new(build: Build, plugin_json: Option<&str>) -> Setup {
        let backends = Backends::start(&["a", "b"]);
        let mut yaml = sample_config_for(build, "retry.yaml", &backends.addrs(), None);
        if let Some(json) = plugin_json {
            yaml = with_plugin_config(&yaml, json);
        }
        let envoy = Envoy::start(&yaml, 2);
        Setup { backends, envoy, build }
    }

    fn set_backend(&self, query: &str) {
        self.backends.set("a", query);
    }

    fn backend_requests(&self) -> u64 {
        self.backends.requests("a")
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut h = vec![("content-length", "0")];
        h.extend_from_slice(headers);
        Conn::open(self.envoy.addr).and_then(|mut c| c.request(method, path, &h)).expect("request through envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&self.build.stat_name(&format!("retry.{name}"))).unwrap_or(0)
    }
}

fn random_failures_are_retried_to_at_least_99_percent_success(build: Build) {
    let s = Setup::new(build, None);
    s.set_backend("fail=0.2&random=1");
    let r = burst(s.envoy.addr, "/", 1000, 4, |_| vec![]);
    let ok = r.count(200);
    let attempts = s.backend_requests();
    println!(
        "1000 GETs, backend failing 20% at random: {ok} succeeded, backend saw {attempts} attempts in {:?}",
        r.elapsed
    );
    assert!(ok >= 990, "only {ok} of 1000 succeeded");
    // About 0.25 retries per request are needed (0.2 + 0.04 + ...); the backend's
    // counter shows them, and the filter counted the same retries.
    assert!((1150..=1400).contains(&attempts), "backend saw {attempts} attempts");
    assert_eq!(s.stat("retries"), attempts - 1000);
    assert_eq!(s.stat("reads.requests"), 1000);
}

fn post_without_idempotency_key_is_not_retried(build: Build) {
    let s = Setup::new(build, None);
    s.set_backend("fail=1");
    let r = s.request("POST", "/orders", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(s.backend_requests(), 1, "a POST was retried");
    // With an Idempotency-Key the catch-all policy retries it twice.
    let r = s.request("POST", "/orders", &[("idempotency-key", "order-42")]);
    assert_eq!(r.status, 503);
    assert_eq!(s.backend_requests(), 1 + 3);
    assert_eq!(s.stat("not_idempotent"), 1);
}

fn forged_retry_headers_are_stripped_and_attempts_stay_within_policy(build: Build) {
    let s = Setup::new(build, None);
    s.set_backend("fail=1");
    let forged = [
        ("x-envoy-max-retries", "10"),
        ("x-envoy-retry-on", "retriable-4xx"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
    ];
    assert_eq!(s.request("GET", "/", &forged).status, 503);
    assert_eq!(s.backend_requests(), 4, "1 + the policy's 3 retries, not 10");
    assert_eq!(s.stat("forged_stripped"), 4);
    // The forged overall timeout did not take effect either: Envoy tells the
    // upstream the route's 5 s.
    s.set_backend("fail=0");
    let echo = s.request("GET", "/echo", &forged);
    let seen: serde_json::Value = serde_json::from_slice(&echo.body).expect("echo json");
    assert_eq!(seen["headers"]["x-envoy-expected-rq-timeout-ms"], "5000");
}

fn trusted_sources_keep_their_own_retry_headers(build: Build) {
    let s = Setup::new(
        build,
        Some(
            r#"{"policies":[{"name":"p","max_retries":1}],"trusted_sources":["127.0.0.0/8"],"budget":{"min_per_second":100}}"#,
        ),
    );
    s.set_backend("fail=1");
    s.request("GET", "/", &[("x-envoy-max-retries", "4")]);
    assert_eq!(s.backend_requests(), 5, "a trusted peer's x-envoy-max-retries: 4 was honoured");
    s.request("GET", "/", &[]);
    assert_eq!(s.backend_requests(), 5 + 2, "without its own headers the policy applies");
    assert_eq!(s.stat("forged_stripped"), 0);
}

fn budget_caps_upstream_attempts_under_total_failure(build: Build) {
    // Policy: 3 retries per request, which alone would mean 4x the load.
    let s = Setup::new(build, None);
    s.set_backend("fail=1");
    let r = burst(s.envoy.addr, "/", 500, 4, |_| vec![]);
    let attempts = s.backend_requests();
    let secs = r.elapsed.as_secs_f64();
    println!("500 GETs against a backend failing everything: backend saw {attempts} attempts in {secs:.1}s");
    assert_eq!(r.count(503), 500);
    // At most 1.2 x requests + the 10/s floor over the 10 s window (100), and
    // 10/s more for any time beyond one window.
    let bound = 500.0 * 1.2 + 100.0 + 10.0 * (secs - 10.0).max(0.0) + 2.0;
    assert!((attempts as f64) <= bound, "{attempts} attempts > {bound:.0}");
    assert!(attempts >= 550, "the budget should still allow some retries: {attempts}");
    assert!(s.stat("budget_refused") > 0);
    assert_eq!(s.stat("retries"), attempts - 500);
}

fn retry_after_is_added_to_429_and_503_that_lack_it(build: Build) {
    let s = Setup::new(build, None);
    s.set_backend("fail=1&status=503");
    let r = s.request("POST", "/", &[]);
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    s.set_backend("fail=1&status=429");
    let r = s.request("POST", "/", &[]);
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
    s.set_backend("fail=1&status=500");
    let r = s.request("POST", "/", &[]);
    assert_eq!((r.status, r.header("retry-after")), (500, None));
    assert_eq!(s.stat("retry_after_added"), 2);
}

/// Which retry headers Envoy 1.40 honours when a Wasm filter sets them:
/// per-try timeout, hedging on per-try timeout and retriable status codes
/// all take effect (documented in filters/retry/README.md).
fn per_try_timeout_hedging_and_retriable_status_codes_take_effect(build: Build) {
    let per_try = Setup::new(build, Some(r#"{"policies":[{"name":"p","max_retries":2,"per_try_timeout":"100ms"}]}"#));
    per_try.set_backend("latency=300ms");
    let t = Instant::now();
    let r = per_try.request("GET", "/", &[]);
    assert_eq!(r.status, 504, "each 100 ms try timed out");
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(per_try.backend_requests(), 3);

    let hedged = Setup::new(
        build,
        Some(
            r#"{"policies":[{"name":"p","max_retries":2,"per_try_timeout":"100ms","hedge_on_per_try_timeout":true}]}"#,
        ),
    );
    hedged.set_backend("latency=300ms");
    let r = hedged.request("GET", "/", &[]);
    assert_eq!(r.status, 200, "with hedging the first attempt is not cancelled and answers");
    std::thread::sleep(Duration::from_millis(400));
    assert!(hedged.backend_requests() >= 2, "a hedged attempt was sent");

    let codes = Setup::new(
        build,
        Some(
            r#"{"policies":[{"name":"p","max_retries":2,"retry_on":"retriable-status-codes","retriable_status_codes":[409]}]}"#,
        ),
    );
    codes.set_backend("fail=1&status=409");
    assert_eq!(codes.request("GET", "/", &[]).status, 409);
    assert_eq!(codes.backend_requests(), 3, "409 was retried");
}

fn bad_configs_are_refused_at_load(build: Build) {
    let b = Backends::start(&["a", "b"]);
    let base = sample_config_for(build, "retry.yaml", &b.addrs(), None);
    let cases = [
        (r#"{"policies":[],"colour":"red"}"#, "colour: unknown field `colour`"),
        (
            r#"{"policies":[{"name":"p","retry_on":"5xx,sometimes"}]}"#,
            "policies[0].retry_on: unknown condition \"sometimes\"",
        ),
        (r#"{"policies":[{"name":"p","max_retries":11}]}"#, "policies[0].max_retries: must be at most 10"),
        (
            r#"{"policies":[{"name":"p","hedge_on_per_try_timeout":true}]}"#,
            "policies[0].hedge_on_per_try_timeout: needs per_try_timeout",
        ),
        (
            r#"{"policies":[],"trusted_sources":["10.0.0.0/40"]}"#,
            "trusted_sources[0]: \"10.0.0.0/40\" is not an address or CIDR range",
        ),
        (r#"{"policies":[],"budget":{"window":"1 minute"}}"#, "budget.window: \"1 minute\" has an unknown unit"),
    ];
    assert_refused_at_load(&base, "filters/retry/README.md", &cases);
}

/// Requests held open past the budget's window (slow backend here; a client
/// sending its body slowly does the same) must not give back, into the new
/// window, reservations whose slice has aged out: that minted retries the
/// budget never had (400 where 160 were allowed).
fn requests_held_past_the_window_do_not_mint_retries(build: Build) {
    let s = Setup::new(
        build,
        Some(
            r#"{"policies":[{"name":"reads","match":{"methods":["GET"]},"max_retries":3}],
            "budget":{"ratio":0,"min_per_second":10,"window":"1s"}}"#,
        ),
    );
    s.set_backend("latency=1500ms");
    let addr = s.envoy.addr;
    let held: Vec<_> = (0..4).map(|_| std::thread::spawn(move || http_get(addr, "/", &[]).map(|r| r.status))).collect();
    for h in held {
        assert_eq!(h.join().expect("thread").expect("held request"), 200);
    }
    s.set_backend("latency=0ms&fail=1");
    let before = s.backend_requests();
    let r = burst(s.envoy.addr, "/", 20, 20, |_| vec![]);
    let retries = s.backend_requests() - before - 20;
    println!("after 4 requests held 1.5 s (window 1 s): 20 failing GETs got {retries} retries; the budget allows 10");
    assert_eq!(r.count(503), 20);
    assert!(retries <= 13, "{retries} retries: refunds of aged-out reservations were minted into the new window");
}
