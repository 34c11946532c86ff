//! An OTLP/gRPC trace receiver for the trace tests: `scripts/otlp-sink.py`
//! (Python `grpcio` and `opentelemetry-proto`, which `make test` installs
//! into `.venv`), each span it receives one JSON line in a file.

use crate::{free_port, repo, scratch_dir};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running receiver.
pub struct OtlpSink {
    child: Child,
    /// Where it listens (OTLP/gRPC).
    pub addr: SocketAddr,
    /// Where it listens for OTLP/HTTP (`POST /v1/traces`).
    pub http: SocketAddr,
    spans: PathBuf,
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span as the sink wrote it.
#[derive(Debug, Clone)]
pub struct Span {
    /// The span's name.
    pub name: String,
    /// Its trace and its parent span (hex; empty for a root).
    pub trace_id: String,
    pub parent_span_id: String,
    /// `service.name` of its resource.
    pub service: String,
    /// Its attributes, values as text.
    pub attributes: serde_json::Map<String, Value>,
}

impl Span {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

impl OtlpSink {
    /// Starts the receiver on a free port and waits until it listens.
    pub fn start() -> OtlpSink {
        let dir = scratch_dir("otlp");
        let spans = dir.join("spans.jsonl");
        let log = dir.join("sink.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("scripts/otlp-sink.py"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--listen-http")
            .arg(http.to_string())
            .arg("--out")
            .arg(&spans)
            .stdout(Stdio::from(std::fs::File::create(&log).expect("sink log")))
            .stderr(Stdio::from(std::fs::File::create(dir.join("sink.err")).expect("sink err")))
            .spawn()
            .expect("spawn otlp-sink (run `make test`, which installs its Python packages into .venv)");
        let mut sink = OtlpSink { child, addr, http, spans };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("listening") {
            if let Ok(Some(status)) = sink.child.try_wait() {
                let err = std::fs::read_to_string(dir.join("sink.err")).unwrap_or_default();
                panic!("otlp-sink exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "otlp-sink did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = &mut sink;
        sink
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Span {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                trace_id: v["trace_id"].as_str().unwrap_or_default().to_string(),
                parent_span_id: v["parent_span_id"].as_str().unwrap_or_default().to_string(),
                service: v["service"].as_str().unwrap_or_default().to_string(),
                attributes: v["attributes"].as_object().cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Waits (up to `patience`) for a span that `pred` accepts.
    pub fn wait_for(&self, patience: Duration, pred: impl Fn(&Span) -> bool) -> Option<Span> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
