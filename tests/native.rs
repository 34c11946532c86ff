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
