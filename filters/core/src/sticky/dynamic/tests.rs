//! The dynamic mode through the recording host: Envoy's choice learned and
//! pinned, the pin sent as the override, a vanished host re-pinned once,
//! an ejected host left, forged and tampered pins ignored; and the host
//! table's bounds.

use super::*;
use crate::sticky::config::StickyConfig;
use crate::sticky::StickyFilter;
use crate::store::{CasRule, MemoryStore};
use crate::testing::{Exchange, HostCalls, Outcome};

const CONFIG: &str = r#"{
  "session_key": ["header:x-session-id"],
  "cookie": {"name": "sticky", "secret": "0123456789abcdef-secret"},
  "backend_header": "x-sticky-backend",
  "health": {"failures": 3, "eject_for": "30s"}}"#;

fn filter() -> Exchange<StickyFilter> {
    let x = Exchange::<StickyFilter>::new(CasRule::Envoy, CONFIG).unwrap();
    x.host.set_property("source.address", "192.0.2.1:3000");
    x
}

/// A request of session `id` carrying `cookie`, answered `status` by
/// `answered` after `attempts` attempts (what Envoy reports).
fn send(
    x: &Exchange<StickyFilter>,
    id: &str,
    cookie: Option<&str>,
    answered: &str,
    attempts: u64,
    status: u16,
) -> Outcome {
    let mut headers = vec![(":method", "GET"), (":path", "/"), ("x-session-id", id)];
    let cookie_header = cookie.map(|c| format!("sticky={c}"));
    if let Some(c) = &cookie_header {
        headers.push(("cookie", c.as_str()));
    }
    let (mut stream, flow) = x.start(&headers);
    x.host.set_property_u64("upstream.request_attempt_count", attempts);
    x.host.set_property("upstream.address", answered);
    let code = status.to_string();
    x.finish(&mut stream, flow, Some(&[(":status", code.as_str())]))
}

fn pin_of(out: &Outcome) -> Option<String> {
    let c = out.header("set-cookie")?;
    Some(c.strip_prefix("sticky=")?.split(';').next()?.to_string())
}

#[test]
fn a_new_session_is_placed_by_envoys_hash_and_pinned_to_the_host_that_answered() {
    let x = filter();
    let out = send(&x, "s1", None, "10.0.0.7:8080", 1, 200);
    // No override: Envoy's hash places it, on the session key.
    assert_eq!(out.upstream_header("x-sticky-upstream"), None);
    assert_eq!(out.upstream_header("x-sticky-hash-key").as_deref(), Some("header:s1"));
    let pin = pin_of(&out).expect("pinned");
    assert!(pin.starts_with("v2."), "{pin}");
    assert!(out.header("set-cookie").unwrap().contains("HttpOnly"));
    assert_eq!(out.header("x-sticky-backend").as_deref(), Some("10.0.0.7:8080"));
    assert_eq!(x.host.metric("sticky.placed"), 1);
    // Next request: the pin is the override; nothing new is set.
    let again = send(&x, "s1", Some(&pin), "10.0.0.7:8080", 1, 200);
    assert_eq!(again.upstream_header("x-sticky-upstream").as_deref(), Some("10.0.0.7:8080"));
    assert_eq!(again.header("set-cookie"), None);
    assert_eq!(x.host.metric("sticky.pinned"), 1);
}

#[test]
fn a_vanished_host_is_replaced_once_and_a_retry_does_not_move_the_session() {
    let x = filter();
    let pin = pin_of(&send(&x, "s1", None, "10.0.0.7:8080", 1, 200)).unwrap();
    // Envoy no longer has the host: one attempt, another host answered.
    let moved = send(&x, "s1", Some(&pin), "10.0.0.9:8080", 1, 200);
    let new_pin = pin_of(&moved).expect("re-pinned");
    assert_ne!(new_pin, pin);
    assert_eq!(x.host.metric("sticky.repinned"), 1);
    // Stays there, without further cookies.
    let stays = send(&x, "s1", Some(&new_pin), "10.0.0.9:8080", 1, 200);
    assert_eq!(stays.upstream_header("x-sticky-upstream").as_deref(), Some("10.0.0.9:8080"));
    assert_eq!(stays.header("set-cookie"), None);
    // A retry moved one request away (two attempts): no re-pin.
    let retried = send(&x, "s1", Some(&new_pin), "10.0.0.3:8080", 2, 200);
    assert_eq!(retried.header("set-cookie"), None);
    assert_eq!(x.host.metric("sticky.repinned"), 1);
}

