//! Seeing what the filters decide: their decisions as span attributes, and
//! their metrics as Prometheus text for a host with no exporter of its own
//! (nginx).
//!
//! Every module is shipped as [`Observed`]`<its filter>`, which reads two
//! fields of any module's configuration:
//!
//! * **`trace: true`**: after each callback, the filter's decisions so far
//!   ([`Filter::span_attributes`], `<policy>.<field>`) are written as
//!   properties of the request, each once per value. A Proxy-Wasm filter
//!   cannot tag a span itself; what it can write, the proxy's tracer can
//!   read:
//!   * Envoy: `set_property(["ratelimit.result"], "refused")` creates the
//!     filter state object `wasm.ratelimit.result`, and the tracing
//!     configuration's `custom_tags` copy it onto the request's span
//!     (`value: "%FILTER_STATE(wasm.ratelimit.result:PLAIN)%"`, Envoy 1.37+).
//!   * nginx: `set_property(["ngx", "filters_ratelimit_result"], ...)` sets
//!     the variable `$filters_ratelimit_result` (`filters_`, then the name
//!     with `_` for `.`, apart from the config's own variables such as
//!     `$sticky_backend`; the variable must exist, which
//!     `nginx-otel/otel/http.conf`'s `map` blocks do), which
//!     `otel_span_attr` reads.
//!
//!   Off (the default), nothing is collected nor written: the request path
//!   is the filter's alone (its host calls are pinned by each filter's tests).
//! * **`metrics_path`**: a request for exactly that path (query ignored) is
//!   answered by the filter with every metric this VM defined, in Prometheus
//!   text: the series and labels Envoy's `/stats/prometheus` gives with the
//!   sample `stats_tags` ([`LABELLED`]), so one dashboard reads both proxies.
//!   A configuration holding only `metrics_path` (and `trace`) builds no
//!   policy: it serves the metrics the module's other configurations in the
//!   same worker defined (an nginx `location` of its own).

use crate::config::{parse_json, ConfigError};
use crate::host::{CallReply, DefinedMetric, Filter, Flow, Host, HostKind, MetricKind, Refused};
use serde::Deserialize;
use std::fmt::Write as _;

/// The two fields, as any module's configuration may carry them.
#[derive(Deserialize)]
struct RawObserve {
    #[serde(default)]
    trace: bool,
    #[serde(default)]
    metrics_path: Option<String>,
}

/// Does the configuration hold anything besides these two fields?
#[derive(Deserialize)]
struct Keys(std::collections::BTreeMap<String, serde::de::IgnoredAny>);

/// What a configuration asks to be seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observe {
    /// Write the decisions as span attributes.
    pub trace: bool,
    /// Serve the metrics at this path.
    pub metrics_path: Option<String>,
}

/// Longest accepted `metrics_path`.
pub const MAX_METRICS_PATH: usize = 256;

impl Observe {
    /// Reads `trace` and `metrics_path` from a configuration (other fields
    /// are the filter's).
    pub fn from_json(bytes: &[u8]) -> Result<Observe, ConfigError> {
        let raw: RawObserve = parse_json(bytes)?;
        if let Some(path) = &raw.metrics_path {
            check_metrics_path(path)?;
        }
        Ok(Observe { trace: raw.trace, metrics_path: raw.metrics_path })
    }

    /// Neither field given.
    pub fn is_off(&self) -> bool {
        !self.trace && self.metrics_path.is_none()
    }
}

fn check_metrics_path(path: &str) -> Result<(), ConfigError> {
    let field = "metrics_path";
    if !path.starts_with('/') {
        return Err(ConfigError::new(field, "must start with /"));
    }
    if path.len() > MAX_METRICS_PATH {
        return Err(ConfigError::new(field, format!("must be at most {MAX_METRICS_PATH} characters")));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') {
        return Err(ConfigError::new(field, "must be a path: printable ASCII without spaces, ? or #"));
    }
    Ok(())
}

/// Is this configuration only an exporter (`metrics_path`, maybe `trace`,
/// nothing else)?
fn exporter_only(bytes: &[u8], observe: &Observe) -> Result<bool, ConfigError> {
    if observe.metrics_path.is_none() {
        return Ok(false);
    }
    let Keys(keys) = parse_json(bytes)?;
    Ok(keys.keys().all(|k| k == "trace" || k == "metrics_path"))
}

