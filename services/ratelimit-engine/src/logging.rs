//! The engine's log lines, on stderr, at and above the level it was started
//! with (`LOG_LEVEL`), as text or JSON (`LOG_FORMAT`).

use crate::settings::{LogFormat, LogLevel};
use std::sync::OnceLock;

static SETUP: OnceLock<(LogLevel, LogFormat)> = OnceLock::new();

/// Sets the level and format (the first call wins).
pub fn init(level: LogLevel, format: LogFormat) {
    let _ = SETUP.set((level, format));
}

/// Writes `message` at `level`, when the level is on.
pub fn log(level: LogLevel, message: &str) {
    let (min, format) = SETUP.get().copied().unwrap_or((LogLevel::Info, LogFormat::Text));
    if level < min {
        return;
    }
    eprintln!("{}", line(level, format, message, std::time::SystemTime::now()));
}

/// One line as written.
pub fn line(level: LogLevel, format: LogFormat, message: &str, at: std::time::SystemTime) -> String {
    let name = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warning",
        LogLevel::Error => "error",
    };
    match format {
        LogFormat::Text => format!("ratelimit-engine: {message}"),
        LogFormat::Json => {
            let secs = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            serde_json::json!({ "level": name, "msg": message, "time": secs }).to_string()
        }
    }
}

/// Logs at info.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at warning.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object() {
        let l = line(LogLevel::Warn, LogFormat::Json, "a \"quoted\" line", std::time::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!((v["level"].as_str(), v["msg"].as_str()), (Some("warning"), Some("a \"quoted\" line")));
        assert_eq!(line(LogLevel::Info, LogFormat::Text, "x", std::time::UNIX_EPOCH), "ratelimit-engine: x");
    }
}
