//! Criterion benches of every core algorithm, each next to a naive baseline,
//! so the report shows the ratio. Run with `make bench`.
//!
//! The fake clock is advanced in the batched setup of `iter_batched`, never
//! inside the timed closure.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use filters_core::breaker::config::BreakerConfig;
use filters_core::breaker::Breakers;
use filters_core::clock::FakeClock;
use filters_core::ratelimit::config::RateLimitConfig;
use filters_core::ratelimit::RateLimiter;
use filters_core::request::RequestView;
use filters_core::retry::budget::Budget;
use filters_core::retry::RetryConfig;
use filters_core::sticky::config::StaticConfig;
use filters_core::sticky::cookie::Signer;
use filters_core::sticky::hashing::{key_hash, Ketama, Maglev, Member};
use filters_core::store::{CasRule, MemoryStore};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * S;

fn request(ip: &str) -> RequestView {
    RequestView::new(
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/api/orders?x=1".into()),
            ("x-api-key".into(), "k-123".into()),
        ],
        Some(format!("{ip}:4242")),
    )
}

/// The naive limiter the GCRA is compared with: a token bucket per key in a
/// `Mutex<HashMap>`, refilled from elapsed time.
struct NaiveLimiter {
    buckets: Mutex<HashMap<String, (f64, u64)>>,
    rate_per_ns: f64,
    burst: f64,
}

