//! Every module, once: its crate, its `.wasm` file, its bundle section, its
//! metric prefix, how its configuration is checked and its schema. The
//! bundle, `packaging`, `traefik-convert`, the tests and both adapters read
//! this list, so a configuration is validated one way everywhere.

use crate::breaker::BreakerFilter;
use crate::bundle::BundleFilter;
use crate::config::ConfigError;
use crate::host::Filter;
use crate::ratelimit::RateLimitFilter;
use crate::retry::RetryFilter;
use crate::sticky::StickyFilter;

/// One module.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    /// Its crate (`rate-limit`), and the name the tools take.
    pub name: &'static str,
    /// Its `.wasm` file's stem (`rate_limit`), the Envoy `root_id` and
    /// `vm_id` of the samples.
    pub wasm: &'static str,
    /// Its section in the bundle's configuration (`None`: the bundle).
    pub section: Option<&'static str>,
    /// The first component of its metrics.
    pub metric_prefix: &'static str,
    /// Its filter's [`Filter::check`]: the configuration's own bytes in,
    /// the refusal naming the field out.
    pub check: fn(&[u8]) -> Result<(), ConfigError>,
    /// The JSON Schema of its configuration (see [`crate::schema`]).
    #[cfg(feature = "schema")]
    pub schema: fn() -> schemars::Schema,
}

/// As the module checks it: the filter's own check, under
/// [`crate::observe::Observed`] (its `trace` and `metrics_path`, and a
/// configuration that is only an exporter).
fn check<F: Filter>(bytes: &[u8]) -> Result<(), ConfigError> {
    crate::observe::Observed::<F>::check(bytes).map(drop)
}

/// The modules, in the bundle's request order, then the bundle.
pub const MODULES: [Module; 5] = [
    Module {
        name: "rate-limit",
        wasm: "rate_limit",
        section: Some("rate_limit"),
        metric_prefix: RateLimitFilter::METRIC_PREFIX,
        check: check::<RateLimitFilter>,
        #[cfg(feature = "schema")]
        schema: crate::ratelimit::config_schema,
    },
    Module {
        name: "circuit-breaker",
        wasm: "circuit_breaker",
        section: Some("circuit_breaker"),
        metric_prefix: BreakerFilter::METRIC_PREFIX,
        check: check::<BreakerFilter>,
        #[cfg(feature = "schema")]
        schema: crate::breaker::config_schema,
    },
    Module {
        name: "sticky-session",
        wasm: "sticky_session",
        section: Some("sticky_session"),
        metric_prefix: StickyFilter::METRIC_PREFIX,
        check: check::<StickyFilter>,
        #[cfg(feature = "schema")]
        schema: crate::sticky::config_schema,
    },
    Module {
        name: "retry",
        wasm: "retry",
        section: Some("retry"),
        metric_prefix: RetryFilter::METRIC_PREFIX,
        check: check::<RetryFilter>,
        #[cfg(feature = "schema")]
        schema: crate::retry::config_schema,
    },
    Module {
        name: "bundle",
        wasm: "bundle",
        section: None,
        metric_prefix: BundleFilter::METRIC_PREFIX,
        check: check::<BundleFilter>,
        #[cfg(feature = "schema")]
        schema: crate::bundle::config_schema,
    },
];

/// The module of that crate name (`rate-limit`) or file stem (`rate_limit`).
pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name || m.wasm == name)
}

/// Checks `bytes` as `name`'s filter does at load: the error is the
/// filter's one log line.
pub fn check_config(name: &str, bytes: &[u8]) -> Result<(), String> {
    let m = module(name).ok_or_else(|| format!("unknown module \"{name}\""))?;
    (m.check)(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_sections_are_the_modules() {
        for m in MODULES.iter().filter(|m| m.section.is_some()) {
            assert_eq!(module(m.wasm).map(|x| x.name), Some(m.name));
        }
        // A section's refusal is the module's own, with the section in front.
        let bad = br#"{"rate_limit":{"limits":[]}}"#;
        let single = check_config("rate-limit", br#"{"limits":[]}"#).unwrap_err();
        let bundled = check_config("bundle", bad).unwrap_err();
        assert!(bundled.contains("rate_limit.limits"), "{bundled} / {single}");
        assert!(check_config("nope", b"{}").is_err());
    }
}
