//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`.

use std::collections::BTreeMap;

use crate::error::CniError;

/// The environment as the parser sees it: variable name → value.
pub type EnvMap = BTreeMap<String, String>;

/// The verb a runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach.
    Del,
    /// Verify (0.4.0+).
    Check,
    /// Garbage-collect (1.1.0+).
    Gc,
    /// Readiness (1.1.0+).
    Status,
    /// List supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The verb as `CNI_COMMAND` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// `CNI_ARGS`: the keys hostnic understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `K8S_POD_NAMESPACE`, empty if absent.
    pub pod_namespace: String,
    /// `K8S_POD_NAME`, empty if absent.
    pub pod_name: String,
    /// `K8S_POD_UID`, if present.
    pub pod_uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`, if present.
    pub infra_container_id: Option<String>,
}

/// Parses `CNI_ARGS` (`K=V;K=V`). Unknown keys are an error unless
/// `IgnoreUnknown` is `1` or `true` (any case), as in the reference plugins.
pub fn parse_cni_args(s: &str) -> Result<CniArgs, CniError> {
    let mut pairs = Vec::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CniError::env(
                "invalid CNI_ARGS",
                format!("{part:?} is not KEY=VALUE"),
            ));
        };
        pairs.push((k, v));
    }
    let ignore_unknown = pairs
        .iter()
        .any(|(k, v)| *k == "IgnoreUnknown" && (*v == "1" || v.eq_ignore_ascii_case("true")));
    let mut args = CniArgs::default();
    for (k, v) in pairs {
        match k {
            "K8S_POD_NAMESPACE" => args.pod_namespace = v.to_string(),
            "K8S_POD_NAME" => args.pod_name = v.to_string(),
            "K8S_POD_UID" => args.pod_uid = Some(v.to_string()),
            "K8S_POD_INFRA_CONTAINER_ID" => args.infra_container_id = Some(v.to_string()),
            "IgnoreUnknown" => {}
            _ if ignore_unknown => {}
            _ => {
                return Err(CniError::env(
                    "invalid CNI_ARGS",
                    format!("unknown key {k:?} (set IgnoreUnknown=1 to ignore it)"),
                ));
            }
        }
    }
    Ok(args)
}

/// The parsed and validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`, validated when present.
    pub container_id: Option<String>,
    /// `CNI_NETNS`; `None` when absent or empty.
    pub netns: Option<String>,
    /// `CNI_IFNAME`, validated when present.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// `CNI_PATH` (unused: hostnic delegates to no other plugin).
    pub path: Option<String>,
}

fn non_empty(env: &EnvMap, key: &str) -> Option<String> {
    env.get(key).filter(|v| !v.is_empty()).cloned()
}

/// Reads `CNI_COMMAND`.
pub fn parse_command(env: &EnvMap) -> Result<Command, CniError> {
    match env.get("CNI_COMMAND") {
        None => Err(CniError::env("CNI_COMMAND is not set", "")),
        Some(c) => Command::parse(c).ok_or_else(|| {
            CniError::env(
                "unknown CNI_COMMAND",
                format!("{c:?} is none of ADD, DEL, CHECK, GC, STATUS, VERSION"),
            )
        }),
    }
}

/// Reads and validates the environment `command` needs: ADD and CHECK need a
/// container id, a netns and an interface name; DEL needs a container id and an
/// interface name (containerd sends an empty `CNI_NETNS`); GC, STATUS and
/// VERSION need nothing.
pub fn parse_env(command: Command, env: &EnvMap) -> Result<CniEnv, CniError> {
    let container_id = non_empty(env, "CNI_CONTAINERID");
    let netns = non_empty(env, "CNI_NETNS");
    let ifname = non_empty(env, "CNI_IFNAME");
    let (need_container, need_netns) = match command {
        Command::Add | Command::Check => (true, true),
        Command::Del => (true, false),
        Command::Gc | Command::Status | Command::Version => (false, false),
    };
    if need_container {
        let Some(id) = &container_id else {
            return Err(CniError::env("CNI_CONTAINERID is not set", ""));
        };
        validate_container_id(id)?;
        let Some(name) = &ifname else {
            return Err(CniError::env("CNI_IFNAME is not set", ""));
        };
        validate_ifname(name)?;
    }
    if need_netns && netns.is_none() {
        return Err(CniError::env("CNI_NETNS is not set", ""));
    }
    let args = match command {
        // CNI_ARGS only matters for the verbs that name a pod.
        Command::Add | Command::Del | Command::Check => {
            parse_cni_args(env.get("CNI_ARGS").map_or("", String::as_str))?
        }
        _ => CniArgs::default(),
    };
    Ok(CniEnv {
        command,
        container_id,
        netns,
        ifname,
        args,
        path: non_empty(env, "CNI_PATH"),
    })
}

/// The specification's rule: starts with an alphanumeric, then alphanumerics, `_`, `.`, `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::env(
            "invalid CNI_CONTAINERID",
            format!("{id:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"),
        ))
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        Err(CniError::env(
            "invalid CNI_IFNAME",
            format!("{name:?} is not a valid interface name"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::api::codes;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubelet_args_are_read() {
        let a = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(a.pod_namespace, "default");
        assert_eq!(a.pod_name, "web");
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(a.infra_container_id.as_deref(), Some("abc"));
    }

    #[test]
    fn unknown_args_need_ignore_unknown() {
        assert_eq!(
            parse_cni_args("FOO=1").unwrap_err().code,
            codes::INVALID_ENV
        );
        assert!(parse_cni_args("FOO=1;IgnoreUnknown=true").is_ok());
        assert_eq!(
            parse_cni_args("novalue").unwrap_err().code,
            codes::INVALID_ENV
        );
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
    }

    #[test]
    fn del_accepts_an_empty_netns_but_add_does_not() {
        let e = env(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ]);
        let del = parse_env(Command::Del, &e).unwrap();
        assert_eq!(del.netns, None);
        assert_eq!(
            parse_env(Command::Add, &e).unwrap_err().code,
            codes::INVALID_ENV
        );
    }

    #[test]
    fn container_id_and_ifname_are_validated() {
        for (id, ifname) in [
            ("-bad", "eth0"),
            ("c1", "a/b"),
            ("c1", "0123456789abcdef"),
            ("c 1", "eth0"),
        ] {
            let e = env(&[
                ("CNI_CONTAINERID", id),
                ("CNI_IFNAME", ifname),
                ("CNI_NETNS", "/x"),
            ]);
            assert_eq!(
                parse_env(Command::Add, &e).unwrap_err().code,
                codes::INVALID_ENV,
                "{id} {ifname}"
            );
        }
    }

    #[test]
    fn gc_and_status_need_no_container() {
        assert!(parse_env(Command::Gc, &EnvMap::new()).is_ok());
        assert!(parse_env(Command::Status, &EnvMap::new()).is_ok());
    }
}
