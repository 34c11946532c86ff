//! A recording host for native tests of whole filters: it serves scripted
//! request headers, response headers, properties and call answers over a
//! [`FakeClock`] and a [`MemoryStore`] that follows Envoy's or nginx's
//! compare-and-swap rule, and records every host call: what was set, added,
//! replied and dispatched, the metrics, and how many calls of each cost
//! class a request made.
//!
//! [`Exchange`] drives a [`Filter`] through one request the way the proxy
//! does (request headers, a call's answer, response headers, log).

use crate::clock::{Clock, FakeClock};
use crate::headers::Headers;
use crate::host::{Call, CallReply, Filter, Flow, Host, HostKind, MetricKind, Refused};
use crate::store::{CasRule, Entry, MemoryStore, SharedStore, StoreError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Host calls made during one request, by cost class (see
/// `bench/COST-MODEL.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCalls {
    /// Calls that return bytes: headers, properties, shared-data reads, a
    /// call's answer.
    pub returning_bytes: u32,
    /// Calls that return nothing: set or add a header, shared-data writes,
    /// metrics, the clock, replies, dispatches.
    pub returning_nothing: u32,
    /// Callbacks in which at least one call returned bytes (each pays the
    /// first-call premium once).
    pub callbacks_reading: u32,
}

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A call the filter dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The token handed back.
    pub token: u32,
    /// `grpc` or `http`.
    pub protocol: &'static str,
    /// The target.
    pub target: String,
    /// HTTP headers (empty for gRPC), or `[service, method]` for gRPC.
    pub headers: Vec<(String, String)>,
    /// The body sent.
    pub body: Vec<u8>,
    /// The timeout asked for.
    pub timeout: Duration,
}

/// The scripted answer to the next call.
#[derive(Debug, Clone, Default)]
struct Answer {
    status: Option<u16>,
    body: Vec<u8>,
}

/// A fake proxy that records what a filter does.
#[derive(Debug)]
pub struct RecordingHost {
    /// The clock every call sees; move it with `advance` / `set`.
    pub clock: FakeClock,
    /// The shared data: one per proxy, shared by every "worker" made with
    /// [`RecordingHost::worker`].
    pub store: Rc<MemoryStore>,
    request: RefCell<Headers>,
    response: RefCell<Headers>,
    body: RefCell<Vec<u8>>,
    properties: RefCell<HashMap<String, Vec<u8>>>,
    replies: RefCell<Vec<Reply>>,
    dispatched: RefCell<Vec<Dispatched>>,
    detached: RefCell<Vec<Dispatched>>,
    refuse_dispatch: Cell<bool>,
    refuse_replies: Cell<bool>,
    answer: RefCell<Answer>,
    metrics: RefCell<Vec<(String, MetricKind, u64)>>,
    written: RefCell<Vec<(String, String)>>,
    calls: Cell<HostCalls>,
    read_in_callback: Cell<bool>,
    kind: HostKind,
    kind_learnt: Cell<bool>,
}

impl Default for RecordingHost {
    fn default() -> Self {
        Self::new(CasRule::Envoy)
    }
}

impl RecordingHost {
    /// A host whose shared data follows `rule`, clock at 1000 s. The rule
    /// also says which proxy it is ([`HostKind`]): `NginxStrict` is nginx
    /// (no `response.flags` or `response.code_details`), `Envoy` is Envoy.
    pub fn new(rule: CasRule) -> Self {
        RecordingHost {
            clock: FakeClock::at(1_000_000_000_000),
            store: Rc::new(MemoryStore::new(rule)),
            request: RefCell::default(),
            response: RefCell::default(),
            body: RefCell::default(),
            properties: RefCell::default(),
            replies: RefCell::default(),
            dispatched: RefCell::default(),
            detached: RefCell::default(),
            refuse_dispatch: Cell::new(false),
            refuse_replies: Cell::new(false),
            answer: RefCell::default(),
            metrics: RefCell::default(),
            written: RefCell::default(),
            calls: Cell::default(),
            read_in_callback: Cell::new(false),
            // The store's rule says which proxy this is.
            kind: if rule == CasRule::NginxStrict { HostKind::Nginx } else { HostKind::Envoy },
            kind_learnt: Cell::new(false),
        }
    }

