//! Offline checks of what a platform engineer applies: the manifests in
//! `deploy/` against the Istio and Envoy Gateway CRDs (schema and CEL
//! rules), every configuration they carry, every sample in `envoy/` and
//! every README example against the module's JSON Schema and its own
//! parser, and the schemas against the types and READMEs they come from.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use packaging::{check_config, check_config_value, crd, docs, oci, readme, root, schema_errors, MODULES};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// The CRDs in $CRDS_DIR (the Makefile sets it to ../shared/crds when that
/// exists), or in ../shared/crds; `None` (the test prints SKIPPED) without them.
fn crds() -> Option<Vec<crd::Crd>> {
    let dir = std::env::var("CRDS_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/crds"));
    if !dir.is_dir() {
        println!("SKIPPED: no CRDs at {} (set CRDS_DIR to a folder holding istio-extensions.yaml and envoy-gateway-envoyextensionpolicies.yaml)", dir.display());
        return None;
    }
    let mut out = Vec::new();
    for file in ["istio-extensions.yaml", "envoy-gateway-envoyextensionpolicies.yaml"] {
        let text =
            std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        out.extend(crd::load(&text).unwrap());
    }
    Some(out)
}

fn manifests() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for dir in ["deploy/istio", "deploy/envoy-gateway"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.into_iter().filter(|f| !f.ends_with("kustomization.yaml")) {
            for doc in yaml_docs(&f) {
                out.push((f.clone(), doc));
            }
        }
    }
    assert!(out.len() >= 13, "manifests missing: {}", out.len());
    let kinds: std::collections::BTreeSet<&str> = out.iter().map(|(_, m)| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 3, "WasmPlugin, TrafficExtension and EnvoyExtensionPolicy: {kinds:?}");
    out
}

