//! What a config push keeps, in one real Envoy process (`--concurrency 2`):
//! the listener comes from a file-based LDS that the test rewrites (a new
//! file renamed over the old, as a control plane's update), so the Wasm VM
//! is reconfigured and its shared data kept (issue 30, "State across a
//! config push"). Each filter's README says what a push keeps, resets or
//! migrates; these tests hold each case to it.

use integration_tests::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One Envoy whose only listener is pushed through LDS.
struct Pushed {
    envoy: Envoy,
    dir: PathBuf,
    port: u16,
    version: u64,
    filter: &'static str,
}

fn bootstrap(dir: &std::path::Path, backend: SocketAddr) -> String {
    format!(
        r#"node: {{ id: push, cluster: push }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  lds_config:
    path_config_source:
      path: {lds}
      watched_directory: {{ path: {dir} }}
    resource_api_version: V3
static_resources:
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
        lds = dir.join("lds.yaml").display(),
        dir = dir.display(),
        port = backend.port()
    )
}

/// The listener, with the filter `filter` (`rate_limit`, ...) configured
/// with `json`; the same vm_id every time, so the VM's shared data stays.
fn listener(port: u16, filter: &str, json: &str, version: u64) -> String {
    let wasm = repo().join(format!("target/wasm/{filter}.wasm"));
    let value = serde_json::to_string(json).expect("json as a YAML string");
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: ingress
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{ prefix: "/" }}
              route: {{ cluster: backend, timeout: 5s }}
        http_filters:
        - name: envoy.filters.http.wasm
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
            config:
              name: {filter}
              root_id: {filter}
              failure_policy: FAIL_CLOSED
              vm_config:
                vm_id: {filter}
                runtime: envoy.wasm.runtime.v8
                code: {{ local: {{ filename: {wasm} }} }}
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {value}
        - name: envoy.filters.http.router
          typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#,
        wasm = wasm.display()
    )
}

impl Pushed {
    fn start(backend: SocketAddr, filter: &'static str, json: &str) -> Pushed {
        let dir = scratch_dir("lds");
        let port = free_port();
        std::fs::write(dir.join("lds.yaml"), listener(port, filter, json, 1)).expect("write lds");
        let envoy = Envoy::start(&bootstrap(&dir, backend), 2);
        Pushed { envoy, dir, port, version: 1, filter }
    }

    /// Pushes `json` as the filter's configuration; `Ok` once Envoy applied
    /// it, `Err` with the log when Envoy rejected it.
    fn push(&mut self, json: &str) -> Result<(), String> {
        let stat = |name: &str| self.envoy.stat(&format!("listener_manager.lds.{name}")).unwrap_or(0);
        let (ok, rejected) = (stat("update_success"), stat("update_rejected"));
        self.version += 1;
        let tmp = self.dir.join(".lds.yaml.tmp");
        std::fs::write(&tmp, listener(self.port, self.filter, json, self.version)).expect("write lds");
        std::fs::rename(&tmp, self.dir.join("lds.yaml")).expect("rename lds");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if stat("update_rejected") > rejected {
                return Err(self.envoy.log());
            }
            if stat("update_success") > ok && self.warmed() {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "the push was neither applied nor rejected:\n{}", self.envoy.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// No listener is warming or draining its predecessor's connections.
    fn warmed(&self) -> bool {
        self.envoy.stat("listener_manager.total_listeners_warming") == Some(0)
    }

    fn get(&self, headers: &[(&str, &str)]) -> Response {
        http_get(self.envoy.addr, "/", headers).expect("request through envoy")
    }
}

const HOUR_LIMIT: &str =
    r#"{"limits":[{"name":"a","requests":2,"period":"1h","key":"header:x-client"}],"table_size":1024}"#;

fn client(i: usize) -> String {
    format!("client-{i}")
}

/// How many of 20 clients get through once each.
fn admitted(p: &Pushed) -> usize {
    (0..20).filter(|&i| p.get(&[("x-client", &client(i))]).status == 200).count()
}

fn exhaust(p: &Pushed) {
    for i in 0..20 {
        for _ in 0..3 {
            p.get(&[("x-client", &client(i))]);
        }
    }
    assert_eq!(admitted(p), 0, "every client exhausted");
}

#[test]
fn rate_limit_buckets_across_pushes_follow_each_tables_identity() {
    let backends = Backends::start(&["a"]);
    let mut p = Pushed::start(backends.addr("a"), "rate_limit", HOUR_LIMIT);
    exhaust(&p);
    // The same limit with another beside it: kept.
    let two = r#"{"limits":[{"name":"a","requests":2,"period":"1h","key":"header:x-client"},
        {"name":"b","requests":1000,"period":"1h","key":"header:x-client"}],"table_size":1024}"#;
    p.push(two).expect("push two limits");
    assert_eq!(admitted(&p), 0, "an unchanged limit kept its buckets");
    // Resized: every client starts full, none reads another's slot.
    p.push(&HOUR_LIMIT.replace("1024", "2048")).expect("push resized");
    assert_eq!(admitted(&p), 20, "a resized table starts full for every client");
    exhaust(&p);
    // Renamed: a new table, full.
    p.push(&HOUR_LIMIT.replace("2048", "1024").replace(r#""a""#, r#""renamed""#)).expect("push renamed");
    assert_eq!(admitted(&p), 20);
    // Two limits that swap names and rates read neither's buckets.
    let pair = |x: &str, y: &str| {
        format!(
            r#"{{"limits":[{{"name":"{x}","requests":1,"period":"1h","key":"header:x-client"}},
            {{"name":"{y}","requests":1000,"period":"1h","key":"header:x-client"}}],"table_size":4096}}"#
        )
    };
    p.push(&pair("x", "y")).expect("push x y");
    assert_eq!(admitted(&p), 20);
    assert_eq!(admitted(&p), 0, "x allows one an hour");
    p.push(&pair("y", "x")).expect("push swapped");
    assert_eq!(admitted(&p), 20, "the swapped limits read each other's buckets");
}

