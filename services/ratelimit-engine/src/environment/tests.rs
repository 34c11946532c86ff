use super::*;
use crate::settings::TraceProtocol;
use std::collections::HashMap;

fn read(vars: &[(&str, &str)]) -> Result<(Settings, Vec<String>), String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    from_env(&|name| map.get(name).cloned())
}

fn settings(vars: &[(&str, &str)]) -> Settings {
    read(vars).unwrap_or_else(|e| panic!("{vars:?}: {e}")).0
}

/// Istio's `samples/ratelimit/rate-limit-service.yaml`, its environment as
/// the Deployment sets it.
const ISTIO_SAMPLE: &[(&str, &str)] = &[
    ("LOG_LEVEL", "debug"),
    ("REDIS_SOCKET_TYPE", "tcp"),
    ("REDIS_URL", "redis:6379"),
    ("USE_STATSD", "false"),
    ("RUNTIME_ROOT", "/data"),
    ("RUNTIME_SUBDIRECTORY", "ratelimit"),
    ("RUNTIME_WATCH_ROOT", "false"),
    ("RUNTIME_IGNOREDOTFILES", "true"),
    ("HOST", "::"),
    ("GRPC_HOST", "::"),
];

#[test]
fn istios_sample_reads_as_upstream_reads_it() {
    let (s, notes) = read(ISTIO_SAMPLE).unwrap();
    assert_eq!((s.http.as_str(), s.grpc.as_str()), ("[::]:8080", "[::]:8081"));
    assert_eq!(s.debug.as_deref(), Some("0.0.0.0:6070"));
    assert_eq!(s.redis, "redis://redis:6379");
    assert_eq!(s.runtime, Some(RuntimeDir { dir: "/data/ratelimit/config".into(), ignore_dotfiles: true }));
    assert_eq!(s.log_level, LogLevel::Debug);
    assert_eq!(s.watch, Some(Duration::from_secs(1)), "upstream always reloads");
    assert!(notes.is_empty(), "every variable of the sample is supported: {notes:?}");
}

/// Envoy Gateway's rate-limit Deployment (envoyproxy/gateway
/// `internal/infrastructure/kubernetes/ratelimit/resource.go`), Prometheus
/// on as its default telemetry sets it.
pub(crate) const ENVOY_GATEWAY: &[(&str, &str)] = &[
    ("REDIS_SOCKET_TYPE", "tcp"),
    ("REDIS_URL", "redis.redis.svc:6379"),
    ("RUNTIME_ROOT", "/data"),
    ("RUNTIME_SUBDIRECTORY", "ratelimit"),
    ("RUNTIME_IGNOREDOTFILES", "true"),
    ("RUNTIME_WATCH_ROOT", "false"),
    ("LOG_LEVEL", "info"),
    ("USE_STATSD", "false"),
    ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
    ("CONFIG_GRPC_XDS_SERVER_URL", "envoy-gateway:18001"),
    ("CONFIG_GRPC_XDS_NODE_ID", "envoy-ratelimit"),
    ("GRPC_SERVER_USE_TLS", "true"),
    ("GRPC_SERVER_TLS_CERT", "/certs/tls.crt"),
    ("GRPC_SERVER_TLS_KEY", "/certs/tls.key"),
    ("GRPC_SERVER_TLS_CA_CERT", "/certs/ca.crt"),
    ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"),
    ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "/certs/tls.crt"),
    ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "/certs/tls.key"),
    ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "/certs/ca.crt"),
    ("FORCE_START_WITHOUT_INITIAL_CONFIG", "true"),
    ("USE_PROMETHEUS", "true"),
    ("PROMETHEUS_ADDR", ":19001"),
    ("PROMETHEUS_MAPPER_YAML", "/etc/statsd-exporter/conf.yaml"),
];

