use super::*;

fn config(json: &str) -> RetryConfig {
    RetryConfig::from_json(json.as_bytes()).unwrap()
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut h = vec![(":method".to_string(), method.to_string()), (":path".to_string(), path.to_string())];
    h.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RequestView::new(h, Some("203.0.113.9:1234".into()))
}

const POLICY: &str = r#"{"policies":[
    {"name":"api","match":{"path_prefix":"/api"},"retry_on":"5xx,reset,connect-failure,retriable-status-codes","max_retries":3,
     "per_try_timeout":"250ms","retriable_status_codes":[409],"hedge_on_per_try_timeout":true},
    {"name":"rest","max_retries":1}]}"#;

#[test]
fn first_matching_policy_sets_envoy_headers() {
    let c = config(POLICY);
    let p = c.plan(&req("GET", "/api/x", &[]), false);
    assert_eq!((p.policy, p.want, p.outcome), (Some(0), 3, Outcome::Retriable));
    let owned = |h: Vec<(&str, std::borrow::Cow<'_, str>)>| -> Vec<(String, String)> {
        h.into_iter().map(|(n, v)| (n.to_string(), v.into_owned())).collect()
    };
    let h = owned(c.headers(0, 3));
    assert_eq!(
        h,
        vec![
            ("x-envoy-retry-on".to_string(), "5xx,reset,connect-failure,retriable-status-codes".to_string()),
            ("x-envoy-max-retries".to_string(), "3".to_string()),
            ("x-envoy-upstream-rq-per-try-timeout-ms".to_string(), "250".to_string()),
            ("x-envoy-retriable-status-codes".to_string(), "409".to_string()),
            ("x-envoy-hedge-on-per-try-timeout".to_string(), "true".to_string()),
        ]
    );
    assert_eq!(c.plan(&req("GET", "/other", &[]), false).policy, Some(1));
    assert_eq!(owned(c.headers(0, 0)), vec![("x-envoy-max-retries".to_string(), "0".to_string())]);
}

