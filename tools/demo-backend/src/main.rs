//! Demo and test backend for the filters' integration tests, demo and load
//! harness.
//!
//! ```text
//! demo-backend --backend NAME=ADDR [--backend NAME=ADDR ...] [--fail RATIO] [--random] [--status CODE] [--latency DUR] [--hang]
//! ```
//!
//! Every backend answers every request with `x-backend: NAME`. `GET /echo...`
//! returns the request's headers as JSON. Behaviour can be changed while
//! running, per backend:
//!
//! * `GET /_demo/set?fail=0.5&status=503&latency=100ms&hang=0&random=0`: fail
//!   this fraction of requests (exactly: every other one for 0.5; at random
//!   with `random=1`) with `status`,
//!   delay every answer by `latency`, or never answer (`hang=1`).
//! * `GET /_demo/stats`: `{"name":..,"requests":n,"failed":m}`, counting
//!   every request but the control ones.
//!
//!
//! An LLM-shaped endpoint answers `/v1/...` (any method) with the token
//! counts the caller chooses, as OpenAI-compatible APIs do:
//! `?tokens=400` (total; the prompt is a quarter of it), `&stream=1` for
//! server-sent events (`text/event-stream`, chunked: `events` content events,
//! default 3, then one carrying `usage`, then `data: [DONE]`), `&pad=BYTES`
//! of content spread over the answer (a long stream), `&gap=DUR` between
//! events, `&abort=1` to close the connection before the usage event, and
//! `&shape=anthropic` for `usage.input_tokens`/`output_tokens`.
//!
//! Once bound it prints `listening NAME ADDR` per backend (ADDR has the real
//! port when given port 0), so tests can use port 0.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
struct Behaviour {
    fail: f64,
    /// Fail at random with probability `fail`, instead of exactly every 1/fail-th request.
    random: bool,
    status: u16,
    latency: Duration,
    hang: bool,
}

struct Backend {
    name: String,
    behaviour: RwLock<Behaviour>,
    requests: AtomicU64,
    failed: AtomicU64,
}

const MAX_HEADER_BYTES: usize = 64 * 1024;

fn main() {
    if let Err(e) = run() {
        eprintln!("demo-backend: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut specs = Vec::new();
    let mut b = Behaviour { status: 503, ..Behaviour::default() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--backend" => {
                let v = value()?;
                let (name, addr) = v.split_once('=').ok_or("--backend takes NAME=ADDR")?;
                specs.push((name.to_string(), addr.to_string()));
            }
            "--fail" => b.fail = value()?.parse().map_err(|_| "--fail takes a ratio 0..1")?,
            "--status" => b.status = value()?.parse().map_err(|_| "--status takes a status code")?,
            "--latency" => b.latency = parse_duration(&value()?).map_err(|e| format!("--latency {e}"))?,
            "--hang" => b.hang = true,
            "--random" => b.random = true,
            "-h" | "--help" => {
                println!(
                    "demo-backend --backend NAME=ADDR [...] [--fail RATIO] [--status CODE] [--latency DUR] [--hang]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if specs.is_empty() {
        return Err("give at least one --backend NAME=ADDR".into());
    }
    let mut threads = Vec::new();
    for (name, addr) in specs {
        let listener = TcpListener::bind(&addr).map_err(|e| format!("bind {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening {name} {local}");
        let backend = Arc::new(Backend {
            name,
            behaviour: RwLock::new(b.clone()),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        threads.push(std::thread::spawn(move || accept_loop(listener, backend)));
    }
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, backend: Arc<Backend>) {
    for stream in listener.incoming().flatten() {
        let backend = backend.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &backend);
        });
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Ok(None);
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" || head.ends_with(b"\n\n") {
            if head.len() <= 2 {
                head.clear();
                continue;
            }
            break;
        }
        if head.len() > MAX_HEADER_BYTES {
            return Err(std::io::Error::other("header too large"));
        }
    }
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut storage);
    req.parse(&head).map_err(|e| std::io::Error::other(e.to_string()))?;
    let method = req.method.unwrap_or("GET").to_string();
    let path = req.path.unwrap_or("/").to_string();
    let http10 = req.version == Some(0);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match header("connection").as_deref() {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => !http10,
    };
    // Drain the body so the next request on the connection parses.
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink())?;
    }
    Ok(Some(Request { method, path, headers, keep_alive }))
}

fn serve(stream: TcpStream, backend: &Backend) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader)? {
        if req.path.starts_with("/v1/") {
            backend.requests.fetch_add(1, Ordering::SeqCst);
            if !llm(&req, backend, &mut writer)? || !req.keep_alive {
                break;
            }
            continue;
        }
        let (status, content_type, body) = respond(&req, backend);
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nx-backend: {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
            reason(status),
            backend.name,
            body.len()
        );
        if !req.keep_alive {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if req.method != "HEAD" {
            bytes.extend_from_slice(body.as_bytes());
        }
        writer.write_all(&bytes)?;
        if !req.keep_alive {
            break;
        }
    }
    Ok(())
}

