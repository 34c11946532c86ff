//! The host seam: everything a filter asks of the proxy, and the shape of a
//! filter as the proxy drives it.
//!
//! A filter is written once against [`Host`] and [`Filter`]. In the proxy,
//! `filters-host` implements [`Host`] over proxy-wasm's host calls and turns a
//! [`Filter`] into proxy-wasm root and HTTP contexts; in tests,
//! `crate::testing::RecordingHost` serves scripted requests, a fake clock and
//! an in-memory store that follows either host's compare-and-swap rule, and
//! counts every call. Both are generic parameters, never `dyn`: the seam costs
//! nothing at run time.
//!
//! # What each call costs
//!
//! `bench/COST-MODEL.md` measured Envoy 1.40: a call that **returns bytes**
//! (a header, a property, shared data, a call's answer) makes the host call
//! back into the VM to allocate and costs about 0.13-0.16 of a no-op filter,
//! plus 0.3-0.5 for the first one in each callback; a call that returns
//! nothing (set a header, compare-and-swap, a metric, the clock) is nearly
//! free. The method docs below say which class each call is in; the
//! recording host counts them per request so that tests pin each filter's
//! count.

use crate::clock::Clock;
use crate::config::ConfigError;
use crate::store::{SharedStore, StoreError};
use std::fmt;
use std::time::Duration;

/// A call to another service, dispatched while the request waits.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// A unary gRPC call.
    Grpc {
        /// The host's name for the upstream (Envoy: a serialized `GrpcService`).
        target: &'a str,
        /// Fully qualified service name.
        service: &'a str,
        /// Method name.
        method: &'a str,
        /// The serialized request message.
        body: &'a [u8],
        /// How long to wait for the answer.
        timeout: Duration,
    },
    /// An HTTP call.
    Http {
        /// The upstream (Envoy: a cluster name).
        target: &'a str,
        /// Request headers, pseudo-headers included.
        headers: &'a [(&'a str, &'a str)],
        /// Request body.
        body: &'a [u8],
        /// How long to wait for the answer.
        timeout: Duration,
    },
}

/// The answer to a dispatched call, as the host announces it. The body is
/// read with [`Host::call_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallReply {
    /// A gRPC call ended with `status` (0 is OK) and a body of `size` bytes.
    Grpc {
        /// The gRPC status code.
        status: u32,
        /// The size of the response message.
        size: usize,
    },
    /// An HTTP call ended; its `:status` (absent when no response came at
    /// all) is read with [`Host::call_status`].
    Http {
        /// The size of the response body.
        size: usize,
    },
}

/// Whether the proxy carries on with the request after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on (after a call's answer: resume the paused request).
    Continue,
    /// Stop here: a local reply was sent, or the request waits for a call.
    Pause,
}

/// Which proxy the filter runs in. Hosts differ in the properties they
/// have: asking nginx for one it lacks (`response.flags`,
/// `response.code_details`) logs an error line per request, so filters ask
/// only for what their host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Envoy (and Istio, Envoy Gateway).
    Envoy,
    /// nginx with Kong's `ngx_wasm_module`.
    Nginx,
}

/// The kinds of metric a filter defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set to a value.
    Gauge,
}

