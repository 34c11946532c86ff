//! The core's `Host` over the dynamic-module ABI: one per event hook, on
//! the stream's `filter_envoy_ptr` (or, while a configuration is created on
//! the main thread, on the configuration's, where only metrics are
//! defined).
#![deny(unsafe_code)]

use crate::abi::{self, Attribute, Config, HeaderMap, Stream};
use filters_core::clock::Clock;
use filters_core::headers::Headers;
use filters_core::host::{lossy_text, Call, CallReply, DefinedMetric, Host, HostKind, MetricKind};
use filters_core::store::{Entry, SharedStore, StoreError};
use std::sync::{Mutex, PoisonError, RwLock};

/// One metric the configuration defined: Envoy's id, whether it is a
/// gauge, and the label value it is recorded under (its family was
/// defined with one label).
#[derive(Debug)]
struct Defined {
    name: String,
    kind: MetricKind,
    envoy_id: usize,
    label: Option<String>,
    /// A gauge's value as last set. Envoy's gauge is one for the process,
    /// and every worker sets it through this entry: a value it already
    /// holds is not set again (the breakers set their state on every
    /// request; a labelled gauge costs Envoy a lookup by name per set).
    last: Mutex<Option<u64>>,
}

impl Defined {
    fn new(name: &str, kind: MetricKind, envoy_id: usize, label: Option<&str>) -> Defined {
        Defined { name: name.to_string(), kind, envoy_id, label: label.map(str::to_string), last: Mutex::new(None) }
    }
}

/// The metrics of one configuration. Envoy defines metrics only while a
/// configuration is created; the families whose middle component is a
/// label (`observe::LABELLED`: a limit's, a breaker key's, a policy's, a
/// backend's) are defined then with that label, so that a breaker key first
/// seen in a request still gets its series, `circuit_breaker.requests`
/// with `breaker="<key>"`, exactly the series the Wasm build's stats_tags
/// give in Prometheus.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Written while metrics are defined (configure time, and a breaker
    /// key's first request), read on every update: a read lock, no copy.
    defined: RwLock<Vec<Defined>>,
    families: Mutex<Vec<(String, MetricKind, usize)>>,
}

impl Metrics {
    fn lock_defined(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Defined>> {
        self.defined.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_defined(&self) -> std::sync::RwLockReadGuard<'_, Vec<Defined>> {
        self.defined.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Defines every labelled family (at configuration time).
    pub fn define_families(&self, config: Config) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for (prefix, label, suffixes) in filters_core::observe::LABELLED {
            for suffix in suffixes {
                let name = format!("{prefix}.{suffix}");
                let kind = if *suffix == "state" { MetricKind::Gauge } else { MetricKind::Counter };
                if let Some(id) = abi::define_metric(config, kind == MetricKind::Gauge, &name, &[label]) {
                    families.push((name, kind, id));
                }
            }
        }
    }

    fn find(&self, name: &str) -> Option<u32> {
        let defined = self.read_defined();
        let i = defined.iter().position(|d| d.name == name)?;
        u32::try_from(i).ok()
    }

    fn add(&self, d: Defined) -> Option<u32> {
        let mut defined = self.lock_defined();
        defined.push(d);
        u32::try_from(defined.len() - 1).ok()
    }

    /// Finds or defines `name`: under its labelled family (any time), or on
    /// its own (only while `config` is given).
    fn define(&self, config: Option<Config>, kind: MetricKind, name: &str) -> Option<u32> {
        if let Some(id) = self.find(name) {
            return Some(id);
        }
        if let Some(filters_core::observe::Labelled { family, value: label, .. }) =
            filters_core::observe::labelled_family(name)
        {
            let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
            let (_, kind, envoy_id) = families.iter().find(|(f, _, _)| *f == family)?.clone();
            drop(families);
            // Defined while configuring: the series exists from the start,
            // at 0, as the Wasm build's stats do (Envoy creates a labelled
            // series at its first update).
            if let (Some(config), MetricKind::Counter) = (config, kind) {
                abi::increment_config_counter(config, envoy_id, &[label], 0);
            }
            return self.add(Defined::new(name, kind, envoy_id, Some(label)));
        }
        let envoy_id = abi::define_metric(config?, kind == MetricKind::Gauge, name, &[])?;
        self.add(Defined::new(name, kind, envoy_id, None))
    }

    /// Runs `f` on metric `id` (under the read lock: nothing is copied).
    fn with<R>(&self, id: u32, f: impl FnOnce(&Defined) -> R) -> Option<R> {
        self.read_defined().get(id as usize).map(f)
    }

    fn all(&self) -> Vec<DefinedMetric> {
        self.read_defined()
            .iter()
            .zip(0u32..)
            .map(|(d, id)| DefinedMetric { kind: d.kind, name: d.name.clone(), id })
            .collect()
    }
}

/// The answer to a call the filter dispatched, as the call-done hook got it.
#[derive(Debug, Default)]
pub struct CallAnswer {
    /// The HTTP `:status` (`None`: no response at all).
    pub status: Option<u16>,
    /// The body (a gRPC answer's message, without its 5-byte frame header).
    pub body: Vec<u8>,
}

/// The host of one event hook.
pub struct NativeHost<'a> {
    /// The stream ([`Stream::NONE`] while configuring).
    pub filter: Stream,
    /// The configuration, only while it is being created on the main thread.
    pub config: Option<Config>,
    /// The configuration's metrics.
    pub metrics: &'a Metrics,
    /// In the call-done hook: the answer.
    pub answer: Option<&'a CallAnswer>,
}

