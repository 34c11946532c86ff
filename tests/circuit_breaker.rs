//! The circuit-breaker filter in a real Envoy (`--concurrency 2`) with a
//! healthy and a flaky demo backend, each its own cluster. The flaky
//! backend's own request counter proves what reached it. Every test runs
//! against both builds (`wasm::` and `native::`).

use integration_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

integration_tests::both_builds!(
    failing_backend_trips_after_the_count_and_every_worker_rejects_without_touching_it,
    after_open_for_a_probe_goes_through_a_failed_probe_reopens_longer_and_recovery_closes,
    slow_backend_trips_the_traefik_latency_expression,
    traefik_network_error_ratio_counts_the_upstreams_own_502s_not_envoys_connect_failures,
    connection_failures_count_as_network_errors,
    sample_config_trips_on_pasted_traefik_expression,
    a_traefik_breaker_falls_back_then_admits_a_growing_share_then_closes,
    breakers_keyed_on_a_header_are_independent,
    bad_configs_are_refused_at_load,
    upstream_timeouts_trip_the_breaker,
    requests_the_client_gave_up_on_neither_count_nor_reset_the_streak,
    a_probe_the_client_gave_up_on_does_not_close_the_breaker,
    traefik_expressions_with_odd_arguments_load_with_a_warning,
);

struct Setup {
    backends: Backends,
    envoy: Envoy,
    build: Build,
}

impl Setup {
    fn new(build: Build, plugin_json: Option<&str>) -> Setup {
        let backends = Backends::start(&["a", "b"]);
        // Connections open at once are spread over both workers (the tests
        // that say every worker rejects rely on it).
        let mut yaml = with_exact_balance(&sample_config_for(build, "circuit-breaker.yaml", &backends.addrs(), None));
        if let Some(json) = plugin_json {
            yaml = with_plugin_config(&yaml, json);
        }
        let envoy = Envoy::start(&yaml, 2);
        Setup { backends, envoy, build }
    }

    /// Changes the flaky backend's behaviour (`fail=1`, `latency=300ms`, ...).
    fn set_flaky(&self, query: &str) {
        self.backends.set("b", query);
    }

    /// Requests the flaky backend has seen.
    fn flaky_requests(&self) -> u64 {
        self.backends.requests("b")
    }

