//! The network configuration read from stdin.
//!
//! Order of checks, which decides the error code: stdin must be a JSON object
//! (6), its `cniVersion` must be supported (1), then every field must be valid
//! (7). Unknown keys are ignored, as the specification requires of plugins.

use std::path::PathBuf;
use std::time::Duration;

use hostnic_core::api::Dns;
use hostnic_core::types::AttachmentId;
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::log::Level;
use crate::version::{CniVersion, SUPPORTED_VERSIONS};

/// Where the agent listens unless `agentSocket` says otherwise, and its state
/// directory unless `stateDir` does (the agent's defaults, defined once in the core).
pub use hostnic_core::api::{DEFAULT_AGENT_SOCKET, DEFAULT_STATE_DIR};
/// The longest Unix socket path Linux accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// stdin decoded as a JSON object, before any validation.
pub type RawConfig = Map<String, Value>;

/// Decodes stdin into a JSON object (error code 6 otherwise).
pub fn decode(stdin: &[u8]) -> Result<RawConfig, CniError> {
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(CniError::decode(
            "network config is not a JSON object",
            format!("got {}", kind(&other)),
        )),
        Err(e) => Err(CniError::decode(
            "failed to decode network config",
            e.to_string(),
        )),
    }
}

/// The `cniVersion` string as given, if it is a string (used to answer errors).
pub fn raw_version(raw: &RawConfig) -> Option<&str> {
    raw.get("cniVersion").and_then(Value::as_str)
}

/// The configuration's version, or error code 1.
pub fn version(raw: &RawConfig) -> Result<CniVersion, CniError> {
    let given = match raw.get("cniVersion") {
        None => return Err(CniError::incompatible("cniVersion is missing", supported())),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(CniError::incompatible(
                "cniVersion is not a string",
                format!("got {}; {}", kind(other), supported()),
            ));
        }
    };
    CniVersion::parse(given).ok_or_else(|| {
        CniError::incompatible(format!("incompatible CNI version {given:?}"), supported())
    })
}

fn supported() -> String {
    format!("supported versions: {}", SUPPORTED_VERSIONS.join(", "))
}

/// A validated hostnic network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub version: CniVersion,
    /// `name`: the network's name.
    pub name: String,
    /// `agentSocket`.
    pub agent_socket: PathBuf,
    /// `stateDir`: where pending DELs are written.
    pub state_dir: PathBuf,
    /// `vethPrefix`, if set.
    pub veth_prefix: Option<String>,
    /// `mtu`, if set.
    pub mtu: Option<u32>,
    /// `logFile`, if set (stderr otherwise).
    pub log_file: Option<PathBuf>,
    /// `logLevel`.
    pub log_level: Level,
    /// `agentTimeoutMs`: overrides every verb's default agent timeout.
    pub agent_timeout: Option<Duration>,
    /// `dns`, if set.
    pub dns: Option<Dns>,
    /// `runtimeConfig`, if set.
    pub runtime_config: Option<Value>,
    /// `prevResult`, if set.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC), if set.
    pub valid_attachments: Option<Vec<AttachmentId>>,
}

/// Validates every field of an already-versioned configuration (error code 7).
pub fn parse(raw: &RawConfig, version: CniVersion) -> Result<NetConf, CniError> {
    let name = required_str(raw, "name")?;
    if name.is_empty() {
        return Err(CniError::config("\"name\" is empty", ""));
    }
    let plugin_type = required_str(raw, "type")?;
    if plugin_type.is_empty() {
        return Err(CniError::config("\"type\" is empty", ""));
    }
    let agent_socket =
        optional_path(raw, "agentSocket")?.unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET));
    if agent_socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(CniError::config(
            "\"agentSocket\" is too long",
            format!("a Unix socket path has at most {MAX_SOCKET_PATH} bytes"),
        ));
    }
    let state_dir =
        optional_path(raw, "stateDir")?.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let veth_prefix = optional_str(raw, "vethPrefix")?;
    if let Some(p) = &veth_prefix {
        // The agent appends 11 characters; an interface name has at most 15.
        if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CniError::config(
                "invalid \"vethPrefix\"",
                format!("{p:?} must be 1 to 4 ASCII letters or digits"),
            ));
        }
    }
    let mtu = optional_u64(raw, "mtu")?
        .map(|m| {
            u32::try_from(m)
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| {
                    CniError::config("invalid \"mtu\"", format!("{m} is not in 68..=65535"))
                })
        })
        .transpose()?;
    let log_file = optional_path(raw, "logFile")?;
    let log_level = match optional_str(raw, "logLevel")? {
        None => Level::Info,
        Some(l) => Level::parse(&l).ok_or_else(|| {
            CniError::config(
                "invalid \"logLevel\"",
                format!("{l:?} is none of error, warn, info, debug, trace"),
            )
        })?,
    };
    let agent_timeout = optional_u64(raw, "agentTimeoutMs")?
        .map(|ms| {
            if (1..=600_000).contains(&ms) {
                Ok(Duration::from_millis(ms))
            } else {
                Err(CniError::config(
                    "invalid \"agentTimeoutMs\"",
                    format!("{ms} is not in 1..=600000"),
                ))
            }
        })
        .transpose()?;
    let dns = match raw.get("dns") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<Dns>(v.clone())
                .map_err(|e| CniError::config("invalid \"dns\"", e.to_string()))?,
        ),
    };
    let runtime_config = optional_object(raw, "runtimeConfig")?;
    let prev_result = optional_object(raw, "prevResult")?;
    let valid_attachments = match raw.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_attachments(v)?),
    };
    Ok(NetConf {
        version,
        name,
        agent_socket,
        state_dir,
        veth_prefix,
        mtu,
        log_file,
        log_level,
        agent_timeout,
        dns,
        runtime_config,
        prev_result,
        valid_attachments,
    })
}