    /// Another worker of the same proxy: its own requests and metrics, the
    /// same shared data, its clock set to this one's.
    pub fn worker(&self) -> Self {
        let rule = if self.kind == HostKind::Nginx { CasRule::NginxStrict } else { CasRule::Envoy };
        let mut other = RecordingHost::new(rule);
        other.store = Rc::clone(&self.store);
        other.clock.set(self.clock.now_nanos());
        other
    }

    /// Starts a new request with these headers: forgets the previous one's
    /// headers, replies, call counts and `response.*` / `upstream.*`
    /// properties (others, such as `source.address`, stay until changed).
    pub fn begin(&self, headers: &[(&str, &str)]) {
        *self.request.borrow_mut() = headers.iter().copied().collect();
        *self.response.borrow_mut() = Headers::default();
        self.properties.borrow_mut().retain(|k, _| !k.starts_with("response.") && !k.starts_with("upstream."));
        self.replies.borrow_mut().clear();
        self.written.borrow_mut().clear();
        self.calls.set(HostCalls::default());
    }

    /// The properties the filter set during this request (path joined
    /// with `.`, value), in order; a path set twice appears twice.
    pub fn written_properties(&self) -> Vec<(String, String)> {
        self.written.borrow().clone()
    }

    /// The last value the filter set for property `path` (joined with `.`)
    /// during this request.
    pub fn written_property(&self, path: &str) -> Option<String> {
        self.written.borrow().iter().rev().find(|(p, _)| p == path).map(|(_, v)| v.clone())
    }

    /// Sets the response headers the filter will see.
    pub fn respond(&self, headers: &[(&str, &str)]) {
        *self.response.borrow_mut() = headers.iter().copied().collect();
    }

    /// The calls sent detached ([`Host::dispatch_detached`]).
    pub fn detached(&self) -> Vec<Dispatched> {
        self.detached.borrow().clone()
    }

    /// Sets the response body chunk the next body callback lends.
    pub fn body_chunk(&self, chunk: &[u8]) {
        *self.body.borrow_mut() = chunk.to_vec();
    }

    /// Sets a property (path joined with `.`, e.g. `"response.code"`).
    pub fn set_property(&self, path: &str, value: impl Into<Vec<u8>>) {
        self.properties.borrow_mut().insert(path.to_string(), value.into());
    }

    /// Sets an integer property the way Envoy encodes it (8 LE bytes).
    pub fn set_property_u64(&self, path: &str, value: u64) {
        self.set_property(path, value.to_le_bytes().to_vec());
    }

    /// The answer the next call's reply carries: HTTP `:status` (or `None`
    /// for no response) and body.
    pub fn answer_with(&self, status: Option<u16>, body: impl Into<Vec<u8>>) {
        *self.answer.borrow_mut() = Answer { status, body: body.into() };
    }

    /// Makes the host refuse (or accept again) every local reply.
    pub fn refuse_replies(&self, refuse: bool) {
        self.refuse_replies.set(refuse);
    }

    /// Makes the host refuse (or accept again) every dispatch.
    pub fn refuse_dispatch(&self, refuse: bool) {
        self.refuse_dispatch.set(refuse);
    }

    /// The current request headers (after the filter's changes).
    pub fn request_headers_now(&self) -> Vec<(String, String)> {
        self.request.borrow().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// The request header `name` as the upstream would receive it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.request.borrow().get(name).map(str::to_string)
    }

    /// The response headers now (after the filter's additions).
    pub fn response_headers_now(&self) -> Vec<(String, String)> {
        self.response.borrow().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// The first response header `name` now.
    pub fn response_header_now(&self, name: &str) -> Option<String> {
        self.response.borrow().get(name).map(str::to_string)
    }

    /// The local reply sent during this request, if any.
    pub fn reply(&self) -> Option<Reply> {
        self.replies.borrow().last().cloned()
    }

    /// Every call dispatched so far.
    pub fn dispatched(&self) -> Vec<Dispatched> {
        self.dispatched.borrow().clone()
    }

    /// A metric's value (0 when never defined or never moved).
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics.borrow().iter().find(|(n, _, _)| n == name).map_or(0, |(_, _, v)| *v)
    }

