//! VERSION: list the supported specification versions.

use serde_json::json;

use crate::version::{CniVersion, SUPPORTED_VERSIONS};

/// The VERSION answer, written in `answer_in`.
pub fn exec(answer_in: CniVersion) -> String {
    json!({"cniVersion": answer_in.as_str(), "supportedVersions": SUPPORTED_VERSIONS}).to_string()
        + "\n"
}