/// The LLM-shaped answer (see the module's header); `false` when the
/// connection must close (an aborted stream).
fn llm(req: &Request, backend: &Backend, writer: &mut TcpStream) -> std::io::Result<bool> {
    let query = req.path.split_once('?').map_or("", |(_, q)| q);
    let param =
        |name: &str| query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v);
    let number = |name: &str, default: u64| param(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let tokens = number("tokens", 100);
    let events = number("events", 3).max(1);
    let pad = number("pad", 0) as usize;
    let gap = param("gap").and_then(|g| parse_duration(g).ok()).unwrap_or_default();
    let prompt = tokens / 4;
    let usage = if param("shape") == Some("anthropic") {
        serde_json::json!({ "input_tokens": prompt, "output_tokens": tokens - prompt })
    } else {
        serde_json::json!({ "prompt_tokens": prompt, "completion_tokens": tokens - prompt, "total_tokens": tokens })
    };
    let piece = "x".repeat(pad / events as usize);
    let head = |content_type: &str, framing: &str| {
        format!("HTTP/1.1 200 OK\r\nx-backend: {}\r\ncontent-type: {content_type}\r\n{framing}\r\n", backend.name)
    };
    if param("stream") != Some("1") {
        let content = piece.repeat(events as usize);
        let body = serde_json::json!({
            "id": "demo-1", "object": "chat.completion", "model": "demo",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
            "usage": usage,
        })
        .to_string();
        let mut out = head("application/json", &format!("content-length: {}\r\n", body.len())).into_bytes();
        out.extend_from_slice(body.as_bytes());
        writer.write_all(&out)?;
        return Ok(true);
    }
    writer.write_all(head("text/event-stream", "transfer-encoding: chunked\r\n").as_bytes())?;
    let chunk = |w: &mut TcpStream, data: &str| -> std::io::Result<()> {
        w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())?;
        w.flush()
    };
    for _ in 0..events {
        let delta = serde_json::json!({ "choices": [{ "index": 0, "delta": { "content": piece } }], "usage": null });
        chunk(writer, &format!("data: {delta}\n\n"))?;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    if param("abort") == Some("1") {
        return Ok(false);
    }
    let last = serde_json::json!({ "choices": [], "usage": usage });
    chunk(writer, &format!("data: {last}\n\ndata: [DONE]\n\n"))?;
    writer.write_all(b"0\r\n\r\n")?;
    Ok(true)
}

fn respond(req: &Request, backend: &Backend) -> (u16, &'static str, String) {
    let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
    match path {
        "/_demo/set" => {
            let mut b = backend.behaviour.write().unwrap_or_else(|p| p.into_inner());
            for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                match k {
                    "fail" => b.fail = v.parse().unwrap_or(0.0),
                    "status" => b.status = v.parse().unwrap_or(503),
                    "latency" => b.latency = parse_duration(v).unwrap_or_default(),
                    "hang" => b.hang = v == "1" || v == "true",
                    "random" => b.random = v == "1" || v == "true",
                    _ => {}
                }
            }
            return (200, "application/json", format!("{{\"name\":\"{}\",\"ok\":true}}\n", backend.name));
        }
        "/_demo/stats" => {
            let body = serde_json::json!({
                "name": backend.name,
                "requests": backend.requests.load(Ordering::SeqCst),
                "failed": backend.failed.load(Ordering::SeqCst),
            });
            return (200, "application/json", body.to_string() + "\n");
        }
        _ => {}
    }
    let b = backend.behaviour.read().map(|b| b.clone()).unwrap_or_default();
    let n = backend.requests.fetch_add(1, Ordering::SeqCst);
    if b.hang {
        std::thread::sleep(Duration::from_secs(600));
    }
    if !b.latency.is_zero() {
        std::thread::sleep(b.latency);
    }
    // Exactly `fail` of requests fail: request n fails when floor((n+1)*fail)
    // steps up; or, with `random`, each fails with probability `fail`.
    let fails =
        if b.random { random_unit() < b.fail } else { ((n + 1) as f64 * b.fail).floor() > (n as f64 * b.fail).floor() };
    if fails {
        backend.failed.fetch_add(1, Ordering::SeqCst);
        return (b.status, "text/plain", format!("{} failing on purpose\n", backend.name));
    }
    if path.starts_with("/echo") {
        let headers: serde_json::Map<String, serde_json::Value> =
            req.headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let body =
            serde_json::json!({ "backend": backend.name, "method": req.method, "path": req.path, "headers": headers });
        return (200, "application/json", body.to_string() + "\n");
    }
    (200, "text/plain", format!("hello from {}\n", backend.name))
}

/// A uniform number in [0, 1) from a per-thread xorshift generator seeded
/// from the clock and the thread.
fn random_unit() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
            let id = std::thread::current().id();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&id, &mut h);
            (t ^ std::hash::Hasher::finish(&h)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A duration as the filters' configs write them (`250ms`, `1s`, ...), by
/// the filters' own parser, so the backend and the configs agree.
fn parse_duration(text: &str) -> Result<Duration, String> {
    filters_core::duration::parse_duration(text).map_err(|e| format!("\"{}\" {e}", text.trim()))
}