/// `[{"containerID": "...", "ifname": "..."}, ...]`.
fn parse_attachments(v: &Value) -> Result<Vec<AttachmentId>, CniError> {
    let invalid =
        |details: String| CniError::config("invalid \"cni.dev/valid-attachments\"", details);
    let Value::Array(items) = v else {
        return Err(invalid(format!("expected an array, got {}", kind(v))));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("entry {i} has no string {key:?}")))
            };
            Ok(AttachmentId {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect()
}

fn required_str(raw: &RawConfig, key: &str) -> Result<String, CniError> {
    optional_str(raw, key)?.ok_or_else(|| CniError::config(format!("\"{key}\" is missing"), ""))
}

fn optional_str(raw: &RawConfig, key: &str) -> Result<Option<String>, CniError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::config(
            format!("\"{key}\" must be a string"),
            format!("got {}", kind(other)),
        )),
    }
}

fn optional_path(raw: &RawConfig, key: &str) -> Result<Option<PathBuf>, CniError> {
    match optional_str(raw, key)? {
        None => Ok(None),
        Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(Some(PathBuf::from(p))),
        Some(p) => Err(CniError::config(
            format!("\"{key}\" must be an absolute path"),
            format!("got {p:?}"),
        )),
    }
}

fn optional_u64(raw: &RawConfig, key: &str) -> Result<Option<u64>, CniError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            CniError::config(
                format!("\"{key}\" must be a non-negative integer"),
                format!("got {v}"),
            )
        }),
    }
}

fn optional_object(raw: &RawConfig, key: &str) -> Result<Option<Value>, CniError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(CniError::config(
            format!("\"{key}\" must be an object"),
            format!("got {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::api::codes;
    use serde_json::json;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        let raw = decode(v.to_string().as_bytes())?;
        let version = version(&raw)?;
        parse(&raw, version)
    }

    #[test]
    fn defaults_apply() {
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "hostnic"})).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn decode_errors_are_code_6_and_versions_code_1() {
        assert_eq!(decode(b"{").unwrap_err().code, codes::DECODE_FAILED);
        assert_eq!(decode(b"[1]").unwrap_err().code, codes::DECODE_FAILED);
        assert_eq!(decode(b"").unwrap_err().code, codes::DECODE_FAILED);
        for v in [
            json!({"name": "n"}),
            json!({"cniVersion": "0.2.0"}),
            json!({"cniVersion": 1}),
        ] {
            assert_eq!(conf(v).unwrap_err().code, codes::INCOMPATIBLE_VERSION);
        }
    }

    #[test]
    fn invalid_fields_are_code_7() {
        let base = json!({"cniVersion": "1.1.0", "name": "n", "type": "hostnic"});
        for (k, v) in [
            ("name", json!("")),
            ("type", json!(3)),
            ("mtu", json!(10)),
            ("mtu", json!("1500")),
            ("vethPrefix", json!("toolong")),
            ("agentSocket", json!("relative.sock")),
            ("stateDir", json!("var/lib")),
            ("logLevel", json!("loud")),
            ("dns", json!({"nameservers": "1.1.1.1"})),
            ("prevResult", json!([])),
            ("cni.dev/valid-attachments", json!([{"containerID": "c"}])),
            ("agentTimeoutMs", json!(0)),
        ] {
            let mut c = base.clone();
            c[k] = v;
            assert_eq!(conf(c).unwrap_err().code, codes::INVALID_CONFIG, "{k}");
        }
    }

    #[test]
    fn valid_attachments_are_read() {
        let c = conf(
            json!({"cniVersion": "1.1.0", "name": "n", "type": "hostnic",
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![AttachmentId {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }
}
