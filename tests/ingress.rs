//! The ingress paths, for real: each module's OCI images pushed to a
//! registry on 127.0.0.1 (Debian's `docker-registry`), pulled back by digest
//! with `skopeo`, unpacked as Istio's fetcher unpacks them and run in Envoy
//! with the Istio manifest's configuration converted as Istio converts it;
//! and each module loaded by Envoy through `vm_config.code.remote` with a
//! sha256 (the Envoy Gateway path), refused when the sha256 is wrong with
//! the failure policy the Envoy Gateway manifest chose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use integration_tests::*;
use packaging::oci;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `(module, .wasm file stem, its metric prefix)`, from the project's one
/// list of modules.
fn modules() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    filters_core::modules::MODULES.iter().map(|m| (m.name, m.wasm, m.metric_prefix))
}

fn manifest(dir: &str, module: &str) -> Value {
    let path = repo().join("deploy").join(dir).join(format!("{module}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A registry on 127.0.0.1, storing in a scratch directory; stopped on drop.
struct Registry {
    child: Child,
    addr: SocketAddr,
}

impl Registry {
    fn start() -> Registry {
        let dir = scratch_dir("registry");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("registry.log")).unwrap()))
            .spawn()
            .expect("docker-registry (Debian's docker-registry package; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/v2/", &[]).map(|r| r.status != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().expect("skopeo (scripts/setup.sh installs it)");
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An HTTP server on 127.0.0.1 answering every request with `body`; counts them.
fn serve(body: Vec<u8>) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(&body));
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, served)
}

/// The sample config of `module` with its plugin configuration `json`, the
/// module read from `wasm` (a path), backends `addrs`.
fn envoy_yaml(module: &str, file: &str, json: &str, addrs: &[SocketAddr], wasm: &Path) -> String {
    let yaml = sample_config_with(&format!("{module}.yaml"), addrs, Some(json));
    let built = repo().join("target/wasm").join(format!("{file}.wasm"));
    assert!(yaml.contains(&built.display().to_string()), "no local module in envoy/{module}.yaml");
    yaml.replace(&built.display().to_string(), &wasm.display().to_string())
}

