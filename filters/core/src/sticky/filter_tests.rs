//! The sticky-session filter driven through the recording host: placement,
//! cookie pinning, passive health and failover as its README states them,
//! and the host calls each request makes.

use super::{BackendMetrics, FilterMetrics, StickyFilter};
use crate::host::Flow;
use crate::store::CasRule;
use crate::testing::{Exchange, HostCalls, Outcome};

const CONFIG: &str = r#"{
  "backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"},
              {"name":"c","address":"127.0.0.1:8083"}],
  "session_key":["header:x-session-id"],
  "cookie":{"name":"sticky","secret":"0123456789abcdef-secret"},
  "backend_header":"x-sticky-backend",
  "health":{"failures":3,"eject_for":"30s"}}"#;

const S: u64 = 1_000_000_000;

fn sticky(config: &str) -> Exchange<StickyFilter> {
    let x = Exchange::<StickyFilter>::new(CasRule::Envoy, config).unwrap();
    x.host.set_property("source.address", "192.0.2.1:3000");
    x
}

/// A request with `headers`, answered `status` by the backend at `answered`
/// (`None`: the one the filter chose).
fn send(x: &Exchange<StickyFilter>, headers: &[(&str, &str)], status: u16, answered: Option<&str>) -> Outcome {
    let (mut stream, flow) = x.start(headers);
    let chosen = x.host.upstream_header("x-sticky-upstream");
    // As Envoy reports it: one attempt when the chosen backend answered, two
    // when a retry moved the request elsewhere.
    x.host.set_property_u64("upstream.request_attempt_count", if answered.is_some() { 2 } else { 1 });
    if let Some(address) = answered.map(str::to_string).or(chosen) {
        x.host.set_property("upstream.address", address);
    }
    let code = status.to_string();
    x.finish(&mut stream, flow, Some(&[(":status", code.as_str())]))
}

fn session(x: &Exchange<StickyFilter>, id: &str, status: u16) -> Outcome {
    send(x, &[(":method", "GET"), (":path", "/"), ("x-session-id", id)], status, None)
}

fn backend(out: &Outcome) -> String {
    out.header("x-sticky-backend").unwrap_or_default()
}

