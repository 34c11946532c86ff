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

use rls_protocol::Unit;
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
    #[serde(default)]
    quota_mode: bool,
    /// Metrics per descriptor value upstream; accepted, metrics stay per
    /// configured limit here (README: compatibility).
    #[serde(default)]
    #[allow(dead_code)]
    detailed_metric: bool,
    #[serde(default)]
    #[allow(dead_code)]
    value_to_metric: bool,
    #[serde(default)]
    share_threshold: bool,
    /// Sent only in upstream's response dynamic metadata (off by default
    /// there); accepted, not sent here.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    #[serde(default)]
    unit: Option<String>,
    /// Missing is 0, as upstream reads it: every request is over the limit.
    #[serde(default)]
    requests_per_unit: u32,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<RawReplaces>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplaces {
    #[serde(default)]
    name: String,
}

/// One configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
    /// The unit in seconds.
    pub unit_secs: u64,
    /// Optional name, echoed in answers.
    pub name: String,
    /// Count, but never refuse (each descriptor's status is OK too).
    pub shadow: bool,
    /// Over the limit fails the request only when every quota descriptor
    /// of the request is over.
    pub quota: bool,
    /// Names of the limits this one replaces in the same request.
    pub replaces: Vec<String>,
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

impl Node {
    fn dump(&self, names: &[(String, String)], out: &mut Vec<String>) {
        if let Some(Rule::Limited(l)) = &self.rule {
            if let Some((_, name)) = names.get(l.id) {
                out.push(format!(
                    "{name}: unit={} requests_per_unit={}, shadow_mode: {}",
                    l.unit.name(),
                    l.requests_per_unit,
                    l.shadow
                ));
            }
        }
        for branch in self.children.values() {
            for n in branch.by_value.values() {
                n.dump(names, out);
            }
            for w in &branch.wildcards {
                w.node.dump(names, out);
            }
            if let Some(n) = &branch.any_value {
                n.dump(names, out);
            }
        }
    }
}

/// The children of one key: per value, values with `*` (in declaration
/// order), and the one without a value.
#[derive(Debug, Default)]
struct Branch {
    by_value: HashMap<String, Node>,
    wildcards: Vec<Wildcard>,
    any_value: Option<Box<Node>>,
}

/// A value with `*`s: each matches any run of characters (zero or more).
#[derive(Debug)]
struct Wildcard {
    pattern: String,
    parts: Vec<String>,
    /// `share_threshold`: every matching value counts in one counter.
    share: bool,
    node: Node,
}

/// Does `value` match the pattern split on `*` into `parts`?
pub fn wildcard_match(parts: &[String], value: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else { return false };
    if parts.len() == 1 {
        return first == value;
    }
    if value.len() < parts.iter().map(String::len).sum::<usize>() {
        return false;
    }
    let Some(rest) = value.strip_prefix(first.as_str()) else { return false };
    let Some(mut middle) = rest.strip_suffix(last.as_str()) else { return false };
    for part in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        match middle.find(part.as_str()) {
            Some(i) => middle = middle.get(i + part.len()..).unwrap_or(""),
            None => return false,
        }
    }
    true
}

/// What a descriptor found: the rule, and the values its counter is kept
/// under (a `share_threshold` wildcard's entries share the pattern).
#[derive(Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// The rule (owned when the request brought it: a `limit` override).
    pub rule: std::borrow::Cow<'a, Rule>,
    /// Per entry, the pattern its value is counted under (`None`: its own value).
    pub shared: Vec<Option<&'a str>>,
}

/// The largest config file read (upstream's configs are a few kilobytes).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Where the config files are: `--config` paths, and upstream's runtime
/// directory when started from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Files, and directories whose `*.yaml`/`*.yml` files are read.
    pub paths: Vec<String>,
    /// Every regular file of the directory is read (upstream's rule).
    pub runtime: Option<crate::settings::RuntimeDir>,
}

impl Sources {
    /// The sources `settings` name.
    pub fn of(settings: &crate::settings::Settings) -> Sources {
        Sources { paths: settings.configs.clone(), runtime: settings.runtime.clone() }
    }
}

