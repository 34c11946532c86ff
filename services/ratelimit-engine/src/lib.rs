//! The rate limit service, laid out as envoyproxy/ratelimit's: `settings`
//! (what it was started with), `config` (envoyproxy/ratelimit's YAML),
//! `service` (the `ShouldRateLimit` decision), `redis` (counting),
//! `server` (gRPC, HTTP, connection bounds, config reloads), `metrics`;
//! upstream's environment (`environment`), configuration over xDS (`xds`),
//! TLS (`tls`), traces (`traces`). The
//! protocol's messages are `rls-protocol`'s, shared with the filters; the
//! engine does not depend on the filter core. The fuzz targets read the
//! configuration through here.
#![forbid(unsafe_code)]

pub mod config;
pub mod environment;
pub mod logging;
pub mod metrics;
pub mod redis;
pub mod server;
pub mod service;
pub mod settings;
pub mod tls;
pub mod traces;
pub mod xds;

/// Fuzz target body: a limits file, as an operator writes it, must load or
/// be refused with a message naming the file, never panic.
pub fn fuzz_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(config) = config::Config::load(&[("fuzz.yaml".to_string(), text)]) {
        let _ = config.rule("edge", &[("generic_key".to_string(), "a".to_string())]);
    }
}

#[cfg(test)]
mod tests {
    /// `make test` replays the fuzz corpus of the engine's configuration.
    #[test]
    fn corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/engine_config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus") {
            super::fuzz_config(&std::fs::read(entry.expect("entry").path()).expect("file"));
            n += 1;
        }
        assert!(n > 0);
    }
}
