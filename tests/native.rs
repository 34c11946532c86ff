//! What only the native build has to show in a real Envoy: a panic in the
//! module (a bug, made on demand by the test-only `panic-on-demand` build in
//! `target/native-test/`) is caught inside the module, logged in one line,
//! and the request goes on unfiltered; Envoy keeps serving and the filter
//! keeps filtering the requests after it. (Everything the two builds share
//! is asserted by the suites' `native::` tests.)

use integration_tests::*;

#[test]
fn a_panic_in_the_module_never_reaches_envoy() {
    let module = repo().join("target/native-test/native/libresilience.so");
    assert!(module.exists(), "{} missing: run `make build`", module.display());
    let b = Backends::start(&["a", "b"]);
    let json = r#"{"limits":[{"name":"tight","requests":3,"period":"1h","key":"all"}]}"#;
    let yaml = with_plugin_config(&sample_config_for(Build::Native, "rate-limit.yaml", &b.addrs(), None), json)
        .replace(&repo().join("target/native/libresilience.so").display().to_string(), &module.display().to_string());
    let e = Envoy::start(&yaml, 2);
    let mut c = Conn::open(e.addr).expect("connect");
    for _ in 0..3 {
        assert_eq!(c.get("/", &[]).expect("request").status, 200);
    }
    // Over the limit, but the module panics before deciding: the request
    // goes on unfiltered.
    let r = c.get("/", &[("x-resilience-test-panic", "1")]).expect("request after a panic");
    assert_eq!(r.status, 200, "the request went on");
    // Envoy is up, the filter still filters.
    assert_eq!(c.get("/", &[]).expect("request").status, 429);
    assert_eq!(Conn::open(e.addr).expect("connect").get("/", &[]).expect("request").status, 429);
    let log = e.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("resilience: request headers failed")).collect();
    assert_eq!(lines.len(), 1, "one line per panic:\n{log}");
    assert!(lines[0].contains("panic on demand"), "{}", lines[0]);
    assert!(!log.contains("panicked at"), "the default panic hook's lines:\n{log}");
}

/// A route with its own configuration (`typed_per_filter_config`, the
/// policy as `per_route_config_name`, its JSON as `filter_config`): requests
/// on that route are limited by it, the others by the filter's.
#[test]
fn a_route_with_its_own_configuration_is_served_by_it() {
    let b = Backends::start(&["a", "b"]);
    let json = r#"{"limits":[{"name":"everywhere","requests":100,"period":"1h","key":"all"}]}"#;
    let yaml = with_plugin_config(&sample_config_for(Build::Native, "rate-limit.yaml", &b.addrs(), None), json);
    let module = repo().join("target/native/libresilience.so");
    let catch_all = "              - match: { prefix: \"/\" }\n";
    assert!(yaml.contains(catch_all));
    let route = format!(
        r#"              - match: {{ prefix: "/api" }}
                route: {{ cluster: demo }}
                typed_per_filter_config:
                  envoy.filters.http.dynamic_modules:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                    dynamic_module_config:
                      name: resilience
                      module: {{ local: {{ filename: {} }} }}
                    per_route_config_name: rate_limit
                    filter_config:
                      "@type": type.googleapis.com/google.protobuf.StringValue
                      value: '{{"limits":[{{"name":"api","requests":2,"period":"1h","key":"all"}}]}}'
"#,
        module.display()
    );
    let e = Envoy::start(&yaml.replacen(catch_all, &(route + catch_all), 1), 2);
    let statuses: Vec<u16> = (0..4).map(|_| http_get(e.addr, "/api/x", &[]).expect("request").status).collect();
    assert_eq!(statuses, [200, 200, 429, 429], "the route's limit: 2");
    let refusal = http_get(e.addr, "/api/x", &[]).expect("request");
    assert!(refusal.text().contains(r#""limit":"api""#), "{}", refusal.text());
    for _ in 0..10 {
        assert_eq!(http_get(e.addr, "/other", &[]).expect("request").status, 200, "the filter's limit: 100");
    }
    // A route configuration the policy refuses is refused at load, with its line.
    let bad = yaml.replacen(
        catch_all,
        &(format!(
            "              - match: {{ prefix: \"/api\" }}\n                route: {{ cluster: demo }}\n                typed_per_filter_config:\n                  envoy.filters.http.dynamic_modules:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute\n                    dynamic_module_config:\n                      name: resilience\n                      module: {{ local: {{ filename: {} }} }}\n                    per_route_config_name: rate_limit\n                    filter_config:\n                      \"@type\": type.googleapis.com/google.protobuf.StringValue\n                      value: '{{\"limits\":[]}}'\n",
            module.display()
        ) + catch_all),
        1,
    );
    let failed = Envoy::try_start(&bad, 1).err().expect("a refused route configuration");
    assert!(failed.log.contains("limits: must hold at least one limit"), "{}", failed.log);
}

/// The shipped module leaves every ABI callback to Envoy (the fake Envoy of
/// the module's tests and fuzz target is not in it) and exports the hooks.
#[test]
fn the_shipped_module_takes_every_callback_from_envoy() {
    let module = repo().join("target/native/libresilience.so");
    let out = std::process::Command::new("nm").args(["-D", "--defined-only"]).arg(&module).output().expect("nm");
    let defined = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nm {}", module.display());
    assert!(defined.contains("envoy_dynamic_module_on_http_filter_request_headers"), "{defined}");
    let own: Vec<&str> = defined.lines().filter(|l| l.contains("envoy_dynamic_module_callback_")).collect();
    assert!(own.is_empty(), "the module defines Envoy's callbacks itself: {own:?}");
}