/// `(module, configuration)` of each plugin a manifest loads, as the
/// control plane hands it to the filter (`pluginConfig` / `config`).
fn plugins(manifest: &Value) -> Vec<(String, Value)> {
    let module_of = |url: &str| url.rsplit('/').next().unwrap().split(':').next().unwrap().to_string();
    match manifest["kind"].as_str().unwrap() {
        "WasmPlugin" => {
            vec![(module_of(manifest["spec"]["url"].as_str().unwrap()), manifest["spec"]["pluginConfig"].clone())]
        }
        "TrafficExtension" => {
            let wasm = &manifest["spec"]["wasm"];
            vec![(module_of(wasm["url"].as_str().unwrap()), wasm["pluginConfig"].clone())]
        }
        "EnvoyExtensionPolicy" => manifest["spec"]["wasm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (module_of(w["code"]["image"]["url"].as_str().unwrap()), w["config"].clone()))
            .collect(),
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn every_manifest_validates_against_the_crds_schema_and_cel_rules() {
    let Some(crds) = crds() else { return };
    let mut rules = 0;
    for (file, manifest) in manifests() {
        let crd = crd::find(&crds, &manifest).unwrap_or_else(|| panic!("{}: no CRD for it", file.display()));
        let (errors, n) = crd.validate(&manifest);
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        rules += n;
    }
    assert!(rules >= 12 * 3, "too few CEL rules evaluated: {rules}");
}

#[test]
fn the_crd_check_refuses_what_an_api_server_refuses() {
    let Some(crds) = crds() else { return };
    let istio = yaml_docs(&root().join("deploy/istio/rate-limit.yaml")).remove(0);
    let eg = yaml_docs(&root().join("deploy/envoy-gateway/rate-limit.yaml")).remove(0);
    let refused = |m: &Value, fragment: &str| {
        let (errors, _) = crd::find(&crds, m).unwrap().validate(m);
        assert!(errors.iter().any(|e| e.contains(fragment)), "expected `{fragment}` in {errors:#?}");
    };
    let mut m = istio.clone();
    m["spec"]["url"] = json!("ftp://registry.example.com/x:1");
    refused(&m, "url must have schema one of");
    let mut m = istio.clone();
    m["spec"]["targetRefs"] = json!([{ "kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g" }]);
    refused(&m, "only one of targetRefs or selector can be set");
    let mut m = istio.clone();
    m["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    refused(&m, "FAIL_SOMETIMES");
    let mut m = istio;
    m["spec"]["sha256"] = json!("sha256:abc");
    refused(&m, "sha256");
    let mut m = eg.clone();
    m["spec"]["wasm"][0]["code"]["type"] = json!("HTTP");
    refused(&m, "If type is HTTP, http field needs to be set.");
    let mut m = eg.clone();
    m["spec"]["targetRefs"][0]["group"] = json!("example.com");
    refused(&m, "targetRefs[*].group of gateway.networking.k8s.io");
    let mut m = eg;
    m["spec"]["wasm"][0]["failClosed"] = json!(true);
    refused(&m, "failClosed");
    let mut m = yaml_docs(&root().join("deploy/istio/retry.yaml")).remove(0);
    m["spec"]["pluginConfigs"] = json!({});
    refused(&m, "pluginConfigs");
}

#[test]
fn every_manifest_configuration_passes_the_schema_and_the_filters_parser() {
    let mut seen = std::collections::BTreeSet::new();
    for (file, manifest) in manifests() {
        for (module, config) in plugins(&manifest) {
            let problems = check_config_value(&module, &config).unwrap();
            assert!(problems.is_empty(), "{} ({module}): {problems:#?}", file.display());
            seen.insert(module);
        }
    }
    assert_eq!(seen.len(), MODULES.len(), "a module without a manifest: {seen:?}");
}

/// The module manifests carry envoy/<module>.yaml's configuration (sticky
/// sessions: with the backends' addresses left for the user to replace).
#[test]
fn each_modules_manifests_carry_its_sample_configuration() {
    for module in MODULES.iter().map(|m| m.name) {
        let sample = envoy_samples().into_iter().find(|(f, m, _)| m == module && f.ends_with(format!("{module}.yaml")));
        let (_, _, mut expected) = sample.unwrap_or_else(|| panic!("no envoy/{module}.yaml"));
        blank_addresses(&mut expected);
        for dir in ["istio", "envoy-gateway"] {
            let manifest = yaml_docs(&root().join(format!("deploy/{dir}/{module}.yaml"))).remove(0);
            let (m, mut config) = plugins(&manifest).remove(0);
            assert_eq!(m, module);
            blank_addresses(&mut config);
            assert_eq!(config, expected, "deploy/{dir}/{module}.yaml differs from envoy/{module}.yaml");
        }
    }
}

fn blank_addresses(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "address" {
                    *child = json!("<address>");
                } else {
                    blank_addresses(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_addresses),
        _ => {}
    }
}

/// The failure policies deploy/README.md explains: never silently without
/// the rate limiter (alone or in the bundle); the protective policies pass
/// traffic on Envoy Gateway, which has no reload.
#[test]
fn failure_policies_are_the_documented_ones() {
    for (file, manifest) in manifests() {
        match manifest["kind"].as_str().unwrap() {
            "WasmPlugin" => assert_eq!(manifest["spec"]["failStrategy"], "FAIL_RELOAD", "{}", file.display()),
            "TrafficExtension" => {
                assert_eq!(manifest["spec"]["wasm"]["failStrategy"], "FAIL_RELOAD", "{}", file.display())
            }
            _ => {
                for w in manifest["spec"]["wasm"].as_array().unwrap() {
                    let module = plugins(&json!({"kind": "EnvoyExtensionPolicy", "spec": {"wasm": [w]}})).remove(0).0;
                    let open = !matches!(module.as_str(), "rate-limit" | "bundle");
                    assert_eq!(w["failOpen"], json!(open), "{} ({module})", file.display());
                }
            }
        }
    }
    let text = std::fs::read_to_string(root().join("deploy/README.md")).unwrap();
    for word in ["FAIL_RELOAD", "failOpen: false", "failOpen: true", "AUTHN"] {
        assert!(text.contains(word), "deploy/README.md does not explain {word}");
    }
}

/// `(file, module, configuration)` of every Wasm filter in envoy/*.yaml.
fn envoy_samples() -> Vec<(PathBuf, String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("envoy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        for doc in yaml_docs(&path) {
            collect_wasm(&doc, &path, &mut out);
        }
    }
    out
}

fn collect_wasm(v: &Value, file: &Path, out: &mut Vec<(PathBuf, String, Value)>) {
    match v {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str)
                == Some("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
            {
                let filename = v["config"]["vm_config"]["code"]["local"]["filename"].as_str().unwrap_or_default();
                let stem = Path::new(filename).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                if let Some(module) = MODULES.iter().find(|m| m.wasm == stem).map(|m| m.name) {
                    let text = v["config"]["configuration"]["value"].as_str().unwrap();
                    out.push((file.to_path_buf(), module.to_string(), serde_json::from_str(text).unwrap()));
                }
            }
            map.values().for_each(|c| collect_wasm(c, file, out));
        }
        Value::Array(items) => items.iter().for_each(|c| collect_wasm(c, file, out)),
        _ => {}
    }
}

#[test]
fn every_envoy_sample_configuration_passes_the_schema_and_the_parser() {
    let samples = envoy_samples();
    assert!(samples.len() >= 6, "samples: {}", samples.len());
    for (file, module, config) in samples {
        let problems = check_config_value(&module, &config).unwrap();
        assert!(problems.is_empty(), "{} ({module}): {problems:#?}", file.display());
    }
}

fn json_blocks(markdown: &str) -> Vec<&str> {
    markdown.split("```json\n").skip(1).map(|b| b.split("```").next().unwrap_or("")).collect()
}

#[test]
fn every_readme_example_passes_the_schema() {
    let mut checked = 0;
    for module in MODULES.iter().map(|m| m.name) {
        let schema = packaging::published_schema(module).unwrap();
        for block in json_blocks(&readme(module).unwrap()) {
            let config: Value = serde_json::from_str(block).unwrap_or_else(|e| panic!("{module} README: {e}\n{block}"));
            let errors = schema_errors(&schema, &config).unwrap();
            assert!(errors.is_empty(), "{module} README example: {errors:#?}\n{block}");
            checked += 1;
        }
    }
    assert!(checked >= 7, "README examples checked: {checked}");
}

/// Broken configurations: the schema says so before the proxy does, and
/// the filter refuses them too.
#[test]
fn broken_configurations_fail_the_schema_and_the_parser() {
    let cases = [
        (
            "rate-limit",
            json!({"limits": [{"name": "a", "requests": 1, "period": "0s", "key": "all"}]}),
            "/limits/0/period",
        ),
        (
            "rate-limit",
            json!({"limits": [{"name": "a", "requests": 1, "period": "1s", "key": "cookie:x"}]}),
            "/limits/0/key",
        ),
        (
            "rate-limit",
            json!({"limits": [{"name": "a", "requests": "10", "period": "1s", "key": "all"}]}),
            "/limits/0/requests",
        ),
        ("rate-limit", json!({"limit": []}), "."),
        ("circuit-breaker", json!({"failure_statuses": ["5x"]}), "/failure_statuses/0"),
        (
            "circuit-breaker",
            json!({"traefik": {"expression": "NetworkErrorRatio() > 0.5", "checkPeriod": "soon"}}),
            "/traefik",
        ),
        ("retry", json!({"policies": [{"name": "p", "max_retries": -1}]}), "/policies/0/max_retries"),
        (
            "sticky-session",
            json!({"backends": [{"name": "a", "address": "10.0.0.1:80"}], "hashing": "rendezvous"}),
            "/hashing",
        ),
        (
            "bundle",
            json!({"rate_limit": {"limits": [{"name": "a", "requests": 1, "period": "1 second", "key": "all"}]}}),
            "/rate_limit/limits/0/period",
        ),
        ("bundle", json!({"ratelimit": {}}), "."),
    ];
    for (module, config, path) in cases {
        let errors = schema_errors(&packaging::published_schema(module).unwrap(), &config).unwrap();
        assert!(errors.iter().any(|e| e.starts_with(&format!("{path}:"))), "{module} {config}: {errors:#?}");
        let problems = check_config_value(module, &config).unwrap();
        assert!(
            problems.iter().any(|p| p.starts_with("invalid plugin configuration:")),
            "{module} {config}: the filter accepted it: {problems:#?}"
        );
    }
}

#[test]
fn the_published_schemas_are_the_ones_the_types_and_readmes_give() {
    for module in MODULES.iter().map(|m| m.name) {
        let fresh = docs::module_schema(module, &readme).unwrap_or_else(|e| panic!("{e:#?}"));
        let published = packaging::published_schema(module).unwrap();
        assert!(fresh == published, "schemas/{module}.schema.json is out of date: run `make schemas`");
        // Every top-level field is described, with its README row's words.
        for (name, prop) in fresh["properties"].as_object().unwrap() {
            assert!(prop["description"].as_str().is_some_and(|d| !d.is_empty()), "{module}: {name} undescribed");
        }
    }
}

#[test]
fn a_readme_row_for_a_field_the_parser_lacks_is_an_error() {
    let mut text = readme("retry").unwrap();
    text = text.replace("| `idempotency_header` |", "| `idempotency_headers` |");
    let errors = docs::module_schema("retry", &|m| (m == "retry").then(|| text.clone())).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("`idempotency_headers` names no field")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("field `idempotency_header` has no README row")), "{errors:#?}");
}

