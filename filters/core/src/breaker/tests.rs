use super::window::Sample;
use super::*;
use crate::store::{CasRule, MemoryStore, SharedStore};
use proptest::prelude::*;

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
const T0: u64 = 1_800_000_000 * S;

fn breakers(json: &str) -> Breakers {
    Breakers::new(BreakerConfig::from_json(json.as_bytes()).unwrap())
}

fn ok(b: &Breakers) -> Sample {
    b.sample(200, false, 5 * MS)
}

fn fail(b: &Breakers) -> Sample {
    b.sample(503, false, 5 * MS)
}

/// Admits and completes one request; returns the admission.
fn request(b: &Breakers, rec: &mut Record, now: u64, sample: Sample) -> Admission {
    let (a, _, _) = b.admit(rec, now);
    match a {
        Admission::Pass => {
            b.complete(rec, now, &sample, false);
        }
        Admission::Probe => {
            b.complete(rec, now, &sample, true);
        }
        Admission::Reject { .. } => {}
    }
    a
}

#[test]
fn consecutive_failures_trip_exactly_at_the_count() {
    let b = breakers(r#"{"consecutive_failures":3}"#);
    let mut r = b.fresh("c");
    request(&b, &mut r, T0, fail(&b));
    request(&b, &mut r, T0, fail(&b));
    request(&b, &mut r, T0, ok(&b)); // streak broken
    request(&b, &mut r, T0, fail(&b));
    request(&b, &mut r, T0, fail(&b));
    assert_eq!(r.state, State::Closed);
    let (changed, t) = {
        b.admit(&mut r, T0);
        b.complete(&mut r, T0, &fail(&b), false)
    };
    assert!(changed);
    assert_eq!(t, Some(Transition { from: State::Closed, to: State::Open }));
    assert_eq!(r.until, T0 + 10 * S);
}

#[test]
fn open_rejects_with_time_left_then_half_opens_at_the_boundary() {
    let b = breakers(r#"{"consecutive_failures":1,"open_for":"10s"}"#);
    let mut r = b.fresh("c");
    request(&b, &mut r, T0, fail(&b));
    assert_eq!(b.admit(&mut r, T0 + 3 * S).0, Admission::Reject { retry_after_ns: 7 * S, state: State::Open });
    assert_eq!(b.admit(&mut r, T0 + 10 * S - 1).0, Admission::Reject { retry_after_ns: 1, state: State::Open });
    let (a, changed, t) = b.admit(&mut r, T0 + 10 * S);
    assert_eq!(a, Admission::Probe);
    assert!(changed);
    assert_eq!(t, Some(Transition { from: State::Open, to: State::HalfOpen }));
    // Only one probe at a time by default.
    assert!(matches!(b.admit(&mut r, T0 + 10 * S).0, Admission::Reject { state: State::HalfOpen, .. }));
}

#[test]
fn successful_probes_close_with_an_empty_window() {
    let b = breakers(r#"{"consecutive_failures":1,"half_open_requests":2}"#);
    let mut r = b.fresh("c");
    request(&b, &mut r, T0, fail(&b));
    let t = T0 + 10 * S;
    assert_eq!(b.admit(&mut r, t).0, Admission::Probe);
    assert_eq!(b.admit(&mut r, t).0, Admission::Probe);
    assert!(matches!(b.admit(&mut r, t).0, Admission::Reject { .. }));
    assert_eq!(b.complete(&mut r, t, &ok(&b), true), (true, None));
    let (_, tr) = b.complete(&mut r, t, &ok(&b), true);
    assert_eq!(tr, Some(Transition { from: State::HalfOpen, to: State::Closed }));
    assert_eq!(r, b.fresh("c"));
}

#[test]
fn failed_probe_reopens_for_longer_up_to_the_maximum() {
    let b = breakers(r#"{"consecutive_failures":1,"open_for":"10s","max_open_for":"35s"}"#);
    let mut r = b.fresh("c");
    let mut now = T0;
    request(&b, &mut r, now, fail(&b));
    let mut periods = Vec::new();
    for _ in 0..4 {
        periods.push((r.until - now) / S);
        now = r.until;
        assert_eq!(request(&b, &mut r, now, fail(&b)), Admission::Probe);
        assert_eq!(r.state, State::Open);
    }
    periods.push((r.until - now) / S);
    assert_eq!(periods, vec![10, 20, 35, 35, 35]);
    // A success closes it and the next trip starts from open_for again.
    now = r.until;
    request(&b, &mut r, now, ok(&b));
    assert_eq!(r.state, State::Closed);
    request(&b, &mut r, now, fail(&b));
    assert_eq!(r.until - now, 10 * S);
}

#[test]
fn unanswered_probes_are_forgotten_after_open_for() {
    let b = breakers(r#"{"consecutive_failures":1,"open_for":"10s"}"#);
    let mut r = b.fresh("c");
    request(&b, &mut r, T0, fail(&b));
    let t = T0 + 10 * S;
    assert_eq!(b.admit(&mut r, t).0, Admission::Probe); // never answered
    assert!(matches!(b.admit(&mut r, t + 9 * S).0, Admission::Reject { .. }));
    assert_eq!(b.admit(&mut r, t + 10 * S).0, Admission::Probe);
    // A released probe gives its place back at once.
    assert!(b.release_probe(&mut r));
    assert_eq!(b.admit(&mut r, t + 10 * S).0, Admission::Probe);
}

#[test]
fn failure_ratio_needs_min_requests() {
    let b = breakers(r#"{"failure_ratio":0.5,"min_requests":10}"#);
    let mut r = b.fresh("c");
    for _ in 0..9 {
        request(&b, &mut r, T0, fail(&b));
    }
    assert_eq!(r.state, State::Closed, "9 requests are below min_requests");
    request(&b, &mut r, T0, ok(&b));
    assert_eq!(r.state, State::Open, "9 of 10 failed");
}

#[test]
fn failure_ratio_counts_only_the_window() {
    let b = breakers(r#"{"failure_ratio":0.5,"min_requests":4,"window":"10s","buckets":10}"#);
    let mut r = b.fresh("c");
    for _ in 0..3 {
        request(&b, &mut r, T0, fail(&b));
    }
    // 10 s later those failures have left the window: 1 failure of 4 now.
    let later = T0 + 10 * S;
    request(&b, &mut r, later, fail(&b));
    for _ in 0..3 {
        request(&b, &mut r, later, ok(&b));
    }
    assert_eq!(r.state, State::Closed);
    // One more failure: 2 of 5 = 0.4, still closed; then 3 of 6 = 0.5 trips.
    request(&b, &mut r, later, fail(&b));
    assert_eq!(r.state, State::Closed);
    request(&b, &mut r, later, fail(&b));
    assert_eq!(r.state, State::Open);
}

#[test]
fn slow_call_ratio_trips_on_latency() {
    let b = breakers(r#"{"slow_call_threshold":"500ms","slow_call_ratio":0.5,"min_requests":4}"#);
    let mut r = b.fresh("c");
    for ms in [100, 600, 100] {
        request(&b, &mut r, T0, b.sample(200, false, ms * MS));
    }
    assert_eq!(r.state, State::Closed);
    request(&b, &mut r, T0, b.sample(200, false, 501 * MS));
    assert_eq!(r.state, State::Open);
}

#[test]
fn traefik_expression_trips_on_median_latency() {
    let b = breakers(r#"{"expression":"LatencyAtQuantileMS(50.0) > 100","min_requests":5}"#);
    let mut r = b.fresh("c");
    for _ in 0..20 {
        request(&b, &mut r, T0, b.sample(200, false, 90 * MS));
    }
    assert_eq!(r.state, State::Closed);
    for _ in 0..21 {
        request(&b, &mut r, T0, b.sample(200, false, 300 * MS));
    }
    assert_eq!(r.state, State::Open);
}

#[test]
fn traefik_expression_response_code_and_network_ratios() {
    let b = breakers(
        r#"{"expression":"ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5","min_requests":4}"#,
    );
    let mut r = b.fresh("c");
    for st in [200, 200, 200, 500] {
        request(&b, &mut r, T0, b.sample(st, false, MS));
    }
    assert_eq!(r.state, State::Closed, "exactly 0.25 is not > 0.25");
    request(&b, &mut r, T0, b.sample(502, false, MS));
    assert_eq!(r.state, State::Open);

    // Traefik's NetworkErrorRatio: 502 and 504 responses, whoever sent them;
    // a 503 (Envoy's answer to a failed connection) is not one.
    let b = breakers(r#"{"expression":"NetworkErrorRatio() > 0.5","min_requests":4}"#);
    let mut r = b.fresh("n");
    for (st, net) in [(503, true), (503, true), (503, true), (200, false)] {
        request(&b, &mut r, T0, b.sample(st, net, MS));
    }
    assert_eq!(r.state, State::Closed, "network failures answered 503 are not Traefik's network errors");
    let mut r = b.fresh("g");
    for st in [502, 504, 200, 504] {
        request(&b, &mut r, T0, b.sample(st, false, MS));
    }
    assert_eq!(r.state, State::Open, "3 of 4 answered 502/504 by the upstream");

    // The filter's own measure: network-level failures, whatever the status
    // (nginx gives none).
    let b = breakers(r#"{"expression":"NetworkFailureRatio() > 0.5","min_requests":4}"#);
    let mut r = b.fresh("f");
    for net in [true, true, false, true] {
        request(&b, &mut r, T0, b.sample(if net { 0 } else { 200 }, net, MS));
    }
    assert_eq!(r.state, State::Open);
}

#[test]
fn latency_quantile_is_compared_in_whole_milliseconds() {
    // Traefik truncates the quantile to whole milliseconds: 50.9 ms reads
    // as 50. Decided exactly, whatever the quantile.
    for (expr, trips) in [
        ("LatencyAtQuantileMS(77.0) > 50", false),
        ("LatencyAtQuantileMS(77.0) > 49", true),
        ("LatencyAtQuantileMS(77.0) >= 50", true),
        ("LatencyAtQuantileMS(77.0) == 50", true),
        ("LatencyAtQuantileMS(77.0) < 51", true),
        ("51 <= LatencyAtQuantileMS(77.0)", false),
    ] {
        let b = breakers(&format!(r#"{{"expression":"{expr}","min_requests":10}}"#));
        let mut r = b.fresh("l");
        for _ in 0..10 {
            request(&b, &mut r, T0, b.sample(200, false, 50 * MS + 900_000));
        }
        assert_eq!(r.state == State::Open, trips, "{expr}");
    }
}

#[test]
fn latency_at_45_49_and_53_ms_against_greater_than_50() {
    // The issue's samples: one request at 45, 49.5 or 53 ms, `> 50`.
    for (micros, trips) in [(45_000, false), (49_500, false), (53_000, true)] {
        let b = breakers(r#"{"expression":"LatencyAtQuantileMS(50.0) > 50","min_requests":1}"#);
        let mut r = b.fresh("l");
        request(&b, &mut r, T0, b.sample(200, false, micros * 1000));
        assert_eq!(r.state == State::Open, trips, "{micros} us");
    }
}

#[test]
fn requests_completing_after_a_trip_are_not_counted() {
    let b = breakers(r#"{"consecutive_failures":2}"#);
    let mut r = b.fresh("c");
    // Three requests in flight, admitted while closed.
    for _ in 0..3 {
        assert_eq!(b.admit(&mut r, T0).0, Admission::Pass);
    }
    b.complete(&mut r, T0, &fail(&b), false);
    b.complete(&mut r, T0, &fail(&b), false);
    assert_eq!(r.state, State::Open);
    let before = r.clone();
    assert_eq!(b.complete(&mut r, T0, &fail(&b), false), (false, None));
    assert_eq!(r, before);
}

#[test]
fn encode_decode_round_trip_and_garbage() {
    let b = breakers(
        r#"{"expression":"LatencyAtQuantileMS(99) > 1 || ResponseCodeRatio(500,600,0,600) > 0.1","min_requests":1000}"#,
    );
    let mut r = b.fresh("cluster-a");
    for i in 0..50u64 {
        request(&b, &mut r, T0 + i * 300 * MS, b.sample(if i % 7 == 0 { 503 } else { 200 }, i % 11 == 0, i * MS));
    }
    r.trips = 3;
    let bytes = b.encode(&r);
    assert_eq!(b.decode(&bytes), Some(r.clone()));
    for cut in 0..bytes.len() {
        assert_eq!(b.decode(bytes.get(..cut).unwrap()), None, "truncated at {cut}");
    }
    assert_eq!(b.decode(FREE), None);
    // A record written under another window shape is not misread: its key
    // and state are kept, its window is not.
    let other = breakers(r#"{"consecutive_failures":1,"buckets":5}"#);
    let read = other.decode(&bytes).unwrap();
    assert_eq!((read.key.as_str(), read.state, read.trips), ("cluster-a", State::Closed, 3));
    assert_eq!(read.ring, other.fresh("x").ring);
    assert_eq!(other.decode_head(&bytes), None, "the fast path leaves it to the full decode");
}

#[test]
fn table_claims_finds_and_bounds_breakers() {
    let mut b = breakers(r#"{"consecutive_failures":1,"max_breakers":4}"#);
    let store = MemoryStore::new(CasRule::NginxStrict);
    assert_eq!(b.initialize(&store).unwrap(), 4);
    assert_eq!(b.initialize(&store).unwrap(), 0);
    // Four live (tripped) breakers fill the table.
    for k in ["a", "b", "c", "d"] {
        let (slot, _) = b.find(&store, k, T0).unwrap().unwrap();
        let t = b.update(&store, slot, k, |r| b.complete(r, T0, &fail(&b), false)).unwrap().unwrap();
        assert_eq!(t, Some(Transition { from: State::Closed, to: State::Open }));
    }
    // The four slots and the table's size.
    assert_eq!(store.len(), 5);
    // A fifth key finds no room while they are live: not tracked.
    assert_eq!(b.find(&store, "e", T0).unwrap(), None);
    // Existing keys are found where they are, still open.
    let (_, rec) = b.find(&store, "c", T0).unwrap().unwrap();
    assert_eq!(rec.state, State::Open);
    assert_eq!(store.len(), 5);
}

/// Trips `key`'s breaker (consecutive failures) in `b`'s table.
fn trip(b: &Breakers, store: &MemoryStore, key: &str, at: u64) {
    let (slot, _) = b.find(store, key, at).unwrap().unwrap();
    for _ in 0..5 {
        b.update(store, slot, key, |r| b.complete(r, at, &fail(b), false)).unwrap();
    }
    assert_eq!(b.find(store, key, at).unwrap().unwrap().1.state, State::Open, "{key}");
}

/// A config push that changes the table's size (issue 30): every open
/// breaker is found open at the new size, growing and shrinking.
#[test]
fn a_resized_table_keeps_every_open_breaker() {
    let keys: Vec<String> = (0..12).map(|i| format!("cluster-{i}")).collect();
    let store = MemoryStore::new(CasRule::NginxStrict);
    let mut small = breakers(r#"{"consecutive_failures":1,"max_breakers":256,"open_for":"60s"}"#);
    small.initialize(&store).unwrap();
    for k in &keys {
        trip(&small, &store, k, T0);
    }
    for size in [512, 37, 256] {
        let mut b = breakers(&format!(r#"{{"consecutive_failures":1,"max_breakers":{size},"open_for":"60s"}}"#));
        b.initialize(&store).unwrap();
        for k in &keys {
            let (_, rec) = b.find(&store, k, T0 + S).unwrap().unwrap();
            assert_eq!(rec.state, State::Open, "{k} at max_breakers {size}");
        }
    }
}

/// A config push that changes the window's shape (an expression added,
/// other buckets): an open breaker stays open until its end.
#[test]
fn a_reshaped_window_keeps_the_breakers_state() {
    let store = MemoryStore::new(CasRule::Envoy);
    let mut plain = breakers(r#"{"consecutive_failures":1,"open_for":"60s"}"#);
    plain.initialize(&store).unwrap();
    trip(&plain, &store, "up", T0);
    let mut shaped =
        breakers(r#"{"consecutive_failures":1,"open_for":"60s","expression":"LatencyAtQuantileMS(50.0) > 100"}"#);
    shaped.initialize(&store).unwrap();
    let (slot, rec) = shaped.find(&store, "up", T0 + S).unwrap().unwrap();
    assert_eq!(rec.state, State::Open);
    let a = shaped.update(&store, slot, "up", |r| {
        let (a, changed, _) = shaped.admit(r, T0 + 2 * S);
        (changed, a)
    });
    assert!(matches!(a.unwrap(), Some(Admission::Reject { state: State::Open, .. })));
}

/// Issue 30, defect 3: a Traefik breaker recovering, reconfigured as a
/// native breaker, is closed (its upstream was taking traffic again); a
/// native breaker half-open, reconfigured as a Traefik one, recovers.
#[test]
fn a_mode_change_maps_each_state_to_the_new_modes() {
    let traefik = breakers(
        r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","checkPeriod":"100ms","fallbackDuration":"1s","recoveryDuration":"60s"}}"#,
    );
    let native = breakers(r#"{"failure_ratio":0.5,"min_requests":5,"open_for":"1s","half_open_requests":2}"#);
    let mut r = traefik.fresh("up");
    r.state = State::Recovering;
    r.until = T0 + 50 * S;
    // Native: every request passes at once, recorded closed.
    let (a, changed, t) = native.admit(&mut r, T0);
    assert_eq!(
        (a, changed, t),
        (Admission::Pass, true, Some(Transition { from: State::Recovering, to: State::Closed }))
    );
    for i in 0..20 {
        assert_eq!(native.admit(&mut r, T0 + i).0, Admission::Pass);
    }
    // Half-open under Traefik: recovering from now.
    let mut h = native.fresh("up");
    h.state = State::HalfOpen;
    h.until = T0 + S;
    let (_, changed, t) = traefik.admit(&mut h, T0);
    assert!(changed);
    assert_eq!(t, Some(Transition { from: State::HalfOpen, to: State::Recovering }));
    assert_eq!((h.state, h.until), (State::Recovering, T0 + 60 * S));
}

#[test]
fn idle_breakers_give_their_slot_to_new_keys() {
    // Without a window (consecutive failures alone) a breaker with no
    // failure streak carries no state: its slot is free at once.
    let mut lean = breakers(r#"{"consecutive_failures":5,"max_breakers":1}"#);
    let store = MemoryStore::new(CasRule::Envoy);
    lean.initialize(&store).unwrap();
    let (slot, _) = lean.find(&store, "old", T0).unwrap().unwrap();
    lean.update(&store, slot, "old", |r| lean.complete(r, T0, &ok(&lean), false)).unwrap();
    assert_eq!(lean.find(&store, "new", T0 + S).unwrap().map(|(s, r)| (s, r.key)), Some((slot, "new".into())));

    let mut b = breakers(r#"{"failure_ratio":0.5,"max_breakers":1,"window":"10s"}"#);
    let store = MemoryStore::new(CasRule::Envoy);
    b.initialize(&store).unwrap();
    let (slot, _) = b.find(&store, "old", T0).unwrap().unwrap();
    b.update(&store, slot, "old", |r| b.complete(r, T0, &ok(&b), false)).unwrap();
    // Within the window "old" has history: "new" cannot take its slot.
    assert_eq!(b.find(&store, "new", T0 + S).unwrap(), None);
    // Once its window is empty the slot is reclaimed, and "old"'s update sees that.
    let (slot2, rec) = b.find(&store, "new", T0 + 11 * S).unwrap().unwrap();
    assert_eq!((slot2, rec.key.as_str()), (slot, "new"));
    assert_eq!(b.update(&store, slot, "old", |r| b.complete(r, T0 + 11 * S, &ok(&b), false)).unwrap(), None);
}

/// Two workers share one store: a breaker tripped by one rejects on the other.
#[test]
fn a_trip_on_one_worker_rejects_on_the_other() {
    let json = r#"{"consecutive_failures":2}"#;
    let (mut w1, w2) = (breakers(json), breakers(json));
    let store = MemoryStore::new(CasRule::Envoy);
    w1.initialize(&store).unwrap();
    for w in [&w1, &w2] {
        let (slot, _) = w.find(&store, "up", T0).unwrap().unwrap();
        w.update(&store, slot, "up", |r| w.complete(r, T0, &fail(w), false)).unwrap();
    }
    let (slot, _) = w1.find(&store, "up", T0).unwrap().unwrap();
    let a = w1.update(&store, slot, "up", |r| {
        let (a, changed, _) = w1.admit(r, T0 + S);
        (changed, a)
    });
    assert_eq!(a.unwrap(), Some(Admission::Reject { retry_after_ns: 9 * S, state: State::Open }));
}

proptest! {
    /// The window never reports more requests, failures or slow calls than it
    /// was given, and reports exactly those of the last `window` when times
    /// only move forward.
    #[test]
    fn window_never_reports_more_than_it_saw(
        steps in proptest::collection::vec((0u64..3_000, any::<bool>(), any::<bool>()), 1..300),
        buckets in 1u32..12,
    ) {
        let b = breakers(&format!(r#"{{"failure_ratio":1.0,"min_requests":100000,"window":"10s","buckets":{buckets}}}"#));
        let shape = &b.config().shape;
        let mut ring = shape.empty();
        let mut now = T0;
        let mut seen: Vec<(u64, bool, bool)> = Vec::new();
        for (advance_ms, failure, slow) in steps {
            now += advance_ms * MS;
            let s = Sample { status: if failure { 500 } else { 200 }, failure, network: false, slow, latency_ns: MS };
            shape.record(&mut ring, now, &s);
            seen.push((now, failure, slow));
            let t = shape.totals(&ring, now);
            prop_assert!(t.requests <= seen.len() as u64);
            prop_assert!(t.failures <= seen.iter().filter(|s| s.1).count() as u64);
            prop_assert!(t.slow <= seen.iter().filter(|s| s.2).count() as u64);
            // Exactly the samples whose bucket is one of the last `buckets`.
            let epoch = now / shape.bucket_ns;
            let live = seen.iter().filter(|(at, _, _)| epoch - at / shape.bucket_ns < u64::from(buckets)).count() as u64;
            prop_assert_eq!(t.requests, live);
        }
    }
}

#[test]
fn record_size_is_as_documented() {
    let b = breakers(
        r#"{"expression":"LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5"}"#,
    );
    // 42 + key + 10 x (24 + 7 status intervals x 4 + 3 latency intervals x 4):
    // the status intervals cut at 500 and 600 (ResponseCodeRatio) and at 502,
    // 503, 504 and 505 (NetworkErrorRatio counts 502 and 504); the latency
    // ones at 100 and 101 ms (`LatencyAtQuantileMS(50.0) > 100`).
    assert_eq!(b.encode(&b.fresh("flaky")).len(), 42 + 5 + 10 * (24 + 28 + 12));
    assert_eq!(b.encode(&b.fresh("flaky")).len(), 687);
    let ratio = breakers(r#"{"failure_ratio":0.5}"#);
    assert_eq!(ratio.encode(&ratio.fresh("flaky")).len(), 42 + 5 + 10 * (24 + 4));
    // consecutive_failures alone keeps no window.
    let plain = breakers(r#"{"consecutive_failures":5}"#);
    assert_eq!(plain.encode(&plain.fresh("flaky")).len(), 42 + 5);
}

/// The JSON example in the filter's README is a valid configuration.
#[test]
fn readme_json_example_parses() {
    let readme = include_str!("../../../circuit-breaker/README.md");
    let blocks = crate::testing::json_blocks(readme);
    assert!(!blocks.is_empty(), "no json examples found");
    for json in blocks {
        BreakerConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("README example refused: {e}\n{json}"));
    }
}

#[test]
fn decode_head_matches_the_full_decode() {
    let b = breakers(r#"{"expression":"LatencyAtQuantileMS(50) > 1","min_requests":1000,"consecutive_failures":1}"#);
    let mut r = b.fresh("cluster-x");
    assert_eq!(b.decode_head(&b.encode(&r)), Some(("cluster-x", State::Closed)));
    request(&b, &mut r, T0, fail(&b));
    let bytes = b.encode(&r);
    assert_eq!(b.decode_head(&bytes), Some(("cluster-x", State::Open)));
    assert_eq!(b.decode_head(bytes.get(..20).unwrap()), None);
    assert_eq!(b.decode_head(FREE), None);
}

#[test]
fn nonsense_configurations_are_refused() {
    let e = BreakerConfig::from_json(br#"{"consecutive_failures":5,"open_for":"1ns"}"#).unwrap_err();
    assert_eq!(e.to_string(), "invalid plugin configuration: open_for: must be at least 1ms");
    // A JSON array used to fill the struct positionally.
    let e = BreakerConfig::from_json(br#"["cluster", 256, "10s"]"#).unwrap_err();
    assert_eq!(e.to_string(), "invalid plugin configuration: .: must be a JSON object");
}

/// nginx keeps shared data by the CRC-32 of the key: no two of the breaker
/// table's slot keys may collide, up to the largest table allowed.
#[test]
fn no_two_slot_keys_share_an_nginx_entry() {
    let (mut whole, mut tails) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    for slot in 0..65_536u32 {
        let key = Breakers::slot_key(slot);
        let tail = key.split_once('/').unwrap().1.to_string();
        for (seen, id) in
            [(&mut whole, crate::hash::crc32(key.as_bytes())), (&mut tails, crate::hash::crc32(tail.as_bytes()))]
        {
            if let Some(other) = seen.insert(id, slot) {
                panic!("slots {other} and {slot} share an nginx entry");
            }
        }
    }
}

// ---- a breaker configured as Traefik's ----

const TRAEFIK_5XX: &str = r#"{"traefik":{"expression":"ResponseCodeRatio(500, 600, 0, 600) > 0.5"}}"#;

#[test]
fn traefik_fields_default_as_in_traefik() {
    let c = BreakerConfig::from_json(TRAEFIK_5XX.as_bytes()).unwrap();
    let t = c.traefik.expect("a Traefik breaker");
    assert_eq!(t.check_period_ns, 100 * MS);
    assert_eq!(t.recovery_ns, 10 * S);
    assert_eq!((c.open_for_ns, c.max_open_for_ns), (10 * S, 10 * S), "fallbackDuration, never longer");
    assert_eq!(c.status, 503);
    assert_eq!(c.body.as_deref(), Some("Service Unavailable"));
    assert_eq!(c.content_type, Some("text/plain; charset=utf-8"));
    assert_eq!(c.min_requests, 0, "Traefik has no minimum");
    let c = BreakerConfig::from_json(
        br#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","checkPeriod":"1m30s","fallbackDuration":3,"recoveryDuration":"1.5s","responseCode":429}}"#,
    )
    .unwrap();
    let t = c.traefik.unwrap();
    assert_eq!((t.check_period_ns, c.open_for_ns, t.recovery_ns), (90 * S, 3 * S, 1_500 * MS));
    assert_eq!((c.status, c.body.as_deref()), (429, Some("Too Many Requests")));
}

#[test]
fn traefik_fields_refused_by_name() {
    let cases = [
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5"},"open_for":"5s"}"#,
            "open_for: cannot be combined with traefik",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5"},"min_requests":5}"#,
            "min_requests: cannot be combined with traefik",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","checkPeriod":"0s"}}"#,
            "traefik.checkPeriod: must be longer than zero",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","fallbackDuration":"-1s"}}"#,
            "traefik.fallbackDuration: must be longer than zero",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","recoveryDuration":"10 s"}}"#,
            "traefik.recoveryDuration: \"10 s\" is not a duration",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","recoveryDuration":" 5s "}}"#,
            "traefik.recoveryDuration: \" 5s \" is not a duration",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","fallbackDuration":9223372037}}"#,
            "traefik.fallbackDuration: \"9223372037\" is too large",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","responseCode":200}}"#,
            "traefik.responseCode: must be a 4xx or 5xx",
        ),
        (
            r#"{"traefik":{"expression":"NetworkErrorRate() > 0.5"}}"#,
            "traefik.expression: at column 1: unknown function",
        ),
        (r#"{"traefik":{"checkPeriod":"1s"}}"#, "traefik: missing field `expression`"),
        (
            r#"{"traefik":{"expression":"NetworkErrorRatio() > 0.5","fallback":"1s"}}"#,
            "traefik.fallback: unknown field",
        ),
    ];
    crate::testing::assert_each_refused(BreakerConfig::from_json, &cases);
}

#[test]
fn traefik_checks_at_most_once_per_check_period() {
    let b = breakers(TRAEFIK_5XX);
    let mut r = b.fresh("c");
    // Checked after the first request (its next check is 100 ms later)...
    request(&b, &mut r, T0, ok(&b));
    // ... so failures within the period are recorded but not checked.
    for i in 1..=5 {
        request(&b, &mut r, T0 + i * 10 * MS, fail(&b));
    }
    assert_eq!(r.state, State::Closed, "5 of 6 failed, but the period has not elapsed");
    request(&b, &mut r, T0 + 100 * MS, fail(&b));
    assert_eq!(r.state, State::Closed, "at the period's end exactly: not yet (Traefik checks strictly after)");
    request(&b, &mut r, T0 + 100 * MS + 1, fail(&b));
    assert_eq!(r.state, State::Open);
    assert_eq!(r.until, T0 + 100 * MS + 1 + 10 * S, "open for fallbackDuration");
    assert_eq!(b.config().shape.totals(&r.ring, r.until).requests, 0, "Traefik resets its metrics at a trip");
}

#[test]
fn traefik_recovery_admits_a_growing_share_then_closes() {
    let b = breakers(TRAEFIK_5XX);
    let mut r = b.fresh("c");
    request(&b, &mut r, T0, fail(&b));
    assert_eq!(r.state, State::Open);
    let start = r.until;
    // Open: the whole fallbackDuration, with the time left.
    assert_eq!(b.admit(&mut r, start - S).0, Admission::Reject { retry_after_ns: S, state: State::Open });
    // One request every 10 ms through the 10 s recovery.
    let (mut admitted, mut seen) = (0u64, 0u64);
    let mut shares = Vec::new();
    for i in 0..1000u64 {
        let now = start + i * 10 * MS;
        let (a, _, t) = b.admit(&mut r, now);
        if i == 0 {
            assert_eq!(t, Some(Transition { from: State::Open, to: State::Recovering }));
            assert!(matches!(a, Admission::Reject { state: State::Recovering, .. }), "none at the very start");
        }
        seen += 1;
        if a == Admission::Pass {
            admitted += 1;
            b.complete(&mut r, now, &ok(&b), false);
        }
        if i % 100 == 99 {
            shares.push((i, admitted as f64 / seen as f64));
        }
    }
    assert_eq!(r.state, State::Recovering);
    // The admitted share follows 0.5 x elapsed / recoveryDuration.
    for (i, share) in shares {
        let target = 0.5 * (i * 10) as f64 / 10_000.0;
        assert!((share - target).abs() < 0.01, "after {i} requests: share {share}, target {target}");
    }
    assert!((495..=505).contains(&admitted), "about half of the last moment's traffic: {admitted}");
    // Past recoveryDuration: closed, its window kept (Traefik keeps its metrics).
    let (a, _, t) = b.admit(&mut r, start + 10 * S + 1);
    assert_eq!((a, t), (Admission::Pass, Some(Transition { from: State::Recovering, to: State::Closed })));
    assert!(b.config().shape.totals(&r.ring, start + 10 * S + 1).requests > 400);
}

#[test]
fn traefik_recovery_trips_again_on_the_expression() {
    let b = breakers(TRAEFIK_5XX);
    let mut r = b.fresh("c");
    request(&b, &mut r, T0, fail(&b));
    let start = r.until;
    b.admit(&mut r, start);
    // Halfway through, most requests pass; a failing one trips again,
    // for fallbackDuration (Traefik's open period does not grow).
    let mut now = start + 5 * S;
    while b.admit(&mut r, now).0 != Admission::Pass {
        now += MS;
    }
    let (_, t) = b.complete(&mut r, now, &fail(&b), false);
    assert_eq!(t, Some(Transition { from: State::Recovering, to: State::Open }));
    assert_eq!(r.until, now + 10 * S);
}

#[test]
fn traefik_rejections_answer_with_the_status_text() {
    let b = breakers(r#"{"traefik":{"expression":"ResponseCodeRatio(500, 600, 0, 600) > 0.5","responseCode":502}}"#);
    assert_eq!(b.config().body.as_deref(), Some("Bad Gateway"));
    assert_eq!(reason_for(599), "", "Go names no 599: an empty body, as Traefik's");
}

fn reason_for(status: u16) -> &'static str {
    config::reason_phrase(status)
}

/// Issue 30, defect 10: a free slot is written as long as the longest
/// record (a key of the most bytes kept, the whole window), so creating the
/// table takes the room its records can grow to.
#[test]
fn free_slots_take_the_room_of_the_longest_record() {
    let mut b = breakers(
        r#"{"expression":"LatencyAtQuantileMS(99) > 1 || ResponseCodeRatio(500,600,0,600) > 0.1","buckets":60,"window":"60s","max_breakers":4}"#,
    );
    let longest = b.fresh(&"k".repeat(filter::MAX_KEY_BYTES));
    assert_eq!(b.encode(&longest).len(), b.max_record_len());
    let store = MemoryStore::new(CasRule::NginxStrict);
    b.initialize(&store).unwrap();
    let slot = store.get(&Breakers::slot_key(0)).unwrap().unwrap();
    assert_eq!(slot.value.len(), b.max_record_len());
    assert!(slot.value.len() > 3000, "{}", slot.value.len());
    assert_eq!(b.decode(&slot.value), None, "a free slot");
}
