//! A real nginx with Kong's ngx_wasm_module running the configs of
//! `nginx-otel/`, for `tests/nginx.rs` and the observability tests. No such
//! nginx can be installed from the registries: `make test` points
//! `NGINX_WASM_BIN` at `../shared/nginx-wasm/nginx` when it exists; without
//! one, [`nginx_bin`] prints a SKIPPED line and the caller passes.

use crate::{free_port, http_get, repo, scratch_dir};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx to run (`NGINX_WASM_BIN`); `None` after printing why the
/// caller skips.
pub fn nginx_bin() -> Option<std::path::PathBuf> {
    match std::env::var_os("NGINX_WASM_BIN").filter(|p| !p.is_empty()) {
        Some(p) => Some(p.into()),
        None => {
            eprintln!("SKIPPED: NGINX_WASM_BIN is not set (path to an nginx built with ngx_wasm_module)");
            None
        }
    }
}

/// A running nginx (master and workers), stopped cleanly when dropped.
pub struct Nginx {
    child: Child,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// nginx's stderr log.
    pub log: std::path::PathBuf,
}

impl Drop for Nginx {
    /// Stops nginx cleanly: SIGTERM to the master, which stops its workers
    /// and exits once they have (SIGKILL to the master alone left its
    /// workers listening on test ports).
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long nginx may take to start: every worker compiles every module
/// (about 1-6 s each here, up to 18 s under load).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Starts `nginx-otel/<file>` with ports rewritten; `Err(log)` when nginx
/// does not serve, with every worker's modules compiled, within
/// [`START_TIMEOUT`].
pub fn start(
    bin: &std::path::Path,
    file: &str,
    backends: &[SocketAddr],
    plugin_json: Option<&str>,
) -> Result<Nginx, String> {
    start_with(bin, file, backends, plugin_json, &[])
}

/// [`start`], with `edits` (text, replacement) made to the config first.
pub fn start_with(
    bin: &std::path::Path,
    file: &str,
    backends: &[SocketAddr],
    plugin_json: Option<&str>,
    edits: &[(&str, &str)],
) -> Result<Nginx, String> {
    start_prepared(bin, file, backends, plugin_json, edits, |_| {})
}

/// [`start_with`], with `prepare` given the prefix directory (where the
/// config's relative includes resolve) before nginx starts.
pub fn start_prepared(
    bin: &std::path::Path,
    file: &str,
    backends: &[SocketAddr],
    plugin_json: Option<&str>,
    edits: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> Result<Nginx, String> {
    let (dir, path) = write_config(file, backends, plugin_json, edits);
    prepare(&dir);
    let conf = std::fs::read_to_string(&path).expect("read back");
    let port: u16 = conf
        .split("listen 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .expect("listen port");
    spawn(bin, &dir, &path, &conf, port)
}

/// `nginx-otel/<file>` made runnable here: ports, backends, module paths,
/// pid file, plugin configuration and `edits`; returns the scratch dir and
/// the written config's path.
pub fn write_config(
    file: &str,
    backends: &[SocketAddr],
    plugin_json: Option<&str>,
    edits: &[(&str, &str)],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut conf = std::fs::read_to_string(repo().join("nginx-otel").join(file)).expect("read nginx config");
    for (from, to) in edits {
        assert!(conf.contains(from), "{file} has no {from:?}");
        conf = conf.replace(from, to);
    }
    let port = free_port();
    conf = conf.replace("listen 127.0.0.1:10000;", &format!("listen 127.0.0.1:{port};"));
    for (i, b) in backends.iter().enumerate() {
        // Upstream servers, the sticky map, and plugin configurations.
        conf = conf.replace(&format!("127.0.0.1:{}", 8081 + i), &b.to_string());
    }
    // Module paths as absolute paths, however the module resolves relative ones.
    let wasm_dir = repo().join("target/wasm/");
    conf = conf.replace(" target/wasm/", &format!(" {}", wasm_dir.display()));
    let dir = scratch_dir("nginx");
    if let Some(pid_line) = conf.lines().find(|l| l.starts_with("pid ")).map(str::to_string) {
        conf = conf.replace(&pid_line, &format!("pid {};", dir.join("nginx.pid").display()));
    }
    if let Some(json) = plugin_json {
        // Replaces the first filter's configuration.
        let start = conf.find("proxy_wasm ").expect("proxy_wasm line");
        let start = start + conf[start..].find('\'').expect("plugin config quote") + 1;
        let end = start + conf[start..].find("';").expect("end of plugin config");
        conf.replace_range(start..end, json);
    }
    let path = dir.join("nginx.conf");
    std::fs::write(&path, &conf).expect("write nginx.conf");
    (dir, path)
}

/// Runs nginx on a written config until it serves, every worker's modules
/// compiled (see [`start`]).
pub fn spawn(
    bin: &std::path::Path,
    dir: &std::path::Path,
    path: &std::path::Path,
    conf: &str,
    port: u16,
) -> Result<Nginx, String> {
    let log = dir.join("stderr.log");
    let modules = conf.lines().filter(|l| l.trim_start().starts_with("module ")).count();
    // The scratch dir as prefix: nginx makes its temp dirs there, not in
    // the checkout.
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg("stderr")
        .arg("-c")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("spawn nginx");
    let mut n = Nginx { child, addr: format!("127.0.0.1:{port}").parse().expect("addr"), log };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = n.child.try_wait() {
            break;
        }
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        if text.contains("[emerg]") || text.contains("invalid plugin configuration") || text.contains("cannot create") {
            break;
        }
        // Every worker has compiled every module (a worker still compiling
        // would answer its first requests many seconds late).
        let workers = text.matches("start worker process ").count();
        let compiled = text.matches("[wasm] successfully loaded").count();
        if workers > 0 && compiled >= workers * modules && http_get(n.addr, "/", &[]).is_ok() {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&n.log).unwrap_or_default();
    drop(n);
    Err(text)
}
