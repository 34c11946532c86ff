//! `ratelimit-engine` where envoyproxy/ratelimit runs: started as Istio's
//! sample starts upstream's image (`samples/ratelimit/rate-limit-service.yaml`:
//! `/bin/ratelimit` with no arguments, its environment, the ConfigMap
//! mounted at `$RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/config`), behind real
//! Envoy's own `envoy.filters.http.ratelimit`, answering the sample's limits
//! as upstream would.
//!
//! The environment is the sample's, variable for variable, with two values
//! moved to this machine: `REDIS_URL` names the test's Redis instead of the
//! `redis` Service, and `RUNTIME_ROOT` a scratch directory laid out as the
//! kubelet mounts a ConfigMap (`config.yaml -> ..data/config.yaml`, `..data
//! -> ..<timestamp>`), which `RUNTIME_IGNOREDOTFILES=true` reads once. The
//! ports are the sample's (8080, 8081, 6070), on `::` as it asks.

use integration_tests::fleet::{admitted_before_429, Redis, Upstream};
use integration_tests::{http_get, scratch_dir, Backends, Envoy};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sample ConfigMap's `config.yaml` (its comment's example).
const SAMPLE_CONFIG: &str = r#"domain: echo-ratelimit
descriptors:
  - key: PATH
    value: "/"
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: PATH
    rate_limit:
      unit: minute
      requests_per_unit: 100
"#;

/// A ConfigMap volume as the kubelet writes it, holding `config.yaml`.
fn mount_configmap(dir: &Path, text: &str, version: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let data = format!("..2026_12_06_00_00_0{version}.000000000");
    std::fs::create_dir_all(dir.join(&data)).unwrap();
    std::fs::write(dir.join(&data).join("config.yaml"), text).unwrap();
    // The kubelet swaps ..data atomically: a new link renamed over the old.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&data, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if std::fs::symlink_metadata(dir.join("config.yaml")).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    }
}

/// The sample Deployment's environment, variable for variable, its Redis
/// (`redis:6379`) and runtime root (`/data`) moved to this machine.
fn istio_sample_env(redis: &Redis, runtime_root: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LOG_LEVEL", "debug".into()),
        ("REDIS_SOCKET_TYPE", "tcp".into()),
        ("REDIS_URL", redis.addr.to_string()),
        ("USE_STATSD", "false".into()),
        ("RUNTIME_ROOT", runtime_root.display().to_string()),
        ("RUNTIME_SUBDIRECTORY", "ratelimit".into()),
        ("RUNTIME_WATCH_ROOT", "false".into()),
        ("RUNTIME_IGNOREDOTFILES", "true".into()),
        ("HOST", "::".into()),
        ("GRPC_HOST", "::".into()),
    ]
}

/// `/bin/ratelimit` as the sample's Deployment runs it.
fn start_as_istio_sample(redis: &Redis, runtime_root: &Path) -> Upstream {
    Upstream::start(&istio_sample_env(redis, runtime_root))
}

