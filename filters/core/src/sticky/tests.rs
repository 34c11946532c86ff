use super::*;
use crate::store::{CasRule, MemoryStore};
use proptest::prelude::*;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * S;

fn sticky(json: &str) -> StaticMode {
    StaticMode::new(StaticConfig::from_json(json.as_bytes()).unwrap())
}

const THREE: &str = r#"{"backends":[
    {"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"},{"name":"c","address":"127.0.0.1:8083"}],
    "session_key":["cookie:JSESSIONID","header:x-session","query:sid","client_ip"],
    "cookie":{"name":"sticky","secret":"0123456789abcdef-secret","max_age":"1h"}}"#;

fn req(headers: &[(&str, &str)]) -> RequestView {
    req_path("/", headers)
}

fn req_path(path: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut h = vec![(":method".to_string(), "GET".to_string()), (":path".to_string(), path.to_string())];
    h.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RequestView::new(h, Some("198.51.100.7:4444".into()))
}

fn all_up(_: usize) -> bool {
    true
}

fn cookie_of(choice: &Choice) -> String {
    let set = choice.set_cookie.clone().unwrap();
    set.split(';').next().unwrap().to_string()
}

#[test]
fn same_key_same_backend_and_keys_spread() {
    let s = sticky(THREE);
    let mut counts = [0usize; 3];
    for k in 0..3000 {
        let key = format!("session-{k}");
        let first = s.choose(&req(&[("x-session", &key)]), &mut all_up, 0).unwrap();
        for _ in 0..3 {
            assert_eq!(s.choose(&req(&[("x-session", &key)]), &mut all_up, 0).unwrap().backend, first.backend);
        }
        counts[first.backend] += 1;
    }
    assert!(counts.iter().all(|&c| (800..=1200).contains(&c)), "{counts:?}");
}

#[test]
fn sources_are_tried_in_order() {
    let s = sticky(THREE);
    assert_eq!(s.session_key(&req(&[("cookie", "JSESSIONID=abc"), ("x-session", "h")])), Some("cookie:abc".into()));
    assert_eq!(s.session_key(&req(&[("x-session", "h")])), Some("header:h".into()));
    assert_eq!(s.session_key(&req_path("/x?a=1&sid=q1#frag", &[])), Some("query:q1".into()));
    assert_eq!(s.session_key(&req(&[])), Some("ip:198.51.100.7".into()));
}

#[test]
fn pinning_cookie_is_set_signed_and_honoured() {
    let s = sticky(THREE);
    let first = s.choose(&req(&[("x-session", "u1")]), &mut all_up, 0).unwrap();
    let set = first.set_cookie.clone().unwrap();
    assert!(set.contains("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"), "{set}");
    let cookie = cookie_of(&first);
    // With the cookie, even another key goes to the pinned backend, and no new cookie is set.
    let again = s.choose(&req(&[("cookie", &cookie), ("x-session", "someone-else")]), &mut all_up, 0).unwrap();
    assert_eq!((again.backend, again.source, again.set_cookie), (first.backend, Source::Cookie, None));
}

#[test]
fn forged_or_tampered_cookies_are_rejected_and_reassigned() {
    let s = sticky(THREE);
    let honest = s.choose(&req(&[("x-session", "u2")]), &mut all_up, 0).unwrap();
    let other = (honest.backend + 1) % 3;
    let forged = format!("sticky=v1.{}.AAAAAAAAAAAAAAAAAAAAAA", s.name(other));
    let unsigned = format!("sticky=v1.{}", s.name(other));
    let unknown = format!("sticky={}", Signer::new(Some(b"0123456789abcdef-secret")).value("zzz"));
    for bad in [forged, unsigned, unknown, "sticky=%%%".to_string()] {
        let c = s.choose(&req(&[("cookie", &bad), ("x-session", "u2")]), &mut all_up, 0).unwrap();
        assert!(c.cookie_rejected, "{bad}");
        assert_eq!(c.backend, honest.backend, "{bad} moved the session");
        assert!(c.set_cookie.is_some(), "re-pinned");
    }
}

