//! `traefik-convert`: Traefik middlewares in, this project's filter
//! configurations out. See `README.md` ("Coming from Traefik") for what maps
//! to what; everything that does not map is reported, one line each.

pub mod fields;
pub mod input;
mod translate;

pub use input::{parse, Format};
use serde_json::{json, Map, Value};
pub use translate::traefik_cookie_name;

/// Lines for the report: what was not translated, what behaves differently,
/// and notes. Printed one per line, never dropped.
#[derive(Debug, Default)]
pub struct Report {
    /// The lines, in the order found.
    pub lines: Vec<String>,
}

impl Report {
    /// Something Traefik does that no output config does.
    pub fn untranslated(&mut self, path: &str, why: &str) {
        self.lines.push(format!("untranslated: {path}: {why}"));
    }
    /// Translated, with a difference in behaviour.
    pub fn differs(&mut self, path: &str, how: &str) {
        self.lines.push(format!("differs: {path}: {how}"));
    }
    /// Something the reader must do or know.
    pub fn note(&mut self, path: &str, what: &str) {
        self.lines.push(format!("note: {path}: {what}"));
    }
}

/// What the command needs besides the Traefik configuration.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Backend addresses per service (`ip:port`), for sticky cookies whose
    /// service lists no servers (Docker and Kubernetes providers find them).
    pub servers: Vec<(String, Vec<String>)>,
    /// The sticky cookie's signing secret (generated when absent).
    pub secret: Option<String>,
}

/// One translated piece.
#[derive(Debug, Clone)]
pub struct Translated {
    /// Where it came from (`http.middlewares.docs.retry`).
    pub from: String,
    /// The filter it configures (`rate-limit`, `circuit-breaker`, `retry`, `sticky-session`).
    pub filter: &'static str,
    /// The filter's configuration.
    pub config: Value,
}

/// The whole conversion.
#[derive(Debug, Default)]
pub struct Conversion {
    /// Every translated middleware and sticky cookie.
    pub filters: Vec<Translated>,
    /// Envoy route `retry_policy` blocks, one per retry middleware.
    pub envoy_retry_policies: Vec<(String, Value)>,
    /// The report.
    pub report: Report,
}

impl Conversion {
    /// The one-module bundle's configuration: each policy's first
    /// translation (rate limits: all of them, as one list); the rest are
    /// reported.
    pub fn bundle(&mut self) -> Option<Value> {
        let mut sections = Map::new();
        for t in &self.filters {
            let section = match t.filter {
                "rate-limit" => "rate_limit",
                "circuit-breaker" => "circuit_breaker",
                "retry" => "retry",
                _ => "sticky_session",
            };
            match sections.get_mut(section) {
                None => {
                    sections.insert(section.to_string(), t.config.clone());
                }
                Some(existing) if section == "rate_limit" => {
                    merge_limits(existing, &t.config, &t.from, &mut self.report);
                    self.report.differs(
                        &t.from,
                        "joins the bundle's rate_limit: in the bundle every limit applies to every request (Traefik applies a middleware on the routers that use it); give limits a match, or use one filter config per route",
                    );
                }
                Some(_) => self.report.untranslated(
                    &t.from,
                    &format!("left out of the bundle, which holds one {section} section; use its own filter config"),
                ),
            }
        }
        (!sections.is_empty()).then_some(Value::Object(sections))
    }

    /// The printed form: `filters`, `bundle`, `envoy_route_retry_policies`.
    pub fn to_json(&mut self) -> Value {
        let bundle = self.bundle();
        let filters: Vec<Value> =
            self.filters.iter().map(|t| json!({"from": t.from, "filter": t.filter, "config": t.config})).collect();
        let policies: Vec<Value> =
            self.envoy_retry_policies.iter().map(|(from, p)| json!({"from": from, "retry_policy": p})).collect();
        json!({"filters": filters, "bundle": bundle, "envoy_route_retry_policies": policies})
    }
}

/// Adds `more`'s limits to `existing` (both rate-limit configs); a
/// different client-address setting cannot be shared and is reported.
fn merge_limits(existing: &mut Value, more: &Value, from: &str, r: &mut Report) {
    for field in ["trusted_hops", "ipv4_prefix", "ipv6_prefix"] {
        if existing.get(field) != more.get(field) {
            r.differs(from, &format!("its {field} differs from the bundle's first rate limit, whose setting applies"));
        }
    }
    let add = more.get("limits").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(Value::Array(limits)) = existing.get_mut("limits") {
        limits.extend(add);
    }
}

/// Converts a parsed Traefik configuration.
pub fn convert(root: &Value, opts: &Options) -> Conversion {
    let mut c = Conversion::default();
    translate::walk(root, opts, &mut c);
    c
}

/// Reads and converts `text`; parse errors are the `Err`.
pub fn convert_text(text: &str, format: Format, opts: &Options) -> Result<Conversion, String> {
    let parsed = parse(text, format)?;
    let mut c = convert(&parsed.root, opts);
    let mut lines = parsed.reports;
    lines.append(&mut c.report.lines);
    c.report.lines = lines;
    Ok(c)
}
