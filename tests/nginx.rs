//! The nginx configs in `nginx-otel/` with a real nginx built with Kong's
//! ngx_wasm_module. No such nginx can be installed from the registries:
//! `make test` points `NGINX_WASM_BIN` at `../shared/nginx-wasm/nginx` when
//! it exists (as on the project's machines and CI); without one each test
//! prints a SKIPPED line naming the variable and passes.

use integration_tests::nginx::*;
use integration_tests::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn nginx_rate_limit_is_exact_across_worker_processes() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let n = start(&bin, "rate-limit.conf", &b.addrs(), Some(r#"{"limits":[{"name":"main","requests":100,"period":"1s","burst":50,"key":"client_ip"}],"headers":"both"}"#))
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let r = burst(n.addr, "/", 1000, 10, |_| vec![]);
    let expected = 50.0 + 100.0 * r.elapsed.as_secs_f64();
    let ok = r.count(200) as f64;
    // nginx clocks tick in milliseconds: the same -5/+3 bound as in Envoy.
    assert!(ok >= expected - 5.0 && ok <= expected + 3.0, "{ok} admitted, expected {expected:.1}");
    let refused = r.responses.iter().find(|x| x.status == 429).expect("a 429");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
}

#[test]
fn nginx_refuses_bad_plugin_config_with_one_line() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let bad = r#"{"limits":[{"name":"a","requests":0,"period":"1s","key":"all"}]}"#;
    // `nginx -t` does not run the filter: the config passes it.
    let (dir, conf) = write_config("rate-limit.conf", &b.addrs(), Some(bad), &[]);
    let t = Command::new(&bin).arg("-t").arg("-p").arg(&dir).arg("-e").arg("stderr").arg("-c").arg(&conf).output();
    let t = t.expect("nginx -t");
    assert!(t.status.success(), "nginx -t refused it: {}", String::from_utf8_lossy(&t.stderr));
    let _ = std::fs::remove_dir_all(dir);
    // At start each worker logs the filter's one line and [emerg], and exits;
    // the master stays up with no worker.
    match start(&bin, "rate-limit.conf", &b.addrs(), Some(bad)) {
        Ok(_) => panic!("nginx served with requests: 0"),
        Err(log) => {
            assert!(
                log.contains("invalid plugin configuration: limits[0].requests: must be at least 1"),
                "log:\n{log}"
            );
            assert!(log.contains("[emerg]"), "log:\n{log}");
            let lines = log.matches("invalid plugin configuration").count();
            let workers = log.matches("start worker process ").count();
            assert!(lines >= 1 && lines <= workers, "one line per worker that tried: {lines} for {workers} workers");
        }
    }
}

#[test]
fn nginx_retry_filter_strips_forged_headers_and_adds_retry_after() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let n = start(&bin, "retry.conf", &b.addrs(), None).unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let echo = http_get(n.addr, "/echo", &[("x-envoy-max-retries", "10"), ("x-envoy-retry-on", "5xx")]).expect("echo");
    let seen: serde_json::Value = serde_json::from_slice(&echo.body).expect("echo json");
    let headers = seen["headers"].as_object().expect("headers");
    // Neither the forged ones nor any the filter would write for Envoy.
    assert!(headers.keys().all(|h| !h.starts_with("x-envoy-")), "an x-envoy-* header reached the backend: {seen}");
    assert_eq!(headers.get("host").and_then(|h| h.as_str()), Some("test"), "proxy_set_header Host $host");
    b.set("a", "fail=1&status=429");
    let r = http_get(n.addr, "/", &[]).expect("request");
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
}