    /// Whether a metric of that name was defined.
    pub fn has_metric(&self, name: &str) -> bool {
        self.metrics.borrow().iter().any(|(n, _, _)| n == name)
    }

    /// Every defined metric's name.
    pub fn metric_names(&self) -> Vec<String> {
        self.metrics.borrow().iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Host calls made since the request began.
    pub fn calls(&self) -> HostCalls {
        self.calls.get()
    }

    /// Marks the start of a callback (for [`HostCalls::callbacks_reading`]).
    pub fn enter_callback(&self) {
        self.read_in_callback.set(false);
    }

    fn bytes(&self) {
        let mut c = self.calls.get();
        c.returning_bytes += 1;
        if !self.read_in_callback.replace(true) {
            c.callbacks_reading += 1;
        }
        self.calls.set(c);
    }

    fn nothing(&self) {
        let mut c = self.calls.get();
        c.returning_nothing += 1;
        self.calls.set(c);
    }
}

fn first(list: &[(String, String)], name: &str) -> Option<String> {
    list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

impl Clock for RecordingHost {
    fn now_nanos(&self) -> u64 {
        self.nothing();
        self.clock.now_nanos()
    }
}

impl SharedStore for RecordingHost {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.bytes();
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
        self.nothing();
        self.store.set(key, value, cas)
    }
}

impl Host for RecordingHost {
    /// Nginx when the store follows nginx's rule, else Envoy; the first
    /// call counts as the one property read the real host makes.
    fn kind(&self) -> HostKind {
        if !self.kind_learnt.replace(true) {
            self.bytes();
        }
        self.kind
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.bytes();
        self.request.borrow().get(name).map(str::to_string)
    }

    fn request_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        self.bytes();
        f(self.request.borrow().get(name));
    }

    fn request_headers(&self) -> crate::headers::Headers {
        self.bytes();
        self.request.borrow().clone()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let mut out = None;
        self.property_with(path, &mut |v| out = v.map(<[u8]>::to_vec));
        out
    }

