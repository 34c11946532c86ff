use super::*;
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
        ("GRPC_SERVER_USE_TLS", "false", |s| s.grpc == "0.0.0.0:8081"),
    ];
    for (name, value, check) in cases {
        let s = settings(&[(name, value)]);
        assert!(check(&s), "{name}={value} did not take effect: {s:?}");
    }
    // Those that only mean something together, below.
    let together = ["REDIS_TLS", "PROMETHEUS_ADDR", "PROMETHEUS_PATH"];
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
}

#[test]
fn an_unsupported_variable_prints_its_line() {
    let (_, notes) = read(&[("USE_STATSD", "false"), ("TRACING_ENABLED", "true"), ("GRPC_UDS", "/tmp/s")]).unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n == "TRACING_ENABLED=true is not supported: no traces are exported"), "{notes:?}");
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
        (
            vec![("CONFIG_TYPE", "GRPC_XDS_SOTW")],
            "CONFIG_TYPE=GRPC_XDS_SOTW: configuration over xDS is not supported yet",
        ),
        (
            vec![("GRPC_SERVER_USE_TLS", "true")],
            "GRPC_SERVER_USE_TLS=true: TLS on the gRPC listener is not supported yet",
        ),
        (vec![("BACKEND_TYPE", "memcache")], "BACKEND_TYPE=memcache: the engine counts in Redis only"),
        (vec![("REDIS_TYPE", "SENTINEL")], "REDIS_TYPE=SENTINEL: not SINGLE or CLUSTER"),
        (vec![("PORT", "http")], "PORT=http: not a port number"),
        (vec![("SHADOW_MODE", "maybe")], "SHADOW_MODE=maybe: not a boolean"),
        (vec![("LOG_LEVEL", "loud")], "LOG_LEVEL=loud: not one of"),
        (vec![("NEAR_LIMIT_RATIO", "2")], "NEAR_LIMIT_RATIO=2: must be between 0 and 1"),
        (
            vec![("REDIS_SOCKET_TYPE", "tcp"), ("REDIS_TLS", "true")],
            "REDIS_TLS=true: TLS to Redis is not supported yet",
        ),
        (vec![("USE_PROMETHEUS", "true"), ("PROMETHEUS_PATH", "m")], "PROMETHEUS_PATH=m: must start with /"),
    ] {
        let e = read(&vars).map(|_| ()).unwrap_err();
        assert!(e.starts_with(want), "{vars:?}: {e}");
    }
}
