//! The core's own work inside V8, apart from host calls: for every real
//! request, runs one policy's (or the bundle's) whole request, response and
//! completion `repeat` times on the in-memory recording host. Paired with
//! `repeat: 0`, the difference divided by `repeat` is what one request's
//! compute costs in the VM (plus the recording host's bookkeeping, measured
//! by the `noop` filter). Configuration: `{"filter": "bundle", "repeat": 10,
//! "config": {...}}`.

use filters_core::host::{Filter, Flow, Host, Refused};
use filters_core::store::CasRule;
use filters_core::testing::{Exchange, NoopFilter};

filters_host::filter_entry!(Probe);

/// One exchange of any filter, boxed so one module can probe every filter.
trait Run {
    fn run(&self);
}

impl<F: Filter> Run for Exchange<F> {
    fn run(&self) {
        let get = [(":method", "GET"), (":path", "/"), (":authority", "127.0.0.1:10000"), (":scheme", "http")];
        // 10 us of fake time per exchange: the limiter admits every one
        // (with the clock standing still it would refuse all but the first).
        self.host.clock.advance(10_000);
        self.run(&get, 200);
    }
}

fn exchange<F: Filter>(config: &str) -> Result<Box<dyn Run>, Refused> {
    let x = Exchange::<F>::new(CasRule::Envoy, config)?;
    x.host.set_property("source.address", "127.0.0.1:40000");
    x.host.set_property("xds.cluster_name", "backend");
    x.host.set_property("upstream.address", "127.0.0.1:8081");
    Ok(Box::new(x))
}

/// The probe.
pub struct Probe {
    exchange: Box<dyn Run>,
    repeat: u32,
    /// Make only the host calls a lean breaker makes (`"filter": "lean"`):
    /// the clock, `xds.cluster_name` and a shared record on the request;
    /// `:status`, the record and its compare-and-swap on the response.
    lean: bool,
    /// Make exactly the host calls the bundle makes with its sample
    /// configuration (`"filter": "bundle-calls"`, the sequence the recording
    /// host counts, `bench/README.md`), with none of its work: paired with
    /// the bundle itself, the difference is the core's own work in a real
    /// request; paired with `noop`, the calls' cost.
    calls: Option<Replay>,
}

/// The metric ids the replay updates.
struct Replay {
    counter: u32,
    gauge: u32,
}

/// The shared-data keys of the replay and their values' sizes (as the
/// bundle's: a rate-limit slot, a breaker record, a backend's health, the
/// retry budget).
const REPLAY_KEYS: [(&str, usize); 4] =
    [("replay/rl", 16), ("replay/cb", 48), ("replay/health", 24), ("replay/budget", 202)];

impl Replay {
    fn define<H: Host>(host: &H) -> Option<Replay> {
        for (key, size) in REPLAY_KEYS {
            let _ = host.set(key, &vec![1u8; size], None);
        }
        Some(Replay {
            counter: host.define_metric(filters_core::host::MetricKind::Counter, "probe.replay")?,
            gauge: host.define_metric(filters_core::host::MetricKind::Gauge, "probe.replay_state")?,
        })
    }

    /// A read and its compare-and-swap write of the same value.
    fn update<H: Host>(host: &H, key: &str) {
        if let Ok(Some(e)) = host.get(key) {
            let _ = host.set(key, &e.value, Some(e.cas));
        }
    }

    fn request<H: Host>(&self, host: &H) {
        let _ = host.property(&["source", "address"]);
        let _ = host.now_nanos();
        Self::update(host, "replay/rl");
        host.increment_metric(self.counter, 1);
        let _ = host.property(&["xds", "cluster_name"]);
        let _ = host.get("replay/cb");
        let _ = host.request_headers();
        let _ = host.get("replay/health");
        host.increment_metric(self.counter, 1);
        host.set_request_header("x-sticky-upstream", Some("127.0.0.1:8081"));
        host.increment_metric(self.counter, 1);
        Self::update(host, "replay/budget");
        host.set_request_header("x-envoy-retry-on", Some("5xx,reset,connect-failure"));
        host.set_request_header("x-envoy-max-retries", Some("3"));
    }

    fn response<H: Host>(&self, host: &H) {
        for (name, value) in [
            ("ratelimit-policy", "\"per-client\";q=100;w=1"),
            ("ratelimit", "\"per-client\";r=49;t=1"),
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "49"),
            ("x-ratelimit-reset", "1"),
        ] {
            host.add_response_header(name, value);
        }
        let _ = host.now_nanos();
        let _ = host.response_header(":status");
        host.increment_metric(self.counter, 1);
        host.record_metric(self.gauge, 0);
        host.add_response_header("set-cookie", "sticky=v1.a.p5ej_tysDoAC5H86PbiWUw; Path=/; Max-Age=3600; HttpOnly");
        host.add_response_header("x-sticky-backend", "a");
        let _ = host.property(&["upstream", "request_attempt_count"]);
    }
}

impl Filter for Probe {
    type Stream = ();
    type Config = serde_json::Value;
    const METRIC_PREFIX: &'static str = "probe";

    fn check(config: &[u8]) -> Result<serde_json::Value, filters_core::config::ConfigError> {
        serde_json::from_slice(config).map_err(|e| filters_core::config::ConfigError::new(".", e.to_string()))
    }

    fn build<H: Host>(host: &H, v: serde_json::Value) -> Result<Self, Refused> {
        let inner = v.get("config").map(|c| c.to_string()).unwrap_or_else(|| "{}".into());
        let repeat = v.get("repeat").and_then(|r| r.as_u64()).unwrap_or(0) as u32;
        let name = v.get("filter").and_then(|f| f.as_str()).unwrap_or("noop");
        let lean = name == "lean";
        let calls = if name == "bundle-calls" { Replay::define(host) } else { None };
        if lean {
            let _ = host.set("lean/0", &[0u8; 40], None);
        }
        let exchange = match name {
            "rate_limit" => exchange::<filters_core::ratelimit::RateLimitFilter>(&inner)?,
            "circuit_breaker" => exchange::<filters_core::breaker::BreakerFilter>(&inner)?,
            "retry" => exchange::<filters_core::retry::RetryFilter>(&inner)?,
            "sticky_session" => exchange::<filters_core::sticky::StickyFilter>(&inner)?,
            "bundle" => exchange::<filters_core::bundle::BundleFilter>(&inner)?,
            _ => exchange::<NoopFilter>("{}")?,
        };
        Ok(Probe { exchange, repeat, lean, calls })
    }

    fn on_request_headers<H: Host>(&self, _stream: &mut (), host: &H) -> Flow {
        for _ in 0..self.repeat {
            self.exchange.run();
        }
        if self.lean {
            let _ = host.now_nanos();
            let _ = host.property(&["xds", "cluster_name"]);
            let _ = host.get("lean/0");
        }
        if let Some(calls) = &self.calls {
            calls.request(host);
        }
        Flow::Continue
    }

    fn on_response_headers<H: Host>(&self, _stream: &mut (), host: &H) {
        if let Some(calls) = &self.calls {
            calls.response(host);
        }
        if self.lean {
            let _ = host.response_header(":status");
            if let Ok(Some(e)) = host.get("lean/0") {
                let _ = host.set("lean/0", &e.value, Some(e.cas));
            }
        }
    }
}
