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
//!
//! Started with no arguments it is configured as envoyproxy/ratelimit's
//! `/bin/ratelimit` is, by its environment variables (`environment.rs`):
//! the configuration from files, or over xDS (`xds.rs`); TLS on the gRPC
//! listener, to the xDS server and to Redis (`tls.rs`); traces over OTLP
//! (`traces.rs`).
#![forbid(unsafe_code)]

use ratelimit_engine::{config, environment, logging, server, settings::Settings};

fn main() {
    if let Err(e) = run() {
        eprintln!("ratelimit-engine: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // No arguments: upstream's way, configured by environment variables
    // (as `/bin/ratelimit` runs in Istio's and Envoy Gateway's Deployments).
    let (args, notes) = if argv.is_empty() {
        environment::from_env(&|name| std::env::var(name).ok())?
    } else {
        (Settings::from_args(argv)?, Vec::new())
    };
    logging::init(args.log_level, args.log_format);
    for note in &notes {
        logging::warn(note);
    }
    let sources = config::Sources::of(&args);
    let stamps = config::Config::stat_files(&sources);
    let files = config::Config::read_files(&sources)?;
    let config = config::Config::load_with(&files, args.merge_domains)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(server::serve(args, config, (Ok(files), stamps)))
}