/// Refuses `trace` and `metrics_path` inside a bundle section: the bundle
/// reads them at its top level only.
pub fn refuse_in_section(bytes: &[u8]) -> Result<(), ConfigError> {
    let observe = Observe::from_json(bytes)?;
    for (field, given) in [("trace", observe.trace), ("metrics_path", observe.metrics_path.is_some())] {
        if given {
            return Err(ConfigError::new(field, "belongs at the bundle's top level (it applies to every policy)"));
        }
    }
    Ok(())
}

/// A filter `F` with its decisions on the span and its metrics served
/// (see the module's documentation). With neither asked for, every
/// callback is `F`'s alone.
#[derive(Debug, Clone)]
pub struct Observed<F> {
    /// `None`: an exporter-only configuration.
    filter: Option<F>,
    observe: Observe,
}

/// One request through [`Observed`].
#[derive(Debug, Default)]
pub struct ObservedStream<S> {
    /// The filter's own state.
    pub inner: S,
    /// Attributes already written, with their values.
    written: Vec<(&'static str, String)>,
}

impl<F: Filter> Observed<F> {
    /// The filter, unless this configuration is an exporter only.
    pub fn filter(&self) -> Option<&F> {
        self.filter.as_ref()
    }

    /// Writes the attributes whose value is new since the last callback.
    fn write_attributes<H: Host>(&self, stream: &mut ObservedStream<F::Stream>, host: &H) {
        let Some(filter) = self.filter.as_ref().filter(|_| self.observe.trace) else { return };
        let mut now = Vec::new();
        filter.span_attributes(&stream.inner, &mut now);
        for (name, value) in now {
            if stream.written.iter().any(|(n, v)| *n == name && *v == value) {
                continue;
            }
            set_attribute(host, name, &value);
            match stream.written.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = value,
                None => stream.written.push((name, value)),
            }
        }
    }
}

/// The property an attribute is written to: Envoy's filter state object
/// `wasm.<name>`, or nginx's variable `$filters_<name with _ for .>`.
pub fn attribute_property(kind: HostKind, name: &str) -> Vec<String> {
    match kind {
        HostKind::Envoy => vec![name.to_string()],
        HostKind::Nginx => vec!["ngx".to_string(), format!("filters_{}", name.replace('.', "_"))],
    }
}

fn set_attribute<H: Host + ?Sized>(host: &H, name: &str, value: &str) {
    let path = attribute_property(host.kind(), name);
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    if !host.set_property(&path, value) {
        log::debug!("host refused span attribute {name}");
    }
}

impl<F: Filter> Filter for Observed<F> {
    type Stream = ObservedStream<F::Stream>;
    type Config = (Option<F::Config>, Observe);
    const METRIC_PREFIX: &'static str = F::METRIC_PREFIX;

    fn check(config: &[u8]) -> Result<Self::Config, ConfigError> {
        let observe = Observe::from_json(config)?;
        if exporter_only(config, &observe)? {
            return Ok((None, observe));
        }
        Ok((Some(F::check(config)?), observe))
    }

    fn build<H: Host>(host: &H, (config, observe): Self::Config) -> Result<Self, Refused> {
        let filter = config.map(|c| F::build(host, c)).transpose()?;
        if let Some(path) = &observe.metrics_path {
            log::info!("serving this module's metrics at {path}");
        }
        Ok(Observed { filter, observe })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut Self::Stream, host: &H) -> Flow {
        if let Some(path) = &self.observe.metrics_path {
            if requested_path(host).as_deref() == Some(path.as_str()) {
                return serve_metrics(host);
            }
        }
        let Some(filter) = &self.filter else { return Flow::Continue };
        let flow = filter.on_request_headers(&mut stream.inner, host);
        self.write_attributes(stream, host);
        flow
    }

    fn on_response_headers<H: Host>(&self, stream: &mut Self::Stream, host: &H) {
        let Some(filter) = &self.filter else { return };
        filter.on_response_headers(&mut stream.inner, host);
        self.write_attributes(stream, host);
    }

    fn on_response_body<H: Host>(&self, stream: &mut Self::Stream, host: &H, size: usize, end: bool) -> Flow {
        match &self.filter {
            Some(filter) => filter.on_response_body(&mut stream.inner, host, size, end),
            None => Flow::Continue,
        }
    }

    fn on_log<H: Host>(&self, stream: &mut Self::Stream, host: &H) {
        if let Some(filter) = &self.filter {
            filter.on_log(&mut stream.inner, host);
        }
    }

    fn on_call_reply<H: Host>(&self, stream: &mut Self::Stream, host: &H, token: u32, reply: CallReply) -> Flow {
        let Some(filter) = &self.filter else { return Flow::Continue };
        let flow = filter.on_call_reply(&mut stream.inner, host, token, reply);
        self.write_attributes(stream, host);
        flow
    }

