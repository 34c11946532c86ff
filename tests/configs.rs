//! Every sample config in `envoy/`, and its native twin, passes
//! `envoy --mode validate`.

use integration_tests::{envoy_bin, repo, wasm};
use std::process::Command;

/// `envoy --mode validate` on `config`, from the repository's root (where
/// the samples' relative paths point): `Err` holds what Envoy said.
fn validate(config: &std::path::Path) -> Result<(), String> {
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(config)
        .current_dir(repo())
        .output()
        .expect("run envoy --mode validate");
    if out.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

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
        if let Err(text) = validate(&path) {
            panic!("{} does not validate:\n{text}", path.display());
        }
        checked += 1;
        // The native twin (`make run CONFIG=<sample>-native`).
        let yaml = std::fs::read_to_string(&path).expect("sample");
        let native = packaging::native::to_native(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let twin = integration_tests::scratch_dir("native-twin").join("envoy.yaml");
        std::fs::write(&twin, native).expect("write twin");
        if let Err(text) = validate(&twin) {
            panic!("{}'s native twin does not validate:\n{text}", path.display());
        }
    }
    assert!(checked >= 1, "no configs found in envoy/");
}

/// The compose harness: `docker-compose config` accepts it (no engine is
/// needed for that), its Envoy configs are the ones bench/loadtest.py
/// generates, and they pass `envoy --mode validate` with the container's
/// /wasm paths pointed at the local build.
#[test]
fn compose_harness_is_valid_and_current() {
    let compose = repo().join("bench/compose/docker-compose.yml");
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .arg("config")
        .output()
        .expect("docker-compose (installed by scripts/setup.sh) runs");
    assert!(out.status.success(), "docker-compose config refused it:\n{}", String::from_utf8_lossy(&out.stderr));

    let check =
        Command::new("python3").arg(repo().join("bench/loadtest.py")).arg("--check-compose").output().expect("python3");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let wasm_dir = repo().join("target/wasm");
    for name in ["envoy-chain.yaml", "envoy-rate-limit.yaml", "envoy-global-rate-limit.yaml"] {
        let text = std::fs::read_to_string(repo().join("bench/compose").join(name)).expect("compose envoy config");
        let local = text.replace("\"/wasm/", &format!("\"{}/", wasm_dir.display()));
        let path = integration_tests::scratch_dir("compose").join(name);
        std::fs::write(&path, local).expect("write");
        if let Err(text) = validate(&path) {
            panic!("{name} does not validate:\n{text}");
        }
    }
}

/// Issue 30: the modules every sample, test and image loads are
/// `make build`'s optimised ones in `target/wasm/`, a directory cargo never
/// writes: a cargo build after `make build` re-links cargo's own copy
/// (`target/wasm32-wasip1/release/`), never the shipped one.
#[test]
fn shipped_modules_are_the_optimised_ones_cargo_cannot_overwrite() {
    let has_wasm_opt = Command::new("wasm-opt").arg("--version").output().is_ok_and(|o| o.status.success());
    for name in ["rate_limit", "circuit_breaker", "retry", "sticky_session", "bundle"] {
        let shipped = std::fs::read(repo().join(format!("target/wasm/{name}.wasm"))).expect("run `make build`");
        let cargo = std::fs::read(repo().join(format!("target/wasm32-wasip1/release/{name}.wasm"))).expect("cargo's");
        if has_wasm_opt {
            assert!(shipped.len() < cargo.len(), "{name}: {} bytes shipped, cargo's {}", shipped.len(), cargo.len());
        }
    }
    for dir in ["envoy", "nginx-otel"] {
        for entry in std::fs::read_dir(repo().join(dir)).expect("dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.contains("wasm32-wasip1/release"), "{} loads cargo's unoptimised module", path.display());
        }
    }
}
