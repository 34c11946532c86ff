//! The engine's listeners, as envoyproxy/ratelimit's `server` package:
//! gRPC `ShouldRateLimit`, HTTP (`/json`, `/metrics`, `/healthcheck`), the
//! bounds on connections ([`listen`]), and the config watcher.

pub mod listen;

use crate::config::Config;
use crate::metrics;
use crate::redis::Counter;
use crate::service::{decide_traced, invalid, Service};
use crate::settings::Settings;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use envoy_types::pb::envoy::service::ratelimit::v3 as pb;
use pb::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use rls_protocol::{self as wire, Code};
use std::sync::Arc;
use std::time::Duration;

/// Serves `config` until interrupted: gRPC and HTTP listeners, the config
/// watcher when asked for.
pub async fn serve(args: Settings, config: Config, start: Start) -> Result<(), String> {
    let redis = crate::redis::connect(&args).await?;
    let metrics = Arc::new(metrics::Metrics::new(config.limit_names.clone()));
    let domains = config.domains();
    let tracer = args.tracing.clone().map(|t| crate::traces::Tracer::start(t, metrics.clone()));
    let mut service = Service::new(config, Counter::new(redis, args.algorithm), args.near_limit_ratio, metrics);
    service.tracer = tracer;
    service.global_shadow = args.shadow_mode;
    service.key_prefix = args.key_prefix.clone();
    service.healthy_needs_config = args.healthy_needs_config;
    let limiter = Arc::new(service);
    if let Some(every) = args.watch {
        tokio::spawn(watch(limiter.clone(), crate::config::Sources::of(&args), args.merge_domains, start, every));
    }
    if let Some(source) = &args.xds {
        from_xds(source, limiter.clone(), args.merge_domains).await;
    }
    let grpc_tls = args.grpc_tls.as_ref().map(crate::tls::server_config).transpose()?;

    let grpc_listener =
        tokio::net::TcpListener::bind(&args.grpc).await.map_err(|e| format!("--grpc {}: {e}", args.grpc))?;
    let http_listener =
        tokio::net::TcpListener::bind(&args.http).await.map_err(|e| format!("--http {}: {e}", args.http))?;
    let grpc_addr = grpc_listener.local_addr().map_err(|e| e.to_string())?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;

    let app = axum::Router::new()
        .route("/json", post(json))
        .route("/metrics", get(prometheus))
        .route("/healthcheck", get(healthcheck))
        .with_state(limiter.clone());
    // Upstream's debug port: the loaded configuration, and the metrics.
    if let Some(addr) = &args.debug {
        let debug = axum::Router::new()
            .route("/rlconfig", get(rlconfig))
            .route("/stats", get(prometheus))
            .route("/healthcheck", get(healthcheck))
            .with_state(limiter.clone());
        side_listener(addr, "DEBUG_HOST:DEBUG_PORT", debug, &args, limiter.metrics.clone()).await?;
    }
    if let Some((addr, path)) = &args.prometheus {
        let app = axum::Router::new().route(path, get(prometheus)).with_state(limiter.clone());
        side_listener(addr, "PROMETHEUS_ADDR", app, &args, limiter.metrics.clone()).await?;
    }
    let metrics = limiter.metrics.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = grpc_tls {
        builder = builder.tls_config(tls).map_err(|e| format!("GRPC_SERVER_TLS_CERT/KEY: {e}"))?;
    }
    let client_san = args.grpc_tls.as_ref().and_then(|t| t.client_san.clone());
    let grpc = builder
        .add_service(RateLimitServiceServer::new(Grpc(limiter, client_san)))
        // TCP_NODELAY (set by listen::accept): without it Nagle holds small
        // answers back and a proxy waits milliseconds per call (measured:
        // p50 7.5 ms instead of ~1 ms).
        .serve_with_incoming(listen::incoming(grpc_listener, args.max_connections, metrics.clone()));
    println!("listening grpc={grpc_addr} http={http_addr}");
    crate::logging::info(&format!(
        "{domains} domain(s), {:?}, {}, grpc {grpc_addr}, http {http_addr}",
        args.algorithm,
        if args.cluster.is_empty() {
            format!("redis {}", redact(&args.redis))
        } else {
            format!("redis cluster {}", args.cluster.iter().map(|u| redact(u)).collect::<Vec<_>>().join(","))
        }
    ));
    let http = serve_http(http_listener, app, args.max_connections, args.header_timeout, metrics);
    tokio::select! {
        r = grpc => r.map_err(|e| format!("grpc: {e}")),
        () = http => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Follows the xDS server in the background; unless told to start without
/// it, waits here for the first configuration (the listeners open after).
async fn from_xds(source: &crate::settings::XdsSource, limiter: Arc<Service>, merge: bool) {
    let (tell, first) = tokio::sync::oneshot::channel();
    let wait = !source.force_start;
    tokio::spawn(crate::xds::follow(source.clone(), limiter, merge, wait.then_some(tell)));
    if wait {
        crate::logging::info(&format!(
            "waiting for the first configuration from xDS {} (FORCE_START_WITHOUT_INITIAL_CONFIG=true serves at once)",
            source.server
        ));
        let _ = first.await;
    }
}

/// A Redis URL with its password hidden, for the log.
pub(crate) fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", url.get(at..).unwrap_or("")),
        _ => url.to_string(),
    }
}