/// Every config in nginx-otel/ passes the plain Debian nginx's `nginx -t`
/// once the ngx_wasm_module parts (the `wasm {}` block and `proxy_wasm`
/// directives) are taken out: upstreams, maps, locations, proxy settings and
/// the include globs are checked; the wasm directives themselves and the
/// OpenTelemetry includes (ngx_otel_module is not in Debian's nginx) are not.
#[test]
fn plain_nginx_accepts_every_config_without_the_wasm_parts() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is missing: run `make test` (scripts/setup.sh installs nginx-light)");
    let dir = scratch_dir("nginx-syntax");
    let mut checked = 0;
    let mut files: Vec<_> =
        std::fs::read_dir(repo().join("nginx-otel")).expect("nginx-otel/").flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "conf")) {
        let text = std::fs::read_to_string(&path).expect("read config");
        let stripped = strip_wasm(&text).replace("pid target/", &format!("pid {}/", dir.display()));
        let mut directives = stripped.lines().filter(|l| !l.trim_start().starts_with('#'));
        assert!(
            directives.all(|l| !l.contains("proxy_wasm") && !l.contains("shm_kv")),
            "stripping failed for {}",
            path.display()
        );
        let out_path = dir.join(path.file_name().expect("name"));
        std::fs::write(&out_path, stripped).expect("write");
        let out = Command::new(&nginx)
            .arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&out_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .output()
            .expect("run nginx -t");
        assert!(out.status.success(), "{} fails nginx -t:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} configs checked");
}

/// Removes the `wasm { ... }` block, every `proxy_wasm ...;` directive
/// (whose quoted configuration may span lines) and the one-line
/// `wasm_socket_*` and `proxy_wasm_*` directives.
fn strip_wasm(text: &str) -> String {
    let mut out = String::new();
    let mut in_wasm_block = false;
    let mut in_directive = false;
    for line in text.lines() {
        let t = line.trim_start();
        if in_wasm_block {
            in_wasm_block = line != "}";
            continue;
        }
        if line.starts_with("wasm {") {
            in_wasm_block = true;
            continue;
        }
        if t.starts_with("wasm_socket_") || t.starts_with("proxy_wasm_") {
            continue;
        }
        if in_directive || t.starts_with("proxy_wasm ") {
            in_directive = !t.ends_with(';');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn nginx_circuit_breaker_opens_and_spares_the_healthy_upstream() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let n = start(&bin, "circuit-breaker.conf", &b.addrs(), None)
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    b.set("b", "fail=1");
    for _ in 0..5 {
        assert_eq!(http_get(n.addr, "/flaky/x", &[]).expect("request").header("x-backend"), Some("b"));
    }
    // nginx records a request in its log phase, after the response went
    // out: wait for the fifth failure's record, then every worker rejects.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&n.log).unwrap_or_default().contains("breaker flaky closed -> open") {
        assert!(Instant::now() < deadline, "the breaker never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        let r = http_get(n.addr, "/flaky/x", &[]).expect("request");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-circuit-breaker"), Some("flaky; state=open"));
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(b.requests("b"), 5, "rejected requests reached the backend");
    assert_eq!(http_get(n.addr, "/", &[]).expect("request").status, 200);
    // The host's missing properties are never asked for (each read would log an error line).
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(!log.contains("response.flags") && !log.contains("response.code_details"), "{log}");
}

#[test]
fn nginx_sticky_sessions_stick_through_the_map() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b", "c"]);
    let n = start(&bin, "sticky-session.conf", &b.addrs(), None)
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let mut seen = std::collections::HashSet::new();
    for s in 0..30 {
        let id = format!("s{s}");
        let backends: std::collections::HashSet<String> = (0..5)
            .map(|_| {
                let r = http_get(n.addr, "/", &[("x-session-id", &id)]).expect("request");
                let backend = r.header("x-backend").unwrap_or("-").to_string();
                assert_eq!(
                    r.header("x-sticky-backend"),
                    Some(backend.as_str()),
                    "nginx used the backend the filter chose"
                );
                backend
            })
            .collect();
        assert_eq!(backends.len(), 1, "session {id} moved: {backends:?}");
        seen.extend(backends);
    }
    // A client cannot choose the upstream: the filter's value replaces the
    // one it sent.
    let home = http_get(n.addr, "/", &[("x-session-id", "s0")]).expect("request");
    let home = home.header("x-backend").expect("backend").to_string();
    let other = if home == "a" { b.addr("b") } else { b.addr("a") };
    let forged = other.to_string();
    for _ in 0..5 {
        let r =
            http_get(n.addr, "/", &[("x-session-id", "s0"), ("x-sticky-upstream", forged.as_str())]).expect("request");
        assert_eq!(r.header("x-backend"), Some(home.as_str()), "the forged upstream header chose the backend");
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn nginx_chain_of_four_serves() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b", "c"]);
    let n = start(&bin, "chain.conf", &b.addrs(), None).unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let r = http_get(n.addr, "/", &[("x-session-id", "alice")]).expect("request");
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit").is_some());
}

#[test]
fn nginx_global_limit_through_the_json_endpoint() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let redis = fleet::Redis::start();
    let limits = "domain: edge\ndescriptors:\n  - key: generic_key\n    value: fleet-client\n    descriptors:\n      - key: remote_address\n        rate_limit: { unit: hour, requests_per_unit: 20 }\n";
    let engine = fleet::Engine::start(limits, &redis, &[]);
    let json = format!(
        r#"{{"limits":[{{"name":"fleet-client","requests":20,"period":"1h","key":"client_ip","scope":"global"}}],
            "global":{{"cluster":"{}","domain":"edge","protocol":"http","timeout":"1s"}}}}"#,
        engine.http
    );
    let n = start(&bin, "global-rate-limit.conf", &b.addrs(), Some(&json))
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let mut conn = Conn::open(n.addr).expect("connect");
    let ok = (0..40).filter(|_| conn.get("/", &[]).map(|r| r.status == 200).unwrap_or(false)).count();
    // The readiness probe in `start` was one request too.
    assert_eq!(ok, 19, "20 per hour, one spent on the readiness probe");
    assert_eq!(engine.metric("ratelimit_engine_calls_total{protocol=\"json\"}"), Some(41));
}