#[test]
fn a_down_backend_moves_only_its_sessions_and_they_come_back() {
    let s = sticky(THREE);
    let keys: Vec<String> = (0..600).map(|k| format!("s{k}")).collect();
    let home: Vec<usize> =
        keys.iter().map(|k| s.choose(&req(&[("x-session", k)]), &mut all_up, 0).unwrap().backend).collect();
    let down = 1usize;
    for (k, &h) in keys.iter().zip(&home) {
        let c = s.choose(&req(&[("x-session", k)]), &mut |i| i != down, 0).unwrap();
        if h == down {
            assert_ne!(c.backend, down);
            assert_eq!(c.failed_over_from, Some(down));
        } else {
            assert_eq!(c.backend, h, "a session of a healthy backend moved");
        }
    }
    // Pinned sessions fail over too, keep their cookie (no repin), and return.
    let pinned = keys.iter().zip(&home).find(|(_, &h)| h == down).map(|(k, _)| k.clone()).unwrap();
    let cookie = cookie_of(&s.choose(&req(&[("x-session", &pinned)]), &mut all_up, 0).unwrap());
    let during = s.choose(&req(&[("cookie", &cookie), ("x-session", &pinned)]), &mut |i| i != down, 0).unwrap();
    assert_ne!(during.backend, down);
    assert_eq!(during.set_cookie, None, "without repin_on_failover the cookie is kept");
    let after = s.choose(&req(&[("cookie", &cookie), ("x-session", &pinned)]), &mut all_up, 0).unwrap();
    assert_eq!(after.backend, down);
}

#[test]
fn repin_on_failover_moves_sessions_for_good() {
    let s = sticky(&THREE.replace("\"max_age\":\"1h\"}", "\"max_age\":\"1h\"},\"repin_on_failover\":true"));
    let first = s.choose(&req(&[("x-session", "u9")]), &mut all_up, 0).unwrap();
    let cookie = cookie_of(&first);
    let moved = s.choose(&req(&[("cookie", &cookie)]), &mut |i| i != first.backend, 0).unwrap();
    assert!(moved.set_cookie.unwrap().contains(&format!("v1.{}.", s.name(moved.backend))));
}

#[test]
fn all_down_fails_open_or_503() {
    let s = sticky(THREE);
    let hashed = s.choose(&req(&[("x-session", "u3")]), &mut all_up, 0).unwrap().backend;
    assert_eq!(s.choose(&req(&[("x-session", "u3")]), &mut |_| false, 0).unwrap().backend, hashed);
    let strict = sticky(&THREE.replace("\"max_age\":\"1h\"}", "\"max_age\":\"1h\"},\"all_down\":\"503\""));
    assert_eq!(strict.choose(&req(&[("x-session", "u3")]), &mut |_| false, 0), Err(AllBackendsDown));
}

#[test]
fn random_fallback_uses_the_seed() {
    let s = sticky(
        r#"{"backends":[{"name":"a","address":"127.0.0.1:1"},{"name":"b","address":"127.0.0.1:2"}],"session_key":["header:x-s"],"fallback":"random"}"#,
    );
    let picks: std::collections::HashSet<usize> =
        (0..64u64).map(|r| s.choose(&req(&[]), &mut all_up, r).unwrap().backend).collect();
    assert_eq!(picks.len(), 2);
}

#[test]
fn health_ejects_after_failures_in_a_row_and_recovers() {
    let s = sticky(
        &THREE.replace("\"max_age\":\"1h\"}", "\"max_age\":\"1h\"},\"health\":{\"failures\":3,\"eject_for\":\"10s\"}"),
    );
    let store = MemoryStore::new(CasRule::NginxStrict);
    assert_eq!(s.initialize(&store).unwrap(), 3);
    assert!(!s.record(&store, 0, T0, true).unwrap());
    assert!(!s.record(&store, 0, T0, false).unwrap(), "a success resets the streak");
    assert!(!s.record(&store, 0, T0, true).unwrap());
    assert!(!s.record(&store, 0, T0, true).unwrap());
    assert!(s.record(&store, 0, T0, true).unwrap(), "third failure in a row ejects");
    let h = s.health(&store, 0).unwrap();
    assert!(!h.up(T0 + 9 * S) && h.up(T0 + 10 * S));
    assert!(!s.record(&store, 0, T0 + S, true).unwrap(), "late failures do not extend the ejection");
    assert_eq!(s.health(&store, 0).unwrap().down_until, T0 + 10 * S);
}

