//! The rate-limit filter in a real Envoy (`--concurrency 2`), real demo
//! backends and real traffic on 127.0.0.1.
//!
//! Timing bounds are derived from the algorithm, not tuned: the limiter
//! admits `burst + rate * t` requests in `t` seconds of continuous traffic,
//! and the client's measured window contains Envoy's, so the count must lie
//! within a few requests of `burst + rate * elapsed` however slow the machine
//! is. A per-worker limiter would admit about twice as many.

//!
//! Every test but the Wasm-only ones (a VM trap reloaded, Envoy's VM
//! counters, the million-address flood) runs against both builds:
//! `wasm::<test>` and `native::<test>`, the same assertions.

use integration_tests::*;
use std::time::{Duration, Instant};

integration_tests::both_builds!(
    burst_is_limited_for_the_whole_process_not_per_worker,
    refusal_carries_429_retry_after_headers_and_json_body,
    configured_status_and_header_style_none,
    shadow_mode_refuses_nothing_but_counts_and_reports,
    separate_keys_have_separate_budgets,
    multiple_limits_and_match_rules,
    trusted_hops_are_honoured_and_spoofing_is_not,
    without_trusted_hops_forwarded_for_is_ignored,
    bucket_refills_at_the_configured_rate,
    sample_config_limits_one_client_as_documented,
    bad_configs_are_refused_at_load,
    a_path_limit_cannot_be_escaped_by_spelling_the_path_differently,
);

fn sample(build: Build, b: &Backends) -> String {
    sample_config_for(build, "rate-limit.yaml", &b.addrs(), None)
}

fn envoy_with(build: Build, plugin_json: &str) -> (Backends, Envoy) {
    let b = Backends::start(&["a", "b"]);
    let yaml = with_plugin_config(&sample(build, &b), plugin_json);
    let e = Envoy::start(&yaml, 2);
    (b, e)
}

fn stat(build: Build, e: &Envoy, name: &str) -> u64 {
    e.stat(&build.stat_name(&format!("rate_limit.{name}"))).unwrap_or_else(|| panic!("no stat {name}"))
}

fn burst_is_limited_for_the_whole_process_not_per_worker(build: Build) {
    let b = Backends::start(&["a", "b"]);
    let json = r#"{"limits":[{"name":"main","requests":100,"period":"1s","burst":50,"key":"client_ip"}]}"#;
    // The burst's 10 connections, opened at once, on both workers.
    let e = Envoy::start(&with_exact_balance(&with_plugin_config(&sample(build, &b), json)), 2);
    let r = burst(e.addr, "/", 1000, 10, |_| vec![]);
    let allowed = r.count(200) as f64;
    let secs = r.elapsed.as_secs_f64();
    let expected = 50.0 + 100.0 * secs;
    // Tolerance -5/+3: at most one request per worker can race the first write
    // of a slot (Envoy has no insert-if-absent), rounding of the 10 ms interval
    // at both ends, and the few ms between the client's clock and Envoy's.
    assert!(
        allowed >= expected - 5.0 && allowed <= expected + 3.0,
        "{allowed} admitted in {secs:.3}s, expected 50 + 100/s = {expected:.1} (-5/+3)"
    );
    assert_eq!(r.count(200) + r.count(429), 1000, "only 200 and 429 expected");
    // Both workers served traffic, so a per-worker bucket would have let
    // through about 2 x 50 + 2 x 100/s: far outside the bound above.
    let per_worker = e.worker_connections();
    assert!(per_worker.iter().filter(|&&c| c > 0).count() >= 2, "connections per worker: {per_worker:?}");
    assert_eq!(stat(build, &e, "main.allowed"), r.count(200) as u64);
    assert_eq!(stat(build, &e, "main.refused"), r.count(429) as u64);
    let prometheus = e.admin_get("/stats/prometheus");
    for (name, value) in [("allowed", r.count(200)), ("refused", r.count(429)), ("shadow_refused", 0)] {
        // The sample's stats_tags (natively, the family's label): the limit is a label.
        let line = format!("{}rate_limit_{name}{{limit=\"main\"}} {value}", build.prometheus_prefix());
        assert!(prometheus.lines().any(|l| l == line), "/stats/prometheus lacks {line}");
    }
}

