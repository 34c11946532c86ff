//! ratelimit-engine against hostile callers and careless operators (issue
//! 30): broken `limit` overrides, huge `hits_addend`, values that spell
//! another descriptor's key, config files that block or are written in
//! place, and clients that open connections and never finish a request.
//! Real Redis, real engine processes.

use integration_tests::fleet::{post, Engine, Redis};
use integration_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const LIMITS: &str = r#"
domain: hostile
descriptors:
  - key: user
    rate_limit: { unit: hour, requests_per_unit: 2 }
  - key: x-tenant
    value: acme
    descriptors:
      - key: x-user
        rate_limit: { unit: hour, requests_per_unit: 2 }
  - key: x-tenant
    rate_limit: { unit: hour, requests_per_unit: 100 }
"#;

fn ask(engine: &Engine, body: Value) -> (u16, Value) {
    let r = engine.post_json(&body.to_string());
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn entries(e: &[(&str, &str)]) -> Value {
    Value::Array(e.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Defect 4: an override whose unit names no duration must not lift the
/// configured limit of a descriptor over it; the override is ignored.
#[test]
fn an_override_without_a_usable_unit_never_lifts_the_configured_limit() {
    for algorithm in ["fixed-window", "gcra"] {
        let redis = Redis::start();
        let engine = Engine::start(LIMITS, &redis, &["--algorithm", algorithm]);
        let user = entries(&[("user", "mallory")]);
        for _ in 0..2 {
            let (s, a) = ask(&engine, json!({"domain": "hostile", "descriptors": [{"entries": user}]}));
            assert_eq!(s, 200, "{a}");
        }
        let overrides = [
            json!({"requestsPerUnit": 1000}),
            json!({"requestsPerUnit": 1000, "unit": "UNKNOWN"}),
            json!({"requestsPerUnit": 1000, "unit": 0}),
            json!({"requestsPerUnit": 1000, "unit": 8}),
            json!({"requestsPerUnit": 1000, "unit": 99}),
            json!({"requestsPerUnit": 1000, "unit": -1}),
            json!({}),
        ];
        for o in &overrides {
            let (status, a) =
                ask(&engine, json!({"domain": "hostile", "descriptors": [{"entries": user, "limit": o}]}));
            assert!(status == 429 || status == 400, "{algorithm}: override {o} answered {status}: {a}");
            if status == 429 {
                assert_eq!(a["statuses"][0]["currentLimit"]["requestsPerUnit"], 2, "{a}");
            }
        }
        let ignored = engine.metric("ratelimit_engine_overrides_ignored_total").unwrap_or(0);
        assert!(ignored >= 5, "{algorithm}: {ignored} overrides counted as ignored");
        // A usable override still applies (upstream's behaviour): on a
        // fresh key, since GCRA's state is a time that depends on the rate.
        let fresh = entries(&[("user", "fresh")]);
        let (s, a) = ask(
            &engine,
            json!({"domain": "hostile", "descriptors": [{"entries": fresh, "limit": {"requestsPerUnit": 1000, "unit": "HOUR"}}]}),
        );
        assert_eq!(s, 200, "{algorithm}: {a}");
    }
}

/// Defect 14: an override on a domain the config does not know answers OK
/// with no limit, as envoyproxy/ratelimit does.
#[test]
fn an_override_in_an_unknown_domain_is_not_applied() {
    let redis = Redis::start();
    let engine = Engine::start(LIMITS, &redis, &["--algorithm", "fixed-window"]);
    let d = json!([{"entries": entries(&[("user", "u")]), "limit": {"requestsPerUnit": 1, "unit": "HOUR"}}]);
    for _ in 0..3 {
        let (s, a) = ask(&engine, json!({"domain": "elsewhere", "descriptors": d}));
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["statuses"][0].get("currentLimit"), None, "{a}");
    }
}

/// Defect 5: a hit count above the limit is OVER_LIMIT and the key stays
/// usable (no Redis overflow, no UNAVAILABLE for the rest of the window).
#[test]
fn a_huge_hits_addend_is_over_the_limit_and_leaves_the_key_usable() {
    for (algorithm, next_admitted) in [("fixed-window", false), ("gcra", true)] {
        let redis = Redis::start();
        let engine = Engine::start(LIMITS, &redis, &["--algorithm", algorithm]);
        let user = entries(&[("user", "huge")]);
        for hits in ["9223372036854775807", "18446744073709551615", "3"] {
            let body = format!(r#"{{"domain":"hostile","descriptors":[{{"entries":{user},"hitsAddend":"{hits}"}}]}}"#);
            let r = post(engine.http, "/json", &body).expect("post");
            assert_eq!(r.status, 429, "{algorithm}: hits {hits}: {}", r.text());
        }
        // The limit's two requests (GCRA counted none of the refused hits);
        // the fixed window counted them, so its window stays over.
        for _ in 0..2 {
            let (s, a) = ask(&engine, json!({"domain": "hostile", "descriptors": [{"entries": user}]}));
            assert_ne!(s, 503, "{algorithm}: the key must stay usable: {a}");
            assert_eq!(s == 200, next_admitted, "{algorithm}: {a}");
            if !next_admitted {
                break;
            }
        }
        assert_eq!(engine.metric("ratelimit_engine_redis_errors_total"), Some(0), "{algorithm}");
    }
}

/// Defect 8: a one-entry descriptor whose value carries the separators is
/// not counted as the two-entry descriptor it spells.
#[test]
fn a_crafted_value_does_not_count_against_another_descriptor() {
    let redis = Redis::start();
    let engine = Engine::start(LIMITS, &redis, &["--algorithm", "fixed-window"]);
    let forged = entries(&[("x-tenant", "acme|x-user=alice")]);
    for _ in 0..3 {
        ask(&engine, json!({"domain": "hostile", "descriptors": [{"entries": forged}]}));
    }
    let victim = entries(&[("x-tenant", "acme"), ("x-user", "alice")]);
    let (s, a) = ask(&engine, json!({"domain": "hostile", "descriptors": [{"entries": victim}]}));
    assert_eq!(s, 200, "the victim's own count must be untouched: {a}");
    assert_eq!(a["statuses"][0]["limitRemaining"], 1, "{a}");
}

fn live(rpu: u32) -> String {
    format!("domain: live\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: hour, requests_per_unit: {rpu} }}\n")
}

fn limit_of(engine: &Engine) -> Option<u64> {
    let (_, a) = ask(engine, json!({"domain": "live", "descriptors": [{"entries": entries(&[("k", "v")])}]}));
    a["statuses"][0]["currentLimit"]["requestsPerUnit"].as_u64()
}

fn replace_file(dir: &std::path::Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// Defect 6: a FIFO in the watched directory (named like a config) blocks
/// nothing: requests and `/healthcheck` answer, and a later change of a
/// real file still loads. A file over the size bound is refused by name.
#[test]
fn a_fifo_or_a_huge_file_in_the_config_directory_blocks_nothing() {
    let redis = Redis::start();
    let dir = scratch_dir("engine-fifo");
    replace_file(&dir, "live.yaml", &live(5));
    let d = dir.display().to_string();
    let engine = Engine::start("domain: unused\n", &redis, &["--config", &d, "--watch", "100ms"]);
    let fifo = dir.join("trap.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..5 {
        let h = http_get(engine.http, "/healthcheck", &[]).expect("healthcheck");
        assert_eq!(h.status, 200);
        assert_eq!(limit_of(&engine), Some(5));
    }
    replace_file(&dir, "live.yaml", &live(7));
    wait_for("the reload beside a FIFO", || limit_of(&engine) == Some(7));
    // 5 MiB of YAML: refused by name, the last good config answering.
    let big = format!("{}# {}\n", live(9), "x".repeat(5 << 20));
    replace_file(&dir, "live.yaml", &big);
    wait_for("the refusal", || engine.metric("ratelimit_engine_config_reload_errors_total") == Some(1));
    assert_eq!(limit_of(&engine), Some(7));
}

/// Defect 7: a file truncated and written in two parts with a pause between
/// them is loaded whole, never as its first half.
#[test]
fn a_config_written_in_place_is_loaded_only_once_it_is_whole() {
    let redis = Redis::start();
    let dir = scratch_dir("engine-in-place");
    let path = dir.join("live.yaml");
    std::fs::write(&path, live(5)).expect("write");
    let d = dir.display().to_string();
    let engine = Engine::start("domain: unused\n", &redis, &["--config", &d, "--watch", "100ms"]);
    assert_eq!(limit_of(&engine), Some(5));
    // The first half is a valid config on its own (no limit on k at all).
    let first = "domain: live\ndescriptors:\n  - key: other\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n";
    let rest = "  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 3 }\n";
    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).expect("open");
    f.write_all(first.as_bytes()).expect("first half");
    f.flush().expect("flush");
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(limit_of(&engine), Some(5), "the half-written file must not be loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.write_all(rest.as_bytes()).expect("rest");
    drop(f);
    wait_for("the whole file", || limit_of(&engine) == Some(3));
    assert_eq!(engine.metric("ratelimit_engine_config_reloads_total"), Some(1), "one reload, of the whole file");
}

/// Defect 9: clients that open connections and send half a request head
/// are bounded: the extra ones are closed at once, the held ones after the
/// header timeout, and the service answers again without anyone's help.
#[test]
fn unfinished_request_heads_are_bounded_and_cut() {
    let redis = Redis::start();
    let engine = Engine::start(
        LIMITS,
        &redis,
        &["--algorithm", "fixed-window", "--max-connections", "20", "--header-timeout", "1s"],
    );
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut s = std::net::TcpStream::connect(engine.http).expect("connect");
        let _ = s.write_all(b"POST /json HTTP/1.1\r\nhost: x\r\n");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        slow.push(s);
    }
    // Every slow client is closed by the engine: the extras at once, the
    // others when their head has not arrived within the timeout.
    let started = Instant::now();
    for s in &mut slow {
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = n;
    }
    assert!(started.elapsed() < Duration::from_secs(8), "held {:?}", started.elapsed());
    wait_for("the service to answer", || http_get(engine.http, "/healthcheck", &[]).is_ok_and(|r| r.status == 200));
    let refused = engine.metric("ratelimit_engine_connections_refused_total").unwrap_or(0);
    assert!(refused >= 30, "{refused} connections refused over the cap of 20");
    let (s, _) = ask(&engine, json!({"domain": "hostile", "descriptors": [{"entries": entries(&[("user", "ok")])}]}));
    assert_eq!(s, 200);
}