    fn property_with(&self, path: &[&str], f: &mut dyn FnMut(Option<&[u8]>)) {
        self.bytes();
        let key = crate::store::Key::joined(path, ".");
        f(self.properties.borrow().get(key.as_str()).map(Vec::as_slice));
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.nothing();
        self.request.borrow_mut().set(name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.bytes();
        self.response.borrow().get(name).map(str::to_string)
    }

    fn response_header_with(&self, name: &str, f: &mut dyn FnMut(Option<&str>)) {
        self.bytes();
        f(self.response.borrow().get(name));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.nothing();
        self.response.borrow_mut().push(name, value);
    }

    fn response_body_with(&self, size: usize, f: &mut dyn FnMut(&[u8])) {
        self.bytes();
        let body = self.body.borrow();
        f(body.get(..size.min(body.len())).unwrap_or_default());
    }

    fn send_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
        self.nothing();
        if self.refuse_replies.get() {
            return false;
        }
        self.replies.borrow_mut().push(Reply {
            status,
            headers: headers.to_vec(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        true
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        self.nothing();
        if self.refuse_dispatch.get() {
            return Err("BadArgument".to_string());
        }
        let mut all = self.dispatched.borrow_mut();
        let token = u32::try_from(all.len()).unwrap_or(u32::MAX).saturating_add(1);
        all.push(match *call {
            Call::Grpc { target, service, method, body, timeout } => Dispatched {
                token,
                protocol: "grpc",
                target: target.to_string(),
                headers: vec![("service".to_string(), service.to_string()), ("method".to_string(), method.to_string())],
                body: body.to_vec(),
                timeout,
            },
            Call::Http { target, headers, body, timeout } => Dispatched {
                token,
                protocol: "http",
                target: target.to_string(),
                headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                body: body.to_vec(),
                timeout,
            },
        });
        Ok(token)
    }

    fn dispatch_detached(&self, call: &Call<'_>) -> Result<(), String> {
        let token = self.dispatch(call)?;
        // Recorded apart from the request's calls (the dispatch above
        // recorded it there: moved).
        let at = self.dispatched.borrow().iter().position(|d| d.token == token);
        if let Some(at) = at {
            let d = self.dispatched.borrow_mut().remove(at);
            self.detached.borrow_mut().push(d);
        }
        Ok(())
    }

    fn call_status(&self) -> Option<u16> {
        self.bytes();
        self.answer.borrow().status
    }

    fn call_body(&self, _reply: CallReply) -> Vec<u8> {
        self.bytes();
        self.answer.borrow().body.clone()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut all = self.metrics.borrow_mut();
        if let Some(i) = all.iter().position(|(n, _, _)| n == name) {
            return u32::try_from(i).ok();
        }
        all.push((name.to_string(), kind, 0));
        u32::try_from(all.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        self.nothing();
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.2 += delta;
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.nothing();
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.2 = value;
        }
    }

    fn metric_value(&self, id: u32) -> Option<u64> {
        self.nothing();
        self.metrics.borrow().get(id as usize).map(|m| m.2)
    }

    fn defined_metrics(&self) -> Vec<crate::host::DefinedMetric> {
        let all = self.metrics.borrow();
        let mut out = Vec::with_capacity(all.len());
        for (id, (name, kind, _)) in (0u32..).zip(all.iter()) {
            out.push(crate::host::DefinedMetric { kind: *kind, name: name.clone(), id });
        }
        out
    }

    fn set_property(&self, path: &[&str], value: &str) -> bool {
        self.nothing();
        self.written.borrow_mut().push((path.join("."), value.to_string()));
        true
    }
}

/// A filter configured on a recording host, driven one request at a time.
pub struct Exchange<F: Filter> {
    /// The filter (one worker's instance).
    pub filter: F,
    /// The host it runs on.
    pub host: RecordingHost,
}

/// What became of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the request-headers callback returned.
    pub flow: Flow,
    /// The local reply, if the filter sent one.
    pub reply: Option<Reply>,
    /// The request headers the upstream would receive.
    pub upstream: Vec<(String, String)>,
    /// The response headers the client would receive (upstream's plus the
    /// filter's), empty when it replied locally.
    pub response: Vec<(String, String)>,
    /// Host calls the request made.
    pub calls: HostCalls,
}

impl Outcome {
    /// The status the client saw: the local reply's, else `upstream_status`.
    pub fn status(&self, upstream_status: u16) -> u16 {
        self.reply.as_ref().map_or(upstream_status, |r| r.status)
    }

    /// The first response header `name` the client saw (local reply's or
    /// upstream's plus the filter's).
    pub fn header(&self, name: &str) -> Option<String> {
        match &self.reply {
            Some(r) => r.header(name).map(str::to_string),
            None => first(&self.response, name),
        }
    }

    /// The request header `name` the upstream received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        first(&self.upstream, name)
    }
}

impl<F: Filter> Exchange<F> {
    /// Configures `F` from JSON on a fresh host following `rule`.
    pub fn new(rule: CasRule, config: &str) -> Result<Self, Refused> {
        Self::on(RecordingHost::new(rule), config)
    }

    /// Configures `F` on `host` (for example one sharing another's store).
    pub fn on(host: RecordingHost, config: &str) -> Result<Self, Refused> {
        let filter = crate::host::configure::<F, _>(&host, config.as_bytes())?;
        Ok(Exchange { filter, host })
    }

    /// The request-headers callback alone; returns the stream for the later
    /// phases.
    pub fn start(&self, headers: &[(&str, &str)]) -> (F::Stream, Flow) {
        self.host.begin(headers);
        self.host.enter_callback();
        let mut stream = F::Stream::default();
        let flow = self.filter.on_request_headers(&mut stream, &self.host);
        (stream, flow)
    }

    /// Delivers the answer to call `token` (scripted with
    /// [`RecordingHost::answer_with`]).
    pub fn reply(&self, stream: &mut F::Stream, token: u32, reply: CallReply) -> Flow {
        self.host.enter_callback();
        self.filter.on_call_reply(stream, &self.host, token, reply)
    }