fn refusal_carries_429_retry_after_headers_and_json_body(build: Build) {
    let (_b, e) = envoy_with(
        build,
        r#"{"limits":[{"name":"tight","requests":2,"period":"1m","key":"client_ip"}],"headers":"both"}"#,
    );
    let mut c = Conn::open(e.addr).unwrap();
    let first = c.get("/", &[]).unwrap();
    assert_eq!(first.status, 200);
    assert!(first.header("x-backend").is_some(), "proxied to a backend");
    assert_eq!(first.header("ratelimit-policy"), Some("\"tight\";q=2;w=60"));
    assert_eq!(first.header("ratelimit"), Some("\"tight\";r=1;t=30"));
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(c.get("/", &[]).unwrap().status, 200);
    let refused = c.get("/", &[]).unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused.header("x-backend").is_none(), "refusal must not reach a backend");
    let retry: u64 = refused.header("retry-after").expect("retry-after").parse().unwrap();
    assert!((29..=30).contains(&retry), "retry-after {retry}, one request per 30 s");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("ratelimit"), Some(format!("\"tight\";r=0;t={}", 60).as_str()));
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["limit"], "tight");
    assert_eq!(body["retry_after"].as_u64(), Some(retry));
}

fn configured_status_and_header_style_none(build: Build) {
    let (_b, e) = envoy_with(
        build,
        r#"{"limits":[{"name":"g","requests":1,"period":"1h","key":"global"}],"status":503,"headers":"none"}"#,
    );
    let mut c = Conn::open(e.addr).unwrap();
    let ok = c.get("/", &[]).unwrap();
    assert_eq!(ok.status, 200);
    assert!(ok.headers.iter().all(|(n, _)| !n.contains("ratelimit")), "{:?}", ok.headers);
    let refused = c.get("/", &[]).unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("3600"));
}

fn shadow_mode_refuses_nothing_but_counts_and_reports(build: Build) {
    let (_b, e) = envoy_with(
        build,
        r#"{"limits":[{"name":"sh","requests":10,"period":"1m","key":"global"}],"mode":"shadow","headers":"x-ratelimit"}"#,
    );
    let r = burst(e.addr, "/", 200, 4, |_| vec![]);
    assert_eq!(r.count(200), 200, "shadow mode must not refuse");
    assert!(r.responses.iter().all(|r| r.header("x-ratelimit-limit") == Some("10")));
    let zero_left = r.responses.iter().filter(|r| r.header("x-ratelimit-remaining") == Some("0")).count();
    assert!(zero_left >= 189, "{zero_left} responses said 0 remaining");
    assert_eq!(stat(build, &e, "sh.shadow_refused"), 190);
    assert_eq!(stat(build, &e, "sh.allowed"), 10);
    assert_eq!(stat(build, &e, "sh.refused"), 0);
}

fn separate_keys_have_separate_budgets(build: Build) {
    let (_b, e) =
        envoy_with(build, r#"{"limits":[{"name":"per-key","requests":5,"period":"1h","key":"header:x-api-key"}]}"#);
    let r = burst(e.addr, "/", 60, 6, |i| vec![("x-api-key".into(), format!("key-{}", i % 3))]);
    // 3 keys x 5 each.
    assert_eq!(r.count(200), 15);
    // A fourth key still has its whole budget; no header at all is one more key.
    let fresh = burst(e.addr, "/", 10, 2, |_| vec![("x-api-key".into(), "key-new".into())]);
    assert_eq!(fresh.count(200), 5);
    let none = burst(e.addr, "/", 10, 2, |_| vec![]);
    assert_eq!(none.count(200), 5);
}

fn multiple_limits_and_match_rules(build: Build) {
    let (_b, e) = envoy_with(
        build,
        r#"{"limits":[
            {"name":"all","requests":20,"period":"1h","key":"global"},
            {"name":"writes","requests":3,"period":"1h","key":"global","match":{"methods":["POST"]}},
            {"name":"api","requests":5,"period":"1h","key":"global","match":{"path_prefix":"/api","headers":[{"name":"x-tier","equals":"free"}]}}]}"#,
    );
    let mut c = Conn::open(e.addr).unwrap();
    let posts = (0..6).filter(|_| c.request("POST", "/x", &[("content-length", "0")]).unwrap().status == 200).count();
    assert_eq!(posts, 3);
    let free = (0..8).filter(|_| c.get("/api/v1", &[("x-tier", "free")]).unwrap().status == 200).count();
    assert_eq!(free, 5);
    // Paid tier is not matched by "api", only by "all": 20 - 3 - 5 = 12 left.
    let paid = (0..20).filter(|_| c.get("/api/v1", &[("x-tier", "paid")]).unwrap().status == 200).count();
    assert_eq!(paid, 12);
    let r = c.get("/", &[]).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["limit"], "all");
}

