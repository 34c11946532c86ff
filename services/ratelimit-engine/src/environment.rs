//! envoyproxy/ratelimit's settings, read from the environment as its
//! `src/settings/settings.go` reads them, so that the engine runs where
//! upstream's image runs (`/bin/ratelimit` with no arguments, configured by
//! Istio's sample or Envoy Gateway's Deployment) with nothing changed.
//!
//! Each variable is one of: read and honoured ([`SUPPORTED`]); known to
//! upstream but not done here, said in one line at start when set (or, for
//! `USE_STATSD`, whose upstream default is on, unless set off)
//! ([`NOT_DONE`]); or, for the few whose absence would change what the
//! engine promises (another backend, Sentinel, TLS over a unix socket), a
//! refusal to start naming the variable.

use crate::redis::Algorithm;
use crate::settings::{
    ClientTls, LogFormat, LogLevel, RuntimeDir, ServerTls, Settings, TraceProtocol, TraceSettings, XdsSource,
};
use std::time::Duration;

/// The variables read and honoured (the README's compatibility table lists
/// what each does).
pub const SUPPORTED: &[&str] = &[
    "HOST",
    "PORT",
    "GRPC_HOST",
    "GRPC_PORT",
    "DEBUG_HOST",
    "DEBUG_PORT",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "CONFIG_TYPE",
    "RUNTIME_ROOT",
    "RUNTIME_SUBDIRECTORY",
    "RUNTIME_APPDIRECTORY",
    "RUNTIME_IGNOREDOTFILES",
    "RUNTIME_WATCH_ROOT",
    "REDIS_SOCKET_TYPE",
    "REDIS_TYPE",
    "REDIS_URL",
    "REDIS_AUTH",
    "REDIS_TLS",
    "REDIS_POOL_SIZE",
    "USE_STATSD",
    "USE_PROMETHEUS",
    "PROMETHEUS_ADDR",
    "PROMETHEUS_PATH",
    "NEAR_LIMIT_RATIO",
    "SHADOW_MODE",
    "MERGE_DOMAIN_CONFIG",
    "CACHE_KEY_PREFIX",
    "BACKEND_TYPE",
    "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED",
    "GRPC_SERVER_USE_TLS",
    "GRPC_SERVER_TLS_CERT",
    "GRPC_SERVER_TLS_KEY",
    "GRPC_CLIENT_TLS_CACERT",
    "GRPC_SERVER_TLS_CA_CERT",
    "GRPC_CLIENT_TLS_SAN",
    "REDIS_TLS_CLIENT_CERT",
    "REDIS_TLS_CLIENT_KEY",
    "REDIS_TLS_CACERT",
    "FORCE_START_WITHOUT_INITIAL_CONFIG",
    "CONFIG_GRPC_XDS_NODE_ID",
    "CONFIG_GRPC_XDS_SERVER_URL",
    "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
    "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
    "CONFIG_GRPC_XDS_SERVER_USE_TLS",
    "CONFIG_GRPC_XDS_CLIENT_TLS_CERT",
    "CONFIG_GRPC_XDS_CLIENT_TLS_KEY",
    "CONFIG_GRPC_XDS_SERVER_TLS_CACERT",
    "CONFIG_GRPC_XDS_SERVER_TLS_SAN",
    "TRACING_ENABLED",
    "TRACING_SERVICE_NAME",
    "TRACING_SERVICE_NAMESPACE",
    "TRACING_SERVICE_INSTANCE_ID",
    "TRACING_EXPORTER_PROTOCOL",
    "TRACING_SAMPLING_RATE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

/// Upstream's variables this engine does not act on: each, when set, is
/// named in one line at start with what happens instead.
pub const NOT_DONE: &[(&str, &str)] = &[
    ("PROTO", "the engine listens on TCP"),
    ("GRPC_UDS", "the engine listens on GRPC_HOST:GRPC_PORT, not on a unix socket"),
    ("GRPC_MAX_CONNECTION_AGE", "gRPC connections are not aged out"),
    ("GRPC_MAX_CONNECTION_AGE_GRACE", "gRPC connections are not aged out"),
    ("STATSD_HOST", "no statsd is sent"),
    ("STATSD_PORT", "no statsd is sent"),
    ("EXTRA_TAGS", "no statsd is sent"),
    ("STATS_FLUSH_INTERVAL", "no statsd is sent"),
    ("DISABLE_STATS", "metrics are always kept (GET /metrics)"),
    ("USE_DOG_STATSD", "no statsd is sent"),
    ("USE_DOG_STATSD_MOGRIFIERS", "no statsd is sent"),
    (
        "PROMETHEUS_MAPPER_YAML",
        "no statsd mapping is applied; the series carry this engine's names and upstream's statsd names as Envoy \
         Gateway's mapping writes them (ratelimit_service_rate_limit_*{domain,key1,...})",
    ),
    ("EXPIRATION_JITTER_MAX_SECONDS", "a counter expires one second after its window"),
    ("LOCAL_CACHE_SIZE_IN_BYTES", "no local over-limit cache: every descriptor is counted in Redis"),
    ("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", "a refused hit is counted, as upstream's default"),
    ("LIMIT_RESPONSE_HEADERS_ENABLED", "no rate-limit headers are added to the answer"),
    ("LIMIT_LIMIT_HEADER", "no rate-limit headers are added to the answer"),
    ("LIMIT_REMAINING_HEADER", "no rate-limit headers are added to the answer"),
    ("LIMIT_RESET_HEADER", "no rate-limit headers are added to the answer"),
    ("REDIS_PIPELINE_WINDOW", "commands are pipelined on one multiplexed connection"),
    ("REDIS_PIPELINE_LIMIT", "commands are pipelined on one multiplexed connection"),
    ("REDIS_PERSECOND", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_SOCKET_TYPE", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_TYPE", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_URL", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_POOL_SIZE", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_AUTH", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_TLS", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_PIPELINE_WINDOW", "per-second limits count in the one Redis"),
    ("REDIS_PERSECOND_PIPELINE_LIMIT", "per-second limits count in the one Redis"),
    ("REDIS_HEALTH_CHECK_ACTIVE_CONNECTION", "/healthcheck always asks Redis (PING)"),
    (
        "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
        "the Redis server's certificate is checked for its name as well as its chain",
    ),
    ("MEMCACHE_HOST_PORT", "the backend is Redis"),
    ("MEMCACHE_SRV", "the backend is Redis"),
    ("CONFIG_GRPC_XDS_NODE_METADATA", "the node sent to the xDS server carries its id only"),
    (
        "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
        "the xDS client reconnects every CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
    ),
    (
        "XDS_CLIENT_BACKOFF_MAX_INTERVAL",
        "the xDS client reconnects every CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
    ),
    (
        "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
        "the xDS client reconnects every CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
    ),
    ("XDS_CLIENT_BACKOFF_JITTER", "the xDS client reconnects every CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL"),
];

/// Settings from the environment (`get` reads one variable), and the lines
/// to log once at start about what is not done.
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<(Settings, Vec<String>), String> {
    let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let text = |name: &str, default: &str| var(name).unwrap_or_else(|| default.to_string());
    let flag = |name: &str, default: bool| -> Result<bool, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => parse_bool(&v).ok_or_else(|| format!("{name}={v}: not a boolean (true or false)")),
        }
    };
    let port = |name: &str, default: u16| -> Result<u16, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{name}={v}: not a port number")),
        }
    };
    let mut notes = Vec::new();
    let mut s = Settings::defaults();
    s.http = join(&text("HOST", "0.0.0.0"), port("PORT", 8080)?);
    s.grpc = join(&text("GRPC_HOST", "0.0.0.0"), port("GRPC_PORT", 8081)?);
    s.debug = Some(join(&text("DEBUG_HOST", "0.0.0.0"), port("DEBUG_PORT", 6070)?));
    s.log_level = match text("LOG_LEVEL", "WARN").to_ascii_lowercase().as_str() {
        "trace" | "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" | "warning" => LogLevel::Warn,
        "error" | "fatal" | "panic" => LogLevel::Error,
        other => return Err(format!("LOG_LEVEL={other}: not one of debug, info, warn, error")),
    };
    s.log_format = match text("LOG_FORMAT", "text").to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(format!("LOG_FORMAT={other}: not text or json")),
    };
    s.xds = match text("CONFIG_TYPE", "FILE").to_ascii_uppercase().as_str() {
        "FILE" => None,
        "GRPC_XDS_SOTW" => Some(xds_source(&var, &flag)?),
        other => return Err(format!("CONFIG_TYPE={other}: not FILE or GRPC_XDS_SOTW")),
    };
    s.grpc_tls = grpc_tls(&var, &flag)?;
    if flag("TRACING_ENABLED", false)? {
        match tracing(&var)? {
            Ok(t) => s.tracing = Some(t),
            Err(note) => notes.push(note),
        }
    }
    // $RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/$RUNTIME_APPDIRECTORY: upstream
    // loads the files of that directory as the configuration.
    let root = text("RUNTIME_ROOT", "/srv/runtime_data/current");
    let mut dir = std::path::PathBuf::from(root);
    if let Some(sub) = var("RUNTIME_SUBDIRECTORY") {
        dir.push(sub);
    }
    dir.push(text("RUNTIME_APPDIRECTORY", "config"));
    s.runtime =
        Some(RuntimeDir { dir: dir.display().to_string(), ignore_dotfiles: flag("RUNTIME_IGNOREDOTFILES", false)? });
    // Upstream reloads on every change (watching the root, or with
    // RUNTIME_WATCH_ROOT=false the directory itself: both are the same
    // files to a poll); the engine polls them every second.
    let _ = flag("RUNTIME_WATCH_ROOT", true)?;
    s.watch = Some(Duration::from_secs(1));
    if s.xds.is_some() {
        // Upstream reads no files then: the xDS server is the only source.
        s.runtime = None;
        s.watch = None;
    }
    s.redis = redis_url(&var, &flag)?;
    if flag("REDIS_TLS", false)? {
        s.redis_tls = Some(ClientTls {
            cert: var("REDIS_TLS_CLIENT_CERT"),
            key: var("REDIS_TLS_CLIENT_KEY"),
            ca: var("REDIS_TLS_CACERT"),
        });
    }
    match text("REDIS_TYPE", "SINGLE").to_ascii_uppercase().as_str() {
        "SINGLE" => {}
        "CLUSTER" => {
            s.cluster = s.redis.split(',').map(|n| redis_url_of(n.trim(), &var, &flag)).collect::<Result<_, _>>()?;
        }
        other => return Err(format!("REDIS_TYPE={other}: not SINGLE or CLUSTER (Sentinel is not supported)")),
    }
    if let Some(n) = var("REDIS_POOL_SIZE") {
        n.parse::<u32>().map_err(|_| format!("REDIS_POOL_SIZE={n}: not a number"))?;
        notes.push(format!(
            "REDIS_POOL_SIZE={n}: the engine keeps one multiplexed, pipelined connection per Redis node instead of a pool"
        ));
    }
    match text("BACKEND_TYPE", "redis").to_ascii_lowercase().as_str() {
        "redis" => {}
        other => return Err(format!("BACKEND_TYPE={other}: the engine counts in Redis only")),
    }
    if flag("USE_STATSD", true)? {
        notes.push(
            "USE_STATSD=true (upstream's default): this engine sends no statsd; its metrics are on GET /metrics, and \
             with USE_PROMETHEUS=true on PROMETHEUS_ADDR (set USE_STATSD=false to silence this line)"
                .into(),
        );
    }
    if flag("USE_PROMETHEUS", false)? {
        let addr = text("PROMETHEUS_ADDR", ":9090");
        let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr };
        let path = text("PROMETHEUS_PATH", "/metrics");
        if !path.starts_with('/') {
            return Err(format!("PROMETHEUS_PATH={path}: must start with /"));
        }
        s.prometheus = Some((addr, path));
    }
    if let Some(r) = var("NEAR_LIMIT_RATIO") {
        let ratio: f64 = r.parse().map_err(|_| format!("NEAR_LIMIT_RATIO={r}: not a number"))?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("NEAR_LIMIT_RATIO={r}: must be between 0 and 1"));
        }
        s.near_limit_ratio = ratio;
    }
    s.shadow_mode = flag("SHADOW_MODE", false)?;
    s.merge_domains = flag("MERGE_DOMAIN_CONFIG", false)?;
    s.key_prefix = text("CACHE_KEY_PREFIX", "");
    s.healthy_needs_config = flag("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", false)?;
    // Upstream counts in a fixed window; so does the engine by default.
    s.algorithm = Algorithm::FixedWindow;
    for (name, instead) in NOT_DONE {
        if let Some(v) = var(name) {
            notes.push(format!("{name}={v} is not supported: {instead}"));
        }
    }
    Ok((s, notes))
}