#[test]
fn images_are_deterministic_and_extract_as_istio_extracts_them() {
    let dir = std::env::temp_dir().join(format!("packaging-oci-{}", std::process::id()));
    let module = oci::Module {
        name: "rate-limit".into(),
        version: "1.2.3".into(),
        wasm: b"\0asm\x01\0\0\0 a module".to_vec(),
        schema: br#"{"type":"object"}"#.to_vec(),
        source: Some("https://example.com/repo".into()),
    };
    let first = oci::write_layout(&dir.join("a"), &module).unwrap();
    let second = oci::write_layout(&dir.join("b"), &module).unwrap();
    assert_eq!(first, second, "the same inputs gave different digests");
    assert_eq!(first.iter().map(|i| i.tag.as_str()).collect::<Vec<_>>(), ["1.2.3", "1.2.3-oci"]);
    for image in &first {
        assert_eq!(oci::tagged(&dir.join("a"), &image.tag).unwrap(), image.digest);
        assert_eq!(oci::extract_like_istio(&dir.join("a"), &image.digest).unwrap(), module.wasm, "{}", image.variant);
        let hex = image.digest.trim_start_matches("sha256:");
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("a/blobs/sha256").join(hex)).unwrap()).unwrap();
        let a = &manifest["annotations"];
        assert_eq!(
            (a["org.opencontainers.image.version"].as_str(), a["org.opencontainers.image.licenses"].as_str()),
            (Some("1.2.3"), Some("Apache-2.0"))
        );
        assert_eq!(a["org.opencontainers.image.source"], "https://example.com/repo");
        let layers = manifest["layers"].as_array().unwrap();
        match image.variant {
            "compat" => {
                assert_eq!(manifest["config"]["mediaType"], oci::IMAGE_CONFIG);
                assert_eq!(layers.len(), 1);
                assert_eq!(layers[0]["mediaType"], oci::TAR_GZIP_LAYER);
            }
            _ => {
                assert_eq!(manifest["config"]["mediaType"], oci::WASM_CONFIG);
                let types: Vec<&str> = layers.iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
                assert_eq!(types, [oci::WASM_LAYER, oci::SCHEMA_LAYER], "exactly two layers");
            }
        }
    }
    let changed = oci::Module { wasm: b"\0asm\x01\0\0\0 another".to_vec(), ..module };
    let third = oci::write_layout(&dir.join("c"), &changed).unwrap();
    assert_ne!(third[0].digest, first[0].digest);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 30, defect 12: `check-config` hands the filter the file's own