fn trusted_hops_are_honoured_and_spoofing_is_not(build: Build) {
    let (_b, e) = envoy_with(
        build,
        r#"{"limits":[{"name":"ip","requests":5,"period":"1h","key":"client_ip"}],"trusted_hops":1}"#,
    );
    // The client forges a different left-most entry each time; the trusted
    // proxy's entry (right-most) is the same client: one budget.
    let spoofing =
        burst(e.addr, "/", 20, 2, |i| vec![("x-forwarded-for".into(), format!("198.51.100.{i}, 203.0.113.7"))]);
    assert_eq!(spoofing.count(200), 5);
    // Another real client behind the same proxy has its own budget.
    let other = burst(e.addr, "/", 20, 2, |_| vec![("x-forwarded-for".into(), "203.0.113.8".into())]);
    assert_eq!(other.count(200), 5);
    // A request whose list is empty or garbage is keyed on the peer, counted.
    let garbage = burst(e.addr, "/", 10, 1, |_| vec![("x-forwarded-for".into(), "not-an-address".into())]);
    assert_eq!(garbage.count(200), 5);
    assert_eq!(stat(build, &e, "client_ip_fallback"), 10);
}

fn without_trusted_hops_forwarded_for_is_ignored(build: Build) {
    let (_b, e) = envoy_with(build, r#"{"limits":[{"name":"ip","requests":5,"period":"1h","key":"client_ip"}]}"#);
    let r = burst(e.addr, "/", 30, 3, |i| vec![("x-forwarded-for".into(), format!("198.51.100.{i}"))]);
    assert_eq!(r.count(200), 5, "a client picked its own key by sending X-Forwarded-For");
}

fn bucket_refills_at_the_configured_rate(build: Build) {
    let (_b, e) =
        envoy_with(build, r#"{"limits":[{"name":"slow","requests":4,"period":"1s","burst":2,"key":"global"}]}"#);
    let mut c = Conn::open(e.addr).unwrap();
    let first: usize = (0..10).filter(|_| c.get("/", &[]).unwrap().status == 200).count();
    assert_eq!(first, 2);
    // 600 ms later: 2 more intervals of 250 ms have passed (at least 2, at most 2 plus the test's own delay).
    std::thread::sleep(Duration::from_millis(600));
    let start = Instant::now();
    let second: usize = (0..10).filter(|_| c.get("/", &[]).unwrap().status == 200).count();
    let extra = (start.elapsed().as_millis() / 250) as usize;
    assert!((2..=2 + extra + 1).contains(&second), "{second} admitted after 600 ms idle");
}

fn sample_config_limits_one_client_as_documented(build: Build) {
    // envoy/rate-limit.yaml unchanged: 10/s per client, bursts of 5, and
    // /api shares a global 100/s.
    let b = Backends::start(&["a", "b"]);
    let e = Envoy::start(&sample(build, &b), 2);
    let r = burst(e.addr, "/", 20, 1, |_| vec![]);
    let expected = 5.0 + 10.0 * r.elapsed.as_secs_f64();
    let ok = r.count(200) as f64;
    assert!(ok >= expected - 2.0 && ok <= expected + 2.0, "{ok} admitted, expected {expected:.1}");
    let refused = r.responses.iter().find(|x| x.status == 429).expect("a 429");
    assert_eq!(refused.header("ratelimit-policy"), Some("\"per-client\";q=10;w=1"));
    // Both backends are behind it.
    let backends: std::collections::HashSet<_> =
        r.responses.iter().filter_map(|x| x.header("x-backend").map(str::to_string)).collect();
    assert_eq!(backends.len(), 2, "{backends:?}");
}

/// Bad configuration never serves: Envoy logs our one line naming the field
/// and exits.
fn bad_configs_are_refused_at_load(build: Build) {
    let b = Backends::start(&["a", "b"]);
    let base = sample(build, &b);
    let cases = [
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"global","colour":"red"}]}"#,
            "limits[0].colour: unknown field `colour`",
        ),
        (
            r#"{"limits":[{"name":"a","requests":0,"period":"1s","key":"global"}]}"#,
            "limits[0].requests: must be at least 1",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1 sec","key":"global"}]}"#,
            "limits[0].period: \"1 sec\" has an unknown unit",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","burst":0,"key":"global"}]}"#,
            "limits[0].burst: must be at least 1",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"cookie:sid"}]}"#,
            "limits[0].key: unknown key kind \"cookie:sid\"",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"global"}],"mode":"audit"}"#,
            "mode: unknown variant `audit`",
        ),
    ];
    assert_refused_at_load(&base, "filters/rate-limit/README.md", &cases);
}