#[test]
fn a_failing_pinned_host_is_ejected_and_its_sessions_move() {
    let x = filter();
    let pin = pin_of(&send(&x, "s1", None, "10.0.0.7:8080", 1, 200)).unwrap();
    for _ in 0..3 {
        let out = send(&x, "s1", Some(&pin), "10.0.0.7:8080", 1, 503);
        assert_eq!(out.upstream_header("x-sticky-upstream").as_deref(), Some("10.0.0.7:8080"));
        assert_eq!(out.header("set-cookie"), None, "a failure pins nothing");
    }
    assert_eq!(x.host.metric("sticky.ejected"), 1);
    // Ejected: no override, a salted hash key; the new host is pinned.
    let out = send(&x, "s1", Some(&pin), "10.0.0.8:8080", 1, 200);
    assert_eq!(out.upstream_header("x-sticky-upstream"), None);
    assert_eq!(out.upstream_header("x-sticky-hash-key").as_deref(), Some("header:s1|after:10.0.0.7:8080"));
    let new_pin = pin_of(&out).expect("re-pinned");
    let back = send(&x, "s1", Some(&new_pin), "10.0.0.8:8080", 1, 200);
    assert_eq!(back.upstream_header("x-sticky-upstream").as_deref(), Some("10.0.0.8:8080"));
    // Another session still pinned to the ejected host moves too: to the
    // host this worker has now seen answer well, named as the override.
    let other = send(&x, "s2", Some(&pin), "10.0.0.8:8080", 1, 200);
    assert_eq!(other.upstream_header("x-sticky-upstream").as_deref(), Some("10.0.0.8:8080"));
    assert!(pin_of(&other).is_some());
}

#[test]
fn forged_tampered_and_foreign_pins_are_ignored_and_counted() {
    let x = filter();
    let pin = pin_of(&send(&x, "s1", None, "10.0.0.7:8080", 1, 200)).unwrap();
    let unsigned = format!("v2.{}", base64url(b"10.0.0.66:8080"));
    let mut tampered = pin.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_secret = DynamicMode::new(
        match StickyConfig::from_json(br#"{"cookie":{"name":"sticky","secret":"another-secret-of-16+"}}"#).unwrap() {
            StickyConfig::Dynamic(c) => c,
            StickyConfig::Static(_) => unreachable!(),
        },
    )
    .pin_value("10.0.0.66:8080".parse().unwrap(), None);
    let static_pin = "v1.a.4gPJoRIwD8P-YKPkb-k_Jw".to_string();
    for (n, forged) in [unsigned, tampered, other_secret, static_pin, "v2.!!".to_string()].iter().enumerate() {
        let out = send(&x, "s9", Some(forged), "10.0.0.5:8080", 1, 200);
        assert_eq!(out.upstream_header("x-sticky-upstream"), None, "{forged} was obeyed");
        assert!(pin_of(&out).is_some(), "{forged}: not re-pinned");
        assert_eq!(x.host.metric("sticky.cookie_rejected"), n as u64 + 1);
    }
    // A client-sent override or hash key is replaced.
    let (_, _) = x.start(&[(":path", "/"), ("x-sticky-upstream", "10.6.6.6:1"), ("x-sticky-hash-key", "mine")]);
    assert_eq!(x.host.upstream_header("x-sticky-upstream"), None);
    assert_eq!(x.host.upstream_header("x-sticky-hash-key").as_deref(), Some("peer:192.0.2.1"));
}

#[test]
fn pins_name_one_canonical_address() {
    let d = match StickyConfig::from_json(CONFIG.as_bytes()).unwrap() {
        StickyConfig::Dynamic(c) => DynamicMode::new(c),
        StickyConfig::Static(_) => unreachable!(),
    };
    let v6: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
    assert_eq!(d.verify(&d.pin_value(v6, None)), Some(Pin { host: v6, cluster: None }));
    let bound = d.verify(&d.pin_value(v6, Some("backend"))).unwrap();
    assert_eq!((bound.host, bound.cluster), (v6, Some(cluster_id("backend"))));
    // A validly signed value that is not a canonical ip:port is refused.
    let signer = Signer::new(Some(b"0123456789abcdef-secret"));
    for text in ["10.0.0.1:080", "10.0.0.1", "host:80", "010.0.0.1:80"] {
        let value = signer.value_with(PIN_PREFIX, &base64url(text.as_bytes()));
        assert_eq!(d.verify(&value), None, "{text}");
    }
}

#[test]
fn the_host_table_is_bounded_and_a_busy_slot_leaves_a_host_untracked() {
    let cfg = r#"{"cookie":{"name":"s","secret":"0123456789abcdef-secret"},"max_hosts":1,"health":{"failures":2}}"#;
    let d = match StickyConfig::from_json(cfg.as_bytes()).unwrap() {
        StickyConfig::Dynamic(c) => DynamicMode::new(c),
        StickyConfig::Static(_) => unreachable!(),
    };
    let store = MemoryStore::new(CasRule::NginxStrict);
    assert_eq!(d.initialize(&store).unwrap(), 1);
    let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
    assert_eq!(d.record(&store, a, 1, true).unwrap(), Recorded::Nothing);
    // The only slot holds a's streak: b is not tracked.
    assert_eq!(d.record(&store, b, 2, true).unwrap(), Recorded::Untracked);
    assert_eq!(d.health(&store, b).unwrap(), None);
    assert_eq!(d.record(&store, a, 3, true).unwrap(), Recorded::Ejected);
    assert!(!d.health(&store, a).unwrap().unwrap().up(4));
    // Once a's ejection is over and its streak clean, b takes the slot.
    let later = 3 + 30_000_000_000;
    assert_eq!(d.record(&store, b, later, true).unwrap(), Recorded::Nothing);
    assert_eq!(d.health(&store, a).unwrap(), None);
    assert_eq!(d.health(&store, b).unwrap().unwrap().failures, 1);
    // However many hosts come, one slot.
    for i in 0..1000u32 {
        let h: SocketAddr = format!("10.1.{}.{}:80", i / 250, i % 250).parse().unwrap();
        let _ = d.record(&store, h, later + 1, true);
    }
    assert_eq!(store.len(), 1);
}

