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
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => return Err(DurationError::UnknownUnit),
        _ => return Err(DurationError::UnknownUnit),
    };
    let nanos = value.checked_mul(nanos_per_unit).ok_or(DurationError::Overflow)?;
    Ok(Duration::from_nanos(nanos))
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
}
