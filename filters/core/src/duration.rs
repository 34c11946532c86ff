//! Durations written the way Envoy and nginx users write them: `"250ms"`,
//! `"1s"`, `"1m"`, `"1h"`.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// No digits before the unit.
    MissingNumber,
    /// The unit is not one of `ns`, `us`, `ms`, `s`, `m`, `h`.
    UnknownUnit,
    /// The value does not fit in 64 bits of nanoseconds.
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurationError::Empty => "is empty; write a number and a unit, e.g. \"250ms\", \"1s\", \"1m\", \"1h\"",
            DurationError::MissingNumber => "must start with a whole number, e.g. \"250ms\", \"1s\"",
            DurationError::UnknownUnit => "has an unknown unit; use ns, us, ms, s, m or h (e.g. \"1s\")",
            DurationError::Overflow => "is too large",
        })
    }
}

/// Parses `"<whole number><unit>"`, unit one of `ns`, `us`, `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(DurationError::MissingNumber);
    }
    let value: u64 = digits.parse().map_err(|_| DurationError::Overflow)?;
    let nanos_per_unit = rls_protocol::nanos_per_unit(unit).ok_or(DurationError::UnknownUnit)?;
    let nanos = value.checked_mul(nanos_per_unit).ok_or(DurationError::Overflow)?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a duration as Traefik reads one (its `paerser` `Duration`): a
/// whole number alone is seconds (`10` is 10 s), anything else is Go's
/// `time.ParseDuration` syntax: an optional sign, then one or more decimal
/// numbers, each with a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`),
/// as in `1m30s` or `1.5s`; `0` alone is zero. Returns signed nanoseconds
/// (Go's fractions are truncated to the nanosecond, as Go does), or the
/// reason the text is not one.
///
/// Nothing is trimmed: Traefik refuses `" 5s "` (Go's `ParseInt` and
/// `ParseDuration` both do), so a migrated config must too.
pub fn parse_traefik_duration(text: &str) -> Result<i128, String> {
    let t = text;
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i128 = t.parse().map_err(|_| format!("\"{t}\" is too large"))?;
        return check_range(t, secs.saturating_mul(1_000_000_000));
    }
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    if body == "0" {
        return Ok(0);
    }
    let bad = || format!("\"{t}\" is not a duration; write a number and a unit, e.g. \"100ms\", \"10s\", \"1m30s\"");
    if body.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let per: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let mut part = whole.saturating_mul(per);
        // The fraction, to the nanosecond (at most 18 digits matter).
        let mut scale: i128 = 1;
        let mut frac_value: i128 = 0;
        for d in frac.bytes().take(18) {
            frac_value = frac_value * 10 + i128::from(d - b'0');
            scale *= 10;
        }
        part = part.saturating_add(frac_value.saturating_mul(per) / scale);
        total = total.saturating_add(part);
        rest = next;
    }
    check_range(t, if negative { -total } else { total })
}

/// A Traefik duration given as a JSON number: whole seconds, in Go's
/// 64-bit nanoseconds as the same digits in a string are.
pub fn traefik_seconds(secs: i64) -> Result<i128, String> {
    check_range(&secs.to_string(), i128::from(secs).saturating_mul(1_000_000_000))
}

/// Go's durations are 64-bit nanoseconds (about 292 years).
fn check_range(text: &str, nanos: i128) -> Result<i128, String> {
    if nanos.unsigned_abs() > i64::MAX as u128 {
        return Err(format!("\"{text}\" is too large"));
    }
    Ok(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15us"), Ok(Duration::from_micros(15)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("s"), Err(DurationError::MissingNumber));
        assert_eq!(parse_duration("10"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("10 sec"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("1.5s"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("-1s"), Err(DurationError::MissingNumber));
        assert_eq!(parse_duration("99999999999999999999h"), Err(DurationError::Overflow));
        assert_eq!(parse_duration("9999999999h"), Err(DurationError::Overflow));
    }

    #[test]
    fn traefik_durations_are_read_as_traefik_reads_them() {
        let ok = [
            ("10", 10_000_000_000i128),
            ("0", 0),
            ("100ms", 100_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("2h45m", 9_900_000_000_000),
            ("-1s", -1_000_000_000),
            ("+3ms", 3_000_000),
            ("1\u{b5}s", 1_000),
            ("1.0000000001s", 1_000_000_000),
        ];
        for (text, nanos) in ok {
            assert_eq!(parse_traefik_duration(text), Ok(nanos), "{text}");
        }
        // Issue 30, defect 12: spaces around, as Go refuses them.
        for bad in ["", "s", "10 s", "1.5", "1x", "1..5s", ".s", "-", "1e3s", "3000000h", " 5s ", "5s ", " 10", "\t1s"]
        {
            assert!(parse_traefik_duration(bad).is_err(), "{bad:?} accepted");
        }
        // Issue 30, defect 13: a number of seconds is range-checked as the
        // same digits in a string are.
        assert_eq!(traefik_seconds(10), Ok(10_000_000_000));
        assert!(traefik_seconds(9_223_372_037).is_err());
        assert!(parse_traefik_duration("9223372037").is_err());
        assert!(traefik_seconds(9_223_372_036).is_ok());
    }
}