impl Clock for NativeHost<'_> {
    fn now_nanos(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl SharedStore for NativeHost<'_> {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        crate::store::get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
        crate::store::set(key, value, cas)
    }

    /// Copied under the shard's lock into `out` (no allocation once it
    /// has grown).
    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
        crate::store::get_into(key, out)
    }
}

impl NativeHost<'_> {
    fn streaming(&self) -> bool {
        self.filter.is_some()
    }

    /// Header `name` of `map` lent to `f` as text (decoded lossily, copied
    /// only then, when it is not UTF-8).
    fn lend_header(&self, map: HeaderMap, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        if !self.streaming() {
            return f(None);
        }
        abi::with_header(self.filter, map, name, |v| match v.map(String::from_utf8_lossy) {
            Some(text) => f(Some(&text)),
            None => f(None),
        });
    }
}

/// A property's attribute, and whether it is an integer.
fn attribute(path: &[&str]) -> Option<(Attribute, bool)> {
    Some(match path {
        ["source", "address"] => (Attribute::SourceAddress, false),
        ["xds", "cluster_name"] => (Attribute::XdsClusterName, false),
        ["xds", "route_name"] => (Attribute::XdsRouteName, false),
        ["response", "code"] => (Attribute::ResponseCode, true),
        ["response", "code_details"] => (Attribute::ResponseCodeDetails, false),
        ["response", "flags"] => (Attribute::ResponseFlags, true),
        ["upstream", "address"] => (Attribute::UpstreamAddress, false),
        ["upstream", "request_attempt_count"] => (Attribute::UpstreamRequestAttemptCount, true),
        _ => return None,
    })
}

