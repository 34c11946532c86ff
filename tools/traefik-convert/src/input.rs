//! Traefik's dynamic configuration, read from any of its forms into one
//! tree (JSON values, keys as written): YAML and TOML files, Kubernetes
//! `Middleware` resources, and labels (`key=value` lines, as Docker labels
//! or Kubernetes annotations are written). Keys are matched ignoring ASCII
//! case afterwards, as Traefik matches them.

use serde_json::{Map, Value};

/// The forms the converter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A YAML file (also several documents, and Kubernetes `Middleware` resources).
    Yaml,
    /// A TOML file.
    Toml,
    /// Labels: one `traefik.<path>=<value>` per line.
    Labels,
}

impl Format {
    /// The format a file name says, if it says one.
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Some(Format::Yaml)
        } else if lower.ends_with(".toml") {
            Some(Format::Toml)
        } else if lower.ends_with(".labels") || lower.ends_with(".env") || lower.ends_with(".txt") {
            Some(Format::Labels)
        } else {
            None
        }
    }

    /// Guesses from the content: labels when every meaningful line is a
    /// `traefik.` label, TOML when a line opens a `[table]`, else YAML.
    pub fn sniff(text: &str) -> Format {
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        if !lines.is_empty() && lines.iter().all(|l| label_line(l).is_some()) {
            return Format::Labels;
        }
        if lines.iter().any(|l| l.starts_with('[')) {
            return Format::Toml;
        }
        Format::Yaml
    }
}

/// The dynamic configuration, and what could not be read (one line each).
pub struct Parsed {
    /// The `http` / `tcp` / ... tree, as Traefik's file provider sees it.
    pub root: Value,
    /// Lines for the report.
    pub reports: Vec<String>,
}

/// Reads `text` in `format`.
pub fn parse(text: &str, format: Format) -> Result<Parsed, String> {
    match format {
        Format::Labels => Ok(parse_labels(text)),
        Format::Toml => {
            let v: toml::Value = toml::from_str(text).map_err(|e| format!("not TOML: {}", e.message()))?;
            let root = serde_json::to_value(v).map_err(|e| format!("not TOML: {e}"))?;
            Ok(Parsed { root, reports: Vec::new() })
        }
        Format::Yaml => parse_yaml(text),
    }
}

fn parse_yaml(text: &str) -> Result<Parsed, String> {
    let mut root = Value::Object(Map::new());
    let mut reports = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
        let v = serde_json::to_value(v).map_err(|e| format!("not YAML: {e}"))?;
        if v.is_null() {
            continue;
        }
        match kubernetes_middleware(&v) {
            Some(Ok((name, spec))) => insert(&mut root, &["http", "middlewares", &name], spec, &mut reports, &name),
            Some(Err(kind)) => reports.push(format!("untranslated: document {}: a Kubernetes {kind}", i + 1)),
            None => merge(&mut root, v, &mut reports),
        }
    }
    Ok(Parsed { root, reports })
}

/// A Kubernetes resource: `Some(Ok((name, spec)))` for a Traefik
/// `Middleware`, `Some(Err(kind))` for another kind, `None` when the
/// document is not a resource.
fn kubernetes_middleware(v: &Value) -> Option<Result<(String, Value), String>> {
    let kind = v.get("kind")?.as_str()?;
    v.get("apiVersion")?;
    if kind != "Middleware" {
        return Some(Err(kind.to_string()));
    }
    let name = v.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("unnamed");
    Some(Ok((name.to_string(), v.get("spec").cloned().unwrap_or(Value::Null))))
}

fn merge(root: &mut Value, v: Value, reports: &mut Vec<String>) {
    let Value::Object(m) = v else {
        reports.push("untranslated: a document that is not a mapping".into());
        return;
    };
    for (k, v) in m {
        insert(root, &[&k], v, reports, &k);
    }
}

/// The node at `path` in `root`, made (as objects) where missing.
fn node_at<'a>(root: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut node = root;
    for key in path {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(m) = node else { return None };
        node = m.entry(key.to_string()).or_insert(Value::Null);
    }
    Some(node)
}