/// Binds `addr` (named `what` in an error) and serves `app` there in the
/// background, bounded as the main HTTP listener is.
async fn side_listener(
    addr: &str,
    what: &str,
    app: axum::Router,
    args: &Settings,
    metrics: Arc<metrics::Metrics>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("{what} {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    crate::logging::info(&format!("{what}: listening on {bound}"));
    tokio::spawn(serve_http(listener, app, args.max_connections, args.header_timeout, metrics));
    Ok(())
}

/// Serves HTTP/1.1: at most `max` connections, each closed when a request
/// head takes longer than `header_timeout` to arrive (see `listen.rs`).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    max: usize,
    header_timeout: Duration,
    metrics: Arc<metrics::Metrics>,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let conn = listen::accept(&listener, &places, &metrics).await;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                .await;
        });
    }
}

/// How long config files must stay the same before a change is loaded.
const SETTLE: Duration = Duration::from_secs(2);

/// Looks at the config files every `every` and, once a change has settled,
/// loads them and puts the result in place, or keeps the last good config
/// and says why.
///
/// A poll only compares each file's size and modification time (nothing is
/// opened). A change is read once the files have looked the same for
/// [`SETTLE`] (and at least two polls): a file written in place (truncated,
/// then written in parts with pauses) is not loaded half-written. Files are
/// stat'ed and read on tokio's blocking pool, never on the threads that
/// answer requests.
async fn watch(limiter: Arc<Service>, paths: crate::config::Sources, merge: bool, start: Start, every: Duration) {
    // What the files held (or why they could not be read) when last read:
    // each change is acted on once, an unreadable file reported once.
    let (mut last, stamps) = start;
    // The stamps last acted on; those of the previous poll and since when.
    let mut settled = stamps.clone();
    let mut previous = stamps;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let p = paths.clone();
        let stamps = off_runtime(move || Config::stat_files(&p)).await;
        if stamps != previous {
            previous = stamps;
            since = tokio::time::Instant::now();
            continue;
        }
        if stamps == settled || since.elapsed() < SETTLE {
            continue;
        }
        settled = stamps;
        let p = paths.clone();
        let seen = off_runtime(move || Config::read_files(&p)).await;
        if seen == last {
            continue;
        }
        last = seen;
        match last.as_ref().map_err(String::clone).and_then(|files| Config::load_with(files, merge)) {
            Ok(config) => {
                limiter.replace(config);
                limiter.metrics.reload(true);
                crate::logging::info(&format!("config reloaded, {} domain(s)", limiter.domains()));
            }
            Err(e) => {
                limiter.metrics.reload(false);
                crate::logging::warn(&format!("config not reloaded, the last good one stays: {e}"));
            }
        }
    }
}

/// What the watcher starts from: the files as read at start, and their
/// stamps taken before that read.
pub type Start = (Result<Vec<(String, String)>, String>, Result<Vec<(String, crate::config::Stamp)>, String>);

/// Runs file-system work on the blocking pool.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(format!("config watcher: {e}")))
}

/// The gRPC service; with `GRPC_CLIENT_TLS_SAN`, the DNS name every
/// client's certificate must hold.
struct Grpc(Arc<Service>, Option<String>);

