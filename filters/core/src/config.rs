//! What every filter's configuration shares: parsing JSON with the path of
//! the offending field, and an error that names the field and the reason.

use serde::de::DeserializeOwned;
use std::fmt;

/// A refused configuration: which field, and why. `Display` is the one line
/// the filter logs before the proxy refuses the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `limits[0].period` (`.` for the whole document).
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: {}: {}", self.field, self.reason)
    }
}

/// Parses JSON into `T`, reporting the path of the field that failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| ConfigError::new(".", e.to_string()))?;
            Ok(v)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            // serde_json appends " at line L column C"; the path says where.
            let reason = inner.to_string();
            let reason = match reason.rfind(" at line ") {
                Some(i) if inner.is_data() => reason.get(..i).unwrap_or(&reason).to_string(),
                _ => reason,
            };
            Err(ConfigError::new(path, reason))
        }
    }
}

/// The ```json blocks of a markdown document (for tests that check the
/// examples in the filters' READMEs).
#[cfg(test)]
pub(crate) fn json_blocks(markdown: &str) -> Vec<&str> {
    markdown.split("```json\n").skip(1).map(|b| b.split("```").next().unwrap_or("")).collect()
}

/// Checks a README's `## Metrics` table against the metrics a filter
/// defines: each `(prefix, suffixes)` is one metric set (`prefix` may hold a
/// placeholder such as `<limit>`). In the table, a name written `.suffix`
/// after a full name shares that name's prefix.
#[cfg(test)]
pub(crate) fn assert_metrics_table(readme: &str, sets: &[(&str, &[&str])]) {
    let section = readme.split("## Metrics").nth(1).expect("a ## Metrics section");
    let mut documented = std::collections::BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or("");
        let mut prefix = String::new();
        for name in first.split('`').skip(1).step_by(2) {
            let full = match name.strip_prefix('.') {
                Some(suffix) => format!("{prefix}{suffix}"),
                None => name.to_string(),
            };
            prefix = full.rsplit_once('.').map(|(p, _)| format!("{p}.")).unwrap_or_default();
            documented.insert(full);
        }
    }
    let defined: std::collections::BTreeSet<String> =
        sets.iter().flat_map(|(p, suffixes)| suffixes.iter().map(move |s| format!("{p}{s}"))).collect();
    assert_eq!(documented, defined, "README metrics table vs metrics defined");
}
