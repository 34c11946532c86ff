//! Traces of `ShouldRateLimit` calls, exported over OTLP as upstream's
//! tracing settings ask (`TRACING_ENABLED`, `TRACING_EXPORTER_PROTOCOL`
//! `http` or `grpc`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `TRACING_SERVICE_*`,
//! `TRACING_SAMPLING_RATE`).
//!
//! Each call is one SERVER span, `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! as upstream's gRPC instrumentation names it, the child of the caller's
//! W3C `traceparent` when it sent one (Envoy does when it traces). Sampling
//! is upstream's: a caller's decision is followed; a call without one is
//! sampled at `TRACING_SAMPLING_RATE`. Spans wait in a bounded queue
//! ([`QUEUE`]; beyond it they are dropped and counted in
//! `ratelimit_engine_spans_dropped_total`) and leave in batches every
//! second: a slow or absent collector never slows an answer.
//!
//! The OTLP messages are written here with `prost` (the few fields used,
//! numbered as `opentelemetry/proto/trace/v1/trace.proto`); the trace tests
//! read them with OpenTelemetry's own Python protobufs.

use crate::metrics::Metrics;
use crate::settings::{TraceProtocol, TraceSettings};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Spans waiting for export at most.
pub const QUEUE: usize = 2048;
/// Spans per export at most.
const BATCH: usize = 512;

/// The OTLP messages (`opentelemetry.proto.*.v1`), the fields used.
pub mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// 2: SERVER.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// 1: OK, 2: ERROR.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 3")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(int64, tag = "3")]
        Int(i64),
    }

    /// A string attribute.
    pub fn text(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(Value::String(value.into())) }) }
    }

    /// An integer attribute.
    pub fn int(key: &str, value: i64) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(Value::Int(value)) }) }
    }
}

/// The span name upstream's gRPC instrumentation gives a call.
pub const SPAN_NAME: &str = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// A W3C `traceparent`: trace id, parent span id, sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// Reads `00-<32 hex>-<16 hex>-<2 hex>`; anything else (another version's
/// extra fields aside), all-zero ids included, is no parent.
pub fn parse_traceparent(text: &str) -> Option<Parent> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    hex_into(trace, &mut trace_id)?;
    hex_into(span, &mut span_id)?;
    let mut f = [0u8; 1];
    hex_into(flags, &mut f)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: f[0] & 1 == 1 })
}

