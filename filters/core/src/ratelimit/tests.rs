use super::*;
use crate::clock::FakeClock;
use crate::store::{CasRule, Entry, MemoryStore};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * S;

fn limiter(json: &str) -> RateLimiter {
    RateLimiter::new(RateLimitConfig::from_json(json.as_bytes()).unwrap())
}

fn get(path: &str, peer: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut h = vec![(":method".to_string(), "GET".to_string()), (":path".to_string(), path.to_string())];
    h.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RequestView::new(h, Some(peer.to_string()))
}

fn admitted(l: &RateLimiter, req: &RequestView, clock: &FakeClock, store: &MemoryStore, n: u32) -> u32 {
    (0..n).map(|_| u32::from(!l.check(req, clock, store).over_limit())).sum()
}

const PER_IP: &str =
    r#"{"limits":[{"name":"per-ip","requests":100,"period":"1s","burst":50,"key":"client_ip"}],"headers":"both"}"#;

#[test]
fn burst_then_sustained_rate() {
    let l = limiter(PER_IP);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:5000", &[]);
    assert_eq!(admitted(&l, &r, &clock, &store, 1000), 50);
    let mut total = 0;
    for _ in 0..100 {
        clock.advance(S / 100);
        total += admitted(&l, &r, &clock, &store, 10);
    }
    assert_eq!(total, 100);
}

#[test]
fn separate_keys_have_separate_budgets_and_port_is_not_part_of_the_key() {
    let l = limiter(PER_IP);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    assert_eq!(admitted(&l, &get("/", "10.0.0.1:5000", &[]), &clock, &store, 40), 40);
    assert_eq!(admitted(&l, &get("/", "10.0.0.1:6000", &[]), &clock, &store, 40), 10);
    assert_eq!(admitted(&l, &get("/", "10.0.0.2:5000", &[]), &clock, &store, 60), 50);
}

#[test]
fn refusal_carries_status_retry_after_headers_and_json_body() {
    let l = limiter(PER_IP);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:5000", &[]);
    admitted(&l, &r, &clock, &store, 50);
    let d = l.check(&r, &clock, &store);
    let refusal = l.refusal(&d).unwrap();
    assert_eq!(refusal.status, 429);
    let h = |name: &str| refusal.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(h("retry-after").as_deref(), Some("1"));
    assert_eq!(h("ratelimit-policy").as_deref(), Some("\"per-ip\";q=100;w=1"));
    assert_eq!(h("ratelimit").as_deref(), Some("\"per-ip\";r=0;t=1"));
    assert_eq!(h("x-ratelimit-limit").as_deref(), Some("100"));
    assert_eq!(h("x-ratelimit-remaining").as_deref(), Some("0"));
    let body: serde_json::Value = serde_json::from_str(&refusal.body).unwrap();
    assert_eq!(body["limit"], "per-ip");
    assert_eq!(body["retry_after"], 1);
}

#[test]
fn allowed_response_headers_count_down() {
    let l = limiter(PER_IP);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:5000", &[]);
    let d = l.check(&r, &clock, &store);
    assert!(l.refusal(&d).is_none());
    let h = l.headers(&d);
    assert!(h.contains(&("ratelimit".into(), "\"per-ip\";r=49;t=1".into())), "{h:?}");
    assert!(h.contains(&("x-ratelimit-remaining".into(), "49".into())), "{h:?}");
}

