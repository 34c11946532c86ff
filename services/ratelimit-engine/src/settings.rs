//! The engine's settings, as envoyproxy/ratelimit's `settings` package
//! holds them: where it listens, where it counts, how it reloads, what it
//! bounds. Read from the command line (see the crate docs for each flag).

use crate::redis::Algorithm;
use std::time::Duration;

/// What the engine was started with (flags, or upstream's environment
/// variables: [`crate::environment`]; see the crate docs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub configs: Vec<String>,
    /// Upstream's configuration directory (`$RUNTIME_ROOT/...`), read in
    /// place of `configs` when started from the environment.
    pub runtime: Option<RuntimeDir>,
    /// The debug listener (`/rlconfig`), when started from the environment.
    pub debug: Option<String>,
    /// `USE_PROMETHEUS`: the metrics on their own address and path.
    pub prometheus: Option<(String, String)>,
    /// `SHADOW_MODE`: every descriptor is counted and answered OK (unless the
    /// request brought its own limit).
    pub shadow_mode: bool,
    /// `HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED`.
    pub healthy_needs_config: bool,
    /// `CACHE_KEY_PREFIX`: in front of every Redis key.
    pub key_prefix: String,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub redis: String,
    pub grpc: String,
    pub http: String,
    pub algorithm: Algorithm,
    pub near_limit_ratio: f64,
    pub redis_timeout: Duration,
    pub merge_domains: bool,
    pub watch: Option<Duration>,
    pub cluster: Vec<String>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// `GRPC_SERVER_USE_TLS`: the gRPC listener's TLS, mutual with a CA.
    pub grpc_tls: Option<ServerTls>,
    /// `CONFIG_TYPE=GRPC_XDS_SOTW`: the configuration from an xDS server
    /// instead of files.
    pub xds: Option<XdsSource>,
    /// `REDIS_TLS`: TLS to Redis (`rediss://`), with a client certificate
    /// and a CA when given.
    pub redis_tls: Option<ClientTls>,
    /// `TRACING_ENABLED`: a span per call, exported over OTLP.
    pub tracing: Option<TraceSettings>,
}

/// Where and how traces go (upstream's `TRACING_*`, OpenTelemetry's
/// `OTEL_EXPORTER_OTLP_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub protocol: TraceProtocol,
    /// The whole URL: for OTLP/HTTP with its path (`.../v1/traces`).
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    /// 0 to 1: the share of calls without a caller's decision that are traced.
    pub sampling_rate: f64,
    pub service_name: String,
    pub service_namespace: String,
    pub service_instance_id: String,
}

/// OTLP's two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceProtocol {
    /// Protobuf over HTTP/1.1 POST.
    Http,
    /// gRPC `TraceService/Export`.
    Grpc,
}

/// The gRPC listener's TLS (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: String,
    pub key: String,
    /// When set, every client must present a certificate this CA signed.
    pub client_ca: Option<String>,
    /// `GRPC_CLIENT_TLS_SAN`: the DNS name a client certificate must hold.
    pub client_san: Option<String>,
}

/// A TLS client's files (PEM): its own certificate and key, and the CA its
/// server is checked against (else the system's roots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
}

/// Where the configuration comes from over xDS (state of the world, ADS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsSource {
    /// `host:port` of the xDS server.
    pub server: String,
    /// The node id the engine says it is.
    pub node_id: String,
    /// How long to wait before connecting again after the server went away.
    pub retry: Duration,
    /// TLS to the server (mutual when a certificate is given).
    pub tls: Option<ClientTls>,
    /// The name the server's certificate must hold, when not its host.
    pub server_san: Option<String>,
    /// Headers sent with the stream (`CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Serve before the first configuration arrived.
    pub force_start: bool,
}

/// Upstream's configuration directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDir {
    /// `$RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/$RUNTIME_APPDIRECTORY`.
    pub dir: String,
    /// `RUNTIME_IGNOREDOTFILES`: skip names starting with `.` (Kubernetes'
    /// `..data` and `..<timestamp>` entries of a mounted ConfigMap).
    pub ignore_dotfiles: bool,
}

/// Which lines the engine logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// How a log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `ratelimit-engine: <message>`.
    Text,
    /// One JSON object per line: `level`, `msg`, `time`.
    Json,
}

impl Settings {
    /// The flags' defaults.
    pub fn defaults() -> Settings {
        Settings {
            configs: Vec::new(),
            runtime: None,
            debug: None,
            prometheus: None,
            shadow_mode: false,
            healthy_needs_config: false,
            key_prefix: String::new(),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
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
            grpc_tls: None,
            xds: None,
            redis_tls: None,
            tracing: None,
        }
    }

    /// Reads the command line (`std::env::args()` without the program name).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Settings, String> {
        let mut a = Settings::defaults();
        let mut args = args.into_iter();
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
                    a.redis_timeout = parse_duration(&value()?).map_err(|e| format!("--redis-timeout {e}"))?;
                }
                "--merge-domains" => a.merge_domains = true,
                "--redis-cluster" => {
                    a.cluster = value()?.split(',').map(|s| format!("redis://{}", s.trim())).collect();
                }
                "--watch" => {
                    let d = parse_duration(&value()?).map_err(|e| format!("--watch {e}"))?;
                    if d.is_zero() {
                        return Err("--watch: must be longer than zero".into());
                    }
                    a.watch = Some(d);
                }
                "--max-connections" => {
                    a.max_connections = value()?
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("--max-connections takes a number above zero")?;
                }
                "--header-timeout" => {
                    let d = parse_duration(&value()?).map_err(|e| format!("--header-timeout {e}"))?;
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
}

/// A duration flag: a whole number and a unit (`ns`, `us`, `ms`, `s`, `m`,
/// `h`), as `100ms` or `2s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("\"{t}\" is not a duration such as 100ms or 2s"))?;
    let nanos =
        rls_protocol::nanos_per_unit(unit).ok_or_else(|| format!("\"{t}\" is not a duration such as 100ms or 2s"))?;
    n.checked_mul(nanos).map(Duration::from_nanos).ok_or_else(|| format!("\"{t}\" is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_with_their_defaults() {
        let s = Settings::from_args(["--config", "a.yaml", "--watch", "2s"].map(String::from)).unwrap();
        assert_eq!((s.configs.len(), s.watch, s.max_connections), (1, Some(Duration::from_secs(2)), 256));
        assert_eq!(s.algorithm, Algorithm::FixedWindow);
        assert!(Settings::from_args(["--config", "a", "--watch", "0s"].map(String::from)).is_err());
        assert!(Settings::from_args(["--config", "a", "--nope"].map(String::from)).is_err());
        assert!(Settings::from_args(Vec::<String>::new()).is_err());
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("1.5s").is_err() && parse_duration("10").is_err());
    }
}
