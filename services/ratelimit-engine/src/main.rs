//! A stateless rate limit service speaking Envoy's rate limit service API,
//! with its counts in Redis.
//!
//! ```text
//! ratelimit-engine --config FILE|DIR [--config ...] [--redis URL] [--grpc ADDR] [--http ADDR]
//!                  [--algorithm gcra|fixed-window] [--near-limit-ratio R] [--redis-timeout DUR]
//!                  [--merge-domains] [--watch DUR] [--redis-cluster HOST:PORT,...]
//!                  [--max-connections N] [--header-timeout DUR]
//! ```
//!
//! `--config DIR` reads the directory's `*.yaml`/`*.yml` regular files
//! (a FIFO or socket there is skipped; a file over 4 MiB is refused). With
//! `--watch DUR` the files' sizes and modification times are compared every
//! DUR and, once a change has stayed the same for two seconds, the files
//! are loaded whole and put in place for the next requests; a set that does
//! not load is refused with one log line naming the file and the field, the
//! last good config staying (`ratelimit_engine_config_reload_errors_total`).
//! `--merge-domains` lets several files declare one domain (upstream's
//! `MERGE_DOMAIN_CONFIG`).
//!
//! Each listener holds at most `--max-connections` (default 256)
//! connections; the HTTP one closes a connection whose request head takes
//! longer than `--header-timeout` (default 10s) to arrive (`listen.rs`).
//!
//! * gRPC `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` on
//!   `--grpc` (default `127.0.0.1:8081`);
//! * HTTP on `--http` (default `127.0.0.1:8080`): `POST /json` (the same
//!   request and answer in protobuf's JSON mapping: 200 OK, 429 OVER_LIMIT,
//!   400 undecodable, 503 Redis unavailable), `GET /metrics` (Prometheus),
//!   `GET /healthcheck` (200 when Redis answers `PING`).
//!
//! Each config file declares one domain in `envoyproxy/ratelimit`'s format
//! (see `config.rs`). Instances keep no state: run as many as needed
//! against one Redis. A Redis call that fails or takes longer than
//! `--redis-timeout` (default 100ms) answers UNAVAILABLE, so the proxy's
//! failure mode decides; the connection is re-established in the background.
//!
//! Once listening it prints `listening grpc=ADDR http=ADDR` (real ports when
//! given port 0).
#![forbid(unsafe_code)]

use ratelimit_engine::{config, limiter, listen, metrics};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use envoy_types::pb::envoy::service::ratelimit::v3 as pb;
use filters_core::ratelimit::protocol as wire;
use limiter::{Algorithm, Descriptor, Limiter, Request, Verdict};
use pb::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use std::sync::Arc;
use std::time::Duration;

