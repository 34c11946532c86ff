//! The bundle (all four policies in one module) in a real Envoy
//! (`--concurrency 2`), three demo backends each in its own process: the
//! seed scenarios through it, and bad sections refused at load. Each test
//! runs against both builds, the Wasm module and the native dynamic module
//! (`_wasm` and `_native`), with the same assertions.

use integration_tests::*;
use std::time::Duration;

struct Setup {
    backends: Vec<Option<Backends>>,
    envoy: Envoy,
    build: Build,
}

impl Setup {
    fn new(build: Build, plugin_json: Option<&str>) -> Setup {
        let (backends, addrs) = Backends::one_process_each(&["a", "b", "c"]);
        let yaml = sample_config_for(build, "bundle.yaml", &addrs, plugin_json);
        Setup { backends, envoy: Envoy::start(&yaml, 2), build }
    }

    fn set_all(&self, query: &str) {
        for (b, n) in self.backends.iter().zip(["a", "b", "c"]) {
            if let Some(b) = b {
                b.set(n, query);
            }
        }
    }

    fn attempts(&self) -> u64 {
        self.backends.iter().zip(["a", "b", "c"]).filter_map(|(b, n)| b.as_ref().map(|b| b.requests(n))).sum()
    }

    fn get(&self, headers: &[(&str, &str)]) -> Response {
        Conn::open(self.envoy.addr).and_then(|mut c| c.get("/", headers)).expect("request through envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&self.build.stat_name(name)).unwrap_or(0)
    }
}

integration_tests::both_builds!(
    the_rate_limit_holds_through_the_bundle,
    random_failures_are_retried_through_the_bundle,
    a_backend_killed_under_sessions_fails_no_request,
    the_breaker_opens_on_an_always_failing_upstream,
    bad_sections_are_refused_at_load,
    metrics_reach_prometheus_with_labels,
);

/// The sample's configuration with a rate limit no test traffic reaches, for
/// the scenarios about the other policies (all test traffic comes from one
/// client address).
fn generous() -> String {
    let yaml = std::fs::read_to_string(repo().join("envoy/bundle.yaml")).expect("sample");
    let start = yaml.find("value: |").expect("plugin config") + "value: |".len();
    let end = yaml[start..].find("          - name: envoy.filters.http.router").expect("router") + start;
    yaml[start..end].trim().replace(
        r#""requests": 100, "period": "1s", "burst": 50"#,
        r#""requests": 100000, "period": "1s", "burst": 100000"#,
    )
}

/// `ab -n 1000 -c 10` against 100/s with bursts of 50: the sample's limit
/// holds for the whole process, as the rate-limit module's does.
fn the_rate_limit_holds_through_the_bundle(build: Build) {
    let s = Setup::new(build, None);
    let r = burst(s.envoy.addr, "/", 1000, 10, |_| vec![]);
    let expected = 50.0 + 100.0 * r.elapsed.as_secs_f64();
    let ok = r.count(200) as f64;
    println!("1000 requests, 10 at a time: {ok} admitted in {:?}, expected {expected:.1}", r.elapsed);
    assert!(ok >= expected - 5.0 && ok <= expected + 3.0, "{ok} admitted, expected {expected:.1} (-5/+3)");
    assert_eq!(r.count(200) + r.count(429), 1000);
    assert_eq!(s.stat("rate_limit.per-client.refused"), r.count(429) as u64);
    assert_eq!(
        s.stat("sticky.a.assigned") + s.stat("sticky.b.assigned") + s.stat("sticky.c.assigned"),
        r.count(200) as u64
    );
}

/// Backends failing 20% at random: the retry policy's headers make Envoy
/// retry, within the budget.
fn random_failures_are_retried_through_the_bundle(build: Build) {
    let s = Setup::new(build, Some(&generous()));
    s.set_all("fail=0.2&random=1");
    let r = burst(s.envoy.addr, "/", 600, 4, |i| vec![("x-session-id".into(), format!("s{}", i % 30))]);
    let attempts = s.attempts();
    println!("600 GETs, 20% failing: {} succeeded, {attempts} attempts", r.count(200));

    assert!(r.count(200) >= 590, "only {} of 600 succeeded", r.count(200));
    assert!((650..=900).contains(&attempts), "{attempts} attempts");
    assert!(s.stat("retry.retries") > 0);
}

/// A backend killed mid-run under sessions: its sessions move, the others
/// stay, and no request fails (retry headers cover the ones in flight
/// before the ejection).
fn a_backend_killed_under_sessions_fails_no_request(build: Build) {
    let mut s = Setup::new(build, Some(&generous()));
    let sessions: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let home: Vec<String> = sessions
        .iter()
        .map(|id| s.get(&[("x-session-id", id)]).header("x-sticky-backend").expect("backend").to_string())
        .collect();
    assert!(home.iter().any(|h| h == "b"));
    s.backends[1] = None;
    let mut failed = 0;
    for round in 0..4 {
        for (id, h) in sessions.iter().zip(&home) {
            let r = s.get(&[("x-session-id", id)]);
            if r.status != 200 {
                failed += 1;
                continue;
            }
            // The session's backend, as the filter chose it (Envoy may serve
            // one request elsewhere on a retry after a connect failure).
            let now = r.header("x-sticky-backend").expect("backend");
            if h == "b" {
                // Until b is ejected (3 failures in a row) its sessions are
                // still chosen for it, and served elsewhere by the retry.
                assert!(round == 0 || now != "b", "{id} still on the dead backend");
            } else {
                assert_eq!(now, h, "{id} of healthy backend {h} moved");
            }
        }
    }
    assert_eq!(failed, 0);
    assert_eq!(s.stat("sticky.b.ejected"), 1);
}

/// Every backend failing: retried 503s until the breaker opens, then the
/// breaker's own fast 503s, which reach no backend.
fn the_breaker_opens_on_an_always_failing_upstream(build: Build) {
    let s = Setup::new(build, None);
    s.set_all("fail=1");
    let mut rejected_at = None;
    for i in 0..12 {
        let r = s.get(&[]);
        assert_eq!(r.status, 503);
        if r.header("x-circuit-breaker").is_some() {
            rejected_at.get_or_insert(i);
        }
    }
    assert_eq!(rejected_at, Some(5), "five failures in a row open it");
    let before = s.attempts();
    std::thread::sleep(Duration::from_millis(100));
    let r = s.get(&[]);
    assert_eq!(r.header("x-circuit-breaker"), Some("sticky; state=open"));
    assert_eq!(s.attempts(), before, "rejections reach no backend");
}

fn bad_sections_are_refused_at_load(build: Build) {
    let b = Backends::start(&["a", "b", "c"]);
    let base = sample_config_for(build, "bundle.yaml", &b.addrs(), None);
    let cases = [
        (
            r#"{"rate_limit":{"limits":[{"name":"a","requests":1,"period":"1s","burst":0,"key":"all"}]}}"#,
            "rate_limit.limits[0].burst: must be at least 1",
        ),
        (r#"{"colour":1}"#, "colour: unknown field `colour`"),
        ("{}", ".: turns no policy on"),
    ];
    assert_refused_at_load(&base, "filters/bundle/README.md", &cases);
}

/// Issue 27: the filters' metrics reach /stats/prometheus as one series per
/// metric with labels for their dynamic parts (the sample's stats_tags), and
/// a labelled series counts what the filter's own stat counts.
fn metrics_reach_prometheus_with_labels(build: Build) {
    let s = Setup::new(build, Some(&generous()));
    for i in 0..12 {
        let id = format!("s{i}");
        assert_eq!(s.get(&[("x-session-id", &id)]).status, 200);
    }
    let text = s.envoy.admin_get("/stats/prometheus");
    let prefix = build.prometheus_prefix();
    let value = |series: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(prefix)?.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    };
    assert_eq!(value(r#"rate_limit_allowed{limit="per-client"}"#), Some(s.stat("rate_limit.per-client.allowed")));
    assert_eq!(value(r#"rate_limit_allowed{limit="per-client"}"#), Some(12));
    assert_eq!(value(r#"retry_requests{policy="reads"}"#), Some(s.stat("retry.reads.requests")));
    let assigned: u64 =
        ["a", "b", "c"].iter().filter_map(|b| value(&format!(r#"sticky_assigned{{backend="{b}"}}"#))).sum();
    assert_eq!(assigned, 12, "{text}");
    let breaker = text
        .lines()
        .find(|l| l.strip_prefix(prefix).is_some_and(|l| l.starts_with("circuit_breaker_requests{breaker=")))
        .unwrap_or_default();
    assert!(breaker.ends_with(" 12"), "{breaker}\n{text}");
    // No per-name series is left: the dynamic part is a label only.
    for flat in ["rate_limit_per_client_allowed", "retry_reads_requests", "sticky_a_assigned"] {
        assert!(!text.contains(flat), "{flat} still in /stats/prometheus");
    }
}
