//! Criterion benches of the native build (`make bench`): the process-wide
//! store's operations next to one `Mutex<HashMap>` for the whole process
//! (the naive store), and a whole request through the module's exported
//! hooks on the fake Envoy (the module's own compute per request, each ABI
//! call answered from memory; in Envoy each call costs what Envoy does for
//! it, see `bench/native_breakdown.py`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use resilience::fake_envoy::{sample_config, FakeEnvoy, Upstream, POLICIES};
use resilience::store;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

/// A record the size of a rate-limit slot's.
const RECORD: [u8; 24] = [7; 24];

fn native_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("native_store");
    let key = "ratelimit/v1/per-client/slot/1234";
    store::set(key, &RECORD, None).unwrap();
    g.bench_function("get", |b| b.iter(|| black_box(store::get(black_box(key)).unwrap())));
    g.bench_function("get_then_compare_and_swap", |b| {
        b.iter(|| {
            let e = store::get(key).unwrap().unwrap();
            black_box(store::set(key, &e.value, Some(e.cas)).unwrap())
        })
    });
    // The naive store: one lock and one map for every key.
    let naive: Mutex<HashMap<String, (Vec<u8>, u32)>> = Mutex::default();
    naive.lock().unwrap().insert(key.to_string(), (RECORD.to_vec(), 1));
    let naive_cycle = || {
        let mut map = naive.lock().unwrap();
        let (value, cas) = map.get(black_box(key)).cloned().unwrap();
        map.insert(key.to_string(), (value, cas + 1));
    };
    g.bench_function("baseline_one_mutex_hashmap_get_then_set", |b| b.iter(naive_cycle));
    // The same with another thread (another worker) working on other keys
    // all along: the shards keep it out of this key's way, the single lock
    // does not.
    let other = "ratelimit/v1/per-client/slot/99";
    store::set(other, &RECORD, None).unwrap();
    naive.lock().unwrap().insert(other.to_string(), (RECORD.to_vec(), 1));
    let busy = |work: &(dyn Fn() + Sync), bench: &mut dyn FnMut()| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    work();
                }
            });
            bench();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    };
    busy(
        &|| {
            let e = store::get(other).unwrap().unwrap();
            store::set(other, &e.value, Some(e.cas)).unwrap();
        },
        &mut || {
            g.bench_function("get_then_compare_and_swap_beside_a_busy_worker", |b| {
                b.iter(|| {
                    let e = store::get(key).unwrap().unwrap();
                    black_box(store::set(key, &e.value, Some(e.cas)).unwrap())
                })
            });
        },
    );
    busy(
        &|| {
            let mut map = naive.lock().unwrap();
            let (value, cas) = map.get(other).cloned().unwrap();
            map.insert(other.to_string(), (value, cas + 1));
        },
        &mut || {
            g.bench_function("baseline_one_mutex_hashmap_beside_a_busy_worker", |b| b.iter(naive_cycle));
        },
    );
    g.finish();
}

fn native_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("native_request");
    let get = [(":method", "GET"), (":path", "/"), (":authority", "127.0.0.1:10000"), (":scheme", "http")];
    let ok = Upstream { status: 200, address: "127.0.0.1:8081" };
    for policy in POLICIES {
        let config = FakeEnvoy::configure(policy, &sample_config(policy)).unwrap();
        g.bench_function(policy, |b| b.iter(|| black_box(config.request("127.0.0.1:40000", &get, ok))));
    }
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = native_store, native_request }
criterion_main!(benches);
