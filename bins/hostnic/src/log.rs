//! A tiny logger: one line per event to `logFile` (appended) or stderr.
//!
//! Never stdout, which carries only the result. Kept dependency-free so the
//! plugin stays small and starts fast.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Failures only.
    Error,
    /// Failures and surprising events (pending DELs).
    Warn,
    /// One line per invocation.
    Info,
    /// Requests and answers.
    Debug,
    /// Everything.
    Trace,
}

impl Level {
    /// Parses `logLevel` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// Where log lines go.
#[derive(Debug)]
pub struct Logger {
    level: Level,
    file: Option<File>,
    context: String,
}

impl Logger {
    /// A logger writing to stderr at `level`.
    pub fn stderr(level: Level) -> Self {
        Self {
            level,
            file: None,
            context: String::new(),
        }
    }

    /// A logger appending to `path`, or to stderr if it cannot be opened.
    pub fn open(path: Option<&Path>, level: Level) -> Self {
        let mut logger = Self::stderr(level);
        if let Some(path) = path {
            match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => logger.file = Some(f),
                Err(e) => logger.log(
                    Level::Warn,
                    format_args!(
                        "cannot open log file {}: {e}; logging to stderr",
                        path.display()
                    ),
                ),
            }
        }
        logger
    }

    /// Sets the text every line carries after the level (verb, container, ifname).
    pub fn set_context(&mut self, context: String) {
        self.context = context;
    }

    /// True if `level` is logged.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    /// Writes one line at `level`.
    pub fn log(&self, level: Level, msg: fmt::Arguments<'_>) {
        if !self.enabled(level) {
            return;
        }
        let line = format!(
            "{} {:5} hostnic[{}] {}{}{msg}\n",
            rfc3339_now(),
            level.as_str(),
            std::process::id(),
            self.context,
            if self.context.is_empty() { "" } else { ": " },
        );
        // A failed log write must never fail the verb.
        let _ = match &self.file {
            Some(f) => (&*f).write_all(line.as_bytes()),
            None => std::io::stderr().lock().write_all(line.as_bytes()),
        };
    }

    /// Logs at error level.
    pub fn error(&self, msg: fmt::Arguments<'_>) {
        self.log(Level::Error, msg);
    }

    /// Logs at warn level.
    pub fn warn(&self, msg: fmt::Arguments<'_>) {
        self.log(Level::Warn, msg);
    }

    /// Logs at info level.
    pub fn info(&self, msg: fmt::Arguments<'_>) {
        self.log(Level::Info, msg);
    }

    /// Logs at debug level.
    pub fn debug(&self, msg: fmt::Arguments<'_>) {
        self.log(Level::Debug, msg);
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_millis())
}

fn format_utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(format_utc(951_827_696, 7), "2000-02-29T12:34:56.007Z");
        // 2026-11-27 20:00:00 UTC.
        assert_eq!(format_utc(1_795_809_600, 999), "2026-11-27T20:00:00.999Z");
    }

    #[test]
    fn levels_filter() {
        let l = Logger::stderr(Level::Warn);
        assert!(l.enabled(Level::Error));
        assert!(!l.enabled(Level::Info));
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("verbose"), None);
    }
}