/// A config file's size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
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
        Config::load_with(files, false)
    }

    /// [`Config::load`]; with `merge`, files declaring the same domain add
    /// their descriptors to it (`MERGE_DOMAIN_CONFIG` upstream), a
    /// descriptor declared in two of them refused.
    pub fn load_with(files: &[(String, String)], merge: bool) -> Result<Config, String> {
        let mut config = Config::default();
        for (path, text) in files {
            let raw: RawDomain = serde_yaml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
            if raw.domain.is_empty() {
                return Err(format!("{path}: domain: must not be empty"));
            }
            if config.domains.contains_key(&raw.domain) && !merge {
                return Err(format!(
                    "{path}: domain: \"{}\" is declared twice (--merge-domains merges the files)",
                    raw.domain
                ));
            }
            let mut root = config.domains.remove(&raw.domain).unwrap_or_default();
            for (i, n) in raw.descriptors.into_iter().enumerate() {
                let field = format!("descriptors[{i}]");
                add(&mut root, n, &raw.domain, &raw.domain, &field, path, &mut config.limit_names)?;
            }
            config.domains.insert(raw.domain, root);
        }
        Ok(config)
    }

    /// The config files `paths` name: files, and the `*.yaml`/`*.yml` files
    /// of directories (sorted), each with its text. In a directory, only
    /// regular files (symbolic links followed, as Kubernetes mounts a
    /// ConfigMap) are read: a FIFO or a socket there is skipped, never
    /// opened (opening a FIFO waits for a writer). A file over
    /// [`MAX_CONFIG_BYTES`] is refused by name.
    pub fn read_files(sources: &Sources) -> Result<Vec<(String, String)>, String> {
        let mut files = Vec::new();
        for (name, _) in Self::stat_files(sources)? {
            let text = std::fs::read_to_string(&name).map_err(|e| format!("{name}: {e}"))?;
            if text.len() as u64 > MAX_CONFIG_BYTES {
                return Err(format!("{name}: larger than {MAX_CONFIG_BYTES} bytes"));
            }
            files.push((name, text));
        }
        Ok(files)
    }

    /// The files [`Config::read_files`] would read, each with its size and
    /// modification time, without opening any: what the watcher compares
    /// between polls.
    pub fn stat_files(sources: &Sources) -> Result<Vec<(String, Stamp)>, String> {
        let mut files = Vec::new();
        if let Some(r) = &sources.runtime {
            // Upstream's layout: every file of the directory is a config,
            // whatever its name; dot names skipped when asked.
            let entries = std::fs::read_dir(&r.dir).map_err(|e| format!("{}: {e}", r.dir))?;
            let mut names: Vec<std::path::PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| !(r.ignore_dotfiles && f.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))))
                .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file()))
                .collect();
            names.sort();
            for f in names {
                files.push(Self::stamp(&f)?);
            }
        }
        for path in &sources.paths {
            let p = std::path::Path::new(path);
            let mut names: Vec<std::path::PathBuf> = if p.is_dir() {
                let entries = std::fs::read_dir(p).map_err(|e| format!("{path}: {e}"))?;
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file()))
                    .collect()
            } else {
                vec![p.to_path_buf()]
            };
            names.sort();
            for f in names {
                files.push(Self::stamp(&f)?);
            }
        }
        Ok(files)
    }

    fn stamp(f: &std::path::Path) -> Result<(String, Stamp), String> {
        let name = f.display().to_string();
        let meta = std::fs::metadata(f).map_err(|e| format!("{name}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{name}: not a regular file"));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(format!("{name}: larger than {MAX_CONFIG_BYTES} bytes"));
        }
        Ok((name, Stamp { len: meta.len(), modified: meta.modified().ok() }))
    }

    /// Every limit, one line each, as upstream's debug port's `/rlconfig`
    /// prints them: `<domain>.<key>_<value>...: unit=MINUTE
    /// requests_per_unit=1, shadow_mode: false`, sorted.
    pub fn dump(&self) -> String {
        let mut lines = Vec::new();
        for node in self.domains.values() {
            node.dump(&self.limit_names, &mut lines);
        }
        lines.sort();
        lines.into_iter().map(|l| l + "\n").collect()
    }

    /// The rule for a descriptor, `None` when it is not limited.
    pub fn rule(&self, domain: &str, entries: &[(String, String)]) -> Option<&Rule> {
        match self.find(domain, entries)?.rule {
            std::borrow::Cow::Borrowed(r) => Some(r),
            std::borrow::Cow::Owned(_) => None,
        }
    }

    /// The rule for a descriptor and the values its counter is kept under.
    /// At each level: the exact value, else the first wildcard value that
    /// matches (in the file's order), else the key without a value.
    pub fn find(&self, domain: &str, entries: &[(String, String)]) -> Option<Found<'_>> {
        let mut node = self.domains.get(domain)?;
        if entries.is_empty() {
            return None;
        }
        let mut shared = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            // Looked up by &str: no allocation per request.
            let branch = node.children.get(key.as_str())?;
            if let Some(n) = branch.by_value.get(value.as_str()) {
                node = n;
                shared.push(None);
            } else if let Some(w) = branch.wildcards.iter().find(|w| wildcard_match(&w.parts, value)) {
                node = &w.node;
                shared.push(w.share.then_some(w.pattern.as_str()));
            } else {
                node = branch.any_value.as_deref()?;
                shared.push(None);
            }
        }
        node.rule.as_ref().map(|rule| Found { rule: std::borrow::Cow::Borrowed(rule), shared })
    }

    /// Whether the config declares `domain`.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
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
    let wildcard = raw.value.as_deref().is_some_and(|v| v.contains('*'));
    if raw.share_threshold && !wildcard {
        return Err(format!("{path}: {field}.share_threshold: applies only to a value with '*'"));
    }
    let rule = match raw.rate_limit {
        None => None,
        Some(l) if l.unlimited => {
            // As upstream: a unit next to unlimited is an error, a count is ignored.
            if l.unit.as_deref().and_then(unit_number).is_some() {
                return Err(format!("{path}: {field}.rate_limit: unlimited takes no unit"));
            }
            Some(Rule::Unlimited)
        }
        Some(l) => {
            let unit_text = l.unit.ok_or_else(|| format!("{path}: {field}.rate_limit.unit: is required"))?;
            let unit = unit_number(&unit_text).ok_or_else(|| {
                format!("{path}: {field}.rate_limit.unit: \"{unit_text}\" is not one of second, minute, hour, day, week, month, year")
            })?;
            let name = l.name.unwrap_or_default();
            let mut replaces = Vec::with_capacity(l.replaces.len());
            for (j, r) in l.replaces.into_iter().enumerate() {
                let at = format!("{path}: {field}.rate_limit.replaces[{j}].name");
                if r.name.is_empty() {
                    return Err(format!("{at}: must not be empty"));
                }
                if r.name == name {
                    return Err(format!("{at}: must not name this limit itself"));
                }
                replaces.push(r.name);
            }
            let unit_secs = unit.seconds();
            let id = names.len();
            names.push((domain.to_string(), label.clone()));
            Some(Rule::Limited(Limit {
                requests_per_unit: l.requests_per_unit,
                unit,
                unit_secs,
                name,
                shadow: raw.shadow_mode,
                quota: raw.quota_mode,
                replaces,
                id,
            }))
        }
    };
    let branch = parent.children.entry(raw.key.clone()).or_default();
    let taken = match &raw.value {
        Some(v) if wildcard => branch.wildcards.iter().any(|w| w.pattern == *v),
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
        Some(v) if wildcard => {
            let parts = v.split('*').map(str::to_string).collect();
            branch.wildcards.push(Wildcard { pattern: v, parts, share: raw.share_threshold, node });
        }
        Some(v) => {
            branch.by_value.insert(v, node);
        }
        None => branch.any_value = Some(Box::new(node)),
    }
    Ok(())
}