#[test]
fn rate_limit_pushes_of_one_name_allocate_nothing_new() {
    let backends = Backends::start(&["a"]);
    let big = |rpu: u32| {
        format!(
            r#"{{"limits":[{{"name":"big","requests":{rpu},"period":"1h","key":"header:x-client"}}],"table_size":65536}}"#
        )
    };
    let mut p = Pushed::start(backends.addr("a"), "rate_limit", &big(10));
    let memory = |p: &Pushed| p.envoy.stat("server.memory_allocated").unwrap_or(0);
    p.push(&big(11)).expect("push");
    let settled = memory(&p);
    for rpu in 12..18 {
        p.push(&big(rpu)).expect("push");
    }
    let after = memory(&p);
    println!("memory allocated after 2 pushes: {settled} B, after 8: {after} B");
    // Six pushes of a 65,536-slot limit took 31 MB when each named a new
    // limit; the same name reuses its slots.
    assert!(after < settled + 8 * 1024 * 1024, "{settled} -> {after}");
}

fn breaker(extra: &str) -> String {
    format!(r#"{{"key":"header:x-tenant","consecutive_failures":1,"open_for":"60s"{extra}}}"#)
}

/// Each tenant's breaker answers (503 with x-circuit-breaker) or the
/// backend does.
fn open_tenants(p: &Pushed) -> usize {
    (0..12)
        .filter(|i| {
            let r = p.get(&[("x-tenant", &format!("t{i}"))]);
            r.header("x-circuit-breaker").is_some_and(|h| h.contains("state=open"))
        })
        .count()
}

#[test]
fn open_breakers_stay_open_across_a_resize_and_a_new_window_shape() {
    let backends = Backends::start(&["a"]);
    backends.set("a", "fail=1");
    let mut p = Pushed::start(backends.addr("a"), "circuit_breaker", &breaker(r#","max_breakers":256"#));
    for i in 0..12 {
        p.get(&[("x-tenant", &format!("t{i}"))]);
    }
    backends.set("a", "fail=0");
    assert_eq!(open_tenants(&p), 12);
    p.push(&breaker(r#","max_breakers":512"#)).expect("push 512");
    assert_eq!(open_tenants(&p), 12, "a resized table closed open breakers");
    p.push(&breaker(r#","max_breakers":512,"expression":"LatencyAtQuantileMS(50.0) > 1000","min_requests":5"#))
        .expect("push an expression");
    assert_eq!(open_tenants(&p), 12, "a new window shape closed open breakers");
    p.push(&breaker(r#","max_breakers":64"#)).expect("push 64");
    assert_eq!(open_tenants(&p), 12, "a smaller table closed open breakers");
}

/// Defect 3: a Traefik breaker recovering, pushed as a native breaker with
/// the same window, lets every request through at once.
#[test]
fn a_recovering_traefik_breaker_pushed_as_native_serves_at_once() {
    let backends = Backends::start(&["a"]);
    backends.set("a", "fail=1");
    let traefik = r#"{"key":"fixed:api","traefik":{"expression":"ResponseCodeRatio(500, 600, 0, 600) > 0.25",
        "checkPeriod":"100ms","fallbackDuration":"1s","recoveryDuration":"120s"}}"#;
    let mut p = Pushed::start(backends.addr("a"), "circuit_breaker", traefik);
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.get(&[]).header("x-circuit-breaker").is_none() {
        assert!(Instant::now() < deadline, "the Traefik breaker never tripped");
        std::thread::sleep(Duration::from_millis(150));
    }
    backends.set("a", "fail=0");
    std::thread::sleep(Duration::from_millis(1200));
    // Recovering: most requests are turned away at first.
    let recovering = (0..20).filter(|_| p.get(&[]).header("x-circuit-breaker").is_some()).count();
    assert!(recovering >= 10, "{recovering} of 20 turned away while recovering");
    let native = r#"{"key":"fixed:api","expression":"ResponseCodeRatio(500, 600, 0, 600) > 0.25","min_requests":5,
        "open_for":"10s"}"#;
    p.push(native).expect("push native");
    let served = (0..20).filter(|_| p.get(&[]).status == 200).count();
    assert_eq!(served, 20, "the native breaker kept turning requests away:\n{}", p.envoy.log());
}
