//! Limits, declared as `envoyproxy/ratelimit` declares them: one YAML file
//! per domain, a tree of descriptors, each node matching one entry by key
//! and (optionally) value.
//!
//! ```yaml
//! domain: edge
//! descriptors:
//!   - key: generic_key
//!     value: fleet-ip
//!     descriptors:
//!       - key: remote_address          # no value: one counter per address
//!         rate_limit: { unit: minute, requests_per_unit: 100 }
//!         shadow_mode: false
//! ```
//!
//! A request descriptor with entries `e1..en` walks the tree: at each level
//! a node with the entry's key and value, else one with the key and no value.
//! The limit is the `rate_limit` of the node reached by the last entry; a
//! descriptor that leaves the tree early, or ends on a node without a
//! `rate_limit`, is not limited.

use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    domain: String,
    #[serde(default)]
    descriptors: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    rate_limit: Option<RawLimit>,
    #[serde(default)]
    descriptors: Vec<RawNode>,
    #[serde(default)]
    shadow_mode: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    requests_per_unit: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: Option<String>,
}

/// One configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// The unit, as the protocol numbers it (1 second ... 7 week).
    pub unit: i32,
    /// The unit in seconds.
    pub unit_secs: u64,
    /// Optional name, echoed in answers.
    pub name: String,
    /// Count, but never refuse.
    pub shadow: bool,
    /// Index into [`Config::limit_names`] (for metrics).
    pub id: usize,
}

/// What a descriptor's node says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Counted against this limit.
    Limited(Limit),
    /// `unlimited: true`: always OK, never counted.
    Unlimited,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by key, then by value.
    children: HashMap<String, Branch>,
    rule: Option<Rule>,
}

/// The children of one key: per value, and the one without a value.
#[derive(Debug, Default)]
struct Branch {
    by_value: HashMap<String, Node>,
    any_value: Option<Box<Node>>,
}

/// Every domain's tree.
#[derive(Debug, Default)]
pub struct Config {
    domains: HashMap<String, Node>,
    /// Metric label of each limit: `domain.key_value.key...`.
    pub limit_names: Vec<(String, String)>,
}

impl Config {
    /// Parses the files (one domain each). Errors name the file and field.
    pub fn load(files: &[(String, String)]) -> Result<Config, String> {
        let mut config = Config::default();
        for (path, text) in files {
            let raw: RawDomain = serde_yaml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
            if raw.domain.is_empty() {
                return Err(format!("{path}: domain: must not be empty"));
            }
            if config.domains.contains_key(&raw.domain) {
                return Err(format!("{path}: domain: \"{}\" is declared twice", raw.domain));
            }
            let mut root = Node::default();
            for (i, n) in raw.descriptors.into_iter().enumerate() {
                let field = format!("descriptors[{i}]");
                add(&mut root, n, &raw.domain, &raw.domain, &field, path, &mut config.limit_names)?;
            }
            config.domains.insert(raw.domain, root);
        }
        Ok(config)
    }

    /// The rule for a descriptor, `None` when it is not limited.
    pub fn rule(&self, domain: &str, entries: &[(String, String)]) -> Option<&Rule> {
        let mut node = self.domains.get(domain)?;
        if entries.is_empty() {
            return None;
        }
        for (key, value) in entries {
            // Looked up by &str: no allocation per request.
            let branch = node.children.get(key.as_str())?;
            node = branch.by_value.get(value.as_str()).or(branch.any_value.as_deref())?;
        }
        node.rule.as_ref()
    }

    /// Number of domains.
    pub fn domains(&self) -> usize {
        self.domains.len()
    }
}

fn add(
    parent: &mut Node,
    raw: RawNode,
    domain: &str,
    prefix: &str,
    field: &str,
    path: &str,
    names: &mut Vec<(String, String)>,
) -> Result<(), String> {
    if raw.key.is_empty() {
        return Err(format!("{path}: {field}.key: must not be empty"));
    }
    let label = match &raw.value {
        Some(v) => format!("{prefix}.{}_{v}", raw.key),
        None => format!("{prefix}.{}", raw.key),
    };
    let rule = match raw.rate_limit {
        None => None,
        Some(l) if l.unlimited => {
            if l.requests_per_unit.is_some() || l.unit.is_some() {
                return Err(format!("{path}: {field}.rate_limit: unlimited takes neither unit nor requests_per_unit"));
            }
            Some(Rule::Unlimited)
        }
        Some(l) => {
            let unit_text = l.unit.ok_or_else(|| format!("{path}: {field}.rate_limit.unit: is required"))?;
            let unit = unit_number(&unit_text).ok_or_else(|| {
                format!("{path}: {field}.rate_limit.unit: \"{unit_text}\" is not one of second, minute, hour, day, week, month, year")
            })?;
            let rpu = l
                .requests_per_unit
                .ok_or_else(|| format!("{path}: {field}.rate_limit.requests_per_unit: is required"))?;
            if rpu == 0 {
                return Err(format!("{path}: {field}.rate_limit.requests_per_unit: must be at least 1"));
            }
            let unit_secs = filters_core::ratelimit::protocol::unit_seconds(unit).unwrap_or(1);
            let id = names.len();
            names.push((domain.to_string(), label.clone()));
            Some(Rule::Limited(Limit {
                requests_per_unit: rpu,
                unit,
                unit_secs,
                name: l.name.unwrap_or_default(),
                shadow: raw.shadow_mode,
                id,
            }))
        }
    };
    let branch = parent.children.entry(raw.key.clone()).or_default();
    let taken = match &raw.value {
        Some(v) => branch.by_value.contains_key(v),
        None => branch.any_value.is_some(),
    };
    if taken {
        return Err(format!("{path}: {field}: key \"{}\" with this value is declared twice", raw.key));
    }
    let mut node = Node { children: HashMap::new(), rule };
    for (i, child) in raw.descriptors.into_iter().enumerate() {
        add(&mut node, child, domain, &label, &format!("{field}.descriptors[{i}]"), path, names)?;
    }
    match raw.value {
        Some(v) => {
            branch.by_value.insert(v, node);
        }
        None => branch.any_value = Some(Box::new(node)),
    }
    Ok(())
}