    /// The response-headers and log callbacks, with the upstream answering
    /// `response` (`None`: the client went away before any answer, so only
    /// the log callback runs).
    pub fn finish(&self, stream: &mut F::Stream, flow: Flow, response: Option<&[(&str, &str)]>) -> Outcome {
        // A local reply always pauses the request; with requests
        // interleaved on one host, the last reply may be another's.
        let reply = if flow == Flow::Pause { self.host.reply() } else { None };
        if let Some(r) = &reply {
            // The local reply passes through the response path too.
            let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let status = r.status.to_string();
            let mut all = vec![(":status", status.as_str())];
            all.extend(headers);
            self.host.respond(&all);
            self.host.enter_callback();
            self.filter.on_response_headers(stream, &self.host);
        } else if let (Flow::Continue, Some(resp)) = (flow, response) {
            self.host.respond(resp);
            self.host.enter_callback();
            self.filter.on_response_headers(stream, &self.host);
        }
        self.host.enter_callback();
        self.filter.on_log(stream, &self.host);
        Outcome {
            flow,
            reply: reply.clone(),
            upstream: self.host.request_headers_now(),
            response: if reply.is_some() { Vec::new() } else { self.host.response_headers_now() },
            calls: self.host.calls(),
        }
    }

    /// The response body, `chunks` one callback each, the last one ending
    /// it when `end`.
    pub fn body(&self, stream: &mut F::Stream, chunks: &[&[u8]], end: bool) {
        for (i, chunk) in chunks.iter().enumerate() {
            self.host.body_chunk(chunk);
            self.host.enter_callback();
            self.filter.on_response_body(stream, &self.host, chunk.len(), end && i + 1 == chunks.len());
        }
    }

    /// The response's headers (`response`) then its body, then the log; the
    /// stream must have passed the request (`Continue`). `end`: the body
    /// ended (else the client went away mid-body).
    pub fn answer(&self, stream: &mut F::Stream, response: &[(&str, &str)], chunks: &[&[u8]], end: bool) -> Outcome {
        self.host.respond(response);
        self.host.enter_callback();
        self.filter.on_response_headers(stream, &self.host);
        let response = self.host.response_headers_now();
        self.body(stream, chunks, end);
        self.host.enter_callback();
        self.filter.on_log(stream, &self.host);
        Outcome {
            flow: Flow::Continue,
            reply: None,
            upstream: self.host.request_headers_now(),
            response,
            calls: self.host.calls(),
        }
    }

    /// [`Exchange::request`] without collecting what became of it: the
    /// per-request benches and the compute probe (only the filter's work
    /// and the host's answers are measured).
    pub fn run(&self, headers: &[(&str, &str)], status: u16) {
        let (mut stream, flow) = self.start(headers);
        let mut digits = [0u8; 20];
        let code = crate::text::decimal(u64::from(status), &mut digits);
        self.upstream_answered(status);
        if flow == Flow::Continue {
            self.host.respond(&[(":status", code)]);
            self.host.enter_callback();
            self.filter.on_response_headers(&mut stream, &self.host);
        }
        self.host.enter_callback();
        self.filter.on_log(&mut stream, &self.host);
    }

    /// One whole request: headers in, the upstream answers `status` with
    /// `extra` response headers (unless the filter replied), log.
    pub fn request(&self, headers: &[(&str, &str)], status: u16, extra: &[(&str, &str)]) -> Outcome {
        let (mut stream, flow) = self.start(headers);
        let code = status.to_string();
        let mut resp = vec![(":status", code.as_str())];
        resp.extend_from_slice(extra);
        self.upstream_answered(status);
        self.finish(&mut stream, flow, Some(&resp))
    }

    /// The properties of an upstream's answer with `status`: its code and,
    /// in Envoy, the attempt count (one, unless a test says otherwise).
    fn upstream_answered(&self, status: u16) {
        self.host.set_property_u64("response.code", u64::from(status));
        if self.host.kind == HostKind::Envoy {
            self.host.set_property_u64("upstream.request_attempt_count", 1);
        }
    }

    /// A plain `GET path` from `peer` answered 200.
    pub fn get(&self, path: &str) -> Outcome {
        self.request(&[(":method", "GET"), (":path", path), (":authority", "example.com")], 200, &[])
    }
}

/// A filter that does nothing: the baseline of the per-request benches
/// (what the recording host's own bookkeeping costs).
#[derive(Debug, Default)]
pub struct NoopFilter;

impl Filter for NoopFilter {
    type Stream = ();
    type Config = ();
    const METRIC_PREFIX: &'static str = "noop";

