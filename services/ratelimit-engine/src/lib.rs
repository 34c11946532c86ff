//! The rate limit service's library: its configuration (envoyproxy/ratelimit's
//! YAML), the limiter over Redis and its metrics. `main.rs` serves them over
//! gRPC and HTTP; the fuzz targets read the configuration through here.
#![forbid(unsafe_code)]

pub mod config;
pub mod limiter;
pub mod listen;
pub mod metrics;

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