/// What a filter asks of the proxy. Every method is infallible from the
/// filter's side: a refusal by the host is reported in the return value
/// (`None`, `false`, `Err`) or, for calls that return nothing, ignored (the
/// request goes on without the header or the metric).
///
/// The clock ([`Clock`]) and shared data ([`SharedStore`]) are the two seams
/// the algorithms already take; a `Host` is both. Reading the clock returns
/// nothing in the cost model's sense; a shared-data read returns bytes, a
/// write does not.
pub trait Host: Clock + SharedStore {
    /// Which proxy this is. Learnt once per VM, at the first request (nginx
    /// answers the `ngx.*` properties, and only inside a request); one call
    /// that returns bytes then, none after.
    fn kind(&self) -> HostKind;
    /// The first value of request header `name` (lower case), decoded lossily
    /// when it is not UTF-8. Returns bytes.
    fn request_header(&self, name: &str) -> Option<String>;
    /// [`Host::request_header`] lent to `f`, called once. Returns bytes.
    fn request_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        f(self.request_header(name).as_deref());
    }
    /// Every request header, in order, in one buffer. Returns bytes (one
    /// call, however many).
    fn request_headers(&self) -> crate::headers::Headers;
    /// A property (`["source", "address"]`, `["response", "code"]`, ...).
    /// Returns bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// A property holding an integer ([`property_u64`]); a host that reads
    /// integers as such overrides it (no bytes to copy and parse).
    fn property_int(&self, path: &[&str]) -> Option<u64> {
        parse_integer_property(&self.property(path)?)
    }
    /// A property lent to `f` (`None`: absent), called once: a host or a
    /// pass that already holds the bytes lends them instead of copying.
    /// Returns bytes.
    fn property_with(&self, path: &[&str], f: &mut dyn FnMut(Option<&[u8]>)) {
        f(self.property(path).as_deref());
    }
    /// Sets request header `name` to `value`, or removes it (`None`).
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// The first value of response header `name` (lower case). Returns bytes.
    fn response_header(&self, name: &str) -> Option<String>;
    /// [`Host::response_header`] lent to `f`, called once. Returns bytes.
    fn response_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        f(self.response_header(name).as_deref());
    }
    /// Adds a response header.
    fn add_response_header(&self, name: &str, value: &str);

    /// Lends the chunk of the response body the proxy just delivered
    /// (`size` bytes, as the body callback said) to `f`, in one or more
    /// pieces, in order; nothing when the host has none.
    fn response_body_with(&self, size: usize, f: &mut dyn FnMut(&[u8]));
    /// Answers the request locally; `false` when the host refused.
    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool;
    /// Dispatches `call`; its token, or the host's refusal as text.
    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String>;
    /// Sends an outbound call on the proxy's behalf, not tied to this
    /// request (which may end first): its answer is not delivered. `Err`
    /// when the host cannot (the caller then dispatches it with the
    /// request, best effort). The Proxy-Wasm adapter queues it and sends it
    /// from its root context at the next tick ([`Filter::tick_period`]).
    fn dispatch_detached(&self, _call: &Call<'_>) -> Result<(), String> {
        Err("this host sends calls only with a request".into())
    }
    /// The `:status` of an HTTP call's answer (`None`: no response at all).
    /// Returns bytes. Only meaningful while handling that answer.
    fn call_status(&self) -> Option<u16>;
    /// The body of a call's answer, `size` bytes at most. Returns bytes.
    /// Only meaningful while handling that answer.
    fn call_body(&self, reply: CallReply) -> Vec<u8>;
    /// Defines (or finds, on another worker) a metric; `None` if refused.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    /// Adds `delta` to a counter.
    fn increment_metric(&self, id: u32, delta: u64);
    /// Sets a gauge.
    fn record_metric(&self, id: u32, value: u64);
    /// A metric's current value (nginx: a counter summed over the workers,
    /// a gauge as last set by any); `None` if refused. Returns a number.
    fn metric_value(&self, id: u32) -> Option<u64>;
    /// Every metric this VM defined, in definition order (kept by the
    /// adapter; no host call).
    fn defined_metrics(&self) -> Vec<DefinedMetric>;
    /// Sets a property of this request (Envoy: the filter state object
    /// `wasm.<path>`; nginx: `ngx.<name>` sets that nginx variable);
    /// `false` when the host refused. Returns nothing.
    fn set_property(&self, path: &[&str], value: &str) -> bool;
}

/// A metric the VM defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinedMetric {
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Its name (`rate_limit.per-client.allowed`).
    pub name: String,
    /// The host's id for it.
    pub id: u32,
}

