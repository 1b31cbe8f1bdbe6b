//! A request limit over a sliding window: "N requests in any W seconds", the
//! shape of the account's API quota and of a client's own budget. The window
//! that counts requests against it is the QingCloud adapter's.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// At most `requests` requests in any window of `window`: the account quota
/// (2,000 per 3,600 s by default) or a client's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    /// Requests allowed per window (at least 1).
    pub requests: u32,
    /// The window's length (non-zero).
    pub window: Duration,
}

impl WindowLimit {
    /// The account's default API request quota: 2,000 requests per 3,600 s.
    pub const ACCOUNT_DEFAULT: WindowLimit = WindowLimit {
        requests: 2000,
        window: Duration::from_secs(3600),
    };

    /// `requests` per `window`.
    pub fn new(requests: u32, window: Duration) -> Self {
        Self { requests, window }
    }

    /// The same limit with its window `scale` times shorter (a simulated hour lived
    /// in `3600 / scale` seconds). `scale` below 1e-3 is taken as 1e-3.
    pub fn scaled(self, scale: f64) -> Self {
        Self {
            requests: self.requests,
            window: scale_down(self.window, scale),
        }
    }

    /// Parses `N/S` (`2000/3600`) or `off` (`None`).
    pub fn parse_optional(s: &str) -> Result<Option<Self>, LimitParseError> {
        if s.trim().eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

/// `duration / scale`, with `scale` at least 1e-3.
pub fn scale_down(duration: Duration, scale: f64) -> Duration {
    duration.div_f64(scale.max(1e-3))
}

impl fmt::Display for WindowLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.window.as_secs_f64();
        if w.fract() == 0.0 {
            write!(f, "{}/{}", self.requests, w as u64)
        } else {
            write!(f, "{}/{w}", self.requests)
        }
    }
}

/// A request limit that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid request limit {input:?}: expected REQUESTS/SECONDS such as 2000/3600 (both positive), or off"
)]
pub struct LimitParseError {
    /// What was given.
    pub input: String,
}

impl FromStr for WindowLimit {
    type Err = LimitParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LimitParseError {
            input: s.to_string(),
        };
        let (n, w) = s.trim().split_once('/').ok_or_else(err)?;
        let requests: u32 = n.trim().parse().map_err(|_| err())?;
        let secs: f64 = w.trim().parse().map_err(|_| err())?;
        if requests == 0 || !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
            return Err(err());
        }
        Ok(Self {
            requests,
            window: Duration::from_secs_f64(secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_display_and_reject_nonsense() {
        let l: WindowLimit = "2000/3600".parse().unwrap();
        assert_eq!(l, WindowLimit::ACCOUNT_DEFAULT);
        assert_eq!(l.to_string(), "2000/3600");
        assert_eq!(
            " 5 / 0.5 ".parse::<WindowLimit>().unwrap().window,
            Duration::from_millis(500)
        );
        assert_eq!(WindowLimit::parse_optional("off").unwrap(), None);
        assert_eq!(WindowLimit::parse_optional("OFF").unwrap(), None);
        for bad in [
            "", "2000", "2000/", "/3600", "0/3600", "10/0", "-1/60", "10/-5", "a/b", "10/nan",
            "10/inf",
        ] {
            let err = bad.parse::<WindowLimit>().unwrap_err();
            assert!(err.to_string().contains("REQUESTS/SECONDS"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_scaled_limit_keeps_its_requests_and_shortens_its_window() {
        let l = WindowLimit::ACCOUNT_DEFAULT.scaled(60.0);
        assert_eq!(l.requests, 2000);
        assert_eq!(l.window, Duration::from_secs(60));
    }
}