/// The sample zone holds the default table with a limit name of the longest
/// length allowed (64 characters: keys of 81 bytes), and the limit stays
/// exact across both worker processes.
#[test]
fn nginx_rate_limit_with_a_long_name_is_exact_in_the_sample_zone() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let (name, other) = ("n".repeat(64), "m".repeat(64));
    let json = format!(
        r#"{{"limits":[{{"name":"{name}","requests":100,"period":"1s","burst":50,"key":"client_ip"}},
        {{"name":"{other}","requests":1,"period":"1s","key":"all","match":{{"path_prefix":"/never"}}}}],"headers":"both"}}"#
    );
    let n = start(&bin, "rate-limit.conf", &b.addrs(), Some(&json))
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let r = burst(n.addr, "/", 1000, 10, |_| vec![]);
    let expected = 50.0 + 100.0 * r.elapsed.as_secs_f64();
    let ok = r.count(200) as f64;
    assert!(ok >= expected - 5.0 && ok <= expected + 3.0, "{ok} admitted, expected {expected:.1}");
}

/// A zone too small for the table: nginx would evict buckets silently; the
/// filter refuses the configuration at start with the evicted key, and the
/// workers exit.
#[test]
fn nginx_zone_too_small_for_the_table_is_refused_at_start() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    match start_with(&bin, "rate-limit.conf", &b.addrs(), None, &[("shm_kv rate_limit 10m;", "shm_kv rate_limit 1m;")])
    {
        Ok(_) => panic!("nginx served with a 1m zone for 16385 slots"),
        Err(log) => assert!(log.contains("was evicted while the table was written"), "log:\n{log}"),
    }
}

/// Over keep-alive connections, several at once, global limits answer every
/// request (the module's resume path crashed the worker in the rewrite
/// phase; the sample runs the filter in the access phase), and the limit
/// holds.
#[test]
fn nginx_global_limit_over_keep_alive_connections_under_load() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let redis = fleet::Redis::start();
    let limits = "domain: edge\ndescriptors:\n  - key: generic_key\n    value: fleet-client\n    descriptors:\n      - key: remote_address\n        rate_limit: { unit: hour, requests_per_unit: 50 }\n";
    let engine = fleet::Engine::start(limits, &redis, &[]);
    let json = format!(
        r#"{{"limits":[{{"name":"fleet-client","requests":50,"period":"1h","key":"client_ip","scope":"global"}}],
            "global":{{"cluster":"{}","domain":"edge","protocol":"http","timeout":"2s"}}}}"#,
        engine.http
    );
    let n = start(&bin, "global-rate-limit.conf", &b.addrs(), Some(&json))
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let addr = n.addr;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).expect("connect");
                (0..30)
                    .map(|_| conn.get("/", &[]).map(|r| r.status).expect("an answer on a kept-alive connection"))
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().flat_map(|t| t.join().expect("no connection dropped")).collect();
    assert_eq!(statuses.len(), 120);
    // The readiness probe in `start` spent one.
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 49, "{statuses:?}");
    assert!(!std::fs::read_to_string(&n.log).unwrap_or_default().contains("exited on signal"), "a worker crashed");
}