/// gRPC and `/json` carry the same messages; the engine reads and writes
/// them as one type, the protocol's (`filters_core::ratelimit::protocol`).
/// tonic hands the gRPC handler Envoy's generated types, which are re-read
/// as ours through their protobuf encoding (same field numbers: tested
/// below).
fn transcode<A: prost::Message, B: prost::Message + Default>(a: &A) -> Result<B, prost::DecodeError> {
    B::decode(a.encode_to_vec().as_slice())
}
#[tonic::async_trait]
impl RateLimitService for Grpc {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<pb::RateLimitRequest>,
    ) -> Result<tonic::Response<pb::RateLimitResponse>, tonic::Status> {
        self.0.metrics.call(true);
        if let Some(san) = &self.1 {
            if !request.peer_certs().is_some_and(|chain| crate::tls::names(&chain, san)) {
                self.0.metrics.peer_refused();
                return Err(tonic::Status::unauthenticated(format!("the client certificate does not name {san}")));
            }
        }
        let traceparent = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let r: wire::RateLimitRequest =
            transcode(&request.into_inner()).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if let Some(why) = invalid(&r) {
            self.0.metrics.bad_request();
            return Err(tonic::Status::invalid_argument(why));
        }
        let answer =
            decide_traced(&self.0, r, traceparent.as_deref(), "grpc").await.map_err(tonic::Status::unavailable)?;
        transcode(&answer).map(tonic::Response::new).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn json(State(limiter): State<Arc<Service>>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    limiter.metrics.call(false);
    let r = match wire::decode_json_request(&body) {
        Ok(r) => r,
        Err(e) => {
            limiter.metrics.bad_request();
            return (StatusCode::BAD_REQUEST, format!("bad request: {e}\n")).into_response();
        }
    };
    if let Some(why) = invalid(&r) {
        limiter.metrics.bad_request();
        return (StatusCode::BAD_REQUEST, format!("bad request: {why}\n")).into_response();
    }
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    match decide_traced(&limiter, r, traceparent, "http").await {
        Ok(answer) => {
            let over = answer.overall_code == Code::OverLimit.wire();
            let status = if over { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
            (status, [("content-type", "application/json")], wire::encode_json_response(&answer)).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn prometheus(State(limiter): State<Arc<Service>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], limiter.metrics.render()).into_response()
}

async fn rlconfig(State(limiter): State<Arc<Service>>) -> Response {
    ([("content-type", "text/plain")], limiter.dump()).into_response()
}

async fn healthcheck(State(limiter): State<Arc<Service>>) -> Response {
    if limiter.healthy_needs_config && limiter.domains() == 0 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no rate limit configuration loaded\n").into_response();
    }
    let mut conn = limiter.counter.store();
    match redis::cmd("PING").query_async::<String>(&mut conn).await {
        Ok(_) => (StatusCode::OK, "OK\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limit;
    use crate::service::{request_of, status_of, Verdict};
    use envoy_types::pb::envoy::config::core::v3 as core;
    use prost::Message;

    /// The protocol crate declares the few messages both sides need by
    /// hand; Envoy's generated types (envoy-types) must read them, and vice
    /// versa.
    #[test]
    fn protocol_messages_agree_with_envoys_generated_types() {
        let entry = |k: &str, v: &str| wire::DescriptorEntry { key: k.into(), value: v.into() };
        let ours = wire::RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![wire::RateLimitDescriptor {
                entries: vec![entry("generic_key", "a"), entry("remote_address", "10.1.2.3")],
                ..Default::default()
            }],
            hits_addend: 0,
        };
        let req = pb::RateLimitRequest::decode(ours.encode_to_vec().as_slice()).unwrap();
        assert_eq!(req.domain, "edge");
        let e = &req.descriptors[0].entries;
        assert_eq!((e[0].key.as_str(), e[1].value.as_str()), ("generic_key", "10.1.2.3"));

        let target = core::GrpcService::decode(wire::grpc_target("ratelimit", "rls.local").as_slice()).unwrap();
        let Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(g)) = target.target_specifier else {
            panic!("not envoy_grpc: {target:?}");
        };
        assert_eq!((g.cluster_name.as_str(), g.authority.as_str()), ("ratelimit", "rls.local"));

        let verdict = Verdict {
            code: Code::OverLimit,
            limit: Some(Limit {
                requests_per_unit: 7,
                unit: wire::Unit::Minute,
                unit_secs: 60,
                name: "n".into(),
                shadow: false,
                quota: false,
                replaces: Vec::new(),
                id: 0,
            }),
            remaining: 0,
            reset: Duration::from_millis(1500),
        };
        let answer = pb::RateLimitResponse {
            overall_code: 2,
            statuses: vec![transcode(&status_of(&verdict)).unwrap()],
            response_headers_to_add: vec![core::HeaderValue {
                key: "x-a".into(),
                value: "1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let back = wire::RateLimitResponse::decode(answer.encode_to_vec().as_slice()).unwrap();
        assert_eq!(Code::from_wire(back.overall_code), Code::OverLimit);
        let limit = back.statuses[0].current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, wire::Unit::from_wire(limit.unit)), (7, Some(wire::Unit::Minute)));
        let reset = back.statuses[0].duration_until_reset.as_ref().unwrap();
        assert_eq!((reset.seconds, reset.nanos), (1, 500_000_000));
        assert_eq!(back.response_headers_to_add[0].key, "x-a");

        // Envoy's request, with a descriptor's own hits_addend, read as ours.
        let envoy = pb::RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor {
                entries: vec![],
                hits_addend: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 4 }),
                ..Default::default()
            }],
            hits_addend: 2,
        };
        let ours: wire::RateLimitRequest = transcode(&envoy).unwrap();
        let req = request_of(ours);
        assert_eq!((req.domain.as_str(), req.descriptors[0].hits), ("edge", 4));
    }
}