/// Bytes from the host as text: as is when they are UTF-8 (no copy), else
/// decoded lossily (invalid bytes become U+FFFD) rather than refused.
pub fn lossy_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The request's authority: `:authority` in Envoy; in nginx the `Host`
/// header (ngx_wasm_module answers `:authority` with the server's own name
/// and port, whatever the client asked for), else `:authority`.
pub fn authority<H: Host + ?Sized>(host: &H) -> Option<String> {
    if host.kind() == HostKind::Nginx {
        if let Some(h) = host.request_header("host") {
            return Some(h);
        }
    }
    host.request_header(":authority")
}

/// Reads a property as text: nginx returns text, Envoy returns text for
/// addresses and names.
pub fn property_text<H: Host + ?Sized>(host: &H, path: &[&str]) -> Option<String> {
    host.property(path).map(lossy_text)
}

/// `f` of what `call` lends (the adapter between a `*_with` method of
/// [`Host`], which takes a `&mut dyn FnMut`, and a closure with a result).
fn lent<T: ?Sized, R>(
    call: impl FnOnce(&mut dyn FnMut(Option<&T>)),
    f: impl FnOnce(Option<&T>) -> Option<R>,
) -> Option<R> {
    let (mut f, mut out) = (Some(f), None);
    call(&mut |v| out = f.take().and_then(|f| f(v)));
    out
}

/// `f` of a property's bytes, lent ([`Host::property_with`]).
pub fn with_property<H: Host + ?Sized, R>(
    host: &H,
    path: &[&str],
    f: impl FnOnce(Option<&[u8]>) -> Option<R>,
) -> Option<R> {
    lent(|g| host.property_with(path, g), f)
}

/// `f` of a request header's value, lent ([`Host::request_header_with`]).
pub fn with_request_header<H: Host + ?Sized, R>(
    host: &H,
    name: &str,
    f: impl FnOnce(Option<&str>) -> Option<R>,
) -> Option<R> {
    lent(|g| host.request_header_with(name, g), f)
}

/// `f` of a response header's value, lent ([`Host::response_header_with`]).
pub fn with_response_header<H: Host + ?Sized, R>(
    host: &H,
    name: &str,
    f: impl FnOnce(Option<&str>) -> Option<R>,
) -> Option<R> {
    lent(|g| host.response_header_with(name, g), f)
}

/// A property as text in a pooled string ([`crate::store::Key`]: no
/// allocation for an address or a cluster name), decoded lossily when it is
/// not UTF-8.
pub fn property_key<H: Host + ?Sized>(host: &H, path: &[&str]) -> Option<crate::store::Key> {
    with_property(host, path, |v| Some(crate::store::Key::from_parts(&[&String::from_utf8_lossy(v?)])))
}

/// Reads a property holding an integer: Envoy encodes integers as 8
/// little-endian bytes, nginx as decimal text; both are accepted.
pub fn property_u64<H: Host + ?Sized>(host: &H, path: &[&str]) -> Option<u64> {
    host.property_int(path)
}

/// See [`property_u64`]: decimal text first (nginx), else 8 little-endian
/// bytes (Envoy). Envoy's encoding of a status or flag set is never all ASCII
/// digits, so the two cannot be confused.
pub fn parse_integer_property(bytes: &[u8]) -> Option<u64> {
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(bytes).ok()?.parse().ok();
    }
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(bytes).ok()?))
}

/// Why a filter refused its configuration. `Display` is the one line logged
/// before the proxy refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A field is wrong.
    Config(ConfigError),
    /// The shared table the filter needs could not be created.
    Store {
        /// What could not be created, e.g. "the rate-limit table".
        what: &'static str,
        /// The store's error.
        error: StoreError,
    },
}

