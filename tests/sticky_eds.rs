//! Sticky sessions over endpoints that change, in a real Envoy
//! (`--concurrency 2`): the cluster's endpoints come from EDS in a file
//! Envoy watches (envoy/sticky-session-eds.yaml), and the test rewrites it
//! while sessions run. Sessions stick while the set is stable; a host added
//! moves no pinned session; a host removed moves only its sessions, each
//! exactly once, with no failed request; a host that starts failing is left
//! by its sessions after the configured failures; forged and tampered pins
//! are ignored.

use filters_core::sticky::cookie::base64url;
use integration_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

integration_tests::both_builds!(
    sessions_stick_while_endpoints_come_and_go,
    a_failing_host_is_left_by_its_sessions_after_the_configured_failures,
    forged_and_tampered_pins_are_ignored,
    a_request_to_another_clusters_route_does_not_move_the_session,
);

/// Writes the EDS file naming `hosts` (a new file renamed over the old one:
/// Envoy reloads on the move into the watched directory).
fn write_eds(dir: &Path, hosts: &[SocketAddr], version: u32) {
    let endpoints: String = hosts
        .iter()
        .map(|h| {
            format!(
                "    - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                h.ip(),
                h.port()
            )
        })
        .collect();
    let text = format!(
        "version_info: \"{version}\"\nresources:\n- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  cluster_name: sticky\n  endpoints:\n  - lb_endpoints:\n{endpoints}"
    );
    let tmp = dir.join(".sticky-endpoints.yaml.tmp");
    std::fs::write(&tmp, text).expect("write eds");
    std::fs::rename(&tmp, dir.join("sticky-endpoints.yaml")).expect("rename eds");
}