/// `CONFIG_TYPE=GRPC_XDS_SOTW`: where the configuration comes from.
fn xds_source(var: &Var<'_>, flag: &Flag<'_>) -> Result<XdsSource, String> {
    let server = var("CONFIG_GRPC_XDS_SERVER_URL").unwrap_or_else(|| "localhost:18000".into());
    if server.contains("://") || !server.contains(':') {
        return Err(format!("CONFIG_GRPC_XDS_SERVER_URL={server}: not host:port"));
    }
    let retry = match var("CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL") {
        None => Duration::from_secs(3),
        Some(v) => crate::settings::parse_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL={v}: not a duration such as 3s"))?,
    };
    let mut headers = Vec::new();
    for pair in var("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS").unwrap_or_default().split(',') {
        if pair.trim().is_empty() {
            continue;
        }
        let (k, v) = pair.split_once(':').ok_or_else(|| {
            format!(
                "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS: \"{pair}\" is not name:value (pairs separated by commas)"
            )
        })?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let tls = flag("CONFIG_GRPC_XDS_SERVER_USE_TLS", false)?.then(|| ClientTls {
        cert: var("CONFIG_GRPC_XDS_CLIENT_TLS_CERT"),
        key: var("CONFIG_GRPC_XDS_CLIENT_TLS_KEY"),
        ca: var("CONFIG_GRPC_XDS_SERVER_TLS_CACERT"),
    });
    if let Some(t) = &tls {
        if t.cert.is_some() != t.key.is_some() {
            return Err(
                "CONFIG_GRPC_XDS_CLIENT_TLS_CERT and CONFIG_GRPC_XDS_CLIENT_TLS_KEY: give both or neither".into()
            );
        }
    }
    Ok(XdsSource {
        server,
        node_id: var("CONFIG_GRPC_XDS_NODE_ID").unwrap_or_else(|| "default".into()),
        retry,
        tls,
        server_san: var("CONFIG_GRPC_XDS_SERVER_TLS_SAN"),
        headers,
        force_start: flag("FORCE_START_WITHOUT_INITIAL_CONFIG", false)?,
    })
}

/// `TRACING_ENABLED=true`: where spans go. A setting that cannot be read
/// stops the engine; an endpoint it cannot send to (OTLP/HTTP over TLS) is
/// the inner `Err`, a line at start, and no traces.
fn tracing(var: &Var<'_>) -> Result<Result<TraceSettings, String>, String> {
    let protocol = match var("TRACING_EXPORTER_PROTOCOL").unwrap_or_else(|| "http".into()).to_ascii_lowercase().as_str()
    {
        "http" | "http/protobuf" => TraceProtocol::Http,
        "grpc" => TraceProtocol::Grpc,
        other => return Err(format!("TRACING_EXPORTER_PROTOCOL={other}: not http or grpc")),
    };
    let rate = match var("TRACING_SAMPLING_RATE") {
        None => 1.0,
        Some(r) => r
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| format!("TRACING_SAMPLING_RATE={r}: not a number from 0 to 1"))?,
    };
    let with_scheme = |e: String| if e.contains("://") { e } else { format!("http://{e}") };
    let endpoint = match (protocol, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (_, Some(traces), _) => with_scheme(traces),
        (TraceProtocol::Http, None, Some(base)) => format!("{}/v1/traces", with_scheme(base).trim_end_matches('/')),
        (TraceProtocol::Http, None, None) => "http://localhost:4318/v1/traces".into(),
        (TraceProtocol::Grpc, None, Some(base)) => with_scheme(base),
        (TraceProtocol::Grpc, None, None) => "http://localhost:4317".into(),
    };
    if protocol == TraceProtocol::Http && !endpoint.starts_with("http://") {
        return Ok(Err(format!(
            "TRACING_EXPORTER_PROTOCOL=http to {endpoint} is not supported (OTLP/HTTP is sent in the clear only): no \
             traces are exported; TRACING_EXPORTER_PROTOCOL=grpc sends over TLS"
        )));
    }
    let mut headers = Vec::new();
    let listed = var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"));
    for pair in listed.unwrap_or_default().split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            format!("OTEL_EXPORTER_OTLP_HEADERS: \"{pair}\" is not name=value (pairs separated by commas)")
        })?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Ok(TraceSettings {
        protocol,
        endpoint,
        headers,
        sampling_rate: rate,
        service_name: var("TRACING_SERVICE_NAME").unwrap_or_else(|| "RateLimit".into()),
        service_namespace: var("TRACING_SERVICE_NAMESPACE").unwrap_or_default(),
        service_instance_id: var("TRACING_SERVICE_INSTANCE_ID").unwrap_or_default(),
    }))
}