fn unit_number(text: &str) -> Option<i32> {
    match text.to_ascii_lowercase().as_str() {
        "second" => Some(1),
        "minute" => Some(2),
        "hour" => Some(3),
        "day" => Some(4),
        "month" => Some(5),
        "year" => Some(6),
        "week" => Some(7),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
domain: edge
descriptors:
  - key: generic_key
    value: fleet-ip
    descriptors:
      - key: remote_address
        rate_limit: { unit: minute, requests_per_unit: 10 }
      - key: remote_address
        value: 10.9.9.9
        rate_limit: { unlimited: true }
  - key: generic_key
    value: shadowed
    shadow_mode: true
    rate_limit: { unit: SECOND, requests_per_unit: 2, name: trial }
"#;

    fn e(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn lookup_prefers_exact_values_then_wildcards() {
        let c = Config::load(&[("edge.yaml".into(), YAML.into())]).unwrap();
        let Some(Rule::Limited(l)) = c.rule("edge", &e(&[("generic_key", "fleet-ip"), ("remote_address", "1.2.3.4")]))
        else {
            panic!("wildcard value should match");
        };
        assert_eq!((l.requests_per_unit, l.unit_secs, l.shadow), (10, 60, false));
        assert_eq!(c.limit_names[l.id], ("edge".to_string(), "edge.generic_key_fleet-ip.remote_address".to_string()));
        assert_eq!(
            c.rule("edge", &e(&[("generic_key", "fleet-ip"), ("remote_address", "10.9.9.9")])),
            Some(&Rule::Unlimited)
        );
        let Some(Rule::Limited(s)) = c.rule("edge", &e(&[("generic_key", "shadowed")])) else { panic!("shadow") };
        assert!(s.shadow && s.name == "trial" && s.unit_secs == 1);
        // Leaving the tree early, stopping on a node without a limit, other domains: no limit.
        assert_eq!(c.rule("edge", &e(&[("generic_key", "fleet-ip")])), None);
        assert_eq!(c.rule("edge", &e(&[("generic_key", "other"), ("remote_address", "1.2.3.4")])), None);
        assert_eq!(c.rule("edge", &e(&[("generic_key", "shadowed"), ("x", "y")])), None);
        assert_eq!(c.rule("api", &e(&[("generic_key", "fleet-ip")])), None);
        assert_eq!(c.rule("edge", &[]), None);
    }

    #[test]
    fn bad_configs_name_file_and_field() {
        let cases = [
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
                "d.yaml: descriptors[0].rate_limit.unit: \"fortnight\" is not one of",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 0 }\n",
                "descriptors[0].rate_limit.requests_per_unit: must be at least 1",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second }\n",
                "descriptors[0].rate_limit.requests_per_unit: is required",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    descriptors:\n      - key: ''\n",
                "descriptors[0].descriptors[0].key: must not be empty",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n  - key: k\n",
                "descriptors[1]: key \"k\" with this value is declared twice",
            ),
            ("domain: d\ndescriptors:\n  - key: k\n    replaces: [x]\n", "unknown field `replaces`"),
            ("domain: ''\n", "domain: must not be empty"),
        ];
        for (yaml, want) in cases {
            let got = Config::load(&[("d.yaml".into(), yaml.into())]).map(|_| ()).unwrap_err();
            assert!(got.contains(want), "{yaml}\n got: {got}\n want: {want}");
        }
        let twice = Config::load(&[("a.yaml".into(), "domain: d\n".into()), ("b.yaml".into(), "domain: d\n".into())]);
        assert!(twice.unwrap_err().contains("b.yaml: domain: \"d\" is declared twice"));
    }
}
