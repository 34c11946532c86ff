//! ratelimit-engine answering as envoyproxy/ratelimit answers, against a
//! real Redis: wildcard values, `share_threshold`, `requests_per_unit: 0`,
//! `replaces`, shadow and quota mode, unlimited descriptors, `hits_addend`
//! 0 and N at both levels, the `limit` override, and the requests upstream
//! refuses; over `/json` here, and through Envoy's own rate limit filter
//! (gRPC) in `envoy_ratelimit_filter_*`.

use integration_tests::fleet::{Engine, Redis};
use integration_tests::*;
use serde_json::{json, Value};

const LIMITS: &str = r#"
domain: compat
descriptors:
  - key: path
    value: /api/*
    rate_limit: { unit: hour, requests_per_unit: 2, name: api }
  - key: path
    value: /files/*/thumb*
    share_threshold: true
    rate_limit: { unit: hour, requests_per_unit: 2 }
  - key: banned
    rate_limit: { unit: second, requests_per_unit: 0 }
  - key: plan
    value: basic
    rate_limit: { unit: hour, requests_per_unit: 1, name: basic }
  - key: plan
    value: premium
    rate_limit: { unit: hour, requests_per_unit: 100, name: premium, replaces: [{ name: basic }] }
  - key: trial
    shadow_mode: true
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: quota
    quota_mode: true
    detailed_metric: true
    value_to_metric: true
    metadata: { tier: gold }
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: free
    rate_limit: { unlimited: true }
  - key: counted
    rate_limit: { unit: hour, requests_per_unit: 3 }
"#;

/// Fixed windows of an hour (upstream's algorithm), so that no test meets a
/// window's end.
fn start() -> (Redis, Engine) {
    let redis = Redis::start();
    let engine = Engine::start(LIMITS, &redis, &["--algorithm", "fixed-window"]);
    (redis, engine)
}

/// POSTs `body` to `/json`: the HTTP status and the answer.
fn ask(engine: &Engine, body: Value) -> (u16, Value) {
    let r = engine.post_json(&body.to_string());
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn descriptors(entries: &[&[(&str, &str)]]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({ "entries": e.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>() }))
            .collect(),
    )
}

fn one(engine: &Engine, entries: &[(&str, &str)]) -> Value {
    ask(engine, json!({ "domain": "compat", "descriptors": descriptors(&[entries]) })).1
}

fn code(answer: &Value, i: usize) -> &str {
    answer["statuses"][i]["code"].as_str().unwrap_or("?")
}

#[test]
fn wildcard_values_limit_each_value_and_share_threshold_shares_one_counter() {
    let (_redis, engine) = start();
    for _ in 0..2 {
        assert_eq!(one(&engine, &[("path", "/api/a")])["overallCode"], "OK");
    }
    let third = one(&engine, &[("path", "/api/a")]);
    assert_eq!(third["overallCode"], "OVER_LIMIT", "a wildcard value must limit: {third}");
    assert_eq!(third["statuses"][0]["currentLimit"]["name"], "api");
    // Another value under the same wildcard has its own counter.
    assert_eq!(one(&engine, &[("path", "/api/b")])["overallCode"], "OK");
    // share_threshold: every value matching the pattern counts together.
    assert_eq!(one(&engine, &[("path", "/files/1/thumb.png")])["overallCode"], "OK");
    assert_eq!(one(&engine, &[("path", "/files/2/thumb.jpg")])["overallCode"], "OK");
    assert_eq!(one(&engine, &[("path", "/files/3/thumb.gif")])["overallCode"], "OVER_LIMIT");
    // Not matching the pattern: not limited.
    assert_eq!(one(&engine, &[("path", "/other")])["statuses"][0].get("currentLimit"), None);
}