#[test]
fn header_style_none_and_draft_only() {
    let none = limiter(r#"{"limits":[{"name":"g","requests":1,"period":"1m","key":"all"}],"headers":"none"}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:5000", &[]);
    none.check(&r, &clock, &store);
    let refusal = none.refusal(&none.check(&r, &clock, &store)).unwrap();
    let names: Vec<&str> = refusal.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["retry-after", "content-type"]);
    assert_eq!(refusal.headers.first().map(|(_, v)| v.as_str()), Some("60"));
    let draft = limiter(r#"{"limits":[{"name":"g","requests":1,"period":"1m","key":"all"}]}"#);
    let names: Vec<String> = draft
        .headers(&draft.check(&r, &clock, &MemoryStore::new(CasRule::Envoy)))
        .into_iter()
        .map(|(n, _)| n.into_owned())
        .collect();
    assert_eq!(names, vec!["ratelimit-policy", "ratelimit"]);
}

#[test]
fn shadow_mode_never_refuses_but_reports() {
    let l = limiter(r#"{"limits":[{"name":"g","requests":10,"period":"1s","key":"all"}],"mode":"shadow"}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:5000", &[]);
    let mut over = 0;
    for _ in 0..100 {
        let d = l.check(&r, &clock, &store);
        assert!(l.refusal(&d).is_none());
        over += u32::from(d.over_limit());
    }
    assert_eq!(over, 90);
}

#[test]
fn request_refused_by_one_limit_charges_none() {
    let l = limiter(
        r#"{"limits":[
            {"name":"all","requests":100,"period":"1s","key":"all"},
            {"name":"api","requests":2,"period":"1s","key":"all","match":{"path_prefix":"/api"}}]}"#,
    );
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let api = get("/api/x", "10.0.0.1:1", &[]);
    assert_eq!(admitted(&l, &api, &clock, &store, 50), 2);
    // 2 charged to "all", none for the 48 refused: 98 left for other paths.
    assert_eq!(admitted(&l, &get("/home", "10.0.0.1:1", &[]), &clock, &store, 200), 98);
    let d = l.check(&api, &clock, &store);
    assert_eq!(d.outcomes.len(), 2);
    assert_eq!(d.refused_by, Some(1));
}

#[test]
fn matcher_methods_prefix_and_headers() {
    let l = limiter(
        r#"{"limits":[{"name":"w","requests":1,"period":"1h","key":"all",
            "match":{"methods":["POST"],"path_prefix":"/api","headers":[{"name":"x-tier","equals":"free"},{"name":"x-admin","present":false}]}}]}"#,
    );
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let mk = |method: &str, path: &str, hs: &[(&str, &str)]| {
        let mut h = vec![(":method".to_string(), method.to_string()), (":path".to_string(), path.to_string())];
        h.extend(hs.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        RequestView::new(h, Some("10.0.0.1:1".into()))
    };
    let hit = mk("POST", "/api/a?x=1", &[("x-tier", "free")]);
    assert_eq!(admitted(&l, &hit, &clock, &store, 5), 1);
    for miss in [
        mk("GET", "/api/a", &[("x-tier", "free")]),
        mk("POST", "/other", &[("x-tier", "free")]),
        mk("POST", "/api/a", &[("x-tier", "paid")]),
        mk("POST", "/api/a", &[]),
        mk("POST", "/api/a", &[("x-tier", "free"), ("x-admin", "1")]),
    ] {
        let d = l.check(&miss, &clock, &store);
        assert!(d.outcomes.is_empty(), "{miss:?} matched");
    }
}

