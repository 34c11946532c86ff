//! The JSON Schema of each module's configuration, derived from the types
//! that parse it (`feature = "schema"`, native builds only): a field added,
//! renamed or retyped in a parser changes its schema with it. What the
//! types cannot say (a field's meaning and default) `tools/package` adds
//! from the filter's README table when it writes `schemas/`.
//!
//! The schema is the shape of a configuration; the parser still checks what
//! a schema cannot (unique names, a prime table size, combinations of
//! fields) and refuses at load with its one line.

use crate::host::Filter;
use crate::store::CasRule;
use crate::testing::RecordingHost;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// The modules with a configuration, by the name of their crate.
pub const MODULES: [&str; 5] = ["rate-limit", "circuit-breaker", "retry", "sticky-session", "bundle"];

/// The schema of `module`'s configuration (one of [`MODULES`]).
pub fn for_module(module: &str) -> Option<serde_json::Value> {
    let schema = match module {
        "rate-limit" => crate::ratelimit::config_schema(),
        "circuit-breaker" => crate::breaker::config_schema(),
        "retry" => crate::retry::config_schema(),
        "sticky-session" => crate::sticky::config_schema(),
        "bundle" => crate::bundle::config_schema(),
        _ => return None,
    };
    Some(schema.to_value())
}

/// Configures `module`'s filter from `json` as the filter does at load (its
/// own parser and checks, on an in-memory host); the error is the filter's
/// log line.
pub fn check(module: &str, json: &[u8]) -> Result<(), String> {
    fn configure<F: Filter>(json: &[u8]) -> Result<(), String> {
        F::configure(&RecordingHost::new(CasRule::Envoy), json).map(drop).map_err(|e| e.to_string())
    }
    match module {
        "rate-limit" => configure::<crate::ratelimit::RateLimitFilter>(json),
        "circuit-breaker" => configure::<crate::breaker::BreakerFilter>(json),
        "retry" => configure::<crate::retry::RetryFilter>(json),
        "sticky-session" => configure::<crate::sticky::StickyFilter>(json),
        "bundle" => configure::<crate::bundle::BundleFilter>(json),
        _ => Err(format!("unknown module \"{module}\"")),
    }
}

/// A duration of the filters' own syntax: a whole number above zero and a
/// unit (the parser also trims surrounding spaces; the schema does not allow them).
impl JsonSchema for crate::config::NonZeroDuration {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Duration")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^0*[1-9][0-9]*(ns|us|ms|s|m|h)$"
        })
    }
}

/// A duration as Traefik reads one: Go's syntax, or whole seconds.
pub(crate) fn traefik_duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "string", "pattern": "^([0-9]+|[+-]?(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$" },
            { "type": "integer" }
        ]
    })
}

/// One rate-limit key kind, or a non-empty list of them.
pub(crate) fn rate_limit_key(_: &mut SchemaGenerator) -> Schema {
    let kind = "^(client_ip|host|path|method|all|global|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$";
    json_schema!({
        "anyOf": [
            { "type": "string", "pattern": kind },
            { "type": "array", "minItems": 1, "items": { "type": "string", "pattern": kind } }
        ]
    })
}

/// Status codes (`502`) or classes (`"5xx"`).
pub(crate) fn statuses(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "null"],
        "items": {
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "pattern": "^[1-5]xx$" }
            ]
        }
    })
}

/// A bundle section: exactly the configuration of the filter `T` parses
/// (leave a section out to turn its policy off).
pub(crate) fn section<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}
