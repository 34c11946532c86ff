//! Every sample config in `envoy/` passes `envoy --mode validate`.

use integration_tests::{envoy_bin, repo, wasm};
use std::process::Command;

#[test]
fn every_sample_config_validates() {
    wasm("rate_limit");
    wasm("circuit_breaker");
    wasm("retry");
    wasm("sticky_session");
    let mut checked = 0;
    let mut entries: Vec<_> =
        std::fs::read_dir(repo().join("envoy")).expect("envoy/").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let out = Command::new(envoy_bin())
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .current_dir(repo())
            .output()
            .expect("run envoy --mode validate");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{} does not validate:\n{text}", path.display());
        checked += 1;
    }
    assert!(checked >= 1, "no configs found in envoy/");
}