#[test]
fn each_bad_config_names_its_field() {
    let cases = [
        (r#"{"backends":[]}"#, "backends: must hold at least one backend"),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"},{"name":"a","address":"127.0.0.1:2"}]}"#,
            "backends[1].name: \"a\" is used by another backend",
        ),
        (
            r#"{"backends":[{"name":"a","address":"localhost:80"}]}"#,
            "backends[0].address: \"localhost:80\" is not ip:port",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1","weight":0}]}"#,
            "backends[0].weight: must be between 1 and 1000",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"table_size":65536}"#,
            "table_size: 65536 is not a prime",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"cookie":{"name":"s"}}"#,
            "cookie.secret: is required while cookie.sign is true",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"cookie":{"secret":"short"}}"#,
            "cookie.secret: must be at least 16 characters",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"session_key":["url"]}"#,
            "session_key[0]: unknown source \"url\"",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"all_down":"panic"}"#,
            "all_down: unknown variant `panic`",
        ),
        (
            r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"cookie":{"sign":false,"same_site":"None"}}"#,
            "cookie.same_site: None needs secure: true",
        ),
        (r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}],"colour":1}"#, "colour: unknown field `colour`"),
    ];
    crate::testing::assert_each_refused(StaticConfig::from_json, &cases);
}

proptest! {
    /// Every key maps to a live backend whenever one is live.
    #[test]
    fn every_key_maps_to_a_live_backend(key in "[a-z0-9]{1,24}", down_mask in 0u8..7, ketama in any::<bool>()) {
        let json = if ketama { THREE.replace("\"cookie\":", "\"hashing\":\"ketama\",\"cookie\":") } else { THREE.to_string() };
        let s = sticky(&json);
        let up = |i: usize| down_mask & (1 << i) == 0;
        let c = s.choose(&req(&[("x-session", &key)]), &mut |i| up(i), 0).unwrap();
        prop_assert!(up(c.backend), "chose down backend {} with mask {down_mask}", c.backend);
    }
}

/// The JSON example in the filter's README is a valid configuration.
#[test]
fn readme_json_example_parses() {
    let readme = include_str!("../../../sticky-session/README.md");
    let blocks = crate::testing::json_blocks(readme);
    assert!(!blocks.is_empty(), "no json examples found");
    for json in blocks {
        crate::sticky::config::StickyConfig::from_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("README example refused: {e}\n{json}"));
    }
}

/// Adding a backend moves no pinned session; unpinned keys move only to the
/// new backend (about 1/N of them).
#[test]
fn adding_a_backend_keeps_pinned_sessions() {
    let before = sticky(THREE);
    let four = THREE.replace(
        r#"{"name":"c","address":"127.0.0.1:8083"}]"#,
        r#"{"name":"c","address":"127.0.0.1:8083"},{"name":"d","address":"127.0.0.1:8084"}]"#,
    );
    assert_ne!(four, THREE);
    let after = sticky(&four);
    let (mut moved_unpinned, mut to_new) = (0, 0);
    for k in 0..1000 {
        let key = format!("k{k}");
        let first = before.choose(&req(&[("x-session", &key)]), &mut all_up, 0).unwrap();
        let cookie = cookie_of(&first);
        let pinned = after.choose(&req(&[("cookie", &cookie), ("x-session", &key)]), &mut all_up, 0).unwrap();
        assert_eq!(after.name(pinned.backend), before.name(first.backend), "a pinned session moved");
        let unpinned = after.choose(&req(&[("x-session", &key)]), &mut all_up, 0).unwrap();
        if after.name(unpinned.backend) != before.name(first.backend) {
            moved_unpinned += 1;
            to_new += usize::from(after.name(unpinned.backend) == "d");
        }
    }
    assert!((150..=350).contains(&moved_unpinned), "{moved_unpinned} of 1000 unpinned keys moved");
    assert!(
        to_new * 100 >= moved_unpinned * 97,
        "keys moved between old backends: {to_new} of {moved_unpinned} went to d"
    );
}

