//! The converter on Traefik configurations in each form it reads: the
//! configurations it prints, and the report lines for what it cannot
//! translate or translates with a difference.

// A test file: its helpers may panic on what the tests themselves check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use traefik_convert::{convert_text, Conversion, Format, Options};

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn opts() -> Options {
    Options { secret: Some("0123456789abcdef-secret".into()), ..Options::default() }
}

fn config<'a>(c: &'a Conversion, from: &str) -> &'a Value {
    &c.filters.iter().find(|t| t.from.eq_ignore_ascii_case(from)).unwrap_or_else(|| panic!("no {from}")).config
}

fn reported(c: &Conversion, start: &str) -> bool {
    c.report.lines.iter().any(|l| l.starts_with(start))
}

#[test]
fn the_docker_labels_of_the_issue() {
    let mut c = convert_text(&data("docs.labels"), Format::sniff(&data("docs.labels")), &opts()).unwrap();
    assert_eq!(
        config(&c, "http.middlewares.docs-ratelimit.ratelimit"),
        &json!({"limits": [{"name": "docs-ratelimit", "requests": 100, "period": "1s", "burst": 50, "key": "client_ip"}], "ipv6_prefix": 128})
    );
    assert_eq!(
        config(&c, "http.middlewares.docs.circuitbreaker"),
        &json!({"key": "cluster", "traefik": {"expression": "ResponseCodeRatio(500, 600, 0, 600) > 0.25"}})
    );
    assert_eq!(
        config(&c, "http.middlewares.docs.retry"),
        &json!({"policies": [{"name": "docs", "retry_on": "connect-failure,reset-before-request", "max_retries": 3, "retry_non_idempotent": true}], "retry_after": {}})
    );
    assert_eq!(
        c.envoy_retry_policies,
        vec![(
            "http.middlewares.docs.retry".to_string(),
            json!({"retry_on": "connect-failure,reset-before-request", "num_retries": 3, "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.2s"}})
        )]
    );
    let bundle = c.bundle().unwrap();
    assert_eq!(bundle["rate_limit"], *config(&c, "http.middlewares.docs-ratelimit.ratelimit"));
    assert_eq!(bundle["circuit_breaker"], *config(&c, "http.middlewares.docs.circuitbreaker"));
    assert_eq!(bundle["retry"], *config(&c, "http.middlewares.docs.retry"));
    assert!(
        reported(&c, "untranslated: http.routers.docs: routing is Envoy's route configuration"),
        "{:#?}",
        c.report.lines
    );
    assert!(reported(&c, "untranslated: line 2: traefik.enable: not part of Traefik's dynamic configuration"));
    assert!(reported(&c, "differs: http.middlewares.docs.retry: the retry budget applies"));
}

#[test]
fn a_repeated_label_is_reported_and_the_last_one_wins() {
    let text = "traefik.http.middlewares.a.ratelimit.average=10\ntraefik.http.middlewares.a.ratelimit.average=20\n";
    let c = convert_text(text, Format::Labels, &opts()).unwrap();
    assert_eq!(config(&c, "http.middlewares.a.ratelimit")["limits"][0]["requests"], 20);
    assert!(reported(
        &c,
        "note: line 2: label traefik.http.middlewares.a.ratelimit.average repeats line 1; Traefik keeps the last one"
    ));
}

#[test]
fn a_file_provider_yaml_with_every_kind() {
    let mut c = convert_text(&data("dynamic.yaml"), Format::Yaml, &opts()).unwrap();
    assert!(c.bundle().is_some());
    assert_eq!(
        config(&c, "http.middlewares.shop-limit.rateLimit"),
        &json!({"limits": [{"name": "shop-limit", "requests": 30, "period": "1m", "burst": 10, "key": "client_ip"}], "ipv6_prefix": 128, "trusted_hops": 2})
    );
    assert_eq!(
        config(&c, "http.middlewares.by-tenant.rateLimit")["limits"][0],
        json!({"name": "by-tenant", "requests": 5, "period": "1s", "burst": 1, "key": "header:X-Tenant"}),
        "Traefik's burst defaults to 1"
    );
    assert_eq!(
        config(&c, "http.middlewares.shop-breaker.circuitBreaker"),
        &json!({"key": "cluster", "traefik": {"expression": "NetworkErrorRatio() > 0.30 || LatencyAtQuantileMS(50.0) > 100", "checkPeriod": "250ms", "fallbackDuration": "30s", "recoveryDuration": "90s", "responseCode": 502}})
    );
    assert_eq!(
        config(&c, "http.middlewares.shop-retry.retry")["policies"][0]["max_retries"],
        2,
        "attempts count the first try"
    );
    assert_eq!(
        config(&c, "http.services.shop.loadBalancer.sticky.cookie"),
        &json!({
            "backends": [{"name": "s1", "address": "127.0.0.1:8081", "weight": 1}, {"name": "s2", "address": "127.0.0.1:8082", "weight": 2}],
            "cookie": {"name": "shop_affinity", "secure": true, "http_only": true, "path": "/", "sign": true, "same_site": "Strict", "max_age": "3600s", "secret": "0123456789abcdef-secret"}
        })
    );
    for line in [
        "untranslated: http.middlewares.shop-limit.rateLimit.sourceCriterion.ipStrategy.excludedIPs: (10.0.0.0/8, 192.168.1.7)",
        "note: http.middlewares.shop-limit.rateLimit.sourceCriterion.ipStrategy.depth: ",
        "untranslated: http.middlewares.strip.stripPrefix: ",
        "untranslated: http.services.shop.loadBalancer.sticky.cookie.domain: (example.com)",
        "untranslated: tcp: ",
        "differs: http.middlewares.by-tenant.rateLimit.sourceCriterion.requestHeaderName: ",
        "differs: http.middlewares.shop-limit.rateLimit: its trusted_hops differs from the bundle's first rate limit",
    ] {
        assert!(reported(&c, line), "missing {line}\n{:#?}", c.report.lines);
    }
}