fn envoy_as_istio_sample(backend: std::net::SocketAddr) -> Envoy {
    // Istio's EnvoyFilter for the sample (its rate-limit task): the ratelimit
    // filter asking the service's cluster as Istio names it, with the
    // `authority` the task sets (the cluster name, with its `|`s, is no
    // valid authority), for domain echo-ratelimit, the path as PATH.
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
              rate_limits: [{{ actions: [{{ request_headers: {{ header_name: ":path", descriptor_key: PATH }} }}] }}]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: echo-ratelimit
              failure_mode_deny: true
              timeout: 10s
              rate_limit_service:
                transport_api_version: V3
                grpc_service:
                  envoy_grpc:
                    cluster_name: outbound|8081||ratelimit.default.svc.cluster.local
                    authority: ratelimit.default.svc.cluster.local
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {bp} }} }} }} }}] }}]
  - name: outbound|8081||ratelimit.default.svc.cluster.local
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: outbound|8081||ratelimit.default.svc.cluster.local
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: "::1", port_value: 8081 }} }} }} }}] }}]
"#,
        bp = backend.port()
    );
    Envoy::start(&yaml, 2)
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match http_get(addr, path, &[]) {
        Ok(r) => (r.status, r.text()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn istios_sample_with_only_the_image_swapped() {
    let redis = Redis::start();
    let root = scratch_dir("istio-sample");
    let config_dir = root.join("ratelimit").join("config");
    mount_configmap(&config_dir, SAMPLE_CONFIG, 1);
    let engine = start_as_istio_sample(&redis, &root);
    let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // Upstream's endpoints: /healthcheck on the HTTP port, the config dump
    // on the debug port.
    assert_eq!(get(local(8080), "/healthcheck"), (200, "OK\n".into()), "{}", engine.log());
    let (status, dump) = get(local(6070), "/rlconfig");
    assert_eq!(status, 200);
    assert_eq!(
        dump,
        "echo-ratelimit.PATH: unit=MINUTE requests_per_unit=100, shadow_mode: false\n\
         echo-ratelimit.PATH_/: unit=MINUTE requests_per_unit=1, shadow_mode: false\n"
    );
    // The config dir's dot entries (..data, ..<timestamp>) were not read as
    // configs: one domain.
    assert!(engine.log().contains("1 domain(s)"), "{}", engine.log());

    let backends = Backends::start(&["a"]);
    let envoy = envoy_as_istio_sample(backends.addr("a"));
    let status = |path: &str| get(envoy.addr, path).0;
    // Requests to `path` until the first refusal (at most `most`): how many
    // were admitted. The counts are upstream's fixed minute windows: a
    // window that turns during the run admits up to one limit more, so each
    // bound below allows for one turn.
    let admitted_before_429 =
        |path: &str, most: usize| admitted_before_429(most, || status(path), || format!("{path}\n{}", engine.log()));
    // `/`: 1 a minute; any other path: 100 a minute.
    let root = admitted_before_429("/", 4);
    assert!(matches!(root, Some(1..=2)), "/: {root:?} admitted before a 429, 1 a minute\n{}", engine.log());
    let others: Vec<u16> = (0..5).map(|_| status("/productpage")).collect();
    assert_eq!(others, [200; 5]);

    // The kubelet swaps the ConfigMap (..data): the engine reloads it.
    mount_configmap(&config_dir, &SAMPLE_CONFIG.replace("requests_per_unit: 100", "requests_per_unit: 6"), 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(local(6070), "/rlconfig").1.contains("requests_per_unit=6,") {
        assert!(Instant::now() < deadline, "the swapped ConfigMap was not reloaded:\n{}", engine.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // 6 a minute now (the old limit's 100 would admit them all): refused
    // within 6 requests, or 12 if a window turned.
    let after = admitted_before_429("/productpage", 14);
    assert!(matches!(after, Some(0..=12)), "/productpage: {after:?} admitted, 6 a minute\n{}", engine.log());
}

/// The engine's image (`make oci`): `/bin/ratelimit`, statically linked,
/// run as `nonroot`; the same binary gives the same digest; unpacked, it
/// starts as the sample's Deployment starts it, as that user.
#[test]
fn the_image_runs_bin_ratelimit_as_nonroot() {
    use packaging::oci;
    let binary =
        std::fs::read(integration_tests::repo().join("target/x86_64-unknown-linux-musl/release/ratelimit-engine"))
            .expect("the static engine (make build)");
    let layouts = scratch_dir("engine-image");
    let roots = b"-----BEGIN CERTIFICATE-----\n(a bundle)\n-----END CERTIFICATE-----\n".to_vec();
    let program = oci::engine_program(binary, Some(roots.clone()), None);
    let image = oci::write_program_layout(&layouts.join("a"), &program).unwrap();
    let again = oci::write_program_layout(&layouts.join("b"), &program).unwrap();
    assert_eq!(image.digest, again.digest, "the same binary, the same image");

    let dir = layouts.join("a");
    let blob = |digest: &str| dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let json =
        |digest: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap() };
    let manifest = json(&image.digest);
    let config = json(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["User"], oci::NONROOT);
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/bin/ratelimit"]));
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));
    // Unpacked where nonroot can reach it: the checkout may sit under a
    // directory only root can enter (a `mktemp -d` clone is 0700).
    let outside = std::env::temp_dir().join(format!("ratelimit-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rootfs = outside.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let untar = Command::new("tar").arg("-xzf").arg(&layer).arg("-C").arg(&rootfs).status().unwrap();
    assert!(untar.success());
    // The CA bundle where TLS clients look for the system's roots.
    assert_eq!(std::fs::read(rootfs.join(oci::CA_BUNDLE)).ok(), Some(roots));
    let ldd = Command::new("ldd").arg(rootfs.join("bin/ratelimit")).output().unwrap();
    let says = String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(says.contains("not a dynamic executable") || says.contains("statically linked"), "{says}");

    // The sample's environment (its ports moved, the sample test may hold
    // them), as nonroot.
    let redis = Redis::start();
    let root = outside.join("runtime");
    mount_configmap(&root.join("ratelimit").join("config"), SAMPLE_CONFIG, 1);
    let (http, grpc, debug) =
        (integration_tests::free_port(), integration_tests::free_port(), integration_tests::free_port());
    let mut env = istio_sample_env(&redis, &root);
    env.extend([("PORT", http.to_string()), ("GRPC_PORT", grpc.to_string()), ("DEBUG_PORT", debug.to_string())]);
    let mut child = Command::new("setpriv")
        .args(["--reuid", "65532", "--regid", "65532", "--clear-groups", "--"])
        .arg(rootfs.join("bin/ratelimit"))
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().and_then(Result::ok).unwrap_or_default();
    let healthy = get(std::net::SocketAddr::from(([127, 0, 0, 1], http)), "/healthcheck");
    let _ = child.kill();
    let _ = child.wait();
    let mut said = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said);
    let _ = std::fs::remove_dir_all(&outside);
    assert!(first.starts_with("listening grpc="), "{first:?}\n{said}");
    assert_eq!(healthy, (200, "OK\n".into()));
}

/// deploy/ratelimit-engine: every manifest validates against Kubernetes'
/// own schemas, offline (`kubernetes-validate --strict`, installed into
/// .venv by `make test`); the Deployment's environment is one the engine
/// reads with nothing left unsupported; the ConfigMap's limits load; the
/// Istio kustomization swaps exactly the sample's image.
#[test]
fn the_manifests_validate_and_the_engine_reads_their_environment_as_is() {
    let dir = integration_tests::repo().join("deploy/ratelimit-engine");
    let manifest = dir.join("ratelimit-engine.yaml");
    let out = Command::new(integration_tests::repo().join(".venv/bin/kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&manifest)
        .output()
        .expect("kubernetes-validate (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let text = std::fs::read_to_string(&manifest).unwrap();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let named = |kind: &str, name: &str| {
        docs.iter().find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)).cloned()
    };
    let deployment = named("Deployment", "ratelimit").expect("the ratelimit Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0].as_str(), Some("/bin/ratelimit"));
    let env: std::collections::HashMap<String, String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
        .collect();
    let (settings, notes) = ratelimit_engine::environment::from_env(&|name| env.get(name).cloned()).unwrap();
    assert!(notes.is_empty(), "every variable of the manifest is supported: {notes:?}");
    assert_eq!(settings.prometheus, Some(("0.0.0.0:19001".into(), "/metrics".into())));
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(settings.runtime.map(|r| r.dir).as_deref(), Some(mount), "the ConfigMap is where the engine reads");
    let config = named("ConfigMap", "ratelimit-config").expect("the limits");
    let limits = config["data"]["config.yaml"].as_str().unwrap().to_string();
    ratelimit_engine::config::Config::load(&[("config.yaml".into(), limits)]).expect("the ConfigMap's limits load");

    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("istio-sample/kustomization.yaml")).unwrap()).unwrap();
    let images = kustomization["images"].as_sequence().unwrap();
    assert_eq!(images.len(), 1, "one change");
    assert_eq!(images[0]["name"].as_str(), Some("docker.io/envoyproxy/ratelimit"), "the sample's image");
    assert!(kustomization["resources"][0].as_str().unwrap().ends_with("samples/ratelimit/rate-limit-service.yaml"));
}