#[test]
fn zero_durations_are_refused_where_they_would_silently_do_nothing() {
    let base = r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}]"#;
    let cases = [
        (format!(r#"{base},"health":{{"eject_for":"0s"}}}}"#), "health.eject_for: must be longer than zero"),
        (
            format!(r#"{base},"cookie":{{"max_age":"0s","secret":"0123456789abcdef"}}}}"#),
            "cookie.max_age: must be longer than zero",
        ),
    ];
    for (json, want) in cases {
        let got = StaticConfig::from_json(json.as_bytes()).map(|_| ()).unwrap_err().to_string();
        assert!(got.ends_with(want), "{json}: {got}");
    }
}

fn backends_json(n: usize, weight: impl Fn(usize) -> u32) -> String {
    let list: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name":"b{i}","address":"10.0.{}.{}:80","weight":{}}}"#, i / 250, i % 250 + 1, weight(i)))
        .collect();
    list.join(",")
}

#[test]
fn hash_tables_too_costly_to_build_are_refused_with_the_limit() {
    let refused = |json: String, want: &str| {
        let got = StaticConfig::from_json(json.as_bytes()).map(|_| ()).unwrap_err().to_string();
        assert!(got.contains(want), "{got}");
    };
    // 164M ketama points made the VM's configure fail with no field line.
    refused(
        format!(r#"{{"backends":[{}],"hashing":"ketama"}}"#, backends_json(1024, |_| 1000)),
        "backends: weights adding up to 1024000 need 163840000 ketama points, more than 1048576",
    );
    refused(format!(r#"{{"backends":[{}],"hashing":"ketama"}}"#, backends_json(64, |_| 1000)), "ketama points");
    // One heavy backend among many light ones: Maglev's build loops for long.
    refused(
        format!(r#"{{"backends":[{}],"table_size":1000003}}"#, backends_json(1024, |i| if i == 0 { 1000 } else { 1 })),
        "steps to build the Maglev table",
    );
    // What it costs to stay under the limits is fine.
    let ok = |json: String| StaticConfig::from_json(json.as_bytes()).map(|_| ()).unwrap();
    ok(format!(r#"{{"backends":[{}],"hashing":"ketama"}}"#, backends_json(64, |_| 100)));
    ok(format!(r#"{{"backends":[{}],"table_size":1000003}}"#, backends_json(1024, |_| 1000)));
}

#[test]
fn headers_the_filter_must_not_write_are_refused() {
    let base = r#"{"backends":[{"name":"a","address":"127.0.0.1:1"}]"#;
    for (extra, want) in [
        (
            r#""backend_header":"content-length""#,
            "backend_header: \"content-length\" is a header the filter must not write",
        ),
        (r#""backend_header":"Set-Cookie""#, "backend_header: \"Set-Cookie\" is a header the filter must not write"),
        (r#""upstream_header":"host""#, "upstream_header: \"host\" is a header the filter must not write"),
        (r#""upstream_header":":authority""#, "upstream_header: must be a header name"),
        (
            r#""session_key":["header:x-session"],"upstream_header":"X-Session""#,
            "upstream_header: \"x-session\" is also a session_key source: the filter would overwrite the session id",
        ),
        (
            r#""cookie":{"secret":"0123456789abcdef","max_age":"500ms"}"#,
            "cookie.max_age: must be at least 1s (Max-Age=0 deletes the cookie)",
        ),
    ] {
        let json = format!("{base},{extra}}}");
        let got = StaticConfig::from_json(json.as_bytes()).map(|_| ()).unwrap_err().to_string();
        assert!(got.ends_with(want), "{json}: {got}");
    }
}

#[test]
fn backends_whose_health_records_nginx_would_merge_are_refused() {
    let json = r#"{"backends":[{"name":"pxpkadu","address":"127.0.0.1:1"},{"name":"jwccnw","address":"127.0.0.1:2"}]}"#;
    let got = StaticConfig::from_json(json.as_bytes()).map(|_| ()).unwrap_err().to_string();
    assert!(
        got.contains("backends[1].name: \"jwccnw\" and \"pxpkadu\" would share one health record in nginx"),
        "{got}"
    );
}
