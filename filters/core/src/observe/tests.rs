//! Decisions on the span and metrics in Prometheus text, through the
//! recording host: what each filter writes with `trace`, that nothing is
//! written (nor one more host call made) without it, and the exporter's
//! series as Envoy's `stats_tags` name them.

use super::*;
use crate::breaker::BreakerFilter;
use crate::bundle::BundleFilter;
use crate::ratelimit::RateLimitFilter;
use crate::retry::RetryFilter;
use crate::sticky::StickyFilter;
use crate::store::CasRule;
use crate::testing::{Exchange, Outcome};

const LIMIT: &str = r#"{"limits":[{"name":"per-client","requests":10,"period":"1s","burst":2,"key":"client_ip"}]"#;

/// `LIMIT` with `extra` fields appended.
fn limit(extra: &str) -> String {
    format!("{LIMIT}{extra}}}")
}

fn observed<F: Filter>(rule: CasRule, config: &str) -> Exchange<Observed<F>> {
    let x = Exchange::<Observed<F>>::new(rule, config).unwrap();
    x.host.set_property("source.address", "10.0.0.1:5555");
    x.host.set_property("xds.cluster_name", "backend");
    x
}

fn written(x: &Exchange<impl Filter>) -> Vec<(String, String)> {
    x.host.written_properties()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn without_trace_nothing_is_written_and_no_host_call_is_added() {
    let bare = Exchange::<RateLimitFilter>::new(CasRule::Envoy, &limit("")).unwrap();
    bare.host.set_property("source.address", "10.0.0.1:5555");
    let wrapped = observed::<RateLimitFilter>(CasRule::Envoy, &limit(""));
    for _ in 0..4 {
        let (a, b) = (bare.get("/"), wrapped.get("/"));
        assert_eq!(a.calls, b.calls, "the wrapper adds no host call");
        assert_eq!(a.status(200), b.status(200));
        assert!(written(&wrapped).is_empty());
    }
    let bundle =
        r#"{"circuit_breaker":{"consecutive_failures":3},"retry":{"policies":[{"name":"all","max_retries":1}]}}"#;
    let bare = Exchange::<BundleFilter>::new(CasRule::Envoy, bundle).unwrap();
    bare.host.set_property("xds.cluster_name", "backend");
    let wrapped = observed::<BundleFilter>(CasRule::Envoy, bundle);
    for _ in 0..3 {
        assert_eq!(bare.get("/").calls, wrapped.get("/").calls);
        assert!(written(&wrapped).is_empty());
    }
}

#[test]
fn rate_limit_decisions_become_filter_state_in_envoy() {
    let x = observed::<RateLimitFilter>(CasRule::Envoy, &limit(r#","trace":true"#));
    x.get("/");
    assert_eq!(written(&x), pairs(&[("ratelimit.result", "allowed")]));
    x.get("/");
    let refused = x.get("/");
    assert_eq!(refused.status(200), 429);
    assert_eq!(written(&x), pairs(&[("ratelimit.result", "refused"), ("ratelimit.limit", "per-client")]));
    // A path no limit matches: nothing to say.
    let only_api = r#"{"limits":[{"name":"api","requests":1,"period":"1s","key":"all","match":{"path_prefix":"/api"}}],"trace":true}"#;
    let y = observed::<RateLimitFilter>(CasRule::Envoy, only_api);
    y.get("/other");
    assert!(written(&y).is_empty());
}

#[test]
fn shadow_refusals_are_named_as_such() {
    let x = observed::<RateLimitFilter>(CasRule::Envoy, &limit(r#","mode":"shadow","trace":true"#));
    for _ in 0..3 {
        x.get("/");
    }
    assert_eq!(x.host.written_property("ratelimit.result").as_deref(), Some("shadow_refused"));
    assert_eq!(x.host.written_property("ratelimit.limit").as_deref(), Some("per-client"));
}

#[test]
fn in_nginx_an_attribute_is_the_variable_of_its_name() {
    let x = observed::<RateLimitFilter>(CasRule::NginxStrict, &limit(r#","trace":true"#));
    x.get("/");
    assert_eq!(written(&x), pairs(&[("ngx.filters_ratelimit_result", "allowed")]));
    assert_eq!(attribute_property(HostKind::Nginx, "circuit_breaker.state"), ["ngx", "filters_circuit_breaker_state"]);
    assert_eq!(attribute_property(HostKind::Envoy, "circuit_breaker.state"), ["circuit_breaker.state"]);
}

fn breaker_send(x: &Exchange<Observed<BreakerFilter>>, status: u16) -> Outcome {
    x.request(&[(":method", "GET"), (":path", "/"), (":authority", "example.com")], status, &[])
}

#[test]
fn breaker_state_key_decision_and_transition() {
    let x = observed::<BreakerFilter>(CasRule::Envoy, r#"{"consecutive_failures":2,"open_for":"10s","trace":true}"#);
    breaker_send(&x, 200);
    assert_eq!(
        written(&x),
        pairs(&[
            ("circuit_breaker.key", "backend"),
            ("circuit_breaker.state", "closed"),
            ("circuit_breaker.decision", "passed")
        ])
    );
    breaker_send(&x, 503);
    breaker_send(&x, 503);
    assert_eq!(x.host.written_property("circuit_breaker.transition").as_deref(), Some("closed->open"));
    let rejected = breaker_send(&x, 200);
    assert_eq!(rejected.status(200), 503);
    assert_eq!(
        written(&x),
        pairs(&[
            ("circuit_breaker.key", "backend"),
            ("circuit_breaker.state", "open"),
            ("circuit_breaker.decision", "rejected")
        ])
    );
    x.host.clock.advance(11_000_000_000);
    breaker_send(&x, 200);
    assert_eq!(x.host.written_property("circuit_breaker.decision").as_deref(), Some("probe"));
    assert_eq!(x.host.written_property("circuit_breaker.transition").as_deref(), Some("half-open->closed"));
}

#[test]
fn each_attribute_is_written_once_per_value() {
    let x = observed::<BreakerFilter>(CasRule::Envoy, r#"{"consecutive_failures":2,"trace":true}"#);
    breaker_send(&x, 200);
    // Request callback wrote three; the response changed none of them.
    assert_eq!(written(&x).len(), 3);
}

const RETRY: &str = r#"{"policies":[{"name":"reads","match":{"methods":["GET"]},"max_retries":2}],
  "budget":{"ratio":0.0,"min_per_second":1,"window":"10s"},"trace":true}"#;

fn retry_send(x: &Exchange<Observed<RetryFilter>>, headers: &[(&str, &str)], attempts: u64) -> Outcome {
    let (mut stream, flow) = x.start(headers);
    x.host.set_property_u64("upstream.request_attempt_count", attempts);
    x.finish(&mut stream, flow, Some(&[(":status", "200")]))
}

#[test]
fn retry_policy_grant_budget_retries_and_forged_headers() {
    let x = observed::<RetryFilter>(CasRule::Envoy, RETRY);
    retry_send(&x, &[(":method", "GET"), (":path", "/"), ("x-envoy-max-retries", "9")], 2);
    assert_eq!(
        written(&x),
        pairs(&[
            ("retry.forged", "1"),
            ("retry.policy", "reads"),
            ("retry.granted", "2"),
            ("retry.budget", "ok"),
            ("retry.retries", "1"),
        ])
    );
    // The budget (1 retry per second over 10 s, no ratio) runs out: a
    // request is then granted none.
    for _ in 0..10 {
        retry_send(&x, &[(":method", "GET"), (":path", "/")], 3);
        if x.host.written_property("retry.granted").as_deref() == Some("0") {
            break;
        }
    }
    assert_eq!(x.host.written_property("retry.granted").as_deref(), Some("0"));
    assert_eq!(x.host.written_property("retry.budget").as_deref(), Some("refused"));
    // No policy for a POST: nothing.
    retry_send(&x, &[(":method", "POST"), (":path", "/")], 1);
    assert!(written(&x).is_empty());
}

const STICKY: &str = r#"{
  "backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"}],
  "session_key":["header:x-session-id"],
  "cookie":{"name":"sticky","secret":"0123456789abcdef-secret"},
  "health":{"failures":1,"eject_for":"30s"},"trace":true}"#;

fn sticky_send(x: &Exchange<Observed<StickyFilter>>, headers: &[(&str, &str)], status: u16) -> Outcome {
    let (mut stream, flow) = x.start(headers);
    x.host.set_property_u64("upstream.request_attempt_count", 1);
    if let Some(a) = x.host.upstream_header("x-sticky-upstream") {
        x.host.set_property("upstream.address", a);
    }
    let code = status.to_string();
    x.finish(&mut stream, flow, Some(&[(":status", code.as_str())]))
}

#[test]
fn sticky_placement_and_backend() {
    let x = observed::<StickyFilter>(CasRule::Envoy, STICKY);
    let first = sticky_send(&x, &[(":method", "GET"), (":path", "/"), ("x-session-id", "s1")], 200);
    assert_eq!(x.host.written_property("sticky.placement").as_deref(), Some("hashed"));
    let backend = x.host.written_property("sticky.backend").unwrap();
    let cookie = first.header("set-cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let headers = [(":method", "GET"), (":path", "/"), ("cookie", cookie.as_str())];
    sticky_send(&x, &headers, 503); // ejects its backend (failures: 1)
    assert_eq!(x.host.written_property("sticky.placement").as_deref(), Some("pinned"));
    assert_eq!(x.host.written_property("sticky.backend").as_deref(), Some(backend.as_str()));
    sticky_send(&x, &headers, 200);
    assert_eq!(x.host.written_property("sticky.placement").as_deref(), Some("failover"));
    assert_ne!(x.host.written_property("sticky.backend").as_deref(), Some(backend.as_str()));
    sticky_send(&x, &[(":method", "GET"), (":path", "/"), ("cookie", "sticky=forged.value")], 200);
    assert_eq!(x.host.written_property("sticky.cookie").as_deref(), Some("rejected"));
}

#[test]
fn dynamic_sticky_placed_then_pinned_then_repinned() {
    let config = r#"{"session_key":["header:x-session-id"],
      "cookie":{"name":"sticky","secret":"0123456789abcdef-secret"},"trace":true}"#;
    let x = observed::<StickyFilter>(CasRule::Envoy, config);
    let send = |cookie: Option<&str>, answered: &str, attempts: u64| {
        let mut headers = vec![(":method", "GET"), (":path", "/"), ("x-session-id", "s1")];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        let (mut stream, flow) = x.start(&headers);
        x.host.set_property_u64("upstream.request_attempt_count", attempts);
        x.host.set_property("upstream.address", answered);
        x.finish(&mut stream, flow, Some(&[(":status", "200")]))
    };
    let out = send(None, "10.0.0.7:8080", 1);
    assert_eq!(x.host.written_property("sticky.placement").as_deref(), Some("placed"));
    assert_eq!(x.host.written_property("sticky.backend").as_deref(), Some("10.0.0.7:8080"));
    let cookie = out.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    send(Some(&cookie), "10.0.0.7:8080", 1);
    assert_eq!(x.host.written_property("sticky.placement").as_deref(), Some("pinned"));
    // Envoy no longer has the pinned host: another answers, the pin moves.
    send(Some(&cookie), "10.0.0.9:8080", 1);
    assert_eq!(x.host.written_property("sticky.placement").as_deref(), Some("repinned"));
    assert_eq!(x.host.written_property("sticky.backend").as_deref(), Some("10.0.0.9:8080"));
}

#[test]
fn the_bundle_writes_each_policys_attributes_and_reads_the_fields_at_its_top_level() {
    let config = r#"{"rate_limit":{"limits":[{"name":"all","requests":100,"period":"1s","key":"all"}]},
      "circuit_breaker":{"consecutive_failures":3},"trace":true}"#;
    let x = observed::<BundleFilter>(CasRule::Envoy, config);
    x.get("/");
    let names: Vec<String> = written(&x).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["ratelimit.result", "circuit_breaker.key", "circuit_breaker.state", "circuit_breaker.decision"]);
    let in_section = r#"{"circuit_breaker":{"consecutive_failures":3,"trace":true}}"#;
    let err = Observed::<BundleFilter>::check(in_section.as_bytes()).unwrap_err();
    assert_eq!(err.field, "circuit_breaker.trace");
    let err = Observed::<BundleFilter>::check(br#"{"retry":{"policies":[],"metrics_path":"/m"}}"#).unwrap_err();
    assert_eq!(err.field, "retry.metrics_path");
}

#[test]
fn bad_metrics_paths_are_refused_naming_the_field() {
    for bad in [r#""metrics""#, r#""/a b""#, r#""/m?x=1""#, "7"] {
        let config = limit(&format!(r#","metrics_path":{bad}"#));
        let err = Observed::<RateLimitFilter>::check(config.as_bytes()).unwrap_err();
        assert_eq!(err.field, "metrics_path", "{bad}: {err:?}");
    }
    let long = format!("/{}", "m".repeat(MAX_METRICS_PATH));
    let err = Observed::<RateLimitFilter>::check(limit(&format!(r#","metrics_path":"{long}""#)).as_bytes());
    assert_eq!(err.unwrap_err().field, "metrics_path");
    let err = Observed::<RateLimitFilter>::check(limit(r#","trace":"yes""#).as_bytes()).unwrap_err();
    assert_eq!(err.field, "trace");
}

#[test]
fn the_metrics_path_is_answered_in_prometheus_text() {
    let x = observed::<RateLimitFilter>(CasRule::Envoy, &limit(r#","metrics_path":"/filters/metrics""#));
    for _ in 0..3 {
        x.get("/");
    }
    let out = x.get("/filters/metrics?x=1");
    let reply = out.reply.expect("answered by the filter");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let body = reply.body;
    assert!(body.contains("# TYPE rate_limit_allowed counter\nrate_limit_allowed{limit=\"per-client\"} 2\n"), "{body}");
    assert!(body.contains("rate_limit_refused{limit=\"per-client\"} 1\n"), "{body}");
    assert!(body.contains("# TYPE rate_limit_configured counter\nrate_limit_configured 1\n"), "{body}");
    // The exporter's own request is not rate limited nor counted.
    assert!(!body.contains("rate_limit_allowed{limit=\"per-client\"} 3"), "{body}");
    // Any other path is the filter's.
    assert_eq!(x.get("/filters/metrics/x").status(200), 429);
}

#[test]
fn an_exporter_only_configuration_serves_what_the_other_configurations_defined() {
    let policy = observed::<RateLimitFilter>(CasRule::NginxStrict, &limit(""));
    policy.get("/");
    // Another configuration of the same module in the same VM (an nginx
    // location of its own): no policy, only the metrics.
    let config = Observed::<RateLimitFilter>::check(br#"{"metrics_path":"/metrics"}"#).unwrap();
    let exporter = Observed::<RateLimitFilter>::build(&policy.host, config).unwrap();
    assert!(exporter.filter().is_none(), "no policy built");
    let mut stream = ObservedStream::default();
    policy.host.begin(&[(":method", "GET"), (":path", "/metrics")]);
    assert_eq!(exporter.on_request_headers(&mut stream, &policy.host), Flow::Pause);
    let body = policy.host.reply().expect("served").body;
    assert!(body.contains("rate_limit_allowed{limit=\"per-client\"} 1\n"), "{body}");
    // Any other request passes untouched.
    policy.host.begin(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(exporter.on_request_headers(&mut ObservedStream::default(), &policy.host), Flow::Continue);
    assert!(policy.host.reply().is_none());
    assert!(Observed::<RateLimitFilter>::check(br#"{"trace":true}"#).is_err(), "trace alone is no exporter");
}

#[test]
fn series_follow_the_sample_stats_tags() {
    assert_eq!(series("rate_limit.per-client.allowed"), ("rate_limit_allowed".into(), Some(("limit", "per-client"))));
    assert_eq!(series("rate_limit.global.over_limit"), ("rate_limit_global_over_limit".into(), None));
    assert_eq!(series("rate_limit.global.allowed"), ("rate_limit_allowed".into(), Some(("limit", "global"))));
    assert_eq!(
        series("circuit_breaker.svc_a.half_opened"),
        ("circuit_breaker_half_opened".into(), Some(("breaker", "svc_a")))
    );
    assert_eq!(series("circuit_breaker.untracked"), ("circuit_breaker_untracked".into(), None));
    assert_eq!(series("retry.reads.requests"), ("retry_requests".into(), Some(("policy", "reads"))));
    assert_eq!(series("retry.budget_refused"), ("retry_budget_refused".into(), None));
    assert_eq!(series("sticky.a.ejected"), ("sticky_ejected".into(), Some(("backend", "a"))));
    assert_eq!(series("sticky.ejected"), ("sticky_ejected".into(), None));
    assert_eq!(series("bundle.configured"), ("bundle_configured".into(), None));
}

#[test]
fn prometheus_text_groups_families_and_escapes_labels() {
    let samples = vec![
        (MetricKind::Counter, "rate_limit.b.allowed".to_string(), 2),
        (MetricKind::Gauge, "circuit_breaker.k\"1.state".to_string(), 1),
        (MetricKind::Counter, "rate_limit.a.allowed".to_string(), 5),
    ];
    assert_eq!(
        prometheus_text(&samples),
        "# TYPE circuit_breaker_state gauge\ncircuit_breaker_state{breaker=\"k\\\"1\"} 1\n\
         # TYPE rate_limit_allowed counter\nrate_limit_allowed{limit=\"a\"} 5\nrate_limit_allowed{limit=\"b\"} 2\n"
    );
}

/// The attributes each filter's README lists under "Traces".
fn documented_attributes() -> std::collections::BTreeSet<String> {
    let readmes = [
        include_str!("../../../rate-limit/README.md"),
        include_str!("../../../circuit-breaker/README.md"),
        include_str!("../../../sticky-session/README.md"),
        include_str!("../../../retry/README.md"),
    ];
    let mut out = std::collections::BTreeSet::new();
    for readme in readmes {
        let section = readme.split("\n## Traces").nth(1).expect("a Traces section");
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            out.insert(row.split('`').nth(1).unwrap_or_default().to_string());
        }
    }
    out
}

#[test]
fn the_samples_carry_every_documented_attribute_and_no_other() {
    let documented = documented_attributes();
    assert_eq!(documented.len(), 14, "{documented:?}");
    // Envoy: one custom tag per attribute, reading its filter state.
    let envoy = include_str!("../../../../envoy/observability.yaml");
    let tags: std::collections::BTreeSet<String> = envoy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- { tag: "))
        .map(|l| {
            let tag = l.split(',').next().unwrap_or_default().to_string();
            assert!(l.contains(&format!("%FILTER_STATE(wasm.{tag}:PLAIN)%")), "{l}");
            tag
        })
        .collect();
    assert_eq!(tags, documented, "envoy/observability.yaml's custom_tags");
    // nginx: each attribute's variable declared and handed to otel_span_attr.
    let nginx = include_str!("../../../../nginx-otel/otel/http.conf");
    for a in &documented {
        let var = attribute_property(HostKind::Nginx, a).join(".").replacen("ngx.", "$", 1);
        assert!(nginx.contains(&format!("map $pid {var} {{ default \"\"; }}")), "{var} not declared");
        let attr = nginx.lines().find(|l| l.starts_with(&format!("otel_span_attr {a} "))).unwrap_or_default();
        assert!(attr.trim_end().ends_with(&format!("{var};")), "{a}: {attr:?}");
    }
}

#[test]
fn the_exporters_labels_are_the_samples_stats_tags() {
    for sample in [include_str!("../../../../envoy/bundle.yaml"), include_str!("../../../../envoy/observability.yaml")]
    {
        let mut tags = Vec::new();
        let mut name = None;
        for line in sample.lines().map(str::trim) {
            if let Some(n) = line.strip_prefix("- tag_name: ") {
                name = Some(n.to_string());
            } else if let (Some(r), Some(n)) = (line.strip_prefix("regex: "), name.take()) {
                tags.push((n, r.trim_matches('\'').to_string()));
            }
        }
        let expected: Vec<(String, String)> = LABELLED
            .iter()
            .map(|(prefix, label, suffixes)| {
                let tail = match suffixes {
                    [one] => one.to_string(),
                    many => format!("(?:{})", many.join("|")),
                };
                (label.to_string(), format!("^wasmcustom\\.{prefix}\\.((.+?)\\.){tail}$"))
            })
            .collect();
        assert_eq!(tags, expected);
    }
}