#[test]
fn answers_per_descriptor_as_upstream() {
    let (_redis, engine) = start();
    // requests_per_unit 0: always over.
    let banned = one(&engine, &[("banned", "x")]);
    assert_eq!((banned["overallCode"].as_str(), code(&banned, 0)), (Some("OVER_LIMIT"), "OVER_LIMIT"));
    assert_eq!(banned["statuses"][0]["currentLimit"]["unit"], "SECOND");
    // Unlimited: OK with the most a u32 holds remaining, no current limit.
    let free = one(&engine, &[("free", "x")]);
    assert_eq!(free["statuses"][0]["limitRemaining"], u32::MAX);
    assert_eq!(free["statuses"][0].get("currentLimit"), None);
    // Shadow: over, yet OK for the descriptor and the request.
    one(&engine, &[("trial", "t")]);
    let shadow = one(&engine, &[("trial", "t")]);
    assert_eq!((shadow["overallCode"].as_str(), code(&shadow, 0)), (Some("OK"), "OK"), "{shadow}");
    // replaces: premium replaces basic in the same request; basic alone is limited.
    let both = descriptors(&[&[("plan", "basic")], &[("plan", "premium")]]);
    for _ in 0..3 {
        let (_, a) = ask(&engine, json!({ "domain": "compat", "descriptors": both }));
        assert_eq!(a["overallCode"], "OK", "{a}");
        assert_eq!(a["statuses"][0].get("currentLimit"), None, "basic is replaced: {a}");
    }
    one(&engine, &[("plan", "basic")]);
    assert_eq!(one(&engine, &[("plan", "basic")])["overallCode"], "OVER_LIMIT");
    // quota_mode: over alone fails the request only when every quota descriptor is over.
    one(&engine, &[("quota", "q")]);
    let (_, q) = ask(
        &engine,
        json!({ "domain": "compat", "descriptors": descriptors(&[&[("quota", "q")], &[("counted", "c")]]) }),
    );
    assert_eq!((q["overallCode"].as_str(), code(&q, 0)), (Some("OVER_LIMIT"), "OVER_LIMIT"), "{q}");
    let (_, q2) =
        ask(&engine, json!({ "domain": "compat", "descriptors": descriptors(&[&[("quota", "q")], &[("free", "f")]]) }));
    assert_eq!(q2["overallCode"], "OVER_LIMIT", "the only quota descriptor is over: {q2}");
}

#[test]
fn hits_addend_zero_checks_without_counting_at_both_levels() {
    let (_redis, engine) = start();
    let check_only = json!({ "domain": "compat", "descriptors": [
        { "entries": [{ "key": "counted", "value": "h" }], "hitsAddend": 0 } ] });
    for _ in 0..5 {
        let (_, a) = ask(&engine, check_only.clone());
        assert_eq!(
            (a["overallCode"].as_str(), a["statuses"][0]["limitRemaining"].as_u64()),
            (Some("OK"), Some(3)),
            "{a}"
        );
    }
    // N at the descriptor level, given as a string (protobuf's JSON mapping of uint64).
    let (_, a) = ask(
        &engine,
        json!({ "domain": "compat", "descriptors": [
        { "entries": [{ "key": "counted", "value": "h" }], "hitsAddend": "2" } ] }),
    );
    assert_eq!(a["statuses"][0]["limitRemaining"], 1);
    // The request's hitsAddend 0 counts one; N counts N.
    let (_, a) = ask(
        &engine,
        json!({ "domain": "compat", "hitsAddend": 0, "descriptors": descriptors(&[&[("counted", "h")]]) }),
    );
    // (protobuf's JSON mapping leaves a zero out)
    assert_eq!(a["statuses"][0]["limitRemaining"].as_u64().unwrap_or(0), 0, "{a}");
    assert_eq!(a["overallCode"], "OK");
    let (_, a) = ask(
        &engine,
        json!({ "domain": "compat", "hitsAddend": 5, "descriptors": descriptors(&[&[("counted", "n")]]) }),
    );
    assert_eq!(a["overallCode"], "OVER_LIMIT");
}

#[test]
fn a_limit_override_replaces_the_configured_limit() {
    let (_redis, engine) = start();
    let body = json!({ "domain": "compat", "descriptors": [
        { "entries": [{ "key": "counted", "value": "o" }], "limit": { "requestsPerUnit": 1, "unit": "HOUR" } } ] });
    let (_, first) = ask(&engine, body.clone());
    assert_eq!(first["statuses"][0]["currentLimit"], json!({ "requestsPerUnit": 1, "unit": "HOUR" }), "{first}");
    assert_eq!(ask(&engine, body).1["overallCode"], "OVER_LIMIT");
    // Unknown to the config, yet limited by the override.
    let (_, other) = ask(
        &engine,
        json!({ "domain": "compat", "descriptors": [
        { "entries": [{ "key": "nowhere", "value": "x" }], "limit": { "requestsPerUnit": 0, "unit": 1 } } ] }),
    );
    assert_eq!(other["overallCode"], "OVER_LIMIT", "{other}");
}

