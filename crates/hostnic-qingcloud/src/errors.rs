//! How every `ret_code` of the API maps onto the core's [`CloudErrorKind`].

use hostnic_core::ports::{CloudError, CloudErrorKind};

/// Malformed request: missing or badly formatted parameter.
pub const MALFORMED_REQUEST: i64 = 1100;
/// Unknown action or bad method.
pub const UNKNOWN_ACTION: i64 = 1101;
/// Authentication failed: unknown access key or wrong signature.
pub const AUTH_FAILED: i64 = 1200;
/// Request expired: `time_stamp` more than 60 s off.
pub const REQUEST_EXPIRED: i64 = 1300;
/// Access denied, or the resource is in a state that forbids the operation.
pub const ACCESS_DENIED: i64 = 1400;
/// Resource not found.
pub const NOT_FOUND: i64 = 2100;
/// Insufficient balance.
pub const INSUFFICIENT_BALANCE: i64 = 2400;
/// Quota exceeded (resources, or API requests in a short time).
pub const QUOTA_EXCEEDED: i64 = 2500;
/// Internal error.
pub const INTERNAL_ERROR: i64 = 5000;
/// Server busy / timed out.
pub const SERVER_BUSY: i64 = 5100;

/// True when a 2500 message is about the account's API request quota (or a
/// request rate) rather than a resource quota (NICs per instance, addresses of a
/// vxnet). The API uses one code for both; only the message tells them apart.
pub fn is_request_quota_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "request quota",
        "requests quota",
        "api quota",
        "quota of api",
        "request rate",
        "requests per",
        "too many requests",
        "too many api",
        "throttl",
        "too frequent",
        "request limit",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The kind of failure a `ret_code` (with its message) means.
pub fn classify(ret_code: i64, message: &str) -> CloudErrorKind {
    match ret_code {
        INTERNAL_ERROR | SERVER_BUSY => CloudErrorKind::Retryable,
        // The account is locked out: a breaker, not a retry.
        QUOTA_EXCEEDED if is_request_quota_message(message) => CloudErrorKind::Throttled,
        // A resource quota: the engine moves on to the next vxnet.
        QUOTA_EXCEEDED => CloudErrorKind::QuotaExceeded,
        NOT_FOUND => CloudErrorKind::NotFound,
        // 1100, 1101, 1200, 1300 (our clock is off: retrying with the same clock fails
        // again), 1400, 2400 and anything unknown: retrying will not help.
        _ => CloudErrorKind::Permanent,
    }
}

/// True for the answer that trips the client's breaker: a request-quota 2500.
pub fn is_request_quota(ret_code: Option<i64>, message: &str) -> bool {
    ret_code == Some(QUOTA_EXCEEDED) && is_request_quota_message(message)
}

/// The error for an API answer with a non-zero `ret_code`.
pub fn api_error(action: &str, ret_code: i64, message: &str) -> CloudError {
    CloudError::new(classify(ret_code, message), action, message).with_code(ret_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_is_classified() {
        use CloudErrorKind::*;
        let cases = [
            (1100, "MissingParameter", Permanent),
            (1101, "unknown action", Permanent),
            (1200, "AuthFailure, signature not matched", Permanent),
            (1300, "RequestExpired", Permanent),
            (1400, "PermissionDenied, nic is in-use", Permanent),
            (2100, "ResourceNotFound", NotFound),
            (2400, "insufficient balance", Permanent),
            (
                2500,
                "QuotaExceeded, the vxnet has no available IP",
                QuotaExceeded,
            ),
            (
                2500,
                "QuotaExceeded, request rate exceeded the limit",
                Throttled,
            ),
            (2500, "Too many requests in a short time", Throttled),
            (
                2500,
                "QuotaExceeded, the API request quota of access key [AK] is exceeded",
                Throttled,
            ),
            (
                2500,
                "QuotaExceeded, vxnet [vxnet-1] does not have enough available IP addresses: requested [5], available [0]",
                QuotaExceeded,
            ),
            (
                2500,
                "QuotaExceeded, instance [i-1] can have at most [64] NICs",
                QuotaExceeded,
            ),
            (5000, "InternalError", Retryable),
            (5100, "ServerBusy", Retryable),
        ];
        for (code, msg, kind) in cases {
            assert_eq!(classify(code, msg), kind, "{code} {msg}");
            let err = api_error("DescribeNics", code, msg);
            assert_eq!(err.code, Some(code));
            assert_eq!(err.kind, kind);
        }
    }
}
