//! What every filter's configuration shares: parsing JSON with the path of
//! the offending field, an error that names the field and the reason, and
//! the rules several filters apply (durations, names, statuses, trusted
//! hops), written once so that they cannot disagree.

use crate::duration::parse_duration;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A refused configuration: which field, and why. `Display` is the one line
/// the filter logs before the proxy refuses the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `limits[0].period` (`.` for the whole document).
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: {}: {}", self.field, self.reason)
    }
}

/// A duration written the way Envoy and nginx users write them (`"250ms"`,
/// `"1s"`, `"1m"`, `"1h"`), longer than zero.
///
/// Every duration in the filters' configurations is of this kind: a zero
/// would make the feature it sets silently do nothing (an ejection or an
/// open breaker that ends at once, a cookie that expires on arrival, a
/// timeout that fires before the call), so it is refused at load with
/// "must be longer than zero".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NonZeroDuration(Duration);

impl NonZeroDuration {
    /// `secs` seconds (for defaults; 0 gives one second).
    pub const fn from_secs(secs: u64) -> Self {
        NonZeroDuration(Duration::from_secs(if secs == 0 { 1 } else { secs }))
    }

    /// `ms` milliseconds (for defaults; 0 gives one millisecond).
    pub const fn from_millis(ms: u64) -> Self {
        NonZeroDuration(Duration::from_millis(if ms == 0 { 1 } else { ms }))
    }

    /// Parses `text`; the error is the reason, without the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = parse_duration(text).map_err(|e| format!("\"{}\" {e}", text.trim()))?;
        if d.is_zero() {
            return Err("must be longer than zero".to_string());
        }
        Ok(NonZeroDuration(d))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// In nanoseconds (saturating at `u64::MAX`, about 584 years).
    pub fn nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl<'de> Deserialize<'de> for NonZeroDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NonZeroDuration::parse(&text).map_err(D::Error::custom)
    }
}

/// The rule for names that become part of metric names (limits, policies,
/// backends): 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return Ok(());
    }
    Err(ConfigError::new(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"))
}

/// Two names that differ only in `-` and `_` share their metrics once a
/// Prometheus exporter rewrites `-` to `_`.
pub fn same_metric_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

/// A status the filter answers with itself: 4xx or 5xx.
pub fn check_reply_status(field: &str, status: u16) -> Result<(), ConfigError> {
    if (400..=599).contains(&status) {
        return Ok(());
    }
    Err(ConfigError::new(field, "must be a 4xx or 5xx status code"))
}

/// Most proxies trusted in front of this one (`X-Forwarded-For` entries read).
pub const MAX_TRUSTED_HOPS: u32 = 16;

/// `trusted_hops`: at most [`MAX_TRUSTED_HOPS`].
pub fn check_trusted_hops(field: &str, hops: u32) -> Result<(), ConfigError> {
    if hops <= MAX_TRUSTED_HOPS {
        return Ok(());
    }
    Err(ConfigError::new(field, format!("must be at most {MAX_TRUSTED_HOPS}")))
}

/// Parses JSON into `T`, reporting the path of the field that failed. The
/// document must be an object: serde would otherwise fill a struct from a
/// JSON array positionally, so `[true, 5]` would configure a filter.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ConfigError::new(".", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| ConfigError::new(".", e.to_string()))?;
            Ok(v)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            // serde_json appends " at line L column C"; the path says where.
            let reason = inner.to_string();
            let reason = match reason.rfind(" at line ") {
                Some(i) if inner.is_data() => reason.get(..i).unwrap_or(&reason).to_string(),
                _ => reason,
            };
            Err(ConfigError::new(path, reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct T {
        #[allow(dead_code)]
        d: NonZeroDuration,
    }

    #[test]
    fn durations_name_the_field_and_refuse_zero() {
        let e = parse_json::<T>(br#"{"d":"0s"}"#).unwrap_err();
        assert_eq!(e.to_string(), "invalid plugin configuration: d: must be longer than zero");
        let e = parse_json::<T>(br#"{"d":"1 minute"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid plugin configuration: d: \"1 minute\" has an unknown unit; use ns, us, ms, s, m or h (e.g. \"1s\")"
        );
        assert!(parse_json::<T>(br#"{"d":"250ms"}"#).is_ok());
        assert_eq!(NonZeroDuration::from_secs(0).get(), Duration::from_secs(1));
    }

    #[test]
    fn shared_rules() {
        assert!(check_name("n", "per-client_1").is_ok());
        assert!(
            check_name("n", "").is_err()
                && check_name("n", "a.b").is_err()
                && check_name("n", &"x".repeat(65)).is_err()
        );
        assert!(same_metric_name("a-b", "a_b") && !same_metric_name("a-b", "a-c") && !same_metric_name("ab", "a"));
        assert!(check_reply_status("s", 429).is_ok() && check_reply_status("s", 200).is_err());
        assert!(check_trusted_hops("t", 16).is_ok() && check_trusted_hops("t", 17).is_err());
    }
}