/// `GRPC_SERVER_USE_TLS`: the gRPC listener's TLS. Upstream reads the client
/// CA from `GRPC_CLIENT_TLS_CACERT`; Envoy Gateway's Deployment names it
/// `GRPC_SERVER_TLS_CA_CERT`: either makes the listener ask every client for
/// a certificate that CA signed.
fn grpc_tls(var: &Var<'_>, flag: &Flag<'_>) -> Result<Option<ServerTls>, String> {
    if !flag("GRPC_SERVER_USE_TLS", false)? {
        return Ok(None);
    }
    let need = |name: &str| var(name).ok_or_else(|| format!("GRPC_SERVER_USE_TLS=true needs {name} (a PEM file)"));
    Ok(Some(ServerTls {
        cert: need("GRPC_SERVER_TLS_CERT")?,
        key: need("GRPC_SERVER_TLS_KEY")?,
        client_ca: var("GRPC_CLIENT_TLS_CACERT").or_else(|| var("GRPC_SERVER_TLS_CA_CERT")),
        client_san: var("GRPC_CLIENT_TLS_SAN"),
    }))
}

/// `host:port`, bracketing an IPv6 host (`HOST=::` is `[::]:8080`).
fn join(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

type Var<'a> = dyn Fn(&str) -> Option<String> + 'a;
type Flag<'a> = dyn Fn(&str, bool) -> Result<bool, String> + 'a;

/// `REDIS_URL` as a URL the Redis client takes: upstream's `host:port`
/// (`REDIS_SOCKET_TYPE=tcp`) or socket path (`unix`, its default), with
/// `REDIS_AUTH` (`password` or `user:password`).
fn redis_url(var: &Var<'_>, flag: &Flag<'_>) -> Result<String, String> {
    let url = var("REDIS_URL").unwrap_or_else(|| "/var/run/nutcracker/ratelimit.sock".into());
    // For a cluster, each node is turned into a URL on its own.
    if var("REDIS_TYPE").is_some_and(|t| t.eq_ignore_ascii_case("cluster")) {
        return Ok(url);
    }
    redis_url_of(&url, var, flag)
}

fn redis_url_of(url: &str, var: &Var<'_>, flag: &Flag<'_>) -> Result<String, String> {
    if url.contains("://") {
        return Ok(url.to_string());
    }
    let auth = match var("REDIS_AUTH") {
        None => String::new(),
        Some(a) => match a.split_once(':') {
            Some((user, password)) => format!("{}:{}@", escape(user), escape(password)),
            None => format!(":{}@", escape(&a)),
        },
    };
    let tls = flag("REDIS_TLS", false)?;
    match var("REDIS_SOCKET_TYPE").unwrap_or_else(|| "unix".into()).to_ascii_lowercase().as_str() {
        "tcp" if tls => Ok(format!("rediss://{auth}{url}")),
        "tcp" => Ok(format!("redis://{auth}{url}")),
        "unix" if tls => Err("REDIS_TLS=true: TLS over a unix socket (REDIS_SOCKET_TYPE=unix) is not supported; \
                              use REDIS_SOCKET_TYPE=tcp"
            .into()),
        "unix" if auth.is_empty() => Ok(format!("redis+unix://{url}")),
        "unix" => Ok(format!("redis+unix://{url}?pass={}", var("REDIS_AUTH").map(|a| escape(&a)).unwrap_or_default())),
        other => Err(format!("REDIS_SOCKET_TYPE={other}: not tcp or unix")),
    }
}

/// Percent-escapes what a URL's user or password may not hold as is.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
