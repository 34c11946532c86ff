//! Checks a Kubernetes manifest against a CustomResourceDefinition, offline,
//! as an API server would: defaults applied, the OpenAPI v3 schema (its
//! `x-kubernetes-*` keywords dropped, then JSON Schema), and the CRD's CEL
//! rules (`x-kubernetes-validations`) evaluated with the `cel` crate.
//!
//! Limits, said where they apply: transition rules (`oldSelf`) are skipped
//! (there is no old object on create); of the Kubernetes CEL libraries, the
//! URL functions the Istio CRDs use are provided (`isURL`, `url`,
//! `getScheme`, with Go's `url.ParseRequestURI` acceptance simplified to
//! "a scheme, or an absolute path"); a rule that uses anything else fails
//! to evaluate and is reported, never passed silently.

use cel::extractors::This;
use cel::{Context, Program};
use serde_json::{Map, Value};
use std::sync::Arc;

/// One served version of one CRD.
pub struct Crd {
    /// `group/version`, e.g. `extensions.istio.io/v1alpha1`.
    pub api_version: String,
    /// `WasmPlugin`.
    pub kind: String,
    schema: Value,
}

/// The CRDs of a YAML file (several documents), one per served version.
pub fn load(yaml: &str) -> Result<Vec<Crd>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if value.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            continue;
        }
        let group = str_at(&value, "/spec/group");
        let kind = str_at(&value, "/spec/names/kind");
        let versions = value.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
        for v in versions {
            let Some(schema) = v.pointer("/schema/openAPIV3Schema").cloned() else { continue };
            let name = str_at(&v, "/name");
            out.push(Crd { api_version: format!("{group}/{name}"), kind: kind.clone(), schema });
        }
    }
    Ok(out)
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The CRD that defines `manifest` (by `apiVersion` and `kind`).
pub fn find<'a>(crds: &'a [Crd], manifest: &Value) -> Option<&'a Crd> {
    let api = manifest.get("apiVersion").and_then(Value::as_str)?;
    let kind = manifest.get("kind").and_then(Value::as_str)?;
    crds.iter().find(|c| c.api_version == api && c.kind == kind)
}

impl Crd {
    /// What the API server would refuse in `manifest`, one line each; the
    /// number of CEL rules evaluated (so a test can show they ran).
    pub fn validate(&self, manifest: &Value) -> (Vec<String>, usize) {
        let mut object = manifest.clone();
        apply_defaults(&self.schema, &mut object);
        let mut errors = Vec::new();
        let mut plain = strip_kubernetes(&self.schema);
        // Every object has these three, whether its CRD lists them or not.
        if let Some(Value::Object(props)) = plain.get_mut("properties") {
            for (name, kind) in [("apiVersion", "string"), ("kind", "string"), ("metadata", "object")] {
                props.entry(name).or_insert_with(|| serde_json::json!({ "type": kind }));
            }
        }
        match jsonschema::validator_for(&plain) {
            Ok(v) => errors.extend(v.iter_errors(&object).map(|e| format!("{}: {e}", e.instance_path))),
            Err(e) => errors.push(format!("the CRD's schema does not compile: {e}")),
        }
        let mut rules = 0;
        check_rules(&self.schema, &object, "", &mut errors, &mut rules);
        (errors, rules)
    }
}

/// The schema without Kubernetes' own keywords, and with unknown fields
/// refused where the CRD does not keep them (`x-kubernetes-preserve-unknown-fields`),
/// as `kubectl apply` does by default (strict field validation) rather than
/// pruning them silently.
fn strip_kubernetes(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !k.starts_with("x-kubernetes-"))
                .map(|(k, v)| (k.clone(), if k == "enum" || k == "default" { v.clone() } else { strip_kubernetes(v) }))
                .collect();
            let keeps_unknown = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.get("properties").is_some() && !map.contains_key("additionalProperties") && !keeps_unknown {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strip_kubernetes).collect()),
        other => other.clone(),
    }
}

/// Structural defaulting: a property absent from an object present gets the schema's `default`.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, prop) in props {
                    if let (false, Some(default)) = (map.contains_key(name), prop.get("default")) {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_defaults(prop, child);
                    }
                }
            }
            if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
                map.values_mut().for_each(|v| apply_defaults(extra, v));
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                items.iter_mut().for_each(|v| apply_defaults(item, v));
            }
        }
        _ => {}
    }
}

fn check_rules(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>, count: &mut usize) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && schema.get("properties").is_none()
    {
        return;
    }
    let rules = schema.get("x-kubernetes-validations").and_then(Value::as_array).cloned().unwrap_or_default();
    for rule in rules {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        if text.contains("oldSelf") {
            continue;
        }
        *count += 1;
        let message = rule.get("message").and_then(Value::as_str).unwrap_or(text);
        match evaluate(text, value) {
            Ok(true) => {}
            Ok(false) => errors.push(format!("{}: {message}", display(path))),
            Err(e) => errors.push(format!("{}: rule `{text}` could not be evaluated: {e}", display(path))),
        }
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, prop) in props {
                    if let Some(child) = map.get(name) {
                        check_rules(prop, child, &format!("{path}/{name}"), errors, count);
                    }
                }
            }
            if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
                for (name, child) in map {
                    check_rules(extra, child, &format!("{path}/{name}"), errors, count);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    check_rules(item, child, &format!("{path}/{i}"), errors, count);
                }
            }
        }
        _ => {}
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// A URL as Go's `url.ParseRequestURI` accepts one, simplified: a scheme
/// (`letters:`) followed by something, or an absolute path.
fn is_url(text: &str) -> bool {
    if text.starts_with('/') {
        return true;
    }
    match text.split_once(':') {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

fn scheme(text: &str) -> String {
    match text.split_once(':') {
        Some((scheme, _)) if is_url(text) && !text.starts_with('/') => scheme.to_ascii_lowercase(),
        _ => String::new(),
    }
}

fn evaluate(rule: &str, value: &Value) -> Result<bool, String> {
    let program = Program::compile(rule).map_err(|e| e.to_string())?;
    let mut ctx = Context::default();
    let this = cel::to_value(value).map_err(|e| e.to_string())?;
    ctx.add_variable("self", this).map_err(|e| e.to_string())?;
    ctx.add_function("isURL", |s: Arc<String>| is_url(&s)).map_err(|e| e.to_string())?;
    ctx.add_function("url", |s: Arc<String>| s.to_string()).map_err(|e| e.to_string())?;
    ctx.add_function("getScheme", |This(s): This<Arc<String>>| scheme(&s)).map_err(|e| e.to_string())?;
    match program.execute(&ctx).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("evaluated to {other:?}, not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_the_istio_rule_reads_them() {
        assert!(is_url("oci://registry.example.com/x:1") && scheme("oci://r/x") == "oci");
        assert!(!is_url("registry.example.com/x:1"), "no scheme: the rule then tries http:// in front");
        assert!(is_url("http://registry.example.com/x:1"));
        assert!(is_url("/var/lib/x.wasm") && scheme("/x").is_empty());
    }
}
