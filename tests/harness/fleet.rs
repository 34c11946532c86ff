//! What the global rate-limit tests add to the harness: a Redis server and
//! instances of `ratelimit-engine`, as plain processes on 127.0.0.1, killed
//! when their handles drop.

use crate::{free_port, repo, scratch_dir, Conn, Response};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-server` (Debian package `redis-server`, installed by `make test`),
/// without persistence, on a free port.
pub struct Redis {
    child: Option<Child>,
    /// Its address.
    pub addr: SocketAddr,
    /// TLS only (`--port 0 --tls-port`): the certificate, key and client CA
    /// files, every client asked for a certificate that CA signed.
    tls: Option<[PathBuf; 3]>,
}

impl Redis {
    /// Starts Redis on a free port.
    pub fn start() -> Redis {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut r = Redis { child: None, addr, tls: None };
        r.spawn();
        r
    }

    /// Starts Redis speaking TLS only, with `cert` and `key` (PEM files),
    /// requiring a client certificate signed by `client_ca`.
    pub fn start_tls(cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Redis {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut r = Redis { child: None, addr, tls: Some([cert, key, client_ca]) };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let port = self.addr.port().to_string();
        let ports: Vec<std::ffi::OsString> = match &self.tls {
            None => vec!["--port".into(), port.into()],
            Some([cert, key, ca]) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.into(),
                "--tls-cert-file".into(),
                cert.into(),
                "--tls-key-file".into(),
                key.into(),
                "--tls-ca-cert-file".into(),
                ca.into(),
                "--tls-auth-clients".into(),
                "yes".into(),
            ],
        };
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1"])
            .args(ports)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin} ({e}): run `make test`, which installs redis-server"));
        self.child = Some(child);
        wait_for_port(self.addr, "redis-server");
    }

    /// The URL engines take.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills Redis (its counts are lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `ratelimit-engine` instance.
pub struct Engine {
    child: Child,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// HTTP address (`/json`, `/metrics`, `/healthcheck`).
    pub http: SocketAddr,
}

/// The engine binary (built by `make build`).
pub fn engine_bin() -> PathBuf {
    let p = repo().join("target/release/ratelimit-engine");
    assert!(p.exists(), "{} is missing: run `make build`", p.display());
    p
}

impl Engine {
    /// Starts an engine with the limits in `yaml` (one domain) against `redis`.
    pub fn start(yaml: &str, redis: &Redis, extra: &[&str]) -> Engine {
        let url = redis.url();
        let mut args = vec!["--redis", url.as_str()];
        args.extend_from_slice(extra);
        Engine::start_with(yaml, &args)
    }

    /// Starts an engine with the limits in `yaml` and `args` (where it counts, ...).
    pub fn start_with(yaml: &str, args: &[&str]) -> Engine {
        let dir = scratch_dir("engine");
        let cfg = dir.join("limits.yaml");
        std::fs::write(&cfg, yaml).expect("write limits.yaml");
        let mut child = Command::new(engine_bin())
            .arg("--config")
            .arg(&cfg)
            .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ratelimit-engine");
        let stdout = child.stdout.take().expect("engine stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("ratelimit-engine exited early").expect("read engine");
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("engine printed {line:?}"))
        };
        let (grpc, http) = (field("grpc="), field("http="));
        // Keep draining stdout so the engine never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Engine { child, grpc, http }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the engine.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the process: a service that
    /// accepts connections but never answers.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid().to_string()]).status().map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "kill {sig} engine");
        // A signal is delivered asynchronously: on a busy machine a stopped
        // engine could still answer the next call. Wait until the kernel
        // says it is stopped (or running again).
        let want_stopped = match sig {
            "-STOP" => true,
            "-CONT" => false,
            _ => return,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("");
            if (state == "T" || state == "t") == want_stopped {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// `POST /json` with `body`.
    pub fn post_json(&self, body: &str) -> Response {
        post(self.http, "/json", body).expect("POST /json")
    }

    /// A counter from `/metrics` (the whole series name, labels included).
    pub fn metric(&self, series: &str) -> Option<u64> {
        let r = crate::http_get(self.http, "/metrics", &[]).ok()?;
        r.text().lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        self.kill();
    }
}

/// `/bin/ratelimit` as a Deployment runs it: no arguments, configured by
/// its environment only; stderr kept for failure messages.
pub struct Upstream {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The first line on stdout, once it came (`listening grpc=...`).
    first: std::sync::mpsc::Receiver<String>,
}

impl Upstream {
    /// Starts the engine with exactly `env` (nothing inherited).
    pub fn spawn(env: &[(&str, String)]) -> Upstream {
        let mut child = Command::new(engine_bin())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the engine");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, first) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        Upstream { child, log, first }
    }

    /// Waits up to `patience` for the engine to say it listens.
    pub fn listening(&self, patience: Duration) -> bool {
        self.first.recv_timeout(patience).is_ok_and(|l| l.starts_with("listening grpc="))
    }

    /// Starts the engine and waits for it to listen.
    pub fn start(env: &[(&str, String)]) -> Upstream {
        let engine = Upstream::spawn(env);
        assert!(engine.listening(Duration::from_secs(20)), "the engine did not start:\n{}", engine.log());
        engine
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks `status` until the first 429, at most `most` times: how many were
/// admitted (200) before it, `None` when no 429 came. Any other status
/// fails the test, with `context`.
pub fn admitted_before_429(
    most: usize,
    mut status: impl FnMut() -> u16,
    context: impl Fn() -> String,
) -> Option<usize> {
    let mut admitted = 0;
    for _ in 0..most {
        match status() {
            200 => admitted += 1,
            429 => return Some(admitted),
            other => panic!("status {other}: {}", context()),
        }
    }
    None
}

/// One POST with a JSON body on a fresh connection.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<Response> {
    let mut c = Conn::open(addr)?;
    let len = body.len().to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{body}"
    );
    c.raw(head.as_bytes())
}

/// The UTC hour now (hours since the epoch): the engine's hourly fixed
/// windows turn with it, so a test asserting an exact hourly count checks
/// it did not turn during the test.
pub fn utc_hour() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 3600).unwrap_or(0)
}