/// The bundle: all four policies in one module, in a real nginx with two
/// workers: sessions stick, rate-limit headers come back, forged retry
/// headers never reach a backend, and the breaker opens.
#[test]
fn nginx_bundle_serves_all_four_policies() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b", "c"]);
    let n = start(&bin, "bundle.conf", &b.addrs(), None).unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let first = http_get(n.addr, "/", &[("x-session-id", "alice")]).expect("request");
    assert_eq!(first.status, 200);
    assert!(first.header("ratelimit").is_some());
    let home = first.header("x-sticky-backend").expect("chosen backend").to_string();
    for _ in 0..5 {
        let r = http_get(n.addr, "/", &[("x-session-id", "alice")]).expect("request");
        assert_eq!(r.header("x-backend"), Some(home.as_str()), "the session stuck");
    }
    let echo = http_get(n.addr, "/echo", &[("x-session-id", "alice"), ("x-envoy-max-retries", "7")]).expect("echo");
    let seen: serde_json::Value = serde_json::from_slice(&echo.body).expect("echo json");
    let headers = seen["headers"].as_object().expect("headers");
    assert!(headers.keys().all(|h| !h.starts_with("x-envoy-")), "{seen}");
    for name in ["a", "b", "c"] {
        b.set(name, "fail=1");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_get(n.addr, "/", &[]).expect("request");
        if r.header("x-circuit-breaker").is_some() {
            assert_eq!(r.status, 503);
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never opened");
    }
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(!log.contains("[emerg]"), "TEMP {log}");
}

/// Issue 30, defect 10: a breaker zone too small for `max_breakers` records
/// of their full size (60 buckets and an expression: about 3.4 KB each) is
/// refused at start, instead of passing with 1-byte slots and evicting open
/// breakers once keys arrive.
#[test]
fn nginx_breaker_zone_too_small_for_its_records_is_refused_at_start() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let json = r#"{"key":"header:x-k","window":"60s","buckets":60,"min_requests":10,"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25","max_breakers":512}"#;
    let edits = [("shm_kv circuit_breaker 2m;", "shm_kv circuit_breaker 1m;")];
    match start_with(&bin, "circuit-breaker.conf", &b.addrs(), Some(json), &edits) {
        Ok(_) => panic!("nginx served with a 1m zone for 512 breakers of 3.4 KB"),
        Err(log) => assert!(log.contains("was evicted while the table was written"), "log:\n{log}"),
    }
}

/// One GET with its own Host header, on a fresh connection.
fn get_host(addr: SocketAddr, host: &str) -> Response {
    let mut c = Conn::open(addr).expect("connect");
    c.raw(format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes()).expect("request")
}

/// Issue 30, defect 11: in nginx the rate limiter's `host` key is the
/// client's Host (ngx_wasm_module's `:authority` is the server's own name):
/// each host its own bucket.
#[test]
fn nginx_host_key_is_the_clients_host() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let json = r#"{"limits":[{"name":"per-host","requests":1,"period":"1h","key":"host"}]}"#;
    let n = start(&bin, "rate-limit.conf", &b.addrs(), Some(json)).unwrap_or_else(|log| panic!("nginx:\n{log}"));
    assert_eq!(get_host(n.addr, "a.example").status, 200);
    assert_eq!(get_host(n.addr, "a.example").status, 429);
    assert_eq!(get_host(n.addr, "b.example").status, 200, "another host shared a.example's bucket");
}

/// NGINX's OpenTelemetry module beside the nginx binary (the shared build's
/// `modules/`); `None` (the test prints SKIPPED) without it.
fn otel_module(bin: &std::path::Path) -> Option<std::path::PathBuf> {
    let module = bin.parent()?.join("modules/ngx_otel_module.so");
    if module.is_file() {
        return Some(std::fs::canonicalize(&module).unwrap_or(module));
    }
    eprintln!("SKIPPED: no modules/ngx_otel_module.so beside {}", bin.display());
    None
}