    /// One request on a fresh connection (so successive requests spread over workers).
    fn get(&self, path: &str) -> Response {
        Conn::open(self.envoy.addr).and_then(|mut c| c.get(path, &[])).expect("request through envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&self.build.stat_name(&format!("circuit_breaker.{name}"))).unwrap_or(0)
    }
}

fn is_rejection(r: &Response) -> bool {
    r.header("x-circuit-breaker").is_some() && r.header("x-backend").is_none()
}

const TRIP_AFTER_5: &str = r#"{"key":"cluster","consecutive_failures":5,"open_for":"2s","max_open_for":"8s"}"#;

fn failing_backend_trips_after_the_count_and_every_worker_rejects_without_touching_it(build: Build) {
    let s = Setup::new(build, Some(TRIP_AFTER_5));
    s.set_flaky("fail=1");
    for i in 0..5 {
        let r = s.get("/flaky/x");
        assert_eq!((r.status, r.header("x-backend")), (503, Some("b")), "request {i} should reach the backend");
    }
    let started = Instant::now();
    let r = burst(s.envoy.addr, "/flaky/x", 40, 4, |_| vec![]);
    assert!(r.responses.iter().all(is_rejection), "every request after the trip is answered by the breaker");
    assert!(started.elapsed() < Duration::from_secs(2), "rejections are fast: {:?}", started.elapsed());
    let first = r.responses.first().expect("responses");
    assert_eq!(first.status, 503);
    assert_eq!(first.header("x-circuit-breaker"), Some("flaky; state=open"));
    let retry: u64 = first.header("retry-after").expect("retry-after").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = serde_json::from_slice(&first.body).expect("json body");
    assert_eq!(body["breaker"], "flaky");
    assert_eq!(s.flaky_requests(), 5, "rejected requests reached the backend");
    assert!(s.envoy.worker_connections().iter().filter(|&&c| c > 0).count() >= 2, "both workers served");
    // The healthy cluster has its own breaker, still closed.
    let h = s.get("/");
    assert_eq!((h.status, h.header("x-backend")), (200, Some("a")));
    assert_eq!(s.stat("flaky.opened"), 1);
    assert_eq!(s.stat("flaky.failures"), 5);
    assert_eq!(s.stat("flaky.rejected"), 40);
    assert_eq!(s.stat("flaky.state"), 1);
    assert_eq!(s.stat("healthy.opened"), 0);
}

fn after_open_for_a_probe_goes_through_a_failed_probe_reopens_longer_and_recovery_closes(build: Build) {
    let s = Setup::new(build, Some(TRIP_AFTER_5));
    s.set_flaky("fail=1");
    for _ in 0..5 {
        s.get("/flaky/x");
    }
    assert!(is_rejection(&s.get("/flaky/x")));
    // open_for 2 s: then one probe reaches the (still failing) backend.
    std::thread::sleep(Duration::from_millis(2100));
    let probe = s.get("/flaky/x");
    assert_eq!(probe.header("x-backend"), Some("b"), "the probe reaches the backend");
    assert_eq!(s.flaky_requests(), 6);
    // The failed probe re-opened it for twice as long.
    let r = s.get("/flaky/x");
    assert!(is_rejection(&r));
    assert_eq!(r.header("retry-after"), Some("4"));
    // The backend recovers; after 4 s the next probe succeeds and closes the breaker.
    s.set_flaky("fail=0");
    std::thread::sleep(Duration::from_millis(4100));
    let statuses: Vec<u16> = (0..10).map(|_| s.get("/flaky/x").status).collect();
    assert_eq!(statuses, vec![200; 10]);
    assert_eq!(s.flaky_requests(), 16);
    assert_eq!(s.stat("flaky.opened"), 2);
    assert_eq!(s.stat("flaky.half_opened"), 2);
    assert_eq!(s.stat("flaky.closed"), 1);
    assert_eq!(s.stat("flaky.state"), 0);
}

fn slow_backend_trips_the_traefik_latency_expression(build: Build) {
    let s =
        Setup::new(build, Some(r#"{"key":"cluster","expression":"LatencyAtQuantileMS(50.0) > 100","min_requests":5}"#));
    s.set_flaky("latency=300ms");
    let statuses: Vec<u16> = (0..5).map(|_| s.get("/flaky/slow").status).collect();
    assert_eq!(statuses, vec![200; 5], "slow but successful");
    let r = s.get("/flaky/slow");
    assert!(is_rejection(&r), "the median of 300 ms exceeds 100 ms: open");
    assert_eq!(s.flaky_requests(), 5);
    // The fast healthy cluster is untouched.
    assert_eq!(s.get("/").status, 200);
}

/// The sample with `plugin`, its flaky cluster pointing at a port nobody
/// listens on (every request there a connect failure, answered 503 by Envoy).
fn flaky_on_a_dead_port(build: Build, plugin: &str) -> (Backends, Envoy) {
    let b = Backends::start(&["a", "b"]);
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml =
        with_plugin_config(&sample_config_for(build, "circuit-breaker.yaml", &[b.addr("a"), dead], None), plugin);
    let e = Envoy::start(&yaml, 2);
    (b, e)
}

fn traefik_network_error_ratio_counts_the_upstreams_own_502s_not_envoys_connect_failures(build: Build) {
    // Traefik's NetworkErrorRatio(): responses 502 or 504, whoever sent them.
    let s = Setup::new(build, Some(r#"{"key":"cluster","expression":"NetworkErrorRatio() > 0.5","min_requests":4}"#));
    s.set_flaky("fail=1&status=502");
    for _ in 0..4 {
        assert_eq!(s.get("/flaky/x").status, 502, "the upstream's own 502");
    }
    assert!(is_rejection(&s.get("/flaky/x")), "4 of 4 answered 502: open");

    // Envoy's 503 for a connection nobody accepts is not one of them.
    let (_b, e) =
        flaky_on_a_dead_port(build, r#"{"key":"cluster","expression":"NetworkErrorRatio() > 0.5","min_requests":4}"#);
    for _ in 0..6 {
        let r = Conn::open(e.addr).and_then(|mut c| c.get("/flaky/x", &[])).expect("request");
        assert_eq!(r.status, 503);
        assert!(r.header("x-circuit-breaker").is_none(), "never tripped by Envoy's connect-failure 503s");
    }
}

fn connection_failures_count_as_network_errors(build: Build) {
    let (_b, e) =
        flaky_on_a_dead_port(build, r#"{"key":"cluster","expression":"NetworkFailureRatio() > 0.5","min_requests":4}"#);
    let get = |p: &str| Conn::open(e.addr).and_then(|mut c| c.get(p, &[])).expect("request");
    for _ in 0..4 {
        let r = get("/flaky/x");
        assert_eq!(r.status, 503);
        assert!(r.header("x-circuit-breaker").is_none(), "Envoy's own connect-failure 503");
    }
    assert!(is_rejection(&get("/flaky/x")), "4 of 4 network errors: open");
    assert_eq!(get("/").status, 200);
}

fn sample_config_trips_on_pasted_traefik_expression(build: Build) {
    // envoy/circuit-breaker.yaml unchanged: half the requests fail, never 5
    // in a row, so only ResponseCodeRatio(500, 600, 0, 600) > 0.25 can trip,
    // once the window holds min_requests (10).
    let s = Setup::new(build, None);
    s.set_flaky("fail=0.5");
    for i in 0..10 {
        let r = s.get("/flaky/x");
        assert_eq!(r.header("x-backend"), Some("b"), "request {i} reaches the backend");
    }
    let r = s.get("/flaky/x");
    assert!(is_rejection(&r), "5 of 10 failed: open");
    assert_eq!(r.header("retry-after"), Some("10"));
    assert_eq!(s.flaky_requests(), 10);
    let prometheus = s.envoy.admin_get("/stats/prometheus");
    // The sample's stats_tags (natively, the family's label): the breaker's
    // key is a label.
    let line = |l: &str| prometheus.lines().any(|x| x == format!("{}{l}", build.prometheus_prefix()));
    assert!(line(r#"circuit_breaker_opened{breaker="flaky"} 1"#), "prometheus:\n{prometheus}");
    assert!(line(r#"circuit_breaker_state{breaker="flaky"} 1"#));
}

fn a_traefik_breaker_falls_back_then_admits_a_growing_share_then_closes(build: Build) {
    let s = Setup::new(
        build,
        Some(
            r#"{"key":"cluster","traefik":{"expression":"ResponseCodeRatio(500, 600, 0, 600) > 0.5","fallbackDuration":"2s","recoveryDuration":"6s"}}"#,
        ),
    );
    s.set_flaky("fail=1");
    let r = s.get("/flaky/x");
    assert_eq!((r.status, r.header("x-backend")), (503, Some("b")), "checked after the first request: 1 of 1 failed");
    let r = s.get("/flaky/x");
    assert!(is_rejection(&r), "tripped");
    assert_eq!((r.status, r.text().as_str()), (503, "Service Unavailable"), "Traefik's fallback answer");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    s.set_flaky("fail=0");
    std::thread::sleep(Duration::from_millis(2300));
    // The first request after fallbackDuration starts the recovery: it is
    // turned away (nothing passes at its very start).
    let first = s.get("/flaky/x");
    let start = Instant::now();
    assert_eq!(first.header("x-circuit-breaker"), Some("flaky; state=recovering"));
    let before = s.flaky_requests();
    let mut passed = [0u32; 3];
    let mut sent = [0u32; 3];
    while start.elapsed() < Duration::from_millis(5700) {
        let third = (start.elapsed().as_millis() / 2000).min(2) as usize;
        let r = s.get("/flaky/x");
        sent[third] += 1;
        if r.status == 200 && !is_rejection(&r) {
            passed[third] += 1;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(passed[0] < passed[2], "a growing share passes: {passed:?} of {sent:?} per 2 s");
    assert!(passed[2] < sent[2], "never everything during recovery: {passed:?} of {sent:?}");
    assert_eq!(
        s.flaky_requests() - before,
        u64::from(passed.iter().sum::<u32>()),
        "turned-away requests never reach it"
    );
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(start.elapsed()));
    for _ in 0..4 {
        assert_eq!(s.get("/flaky/x").status, 200, "closed after recoveryDuration");
    }
    assert_eq!(s.stat("flaky.recovering"), 1);
    assert_eq!(s.stat("flaky.closed"), 1);
}

fn breakers_keyed_on_a_header_are_independent(build: Build) {
    let s = Setup::new(build, Some(r#"{"key":"header:x-tenant","consecutive_failures":3,"open_for":"1m"}"#));
    s.set_flaky("fail=1");
    let get = |tenant: &str| {
        Conn::open(s.envoy.addr).and_then(|mut c| c.get("/flaky/x", &[("x-tenant", tenant)])).expect("request")
    };
    for _ in 0..3 {
        get("acme");
    }
    let r = get("acme");
    assert!(is_rejection(&r));
    assert_eq!(r.header("x-circuit-breaker"), Some("acme; state=open"));
    assert_eq!(get("globex").header("x-backend"), Some("b"), "another tenant's breaker is closed");
}

fn bad_configs_are_refused_at_load(build: Build) {
    let b = Backends::start(&["a", "b"]);
    let base = sample_config_for(build, "circuit-breaker.yaml", &b.addrs(), None);
    let deep = format!(r#"{{"expression":"{}NetworkErrorRatio() > 0.5{}"}}"#, "(".repeat(20_000), ")".repeat(20_000));
    let wide = format!(r#"{{"expression":"{}"}}"#, vec!["1 > 0"; 65].join("||"));
    let cases: [(&str, &str); 14] = [
        (r#"{"consecutive_failures":5,"colour":"red"}"#, "colour: unknown field `colour`"),
        (r#"{"key":"cluster"}"#, ".: no trip condition"),
        (r#"{"failure_ratio":1.5}"#, "failure_ratio: must be a ratio above 0 and at most 1"),
        (r#"{"consecutive_failures":5,"open_for":"10 sec"}"#, "open_for: \"10 sec\" has an unknown unit"),
        (
            r#"{"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) >"}"#,
            "expression: at column 73: expected a number or a function, found the end",
        ),
        (
            r#"{"expression":"NetworkErrorRate() > 0.5"}"#,
            "expression: at column 1: unknown function `NetworkErrorRate`",
        ),
        (r#"{"consecutive_failures":5,"key":"upstream"}"#, "key: unknown key \"upstream\""),
        (
            r#"{"expression":"LatencyAtQuantileMS(50.0) > NetworkErrorRatio()"}"#,
            "expression: at column 1: LatencyAtQuantileMS is compared with a number, as in Traefik",
        ),
        (r#"{"expression":"NetworkErrorRatio() > 0x1"}"#, "expression: at column 23: `0x1` is not a number"),
        // 20,000 nested parentheses overflowed the VM's stack: refused, but no line.
        (&deep, "expression: at column 1025: longer than 1024 characters"),
        (&wide, "expression: at column 449: more than 64 comparisons"),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5"},"open_for":"5s"}"#,
            "open_for: cannot be combined with traefik",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","checkPeriod":0}}"#,
            "traefik.checkPeriod: must be longer than zero",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","fallbackDuration":"10 sec"}}"#,
            "traefik.fallbackDuration: \"10 sec\" is not a duration",
        ),
    ];
    assert_refused_at_load(&base, "filters/circuit-breaker/README.md", &cases);
}

fn upstream_timeouts_trip_the_breaker(build: Build) {
    // The sample's flaky route times out after 2 s; a hanging backend turns
    // every request into Envoy's own 504 (upstream_response_timeout).
    let s = Setup::new(build, Some(r#"{"key":"cluster","consecutive_failures":2,"failure_statuses":[500]}"#));
    s.set_flaky("hang=1");
    for _ in 0..2 {
        let r = s.get("/flaky/x");
        assert_eq!(r.status, 504);
        assert!(r.header("x-circuit-breaker").is_none());
    }
    // 504 is not in failure_statuses: only the network classification counted them.
    assert!(is_rejection(&s.get("/flaky/x")), "two timeouts in a row: open");
}

const TRIP_AFTER_3: &str = r#"{"key":"cluster","consecutive_failures":3,"open_for":"1s","max_open_for":"8s"}"#;

/// Clients that give up on a hung upstream (Envoy: no code, flag DC,
/// `downstream_remote_disconnect`) say nothing about it: they neither count
/// nor reset the failure streak.
fn requests_the_client_gave_up_on_neither_count_nor_reset_the_streak(build: Build) {
    let s = Setup::new(build, Some(TRIP_AFTER_3));
    s.set_flaky("fail=1");
    for _ in 0..2 {
        assert_eq!(s.get("/flaky/x").header("x-backend"), Some("b"));
    }
    s.set_flaky("fail=0&hang=1");
    for _ in 0..4 {
        abandon(s.envoy.addr, "/flaky/x", &[], Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500)); // Envoy completes the abandoned streams
    s.set_flaky("hang=0&fail=1");
    assert_eq!(s.get("/flaky/x").header("x-backend"), Some("b"), "the third failure reaches the backend");
    let r = s.get("/flaky/x");
    assert!(is_rejection(&r), "three failures in a row, the abandoned requests aside, tripped it: {}", r.status);
    assert_eq!(s.stat("flaky.requests"), 3, "abandoned requests were not recorded");
}

/// A half-open probe whose client gives up gives its place back and closes
/// nothing: the breaker must not reopen the flood gates on a hung upstream.
fn a_probe_the_client_gave_up_on_does_not_close_the_breaker(build: Build) {
    let s = Setup::new(build, Some(TRIP_AFTER_3));
    s.set_flaky("fail=1");
    for _ in 0..3 {
        s.get("/flaky/x");
    }
    assert!(is_rejection(&s.get("/flaky/x")));
    std::thread::sleep(Duration::from_millis(1300)); // open_for
    s.set_flaky("fail=0&hang=1");
    abandon(s.envoy.addr, "/flaky/x", &[], Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.stat("flaky.closed"), 0, "the abandoned probe closed the breaker");
    assert_eq!(s.stat("flaky.state"), 2, "still half-open");
    // The place was given back: the next request probes, and its success closes.
    s.set_flaky("hang=0");
    let r = s.get("/flaky/x");
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")));
    assert_eq!(s.stat("flaky.closed"), 1);
}

/// Issue 30, defect 13: expressions Traefik runs although they look like
/// mistakes load, with Traefik's meaning and one warning line each: a
/// quantile above 100 is 100, an empty ResponseCodeRatio range is 0.
fn traefik_expressions_with_odd_arguments_load_with_a_warning(build: Build) {
    let json = r#"{"key":"cluster","traefik":{"expression":"LatencyAtQuantileMS(150.0) > 200 || ResponseCodeRatio(600, 500, 0, 600) > 0.5"}}"#;
    let s = Setup::new(build, Some(json));
    s.set_flaky("fail=1");
    // The empty range is 0: 5xx answers never trip it; only latency would.
    for _ in 0..20 {
        assert!(!is_rejection(&s.get("/flaky")), "tripped on an always-0 ratio");
    }
    let log = s.envoy.log();
    assert!(log.contains("a quantile above 100 is read as 100, as Traefik does"), "{log}");
    assert!(log.contains("the ratio is always 0, as in Traefik"), "{log}");
}
