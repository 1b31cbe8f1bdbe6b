//! The CNI error: what the plugin prints on stdout when a verb fails.

use std::fmt;

use hostnic_core::api::{AgentError, codes};
use serde_json::json;

/// A failed invocation, in the CNI specification's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The CNI error code (`hostnic_core::api::codes`).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More context, possibly empty.
    pub details: String,
}

impl CniError {
    /// An error with `code`, `msg` and `details`.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 1: the configuration's `cniVersion` (or the verb in that version) is unsupported.
    pub fn incompatible(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INCOMPATIBLE_VERSION, msg, details)
    }

    /// Code 4: a required environment variable is missing or invalid.
    pub fn env(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ENV, msg, details)
    }

    /// Code 6: stdin is not a JSON object.
    pub fn decode(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::DECODE_FAILED, msg, details)
    }

    /// Code 7: the network configuration is invalid.
    pub fn config(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_CONFIG, msg, details)
    }

    /// The error JSON of the specification, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl From<AgentError> for CniError {
    fn from(e: AgentError) -> Self {
        Self::new(e.code, e.msg, e.details)
    }
}
