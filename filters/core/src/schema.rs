//! The JSON Schema of each module's configuration, derived from the types
//! that parse it (`feature = "schema"`, native builds only): a field added,
//! renamed or retyped in a parser changes its schema with it. What the
//! types cannot say (a field's meaning and default) `tools/package` adds
//! from the filter's README table when it writes `schemas/`.
//!
//! The schema is the shape of a configuration; the parser still checks what
//! a schema cannot (unique names, a prime table size, combinations of
//! fields) and refuses at load with its one line.
//!
//! This module holds only the field helpers the parsers' types name; it
//! imports no filter. Each module's whole schema is in
//! [`crate::modules::Module::schema`].

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

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
/// (leave a section out to turn its policy off), less `trace` and
/// `metrics_path`, which the bundle reads at its top level only.
pub(crate) fn section<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = T::json_schema(generator);
    if let Some(props) = schema.as_object_mut().and_then(|o| o.get_mut("properties")).and_then(|p| p.as_object_mut()) {
        props.remove("trace");
        props.remove("metrics_path");
    }
    schema
}