/// `yaml` loading its module from `server` with `sha256`, under `policy`.
fn remote_yaml(yaml: &str, file: &str, server: SocketAddr, sha256: &str, policy: &str) -> String {
    let mut out = Vec::new();
    for line in yaml.lines() {
        let indent = " ".repeat(line.len() - line.trim_start().len());
        if line.trim_start().starts_with("local: { filename:") {
            out.push(format!("{indent}remote:"));
            out.push(format!(
                "{indent}  http_uri: {{ uri: \"http://{server}/{file}.wasm\", cluster: wasm_server, timeout: 10s }}"
            ));
            out.push(format!("{indent}  sha256: \"{sha256}\""));
            out.push(format!("{indent}  retry_policy: {{ num_retries: 1 }}"));
        } else if line.trim_start().starts_with("failure_policy:") {
            out.push(format!("{indent}failure_policy: {policy}"));
        } else if line == "  clusters:" {
            out.push(line.to_string());
            out.push("  - name: wasm_server".into());
            out.push("    connect_timeout: 1s".into());
            out.push("    type: STATIC".into());
            out.push("    load_assignment:".into());
            out.push("      cluster_name: wasm_server".into());
            out.push(format!(
                "      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }} ] }} ]",
                server.port()
            ));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n") + "\n"
}

fn configured(envoy: &Envoy, prefix: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.{prefix}.configured")).unwrap_or(0)
}

fn get(envoy: &Envoy) -> Response {
    Conn::open(envoy.addr).and_then(|mut c| c.get("/", &[])).expect("request through envoy")
}

/// Each module, both formats: registry round trip by digest, Istio's
/// unpacking, then Envoy running the unpacked module with the manifest's
/// `pluginConfig` as Istio passes it (the object as a JSON string).
#[test]
fn each_modules_images_round_trip_through_a_registry_into_envoy() {
    let registry = Registry::start();
    let backends = Backends::start(&["a", "b", "c"]);
    let reg = registry.addr.to_string();
    let layouts = scratch_dir("oci");
    let mut built = Vec::new();
    for (module, file, _) in modules() {
        let wasm = std::fs::read(wasm(file)).unwrap();
        let schema = std::fs::read(repo().join("schemas").join(format!("{module}.schema.json"))).unwrap();
        let image = oci::Module { name: module.into(), version: "0.1.0".into(), wasm, schema, source: None };
        built.push((image.wasm.clone(), oci::write_layout(&layouts.join(module), &image).unwrap()));
    }
    // The documented command (`make oci-push`) pushes them all.
    let out = Command::new(repo().join("scripts/oci-push.sh"))
        .args([reg.as_str(), "--dest-tls-verify=false"])
        .env("OCI_DIR", &layouts)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "oci-push.sh: {}{}", printed, String::from_utf8_lossy(&out.stderr));
    for ((module, file, prefix), (wasm, images)) in modules().zip(built) {
        let pulled = scratch_dir("pulled");
        let mut unpacked = PathBuf::new();
        for img in &images {
            let line = format!("{reg}/{module}:{}  sha256: {}", img.tag, img.digest.trim_start_matches("sha256:"));
            assert!(printed.contains(&line), "oci-push.sh did not print `{line}`:\n{printed}");
            let by_digest = format!("docker://{reg}/{module}@{}", img.digest);
            let into = format!("oci:{}:{}", pulled.display(), img.variant);
            skopeo(&["copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", &by_digest, &into]);
            assert_eq!(
                oci::tagged(&pulled, img.variant).unwrap(),
                img.digest,
                "{module} {}: digest changed",
                img.variant
            );
            let bytes = oci::extract_like_istio(&pulled, &img.digest).unwrap();
            assert!(bytes == wasm, "{module} {}: the unpacked module differs from the built one", img.variant);
            unpacked = pulled.join(format!("{}-{file}.wasm", img.variant));
            std::fs::write(&unpacked, &bytes).unwrap();
        }
        let plugin_config = serde_json::to_string(&manifest("istio", module)["spec"]["pluginConfig"]).unwrap();
        let envoy = Envoy::start(&envoy_yaml(module, file, &plugin_config, &backends.addrs(), &unpacked), 1);
        assert_eq!(get(&envoy).status, 200, "{module}: {}", envoy.log());
        assert!(configured(&envoy, prefix) >= 1, "{module}: not configured:\n{}", envoy.log());
        if module == "rate-limit" {
            // The manifest's limit: 10/s per client, bursts of 5.
            let statuses: Vec<u16> = (0..12).map(|_| get(&envoy).status).collect();
            assert!(statuses.contains(&429), "{module}: no 429 in {statuses:?}");
        }
        println!("{module}: compat and oci images pushed by scripts/oci-push.sh, pulled back by digest; Envoy serves with the manifest's configuration");
    }
}

/// Each module fetched by Envoy itself, as Envoy Gateway has it do: with
/// the right sha256 it serves traffic; with a wrong one Envoy refuses the
/// module, and traffic gets what the manifest's `failOpen` says.
#[test]
fn envoy_loads_each_module_remotely_and_refuses_a_wrong_sha256() {
    let backends = Backends::start(&["a", "b", "c"]);
    for (module, file, prefix) in modules() {
        let bytes = std::fs::read(wasm(file)).unwrap();
        let sha256 = oci::digest(&bytes).trim_start_matches("sha256:").to_string();
        let (server, served) = serve(bytes);
        let eg = manifest("envoy-gateway", module);
        let fail_open = eg["spec"]["wasm"][0]["failOpen"].as_bool().unwrap();
        let policy = if fail_open { "FAIL_OPEN" } else { "FAIL_CLOSED" };
        let config = serde_json::to_string(&eg["spec"]["wasm"][0]["config"]).unwrap();
        let local = envoy_yaml(module, file, &config, &backends.addrs(), &wasm(file));

        let envoy = Envoy::start(&remote_yaml(&local, file, server, &sha256, policy), 1);
        assert_eq!(get(&envoy).status, 200, "{module}: {}", envoy.log());
        assert!(configured(&envoy, prefix) >= 1, "{module}: not configured:\n{}", envoy.log());
        assert!(served.load(Ordering::SeqCst) >= 1, "{module}: the module was not fetched");
        drop(envoy);

        let wrong = "ab".repeat(32);
        let envoy = Envoy::start(&remote_yaml(&local, file, server, &wrong, policy), 1);
        let status = get(&envoy).status;
        let log = envoy.log();
        assert!(log.contains("failed to load"), "{module}: no load failure logged:\n{log}");
        assert_eq!(configured(&envoy, prefix), 0, "{module}: a module with the wrong sha256 ran");
        let expected = if fail_open { 200 } else { 503 };
        assert_eq!(status, expected, "{module}: failOpen {fail_open}");
        println!("{module}: remote load with its sha256 serves; a wrong sha256 is refused ({policy}: {status})");
    }
}