/// The bundle for the trace test: a tight limit on /limited, a breaker per
/// `x-breaker`, sticky sessions with cookies, a retry policy; `trace` on.
const TRACED_BUNDLE: &str = r#"{"trace":true,
 "rate_limit":{"limits":[{"name":"tight","requests":2,"period":"1m","burst":2,"key":"header:x-client","match":{"path_prefix":"/limited"}}]},
 "circuit_breaker":{"key":"header:x-breaker","consecutive_failures":3,"open_for":"60s"},
 "sticky_session":{"backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"},{"name":"c","address":"127.0.0.1:8083"}],
   "session_key":["header:x-session-id","client_ip"],"cookie":{"name":"sticky","secret":"trace-test-secret-0123456789abcdef"},
   "health":{"failures":50,"eject_for":"10s"},"backend_header":"x-sticky-backend"},
 "retry":{"policies":[{"name":"reads","match":{"methods":["GET"]}}]}}"#;

/// `nginx-otel/otel/`'s includes, enabled in a test's prefix as the README's
/// two symlinks would: `load_module` by absolute path, the exporter sending
/// to `sink` every second (the module's default is 5 s).
fn enable_tracing(dir: &std::path::Path, module: &std::path::Path, sink: std::net::SocketAddr) {
    let enabled = dir.join("otel/enabled");
    std::fs::create_dir_all(&enabled).expect("otel/enabled");
    let main = std::fs::read_to_string(repo().join("nginx-otel/otel/main.conf")).expect("main.conf");
    let main = main.replace("load_module modules/ngx_otel_module.so;", &format!("load_module {};", module.display()));
    std::fs::write(enabled.join("main.main.conf"), main).expect("main include");
    let http = std::fs::read_to_string(repo().join("nginx-otel/otel/http.conf")).expect("http.conf");
    let http = http.replace("endpoint 127.0.0.1:4317;", &format!("endpoint {sink};\n    interval 1s;"));
    std::fs::write(enabled.join("http.http.conf"), http).expect("http include");
}

#[test]
fn nginx_spans_carry_the_decisions_through_the_otel_includes() {
    let Some(bin) = nginx_bin() else { return };
    let Some(module) = otel_module(&bin) else { return };
    let sink = integration_tests::otlp::OtlpSink::start();
    let b = Backends::start(&["a", "b", "c"]);
    let metrics_port = free_port();
    let edits = [("listen 127.0.0.1:9145;", format!("listen 127.0.0.1:{metrics_port};"))];
    let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let n = start_prepared(&bin, "bundle.conf", &b.addrs(), Some(TRACED_BUNDLE), &edits, |dir| {
        enable_tracing(dir, &module, sink.addr)
    })
    .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));

    let first = http_get(n.addr, "/placed", &[("x-session-id", "alice")]).expect("request");
    let cookie = first.header("set-cookie").expect("pinning cookie").split(';').next().unwrap_or("").to_string();
    let home = first.header("x-sticky-backend").expect("backend").to_string();
    assert_eq!(http_get(n.addr, "/pinned", &[("cookie", &cookie)]).expect("request").status, 200);
    for _ in 0..3 {
        let _ = http_get(n.addr, "/limited", &[("x-client", "c1")]);
    }
    for name in ["a", "b", "c"] {
        b.set(name, "fail=1&status=503");
    }
    // The breaker records in nginx's log phase: a moment after each answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http_get(n.addr, "/breaker", &[("x-breaker", "orders")]).expect("request");
        if r.header("x-circuit-breaker").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never opened");
        std::thread::sleep(Duration::from_millis(100));
    }

    let patience = Duration::from_secs(40);
    let path_is = |s: &integration_tests::otlp::Span, p: &str| s.attr("http.target") == Some(p);
    let find = |p: &str, extra: &dyn Fn(&integration_tests::otlp::Span) -> bool| {
        sink.wait_for(patience, |s| path_is(s, p) && extra(s))
            .unwrap_or_else(|| panic!("no nginx span for {p}: {:#?}", sink.spans()))
    };
    let s = find("/pinned", &|_| true);
    assert_eq!(s.service, "resilience-filters");
    assert_eq!(s.attr("sticky.placement"), Some("pinned"));
    assert_eq!(s.attr("sticky.backend"), Some(home.as_str()));
    assert_eq!(s.attr("retry.policy"), Some("reads"));
    assert_eq!(s.attr("circuit_breaker.decision"), Some("passed"));
    let s = find("/limited", &|s| s.attr("ratelimit.result") == Some("refused"));
    assert_eq!(s.attr("ratelimit.limit"), Some("tight"));
    // Written at the response, where the outcome that opened it was recorded.
    let opened = find("/breaker", &|s| s.attr("circuit_breaker.transition") == Some("closed->open"));
    assert_eq!(opened.attr("circuit_breaker.key"), Some("orders"));
    let s = find("/breaker", &|s| s.attr("circuit_breaker.decision") == Some("rejected"));
    assert_eq!(s.attr("circuit_breaker.key"), Some("orders"));
    assert_eq!(s.attr("circuit_breaker.state"), Some("open"));
    // One http.status_code per span: the module's own (an integer, which the
    // sink writes as text).
    let spans = sink.spans();
    assert!(spans.iter().all(|s| s.attr("http.status_code").is_some()));
    // Nothing the filter wrote upset nginx (with the failing backends,
    // "no live upstreams" errors are expected).
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    for bad in ["[emerg]", "[crit]", "[alert]", "not changeable", "proxy-wasm]["] {
        let hits: Vec<&str> =
            log.lines().filter(|l| l.contains(bad) && (bad != "proxy-wasm][" || l.contains("[error]"))).collect();
        assert!(hits.is_empty(), "{bad}: {hits:#?}");
    }
}

