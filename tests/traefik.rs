//! Configurations converted from Traefik middlewares (the Docker labels of
//! `tools/traefik-convert/tests/data/docs.labels`) running in a real Envoy
//! (`--concurrency 2`), behaving as Traefik's documentation describes: the
//! rate limit admits `burst` then `average` per `period`, the breaker trips
//! on its expression and answers with Traefik's fallback, and retries
//! happen only when nothing reached a backend (`attempts` counting the
//! first try).

use integration_tests::*;
use std::net::SocketAddr;
use std::time::Duration;
use traefik_convert::{convert_text, Conversion, Format, Options};

integration_tests::both_builds!(
    the_rate_limit_admits_the_burst_then_the_average,
    the_breaker_trips_on_the_expression_and_answers_as_traefik,
    retries_happen_only_when_nothing_reached_a_backend,
    the_converted_bundle_loads_and_serves,
);

fn converted() -> Conversion {
    let path = repo().join("tools/traefik-convert/tests/data/docs.labels");
    let text = std::fs::read_to_string(path).expect("the labels");
    let opts = Options { secret: Some("0123456789abcdef-secret".into()), ..Options::default() };
    convert_text(&text, Format::Labels, &opts).expect("converts")
}

fn filter_config(c: &Conversion, filter: &str) -> String {
    c.filters.iter().find(|t| t.filter == filter).map(|t| t.config.to_string()).expect("translated")
}

/// An address nobody listens on.
fn dead_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn the_rate_limit_admits_the_burst_then_the_average(build: Build) {
    // average=100, period=1s, burst=50.
    let b = Backends::start(&["a", "b"]);
    let yaml = with_plugin_config(
        &sample_config_for(build, "rate-limit.yaml", &b.addrs(), None),
        &filter_config(&converted(), "rate-limit"),
    );
    let e = Envoy::start(&yaml, 2);
    // 300 requests over about 1.5 s, faster than the average: the first 50
    // pass at once, then about 100 per second.
    let mut conn = Conn::open(e.addr).expect("connect");
    let start = std::time::Instant::now();
    let (mut admitted, mut refused) = (0u32, 0u32);
    for _ in 0..300 {
        match conn.get("/", &[]).expect("request").status {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("status {other}"),
        }
        std::thread::sleep(Duration::from_millis(4));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("300 requests in {secs:.3} s: {admitted} admitted, {refused} refused");
    // burst + 100/s over Envoy's part of the run: the client's clock starts
    // earlier and stops later, so the bounds are loose by a few requests.
    let admitted = f64::from(admitted);
    let most = 50.0 + 100.0 * secs + 3.0;
    let least = (50.0 + 100.0 * secs * 0.8 - 3.0).min(300.0);
    assert!(admitted <= most && admitted >= least, "admitted {admitted}, expected {least:.0} to {most:.0}");
}

fn the_breaker_trips_on_the_expression_and_answers_as_traefik(build: Build) {
    // ResponseCodeRatio(500, 600, 0, 600) > 0.25, Traefik's defaults.
    let b = Backends::start(&["a", "b"]);
    let yaml = with_plugin_config(
        &sample_config_for(build, "circuit-breaker.yaml", &b.addrs(), None),
        &filter_config(&converted(), "circuit-breaker"),
    );
    let e = Envoy::start(&yaml, 2);
    let get = |p: &str| Conn::open(e.addr).and_then(|mut c| c.get(p, &[])).expect("request");
    b.set("b", "fail=1&status=500");
    let first = get("/flaky/x");
    assert_eq!((first.status, first.header("x-backend")), (500, Some("b")), "checked after the first request");
    let r = get("/flaky/x");
    assert_eq!((r.status, r.text().as_str()), (503, "Service Unavailable"), "Traefik's fallback answer");
    assert_eq!(r.header("retry-after"), Some("10"), "fallbackDuration 10s");
    assert_eq!(b.requests("b"), 1, "the tripped breaker kept the rest from the upstream");
    assert_eq!(get("/").status, 200, "the healthy cluster's breaker is its own");
}

/// retry.yaml with its route's retry_policy replaced by the one the
/// converter printed (so that only Traefik's conditions apply).
fn retry_envoy(build: Build, c: &Conversion, backends: &[SocketAddr]) -> Envoy {
    let policy = c.envoy_retry_policies.first().map(|(_, p)| p.to_string()).expect("a retry policy");
    let yaml = with_plugin_config(&sample_config_for(build, "retry.yaml", backends, None), &filter_config(c, "retry"));
    let start = yaml.find("retry_policy:").expect("the sample's route retry_policy");
    let end =
        yaml[start..].find("max_interval: 1s }").map(|i| start + i + "max_interval: 1s }".len()).expect("its end");
    let yaml = format!("{}retry_policy: {policy}{}", &yaml[..start], &yaml[end..]);
    Envoy::start(&yaml, 2)
}

fn retries_happen_only_when_nothing_reached_a_backend(build: Build) {
    // attempts=4: three retries, initialInterval=100ms in the route's backoff.
    let c = converted();
    let dead = retry_envoy(build, &c, &[dead_port()]);
    let r = Conn::open(dead.addr).and_then(|mut conn| conn.get("/", &[])).expect("request");
    assert_eq!(r.status, 503, "nobody listening");
    assert_eq!(dead.stat("cluster.demo.upstream_rq_retry"), Some(3), "4 attempts in all");
    assert_eq!(dead.stat("cluster.demo.upstream_cx_connect_fail"), Some(4));

    let b = Backends::start(&["a"]);
    let live = retry_envoy(build, &c, &b.addrs());
    b.set("a", "fail=1&status=500");
    let r = Conn::open(live.addr).and_then(|mut conn| conn.get("/", &[])).expect("request");
    assert_eq!(r.status, 500);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.requests("a"), 1, "a response, even a 500, is never retried (as in Traefik)");
}

fn the_converted_bundle_loads_and_serves(build: Build) {
    let mut c = converted();
    let bundle = c.bundle().expect("a bundle").to_string();
    let (_backends, addrs) = Backends::one_process_each(&["a", "b", "c"]);
    let e = Envoy::start(&sample_config_for(build, "bundle.yaml", &addrs, Some(&bundle)), 2);
    let r = Conn::open(e.addr).and_then(|mut conn| conn.get("/", &[])).expect("request");
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit-policy").is_some_and(|p| p.contains("docs-ratelimit")), "{:?}", r.headers);
}