#[test]
fn requests_upstream_refuses_are_refused() {
    let (_redis, engine) = start();
    let (status, _) = ask(&engine, json!({ "domain": "", "descriptors": descriptors(&[&[("counted", "x")]]) }));
    assert_eq!(status, 400, "an empty domain");
    let (status, _) = ask(&engine, json!({ "domain": "compat", "descriptors": [] }));
    assert_eq!(status, 400, "no descriptors");
    let (status, _) =
        ask(&engine, json!({ "domain": "compat", "descriptors": descriptors(&[&[("counted", "x")]]), "extra": 1 }));
    assert_eq!(status, 400, "an unknown field (protobuf's JSON mapping refuses it)");
}

/// Envoy with its own rate limit filter (gRPC) in front of a demo backend,
/// asking `engine`: `/api/...` sends the path as a wildcard-matched value,
/// `/shadow` a shadow-mode descriptor, `/override` a descriptor with a
/// `limit` override taken from dynamic metadata.
fn envoy_with_ratelimit_filter(engine: &Engine, backend: std::net::SocketAddr) -> Envoy {
    let yaml = format!(
        r#"
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: /api/ }}
                route:
                  cluster: backend
                  rate_limits: [{{ actions: [{{ request_headers: {{ header_name: ":path", descriptor_key: path }} }}] }}]
              - match: {{ prefix: /shadow }}
                route:
                  cluster: backend
                  rate_limits: [{{ actions: [{{ generic_key: {{ descriptor_key: trial, descriptor_value: t }} }}] }}]
              - match: {{ prefix: /override }}
                route:
                  cluster: backend
                  rate_limits:
                  - actions: [{{ generic_key: {{ descriptor_key: counted, descriptor_value: envoy-override }} }}]
                    limit:
                      dynamic_metadata:
                        metadata_key: {{ key: rl.override, path: [{{ key: limit }}] }}
          http_filters:
          - name: envoy.filters.http.set_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata:
              - metadata_namespace: rl.override
                value: {{ limit: {{ requests_per_unit: 1, unit: HOUR }} }}
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: compat
              failure_mode_deny: true
              timeout: 5s
              rate_limit_service:
                transport_api_version: V3
                grpc_service: {{ envoy_grpc: {{ cluster_name: rls }} }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {bp} }} }} }} }}] }}]
  - name: rls
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: rls
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {rp} }} }} }} }}] }}]
"#,
        bp = backend.port(),
        rp = engine.grpc.port()
    );
    Envoy::start(&yaml, 2)
}

#[test]
fn envoy_ratelimit_filter_gets_wildcard_override_and_shadow_answers() {
    let (_redis, engine) = start();
    let backends = Backends::start(&["a"]);
    let envoy = envoy_with_ratelimit_filter(&engine, backends.addr("a"));
    let status = |path: &str| http_get(envoy.addr, path, &[]).map(|r| r.status).unwrap_or(0);
    // Wildcard /api/*: 2 an hour per path value.
    assert_eq!((status("/api/x"), status("/api/x"), status("/api/x")), (200, 200, 429));
    assert_eq!(status("/api/y"), 200, "another value has its own counter");
    // The override from dynamic metadata: 1 an hour instead of the configured 3.
    assert_eq!((status("/override"), status("/override")), (200, 429));
    // Shadow mode: over the limit, never refused.
    assert_eq!((status("/shadow"), status("/shadow"), status("/shadow")), (200, 200, 200));
    // Envoy's own count of the service's answers: the two refusals above and
    // nothing for the shadow descriptor (answered OK).
    assert_eq!(envoy.stat("cluster.backend.ratelimit.over_limit"), Some(2), "{}", envoy.log());
    assert_eq!(envoy.stat("cluster.backend.ratelimit.ok"), Some(7));
}