/// A flood of a million distinct client addresses: Envoy's memory stays
/// flat (the table was created at configure time and never grows), and a hot
/// client inside the flood still gets exactly its limit.
#[test]
fn key_flood_keeps_memory_bounded_and_hot_key_limited() {
    let build = Build::Wasm;
    use std::sync::atomic::{AtomicBool, Ordering};
    const FLOOD: usize = 1_000_000;
    let b = Backends::start(&["a", "b"]);
    let yaml = with_plugin_config(
        &sample(build, &b),
        r#"{"limits":[{"name":"ip","requests":20,"period":"1s","burst":20,"key":"client_ip"}],"trusted_hops":1,"table_size":65536}"#,
    );
    // /flood is answered by Envoy itself after the filter ran, so the test
    // measures the filter and Envoy, not the demo backend.
    let yaml = yaml.replacen(
        "              - match: { prefix: \"/\" }",
        "              - match: { prefix: \"/flood\" }\n                direct_response: { status: 200 }\n              - match: { prefix: \"/\" }",
        1,
    );
    let e = Envoy::start(&yaml, 2);
    let addr = |i: usize| {
        let n = i as u32 + 1;
        vec![(
            "x-forwarded-for".into(),
            format!("{}.{}.{}.{}", 11 + (n >> 24), (n >> 16) & 255, (n >> 8) & 255, n & 255),
        )]
    };
    // Warm up connections, stats and code paths before the baseline.
    burst(e.addr, "/flood", 2000, 8, |i| addr(FLOOD + i));
    let allocated_before = e.stat("server.memory_allocated").expect("server.memory_allocated");
    let rss_before = rss_bytes(e.pid());

    let done = AtomicBool::new(false);
    let (flood, (hot_sent, hot_ok, hot_secs)) = std::thread::scope(|s| {
        let hot_client = s.spawn(|| {
            let mut c = Conn::open(e.addr).unwrap();
            let (mut sent, mut ok) = (0u32, 0u32);
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                let r = c.get("/flood", &[("x-forwarded-for", "192.0.2.1")]).unwrap();
                assert!(r.status == 200 || r.status == 429, "hot client got {}", r.status);
                sent += 1;
                ok += u32::from(r.status == 200);
            }
            (sent, ok, start.elapsed().as_secs_f64())
        });
        let f = burst(e.addr, "/flood", FLOOD, 16, addr);
        done.store(true, Ordering::SeqCst);
        (f, hot_client.join().unwrap())
    });
    let allocated_after = e.stat("server.memory_allocated").expect("server.memory_allocated");
    let rss_after = rss_bytes(e.pid());
    println!(
        "flood: {} requests in {:.1}s; allocated {allocated_before} -> {allocated_after} bytes; \
         RSS {rss_before} -> {rss_after} bytes; hot client {hot_ok} of {hot_sent} admitted in {hot_secs:.1}s",
        flood.responses.len(),
        flood.elapsed.as_secs_f64(),
    );
    // Every flood address sends once into a full bucket, so it is admitted,
    // unless it hashed into the hot client's slot (~15 of them, expected
    // 1M / 65536), which the hot client keeps empty: collisions are stricter.
    assert_eq!(flood.count(200) + flood.count(429), FLOOD);
    assert!(flood.count(429) <= 64, "{} flood requests refused", flood.count(429));
    // One entry per key would need ~100 bytes x 1M = 100 MB; the fixed
    // table needs nothing beyond what it took at start-up. 8 MiB of slack
    // covers allocator and stats noise.
    let grew = allocated_after.saturating_sub(allocated_before);
    assert!(grew < 8 << 20, "Envoy's heap grew by {grew} bytes during the flood");
    let rss_grew = rss_after.saturating_sub(rss_before);
    assert!(rss_grew < 16 << 20, "Envoy's RSS grew by {rss_grew} bytes during the flood");
    // The hot client shares its slot with ~15 flood addresses (1M keys over
    // 65536 slots): sharing only ever makes it stricter, never looser.
    let ceiling = 20.0 + 20.0 * hot_secs + 2.0;
    assert!(f64::from(hot_ok) <= ceiling, "hot client admitted {hot_ok}, its limit allows {ceiling:.0}");
    assert!(hot_ok >= 20, "hot client starved: {hot_ok}");
}