impl From<ConfigError> for Refused {
    fn from(e: ConfigError) -> Self {
        Refused::Config(e)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Config(e) => e.fmt(f),
            Refused::Store { what, error } => write!(f, "shared data is unavailable, cannot create {what}: {error}"),
        }
    }
}

impl Refused {
    /// Wraps a configure-time store result: the number of entries created,
    /// or a refusal saying that `what` could not be created.
    pub fn store<T>(what: &'static str, result: Result<T, StoreError>) -> Result<T, Refused> {
        result.map_err(|error| Refused::Store { what, error })
    }
}

/// A filter as the proxy drives it: configured once per VM (per worker),
/// then called for each request. `Stream` is the per-request state; `self` is
/// shared by every request of the worker.
pub trait Filter: Sized + 'static {
    /// Per-request state, created empty when a request starts.
    type Stream: Default;

    /// The checked configuration: a value, made from the bytes alone.
    type Config;

    /// The first component of every metric the filter defines
    /// (`rate_limit`, ...); `<prefix>.configured` counts the VMs that
    /// configured it ([`configure`]).
    const METRIC_PREFIX: &'static str;

    /// Parses and checks the configuration bytes: pure, no host, so that
    /// the tools, the bundle and both adapters validate a configuration the
    /// same one way. The error names the field.
    fn check(config: &[u8]) -> Result<Self::Config, ConfigError>;

    /// Builds the filter from a checked configuration: metrics defined,
    /// shared tables created. An `Err` is logged in one line and the proxy
    /// refuses the configuration.
    fn build<H: Host>(host: &H, config: Self::Config) -> Result<Self, Refused>;

    /// The request headers arrived.
    fn on_request_headers<H: Host>(&self, stream: &mut Self::Stream, host: &H) -> Flow;

    /// The response headers arrived (from upstream or a local reply).
    fn on_response_headers<H: Host>(&self, _stream: &mut Self::Stream, _host: &H) {}

    /// A chunk of the response body went by (`size` bytes; `end`: the
    /// last). The body is never held: the chunk goes on when this returns
    /// `Continue`. `Pause` holds the last chunk (only with `end`) until a
    /// call dispatched here answers ([`Filter::on_call_reply`] returning
    /// `Continue` resumes the response).
    fn on_response_body<H: Host>(&self, _stream: &mut Self::Stream, _host: &H, _size: usize, _end: bool) -> Flow {
        Flow::Continue
    }

    /// The request completed (or was abandoned): the access-log phase.
    fn on_log<H: Host>(&self, _stream: &mut Self::Stream, _host: &H) {}

    /// A call dispatched for this request answered. `Continue` resumes the
    /// request; `Pause` leaves it as it is (a local reply was sent).
    fn on_call_reply<H: Host>(&self, _stream: &mut Self::Stream, _host: &H, _token: u32, _reply: CallReply) -> Flow {
        Flow::Continue
    }

    /// How often the host should run the filter's timer work (the Proxy-Wasm
    /// adapter: send the calls queued by [`Host::dispatch_detached`]);
    /// `None`, the default, sets no timer.
    fn tick_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// What the filter decided for this request so far, as span attributes
    /// (`<policy>.<field>`, value): pure, no host call; written to the
    /// proxy only when the configuration asks for traces
    /// ([`crate::observe`]).
    fn span_attributes(&self, _stream: &Self::Stream, _out: &mut Vec<(&'static str, String)>) {}
}

/// Answers the request locally; when the host refuses the reply, the
/// request goes through instead (its one warning line names `what`). The
/// one place every filter's local reply goes: a filter that cannot answer
/// must not hold the request forever.
pub fn reply_or_pass<H: Host + ?Sized>(
    host: &H,
    what: &str,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Flow {
    if host.send_reply(status, headers, body) {
        return Flow::Pause;
    }
    log::warn!("host refused the {what} reply ({status}); request let through");
    Flow::Continue
}

/// Configures `F` as the proxy does when it loads the plugin ([`Filter::check`],
/// then [`Filter::build`]): on success, counts `<prefix>.configured` (one
/// per VM: each worker and the main thread; it grows on a VM reload).
pub fn configure<F: Filter, H: Host>(host: &H, config: &[u8]) -> Result<F, Refused> {
    let checked = F::check(config)?;
    let filter = F::build(host, checked)?;
    Counter::define(host, &format!("{}.configured", F::METRIC_PREFIX)).inc(host);
    Ok(filter)
}

/// A counter; a host that refused to define it yields one that counts
/// nothing rather than a failed configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines (or finds, on a second worker) the counter `name`.
    pub fn define<H: Host + ?Sized>(host: &H, name: &str) -> Counter {
        Counter(define(host, MetricKind::Counter, name))
    }

    /// Adds one.
    pub fn inc<H: Host + ?Sized>(&self, host: &H) {
        self.add(host, 1);
    }

    /// Adds `n` (nothing when `n` is 0).
    pub fn add<H: Host + ?Sized>(&self, host: &H, n: u64) {
        if let Some(id) = self.0.filter(|_| n > 0) {
            host.increment_metric(id, n);
        }
    }
}

/// A gauge; like [`Counter`], a refused definition records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// Defines (or finds) the gauge `name`.
    pub fn define<H: Host + ?Sized>(host: &H, name: &str) -> Gauge {
        Gauge(define(host, MetricKind::Gauge, name))
    }

    /// Sets the value.
    pub fn set<H: Host + ?Sized>(&self, host: &H, value: u64) {
        if let Some(id) = self.0 {
            host.record_metric(id, value);
        }
    }
}