impl Host for NativeHost<'_> {
    fn kind(&self) -> HostKind {
        HostKind::Envoy
    }

    fn request_header(&self, name: &str) -> Option<String> {
        if !self.streaming() {
            return None;
        }
        abi::header(self.filter, HeaderMap::Request, name).map(lossy_text)
    }

    fn request_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        self.lend_header(HeaderMap::Request, name, f);
    }

    fn request_headers(&self) -> Headers {
        if !self.streaming() {
            return Headers::default();
        }
        // Straight from Envoy's views into the core's one buffer: two
        // allocations (sized for a typical request, grown if need be),
        // however many headers.
        let mut headers = Headers::with_capacity(16, 512);
        abi::each_header(self.filter, HeaderMap::Request, |name, value| headers.push_bytes(name, value));
        headers
    }

    /// Integer attributes come back as 8 little-endian bytes, as Envoy's
    /// Proxy-Wasm properties do.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        if !self.streaming() {
            return None;
        }
        let (id, integer) = attribute(path)?;
        if integer {
            return abi::attribute_int(self.filter, id).map(|v| v.to_le_bytes().to_vec());
        }
        abi::attribute_string(self.filter, id)
    }

    /// Envoy's string attributes lent as Envoy lends them (no copy).
    fn property_with(&self, path: &[&str], f: &mut dyn FnMut(Option<&[u8]>)) {
        match attribute(path).filter(|_| self.streaming()) {
            Some((id, false)) => abi::with_attribute_string(self.filter, id, &mut *f),
            _ => f(self.property(path).as_deref()),
        }
    }

    /// Envoy's integer attributes read as integers (no bytes copied).
    fn property_int(&self, path: &[&str]) -> Option<u64> {
        if !self.streaming() {
            return None;
        }
        match attribute(path)? {
            (id, true) => abi::attribute_int(self.filter, id),
            _ => filters_core::host::parse_integer_property(&self.property(path)?),
        }
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        if self.streaming() {
            abi::set_header(self.filter, HeaderMap::Request, name, value);
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        if !self.streaming() {
            return None;
        }
        abi::header(self.filter, HeaderMap::Response, name).map(lossy_text)
    }

    fn response_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        self.lend_header(HeaderMap::Response, name, f);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        if self.streaming() {
            abi::add_header(self.filter, HeaderMap::Response, name, value);
        }
    }

    /// The whole chunk Envoy delivered to this hook (`size` is the Wasm
    /// ABI's: Envoy lends the chunk itself).
    fn response_body_with(&self, _size: usize, f: &mut dyn FnMut(&[u8])) {
        if self.streaming() {
            abi::each_response_body_slice(self.filter, |slice| f(slice));
        }
    }

    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
        if !self.streaming() {
            return false;
        }
        abi::send_response(self.filter, status, headers, body, "resilience_filter");
        true
    }

    /// An HTTP call as it is; a gRPC call as its HTTP/2 request (the
    /// cluster must speak HTTP/2, as Envoy's gRPC clusters do): the
    /// message in a gRPC frame, `content-type: application/grpc`.
    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        if !self.streaming() {
            return Err("no request".into());
        }
        let millis = |t: std::time::Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
        let id = match *call {
            Call::Http { target, headers, body, timeout } => {
                abi::http_callout(self.filter, target, headers, body, millis(timeout))?
            }
            Call::Grpc { target, service, method, body, timeout } => {
                let (cluster, authority) = rls_protocol::parse_grpc_target(target.as_bytes())
                    .unwrap_or_else(|| (target.to_string(), String::new()));
                let authority = if authority.is_empty() { cluster.clone() } else { authority };
                let path = format!("/{service}/{method}");
                let mut framed = Vec::with_capacity(body.len() + 5);
                framed.push(0);
                framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
                framed.extend_from_slice(body);
                let headers = [
                    (":method", "POST"),
                    (":path", path.as_str()),
                    (":authority", authority.as_str()),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ];
                abi::http_callout(self.filter, &cluster, &headers, &framed, millis(timeout))?
            }
        };
        u32::try_from(id).map_err(|_| "callout id out of range".to_string())
    }

    fn call_status(&self) -> Option<u16> {
        self.answer?.status
    }

    fn call_body(&self, _reply: CallReply) -> Vec<u8> {
        self.answer.map(|a| a.body.clone()).unwrap_or_default()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.metrics.define(self.config, kind, name)
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        self.update(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.update(id, value);
    }

    /// Envoy serves the metrics natively (`/stats/prometheus`).
    fn metric_value(&self, _id: u32) -> Option<u64> {
        None
    }

    fn defined_metrics(&self) -> Vec<DefinedMetric> {
        self.metrics.all()
    }

    /// A span attribute (`trace`, [`filters_core::observe`]): natively the
    /// module tags Envoy's active span itself (the Wasm build goes through
    /// filter state and the connection manager's `custom_tags`). Other
    /// properties are not written.
    fn set_property(&self, path: &[&str], value: &str) -> bool {
        match path {
            [name] if self.streaming() => abi::set_span_tag(self.filter, name, value),
            _ => false,
        }
    }
}

impl NativeHost<'_> {
    fn update(&self, id: u32, value: u64) {
        self.metrics.with(id, |d| {
            let label = d.label.as_deref();
            let labels = label.as_slice();
            let gauge = d.kind == MetricKind::Gauge;
            match (self.streaming(), self.config) {
                (true, _) if gauge => {
                    let mut last = d.last.lock().unwrap_or_else(PoisonError::into_inner);
                    if *last != Some(value) {
                        abi::update_metric(self.filter, true, d.envoy_id, labels, value);
                        *last = Some(value);
                    }
                }
                (true, _) => abi::update_metric(self.filter, false, d.envoy_id, labels, value),
                // While configuring (the `configured` counter): the config's own.
                (false, Some(config)) if !gauge => abi::increment_config_counter(config, d.envoy_id, labels, value),
                _ => {}
            }
        });
    }
}
