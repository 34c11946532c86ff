//! Counters, rendered in the Prometheus text format at `/metrics`. One
//! series per configured limit (labels `domain` and `descriptor`, the
//! limit's path in the config), never per descriptor value: cardinality is
//! fixed by the config, whatever keys clients send.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A limit's series: its (domain, descriptor path) and counters.
type Series = ((String, String), Arc<PerLimit>);

/// Picks one counter of a [`PerLimit`].
type Field = fn(&PerLimit) -> &AtomicU64;

#[derive(Default)]
struct PerLimit {
    total_hits: AtomicU64,
    over_limit: AtomicU64,
    near_limit: AtomicU64,
    within_limit: AtomicU64,
    shadow_mode: AtomicU64,
}

/// The engine's counters.
pub struct Metrics {
    /// Every limit's series, by (domain, descriptor path): kept across
    /// config reloads (a limit that stays keeps counting in its series).
    limits: RwLock<Vec<Series>>,
    grpc_calls: AtomicU64,
    json_calls: AtomicU64,
    bad_requests: AtomicU64,
    redis_errors: AtomicU64,
    no_limit: AtomicU64,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
    overrides_ignored: AtomicU64,
    connections_refused: AtomicU64,
    /// 1 while the xDS stream is up, 0 while not, 2 when the configuration
    /// is not from xDS (the gauge is not rendered then).
    xds_connected: AtomicU64,
    /// gRPC calls refused because the client certificate lacked the SAN asked for.
    peer_refused: AtomicU64,
    /// Spans dropped because the export queue was full.
    spans_dropped: AtomicU64,
    decisions: Latency,
}

