//! Which requests a limit or a policy applies to: methods, a path prefix,
//! and header conditions. Shared by every filter that matches requests.

use crate::config::ConfigError;
use crate::request::RequestView;
use serde::Deserialize;

/// A match as written in JSON: `{"methods": [...], "path_prefix": "/api",
/// "headers": [{"name": "x", "present": true}, {"name": "y", "equals": "v"}]}`.
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Match"))]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default = "yes")]
    case_sensitive: bool,
    #[serde(default)]
    headers: Vec<RawHeaderMatch>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "HeaderMatch"))]
#[serde(deny_unknown_fields)]
struct RawHeaderMatch {
    name: String,
    #[serde(default)]
    present: Option<bool>,
    #[serde(default)]
    equals: Option<String>,
}

/// A header condition of a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// The header is present (`true`) or absent (`false`).
    Present(String, bool),
    /// The header's first value equals this string exactly.
    Equals(String, String),
}

/// Which requests a rule applies to; empty means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// Upper-case methods, any of which matches (empty: any method).
    pub methods: Vec<String>,
    /// A prefix of the normalised path ([`crate::path`]; empty: any path),
    /// itself normalised, and lower-cased when not `case_sensitive`.
    pub path_prefix: String,
    /// Compare the path case-sensitively (the default, as Envoy's routes).
    pub case_sensitive: bool,
    /// All must hold.
    pub headers: Vec<HeaderMatch>,
}

impl HeaderMatch {
    /// The header it reads.
    pub fn name(&self) -> &str {
        match self {
            HeaderMatch::Present(n, _) | HeaderMatch::Equals(n, _) => n,
        }
    }
}

impl RawMatch {
    /// Checks a match; `field` is its path in the configuration.
    pub fn check(self, field: &str) -> Result<Matcher, ConfigError> {
        check_match(field, self)
    }
}

impl Matcher {
    /// Does the request match? (An empty matcher matches everything.)
    pub fn matches(&self, req: &RequestView) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|x| x == req.method()) {
            return false;
        }
        if !self.path_prefix.is_empty() && !self.path_matches(&req.path()) {
            return false;
        }
        self.headers.iter().all(|h| match h {
            HeaderMatch::Present(name, want) => req.header(name).is_some() == *want,
            HeaderMatch::Equals(name, value) => req.header(name) == Some(value.as_str()),
        })
    }
}

impl Matcher {
    fn path_matches(&self, path: &str) -> bool {
        match (self.case_sensitive, path.get(..self.path_prefix.len())) {
            (true, _) => path.starts_with(&self.path_prefix),
            (false, Some(head)) => head.eq_ignore_ascii_case(&self.path_prefix),
            (false, None) => false,
        }
    }
}

/// A valid HTTP header name (token characters).
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_match(field: &str, raw: RawMatch) -> Result<Matcher, ConfigError> {
    let mut methods = Vec::with_capacity(raw.methods.len());
    for (j, m) in raw.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ConfigError::new(format!("{field}.methods[{j}]"), "must be an HTTP method such as GET"));
        }
        methods.push(m.to_ascii_uppercase());
    }
    let path_prefix = raw.path_prefix.unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        return Err(ConfigError::new(format!("{field}.path_prefix"), "must start with '/'"));
    }
    if path_prefix.contains(['?', '#']) {
        return Err(ConfigError::new(format!("{field}.path_prefix"), "must be a path, without '?' or '#'"));
    }
    // Requests are matched on their normalised path: so is the prefix.
    let path_prefix =
        if path_prefix.is_empty() { path_prefix } else { crate::path::normalize(&path_prefix).into_owned() };
    let path_prefix = if raw.case_sensitive { path_prefix } else { path_prefix.to_ascii_lowercase() };
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (j, h) in raw.headers.into_iter().enumerate() {
        let f = format!("{field}.headers[{j}]");
        if !valid_header_name(&h.name) {
            return Err(ConfigError::new(format!("{f}.name"), "must be a header name"));
        }
        let name = h.name.to_ascii_lowercase();
        headers.push(match (h.present, h.equals) {
            (Some(p), None) => HeaderMatch::Present(name, p),
            (None, Some(v)) => HeaderMatch::Equals(name, v),
            _ => return Err(ConfigError::new(f, "needs exactly one of \"present\" or \"equals\"")),
        });
    }
    Ok(Matcher { methods, path_prefix, case_sensitive: raw.case_sensitive, headers })
}