fn hex_into(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

/// A span being timed.
pub struct Active {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: u64,
}

/// Starts spans, and hands finished ones to the exporter.
pub struct Tracer {
    queue: mpsc::Sender<otlp::Span>,
    rate: f64,
    ids: AtomicU64,
    seed: std::collections::hash_map::RandomState,
    metrics: Arc<Metrics>,
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Tracer {
    /// A tracer exporting as `settings` say, its exporter spawned on the
    /// current runtime.
    pub fn start(settings: TraceSettings, metrics: Arc<Metrics>) -> Tracer {
        let (queue, spans) = mpsc::channel(QUEUE);
        let rate = settings.sampling_rate;
        tokio::spawn(export(settings, spans));
        Tracer { queue, rate, ids: AtomicU64::new(1), seed: Default::default(), metrics }
    }

    fn random(&self) -> u64 {
        let mut h = self.seed.build_hasher();
        h.write_u64(self.ids.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    /// A span for a call with this `traceparent`, if it is sampled: the
    /// caller's decision when it sent one, else `TRACING_SAMPLING_RATE`.
    pub fn begin(&self, traceparent: Option<&str>) -> Option<Active> {
        let parent = traceparent.and_then(parse_traceparent);
        let sampled = match parent {
            Some(p) => p.sampled,
            None => self.rate >= 1.0 || (self.random() as f64 / u64::MAX as f64) < self.rate,
        };
        if !sampled {
            return None;
        }
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&self.random().to_be_bytes());
                id[8..].copy_from_slice(&self.random().to_be_bytes());
                id
            }
        };
        Some(Active {
            trace_id,
            span_id: self.random().max(1).to_be_bytes(),
            parent: parent.map(|p| p.span_id),
            start: now_nanos(),
        })
    }

    /// Ends `span` with its attributes; `error` marks it failed.
    pub fn end(&self, span: Active, attributes: Vec<otlp::KeyValue>, error: Option<&str>) {
        let finished = otlp::Span {
            trace_id: span.trace_id.to_vec(),
            span_id: span.span_id.to_vec(),
            parent_span_id: span.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: SPAN_NAME.into(),
            kind: 2,
            start_time_unix_nano: span.start,
            end_time_unix_nano: now_nanos().max(span.start),
            attributes,
            status: error.map(|e| otlp::Status { message: e.into(), code: 2 }),
        };
        if self.queue.try_send(finished).is_err() {
            self.metrics.span_dropped();
        }
    }
}

/// The resource every batch carries.
fn resource(settings: &TraceSettings) -> otlp::Resource {
    let mut attributes = vec![otlp::text("service.name", &settings.service_name)];
    if !settings.service_namespace.is_empty() {
        attributes.push(otlp::text("service.namespace", &settings.service_namespace));
    }
    if !settings.service_instance_id.is_empty() {
        attributes.push(otlp::text("service.instance.id", &settings.service_instance_id));
    }
    attributes.push(otlp::text("telemetry.sdk.name", "ratelimit-engine"));
    otlp::Resource { attributes }
}

/// One export request holding `spans`.
pub fn request(settings: &TraceSettings, spans: Vec<otlp::Span>) -> otlp::ExportTraceServiceRequest {
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(resource(settings)),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: "ratelimit-engine".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
}

/// Sends batches until the engine stops: every second, or as soon as a
/// batch is full. A failed export is said once (until one succeeds again);
/// its spans are dropped.
async fn export(settings: TraceSettings, mut spans: mpsc::Receiver<otlp::Span>) {
    let mut failing = false;
    let mut grpc = None;
    loop {
        let mut batch = Vec::new();
        let flush = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(flush);
        while batch.len() < BATCH {
            tokio::select! {
                s = spans.recv() => match s {
                    Some(s) => batch.push(s),
                    None => return,
                },
                () = &mut flush => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let sent = match settings.protocol {
            TraceProtocol::Http => post(&settings, request(&settings, batch)).await,
            TraceProtocol::Grpc => send_grpc(&settings, &mut grpc, request(&settings, batch)).await,
        };
        match sent {
            Ok(()) if failing => {
                failing = false;
                crate::logging::info(&format!("traces: exporting to {} again", settings.endpoint));
            }
            Err(e) if !failing => {
                failing = true;
                crate::logging::warn(&format!("traces: export to {} failed, spans dropped: {e}", settings.endpoint));
            }
            _ => {}
        }
    }
}

/// OTLP/HTTP: `POST <endpoint>` (…/v1/traces), protobuf, on a fresh
/// connection (one a second at most).
async fn post(settings: &TraceSettings, body: otlp::ExportTraceServiceRequest) -> Result<(), String> {
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = settings.endpoint.strip_prefix("http://").ok_or("only http:// endpoints for OTLP/HTTP")?;
    let (authority, path) = url.split_once('/').map_or((url, "/"), |(a, p)| (a, p));
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let body = body.encode_to_vec();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in &settings.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // `http://collector/v1/traces`: HTTP's port.
    let address = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let io = async {
        let mut conn = tokio::net::TcpStream::connect(address.as_str()).await.map_err(|e| e.to_string())?;
        conn.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        conn.write_all(&body).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
        let status = String::from_utf8_lossy(answer.get(..12).unwrap_or(&answer)).to_string();
        if status.starts_with("HTTP/1.1 2") || status.starts_with("HTTP/1.0 2") {
            Ok(())
        } else {
            Err(format!("answered {}", status.trim()))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), io).await.map_err(|_| "timed out".to_string())?
}

/// OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
/// on one channel kept between batches.
async fn send_grpc(
    settings: &TraceSettings,
    channel: &mut Option<tonic::client::Grpc<tonic::transport::Channel>>,
    body: otlp::ExportTraceServiceRequest,
) -> Result<(), String> {
    if channel.is_none() {
        let endpoint = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let endpoint = if settings.endpoint.starts_with("https://") {
            endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                .map_err(|e| e.to_string())?
        } else {
            endpoint
        };
        *channel = Some(tonic::client::Grpc::new(endpoint.connect_lazy()));
    }
    let Some(grpc) = channel.as_mut() else { return Err("no channel".into()) };
    grpc.ready().await.map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(body);
    for (k, v) in &settings.headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            request.metadata_mut().insert(k, v);
        }
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let codec: tonic_prost::ProstCodec<otlp::ExportTraceServiceRequest, otlp::ExportTraceServiceResponse> =
        tonic_prost::ProstCodec::default();
    grpc.unary(request, path, codec).await.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[cfg(test)]
mod tests;