/// Upper bounds (seconds) of the decision-latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A latency histogram: a count per bucket (not cumulative; summed when
/// rendered), the sum in nanoseconds, the count.
#[derive(Default)]
struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Counters for the limits named (domain, descriptor path).
    pub fn new(names: Vec<(String, String)>) -> Self {
        let m = Metrics {
            limits: RwLock::default(),
            grpc_calls: AtomicU64::new(0),
            json_calls: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            no_limit: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
            overrides_ignored: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            xds_connected: AtomicU64::new(2),
            peer_refused: AtomicU64::new(0),
            spans_dropped: AtomicU64::new(0),
            decisions: Latency::default(),
        };
        m.ids_for(&names);
        m
    }

    /// The series of each named limit (created when new): what a config's
    /// limit ids map to.
    pub fn ids_for(&self, names: &[(String, String)]) -> Vec<usize> {
        let Ok(mut limits) = self.limits.write() else { return Vec::new() };
        names
            .iter()
            .map(|n| match limits.iter().position(|(existing, _)| existing == n) {
                Some(i) => i,
                None => {
                    limits.push((n.clone(), Arc::default()));
                    limits.len() - 1
                }
            })
            .collect()
    }

    /// A config reload: applied, or refused (the last good config kept).
    pub fn reload(&self, ok: bool) {
        add(if ok { &self.reloads } else { &self.reload_errors }, 1);
    }

    /// Whether the xDS stream is up.
    pub fn xds_connected(&self, up: bool) {
        self.xds_connected.store(u64::from(up), Ordering::Relaxed);
    }

    /// A gRPC call refused for its client certificate's names.
    pub fn peer_refused(&self) {
        add(&self.peer_refused, 1);
    }

    /// A span dropped: the export queue was full.
    pub fn span_dropped(&self) {
        add(&self.spans_dropped, 1);
    }

    /// One call, by protocol.
    pub fn call(&self, grpc: bool) {
        add(if grpc { &self.grpc_calls } else { &self.json_calls }, 1);
    }

    /// A request that did not decode.
    pub fn bad_request(&self) {
        add(&self.bad_requests, 1);
    }

    /// A Redis failure.
    pub fn redis_error(&self) {
        add(&self.redis_errors, 1);
    }

    /// A descriptor no limit applies to.
    pub fn no_limit(&self) {
        add(&self.no_limit, 1);
    }

    /// A descriptor's `limit` override without a usable unit (ignored).
    pub fn override_ignored(&self) {
        add(&self.overrides_ignored, 1);
    }

    /// How long one call took to decide (its Redis round trips included),
    /// answered or failed.
    pub fn decided_in(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let l = &self.decisions;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(b) = l.buckets.get(i) {
                add(b, 1);
            }
        }
        add(&l.sum_nanos, u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        add(&l.count, 1);
    }

    /// A connection closed at once: its listener held its most.
    pub fn connection_refused(&self) {
        add(&self.connections_refused, 1);
    }

    /// One limited descriptor's outcome.
    pub fn descriptor(&self, id: usize, hits: u64, allowed: bool, near: bool, shadow: bool) {
        let Ok(limits) = self.limits.read() else { return };
        let Some((_, m)) = limits.get(id) else { return };
        add(&m.total_hits, hits);
        if !allowed {
            add(&m.over_limit, hits);
            if shadow {
                add(&m.shadow_mode, hits);
            }
        } else {
            add(&m.within_limit, hits);
            if near {
                add(&m.near_limit, hits);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let series: [(&str, &str, Field); 5] = [
            ("total_hits", "Hits counted against the limit.", |m| &m.total_hits),
            ("over_limit", "Hits over the limit (shadow-mode ones included).", |m| &m.over_limit),
            ("near_limit", "Hits admitted with more than the near-limit ratio of the limit used.", |m| &m.near_limit),
            ("within_limit", "Hits admitted.", |m| &m.within_limit),
            ("shadow_mode", "Hits over a shadow-mode limit, admitted anyway.", |m| &m.shadow_mode),
        ];
        let limits = self.limits.read().map(|l| l.clone()).unwrap_or_default();
        for (name, help, field) in series {
            let _ = writeln!(out, "# HELP ratelimit_engine_{name}_total {help}");
            let _ = writeln!(out, "# TYPE ratelimit_engine_{name}_total counter");
            for ((domain, descriptor), m) in &limits {
                let _ = writeln!(
                    out,
                    "ratelimit_engine_{name}_total{{domain=\"{}\",descriptor=\"{}\"}} {}",
                    escape(domain),
                    escape(descriptor),
                    get(field(m))
                );
            }
        }
        upstream_families(&mut out, &limits, &series);
        let upstream_plain = [
            ("config_load_success", "Config loads applied, at start and on reloads.", get(&self.reloads) + 1),
            ("config_load_error", "Config reloads refused (the last good config kept).", get(&self.reload_errors)),
            ("should_rate_limit_error{err_type=\"redis_error\"}", "", get(&self.redis_errors)),
            ("total_requests{grpc_method=\"ShouldRateLimit\"}", "", get(&self.grpc_calls) + get(&self.json_calls)),
        ];
        for (name, help, v) in upstream_plain {
            let family = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP ratelimit_service_{family} {help}");
            }
            let _ = writeln!(out, "# TYPE ratelimit_service_{family} counter");
            let _ = writeln!(out, "ratelimit_service_{name} {v}");
        }
        let plain = [
            ("calls_total{protocol=\"grpc\"}", "calls_total", "ShouldRateLimit calls.", &self.grpc_calls),
            ("calls_total{protocol=\"json\"}", "", "", &self.json_calls),
            ("bad_requests_total", "bad_requests_total", "Requests that did not decode.", &self.bad_requests),
            (
                "redis_errors_total",
                "redis_errors_total",
                "Calls answered UNAVAILABLE because Redis failed.",
                &self.redis_errors,
            ),
            ("no_limit_total", "no_limit_total", "Descriptors no configured limit applies to.", &self.no_limit),
            ("config_reloads_total", "config_reloads_total", "Config files reloaded after a change.", &self.reloads),
            (
                "config_reload_errors_total",
                "config_reload_errors_total",
                "Changed config files refused (the last good config kept).",
                &self.reload_errors,
            ),
            (
                "overrides_ignored_total",
                "overrides_ignored_total",
                "Descriptor limit overrides without a usable unit, ignored (the configured limit applied).",
                &self.overrides_ignored,
            ),
            (
                "connections_refused_total",
                "connections_refused_total",
                "Connections closed at once because their listener held --max-connections.",
                &self.connections_refused,
            ),
            (
                "peer_refused_total",
                "peer_refused_total",
                "gRPC calls refused: the client certificate does not name GRPC_CLIENT_TLS_SAN.",
                &self.peer_refused,
            ),
            (
                "spans_dropped_total",
                "spans_dropped_total",
                "Trace spans dropped because the export queue was full (the collector slow or away).",
                &self.spans_dropped,
            ),
        ];
        for (series, family, help, c) in plain {
            if !family.is_empty() {
                let _ = writeln!(out, "# HELP ratelimit_engine_{family} {help}");
                let _ = writeln!(out, "# TYPE ratelimit_engine_{family} counter");
            }
            let _ = writeln!(out, "ratelimit_engine_{series} {}", get(c));
        }
        let xds = get(&self.xds_connected);
        if xds < 2 {
            let _ = writeln!(out, "# HELP ratelimit_engine_xds_connected 1 while the xDS configuration stream is up.");
            let _ = writeln!(out, "# TYPE ratelimit_engine_xds_connected gauge");
            let _ = writeln!(out, "ratelimit_engine_xds_connected {xds}");
        }
        self.render_latency(&mut out);
        out
    }

    fn render_latency(&self, out: &mut String) {
        let l = &self.decisions;
        let name = "ratelimit_engine_decision_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to decide a ShouldRateLimit call, its Redis round trips included.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, b) in LATENCY_BUCKETS.iter().zip(l.buckets.iter()) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = l.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = l.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The same per-limit counts under envoyproxy/ratelimit's Prometheus names
/// (its statsd mapping, `ratelimit_service_rate_limit_<stat>` with `domain`
/// and the descriptor path's levels as `key1`, `key2`, ...: `generic_key_a`
/// for a key with a value, the key alone without), so that dashboards built
/// for upstream (Envoy Gateway's Global Ratelimit) read the engine as they
/// read upstream. The labels come from the configuration: bounded.
fn upstream_families(out: &mut String, limits: &[Series], series: &[(&str, &str, Field)]) {
    for (name, help, field) in series {
        let _ = writeln!(out, "# HELP ratelimit_service_rate_limit_{name} {help}");
        let _ = writeln!(out, "# TYPE ratelimit_service_rate_limit_{name} counter");
        for ((domain, descriptor), m) in limits {
            let path = descriptor.strip_prefix(domain.as_str()).and_then(|p| p.strip_prefix('.')).unwrap_or(descriptor);
            let mut labels = format!("domain=\"{}\"", escape(domain));
            for (i, level) in path.split('.').enumerate() {
                let _ = write!(labels, ",key{}=\"{}\"", i + 1, escape(level));
            }
            let _ =
                writeln!(out, "ratelimit_service_rate_limit_{name}{{{labels}}} {}", field(m).load(Ordering::Relaxed));
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_latency_is_a_cumulative_histogram() {
        let m = Metrics::new(Vec::new());
        m.decided_in(std::time::Duration::from_micros(300));
        m.decided_in(std::time::Duration::from_millis(3));
        m.decided_in(std::time::Duration::from_secs(9));
        let text = m.render();
        for want in [
            "# TYPE ratelimit_engine_decision_duration_seconds histogram",
            "ratelimit_engine_decision_duration_seconds_bucket{le=\"0.0005\"} 1",
            "ratelimit_engine_decision_duration_seconds_bucket{le=\"0.0025\"} 1",
            "ratelimit_engine_decision_duration_seconds_bucket{le=\"0.005\"} 2",
            "ratelimit_engine_decision_duration_seconds_bucket{le=\"2.5\"} 2",
            "ratelimit_engine_decision_duration_seconds_bucket{le=\"+Inf\"} 3",
            "ratelimit_engine_decision_duration_seconds_sum 9.0033",
            "ratelimit_engine_decision_duration_seconds_count 3",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }

    #[test]
    fn renders_one_series_per_limit() {
        let m = Metrics::new(vec![("edge".into(), "edge.generic_key_a".into())]);
        m.descriptor(0, 1, true, false, false);
        m.descriptor(0, 1, true, true, false);
        m.descriptor(0, 2, false, false, true);
        m.call(true);
        let text = m.render();
        for want in [
            "ratelimit_engine_total_hits_total{domain=\"edge\",descriptor=\"edge.generic_key_a\"} 4",
            "ratelimit_engine_near_limit_total{domain=\"edge\",descriptor=\"edge.generic_key_a\"} 1",
            "ratelimit_engine_over_limit_total{domain=\"edge\",descriptor=\"edge.generic_key_a\"} 2",
            "ratelimit_engine_shadow_mode_total{domain=\"edge\",descriptor=\"edge.generic_key_a\"} 2",
            "ratelimit_engine_calls_total{protocol=\"grpc\"} 1",
            "ratelimit_engine_calls_total{protocol=\"json\"} 0",
            // envoyproxy/ratelimit's names, for its dashboards.
            "ratelimit_service_rate_limit_total_hits{domain=\"edge\",key1=\"generic_key_a\"} 4",
            "ratelimit_service_rate_limit_over_limit{domain=\"edge\",key1=\"generic_key_a\"} 2",
            "ratelimit_service_config_load_success 1",
            "ratelimit_service_total_requests{grpc_method=\"ShouldRateLimit\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