    fn check(_config: &[u8]) -> Result<(), crate::config::ConfigError> {
        Ok(())
    }

    fn build<H: Host>(_host: &H, _config: ()) -> Result<Self, Refused> {
        Ok(NoopFilter)
    }

    fn on_request_headers<H: Host>(&self, _stream: &mut (), _host: &H) -> Flow {
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::HostCalls;

    /// `bench/README.md`'s table of host calls per request is the one the
    /// filters' tests pin.
    #[test]
    fn the_host_call_table_in_bench_readme_is_the_pinned_one() {
        let measured: [(&str, HostCalls); 5] = [
            ("rate-limit", crate::ratelimit::filter_tests::calls_per_request()),
            ("circuit-breaker", crate::breaker::filter_tests::calls_per_request()),
            ("retry", crate::retry::filter_tests::calls_per_request()),
            ("sticky-session", crate::sticky::filter_tests::calls_per_request()),
            ("bundle", crate::bundle::tests::calls_per_request()),
        ];
        let readme = include_str!("../../../bench/README.md");
        for (filter, calls) in measured {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{filter}` |")))
                .unwrap_or_else(|| panic!("no row for {filter} in bench/README.md"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let got =
                (cells[3].parse::<u32>().unwrap(), cells[4].parse::<u32>().unwrap(), cells[5].parse::<u32>().unwrap());
            let want = (calls.returning_bytes, calls.callbacks_reading, calls.returning_nothing);
            assert_eq!(got, want, "{filter}: (returning bytes, callbacks reading, returning nothing)");
        }
    }
}

// ---- checks the filters' tests share (they assert: test code only) ----

/// Checks that each configuration is refused with a message containing its
/// expected text (field and reason), by the filter's own `parse`.
#[allow(clippy::panic)]
pub fn assert_each_refused<T, S: AsRef<str>>(
    parse: impl Fn(&[u8]) -> Result<T, crate::config::ConfigError>,
    cases: &[(S, &str)],
) {
    for (json, want) in cases {
        let json = json.as_ref();
        let got = match parse(json.as_bytes()) {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        assert!(got.contains(want), "config {json}\n  got:  {got}\n  want: {want}");
    }
}

/// The ```json blocks of a markdown document (for tests that check the
/// examples in the filters' READMEs).
pub fn json_blocks(markdown: &str) -> Vec<&str> {
    markdown.split("```json\n").skip(1).map(|b| b.split("```").next().unwrap_or("")).collect()
}

/// Checks a README's `## Metrics` table against the metrics a filter
/// defines: each `(prefix, suffixes)` is one metric set (`prefix` may hold a
/// placeholder such as `<limit>`). In the table, a name written `.suffix`
/// after a full name shares that name's prefix.
#[allow(clippy::expect_used, clippy::panic)]
pub fn assert_metrics_table<F: crate::host::Filter>(readme: &str, sets: &[(&str, &[&str])]) {
    let section = readme.split("## Metrics").nth(1).expect("a ## Metrics section");
    // Up to the next section.
    let section = section.split("\n## ").next().unwrap_or(section);
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
    let mut defined: std::collections::BTreeSet<String> =
        sets.iter().flat_map(|(p, suffixes)| suffixes.iter().map(move |s| format!("{p}{s}"))).collect();
    defined.insert(format!("{}.configured", F::METRIC_PREFIX));
    assert_eq!(documented, defined, "README metrics table vs metrics defined");
}

thread_local! {
    static LOGGED: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps the lines filters log, per test thread.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        LOGGED.with(|l| l.borrow_mut().push((record.level(), record.args().to_string())));
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// From now on, what this thread's filters log is kept for [`logged`]
/// (what was kept before is dropped).
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
    LOGGED.with(|l| l.borrow_mut().clear());
}

/// The lines logged on this thread since [`capture_logs`], with their level.
pub fn logged() -> Vec<(log::Level, String)> {
    LOGGED.with(|l| l.borrow().clone())
}