#[test]
fn toml_with_defaults_left_to_traefik_and_servers_from_the_command_line() {
    let c = convert_text(&data("dynamic.toml"), Format::Toml, &opts()).unwrap();
    assert_eq!(config(&c, "http.middlewares.shop-limit.rateLimit")["limits"][0]["key"], "host");
    assert_eq!(
        config(&c, "http.middlewares.shop-breaker.circuitBreaker")["traefik"],
        json!({"expression": "ResponseCodeRatio(500, 600, 0, 600) > 0.25"}),
        "fallbackDuration 0 is Traefik's default: left out"
    );
    assert!(reported(&c, "differs: http.middlewares.shop-breaker.circuitBreaker.fallbackDuration: zero or negative"));
    assert!(reported(&c, "untranslated: http.services.shop.loadBalancer.sticky.cookie: the service's servers are not in this configuration"));
    assert!(!c.filters.iter().any(|t| t.filter == "sticky-session"));

    let with = Options { servers: vec![("shop".into(), vec!["127.0.0.1:9001".into()])], ..opts() };
    let c = convert_text(&data("dynamic.toml"), Format::Toml, &with).unwrap();
    let sticky = config(&c, "http.services.shop.loadBalancer.sticky.cookie");
    assert_eq!(sticky["backends"], json!([{"name": "s1", "address": "127.0.0.1:9001"}]));
    assert_eq!(sticky["cookie"]["name"], traefik_convert_name("shop"), "Traefik's derived cookie name");
    assert_eq!(sticky["cookie"]["http_only"], false, "Traefik's default");
}

fn traefik_convert_name(service: &str) -> String {
    traefik_convert::traefik_cookie_name(service)
}

#[test]
fn the_derived_cookie_name_is_traefiks() {
    // "_" and the first hex digits of SHA-1("_TRAEFIK_BACKEND_docs").
    assert_eq!(traefik_convert::traefik_cookie_name("docs"), "_ce081");
}

#[test]
fn kubernetes_middleware_resources() {
    let c = convert_text(&data("middleware.k8s.yaml"), Format::Yaml, &opts()).unwrap();
    assert_eq!(
        config(&c, "http.middlewares.latency-check.circuitBreaker")["traefik"]["expression"],
        "LatencyAtQuantileMS(50.0) > 100"
    );
    let limit = config(&c, "http.middlewares.test-ratelimit.rateLimit");
    assert_eq!(limit["ipv6_prefix"], 64, "ipStrategy.ipv6Subnet");
    assert_eq!(limit["limits"][0]["burst"], 200);
    assert!(reported(&c, "untranslated: document 3: a Kubernetes IngressRoute"));
}

#[test]
fn what_traefik_refuses_or_ignores_is_reported_not_written() {
    let text = r#"
http:
  middlewares:
    none:
      rateLimit: {average: 0}
    zero:
      retry: {attempts: 0}
    nobreak:
      circuitBreaker: {checkPeriod: 1s}
    typo:
      rateLimit: {average: 10, burts: 5, period: 0}
    bad:
      circuitBreaker: {expression: "NetworkErrorRate() > 0.5"}
"#;
    let c = convert_text(text, Format::Yaml, &opts()).unwrap();
    assert_eq!(c.filters.len(), 1, "{:#?}", c.filters);
    assert_eq!(c.filters[0].config["limits"][0]["period"], "1s", "Traefik reads a zero period as one second");
    for line in [
        "untranslated: http.middlewares.none.rateLimit: average is 0 or absent",
        "untranslated: http.middlewares.zero.retry.attempts: must be at least 1",
        "untranslated: http.middlewares.nobreak.circuitBreaker: no expression",
        "untranslated: http.middlewares.typo.rateLimit.burts: no equivalent",
        "untranslated: http.middlewares.bad.circuitBreaker: the circuit-breaker filter refuses the translation: traefik.expression: at column 1: unknown function `NetworkErrorRate`",
    ] {
        assert!(reported(&c, line), "missing {line}\n{:#?}", c.report.lines);
    }
}

#[test]
fn the_command_prints_json_and_one_line_per_finding() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_traefik-convert"))
        .args([
            "--secret",
            "0123456789abcdef-secret",
            &format!("{}/tests/data/docs.labels", env!("CARGO_MANIFEST_DIR")),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["filters"].as_array().unwrap().len(), 3);
    assert_eq!(printed["bundle"]["rate_limit"]["limits"][0]["requests"], 100);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
    assert!(stderr
        .lines()
        .all(|l| l.starts_with("untranslated: ") || l.starts_with("differs: ") || l.starts_with("note: ")));

    let bad =
        std::process::Command::new(env!("CARGO_BIN_EXE_traefik-convert")).args(["--format", "xml"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