impl NaiveLimiter {
    fn check(&self, key: &str, now: u64) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = map.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + (now.saturating_sub(*last)) as f64 * self.rate_per_ns).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit");
    let limiter = RateLimiter::new(
        RateLimitConfig::from_json(br#"{"limits":[{"name":"ip","requests":1000000,"period":"1s","key":"client_ip"}]}"#)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let store = MemoryStore::new(CasRule::Envoy);
    limiter.initialize(&store).unwrap_or_else(|e| panic!("{e}"));
    let req = request("10.0.0.1");
    let clock = FakeClock::at(T0);
    g.bench_function("gcra_check_shared_store", |b| {
        b.iter_batched(
            || clock.advance(1_000),
            |()| black_box(limiter.check(&req, &clock, &store)),
            BatchSize::SmallInput,
        )
    });
    // The algorithm alone: one GCRA decision on a u64.
    let gcra = filters_core::ratelimit::gcra::Gcra::new(1_000_000, S, 1_000_000).unwrap_or_else(|| panic!("gcra"));
    let mut tat = Some(T0);
    let mut t = T0;
    g.bench_function("gcra_decide_only", |b| {
        b.iter_batched(
            || {
                t += 1_000;
                t
            },
            |now| {
                let d = gcra.decide(tat, now);
                tat = d.write.or(tat);
                black_box(d.allowed)
            },
            BatchSize::SmallInput,
        )
    });
    let naive = NaiveLimiter { buckets: Mutex::new(HashMap::new()), rate_per_ns: 1e-3, burst: 1e6 };
    let mut now = T0;
    g.bench_function("baseline_mutex_hashmap_bucket", |b| {
        b.iter_batched(
            || {
                now += 1_000;
                now
            },
            |t| black_box(naive.check("10.0.0.1", t)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("config_parse", |b| {
        b.iter(|| {
            black_box(RateLimitConfig::from_json(
                br#"{"limits":[{"name":"per-client","requests":100,"period":"1s","burst":50,"key":"client_ip"},{"name":"api","requests":1000,"period":"1m","key":["header:x-api-key","method"],"match":{"path_prefix":"/api"}}],"headers":"both"}"#,
            ))
        })
    });
    g.finish();
}

fn breaker(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit_breaker");
    let expr = r#"{"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5","min_requests":10}"#;
    let b = Breakers::new(BreakerConfig::from_json(expr.as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    let mut rec = b.fresh("cluster");
    let sample = b.sample(200, false, 20_000_000);
    let mut now = T0;
    g.bench_function("record_and_decide_traefik_expression", |bench| {
        bench.iter_batched(
            || {
                now += 10_000_000;
                now
            },
            |t| black_box(b.complete(&mut rec, t, &sample, false)),
            BatchSize::SmallInput,
        )
    });
    let bytes = b.encode(&rec);
    g.bench_function("decode_encode_record", |bench| {
        bench.iter(|| {
            let r = b.decode(black_box(&bytes));
            black_box(r.map(|r| b.encode(&r)))
        })
    });
    g.bench_function("decode_head_for_admission", |bench| bench.iter(|| black_box(b.decode_head(black_box(&bytes)))));
    // Baseline: keep every sample of the window in a Vec and rescan it.
    let mut samples: Vec<(u64, u16, u64)> = Vec::new();
    let mut now2 = T0;
    g.bench_function("baseline_vec_of_samples_rescan", |bench| {
        bench.iter_batched(
            || {
                now2 += 10_000_000;
                now2
            },
            |t| {
                samples.push((t, 200, 20));
                samples.retain(|s| t - s.0 < 10 * S);
                let errors = samples.iter().filter(|s| s.1 >= 500).count();
                let mut lat: Vec<u64> = samples.iter().map(|s| s.2).collect();
                lat.sort_unstable();
                black_box((errors, lat.get(lat.len() / 2).copied()))
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("config_parse_with_expression", |bench| {
        bench.iter(|| black_box(BreakerConfig::from_json(expr.as_bytes())))
    });
    g.finish();
}

fn retry(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry");
    let budget = Budget { ratio: 0.2, min_per_second: 10, window_ns: 10 * S, buckets: 10 };
    let mut ring = budget.empty();
    let mut now = T0;
    g.bench_function("budget_reserve", |b| {
        b.iter_batched(
            || {
                now += 1_000_000;
                now
            },
            |t| black_box(budget.reserve(&mut ring, t, 3)),
            BatchSize::SmallInput,
        )
    });
    // Baseline: the timestamps of every request and retry in a Mutex<VecDeque>, pruned and counted.
    let log: Mutex<std::collections::VecDeque<(u64, bool)>> = Mutex::new(std::collections::VecDeque::new());
    let mut t = T0;
    g.bench_function("baseline_mutex_vecdeque_budget", |b| {
        b.iter_batched(
            || {
                t += 1_000_000;
                t
            },
            |now| {
                let mut q = log.lock().unwrap_or_else(|p| p.into_inner());
                while q.front().is_some_and(|(at, _)| now - at >= 10 * S) {
                    q.pop_front();
                }
                q.push_back((now, false));
                let requests = q.iter().filter(|(_, r)| !r).count() as f64;
                let retries = q.iter().filter(|(_, r)| *r).count() as f64;
                let grant = (0.2 * requests + 100.0 - retries).clamp(0.0, 3.0) as u32;
                for _ in 0..grant {
                    q.push_back((now, true));
                }
                black_box(grant)
            },
            BatchSize::SmallInput,
        )
    });
    let cfg = RetryConfig::from_json(
        br#"{"policies":[{"name":"reads","match":{"methods":["GET"]},"max_retries":3},{"name":"default","max_retries":2}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let req = request("10.0.0.1");
    g.bench_function("plan_request", |b| b.iter(|| black_box(cfg.plan(&req, false))));
    g.finish();
}

fn sticky(c: &mut Criterion) {
    let mut g = c.benchmark_group("sticky");
    let members: Vec<Member> = (0..10).map(|i| Member { name: format!("backend-{i}"), weight: 1 }).collect();
    let maglev = Maglev::build(&members, 65537);
    let ring = Ketama::build(&members, 160);
    let mut k = 0u64;
    g.bench_function("maglev_lookup", |b| {
        b.iter(|| {
            k += 1;
            black_box(maglev.lookup(key_hash(&k.to_le_bytes())))
        })
    });
    g.bench_function("ketama_lookup", |b| {
        b.iter(|| {
            k += 1;
            black_box(ring.lookup(key_hash(&k.to_le_bytes())))
        })
    });
    // Baseline: rendezvous hashing, a linear scan hashing the key with every backend.
    g.bench_function("baseline_linear_scan_rendezvous", |b| {
        b.iter(|| {
            k += 1;
            let key = k.to_le_bytes();
            black_box(
                members
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, m)| {
                        let mut bytes = m.name.as_bytes().to_vec();
                        bytes.extend_from_slice(&key);
                        key_hash(&bytes)
                    })
                    .map(|(i, _)| i),
            )
        })
    });
    g.sample_size(20);
    g.bench_function("maglev_build_65537_10_backends", |b| b.iter(|| black_box(Maglev::build(&members, 65537))));
    g.bench_function("ketama_build_160_points_10_backends", |b| b.iter(|| black_box(Ketama::build(&members, 160))));
    let signer = Signer::new(Some(b"0123456789abcdef-secret"));
    let value = signer.value("backend-3");
    g.bench_function("cookie_sign", |b| b.iter(|| black_box(signer.value("backend-3"))));
    g.bench_function("cookie_verify", |b| b.iter(|| black_box(signer.verify(&value))));
    g.bench_function("config_parse", |b| {
        b.iter(|| {
            black_box(StaticConfig::from_json(
                br#"{"backends":[{"name":"a","address":"10.0.0.1:80"},{"name":"b","address":"10.0.0.2:80"},{"name":"c","address":"10.0.0.3:80"}],"session_key":["header:x-session-id","client_ip"],"cookie":{"secret":"0123456789abcdef-secret"}}"#,
            ))
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

/// One whole request (request headers, response headers, completion)
/// through each filter in the load test's configuration, on the recording
/// host: the compute a request costs in the core, with host calls answered
/// from memory. The recording host's own bookkeeping is included, the same
/// for every row.
fn per_request(c: &mut Criterion) {
    use filters_core::bundle::BundleFilter;
    use filters_core::host::Filter;
    use filters_core::testing::Exchange;
    const RL: &str =
        r#"{"limits":[{"name":"all","requests":1000000,"period":"1s","key":"client_ip"}],"headers":"draft"}"#;
    const CB: &str = r#"{"key":"cluster","consecutive_failures":5,"min_requests":10,"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5"}"#;
    const RT: &str = r#"{"policies":[{"name":"reads","match":{"methods":["GET","HEAD"]},"max_retries":3},{"name":"default","max_retries":2}]}"#;
    const ST: &str = r#"{"backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"}],"session_key":["cookie:session","client_ip"],"cookie":{"name":"sticky","secret":"loadtest-secret-0123456789"},"health":{"failures":3,"eject_for":"10s"}}"#;
    // What wrk sends.
    const GET: &[(&str, &str)] =
        &[(":method", "GET"), (":path", "/"), (":authority", "127.0.0.1:10000"), (":scheme", "http")];
    fn run<F: Filter>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        config: &str,
    ) {
        let Ok(x) = Exchange::<F>::new(CasRule::Envoy, config) else { return };
        x.host.set_property("source.address", "127.0.0.1:40000");
        x.host.set_property("xds.cluster_name", "backend");
        x.host.set_property("upstream.address", "127.0.0.1:8081");
        // 10 us of fake time per request (100,000 a second, a tenth of the
        // limit): every request is admitted, as in the load test. (With the
        // clock standing still, all but the first would be refused.)
        g.bench_function(name, |b| {
            b.iter(|| {
                x.host.clock.advance(10_000);
                x.run(black_box(GET), 200)
            })
        });
    }
    let mut g = c.benchmark_group("per_request");
    run::<filters_core::ratelimit::RateLimitFilter>(&mut g, "rate_limit", RL);
    run::<filters_core::breaker::BreakerFilter>(&mut g, "circuit_breaker", CB);
    run::<filters_core::retry::RetryFilter>(&mut g, "retry", RT);
    run::<filters_core::sticky::StickyFilter>(&mut g, "sticky_session", ST);
    let all = format!(r#"{{"rate_limit":{RL},"circuit_breaker":{CB},"retry":{RT},"sticky_session":{ST}}}"#);
    run::<BundleFilter>(&mut g, "bundle_of_four", &all);
    run::<filters_core::testing::NoopFilter>(&mut g, "noop_recording_host_only", "{}");
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = rate_limit, breaker, retry, sticky, per_request }
criterion_main!(benches);
