//! Reading a Traefik object field by field: each field read is marked, and
//! every field left over is reported, so nothing is dropped silently.

use crate::input::get;
use crate::Report;
use filters_core::duration::parse_traefik_duration;
use serde_json::Value;

/// One Traefik object at `path`.
pub struct Fields<'a> {
    pub path: String,
    obj: &'a Value,
    taken: Vec<String>,
}

impl<'a> Fields<'a> {
    /// The object at `path` (an absent or `true` value is an empty object,
    /// as `sticky.cookie=true` is in labels).
    pub fn new(path: impl Into<String>, obj: &'a Value) -> Self {
        Fields { path: path.into(), obj, taken: Vec::new() }
    }

    /// The field `key` (any case), marked as read.
    pub fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (spelled, v) = get(self.obj, key)?;
        self.taken.push(spelled.to_string());
        Some(v)
    }

    /// The path of a field, for reports.
    pub fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// A field read by `read`; when it cannot be, the reason is reported
    /// and the field counts as absent.
    fn typed<T>(&mut self, key: &str, r: &mut Report, read: impl FnOnce(&Value) -> Result<T, String>) -> Option<T> {
        let v = self.take(key)?;
        read(v).map_err(|why| r.untranslated(&self.at(key), &why)).ok()
    }

    /// An integer field (a number, or digits in a string as labels give it).
    pub fn int(&mut self, key: &str, r: &mut Report) -> Option<i64> {
        self.typed(key, r, |v| {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.ok_or_else(|| format!("{v} is not a whole number"))
        })
    }

    /// A boolean field.
    pub fn bool(&mut self, key: &str, r: &mut Report) -> Option<bool> {
        self.typed(key, r, |v| {
            let b = match v {
                Value::Bool(b) => Some(*b),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            b.ok_or_else(|| format!("{v} is not true or false"))
        })
    }

    /// A string field.
    pub fn string(&mut self, key: &str, r: &mut Report) -> Option<String> {
        self.typed(key, r, |v| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(format!("{v} is not a string")),
        })
    }

    /// A duration field in nanoseconds, read as Traefik reads it.
    pub fn duration(&mut self, key: &str, r: &mut Report) -> Option<i128> {
        self.typed(key, r, |v| match v {
            Value::Number(n) => n.as_i64().map(|s| i128::from(s) * 1_000_000_000).ok_or_else(|| format!("{n}")),
            Value::String(s) => parse_traefik_duration(s),
            other => Err(format!("{other} is not a duration")),
        })
    }

    /// A list field (an array, or comma-separated as labels give it).
    pub fn list(&mut self, key: &str) -> Option<Vec<String>> {
        let v = self.take(key)?;
        Some(match v {
            Value::Array(a) => a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect(),
            Value::String(s) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
            other => vec![other.to_string()],
        })
    }

    /// A sub-object.
    pub fn object(&mut self, key: &str) -> Option<Fields<'a>> {
        let path = self.at(key);
        self.take(key).map(|v| Fields::new(path, v))
    }

    /// Reports every field not read.
    pub fn finish(self, r: &mut Report) {
        let Some(m) = self.obj.as_object() else { return };
        for k in m.keys().filter(|k| !self.taken.contains(k)) {
            r.untranslated(&format!("{}.{k}", self.path), "no equivalent in this filter");
        }
    }
}

/// A duration in this project's syntax (a whole number and the largest
/// unit that keeps it exact).
pub fn our_duration(nanos: u64) -> String {
    const UNITS: [(u64, &str); 5] =
        [(3_600_000_000_000, "h"), (60_000_000_000, "m"), (1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")];
    for (per, unit) in UNITS {
        if nanos >= per && nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

/// A duration as Envoy's JSON writes one (`"0.100s"`).
pub fn envoy_duration(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 {
        format!("{secs}s")
    } else {
        format!("{secs}.{}s", format!("{frac:09}").trim_end_matches('0'))
    }
}