#[test]
fn envoy_gateways_deployment_reads_as_upstream_reads_it() {
    let (s, notes) = read(ENVOY_GATEWAY).unwrap();
    // Every variable Envoy Gateway sets is read; its statsd mapping is not
    // applied (the series already carry the names it maps to): said once.
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("PROMETHEUS_MAPPER_YAML=/etc/statsd-exporter/conf.yaml is not supported"),
        "{notes:?}"
    );
    let xds = s.xds.unwrap();
    assert_eq!((xds.server.as_str(), xds.node_id.as_str()), ("envoy-gateway:18001", "envoy-ratelimit"));
    assert_eq!((xds.retry, xds.force_start), (Duration::from_secs(3), true));
    let files = ClientTls {
        cert: Some("/certs/tls.crt".into()),
        key: Some("/certs/tls.key".into()),
        ca: Some("/certs/ca.crt".into()),
    };
    assert_eq!(xds.tls, Some(files));
    let grpc = s.grpc_tls.unwrap();
    assert_eq!((grpc.cert.as_str(), grpc.key.as_str()), ("/certs/tls.crt", "/certs/tls.key"));
    assert_eq!(grpc.client_ca.as_deref(), Some("/certs/ca.crt"), "mutual: Envoy Gateway's CA variable is read");
    // Configuration comes from the xDS server only: no files, no watcher.
    assert_eq!((s.runtime, s.watch), (None, None));
    assert_eq!(s.prometheus, Some(("0.0.0.0:19001".into(), "/metrics".into())));
    assert_eq!(s.redis, "redis://redis.redis.svc:6379");
}