struct Args {
    configs: Vec<String>,
    redis: String,
    grpc: String,
    http: String,
    algorithm: Algorithm,
    near_limit_ratio: f64,
    redis_timeout: Duration,
    merge_domains: bool,
    watch: Option<Duration>,
    cluster: Vec<String>,
    max_connections: usize,
    header_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        configs: Vec::new(),
        redis: "redis://127.0.0.1:6379".into(),
        grpc: "127.0.0.1:8081".into(),
        http: "127.0.0.1:8080".into(),
        algorithm: Algorithm::FixedWindow,
        near_limit_ratio: 0.8,
        redis_timeout: Duration::from_millis(100),
        merge_domains: false,
        watch: None,
        cluster: Vec::new(),
        max_connections: 256,
        header_timeout: Duration::from_secs(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => a.configs.push(value()?),
            "--redis" => a.redis = value()?,
            "--grpc" => a.grpc = value()?,
            "--http" => a.http = value()?,
            "--algorithm" => {
                a.algorithm = match value()?.as_str() {
                    "gcra" => Algorithm::Gcra,
                    "fixed-window" => Algorithm::FixedWindow,
                    other => return Err(format!("--algorithm: \"{other}\" is not gcra or fixed-window")),
                }
            }
            "--near-limit-ratio" => {
                let r: f64 = value()?.parse().map_err(|_| "--near-limit-ratio takes a number")?;
                if !(0.0..=1.0).contains(&r) {
                    return Err("--near-limit-ratio: must be between 0 and 1".into());
                }
                a.near_limit_ratio = r;
            }
            "--redis-timeout" => {
                a.redis_timeout =
                    filters_core::duration::parse_duration(&value()?).map_err(|e| format!("--redis-timeout {e}"))?;
            }
            "--merge-domains" => a.merge_domains = true,
            "--redis-cluster" => {
                a.cluster = value()?.split(',').map(|s| format!("redis://{}", s.trim())).collect();
            }
            "--watch" => {
                let d = filters_core::duration::parse_duration(&value()?).map_err(|e| format!("--watch {e}"))?;
                if d.is_zero() {
                    return Err("--watch: must be longer than zero".into());
                }
                a.watch = Some(d);
            }
            "--max-connections" => {
                a.max_connections =
                    value()?.parse().ok().filter(|n| *n > 0).ok_or("--max-connections takes a number above zero")?;
            }
            "--header-timeout" => {
                let d =
                    filters_core::duration::parse_duration(&value()?).map_err(|e| format!("--header-timeout {e}"))?;
                if d.is_zero() {
                    return Err("--header-timeout: must be longer than zero".into());
                }
                a.header_timeout = d;
            }
            "-h" | "--help" => {
                println!("ratelimit-engine --config FILE|DIR [...] [--redis URL] [--grpc ADDR] [--http ADDR] [--algorithm gcra|fixed-window] [--near-limit-ratio R] [--redis-timeout DUR] [--merge-domains] [--watch DUR] [--redis-cluster HOST:PORT,...] [--max-connections N] [--header-timeout DUR]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.configs.is_empty() {
        return Err("--config FILE is required (one per domain)".into());
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ratelimit-engine: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let stamps = config::Config::stat_files(&args.configs);
    let files = config::Config::read_files(&args.configs)?;
    let config = config::Config::load_with(&files, args.merge_domains)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(serve(args, config, (Ok(files), stamps)))
}

async fn serve(args: Args, config: config::Config, start: Start) -> Result<(), String> {
    let redis = store(&args).await?;
    let metrics = Arc::new(metrics::Metrics::new(config.limit_names.clone()));
    let domains = config.domains();
    let limiter = Arc::new(Limiter::new(config, redis, args.algorithm, args.near_limit_ratio, metrics));
    if let Some(every) = args.watch {
        tokio::spawn(watch(limiter.clone(), args.configs.clone(), args.merge_domains, start, every));
    }

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
    let metrics = limiter.metrics.clone();
    let grpc = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(Grpc(limiter)))
        // TCP_NODELAY (set by listen::accept): without it Nagle holds small
        // answers back and a proxy waits milliseconds per call (measured:
        // p50 7.5 ms instead of ~1 ms).
        .serve_with_incoming(listen::incoming(grpc_listener, args.max_connections, metrics.clone()));
    println!("listening grpc={grpc_addr} http={http_addr}");
    eprintln!(
        "ratelimit-engine: {domains} domain(s), {:?}, {}, grpc {grpc_addr}, http {http_addr}",
        args.algorithm,
        if args.cluster.is_empty() {
            format!("redis {}", args.redis)
        } else {
            format!("redis cluster {}", args.cluster.join(","))
        }
    );
    let http = serve_http(http_listener, app, args.max_connections, args.header_timeout, metrics);
    tokio::select! {
        r = grpc => r.map_err(|e| format!("grpc: {e}")),
        () = http => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
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
async fn watch(limiter: Arc<Limiter>, paths: Vec<String>, merge: bool, start: Start, every: Duration) {
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
        let stamps = off_runtime(move || config::Config::stat_files(&p)).await;
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
        let seen = off_runtime(move || config::Config::read_files(&p)).await;
        if seen == last {
            continue;
        }
        last = seen;
        match last.as_ref().map_err(String::clone).and_then(|files| config::Config::load_with(files, merge)) {
            Ok(config) => {
                limiter.replace(config);
                limiter.metrics.reload(true);
                eprintln!("ratelimit-engine: config reloaded, {} domain(s)", limiter.domains());
            }
            Err(e) => {
                limiter.metrics.reload(false);
                eprintln!("ratelimit-engine: config not reloaded, the last good one stays: {e}");
            }
        }
    }
}

/// What the watcher starts from: the files as read at start, and their
/// stamps taken before that read.
type Start = (Result<Vec<(String, String)>, String>, Result<Vec<(String, config::Stamp)>, String>);

/// Runs file-system work on the blocking pool.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(format!("config watcher: {e}")))
}

/// The Redis (`--redis`) or Redis Cluster (`--redis-cluster`) to count in.
async fn store(args: &Args) -> Result<limiter::Store, String> {
    if !args.cluster.is_empty() {
        let client = redis::cluster::ClusterClient::builder(args.cluster.clone())
            .connection_timeout(args.redis_timeout.max(Duration::from_millis(200)))
            .response_timeout(args.redis_timeout)
            .retries(2)
            .build()
            .map_err(|e| format!("--redis-cluster: {e}"))?;
        let conn = client.get_async_connection().await.map_err(|e| format!("--redis-cluster: {e}"))?;
        return Ok(limiter::Store::Cluster(conn));
    }
    let client = redis::Client::open(args.redis.as_str()).map_err(|e| format!("--redis {}: {e}", args.redis))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(args.redis_timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(args.redis_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    // Lazy: the service starts (and answers UNAVAILABLE) while Redis is down.
    let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, manager_config)
        .map_err(|e| format!("redis: {e}"))?;
    Ok(limiter::Store::Single(manager))
}

struct Grpc(Arc<Limiter>);

/// gRPC and `/json` carry the same messages; the engine reads and writes
/// them as one type, the protocol's (`filters_core::ratelimit::protocol`).
/// tonic hands the gRPC handler Envoy's generated types, which are re-read
/// as ours through their protobuf encoding (same field numbers: tested
/// below).
fn transcode<A: prost::Message, B: prost::Message + Default>(a: &A) -> Result<B, prost::DecodeError> {
    B::decode(a.encode_to_vec().as_slice())
}

/// The limiter's request for a message: each descriptor charges its own
/// `hits_addend` when it has one (0 checks without counting, as upstream),
/// else the request's (at least 1).
fn request_of(r: wire::RateLimitRequest) -> Request {
    let hits = u64::from(r.hits_addend.max(1));
    Request {
        domain: r.domain,
        descriptors: r
            .descriptors
            .into_iter()
            .map(|d| Descriptor {
                hits: d.hits_addend.map_or(hits, |v| v.value),
                limit: d.limit.map(|l| (l.requests_per_unit, l.unit)),
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
            })
            .collect(),
    }
}

fn status_of(v: &Verdict) -> wire::DescriptorStatus {
    wire::DescriptorStatus {
        code: v.code,
        current_limit: v.limit.as_ref().map(|l| wire::RateLimitValue {
            requests_per_unit: l.requests_per_unit,
            unit: l.unit,
            name: l.name.clone(),
        }),
        limit_remaining: v.remaining,
        duration_until_reset: v.limit.as_ref().map(|_| wire::ProtoDuration {
            seconds: i64::try_from(v.reset.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(v.reset.subsec_nanos()).unwrap_or(0),
        }),
    }
}

/// Refuses what upstream refuses before deciding (gRPC INVALID_ARGUMENT,
/// HTTP 400).
fn invalid(r: &wire::RateLimitRequest) -> Option<&'static str> {
    if r.domain.is_empty() {
        return Some("rate limit domain must not be empty");
    }
    r.descriptors.is_empty().then_some("rate limit descriptor list must not be empty")
}

/// Decides a request for either transport; `Err` when Redis failed (counted).
async fn decide(limiter: &Limiter, r: wire::RateLimitRequest) -> Result<wire::RateLimitResponse, String> {
    match limiter.should_rate_limit(&request_of(r)).await {
        Ok((code, verdicts)) => Ok(wire::RateLimitResponse {
            overall_code: code,
            statuses: verdicts.iter().map(status_of).collect(),
            response_headers_to_add: Vec::new(),
            request_headers_to_add: Vec::new(),
        }),
        Err(e) => {
            limiter.metrics.redis_error();
            Err(format!("redis: {e}"))
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for Grpc {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<pb::RateLimitRequest>,
    ) -> Result<tonic::Response<pb::RateLimitResponse>, tonic::Status> {
        self.0.metrics.call(true);
        let r: wire::RateLimitRequest =
            transcode(&request.into_inner()).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if let Some(why) = invalid(&r) {
            self.0.metrics.bad_request();
            return Err(tonic::Status::invalid_argument(why));
        }
        let answer = decide(&self.0, r).await.map_err(tonic::Status::unavailable)?;
        transcode(&answer).map(tonic::Response::new).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn json(State(limiter): State<Arc<Limiter>>, body: Bytes) -> Response {
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
    match decide(&limiter, r).await {
        Ok(answer) => {
            let over = answer.overall_code == wire::code::OVER_LIMIT;
            let status = if over { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
            (status, [("content-type", "application/json")], wire::encode_json_response(&answer)).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn prometheus(State(limiter): State<Arc<Limiter>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], limiter.metrics.render()).into_response()
}

async fn healthcheck(State(limiter): State<Arc<Limiter>>) -> Response {
    let mut conn = limiter.redis.clone();
    match redis::cmd("PING").query_async::<String>(&mut conn).await {
        Ok(_) => (StatusCode::OK, "OK\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use filters_core::ratelimit::global;
    use prost::Message;

    /// The filter declares the few messages it needs by hand; Envoy's
    /// generated types (envoy-types) must read them, and vice versa.
    #[test]
    fn filter_messages_agree_with_envoys_generated_types() {
        let d = vec![vec![
            ("generic_key".to_string(), "a".to_string()),
            ("remote_address".to_string(), "10.1.2.3".to_string()),
        ]];
        let req = pb::RateLimitRequest::decode(global::encode_grpc_request("edge", &d).as_slice()).unwrap();
        assert_eq!(req.domain, "edge");
        let e = &req.descriptors[0].entries;
        assert_eq!((e[0].key.as_str(), e[1].value.as_str()), ("generic_key", "10.1.2.3"));

        let target = core::GrpcService::decode(wire::grpc_target("ratelimit", "rls.local").as_slice()).unwrap();
        let Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(g)) = target.target_specifier else {
            panic!("not envoy_grpc: {target:?}");
        };
        assert_eq!((g.cluster_name.as_str(), g.authority.as_str()), ("ratelimit", "rls.local"));

        let verdict = Verdict {
            code: 2,
            limit: Some(config::Limit {
                requests_per_unit: 7,
                unit: 2,
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
        let a = global::decode_grpc_answer(&answer.encode_to_vec()).unwrap();
        assert!(a.over_limit);
        assert_eq!(a.statuses[0].quota, Some((7, 60)));
        assert_eq!(a.statuses[0].reset_nanos, 1_500_000_000);
        assert_eq!(a.response_headers, vec![("x-a".to_string(), "1".to_string())]);

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