/// Hostile request input has the outcome the README documents, and never
/// takes the VM down: non-UTF-8 header values are keyed by their lossy UTF-8
/// text, huge values are hashed like any other, and of repeated key headers
/// the first counts.
#[test]
fn hostile_header_input_has_defined_outcomes() {
    let build = Build::Wasm;
    let (_b, e) = envoy_with(build, r#"{"limits":[{"name":"k","requests":3,"period":"1h","key":"header:x-api-key"}]}"#);
    let mut c = Conn::open(e.addr).unwrap();
    // Bytes that are not UTF-8 (obs-text, legal in a field value).
    let raw = |key: &[u8]| {
        let mut r = b"GET / HTTP/1.1\r\nhost: test\r\nx-api-key: ".to_vec();
        r.extend_from_slice(key);
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    let statuses: Vec<u16> = (0..5).map(|_| c.raw(&raw(b"caf\xe9\xff")).unwrap().status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 429], "non-UTF-8 key");
    // Another invalid byte sequence decodes to the same replacement text: same bucket.
    assert_eq!(c.raw(&raw(b"caf\xfe\xfd")).unwrap().status, 429);

    // A 32 KiB key value.
    let big = "x".repeat(32 * 1024);
    let statuses: Vec<u16> = (0..4).map(|_| c.get("/", &[("x-api-key", &big)]).unwrap().status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429], "huge key");

    // Repeated key headers: the first value is the key.
    let statuses: Vec<u16> =
        (0..4).map(|_| c.get("/", &[("x-api-key", "first"), ("x-api-key", "second")]).unwrap().status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    assert_eq!(c.get("/", &[("x-api-key", "first")]).unwrap().status, 429);
    assert_eq!(c.get("/", &[("x-api-key", "second")]).unwrap().status, 200);

    // The VM never trapped.
    assert!(!e.log().contains("Uncaught"), "the VM trapped:\n{}", e.log());
    assert_eq!(e.stat("wasm.rate_limit.vm_reload"), Some(0), "Envoy reloaded the VM");
}

/// What the sample config's `failure_policy: FAIL_RELOAD` does when the VM
/// dies, observed in Envoy 1.40: the trapping request fails, every request
/// on that worker gets 503 during the reload backoff (1 s by default), then a
/// fresh VM serves and limiting carries on with the same buckets (they live in
/// shared data, outside the VM); Envoy counts the reload. Uses a build of the
/// filter that traps on demand (`--features trap-on-demand`).
#[test]
fn vm_failure_is_reloaded_and_limiting_continues() {
    let build = Build::Wasm;
    let b = Backends::start(&["a", "b"]);
    let trap_wasm = repo().join("target/trap-test/wasm32-wasip1/release/rate_limit.wasm");
    assert!(trap_wasm.exists(), "{} is missing: run `make build`", trap_wasm.display());
    let yaml = with_plugin_config(
        &sample(build, &b),
        r#"{"limits":[{"name":"g","requests":5,"period":"1h","key":"global"}]}"#,
    )
    .replace(&wasm("rate_limit").display().to_string(), &trap_wasm.display().to_string());
    // One worker, so the trapped VM is the one serving every request.
    let e = Envoy::start(&yaml, 1);
    let get = |headers: &[(&str, &str)]| Conn::open(e.addr).unwrap().get("/", headers).unwrap().status;
    let before: Vec<u16> = (0..3).map(|_| get(&[])).collect();
    assert_eq!(before, vec![200, 200, 200]);
    assert_eq!(get(&[("x-rate-limit-test-trap", "1")]), 503, "the trapping request");
    assert!(e.log().contains("Uncaught RuntimeError"), "the trap is logged");

    // Fail closed while the reload backs off, then a new VM.
    let t0 = Instant::now();
    let first = loop {
        let s = get(&[]);
        if s != 503 || t0.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let closed_for = t0.elapsed();
    println!("503 for {closed_for:?} after the trap, then {first}");
    assert_eq!(first, 200, "no fresh VM within 10 s");
    // Same buckets: that was the 4th of 5 requests.
    let after: Vec<u16> = (0..3).map(|_| get(&[])).collect();
    assert_eq!(after, vec![200, 429, 429], "limiting did not carry on with the same state");
    // Envoy counts the new VM, and every request it failed while backing off.
    assert!(e.stat("wasm.rate_limit.vm_reload_success").unwrap_or(0) >= 1, "{}", e.admin_get("/stats?filter=wasm"));
    assert!(e.stat("wasm.rate_limit.vm_reload_backoff").unwrap_or(0) >= 1, "{}", e.admin_get("/stats?filter=wasm"));
    assert!(e.stat("wasmcustom.rate_limit.configured").unwrap_or(0) >= 3, "the new VM did not configure");
}

/// A limit on `/api` holds however the client spells the path: with the
/// sample's Envoy path normalisation on, and without it (the filter
/// normalises too, for hosts and configs that do not).
fn a_path_limit_cannot_be_escaped_by_spelling_the_path_differently(build: Build) {
    let json = r#"{"limits":[{"name":"api","requests":1,"period":"1h","key":"all","match":{"path_prefix":"/api"}}]}"#;
    let b = Backends::start(&["a", "b"]);
    let sample = with_plugin_config(&sample(build, &b), json);
    assert!(sample.contains("normalize_path: true") && sample.contains("merge_slashes: true"));
    let raw = sample
        .replace("normalize_path: true", "normalize_path: false")
        .replace("merge_slashes: true", "merge_slashes: false");
    for (what, yaml) in [("Envoy normalising", sample), ("Envoy not normalising", raw)] {
        let e = Envoy::start(&yaml, 2);
        let mut c = Conn::open(e.addr).unwrap();
        assert_eq!(c.get("/api/x", &[]).unwrap().status, 200, "{what}");
        for spelling in ["/api/x", "//api/x", "/%61pi/x", "/./api/x", "/x/../api/x", "/api//x", "/\\api/x"] {
            assert_eq!(c.get(spelling, &[]).unwrap().status, 429, "{what}: {spelling} escaped the limit");
        }
        // Documented as a different path: case, and an escaped '%'.
        assert_eq!(c.get("/API/x", &[]).unwrap().status, 200, "{what}");
        assert_eq!(c.get("/%2561pi/x", &[]).unwrap().status, 200, "{what}");
    }
}
