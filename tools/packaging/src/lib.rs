//! Ships the filters to the ingresses that load them: each module's
//! configuration schema ([`docs`]), its OCI images ([`oci`]), and the check
//! a config goes through before a proxy sees it ([`check_config`]).

pub mod crd;
pub mod docs;
pub mod native;
pub mod oci;

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The modules (one list for the whole project: `filters_core::modules`).
pub use filters_core::modules::{Module, MODULES};

/// The repository's root (this crate is `tools/packaging`).
pub fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The README text of a module, from the repository.
pub fn readme(module: &str) -> Option<String> {
    std::fs::read_to_string(root().join("filters").join(module).join("README.md")).ok()
}

/// The published schema of `module` (`schemas/<module>.schema.json`).
pub fn published_schema(module: &str) -> Result<Value, String> {
    let path = root().join("schemas").join(format!("{module}.schema.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The schema's errors for `config`, one line each (`/limits/0/period: ...`).
pub fn schema_errors(schema: &Value, config: &Value) -> Result<Vec<String>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("schema: {e}"))?;
    Ok(validator
        .iter_errors(config)
        .map(|e| format!("{}: {}", display_path(&e.instance_path.to_string()), e))
        .collect())
}

fn display_path(pointer: &str) -> String {
    if pointer.is_empty() {
        ".".into()
    } else {
        pointer.to_string()
    }
}

/// What a proxy would say of the configuration `bytes` for `module`: the
/// schema's errors, then the filter's own refusal (its log line), if any.
/// Empty: accepted. The filter reads the very bytes given, as the proxy
/// hands them over (a key given twice, which a JSON value would keep once,
/// is refused as the filter refuses it in Envoy).
pub fn check_config(module: &str, bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    match serde_json::from_slice::<Value>(bytes) {
        Ok(config) => problems.extend(schema_errors(&published_schema(module)?, &config)?),
        Err(e) => problems.push(format!(".: not JSON: {e}")),
    }
    if let Err(line) = filters_core::modules::check_config(module, bytes) {
        problems.push(line);
    }
    Ok(problems)
}

/// [`check_config`] of a JSON value (a manifest's or a sample's
/// configuration, already parsed), as the bytes a proxy would be handed.
pub fn check_config_value(module: &str, config: &Value) -> Result<Vec<String>, String> {
    check_config(module, &serde_json::to_vec(config).map_err(|e| e.to_string())?)
}
