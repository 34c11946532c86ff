//! Observability against a real Prometheus (Debian's `prometheus`, installed
//! by `make test`): Prometheus scrapes real Envoys running the samples (the
//! bundle, global limits, dynamic sticky sessions; with their stats_tags)
//! and a real ratelimit-engine while traffic runs;
//! then every panel query of `deploy/grafana/*.json`, its variables filled
//! in, returns at least one series, and so does the query shape of Envoy
//! Gateway's Global Ratelimit dashboard against the engine.

use integration_tests::fleet::{Engine, Redis};
use integration_tests::nginx;
use integration_tests::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Prometheus scraping `targets` (job, address, path) every second,
    /// evaluating `rules` (rule files' texts) every second.
    fn start(targets: &[(&str, std::net::SocketAddr, &str)], rules: &[String]) -> Prometheus {
        let dir = scratch_dir("prometheus");
        let mut cfg = String::from("global: { scrape_interval: 1s, evaluation_interval: 1s }\n");
        if !rules.is_empty() {
            cfg += "rule_files:\n";
        }
        for (i, text) in rules.iter().enumerate() {
            let file = dir.join(format!("rules-{i}.yaml"));
            std::fs::write(&file, text).expect("write rules");
            cfg += &format!("- '{}'\n", file.display());
        }
        cfg += "scrape_configs:\n";
        for (job, addr, path) in targets {
            cfg +=
                &format!("- job_name: {job}\n  metrics_path: {path}\n  static_configs: [{{ targets: ['{addr}'] }}]\n");
        }
        std::fs::write(dir.join("prometheus.yml"), cfg).expect("write prometheus.yml");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn prometheus ({e}): run `make test`, which installs Debian's prometheus"));
        let p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_get(addr, "/-/ready", &[]).is_ok_and(|r| r.status == 200) {
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// An instant query's result series.
    fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let r = http_get(self.addr, &path, &[]).expect("query prometheus");
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(v["status"], "success", "{expr}: {}", r.text());
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rule files: deploy/prometheus/alerts.yaml and rules.yaml.
fn rule_files() -> Vec<String> {
    ["alerts.yaml", "rules.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(repo().join("deploy/prometheus").join(f)).expect("rule file"))
        .collect()
}

/// A panel query with its variables filled in as "All", the scrape job as
/// `job` (a regex).
fn filled_for(expr: &str, job: &str) -> String {
    let mut e = expr.replace("$__rate_interval", "30s").replace("$job", job);
    for var in ["$limit", "$breaker", "$backend", "$domain"] {
        e = e.replace(var, ".+");
    }
    e
}

fn filled(expr: &str) -> String {
    filled_for(expr, ".+")
}

/// The panels of `filters.json` whose description says they show nothing
/// for nginx's bundle sample (`nginx: empty`), by title.
fn not_in_nginx() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/filters.json")).expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["description"].as_str().unwrap_or("").contains("nginx: empty"))
        .map(|p| p["title"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn panel_queries(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana").join(file)).expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push((p["title"].as_str().unwrap_or("?").to_string(), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    // The variables' own queries: label_values(metric, label).
    for v in d["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).expect("label_values");
            let (metric, label) = inner.split_once(", ").expect("metric, label");
            out.push((format!("variable {}", v["name"]), format!("count by ({label}) ({metric})")));
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_from_real_envoy_and_the_engine() {
    let (_backends, addrs) = Backends::one_process_each(&["a", "b", "c"]);
    // The bundle sample; the global-limit sample asking the engine with the
    // sample limits (envoy/ratelimit/edge.yaml); the dynamic sticky sample
    // over an EDS file naming the same backends.
    let envoy = Envoy::start(&sample_config("bundle.yaml", &addrs), 2);
    let redis = Redis::start();
    let limits = std::fs::read_to_string(repo().join("envoy/ratelimit/edge.yaml")).expect("sample limits");
    let engine = Engine::start(&limits, &redis, &[]);
    let global = Envoy::start(
        &sample_config("global-rate-limit.yaml", &addrs)
            .replace("port_value: 8091 ", &format!("port_value: {} ", engine.grpc.port())),
        2,
    );
    let eds = scratch_dir("observability-eds");
    let endpoints: String = addrs
        .iter()
        .map(|a| {
            format!(
                "    - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    std::fs::write(
        eds.join("sticky-endpoints.yaml"),
        format!("version_info: \"1\"\nresources:\n- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  cluster_name: sticky\n  endpoints:\n  - lb_endpoints:\n{endpoints}"),
    )
    .expect("eds");
    let dynamic = Envoy::start(
        &sample_config("sticky-session-eds.yaml", &[])
            .replace(
                "path: envoy/eds/sticky-endpoints.yaml",
                &format!("path: {}", eds.join("sticky-endpoints.yaml").display()),
            )
            .replace(
                "watched_directory: { path: envoy/eds }",
                &format!("watched_directory: {{ path: {} }}", eds.display()),
            ),
        2,
    );
    // nginx with the bundle, its metrics served by the bundle's exporter
    // (nginx-otel/bundle.conf's metrics listener), when there is an nginx.
    let nginx = nginx::nginx_bin().map(|bin| {
        let port = free_port();
        let listen = format!("listen 127.0.0.1:{port};");
        let n = nginx::start_with(&bin, "bundle.conf", &addrs, None, &[("listen 127.0.0.1:9145;", &listen)])
            .unwrap_or_else(|log| panic!("nginx did not start:\n{log}"));
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        (n, metrics)
    });
    let mut targets = vec![
        ("envoy", envoy.admin, "/stats/prometheus"),
        ("envoy-global", global.admin, "/stats/prometheus"),
        ("envoy-dynamic", dynamic.admin, "/stats/prometheus"),
        ("engine", engine.http, "/metrics"),
    ];
    if let Some((_, metrics)) = &nginx {
        targets.push(("nginx", *metrics, "/metrics"));
    }
    let prom = Prometheus::start(&targets, &rule_files());
    // Traffic: sessions spread over the backends, a burst over the
    // per-client limit, the engine asked until one client is over.
    let deadline = Instant::now() + Duration::from_secs(120);
    let queries: Vec<(String, String)> =
        ["filters.json", "engine.json"].iter().flat_map(|f| panel_queries(f)).collect();
    // Envoy Gateway's Global Ratelimit dashboard, its query shape against
    // this engine's domain and descriptor.
    let eg = r#"ratelimit_service_rate_limit_total_hits{domain="edge", key1="generic_key_fleet-client", key2="remote_address"}"#;
    let mut missing = Vec::new();
    while Instant::now() < deadline {
        let mut c = Conn::open(envoy.addr).expect("connect");
        for i in 0..120 {
            let _ = c.get("/", &[("x-session-id", &format!("s{}", i % 7))]);
        }
        for (proxy, n) in [(&global, 30), (&dynamic, 20)] {
            let mut c = Conn::open(proxy.addr).expect("connect");
            for i in 0..n {
                let _ = c.get("/", &[("x-session-id", &format!("s{}", i % 5))]);
            }
        }
        if let Some((n, _)) = &nginx {
            let mut c = Conn::open(n.addr).expect("connect");
            for i in 0..120 {
                let _ = c.get("/", &[("x-session-id", &format!("s{}", i % 7))]);
            }
        }
        missing = queries.iter().filter(|(_, e)| prom.query(&filled(e)).is_empty()).cloned().collect();
        if prom.query(eg).is_empty() {
            missing.push(("Envoy Gateway Global Ratelimit".into(), eg.into()));
        }
        // The recording rules of deploy/prometheus/rules.yaml.
        for recorded in [
            r#"job_limit:rate_limit_refused:ratio_rate5m{job="envoy", limit="per-client"}"#,
            r#"job:ratelimit_engine_decision_duration_seconds:p99_rate5m{job="engine"}"#,
        ] {
            if prom.query(recorded).is_empty() {
                missing.push(("recording rule".into(), recorded.into()));
            }
        }
        // The nginx view: the same dashboard with job="nginx", but for the
        // panels that say they have nothing to show there.
        if nginx.is_some() {
            let skip = not_in_nginx();
            for (title, e) in panel_queries("filters.json") {
                if !skip.contains(&title) && prom.query(&filled_for(&e, "nginx")).is_empty() {
                    missing.push((format!("nginx: {title}"), filled_for(&e, "nginx")));
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(missing.is_empty(), "queries without data: {missing:#?}");
    // For each policy, a panel's series counts what the proxy counts: with
    // the traffic stopped, once Prometheus has scraped again, its value is
    // Envoy's own counter (summed over the label's values).
    let envoy_sum = |prefix: &str, suffix: &str| stat_sum(&envoy, prefix, suffix);
    let refused = envoy.stat("wasmcustom.rate_limit.per-client.refused").unwrap_or(0);
    assert!(refused > 0, "the burst went over the limit");
    let checks = [
        ("rate limit", r#"sum(rate_limit_refused{job="envoy"})"#, "wasmcustom.rate_limit.", ".refused"),
        (
            "circuit breaker",
            r#"sum(circuit_breaker_requests{job="envoy"})"#,
            "wasmcustom.circuit_breaker.",
            ".requests",
        ),
        ("retry", r#"sum(retry_requests{job="envoy"})"#, "wasmcustom.retry.", ".requests"),
        ("sticky sessions", r#"sum(sticky_assigned{job="envoy"})"#, "wasmcustom.sticky.", ".assigned"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mismatched: Vec<String> = checks
            .iter()
            .filter_map(|(policy, query, prefix, suffix)| {
                let scraped = prom.query(query);
                let value: Option<f64> =
                    scraped.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse().ok());
                let own = envoy_sum(prefix, suffix);
                (own == 0 || value != Some(own as f64)).then(|| format!("{policy}: prometheus {value:?}, envoy {own}"))
            })
            .collect();
        if mismatched.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "panels vs the proxy's counters: {mismatched:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The sum of Envoy's counters named `<prefix>...<suffix>` (one per label
/// value: `wasmcustom.retry.reads.requests`, ...).
fn stat_sum(envoy: &Envoy, prefix: &str, suffix: &str) -> u64 {
    envoy
        .admin_get("/stats")
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| {
            name.starts_with(prefix) && name.ends_with(suffix) && name.len() > prefix.len() + suffix.len()
        })
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// The breaker alert of `deploy/prometheus/alerts.yaml` (its `for` made 2 s)
/// fires in a real Prometheus while a real Envoy's breaker is open, and
/// resolves once the upstream recovers and the breaker closes.
#[test]
fn the_breaker_alert_fires_while_open_and_resolves_after_recovery() {
    let (backends, addrs) = Backends::one_process_each(&["a", "b", "c"]);
    let envoy = Envoy::start(&sample_config("bundle.yaml", &addrs), 2);
    let rules = rule_files().into_iter().map(|r| r.replace("for: 5m", "for: 2s")).collect::<Vec<_>>();
    let prom = Prometheus::start(&[("envoy", envoy.admin, "/stats/prometheus")], &rules);
    let set_all = |query: &str| {
        for (b, n) in backends.iter().zip(["a", "b", "c"]) {
            if let Some(b) = b {
                b.set(n, query);
            }
        }
    };
    let firing = || !prom.query(r#"ALERTS{alertname="CircuitBreakerOpen", alertstate="firing"}"#).is_empty();
    let poke = || {
        let _ = http_get(envoy.addr, "/", &[("x-session-id", "alert")]);
    };
    set_all("fail=1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !firing() {
        assert!(
            Instant::now() < deadline,
            "the breaker alert never fired:\n{}",
            envoy.admin_get("/stats?filter=circuit")
        );
        poke();
        std::thread::sleep(Duration::from_millis(300));
    }
    set_all("fail=0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while firing() {
        assert!(Instant::now() < deadline, "the breaker alert never resolved");
        poke();
        std::thread::sleep(Duration::from_millis(300));
    }
}