#[test]
fn missing_key_header_is_one_shared_bucket_not_an_escape() {
    let l = limiter(r#"{"limits":[{"name":"k","requests":5,"period":"1h","key":"header:x-api-key"}]}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    assert_eq!(admitted(&l, &get("/", "10.0.0.1:1", &[]), &clock, &store, 10), 5);
    assert_eq!(admitted(&l, &get("/", "10.0.0.2:1", &[]), &clock, &store, 10), 0);
    assert_eq!(admitted(&l, &get("/", "10.0.0.2:1", &[("x-api-key", "")]), &clock, &store, 10), 5);
    assert_eq!(admitted(&l, &get("/", "10.0.0.2:1", &[("x-api-key", "abc")]), &clock, &store, 10), 5);
}

#[test]
fn path_key_ignores_query_string() {
    let l = limiter(r#"{"limits":[{"name":"p","requests":3,"period":"1h","key":["path","method"]}]}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let total: u32 =
        (0..10).map(|i| admitted(&l, &get(&format!("/a?cache-bust={i}"), "10.0.0.1:1", &[]), &clock, &store, 1)).sum();
    assert_eq!(total, 3);
}

#[test]
fn trusted_hops_keys_on_forwarded_address_and_spoofing_does_not_help() {
    let l = limiter(r#"{"limits":[{"name":"ip","requests":5,"period":"1h","key":"client_ip"}],"trusted_hops":1}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    // Same real client (appended by the trusted proxy), a different spoofed prefix each time.
    let total: u32 = (0..20)
        .map(|i| {
            let xff = format!("198.51.100.{i}, 203.0.113.9");
            admitted(&l, &get("/", "10.0.0.1:1", &[("x-forwarded-for", &xff)]), &clock, &store, 1)
        })
        .sum();
    assert_eq!(total, 5);
    // Another real client behind the same proxy has its own budget.
    assert_eq!(admitted(&l, &get("/", "10.0.0.1:1", &[("x-forwarded-for", "203.0.113.10")]), &clock, &store, 20), 5);
    // No header at all: keyed on the proxy itself, and reported.
    let d = l.check(&get("/", "10.0.0.1:1", &[]), &clock, &store);
    assert!(d.client_ip_fallback);
}

#[test]
fn without_trusted_hops_forwarded_for_is_ignored() {
    let l = limiter(r#"{"limits":[{"name":"ip","requests":5,"period":"1h","key":"client_ip"}]}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let total: u32 = (0..20)
        .map(|i| {
            admitted(&l, &get("/", "10.0.0.1:1", &[("x-forwarded-for", &format!("198.51.100.{i}"))]), &clock, &store, 1)
        })
        .sum();
    assert_eq!(total, 5);
}

#[test]
fn key_flood_keeps_memory_bounded_and_hot_key_limited() {
    let l = limiter(
        r#"{"limits":[{"name":"ip","requests":10,"period":"1s","burst":10,"key":"client_ip"}],"table_size":256}"#,
    );
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let hot = get("/", "192.0.2.1:1", &[]);
    let mut hot_admitted = 0;
    for i in 0..100_000u32 {
        let flood = get("/", &format!("{}.{}.{}.{}:1", 1 + i / 65536, (i / 256) % 256, i % 256, 7), &[]);
        l.check(&flood, &clock, &store);
        if i % 100 == 0 {
            hot_admitted += admitted(&l, &hot, &clock, &store, 1);
            clock.advance(S / 100);
        }
    }
    // 10 s of simulated time: at most the burst plus 10/s.
    assert!(hot_admitted <= 10 + 100, "hot key admitted {hot_admitted}");
    assert!(store.len() <= 256, "store grew to {}", store.len());
}

#[test]
fn exact_under_strict_nginx_cas_rule_too() {
    let l = limiter(PER_IP);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::NginxStrict);
    let r = get("/", "10.0.0.1", &[]);
    assert_eq!(admitted(&l, &r, &clock, &store, 1000), 50);
    for _ in 0..100 {
        clock.advance(S / 100);
        assert_eq!(admitted(&l, &r, &clock, &store, 10), 1);
    }
}

/// Two "workers" sharing one store alternately: the limit is for the pair,
/// not for each (the bug a per-worker limiter would have).
#[test]
fn two_workers_share_one_budget() {
    let l1 = limiter(PER_IP);
    let l2 = limiter(PER_IP);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:1", &[]);
    let total: u32 =
        (0..500).map(|_| admitted(&l1, &r, &clock, &store, 1) + admitted(&l2, &r, &clock, &store, 1)).sum();
    assert_eq!(total, 50);
}

#[test]
fn store_failure_fails_open_and_is_reported() {
    struct Broken;
    impl SharedStore for Broken {
        fn get(&self, _: &str) -> Result<Option<Entry>, StoreError> {
            Err(StoreError::Host("InternalFailure".into()))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<bool, StoreError> {
            Err(StoreError::Host("InternalFailure".into()))
        }
    }
    let l = limiter(PER_IP);
    let d = l.check(&get("/", "10.0.0.1:1", &[]), &FakeClock::at(T0), &Broken);
    assert!(!d.over_limit());
    assert_eq!(d.outcomes.first().map(|o| o.state), Some(LimitState::StoreError));
    assert!(l.headers(&d).is_empty());
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let l = limiter(r#"{"limits":[{"name":"g","requests":2,"period":"3s","burst":1,"key":"all"}]}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let r = get("/", "10.0.0.1:1", &[]);
    l.check(&r, &clock, &store);
    let refusal = l.refusal(&l.check(&r, &clock, &store)).unwrap();
    // 1.5 s to wait: "2".
    assert_eq!(refusal.headers.first(), Some(&("retry-after".to_string(), "2".to_string())));
}

#[test]
fn initialize_creates_every_slot_once_and_keeps_live_state() {
    let l = limiter(
        r#"{"limits":[{"name":"ip","requests":1,"period":"1h","key":"client_ip"},{"name":"g","requests":1,"period":"1h","key":"all"}],"table_size":64}"#,
    );
    let store = MemoryStore::new(CasRule::NginxStrict);
    assert_eq!(l.initialize(&store).unwrap(), 65);
    assert_eq!(store.len(), 65);
    let clock = FakeClock::at(T0);
    let r = get("/", "10.0.0.1:1", &[]);
    assert_eq!(admitted(&l, &r, &clock, &store, 3), 1);
    // A second worker, or a reloaded VM, initializes again: nothing is reset.
    assert_eq!(l.initialize(&store).unwrap(), 0);
    assert_eq!(admitted(&l, &r, &clock, &store, 3), 0);
    assert_eq!(store.len(), 65);
}

/// Regression: two workers both found a fresh slot absent and both inserted
/// it (Envoy lets cas 0 overwrite), admitting one request too many. With the
/// slots created up front, the second insert is a stale compare-and-swap.
#[test]
fn first_touch_race_cannot_admit_twice_after_initialize() {
    struct RaceOnce<'a> {
        inner: &'a MemoryStore,
        other: &'a RateLimiter,
        fired: std::cell::Cell<bool>,
    }
    impl SharedStore for RaceOnce<'_> {
        fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
            let e = self.inner.get(key);
            if !self.fired.replace(true) {
                // The other worker's whole request runs between our read and our write.
                let d = self.other.check(&get("/", "10.0.0.1:1", &[]), &FakeClock::at(T0), self.inner);
                assert!(!d.over_limit());
            }
            e
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, StoreError> {
            self.inner.set(key, value, cas)
        }
    }
    let json = r#"{"limits":[{"name":"one","requests":1,"period":"1h","key":"all"}]}"#;
    let (w1, w2) = (limiter(json), limiter(json));
    let store = MemoryStore::new(CasRule::Envoy);
    w1.initialize(&store).unwrap();
    let racy = RaceOnce { inner: &store, other: &w2, fired: std::cell::Cell::new(false) };
    let d = w1.check(&get("/", "10.0.0.1:1", &[]), &FakeClock::at(T0), &racy);
    assert!(d.over_limit(), "both workers admitted the only request of the hour");
}

/// The JSON examples in the filter's README are valid configurations.
#[test]
fn readme_json_examples_parse() {
    let readme = include_str!("../../../rate-limit/README.md");
    let blocks = crate::testing::json_blocks(readme);
    assert!(!blocks.is_empty(), "no json examples found");
    for json in blocks {
        RateLimitConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("README example refused: {e}\n{json}"));
    }
}

// --- Global limits (the rate limit service). ---

const GLOBAL: &str = r#"{"limits":[
    {"name":"local-ip","requests":100,"period":"1s","key":"client_ip"},
    {"name":"fleet-ip","requests":10,"period":"1m","key":"client_ip","scope":"global"},
    {"name":"fleet-key","requests":5,"period":"1s","key":["header:x-api-key","method"],"scope":"global","match":{"path_prefix":"/api"}}
  ],
  "global":{"cluster":"rls","domain":"edge"},"headers":"both"}"#;