fn wait_for_members(envoy: &Envoy, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while envoy.stat("cluster.sticky.membership_total") != Some(n) {
        assert!(Instant::now() < deadline, "Envoy did not see {n} endpoints:\n{}", envoy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Session {
    pin: Option<String>,
    host: String,
}

/// One request of session `id`: its status, the host that answered, and
/// the pin it was given (a `Set-Cookie`), if any.
fn request(envoy: &Envoy, id: &str, pin: Option<&str>) -> (u16, String, Option<String>) {
    let cookie = pin.map(|p| format!("sticky={p}"));
    let mut headers = vec![("x-session-id", id)];
    if let Some(c) = &cookie {
        headers.push(("cookie", c.as_str()));
    }
    let r = Conn::open(envoy.addr).and_then(|mut c| c.get("/", &headers)).expect("request through envoy");
    let host = r.header("x-sticky-backend").unwrap_or_default().to_string();
    let new_pin = r
        .header("set-cookie")
        .and_then(|c| c.strip_prefix("sticky="))
        .and_then(|c| c.split(';').next())
        .map(str::to_string);
    (r.status, host, new_pin)
}

/// The sample config, reading its endpoints from `dir`.
fn eds_sample(build: Build, dir: &Path) -> String {
    sample_config_for(build, "sticky-session-eds.yaml", &[], None)
        .replace(
            "path: envoy/eds/sticky-endpoints.yaml",
            &format!("path: {}", dir.join("sticky-endpoints.yaml").display()),
        )
        .replace("watched_directory: { path: envoy/eds }", &format!("watched_directory: {{ path: {} }}", dir.display()))
}

fn start(build: Build) -> (Backends, Envoy, std::path::PathBuf) {
    let backends = Backends::start(&["a", "b", "c", "d"]);
    let dir = scratch_dir("eds");
    let addrs = backends.addrs();
    write_eds(&dir, &addrs[..3], 1);
    let yaml = eds_sample(build, &dir);
    let envoy = Envoy::start(&yaml, 2);
    wait_for_members(&envoy, 3);
    (backends, envoy, dir)
}

fn open_sessions(envoy: &Envoy, n: usize) -> BTreeMap<String, Session> {
    let mut sessions = BTreeMap::new();
    for i in 0..n {
        let id = format!("s{i}");
        let (status, host, pin) = request(envoy, &id, None);
        assert_eq!(status, 200, "{id}");
        assert!(pin.is_some(), "{id}: no pin on the first request");
        sessions.insert(id, Session { pin, host });
    }
    sessions
}

/// Every session, once more: (moved sessions, pins given, failed requests).
fn round(envoy: &Envoy, sessions: &mut BTreeMap<String, Session>) -> (BTreeSet<String>, usize, usize) {
    let (mut moved, mut pins, mut failed) = (BTreeSet::new(), 0, 0);
    for (id, s) in sessions.iter_mut() {
        let (status, host, pin) = request(envoy, id, s.pin.as_deref());
        if status != 200 {
            failed += 1;
            continue;
        }
        if host != s.host {
            moved.insert(id.clone());
            s.host = host;
        }
        if let Some(p) = pin {
            pins += 1;
            s.pin = Some(p);
        }
    }
    (moved, pins, failed)
}

fn sessions_stick_while_endpoints_come_and_go(build: Build) {
    let (backends, envoy, dir) = start(build);
    let addrs = backends.addrs();
    let mut sessions = open_sessions(&envoy, 60);
    let hosts: BTreeSet<&str> = sessions.values().map(|s| s.host.as_str()).collect();
    assert!(hosts.len() >= 2, "Envoy's hash put every session on one host: {hosts:?}");

    // Stable set: nothing moves, no new pins.
    for _ in 0..3 {
        assert_eq!(round(&envoy, &mut sessions), (BTreeSet::new(), 0, 0));
    }

    // A host added: no pinned session moves; new sessions may land on it.
    write_eds(&dir, &addrs, 2);
    wait_for_members(&envoy, 4);
    assert_eq!(round(&envoy, &mut sessions), (BTreeSet::new(), 0, 0), "a pinned session moved when a host was added");
    let d = addrs[3].to_string();
    let newcomers = (0..60).filter(|i| request(&envoy, &format!("n{i}"), None).1 == d).count();
    assert!(newcomers > 0, "no new session went to the added host");

    // A host removed: only its sessions move, each once, and nothing fails.
    let b = addrs[1].to_string();
    let on_b: BTreeSet<String> = sessions.iter().filter(|(_, s)| s.host == b).map(|(id, _)| id.clone()).collect();
    assert!(!on_b.is_empty(), "no session on {b} to move");
    write_eds(&dir, &[addrs[0], addrs[2], addrs[3]], 3);
    wait_for_members(&envoy, 3);
    let (moved, pins, failed) = round(&envoy, &mut sessions);
    assert_eq!((moved.clone(), failed), (on_b.clone(), 0), "other sessions moved, or requests failed");
    assert_eq!(pins, on_b.len(), "each moved session is re-pinned once");
    assert_eq!(round(&envoy, &mut sessions), (BTreeSet::new(), 0, 0), "a re-pinned session moved again");
    assert!(envoy.stat(&build.stat_name("sticky.repinned")).unwrap_or(0) >= on_b.len() as u64);
    println!(
        "{} sessions: {} moved off the removed host, each re-pinned once; none failed",
        sessions.len(),
        moved.len()
    );
}

fn a_failing_host_is_left_by_its_sessions_after_the_configured_failures(build: Build) {
    let (backends, envoy, _dir) = start(build);
    let mut sessions = open_sessions(&envoy, 30);
    let c = backends.addrs()[2].to_string();
    let on_c: BTreeSet<String> = sessions.iter().filter(|(_, s)| s.host == c).map(|(id, _)| id.clone()).collect();
    assert!(!on_c.is_empty(), "no session on c");
    backends.set("c", "fail=1");
    // Round robin over c's sessions until none is answered by c.
    let mut failures = 0;
    for _ in 0..5 {
        for id in &on_c {
            let s = sessions.get_mut(id).expect("session");
            let (status, host, pin) = request(&envoy, id, s.pin.as_deref());
            if status != 200 {
                failures += 1;
                continue;
            }
            s.host = host;
            if pin.is_some() {
                s.pin = pin;
            }
        }
    }
    // The configured 3 failures in a row eject c (both workers share the
    // record); every session of c then left it and was re-pinned.
    assert!((3..=4).contains(&failures), "{failures} failed requests before c was left");
    assert!(on_c.iter().all(|id| sessions.get(id).is_some_and(|s| s.host != c)), "a session stayed on c");
    assert_eq!(envoy.stat(&build.stat_name("sticky.ejected")), Some(1));
    // The others never moved.
    assert_eq!(round(&envoy, &mut sessions).0, BTreeSet::new());
}

fn forged_and_tampered_pins_are_ignored(build: Build) {
    let (backends, envoy, _dir) = start(build);
    let (_, host, pin) = request(&envoy, "s1", None);
    let pin = pin.expect("pinned");
    // Tampered: the last signature character changed.
    let mut tampered = pin.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    // Forged: another host's address, unsigned.
    let other = backends.addrs().into_iter().map(|a| a.to_string()).find(|a| *a != host).expect("another host");
    let forged = format!("v2.{}", base64url(other.as_bytes()));
    for bad in [tampered, forged] {
        let (status, answered, new_pin) = request(&envoy, "s1", Some(&bad));
        assert_eq!(status, 200);
        assert_eq!(answered, host, "{bad}: the session's own placement, not the forged host");
        assert!(new_pin.is_some(), "{bad}: not re-pinned to a valid value");
    }
    assert_eq!(envoy.stat(&build.stat_name("sticky.cookie_rejected")), Some(2));
}

/// Issue 30, defect 1: with a second route to another cluster, a pinned
/// session's request there (answered by that cluster's host) does not
/// re-pin it; back on its own route it goes to its pinned host, also after
/// a host was added.
fn a_request_to_another_clusters_route_does_not_move_the_session(build: Build) {
    let backends = Backends::start(&["a", "b", "c", "d"]);
    let other = Backends::start(&["x"]);
    let dir = scratch_dir("eds-two-routes");
    let addrs = backends.addrs();
    write_eds(&dir, &addrs[..3], 1);
    let yaml = eds_sample(build, &dir);
    let envoy = Envoy::start(&with_other_cluster(&yaml, "/other", other.addr("x")), 2);
    wait_for_members(&envoy, 3);
    let mut pins = Vec::new();
    for i in 0..20 {
        let id = format!("s{i}");
        let (status, host, pin) = request(&envoy, &id, None);
        assert_eq!(status, 200);
        pins.push((id, host, pin.expect("pinned")));
    }
    for (id, _, pin) in &pins {
        let cookie = format!("sticky={pin}");
        let r = Conn::open(envoy.addr)
            .and_then(|mut c| c.get("/other", &[("x-session-id", id), ("cookie", &cookie)]))
            .expect("request to the other route");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend"), Some("x"));
        assert!(r.header("set-cookie").is_none(), "{id} re-pinned to the other cluster's host");
    }
    // A host added: no pinned session moves, the other route's visits aside.
    write_eds(&dir, &addrs, 2);
    wait_for_members(&envoy, 4);
    for (id, host, pin) in &pins {
        let (status, now, new_pin) = request(&envoy, id, Some(pin));
        assert_eq!((status, &now, new_pin), (200, host, None), "{id} moved");
    }
    assert_eq!(envoy.stat(&build.stat_name("sticky.repinned")).unwrap_or(0), 0);
}