/// Sets `path` in `root` to `v`, merging objects.
fn insert(root: &mut Value, path: &[&str], v: Value, reports: &mut Vec<String>, what: &str) {
    let Some(node) = node_at(root, path) else { return };
    match (node, v) {
        (Value::Object(existing), Value::Object(new)) => {
            for (k, v) in new {
                if existing.contains_key(&k) {
                    reports.push(format!("note: {what}.{k}: given twice; the later one is used"));
                }
                existing.insert(k, v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `traefik.<path>=<value>` (optionally quoted, or a YAML list item).
fn label_line(line: &str) -> Option<(&str, &str)> {
    let line = line.trim().trim_start_matches("- ").trim();
    let line = line.strip_prefix('"').and_then(|l| l.strip_suffix('"')).unwrap_or(line);
    let line = line.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')).unwrap_or(line);
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    let rest = key.get(..8).filter(|p| p.eq_ignore_ascii_case("traefik."))?;
    (!rest.is_empty() && key.len() > 8).then_some((key, value.trim()))
}

/// The deepest label path read (YAML and TOML input stop at 128 levels
/// too): a deeper one is reported, never built (building and dropping a
/// tree tens of thousands deep overflows the stack).
pub const MAX_LABEL_DEPTH: usize = 128;

fn parse_labels(text: &str) -> Parsed {
    let mut root = Value::Object(Map::new());
    let mut reports = Vec::new();
    // Each label's first line, by path: one lookup per line, however many.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = label_line(trimmed) else {
            reports.push(format!("untranslated: line {line_no}: not a traefik.<path>=<value> label"));
            continue;
        };
        if key.split('.').nth(MAX_LABEL_DEPTH + 1).is_some() {
            reports.push(format!("untranslated: line {line_no}: a label path deeper than {MAX_LABEL_DEPTH} levels"));
            continue;
        }
        let path: Vec<String> = key.split('.').skip(1).map(str::to_ascii_lowercase).collect();
        if !path.first().is_some_and(|p| ["http", "tcp", "udp", "tls"].contains(&p.as_str())) {
            reports.push(format!("untranslated: line {line_no}: {key}: not part of Traefik's dynamic configuration"));
            continue;
        }
        let joined = path.join(".");
        match seen.get(&joined) {
            Some(first) => reports.push(format!(
                "note: line {line_no}: label {key} repeats line {first}; Traefik keeps the last one, so does this"
            )),
            None => {
                seen.insert(joined, line_no);
            }
        }
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        if let Some(leaf) = node_at(&mut root, &refs) {
            *leaf = Value::String(value.to_string());
        }
    }
    Parsed { root, reports }
}

/// A key of `obj`, matched ignoring ASCII case; with its spelling.
pub fn get<'a>(obj: &'a Value, key: &str) -> Option<(&'a str, &'a Value)> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(k, v)| (k.as_str(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_build_the_tree_and_report_repeats() {
        let p = parse_labels(
            "traefik.http.middlewares.docs.retry.attempts=4\n\
             - \"traefik.http.middlewares.docs.retry.initialinterval=100ms\"\n\
             traefik.http.middlewares.docs.retry.attempts=5\n\
             com.example.owner=me\n\
             traefik.enable=true\n",
        );
        let retry = &p.root["http"]["middlewares"]["docs"]["retry"];
        assert_eq!(retry["attempts"], "5", "the last one wins");
        assert_eq!(retry["initialinterval"], "100ms");
        assert_eq!(p.reports.len(), 3, "{:?}", p.reports);
        assert_eq!(p.reports[2], "untranslated: line 5: traefik.enable: not part of Traefik's dynamic configuration");
        assert!(
            p.reports[0].starts_with("note: line 3: label traefik.http.middlewares.docs.retry.attempts repeats line 1")
        );
        assert!(p.reports[1].starts_with("untranslated: line 4: not a traefik.<path>=<value> label"));
    }

    /// Issue 30, defect 12: a label path tens of thousands of levels deep is
    /// reported, not built (it overflowed the stack); 200,000 label lines
    /// are all read (their repeats found by a map, not a search per line).
    #[test]
    fn deep_and_many_labels_are_bounded() {
        let deep = format!("traefik.http{}=1\ntraefik.http.middlewares.a.ratelimit.average=5\n", ".x".repeat(60_000));
        let p = parse_labels(&deep);
        assert!(p.reports.iter().any(|r| r.contains("deeper than 128 levels")), "{:?}", p.reports);
        assert!(get(&p.root, "http").is_some());
        let many: String =
            (0..200_000).map(|i| format!("traefik.http.middlewares.m{i}.ratelimit.average={i}\n")).collect();
        let p = parse_labels(&many);
        assert_eq!(p.root["http"]["middlewares"].as_object().map(|m| m.len()), Some(200_000));
    }

    #[test]
    fn formats_are_told_apart() {
        assert_eq!(Format::sniff("traefik.http.middlewares.a.retry.attempts=2\n# c\n"), Format::Labels);
        assert_eq!(Format::sniff("[http.middlewares.a.retry]\nattempts = 2\n"), Format::Toml);
        assert_eq!(Format::sniff("http:\n  middlewares: {}\n"), Format::Yaml);
        assert_eq!(Format::from_name("dyn.TOML"), Some(Format::Toml));
    }

    #[test]
    fn kubernetes_middlewares_join_the_tree() {
        let p = parse_yaml(
            "apiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata:\n  name: test-retry\nspec:\n  retry:\n    attempts: 4\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\n",
        )
        .unwrap();
        assert_eq!(p.root["http"]["middlewares"]["test-retry"]["retry"]["attempts"], 4);
        assert_eq!(p.reports, vec!["untranslated: document 2: a Kubernetes Service".to_string()]);
    }
}