/// Writes `text` as `dir/name` the way config tools do: a new file renamed
/// over the old one.
fn replace_file(dir: &std::path::Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn limit_of(engine: &Engine, key: &str) -> Option<u64> {
    one_in(engine, "live", &[(key, "v")])["statuses"][0]["currentLimit"]["requestsPerUnit"].as_u64()
}

fn one_in(engine: &Engine, domain: &str, entries: &[(&str, &str)]) -> Value {
    ask(engine, json!({ "domain": domain, "descriptors": descriptors(&[entries]) })).1
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn config_files_reload_on_change_and_a_bad_change_keeps_the_last_good_config() {
    let redis = Redis::start();
    let dir = scratch_dir("engine-watch");
    replace_file(
        &dir,
        "live.yaml",
        "domain: live\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 5 }\n",
    );
    let d = dir.display().to_string();
    let engine = Engine::start("domain: unused\n", &redis, &["--config", &d, "--watch", "100ms"]);
    assert_eq!(limit_of(&engine, "k"), Some(5));
    // A changed limit is in place within a few periods, without a restart.
    replace_file(
        &dir,
        "live.yaml",
        "domain: live\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 7 }\n",
    );
    wait_for("the reload", || limit_of(&engine, "k") == Some(7));
    // A broken change: refused, the last good config keeps answering.
    replace_file(&dir, "live.yaml", "domain: live\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight }\n");
    let metrics = || http_get(engine.http, "/metrics", &[]).expect("metrics").text();
    wait_for("the refusal", || metrics().contains("ratelimit_engine_config_reload_errors_total 1"));
    assert_eq!(limit_of(&engine, "k"), Some(7));
    assert!(metrics().contains("ratelimit_engine_config_reloads_total 1"));
    // Fixed again: applied.
    replace_file(
        &dir,
        "live.yaml",
        "domain: live\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 9 }\n",
    );
    wait_for("the second reload", || limit_of(&engine, "k") == Some(9));
}

#[test]
fn files_of_one_domain_merge_with_merge_domains_and_are_refused_without() {
    let redis = Redis::start();
    let dir = scratch_dir("engine-merge");
    replace_file(
        &dir,
        "a.yaml",
        "domain: live\ndescriptors:\n  - key: a\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n",
    );
    replace_file(
        &dir,
        "b.yaml",
        "domain: live\ndescriptors:\n  - key: b\n    rate_limit: { unit: hour, requests_per_unit: 2 }\n",
    );
    let d = dir.display().to_string();
    let engine = Engine::start("domain: unused\n", &redis, &["--config", &d, "--merge-domains"]);
    assert_eq!((limit_of(&engine, "a"), limit_of(&engine, "b")), (Some(1), Some(2)));
    let out = std::process::Command::new(integration_tests::fleet::engine_bin())
        .args(["--config", &d, "--redis", &redis.url(), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .expect("run engine");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("b.yaml: domain: \"live\" is declared twice"), "{err}");
}

// --- The examples of envoyproxy/ratelimit's README, each as config in,
// requests in, answers out (units made hours or days so that no window
// ends during a test; the matching is what each example shows). ---

const EXAMPLE_1: &str = r#"
domain: ex1
descriptors:
  - { key: database, value: users, rate_limit: { unit: hour, requests_per_unit: 3 } }
  - { key: database, value: default, rate_limit: { unit: hour, requests_per_unit: 3 } }
"#;

fn engine_with(yaml: &str) -> (Redis, Engine) {
    let redis = Redis::start();
    let engine = Engine::start(yaml, &redis, &["--algorithm", "fixed-window"]);
    (redis, engine)
}

fn call(engine: &Engine, domain: &str, descs: &[&[(&str, &str)]]) -> Value {
    ask(engine, json!({ "domain": domain, "descriptors": descriptors(descs) })).1
}

fn limit_rpu(answer: &Value, i: usize) -> Option<u64> {
    answer["statuses"][i]["currentLimit"]["requestsPerUnit"].as_u64()
}

#[test]
fn upstream_example_1_same_key_different_values_have_their_own_limits() {
    let (_r, e) = engine_with(EXAMPLE_1);
    for _ in 0..3 {
        assert_eq!(call(&e, "ex1", &[&[("database", "users")]])["overallCode"], "OK");
    }
    assert_eq!(call(&e, "ex1", &[&[("database", "users")]])["overallCode"], "OVER_LIMIT");
    assert_eq!(call(&e, "ex1", &[&[("database", "default")]])["overallCode"], "OK", "its own counter");
    assert_eq!(limit_rpu(&call(&e, "ex1", &[&[("database", "other")]]), 0), None, "no such value: not limited");
}

#[test]
fn upstream_example_2_nested_descriptors_and_several_descriptors_per_call() {
    let yaml = "domain: messaging\ndescriptors:\n  - key: message_type\n    value: marketing\n    descriptors:\n      - key: to_number\n        rate_limit: { unit: day, requests_per_unit: 2 }\n  - key: to_number\n    rate_limit: { unit: day, requests_per_unit: 3 }\n";
    let (_r, e) = engine_with(yaml);
    let both: [&[(&str, &str)]; 2] =
        [&[("message_type", "marketing"), ("to_number", "2061111111")], &[("to_number", "2061111111")]];
    let a = call(&e, "messaging", &both);
    assert_eq!((limit_rpu(&a, 0), limit_rpu(&a, 1)), (Some(2), Some(3)), "{a}");
    call(&e, "messaging", &both);
    // The marketing limit (2) is spent: the aggregate is OVER_LIMIT (a logical OR).
    let third = call(&e, "messaging", &both);
    assert_eq!(
        (third["overallCode"].as_str(), code(&third, 0), code(&third, 1)),
        (Some("OVER_LIMIT"), "OVER_LIMIT", "OK")
    );
    // Each number has its own counters.
    assert_eq!(
        call(&e, "messaging", &[&[("message_type", "marketing"), ("to_number", "2062222222")]])["overallCode"],
        "OK"
    );
}

#[test]
fn upstream_example_3_key_and_value_match_before_the_key_alone() {
    let yaml = "domain: edge_proxy_per_ip\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: hour, requests_per_unit: 10 }\n  - key: remote_address\n    value: 50.0.0.5\n    rate_limit: { unit: hour, requests_per_unit: 0 }\n";
    let (_r, e) = engine_with(yaml);
    let ok = call(&e, "edge_proxy_per_ip", &[&[("remote_address", "50.0.0.1")]]);
    assert_eq!((ok["overallCode"].as_str(), limit_rpu(&ok, 0)), (Some("OK"), Some(10)));
    let blocked = call(&e, "edge_proxy_per_ip", &[&[("remote_address", "50.0.0.5")]]);
    assert_eq!(
        (blocked["overallCode"].as_str(), limit_rpu(&blocked, 0).unwrap_or(0)),
        (Some("OVER_LIMIT"), 0),
        "the key-and-value node (0: blocked), not the key alone: {blocked}"
    );
}

#[test]
fn upstream_example_4_a_descriptor_matches_only_at_its_own_depth() {
    let flat = "domain: example4\ndescriptors:\n  - key: key\n    value: value\n    rate_limit: { requests_per_unit: 300, unit: hour }\n";
    let (_r, e) = engine_with(flat);
    assert_eq!(limit_rpu(&call(&e, "example4", &[&[("key", "value"), ("subkey", "subvalue")]]), 0), None);
    let nested = "domain: example4\ndescriptors:\n  - key: key\n    value: value\n    descriptors:\n      - key: subkey\n        rate_limit: { requests_per_unit: 300, unit: hour }\n";
    let (_r2, e2) = engine_with(nested);
    assert_eq!(limit_rpu(&call(&e2, "example4", &[&[("key", "value"), ("subkey", "subvalue")]]), 0), Some(300));
}

#[test]
fn upstream_examples_5_to_7_unlimited_shadow_and_replaces() {
    let yaml = r#"
domain: internal
descriptors:
  - { key: ldap, rate_limit: { unlimited: true } }
  - { key: azure, rate_limit: { unit: hour, requests_per_unit: 100 } }
  - key: service
    descriptors:
      - { key: user, value: user-a, shadow_mode: true, rate_limit: { requests_per_unit: 1, unit: hour } }
      - { key: user, value: user-b, rate_limit: { requests_per_unit: 1, unit: hour } }
  - key: key_1
    value: value_1
    descriptors:
      - { key: user, value: bkthomps, rate_limit: { name: specific_limit, requests_per_unit: 1, unit: hour } }
  - key: key_2
    value: value_2
    descriptors:
      - { key: user, value: bkthomps, rate_limit: { replaces: [{ name: specific_limit }], requests_per_unit: 2, unit: hour } }
"#;
    let (_r, e) = engine_with(yaml);
    // 5: unlimited answers OK with MaxUint32 remaining.
    let ldap = call(&e, "internal", &[&[("ldap", "x")]]);
    assert_eq!(
        (ldap["overallCode"].as_str(), ldap["statuses"][0]["limitRemaining"].as_u64()),
        (Some("OK"), Some(u64::from(u32::MAX)))
    );
    // 6: user-a (shadow) is never limited; user-b is.
    for _ in 0..3 {
        assert_eq!(call(&e, "internal", &[&[("service", "auth-service"), ("user", "user-a")]])["overallCode"], "OK");
    }
    call(&e, "internal", &[&[("service", "auth-service"), ("user", "user-b")]]);
    assert_eq!(
        call(&e, "internal", &[&[("service", "auth-service"), ("user", "user-b")]])["overallCode"],
        "OVER_LIMIT"
    );
    // 7: together, specific_limit (1) is replaced by the 2/hour one; alone it applies.
    let together: [&[(&str, &str)]; 2] =
        [&[("key_1", "value_1"), ("user", "bkthomps")], &[("key_2", "value_2"), ("user", "bkthomps")]];
    assert_eq!(call(&e, "internal", &together)["overallCode"], "OK");
    assert_eq!(call(&e, "internal", &together)["overallCode"], "OK", "the replaced 1/hour limit did not apply");
    assert_eq!(call(&e, "internal", &together)["overallCode"], "OVER_LIMIT", "the replacing 2/hour limit did");
    assert_eq!(call(&e, "internal", &[&[("key_1", "value_1"), ("user", "bkthomps")]])["overallCode"], "OK");
    assert_eq!(call(&e, "internal", &[&[("key_1", "value_1"), ("user", "bkthomps")]])["overallCode"], "OVER_LIMIT");
}

#[test]
fn upstream_examples_9_and_11_wildcards_and_shared_thresholds() {
    let yaml = r#"
domain: example9
descriptors:
  - { key: key1, value: value*, rate_limit: { unit: hour, requests_per_unit: 1 } }
  - { key: path, value: /api/*/action, rate_limit: { unit: hour, requests_per_unit: 1 } }
  - { key: route, value: /api/*/resource/*/action, rate_limit: { unit: hour, requests_per_unit: 1 } }
  - { key: files, value: files/*, share_threshold: true, rate_limit: { unit: hour, requests_per_unit: 2 } }
  - { key: files_no_share, value: files_no_share/*, share_threshold: false, rate_limit: { unit: hour, requests_per_unit: 2 } }
"#;
    let (_r, e) = engine_with(yaml);
    let limited = |k: &str, v: &str| limit_rpu(&call(&e, "example9", &[&[(k, v)]]), 0).is_some();
    assert!(limited("key1", "value1") && limited("key1", "valueXYZ") && !limited("key1", "valu"));
    assert!(limited("path", "/api/123/action") && limited("path", "/api/user-id/action"));
    assert!(!limited("path", "/api/123/other"));
    assert!(limited("route", "/api/v1/resource/123/action") && !limited("route", "/api/v1/resource/123"));
    // 11: files/* share one threshold of 2; files_no_share/* each have 2.
    let over = |k: &str, v: &str| call(&e, "example9", &[&[(k, v)]])["overallCode"] == "OVER_LIMIT";
    assert!(!over("files", "files/a") && !over("files", "files/b") && over("files", "files/c"));
    assert!(!over("files_no_share", "files_no_share/a") && !over("files_no_share", "files_no_share/b"));
    assert!(!over("files_no_share", "files_no_share/c"), "unshared: each value has its own 2");
}