fn define<H: Host + ?Sized>(host: &H, kind: MetricKind, name: &str) -> Option<u32> {
    let id = host.define_metric(kind, name);
    if id.is_none() {
        log::warn!("could not define metric {name}");
    }
    id
}

/// Declares a set of metrics once: the struct (one field per metric, named
/// as the metric's last component), its `define` (every name is `prefix`
/// followed by the field's name) and `SUFFIXES`, the list the README tests
/// compare the metrics tables against.
///
/// ```ignore
/// metrics! {
///     /// Calls to the rate limit service.
///     pub struct GlobalMetrics { gauges: [], counters: [calls, ok, over_limit] }
/// }
/// ```
#[macro_export]
macro_rules! metrics {
    ($(#[$doc:meta])* $vis:vis struct $name:ident { gauges: [$($g:ident),* $(,)?], counters: [$($c:ident),* $(,)?] $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        $vis struct $name {
            $(#[doc = concat!("Gauge `<prefix>", stringify!($g), "`.")] pub $g: $crate::host::Gauge,)*
            $(#[doc = concat!("Counter `<prefix>", stringify!($c), "`.")] pub $c: $crate::host::Counter,)*
        }

        impl $name {
            /// Every metric's name after the prefix, in declaration order.
            #[allow(dead_code)]
            pub const SUFFIXES: &'static [&'static str] = &[$(stringify!($g),)* $(stringify!($c)),*];

            /// Defines every metric, named `prefix` + field name.
            pub fn define<H: $crate::host::Host + ?Sized>(host: &H, prefix: &str) -> Self {
                $name {
                    $($g: $crate::host::Gauge::define(host, &format!("{prefix}{}", stringify!($g))),)*
                    $($c: $crate::host::Counter::define(host, &format!("{prefix}{}", stringify!($c))),)*
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::parse_integer_property;

    #[test]
    fn integer_properties_of_both_hosts() {
        assert_eq!(parse_integer_property(&503u64.to_le_bytes()), Some(503));
        assert_eq!(parse_integer_property(b"503"), Some(503));
        assert_eq!(parse_integer_property(b"12345678"), Some(12_345_678));
        assert_eq!(parse_integer_property(b""), None);
        assert_eq!(parse_integer_property(b"50x"), None);
    }
}