fn global_status(over: bool, remaining: u64, reset_secs: u64) -> global::StatusView {
    global::StatusView { over_limit: over, quota: Some((10, 60)), remaining, reset_nanos: reset_secs * S }
}

#[test]
fn global_config_defaults_and_local_check_skips_global_limits() {
    let l = limiter(GLOBAL);
    let g = l.config().global.clone().unwrap();
    assert_eq!(
        (g.cluster.as_str(), g.domain.as_str(), g.authority.as_str(), g.path.as_str()),
        ("rls", "edge", "rls", "/json")
    );
    assert_eq!(
        (g.protocol, g.failure_mode, g.status_on_error),
        (global::Protocol::Grpc, global::FailureMode::Allow, 500)
    );
    assert_eq!(g.timeout, std::time::Duration::from_millis(50));
    let slots: Vec<u32> = l.config().limits.iter().map(|l| l.slots).collect();
    assert_eq!(slots, vec![DEFAULT_TABLE_SIZE_FOR_TEST, 0, 0], "global limits need no local slots");
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let d = l.check(&get("/api", "10.0.0.1:1", &[]), &clock, &store);
    let limits: Vec<usize> = d.outcomes.iter().map(|o| o.limit).collect();
    assert_eq!(limits, vec![0], "only the local limit is checked locally");
}

const DEFAULT_TABLE_SIZE_FOR_TEST: u32 = config::DEFAULT_TABLE_SIZE;