/// Envoy Gateway's tracing variables (its `enable-tracing` rendering): the
/// collector as `host:port`, OTLP/HTTP.
#[test]
fn envoy_gateways_tracing_reads_as_upstream_reads_it() {
    let mut vars = ENVOY_GATEWAY.to_vec();
    vars.extend([
        ("TRACING_ENABLED", "true"),
        ("TRACING_SERVICE_NAME", "envoy-ratelimit"),
        ("TRACING_SERVICE_NAMESPACE", "envoy-gateway-system"),
        ("TRACING_SERVICE_INSTANCE_ID", "envoy-ratelimit-5f7d"),
        ("TRACING_SAMPLING_RATE", "1.0"),
        ("TRACING_EXPORTER_PROTOCOL", "http"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "trace-collector.envoy-gateway-system.svc.cluster.local:4318"),
    ]);
    let (s, notes) = read(&vars).unwrap();
    assert_eq!(notes.len(), 1, "only the statsd mapping's line: {notes:?}");
    let t = s.tracing.unwrap();
    assert_eq!(t.endpoint, "http://trace-collector.envoy-gateway-system.svc.cluster.local:4318/v1/traces");
    assert_eq!((t.protocol, t.sampling_rate), (TraceProtocol::Http, 1.0));
    assert_eq!(
        (t.service_name.as_str(), t.service_namespace.as_str(), t.service_instance_id.as_str()),
        ("envoy-ratelimit", "envoy-gateway-system", "envoy-ratelimit-5f7d")
    );
    // Upstream's defaults, gRPC, a traces endpoint of its own, headers.
    let t = settings(&[("TRACING_ENABLED", "true")]).tracing.unwrap();
    assert_eq!((t.endpoint.as_str(), t.service_name.as_str()), ("http://localhost:4318/v1/traces", "RateLimit"));
    let t = settings(&[("TRACING_ENABLED", "true"), ("TRACING_EXPORTER_PROTOCOL", "grpc")]).tracing.unwrap();
    assert_eq!((t.protocol, t.endpoint.as_str()), (TraceProtocol::Grpc, "http://localhost:4317"));
    let t = settings(&[
        ("TRACING_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer t,x-team=a"),
    ])
    .tracing
    .unwrap();
    assert_eq!(t.endpoint, "http://traces:4318/custom");
    assert_eq!(t.headers, [("authorization".to_string(), "Bearer t".to_string()), ("x-team".into(), "a".into())]);
    let t = settings(&[("TRACING_ENABLED", "true"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/")]).tracing;
    assert_eq!(t.map(|t| t.endpoint).as_deref(), Some("http://base:4318/v1/traces"));
    assert!(settings(&[("TRACING_SERVICE_NAME", "x")]).tracing.is_none(), "off unless enabled");
    // OTLP/HTTP over TLS is said, not done.
    let (s, notes) = read(&[
        ("USE_STATSD", "false"),
        ("TRACING_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
    ])
    .unwrap();
    assert!(s.tracing.is_none() && notes.len() == 1 && notes[0].contains("no traces are exported"), "{notes:?}");
}

#[test]
fn upstreams_defaults() {
    let (s, notes) = read(&[]).unwrap();
    assert_eq!((s.http.as_str(), s.grpc.as_str()), ("0.0.0.0:8080", "0.0.0.0:8081"));
    assert_eq!(s.redis, "redis+unix:///var/run/nutcracker/ratelimit.sock");
    assert_eq!(s.runtime.map(|r| r.dir), Some("/srv/runtime_data/current/config".into()));
    assert_eq!((s.log_level, s.log_format), (LogLevel::Warn, LogFormat::Text));
    assert_eq!((s.algorithm, s.near_limit_ratio, s.shadow_mode), (Algorithm::FixedWindow, 0.8, false));
    assert!(s.prometheus.is_none());
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with("USE_STATSD=true (upstream's default): this engine sends no statsd"), "{notes:?}");
}

/// Each supported variable changes what it says it changes.
#[test]
fn each_supported_variable_takes_effect() {
    type Check = fn(&Settings) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("HOST", "127.0.0.2", |s| s.http == "127.0.0.2:8080"),
        ("PORT", "9000", |s| s.http == "0.0.0.0:9000"),
        ("GRPC_HOST", "::1", |s| s.grpc == "[::1]:8081"),
        ("GRPC_PORT", "9001", |s| s.grpc == "0.0.0.0:9001"),
        ("DEBUG_HOST", "127.0.0.1", |s| s.debug.as_deref() == Some("127.0.0.1:6070")),
        ("DEBUG_PORT", "7000", |s| s.debug.as_deref() == Some("0.0.0.0:7000")),
        ("LOG_LEVEL", "error", |s| s.log_level == LogLevel::Error),
        ("LOG_FORMAT", "json", |s| s.log_format == LogFormat::Json),
        ("CONFIG_TYPE", "FILE", |s| s.runtime.is_some()),
        ("RUNTIME_ROOT", "/etc/rl", |s| s.runtime.as_ref().is_some_and(|r| r.dir == "/etc/rl/config")),
        ("RUNTIME_SUBDIRECTORY", "sub", |s| {
            s.runtime.as_ref().is_some_and(|r| r.dir == "/srv/runtime_data/current/sub/config")
        }),
        ("RUNTIME_APPDIRECTORY", "limits", |s| {
            s.runtime.as_ref().is_some_and(|r| r.dir == "/srv/runtime_data/current/limits")
        }),
        ("RUNTIME_IGNOREDOTFILES", "true", |s| s.runtime.as_ref().is_some_and(|r| r.ignore_dotfiles)),
        ("RUNTIME_WATCH_ROOT", "false", |s| s.watch.is_some()),
        ("REDIS_SOCKET_TYPE", "tcp", |s| s.redis == "redis:///var/run/nutcracker/ratelimit.sock"),
        ("REDIS_TYPE", "cluster", |s| s.cluster == ["redis+unix:///var/run/nutcracker/ratelimit.sock"]),
        ("REDIS_URL", "/tmp/r.sock", |s| s.redis == "redis+unix:///tmp/r.sock"),
        ("REDIS_AUTH", "s3cret", |s| s.redis == "redis+unix:///var/run/nutcracker/ratelimit.sock?pass=s3cret"),
        ("REDIS_POOL_SIZE", "20", |s| s.cluster.is_empty()),
        ("USE_STATSD", "false", |s| s.prometheus.is_none()),
        ("USE_PROMETHEUS", "true", |s| s.prometheus == Some(("0.0.0.0:9090".into(), "/metrics".into()))),
        ("NEAR_LIMIT_RATIO", "0.5", |s| s.near_limit_ratio == 0.5),
        ("SHADOW_MODE", "true", |s| s.shadow_mode),
        ("MERGE_DOMAIN_CONFIG", "true", |s| s.merge_domains),
        ("CACHE_KEY_PREFIX", "team-a:", |s| s.key_prefix == "team-a:"),
        ("BACKEND_TYPE", "redis", |s| s.redis.starts_with("redis+unix://")),
        ("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", "true", |s| s.healthy_needs_config),
        ("GRPC_SERVER_USE_TLS", "false", |s| s.grpc_tls.is_none()),
        ("CONFIG_TYPE", "GRPC_XDS_SOTW", |s| s.xds.is_some() && s.runtime.is_none()),
    ];
    for (name, value, check) in cases {
        let s = settings(&[(name, value)]);
        assert!(check(&s), "{name}={value} did not take effect: {s:?}");
    }
    // Those that only mean something together, below.
    let together = [
        "REDIS_TLS",
        "REDIS_TLS_CLIENT_CERT",
        "REDIS_TLS_CLIENT_KEY",
        "REDIS_TLS_CACERT",
        "PROMETHEUS_ADDR",
        "PROMETHEUS_PATH",
        "GRPC_SERVER_TLS_CERT",
        "GRPC_SERVER_TLS_KEY",
        "GRPC_CLIENT_TLS_CACERT",
        "GRPC_SERVER_TLS_CA_CERT",
        "GRPC_CLIENT_TLS_SAN",
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
    assert!(settings(&[("REDIS_TLS", "false")]).redis.starts_with("redis+unix://"));
    let covered: Vec<&str> = cases.iter().map(|(n, _, _)| *n).chain(together).collect();
    for name in SUPPORTED {
        assert!(covered.contains(name), "{name} is supported but not in the table");
    }
    let s = settings(&[("REDIS_SOCKET_TYPE", "tcp"), ("REDIS_URL", "r:6379"), ("REDIS_AUTH", "u:p@ss")]);
    assert_eq!(s.redis, "redis://u:p%40ss@r:6379");
    let s = settings(&[("REDIS_SOCKET_TYPE", "tcp"), ("REDIS_TYPE", "CLUSTER"), ("REDIS_URL", "a:1, b:2")]);
    assert_eq!(s.cluster, ["redis://a:1", "redis://b:2"]);
    let s = settings(&[("USE_PROMETHEUS", "true"), ("PROMETHEUS_ADDR", ":19001"), ("PROMETHEUS_PATH", "/m")]);
    assert_eq!(s.prometheus, Some(("0.0.0.0:19001".into(), "/m".into())));
    let s = settings(&[
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("REDIS_URL", "r:6380"),
        ("REDIS_TLS", "true"),
        ("REDIS_TLS_CLIENT_CERT", "c.pem"),
        ("REDIS_TLS_CLIENT_KEY", "k.pem"),
        ("REDIS_TLS_CACERT", "ca.pem"),
    ]);
    assert_eq!(s.redis, "rediss://r:6380");
    let want = ClientTls { cert: Some("c.pem".into()), key: Some("k.pem".into()), ca: Some("ca.pem".into()) };
    assert_eq!(s.redis_tls, Some(want));
    let s = settings(&[
        ("GRPC_SERVER_USE_TLS", "true"),
        ("GRPC_SERVER_TLS_CERT", "c"),
        ("GRPC_SERVER_TLS_KEY", "k"),
        ("GRPC_CLIENT_TLS_CACERT", "upstream-ca"),
        ("GRPC_SERVER_TLS_CA_CERT", "gateway-ca"),
        ("GRPC_CLIENT_TLS_SAN", "envoy.local"),
    ]);
    let grpc = s.grpc_tls.unwrap();
    assert_eq!((grpc.client_ca.as_deref(), grpc.client_san.as_deref()), (Some("upstream-ca"), Some("envoy.local")));
    let s = settings(&[
        ("CONFIG_TYPE", "grpc_xds_sotw"),
        ("CONFIG_GRPC_XDS_SERVER_URL", "cp:18000"),
        ("CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", "500ms"),
        ("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", "X-Team: a, authorization:Bearer t"),
        ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"),
        ("CONFIG_GRPC_XDS_SERVER_TLS_SAN", "control-plane"),
    ]);
    let xds = s.xds.unwrap();
    assert_eq!((xds.server.as_str(), xds.node_id.as_str(), xds.force_start), ("cp:18000", "default", false));
    assert_eq!(xds.retry, Duration::from_millis(500));
    let headers = [("x-team".to_string(), "a".to_string()), ("authorization".into(), "Bearer t".into())];
    assert_eq!(xds.headers, headers);
    assert_eq!((xds.tls, xds.server_san.as_deref()), (Some(ClientTls::default()), Some("control-plane")));
}

#[test]
fn an_unsupported_variable_prints_its_line() {
    let (_, notes) = read(&[("USE_STATSD", "false"), ("MEMCACHE_SRV", "m"), ("GRPC_UDS", "/tmp/s")]).unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n == "MEMCACHE_SRV=m is not supported: the backend is Redis"), "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("GRPC_UDS=/tmp/s is not supported")), "{notes:?}");
    for (name, _) in NOT_DONE {
        let (_, notes) = read(&[("USE_STATSD", "false"), (name, "x")]).unwrap();
        assert_eq!(notes.len(), 1, "{name}");
        assert!(notes[0].starts_with(&format!("{name}=x is not supported: ")), "{notes:?}");
    }
}

#[test]
fn what_would_change_the_engines_promise_is_refused_naming_the_variable() {
    for (vars, want) in [
        (vec![("CONFIG_TYPE", "REST")], "CONFIG_TYPE=REST: not FILE or GRPC_XDS_SOTW"),
        (
            vec![("CONFIG_TYPE", "GRPC_XDS_SOTW"), ("CONFIG_GRPC_XDS_SERVER_URL", "https://cp:1")],
            "CONFIG_GRPC_XDS_SERVER_URL=https://cp:1: not host:port",
        ),
        (
            vec![("CONFIG_TYPE", "GRPC_XDS_SOTW"), ("CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", "soon")],
            "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL=soon: not a duration",
        ),
        (
            vec![("CONFIG_TYPE", "GRPC_XDS_SOTW"), ("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", "novalue")],
            "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS: \"novalue\" is not name:value",
        ),
        (
            vec![
                ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
                ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"),
                ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "c"),
            ],
            "CONFIG_GRPC_XDS_CLIENT_TLS_CERT and CONFIG_GRPC_XDS_CLIENT_TLS_KEY: give both or neither",
        ),
        (vec![("GRPC_SERVER_USE_TLS", "true")], "GRPC_SERVER_USE_TLS=true needs GRPC_SERVER_TLS_CERT"),
        (vec![("REDIS_TLS", "true")], "REDIS_TLS=true: TLS over a unix socket"),
        (
            vec![("TRACING_ENABLED", "true"), ("TRACING_EXPORTER_PROTOCOL", "zipkin")],
            "TRACING_EXPORTER_PROTOCOL=zipkin: not http or grpc",
        ),
        (
            vec![("TRACING_ENABLED", "true"), ("TRACING_SAMPLING_RATE", "2")],
            "TRACING_SAMPLING_RATE=2: not a number from 0 to 1",
        ),
        (
            vec![("TRACING_ENABLED", "true"), ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
            "OTEL_EXPORTER_OTLP_HEADERS: \"novalue\" is not name=value",
        ),
        (vec![("BACKEND_TYPE", "memcache")], "BACKEND_TYPE=memcache: the engine counts in Redis only"),
        (vec![("REDIS_TYPE", "SENTINEL")], "REDIS_TYPE=SENTINEL: not SINGLE or CLUSTER"),
        (vec![("PORT", "http")], "PORT=http: not a port number"),
        (vec![("SHADOW_MODE", "maybe")], "SHADOW_MODE=maybe: not a boolean"),
        (vec![("LOG_LEVEL", "loud")], "LOG_LEVEL=loud: not one of"),
        (vec![("NEAR_LIMIT_RATIO", "2")], "NEAR_LIMIT_RATIO=2: must be between 0 and 1"),
        (vec![("USE_PROMETHEUS", "true"), ("PROMETHEUS_PATH", "m")], "PROMETHEUS_PATH=m: must start with /"),
    ] {
        let e = read(&vars).map(|_| ()).unwrap_err();
        assert!(e.starts_with(want), "{vars:?}: {e}");
    }
}