fn unit_number(text: &str) -> Option<Unit> {
    Some(match text.to_ascii_lowercase().as_str() {
        "second" => Unit::Second,
        "minute" => Unit::Minute,
        "hour" => Unit::Hour,
        "day" => Unit::Day,
        "month" => Unit::Month,
        "year" => Unit::Year,
        "week" => Unit::Week,
        _ => return None,
    })
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
    fn wildcard_values_match_after_exact_values_in_file_order() {
        let yaml = r#"
domain: w
descriptors:
  - key: path
    value: /api/v1/exact
    rate_limit: { unit: second, requests_per_unit: 1, name: exact }
  - key: path
    value: /api/*
    rate_limit: { unit: second, requests_per_unit: 2, name: api }
  - key: path
    value: /files/*/thumb*
    share_threshold: true
    rate_limit: { unit: minute, requests_per_unit: 3, name: thumbs }
  - key: path
    rate_limit: { unit: hour, requests_per_unit: 4, name: other }
  - key: banned
    rate_limit: { unit: second }
"#;
        let c = Config::load(&[("w.yaml".into(), yaml.into())]).unwrap();
        let name = |v: &str| match c.rule("w", &e(&[("path", v)])) {
            Some(Rule::Limited(l)) => l.name.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(name("/api/v1/exact"), "exact");
        assert_eq!(name("/api/v1/other"), "api");
        assert_eq!(name("/api/"), "api", "a * matches nothing too");
        assert_eq!(name("/files/a/thumb.png"), "thumbs");
        assert_eq!(name("/files/thumb"), "other", "both literal parts must be there");
        assert_eq!(name("/ap"), "other");
        // share_threshold: the counter is kept under the pattern.
        let f = c.find("w", &e(&[("path", "/files/x/thumb1")])).unwrap();
        assert_eq!(f.shared, vec![Some("/files/*/thumb*")]);
        assert_eq!(c.find("w", &e(&[("path", "/api/x")])).unwrap().shared, vec![None]);
        // requests_per_unit left out is 0, as upstream reads it.
        let Some(Rule::Limited(b)) = c.rule("w", &e(&[("banned", "x")])) else { panic!("banned") };
        assert_eq!(b.requests_per_unit, 0);
    }

    #[test]
    fn wildcard_matching_cases() {
        let p = |pat: &str| pat.split('*').map(str::to_string).collect::<Vec<_>>();
        for (pat, value, want) in [
            ("foo*", "foo", true),
            ("foo*", "foobar", true),
            ("foo*", "fo", false),
            ("*bar", "foobar", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("a*bc*c", "abc", false),
            ("*", "", true),
            ("a**b", "ab", true),
        ] {
            assert_eq!(wildcard_match(&p(pat), value), want, "{pat} vs {value}");
        }
    }

    #[test]
    fn bad_configs_name_file_and_field() {
        let cases = [
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
                "d.yaml: descriptors[0].rate_limit.unit: \"fortnight\" is not one of",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
                "descriptors[0].share_threshold: applies only to a value with '*'",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, replaces: [{name: ''}] }\n",
                "descriptors[0].rate_limit.replaces[0].name: must not be empty",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, name: a, replaces: [{name: a}] }\n",
                "descriptors[0].rate_limit.replaces[0].name: must not name this limit itself",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unlimited: true, unit: second }\n",
                "descriptors[0].rate_limit: unlimited takes no unit",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    value: a*\n  - key: k\n    value: a*\n",
                "descriptors[1]: key \"k\" with this value is declared twice",
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
        // Merged, as MERGE_DOMAIN_CONFIG does; a descriptor in both files is refused.
        let a = (
            "a.yaml".to_string(),
            "domain: d\ndescriptors:\n  - key: x\n    rate_limit: { unit: second, requests_per_unit: 1 }\n".to_string(),
        );
        let b = (
            "b.yaml".to_string(),
            "domain: d\ndescriptors:\n  - key: y\n    rate_limit: { unit: second, requests_per_unit: 2 }\n".to_string(),
        );
        let merged = Config::load_with(&[a.clone(), b], true).unwrap();
        assert!(merged.rule("d", &e(&[("x", "1")])).is_some() && merged.rule("d", &e(&[("y", "1")])).is_some());
        let dup = Config::load_with(&[a.clone(), ("c.yaml".into(), a.1.clone())], true).unwrap_err();
        assert!(dup.contains("c.yaml: descriptors[0]: key \"x\" with this value is declared twice"), "{dup}");
    }
}