#[test]
fn non_idempotent_requests_need_a_key_or_an_explicit_policy() {
    let c = config(POLICY);
    for m in ["POST", "PATCH"] {
        let p = c.plan(&req(m, "/api/x", &[]), false);
        assert_eq!((p.want, p.outcome), (0, Outcome::NotIdempotent), "{m}");
        let p = c.plan(&req(m, "/api/x", &[("Idempotency-Key", "abc")]), false);
        assert_eq!((p.want, p.outcome), (3, Outcome::Retriable), "{m} with key");
    }
    for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
        assert_eq!(c.plan(&req(m, "/api/x", &[]), false).want, 3, "{m}");
    }
    let explicit = config(r#"{"policies":[{"name":"p","retry_non_idempotent":true}]}"#);
    assert_eq!(explicit.plan(&req("POST", "/", &[]), false).want, 2);
    let custom = config(r#"{"policies":[{"name":"p"}],"idempotency_header":"X-Request-Once"}"#);
    assert_eq!(custom.plan(&req("POST", "/", &[("x-request-once", "1")]), false).want, 2);
}

#[test]
fn client_retry_headers_are_stripped_unless_trusted() {
    let c = config(r#"{"policies":[{"name":"p"}],"trusted_sources":["10.0.0.0/8"]}"#);
    let forged = [
        ("x-envoy-max-retries", "10"),
        ("X-Envoy-Retry-On", "5xx"),
        ("x-envoy-retry-grpc-on", "cancelled"),
        ("x-envoy-upstream-rq-timeout-ms", "99999"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
        ("x-envoy-retriable-status-codes", "404"),
        ("x-envoy-hedge-on-per-try-timeout", "true"),
        ("x-envoy-upstream-alt-stat-name", "keep-me"),
    ];
    let p = c.plan(&req("GET", "/", &forged), false);
    assert_eq!(p.strip.len(), 7, "{:?}", p.strip);
    assert!(!p.strip.iter().any(|n| n == "x-envoy-upstream-alt-stat-name"));
    assert_eq!(p.outcome, Outcome::Retriable);
    let trusted = c.plan(&req("GET", "/", &forged), true);
    assert_eq!((trusted.strip.len(), trusted.outcome), (0, Outcome::Trusted));
    assert!(c.trusted("10.1.2.3".parse().ok()));
    assert!(!c.trusted("203.0.113.9".parse().ok()));
}

#[test]
fn retry_after_defaults_and_overrides() {
    let c = config(r#"{"policies":[]}"#);
    assert_eq!((c.retry_after_for(429), c.retry_after_for(503), c.retry_after_for(500)), (Some(1), Some(1), None));
    let c = config(r#"{"policies":[],"retry_after":{"503":30}}"#);
    assert_eq!((c.retry_after_for(429), c.retry_after_for(503)), (None, Some(30)));
}

#[test]
fn each_bad_config_names_its_field() {
    let cases = [
        (r#"{"policies":[],"colour":1}"#, "colour: unknown field `colour`"),
        (
            r#"{"policies":[{"name":"p","retry_on":"5xx,sometimes"}]}"#,
            "policies[0].retry_on: unknown condition \"sometimes\"",
        ),
        (r#"{"policies":[{"name":"p","max_retries":11}]}"#, "policies[0].max_retries: must be at most 10"),
        (r#"{"policies":[{"name":"p","per_try_timeout":"fast"}]}"#, "policies[0].per_try_timeout: \"fast\""),
        (
            r#"{"policies":[{"name":"p","retriable_status_codes":[409]}]}"#,
            "policies[0].retriable_status_codes: has no effect unless",
        ),
        (
            r#"{"policies":[{"name":"p","hedge_on_per_try_timeout":true}]}"#,
            "policies[0].hedge_on_per_try_timeout: needs per_try_timeout",
        ),
        (r#"{"policies":[{"name":"p"},{"name":"p"}]}"#, "policies[1].name: \"p\" is used by another policy"),
        (
            r#"{"policies":[],"trusted_sources":["10.0.0.0/40"]}"#,
            "trusted_sources[0]: \"10.0.0.0/40\" is not an address or CIDR range",
        ),
        (r#"{"policies":[],"budget":{"ratio":-1}}"#, "budget.ratio: must be between 0 and 10"),
        (r#"{"policies":[],"budget":{"window":"1ms"}}"#, "budget.window: must be at least 10ms"),
        (r#"{"policies":[],"retry_after":{"200":1}}"#, "retry_after.200: keys must be 4xx or 5xx"),
        (r#"{"policies":[],"idempotency_header":"bad header"}"#, "idempotency_header: must be a header name"),
        (r#"{}"#, ".: missing field `policies`"),
    ];
    crate::testing::assert_each_refused(RetryConfig::from_json, &cases);
}

/// The JSON example in the filter's README is a valid configuration.
#[test]
fn readme_json_example_parses() {
    let readme = include_str!("../../../retry/README.md");
    let blocks = crate::testing::json_blocks(readme);
    assert!(!blocks.is_empty(), "no json examples found");
    for json in blocks {
        RetryConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("README example refused: {e}\n{json}"));
    }
}

#[test]
fn zero_durations_are_refused() {
    let got = RetryConfig::from_json(br#"{"policies":[{"name":"p","per_try_timeout":"0ms"}]}"#).unwrap_err();
    assert_eq!(got.to_string(), "invalid plugin configuration: policies[0].per_try_timeout: must be longer than zero");
    let got = RetryConfig::from_json(br#"{"policies":[],"budget":{"window":"0s"}}"#).unwrap_err();
    assert_eq!(got.to_string(), "invalid plugin configuration: budget.window: must be longer than zero");
}

#[test]
fn budgets_that_are_a_flood_of_retries_up_front_are_refused() {
    let got = RetryConfig::from_json(br#"{"policies":[],"budget":{"window":"1h"}}"#).unwrap_err().to_string();
    assert!(got.ends_with("budget.window: must be at most 1m (min_per_second x window retries are available at once)"));
    let got = RetryConfig::from_json(br#"{"policies":[],"budget":{"min_per_second":4294967295}}"#).unwrap_err();
    assert!(got.to_string().ends_with("budget.min_per_second: must be at most 100000"));
    assert!(RetryConfig::from_json(br#"[{"name":"p"}]"#)
        .unwrap_err()
        .to_string()
        .ends_with(".: must be a JSON object"));
}

#[test]
fn retry_control_headers_are_known_in_any_case() {
    for name in [
        "x-envoy-retry-on",
        "X-Envoy-Retry-Grpc-On",
        "X-ENVOY-MAX-RETRIES",
        "x-envoy-retriable-status-codes",
        "x-envoy-hedge-on-per-try-timeout",
        "X-Envoy-Upstream-Rq-Per-Try-TIMEOUT-Ms",
        "x-envoy-upstream-rq-timeout-ms",
    ] {
        assert!(super::is_retry_control_header(name), "{name}");
    }
    for name in ["x-envoy-max-retriesx", "x-envoy-upstream-rq-other", "x-envoy", "", "x-envoy-é-retry", "é"] {
        assert!(!super::is_retry_control_header(name), "{name}");
    }
}