#[test]
fn global_call_sends_one_descriptor_per_matching_global_limit() {
    let l = limiter(GLOBAL);
    let call = l.global_call(&get("/api/x?q=1", "10.0.0.7:1", &[("x-api-key", "k1")])).unwrap();
    assert_eq!(call.limits, vec![1, 2]);
    let d = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(
        call.descriptors,
        vec![
            d(&[("generic_key", "fleet-ip"), ("remote_address", "10.0.0.7")]),
            d(&[("generic_key", "fleet-key"), ("x-api-key", "k1"), ("method", "GET")]),
        ]
    );
    // Outside /api only one global limit matches; a missing header is "".
    let call = l.global_call(&get("/", "10.0.0.7:1", &[])).unwrap();
    assert_eq!(call.limits, vec![1]);
    let call = l.global_call(&get("/api", "10.0.0.7:1", &[])).unwrap();
    assert_eq!(call.descriptors[1][1], ("x-api-key".to_string(), String::new()));
    let local_only = limiter(PER_IP);
    assert_eq!(local_only.global_call(&get("/", "10.0.0.7:1", &[])), None);
}

#[test]
fn over_limit_answer_refuses_with_every_limits_headers_and_the_services() {
    let l = limiter(GLOBAL);
    let req = get("/api", "10.0.0.7:1", &[("x-api-key", "k")]);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    let local = l.quota_items(&l.check(&req, &clock, &store));
    let call = l.global_call(&req).unwrap();
    let answer = global::Answer {
        over_limit: true,
        statuses: vec![global_status(true, 0, 42), global_status(false, 3, 1)],
        response_headers: vec![("x-from-rls".into(), "1".into())],
        request_headers: vec![],
    };
    let out = l.judge_answer(&call, &answer, local);
    let r = out.refusal.unwrap();
    let h = |name: &str| r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(r.status, 429);
    assert_eq!(h("retry-after").as_deref(), Some("42"));
    assert_eq!(
        h("ratelimit-policy").as_deref(),
        Some(r#""local-ip";q=100;w=1, "fleet-ip";q=10;w=60, "fleet-key";q=10;w=60"#)
    );
    assert_eq!(h("ratelimit").as_deref(), Some(r#""local-ip";r=99;t=1, "fleet-ip";r=0;t=42, "fleet-key";r=3;t=1"#));
    assert_eq!(h("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(h("x-from-rls").as_deref(), Some("1"));
    assert!(r.body.contains(r#""limit":"fleet-ip""#), "{}", r.body);
    assert_eq!(out.states, vec![(1, LimitState::Refused), (2, LimitState::Allowed)]);
}

#[test]
fn ok_answer_passes_with_headers_and_shadow_mode_never_refuses() {
    let l = limiter(GLOBAL);
    let req = get("/", "10.0.0.7:1", &[]);
    let call = l.global_call(&req).unwrap();
    let ok = global::Answer {
        over_limit: false,
        statuses: vec![global_status(false, 9, 6)],
        response_headers: vec![],
        request_headers: vec![("x-quota".into(), "fine".into())],
    };
    let out = l.judge_answer(&call, &ok, vec![]);
    assert_eq!(out.refusal, None);
    assert!(out.response_headers.contains(&("ratelimit".into(), r#""fleet-ip";r=9;t=6"#.to_string())));
    assert_eq!(out.request_headers, vec![("x-quota".to_string(), "fine".to_string())]);
    // No statuses at all: the overall code decides, and the body still names a limit.
    let bare = global::Answer { over_limit: true, ..Default::default() };
    let r = l.judge_answer(&call, &bare, vec![]).refusal.unwrap();
    assert!(r.body.contains("fleet-ip") && r.headers.contains(&("retry-after".to_string(), "1".to_string())));
    let shadow = limiter(&GLOBAL.replace(r#""headers":"both""#, r#""headers":"both","mode":"shadow""#));
    let out = shadow.judge_answer(&call, &bare, vec![]);
    assert_eq!(out.refusal, None);
    assert_eq!(out.states, vec![(1, LimitState::Refused)], "counted as shadow refusals");
}

#[test]
fn local_failure_mode_enforces_a_share_of_each_global_limit() {
    // 10 per minute over 4 replicas: each proxy admits ceil(10/4) = 3 while the service is down.
    let l = limiter(&GLOBAL.replace(r#""domain":"edge""#, r#""domain":"edge","failure_mode":"local","replicas":4"#));
    let fleet_ip = l.config().limits.get(1).unwrap();
    assert_eq!(fleet_ip.slots, config::DEFAULT_TABLE_SIZE);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    l.initialize(&store).unwrap();
    let req = get("/", "10.0.0.7:1", &[]);
    let admitted = (0..10).filter(|_| !l.check_degraded(&req, &clock, &store).over_limit()).count();
    assert_eq!(admitted, 3);
    let d = l.check_degraded(&req, &clock, &store);
    let r = l.refusal(&d).unwrap();
    assert!(r.body.contains("fleet-ip"), "{}", r.body);
    // The local limit is untouched by the degraded check, and vice versa.
    assert_eq!(l.check(&req, &clock, &store).outcomes.len(), 1);
    // Another client has its own share.
    assert!(!l.check_degraded(&get("/", "10.0.0.8:1", &[]), &clock, &store).over_limit());
}

#[test]
fn global_config_errors_name_their_field() {
    let base = |global: &str| {
        format!(
            r#"{{"limits":[{{"name":"a","requests":1,"period":"1s","key":"all","scope":"global"}}],"global":{global}}}"#
        )
    };
    let cases = [
        (base(r#"{"cluster":"rls"}"#), "global: missing field `domain`"),
        (base(r#"{"cluster":"","domain":"d"}"#), "global.cluster: must be 1 to 255 printable"),
        (base(r#"{"cluster":"rls","domain":"d","timeout":"500us"}"#), "global.timeout: must be between 1ms and 5s"),
        (base(r#"{"cluster":"rls","domain":"d","timeout":"0ms"}"#), "global.timeout: must be longer than zero"),
        (base(r#"{"cluster":"rls","domain":"d","timeout":"1 s"}"#), "global.timeout: \"1 s\""),
        (
            base(r#"{"cluster":"rls","domain":"d","failure_mode":"local"}"#),
            "global.replicas: is required with failure_mode \"local\"",
        ),
        (
            base(r#"{"cluster":"rls","domain":"d","replicas":3}"#),
            "global.replicas: is only used with failure_mode \"local\"",
        ),
        (
            base(r#"{"cluster":"rls","domain":"d","failure_mode":"open"}"#),
            "global.failure_mode: unknown variant `open`",
        ),
        (base(r#"{"cluster":"rls","domain":"d","protocol":"thrift"}"#), "global.protocol: unknown variant `thrift`"),
        (base(r#"{"cluster":"rls","domain":"d","path":"json"}"#), "global.path: must start with '/'"),
        (
            base(r#"{"cluster":"rls","domain":"d","status_on_error":200}"#),
            "global.status_on_error: must be a 4xx or 5xx",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all","scope":"global"}]}"#.to_string(),
            "limits[0].scope: is \"global\" but the configuration has no `global` section",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all"}],"global":{"cluster":"r","domain":"d"}}"#
                .to_string(),
            "global: is set but no limit has \"scope\": \"global\"",
        ),
        (
            r#"{"limits":[{"name":"a","requests":1,"period":"1s","key":"all","scope":"fleet"}]}"#.to_string(),
            "limits[0].scope: unknown variant `fleet`",
        ),
    ];
    crate::testing::assert_each_refused(RateLimitConfig::from_json, &cases);
}

#[test]
fn key_all_is_one_bucket_and_global_is_its_alias() {
    for key in ["all", "global"] {
        let json = format!(r#"{{"limits":[{{"name":"a","requests":7,"period":"1m","key":"{key}"}}]}}"#);
        let c = RateLimitConfig::from_json(json.as_bytes()).unwrap();
        let l = c.limits.first().unwrap();
        assert_eq!((l.key.as_slice(), l.slots), (&[KeyPart::All][..], 1), "{key}");
    }
}

/// A limiter configured on `store` as a config push does (reserve, then
/// initialize).
fn pushed(json: &str, store: &MemoryStore) -> RateLimiter {
    let l = limiter(json);
    l.reserve(store).unwrap().unwrap();
    l.initialize(store).unwrap();
    l
}

fn two_ip_limits(a: (&str, u32), b: (&str, u32), table: u32) -> String {
    format!(
        r#"{{"limits":[{{"name":"{}","requests":{},"period":"1h","key":"client_ip"}},{{"name":"{}","requests":{},"period":"1h","key":"client_ip"}}],"table_size":{table}}}"#,
        a.0, a.1, b.0, b.1
    )
}

/// Issue 30, a config push: an unchanged limit keeps its buckets (another
/// limit added beside it too); a resized table, a new rate or a renamed
/// limit starts full, for every client alike; two limits that swap names
/// never read each other's buckets.
#[test]
fn a_config_push_keeps_or_starts_each_table_by_its_identity() {
    let store = MemoryStore::new(CasRule::Envoy);
    let clock = FakeClock::at(T0);
    let clients: Vec<RequestView> = (0..20).map(|i| get("/", &format!("10.0.{i}.1:1"), &[])).collect();
    let exhaust = |l: &RateLimiter| {
        for c in &clients {
            admitted(l, c, &clock, &store, 10);
        }
    };
    let full = |l: &RateLimiter| clients.iter().filter(|c| !l.check(c, &clock, &store).over_limit()).count();
    let one = |name: &str, rpu: u32, table: u32| {
        format!(
            r#"{{"limits":[{{"name":"{name}","requests":{rpu},"period":"1h","key":"client_ip"}}],"table_size":{table}}}"#
        )
    };
    let l = pushed(&one("a", 2, 1024), &store);
    exhaust(&l);
    // The same config again: still exhausted.
    assert_eq!(full(&pushed(&one("a", 2, 1024), &store)), 0);
    // Another limit added after it: "a" keeps its state.
    let both = pushed(&two_ip_limits(("a", 2), ("b", 5), 1024), &store);
    assert_eq!(clients.iter().filter(|c| both.check(c, &clock, &store).refused_by == Some(0)).count(), 20);
    // Resized: every client starts full, none reads another's slot.
    let resized = pushed(&one("a", 2, 2048), &store);
    exhaust(&resized);
    assert_eq!(full(&resized), 0);
    // A new rate: full.
    assert_eq!(full(&pushed(&one("a", 3, 1024), &store)), 20);
    // Two limits that swap names (and rates): neither sees the other's state.
    let store = MemoryStore::new(CasRule::Envoy);
    let before = pushed(&two_ip_limits(("x", 1), ("y", 1000), 4096), &store);
    for c in &clients {
        admitted(&before, c, &clock, &store, 1);
    }
    let swapped = pushed(&two_ip_limits(("y", 1), ("x", 1000), 4096), &store);
    assert_eq!(full(&swapped), 20, "\"y\" (1 an hour) read \"x\"'s exhausted buckets or \"y\"'s old ones");
}

/// Issue 30: repeated pushes naming new limits cannot grow shared data
/// without bound: past MAX_RETAINED_SLOTS the push is refused at load, by
/// field; pushes reusing names and sizes cost nothing new.
#[test]
fn pushes_that_would_keep_too_many_slots_are_refused() {
    let store = MemoryStore::new(CasRule::NginxStrict);
    let big = |name: &str| {
        limiter(&format!(
            r#"{{"limits":[{{"name":"{name}","requests":1,"period":"1s","key":"client_ip"}}],"table_size":{}}}"#,
            config::MAX_TABLE_SIZE
        ))
    };
    assert_eq!(big("first").reserve(&store).unwrap(), Ok(()));
    assert_eq!(big("second").reserve(&store).unwrap(), Ok(()));
    assert_eq!(big("first").reserve(&store).unwrap(), Ok(()), "a name already held costs nothing");
    let refused = big("third").reserve(&store).unwrap().unwrap_err();
    assert_eq!(refused.field, "table_size");
    assert!(refused.to_string().contains("restart Envoy"), "{refused}");
}

/// Issue 30: without Envoy's `normalize_path`, `/\api/x` is `/api/x` to
/// many backends: it must not escape an exhausted limit on `/api`.
#[test]
fn a_backslash_spelling_does_not_escape_a_path_limit() {
    let l =
        limiter(r#"{"limits":[{"name":"api","requests":1,"period":"1h","key":"all","match":{"path_prefix":"/api"}}]}"#);
    let clock = FakeClock::at(T0);
    let store = MemoryStore::new(CasRule::Envoy);
    assert_eq!(admitted(&l, &get("/api/x", "10.0.0.1:1", &[]), &clock, &store, 1), 1);
    for spelling in ["/\\api/x", "\\api\\x", "/api\\x"] {
        assert!(l.check(&get(spelling, "10.0.0.1:1", &[]), &clock, &store).over_limit(), "{spelling} escaped");
    }
}