    fn span_attributes(&self, stream: &Self::Stream, out: &mut Vec<(&'static str, String)>) {
        if let Some(filter) = &self.filter {
            filter.span_attributes(&stream.inner, out);
        }
    }

    fn tick_period(&self) -> Option<std::time::Duration> {
        self.filter.as_ref().and_then(Filter::tick_period)
    }
}

/// The request's path without its query.
fn requested_path<H: Host + ?Sized>(host: &H) -> Option<String> {
    let mut path = host.request_header(":path")?;
    if let Some(q) = path.find('?') {
        path.truncate(q);
    }
    Some(path)
}

/// Answers with every metric this VM defined, in Prometheus text.
fn serve_metrics<H: Host>(host: &H) -> Flow {
    let defined = host.defined_metrics();
    let mut samples = Vec::with_capacity(defined.len());
    for DefinedMetric { kind, name, id } in defined {
        if let Some(value) = host.metric_value(id) {
            samples.push((kind, name, value));
        }
    }
    let body = prometheus_text(&samples);
    let headers = vec![("content-type".to_string(), "text/plain; version=0.0.4; charset=utf-8".to_string())];
    crate::host::reply_or_pass(host, "metrics", 200, &headers, body.as_bytes())
}

/// The metrics whose middle component is a label, as the sample
/// `stats_tags` extract it in Envoy: `(first component, label, last
/// components)`. `rate_limit.per-client.allowed` is the series
/// `rate_limit_allowed{limit="per-client"}`.
pub const LABELLED: [(&str, &str, &[&str]); 4] = [
    ("rate_limit", "limit", &["allowed", "refused", "shadow_refused", "cost_charged", "cost_defaulted"]),
    (
        "circuit_breaker",
        "breaker",
        &["state", "requests", "failures", "rejected", "opened", "half_opened", "recovering", "closed"],
    ),
    ("retry", "policy", &["requests"]),
    ("sticky", "backend", &["assigned", "failovers", "ejected"]),
];

/// A metric's Prometheus series: its family name and its label, if any.
pub fn series(name: &str) -> (String, Option<(&'static str, &str)>) {
    match labelled_family(name) {
        Some(Labelled { family, label, value }) => (sanitize(&family), Some((label, value))),
        None => (sanitize(name), None),
    }
}

/// A labelled metric split into its family and its one label.
#[derive(Debug, PartialEq, Eq)]
pub struct Labelled<'a> {
    /// The family, dotted: `rate_limit.allowed`.
    pub family: String,
    /// The label's name: `limit`.
    pub label: &'static str,
    /// The label's value: `per-client`.
    pub value: &'a str,
}

/// A labelled metric's family, label name and label value:
/// `rate_limit.per-client.allowed` is the family `rate_limit.allowed` with
/// `limit="per-client"`. `None` for a metric with no label.
pub fn labelled_family(name: &str) -> Option<Labelled<'_>> {
    for (prefix, label, suffixes) in LABELLED {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else { continue };
        for suffix in suffixes {
            let Some(middle) = rest.strip_suffix(suffix).and_then(|m| m.strip_suffix('.')) else { continue };
            if !middle.is_empty() {
                return Some(Labelled { family: format!("{prefix}.{suffix}"), label, value: middle });
            }
        }
    }
    None
}

/// Envoy's Prometheus names: every character other than `A-Z a-z 0-9 _`
/// becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Prometheus text (format 0.0.4): one `# TYPE` line per family, then its
/// series, families and series in name order.
pub fn prometheus_text(samples: &[(MetricKind, String, u64)]) -> String {
    let mut rows: Vec<(String, MetricKind, String, u64)> = samples
        .iter()
        .map(|(kind, name, value)| {
            let (family, label) = series(name);
            let mut labels = String::new();
            if let Some((key, value)) = label {
                labels.push('{');
                labels.push_str(key);
                labels.push_str("=\"");
                escape_label(value, &mut labels);
                labels.push_str("\"}");
            }
            (family, *kind, labels, *value)
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    rows.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    let mut out = String::new();
    let mut family: Option<&str> = None;
    for (name, kind, labels, value) in &rows {
        if family != Some(name.as_str()) {
            let kind = match kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            family = Some(name.as_str());
        }
        let _ = writeln!(out, "{name}{labels} {value}");
    }
    out
}

#[cfg(test)]
mod tests;