#[test]
fn a_session_key_always_lands_on_the_same_backend_and_is_pinned() {
    let x = sticky(CONFIG);
    let first = session(&x, "s1", 200);
    let name = backend(&first);
    assert!(["a", "b", "c"].contains(&name.as_str()));
    let cookie = first.header("set-cookie").unwrap();
    assert!(cookie.starts_with(&format!("sticky=v1.{name}.")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    for _ in 0..5 {
        assert_eq!(backend(&session(&x, "s1", 200)), name);
    }
    let address = first.upstream_header("x-sticky-upstream").unwrap();
    assert!(address.starts_with("127.0.0.1:808"), "{address}");
}

#[test]
fn a_valid_cookie_wins_and_a_forged_one_is_ignored_and_counted() {
    let x = sticky(CONFIG);
    let pinned = session(&x, "s1", 200);
    let name = backend(&pinned);
    let cookie = pinned.header("set-cookie").unwrap();
    let value = cookie.split(';').next().unwrap().to_string();
    // Another session key, but the cookie pins it; no new Set-Cookie.
    let out = send(&x, &[(":method", "GET"), ("x-session-id", "other"), ("cookie", &value)], 200, None);
    assert_eq!(backend(&out), name);
    assert_eq!(out.header("set-cookie"), None);
    let other = if name == "a" { "b" } else { "a" };
    let forged = value.replacen(&format!("v1.{name}."), &format!("v1.{other}."), 1);
    let out = send(&x, &[(":method", "GET"), ("x-session-id", "s1"), ("cookie", &forged)], 200, None);
    assert_eq!(backend(&out), name, "placed by its key again, not by the forged cookie");
    assert!(out.header("set-cookie").is_some(), "re-pinned");
    assert_eq!(x.host.metric("sticky.cookie_rejected"), 1);
}

#[test]
fn a_client_cannot_choose_the_upstream() {
    let x = sticky(CONFIG);
    let out = send(&x, &[(":method", "GET"), ("x-session-id", "s1"), ("x-sticky-upstream", "10.6.6.6:1")], 200, None);
    assert!(out.upstream_header("x-sticky-upstream").unwrap().starts_with("127.0.0.1:"));
}

#[test]
fn failures_in_a_row_eject_a_backend_and_its_sessions_fail_over() {
    let x = sticky(CONFIG);
    let home = backend(&session(&x, "s1", 200));
    for _ in 0..3 {
        assert_eq!(backend(&session(&x, "s1", 503)), home);
    }
    assert_eq!(x.host.metric(&format!("sticky.{home}.ejected")), 1);
    let moved = session(&x, "s1", 200);
    assert_ne!(backend(&moved), home, "failed over");
    assert_eq!(x.host.metric(&format!("sticky.{home}.failovers")), 1);
    // It comes back after eject_for.
    x.host.clock.advance(30 * S);
    assert_eq!(backend(&session(&x, "s1", 200)), home);
}

/// A request in nginx answered `status` after nginx tried `upstream_addr`
/// (`$upstream_addr`); nginx's `upstream.address` is what this module
/// version returns: the address without its port.
fn nginx_session(x: &Exchange<StickyFilter>, id: &str, status: u16, upstream_addr: Option<&str>) -> Outcome {
    let (mut stream, flow) = x.start(&[(":method", "GET"), (":path", "/"), ("x-session-id", id)]);
    let chosen = x.host.upstream_header("x-sticky-upstream").unwrap_or_default();
    x.host.set_property("ngx.upstream_addr", upstream_addr.map_or(chosen, str::to_string));
    x.host.set_property("upstream.address", "127.0.0.1");
    let code = status.to_string();
    x.finish(&mut stream, flow, Some(&[(":status", code.as_str())]))
}

#[test]
fn in_nginx_the_answering_backend_is_the_last_entry_of_upstream_addr() {
    let x = Exchange::<StickyFilter>::new(CasRule::NginxStrict, CONFIG).unwrap();
    x.host.set_property("source.address", "192.0.2.1");
    let home = backend(&nginx_session(&x, "s1", 200, None));
    let home_addr = match home.as_str() {
        "a" => "127.0.0.1:8081",
        "b" => "127.0.0.1:8082",
        _ => "127.0.0.1:8083",
    };
    // nginx had no live upstream: it names the upstream block; no backend
    // answered, nothing is recorded.
    for _ in 0..5 {
        nginx_session(&x, "s1", 502, Some("backend_all"));
    }
    assert_eq!(x.host.metric(&format!("sticky.{home}.ejected")), 0);
    // proxy_next_upstream moved the request off its backend: the backend
    // it was placed on failed it, three times in a row.
    let other = if home_addr.ends_with("8081") { "127.0.0.1:8082" } else { "127.0.0.1:8081" };
    for _ in 0..3 {
        nginx_session(&x, "s1", 200, Some(&format!("{home_addr}, {other}")));
    }
    assert_eq!(x.host.metric(&format!("sticky.{home}.ejected")), 1);
    assert_ne!(backend(&nginx_session(&x, "s1", 200, None)), home, "failed over");
}

#[test]
fn an_ejection_is_seen_by_every_worker() {
    let a = sticky(CONFIG);
    let b = Exchange::<StickyFilter>::on(a.host.worker(), CONFIG).unwrap();
    let home = backend(&session(&a, "s1", 200));
    for _ in 0..3 {
        session(&a, "s1", 503);
    }
    assert_ne!(backend(&session(&b, "s1", 200)), home);
}

#[test]
fn abandoned_requests_do_not_reset_or_add_to_a_streak() {
    let x = sticky(CONFIG);
    let home = backend(&session(&x, "s1", 200));
    session(&x, "s1", 503);
    session(&x, "s1", 503);
    let (mut stream, flow) = x.start(&[(":method", "GET"), ("x-session-id", "s1")]);
    x.finish(&mut stream, flow, None); // the client went away
    session(&x, "s1", 503);
    assert_ne!(backend(&session(&x, "s1", 200)), home, "three failures in a row, the abandoned one aside");
}

#[test]
fn an_answer_from_another_backend_counts_against_the_chosen_one() {
    let x = sticky(CONFIG);
    let home = backend(&session(&x, "s1", 200));
    let elsewhere = if home == "a" { "127.0.0.1:8082" } else { "127.0.0.1:8081" };
    for _ in 0..3 {
        send(&x, &[(":method", "GET"), ("x-session-id", "s1")], 200, Some(elsewhere));
    }
    assert_eq!(x.host.metric(&format!("sticky.{home}.ejected")), 1);
}

/// Issue 30, defect 2: failures answered by another cluster's host (a route
/// the filter does not route for) eject no backend, retried or not.
#[test]
fn failures_from_another_clusters_host_eject_no_backend() {
    let x = sticky(CONFIG);
    let home = backend(&session(&x, "s1", 200));
    for _ in 0..5 {
        let (mut stream, flow) = x.start(&[(":method", "GET"), ("x-session-id", "s1")]);
        x.host.set_property_u64("upstream.request_attempt_count", 1);
        x.host.set_property("upstream.address", "10.9.9.9:9000");
        x.finish(&mut stream, flow, Some(&[(":status", "503")]));
    }
    for _ in 0..3 {
        send(&x, &[(":method", "GET"), ("x-session-id", "s1")], 503, Some("10.9.9.9:9000"));
    }
    for b in ["a", "b", "c"] {
        assert_eq!(x.host.metric(&format!("sticky.{b}.ejected")), 0, "{b} ejected by another cluster's answers");
    }
    assert_eq!(backend(&session(&x, "s1", 200)), home);
    // The session's own backend failing still ejects it.
    for _ in 0..3 {
        session(&x, "s1", 503);
    }
    assert_eq!(x.host.metric(&format!("sticky.{home}.ejected")), 1);
}

#[test]
fn every_backend_down_is_a_503_when_configured() {
    let x = sticky(&CONFIG.replace(r#""backend_header""#, r#""all_down":"503","backend_header""#));
    for id in ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"] {
        for _ in 0..3 {
            session(&x, id, 503);
        }
    }
    let out = session(&x, "s1", 200);
    assert_eq!(out.flow, Flow::Pause);
    let reply = out.reply.unwrap();
    assert_eq!((reply.status, reply.header("retry-after")), (503, Some("1")));
    assert!(x.host.metric("sticky.all_down") >= 1);
}

#[test]
fn no_session_key_falls_back_to_the_client_address() {
    let x = sticky(CONFIG);
    let first = backend(&send(&x, &[(":method", "GET")], 200, None));
    for _ in 0..5 {
        assert_eq!(backend(&send(&x, &[(":method", "GET")], 200, None)), first);
    }
}

/// A request without a pinning cookie under the documented defaults (two
/// backends, keyed on the client address).
pub(crate) fn calls_per_request() -> HostCalls {
    let x = sticky(r#"{"backends":[{"name":"a","address":"127.0.0.1:8081"},{"name":"b","address":"127.0.0.1:8082"}]}"#);
    send(&x, &[(":method", "GET")], 200, None); // the first request also learns which host this is
    send(&x, &[(":method", "GET")], 200, None).calls
}

#[test]
fn host_calls_per_request_are_pinned() {
    // Request callback: every request header, source.address and the chosen
    // backend's health record (bytes); the upstream header set (replacing
    // any a client sent), the clock, the `assigned` counter (nothing).
    // Response callback: the attempt count (one: upstream.address is not
    // needed) and :status (a 200: no flags or code details needed) (bytes).
    // A success on a backend whose record had no failure streak when the
    // request was placed reads and writes nothing, not even the clock.
    assert_eq!(calls_per_request(), HostCalls { returning_bytes: 5, returning_nothing: 3, callbacks_reading: 2 });
}

#[test]
fn the_metrics_table_in_the_readme_matches_the_metrics_defined() {
    crate::testing::assert_metrics_table::<StickyFilter>(
        include_str!("../../../sticky-session/README.md"),
        &[
            ("sticky.<backend>.", BackendMetrics::SUFFIXES),
            ("sticky.", FilterMetrics::SUFFIXES),
            ("sticky.", super::filter::DynamicMetrics::SUFFIXES),
        ],
    );
}

#[test]
fn an_ejection_is_seen_by_every_worker_under_nginx_strict_cas_too() {
    let a = Exchange::<StickyFilter>::new(CasRule::NginxStrict, CONFIG).unwrap();
    let b = Exchange::<StickyFilter>::on(a.host.worker(), CONFIG).unwrap();
    let home = backend(&session(&a, "s1", 200));
    for _ in 0..3 {
        session(&a, "s1", 503);
    }
    assert_ne!(backend(&session(&b, "s1", 200)), home);
    assert_eq!(a.host.metric(&format!("sticky.{home}.ejected")), 1);
}

#[test]
fn requests_the_client_gave_up_on_do_not_keep_a_hanging_backend_in_service() {
    let x = sticky(CONFIG);
    let home = backend(&session(&x, "s1", 200));
    for _ in 0..2 {
        session(&x, "s1", 503);
        // Envoy 1.40: the client left a hung upstream; no code, DC, downstream_remote_disconnect.
        let (mut stream, flow) = x.start(&[(":method", "GET"), ("x-session-id", "s1")]);
        x.host.set_property_u64("response.flags", 0x4000);
        x.host.set_property("response.code_details", "downstream_remote_disconnect");
        x.finish(&mut stream, flow, None);
    }
    session(&x, "s1", 503);
    assert_eq!(x.host.metric(&format!("sticky.{home}.ejected")), 1);
}

#[test]
fn at_most_four_pinning_cookies_are_verified_per_request() {
    let x = sticky(CONFIG);
    let pinned = session(&x, "s1", 200);
    let name = backend(&pinned);
    let valid = pinned.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let forged = "sticky=v1.a.AAAAAAAAAAAAAAAAAAAAAA";
    let late = format!("{forged}; {forged}; {forged}; {forged}; {valid}");
    let out = send(&x, &[(":method", "GET"), ("x-session-id", "other"), ("cookie", &late)], 200, None);
    assert!(out.header("set-cookie").is_some(), "the fifth cookie was not verified: placed afresh");
    let early = format!("{forged}; {valid}");
    let out = send(&x, &[(":method", "GET"), ("x-session-id", "other"), ("cookie", &early)], 200, None);
    assert_eq!(backend(&out), name, "within the first four, a valid cookie still pins");
}

#[test]
fn a_success_still_resets_a_streak_it_saw_at_placement() {
    // Two failures, then a success: the streak is reset, so two more
    // failures do not eject (three in a row would).
    let x = sticky(r#"{"backends":[{"name":"a","address":"127.0.0.1:8081"}],"health":{"failures":3}}"#);
    for status in [500, 500, 200, 500, 500] {
        send(&x, &[(":method", "GET")], status, None);
    }
    assert_eq!(x.host.metric("sticky.a.ejected"), 0);
    send(&x, &[(":method", "GET")], 500, None);
    assert_eq!(x.host.metric("sticky.a.ejected"), 1);
}