/// bytes, so a key given twice is refused as the filter refuses it in
/// Envoy (a parsed JSON value would keep one of them).
#[test]
fn check_config_reads_the_files_bytes() {
    let twice = br#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"status":429,"status":503}"#;
    let problems = check_config("rate-limit", twice).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("invalid plugin configuration") && p.contains("status")),
        "{problems:#?}"
    );
    let once = br#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"status":429}"#;
    assert_eq!(check_config("rate-limit", once).unwrap(), Vec::<String>::new());
    let spaced = br#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","checkPeriod":" 5s "}}"#;
    let problems = check_config("circuit-breaker", spaced).unwrap();
    assert!(problems.iter().any(|p| p.contains("invalid plugin configuration")), "{problems:#?}");
}

/// The native build's Envoy Gateway manifests (`deploy/envoy-gateway-native/`):
/// the EnvoyProxy allowlisting the module and the EnvoyExtensionPolicy
/// loading the bundle validate against Envoy Gateway's CRDs, the policy
/// names an allowlisted module, and its configuration is the Wasm bundle
/// manifest's, accepted by the schema and the parser.
#[test]
fn native_manifests_validate_and_carry_the_bundles_configuration() {
    let dir = root().join("deploy/envoy-gateway-native");
    let docs: Vec<Value> = ["envoyproxy.yaml", "bundle.yaml"].iter().flat_map(|f| yaml_docs(&dir.join(f))).collect();
    let proxy = docs.iter().find(|d| d["kind"] == "EnvoyProxy").expect("an EnvoyProxy");
    let policy = docs.iter().find(|d| d["kind"] == "EnvoyExtensionPolicy").expect("an EnvoyExtensionPolicy");
    let allowed: Vec<&str> =
        proxy["spec"]["dynamicModules"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let module = &policy["spec"]["dynamicModule"][0];
    assert!(allowed.contains(&module["name"].as_str().unwrap()), "{allowed:?}");
    assert_eq!(module["filterName"], "bundle");
    let problems = check_config_value("bundle", &module["config"]).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let wasm = yaml_docs(&root().join("deploy/envoy-gateway/bundle.yaml")).remove(0);
    assert_eq!(module["config"], wasm["spec"]["wasm"][0]["config"], "the Wasm manifest's configuration");
    let Some(dir) = std::env::var("CRDS_DIR").ok().filter(|d| !d.is_empty()).map(PathBuf::from).or_else(|| {
        let d = root().join("../shared/crds");
        d.is_dir().then_some(d)
    }) else {
        println!("SKIPPED: no CRDs (set CRDS_DIR)");
        return;
    };
    let mut crds = Vec::new();
    for file in ["envoy-gateway-envoyproxies.yaml", "envoy-gateway-envoyextensionpolicies.yaml"] {
        crds.extend(crd::load(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap());
    }
    for doc in &docs {
        let c = crd::find(&crds, doc).unwrap_or_else(|| panic!("no CRD for {}", doc["kind"]));
        let (errors, _) = c.validate(doc);
        assert!(errors.is_empty(), "{}: {errors:#?}", doc["kind"]);
    }
}