#[test]
fn nginx_serves_the_filters_metrics_for_prometheus() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b", "c"]);
    let metrics_port = free_port();
    let listen = format!("listen 127.0.0.1:{metrics_port};");
    let n = start_with(&bin, "bundle.conf", &b.addrs(), None, &[("listen 127.0.0.1:9145;", &listen)])
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().expect("addr");
    let value = |text: &str, series: &str| {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (allowed, refused) = ("rate_limit_allowed{limit=\"per-client\"}", "rate_limit_refused{limit=\"per-client\"}");
    // The readiness probes were counted too: from here on, exactly the burst.
    let before = http_get(metrics, "/metrics", &[]).expect("metrics").text();
    let r = burst(n.addr, "/", 300, 6, |i| vec![("x-session-id".to_string(), format!("s{}", i % 9))]);
    let (admitted, limited) = (r.count(200) as u64, r.count(429) as u64);
    assert!(admitted > 0 && limited > 0, "a burst over the limit: {admitted} admitted, {limited} refused");
    // Every worker's counts, summed, whichever worker answers; each request
    // is counted when it is decided, before its answer leaves.
    let page = http_get(metrics, "/metrics", &[]).expect("metrics");
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = page.text();
    assert_eq!(value(&text, allowed) - value(&before, allowed), admitted, "{text}");
    assert_eq!(value(&text, refused) - value(&before, refused), limited, "{text}");
    for series in [
        "# TYPE rate_limit_allowed counter",
        "sticky_assigned{backend=\"a\"}",
        "circuit_breaker_state{breaker=\"backends\"}",
        "retry_requests{policy=\"default\"}",
        "bundle_configured ",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // The metrics listener serves nothing else, and the main one proxies
    // /metrics like any path.
    assert_eq!(http_get(metrics, "/other", &[]).expect("request").status, 404);
    let main = http_get(n.addr, "/metrics", &[]).expect("request");
    assert!(!main.text().contains("# TYPE"), "the main location's configuration has no metrics_path");
}

/// Passive health in nginx: a backend answering 503s is ejected after
/// `health.failures` (3) and its sessions move, on every worker, without an
/// error line. (This module version's `upstream.address` drops the port, so
/// the filter reads `$upstream_addr` instead: with `upstream.address` no
/// outcome was ever charged to a backend, and an nginx with no live upstream
/// logged `[emerg] malloc(...) failed` on every such request.)
#[test]
fn nginx_sticky_backend_failing_is_ejected_and_its_sessions_move() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b", "c"]);
    let n = start(&bin, "sticky-session.conf", &b.addrs(), None)
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let home = http_get(n.addr, "/", &[("x-session-id", "alice")]).expect("request");
    let home = home.header("x-backend").expect("backend").to_string();
    b.set(&home, "fail=1&status=503");
    // Health is recorded in nginx's log phase, a moment after each answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved = loop {
        let r = http_get(n.addr, "/", &[("x-session-id", "alice")]).expect("request");
        if r.status == 200 {
            break r.header("x-backend").unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "the session never left its failing backend {home}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(moved, home);
    // Seen by both workers: new connections, every one away from `home`.
    for _ in 0..10 {
        let r = http_get(n.addr, "/", &[("x-session-id", "alice")]).expect("request");
        assert_eq!(r.status, 200);
        assert_ne!(r.header("x-backend"), Some(home.as_str()));
    }
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(log.contains("ejected after failures in a row"), "{log}");
    assert!(!log.contains("[emerg]") && !log.contains("[crit]"), "{log}");
}

/// A token limit over JSON answers in nginx: the body read as it goes by
/// (ngx_wasm_module's response body callback), the answers' usage charged.
/// 1000 tokens a minute, answers of 400: three admitted, the fourth waits
/// out the debt; streamed answers are charged the same.
#[test]
fn nginx_token_limit_charges_the_answers_usage() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let json = r#"{"limits":[{"name":"tokens","requests":1000,"period":"1m","key":"header:x-api-key","cost":{"response_body":"usage.total_tokens","default":300}}]}"#;
    let n = start(&bin, "rate-limit.conf", &b.addrs(), Some(json))
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    for (key, query) in [("tenant-json", "tokens=400"), ("tenant-sse", "tokens=400&stream=1&events=4")] {
        let mut statuses = Vec::new();
        let mut wait = 0;
        for _ in 0..4 {
            let r = http_get(n.addr, &format!("/v1/chat/completions?{query}"), &[("x-api-key", key)]).expect("request");
            if r.status == 429 {
                wait = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            statuses.push(r.status);
        }
        assert_eq!(statuses, [200, 200, 200, 429], "{key}");
        assert!((6..=12).contains(&wait), "{key}: Retry-After {wait}, the debt is 12 s");
    }
}

/// A global token limit in nginx: admission asks the engine's `/json` with
/// `hits_addend` 0; nginx allows no call from the response phases (one
/// traps the VM), so the answer's tokens are charged detached, from the
/// module's root context at its next tick (50 ms): the fourth answer of 400
/// tokens is refused once the third's charge has landed.
#[test]
fn nginx_global_token_limit_charges_from_the_tick() {
    let Some(bin) = nginx_bin() else { return };
    let b = Backends::start(&["a", "b"]);
    let redis = fleet::Redis::start();
    let limits = "domain: llm\ndescriptors:\n  - key: generic_key\n    value: tokens\n    descriptors:\n      - key: x-api-key\n        rate_limit: { unit: hour, requests_per_unit: 1000 }\n";
    let engine = fleet::Engine::start(limits, &redis, &[]);
    let json = format!(
        r#"{{"limits":[{{"name":"tokens","requests":1000,"period":"1h","key":"header:x-api-key","scope":"global","cost":{{"response_body":"usage.total_tokens"}}}}],
            "global":{{"cluster":"{}","domain":"llm","protocol":"http","timeout":"1s"}}}}"#,
        engine.http
    );
    let n = start(&bin, "global-rate-limit.conf", &b.addrs(), Some(&json))
        .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
    let mut statuses = Vec::new();
    let hour = fleet::utc_hour();
    for _ in 0..4 {
        let r = http_get(n.addr, "/v1/chat/completions?tokens=400", &[("x-api-key", "k")]);
        statuses.push(r.map(|r| r.status).unwrap_or(0));
        // Ten ticks: the charge has long been sent, however busy the machine.
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    // Exact within one of the engine's hourly windows.
    if fleet::utc_hour() == hour {
        assert_eq!(statuses, [200, 200, 200, 429], "{log}");
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}\n{log}");
    assert!(!log.contains("trap"), "no call from a phase nginx refuses: {log}");
}