#[test]
fn static_only_and_dynamic_only_fields_are_refused_by_name() {
    let cases = [
        (
            r#"{"cookie":{"secret":"0123456789abcdef-secret"},"hashing":"ketama"}"#,
            "hashing: applies only with backends",
        ),
        (
            r#"{"cookie":{"secret":"0123456789abcdef-secret"},"table_size":101}"#,
            "table_size: applies only with backends",
        ),
        (r#"{"cookie":{"secret":"0123456789abcdef-secret"},"all_down":"503"}"#, "all_down: applies only with backends"),
        (
            r#"{"cookie":{"secret":"0123456789abcdef-secret"},"repin_on_failover":true}"#,
            "repin_on_failover: applies only",
        ),
        (r#"{"session_key":["client_ip"]}"#, "cookie: is required without backends"),
        (r#"{"cookie":{"secret":"0123456789abcdef-secret"},"max_hosts":0}"#, "max_hosts: must be 1 to 65536"),
        (
            r#"{"cookie":{"secret":"0123456789abcdef-secret"},"hash_header":"x-sticky-upstream"}"#,
            "hash_header: \"x-sticky-upstream\" is also",
        ),
        (
            r#"{"backends":[{"name":"a","address":"10.0.0.1:80"}],"max_hosts":8}"#,
            "max_hosts: applies only without backends",
        ),
        (
            r#"{"backends":[{"name":"a","address":"10.0.0.1:80"}],"hash_header":"x-k"}"#,
            "hash_header: applies only without backends",
        ),
    ];
    for (json, expected) in cases {
        let got = StickyConfig::from_json(json.as_bytes()).map(|_| ()).unwrap_err().to_string();
        assert!(got.contains(expected), "{json}: {got}");
    }
}

/// A pinned request under the sample's dynamic configuration (no backend
/// header), answered 200 by its pinned host.
#[test]
fn host_calls_per_request_are_pinned() {
    let x = Exchange::<StickyFilter>::new(
        CasRule::Envoy,
        r#"{"session_key":["header:x-session-id"],"cookie":{"name":"sticky","secret":"0123456789abcdef-secret"}}"#,
    )
    .unwrap();
    let pin = pin_of(&send(&x, "s1", None, "10.0.0.7:8080", 1, 200)).unwrap();
    let calls = send(&x, "s1", Some(&pin), "10.0.0.7:8080", 1, 200).calls;
    // Request callback: every request header, source.address (the client_ip
    // fallback) and the pinned host's health slot (bytes); the clock, the
    // override and hash headers set, the `pinned` counter (nothing).
    // Response callback: upstream.address, :status and the attempt count
    // (bytes); the clock (the host noted as answering well). A success on a
    // host whose slot showed no failure streak reads and writes nothing more.
    assert_eq!(calls, HostCalls { returning_bytes: 6, returning_nothing: 5, callbacks_reading: 2 });
}

/// Issue 30, defect 1: with two routes to two clusters, a pinned session's
/// request answered by the other cluster's host neither re-pins the session
/// nor charges its pinned host; back on its own route it goes to its pin.
#[test]
fn an_answer_from_another_cluster_neither_moves_nor_charges_the_session() {
    let x = filter();
    x.host.set_property("xds.cluster_name", "backend");
    let pin = pin_of(&send(&x, "s1", None, "10.0.0.7:8080", 1, 200)).unwrap();
    // The other route: cluster "other", its host 10.0.1.1 answers (one
    // attempt, then a retry moving it within that cluster).
    x.host.set_property("xds.cluster_name", "other");
    let there = send(&x, "s1", Some(&pin), "10.0.1.1:9000", 1, 200);
    assert_eq!(there.header("set-cookie"), None, "re-pinned to another cluster's host");
    for _ in 0..3 {
        send(&x, "s1", Some(&pin), "10.0.1.2:9000", 2, 200);
    }
    assert_eq!(x.host.metric("sticky.repinned"), 0);
    assert_eq!(x.host.metric("sticky.ejected"), 0, "the pinned host was charged for another cluster's retries");
    // Back on its own route: still pinned to its host.
    x.host.set_property("xds.cluster_name", "backend");
    let home = send(&x, "s1", Some(&pin), "10.0.0.7:8080", 1, 200);
    assert_eq!(home.upstream_header("x-sticky-upstream").as_deref(), Some("10.0.0.7:8080"));
    // In its own cluster, a vanished host still re-pins once.
    let moved = send(&x, "s1", Some(&pin), "10.0.0.9:8080", 1, 200);
    assert!(pin_of(&moved).is_some());
    assert_eq!(x.host.metric("sticky.repinned"), 1);
}
