//! The node agent's configuration file (YAML) and its validation.
//!
//! Every key is optional; a missing key takes the documented default. The pool
//! keys are [`PoolConfig`]'s fields. See `deploy/agent.example.yaml`. Reading
//! the file is the agent's (`hostnic_agent::settings::load`).

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::api::{DEFAULT_AGENT_SOCKET, DEFAULT_STATE_DIR};
use crate::config::PoolConfig;
use crate::config::limit::WindowLimit;
use crate::types::VxnetId;

/// Default metrics and introspection address (the AWS VPC CNI's metrics port).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:61678";

/// Where `/v1/*` is served when `metrics_addr` is not a loopback address (the AWS
/// VPC CNI's introspection port).
pub const DEFAULT_INTROSPECTION_ADDR: &str = "127.0.0.1:61679";

/// What the agent does about another CNI configuration that sorts before its own
/// in `cni_conf_dir` (the runtime uses the first one, so hostnic would not be used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtherConflists {
    /// Say so (log, `/readyz`, `hostnic_cni_config_shadowed`), touch nothing.
    #[default]
    Report,
    /// Once the agent can serve, rename them to `<name>.hostnic-moved-aside` (the
    /// runtimes read only `.conf`, `.conflist` and `.json`), and say so. Renaming
    /// back is the rollback (docs/migrate-from-hostnic-cni.md).
    MoveAside,
}

/// The agent's default request budget: 60 an hour. At rest a node spends under 2,
/// filling a node from empty about 10, so a node has room for several fills an hour,
/// and one runaway agent takes at most 3 % of the account's default quota.
pub const DEFAULT_CLOUD_BUDGET: &str = "60/3600";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// `text` or `json` (the flag's values).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("invalid log format {other:?}: text or json")),
        }
    }
}

/// Who calls the cloud for the node's NICs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentMode {
    /// The agent calls the QingCloud API itself with the `qcsecret` credentials
    /// (single nodes, embedded use, the smallest labs).
    #[default]
    Direct,
    /// The hostnic controller makes every cloud call of the cluster; the agent
    /// holds no credentials, writes its `HostnicNode` and prepares the NICs of
    /// its status (the default of `deploy/hostnic.yaml`).
    Controller,
}

impl std::str::FromStr for AgentMode {
    type Err = String;

    /// `direct` or `controller` (the flag's values).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(AgentMode::Direct),
            "controller" => Ok(AgentMode::Controller),
            other => Err(format!("invalid mode {other:?}: direct or controller")),
        }
    }
}

/// Whether the conflist chains the reference `portmap` plugin (`hostPort`s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainPortmap {
    /// Chained when `portmap` is in `cni_bin_dir` when the conflist is written.
    /// A missing chained plugin fails every ADD, so it is never chained blindly.
    #[default]
    Auto,
    /// Always chained (the operator installs `portmap` on every node).
    Always,
    /// Never chained (no `hostPort` support).
    Never,
}

/// The agent's configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `direct` (the agent calls the cloud) or `controller` (the controller does;
    /// no credentials on the node).
    pub mode: AgentMode,
    /// Controller mode: the VPC's networks, which pod traffic reaches without
    /// SNAT (direct mode asks the cloud). Default: the private ranges.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Warm pool and allocator settings (the core's `PoolConfig`).
    pub pool: PoolConfig,
    /// MTU of NICs and veths.
    pub mtu: u32,
    /// Destinations pod traffic is never SNATed to (besides the VPC's networks).
    pub snat_exclusions: Vec<Ipv4Net>,
    /// The VPC does SNAT (the node does not).
    pub external_snat: bool,
    /// Vxnets pod NICs come from, in order of preference; empty = the primary NIC's vxnet.
    pub vxnets: Vec<VxnetId>,
    /// The Unix socket the CNI plugin talks to.
    pub socket: PathBuf,
    /// Caps on the socket's connections and the request bytes they hold.
    pub socket_limits: SocketLimits,
    /// Where the checkpoint and pending DELs live.
    pub state_dir: PathBuf,
    /// Address of `/metrics`, `/healthz`, `/readyz` (and `/v1/*` when it is a
    /// loopback address).
    pub metrics_addr: SocketAddr,
    /// Address of the introspection endpoint `/v1/*` (no authentication): must be
    /// a loopback address. `None`: the metrics listener when `metrics_addr` is a
    /// loopback address, else [`DEFAULT_INTROSPECTION_ADDR`].
    pub introspection_addr: Option<SocketAddr>,
    /// Other CNI configurations that sort before hostnic's.
    pub other_conflists: OtherConflists,
    /// Where `10-hostnic.conflist` is written once the agent can serve an ADD.
    pub cni_conf_dir: PathBuf,
    /// Where the `hostnic` plugin binary is installed.
    pub cni_bin_dir: PathBuf,
    /// `cniVersion` of the conflist. 1.0.0 by default: containerd 1.6/1.7 and
    /// podman 4 reject a 1.1.0 conflist (see the runtime matrix in deploy/README.md).
    pub cni_version: String,
    /// Whether the conflist chains `portmap`.
    pub portmap: ChainPortmap,
    /// The network name in the conflist.
    pub network_name: String,
    /// The plugin binary to install; `None` = `hostnic` next to the agent binary,
    /// and nothing is installed if it does not exist there.
    pub plugin_binary: Option<PathBuf>,
    /// Log line format.
    pub log_format: LogFormat,
    /// The network namespace holding the node's NICs; `None` = the agent's own.
    pub host_netns: Option<PathBuf>,
    /// Seconds between pool rounds when nothing wakes the pool earlier.
    pub pool_interval_secs: f64,
    /// Seconds between periodic reconciles (local: checkpoint, host and pods; the
    /// cloud only when they disagree, at start and every `pool.cloud_resync`).
    pub reconcile_interval_secs: f64,
    /// The agent's own budget of API requests (every attempt counts, retries
    /// included): `REQUESTS/SECONDS`, or `off`. A call that finds it spent waits a
    /// few seconds for a slot, then fails (the pool backs off): one agent can never
    /// take much of the account's quota (2,000 an hour, shared by every node).
    pub cloud_budget: String,
    /// After a request-quota 2500 the client refuses every call and probes the quota
    /// once after this many seconds ...
    pub breaker_probe_secs: f64,
    /// ... doubling the interval for every probe the quota refuses, up to this many
    /// seconds (every request counts against the quota, refused ones too: a fleet
    /// probing once a minute each would keep a locked account locked).
    pub breaker_probe_max_secs: f64,
    /// How often the credentials file is checked for a new version (a `qcsecret`
    /// Secret update replaces it through a symlink swap in the mounted directory).
    pub credentials_check_secs: f64,
    /// Bytes of the checkpoint journal; `None` (the default): a quarter of the state
    /// volume's free space, 16 KiB to 4 MiB. (A harness running a thousand agents on
    /// one disk sets a small one.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_bytes: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: AgentMode::Direct,
            vpc_cidrs: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
                .iter()
                .map(|c| c.parse().expect("literal"))
                .collect(),
            pool: PoolConfig::default(),
            mtu: 1500,
            snat_exclusions: Vec::new(),
            external_snat: false,
            vxnets: Vec::new(),
            socket: DEFAULT_AGENT_SOCKET.into(),
            socket_limits: SocketLimits::default(),
            state_dir: DEFAULT_STATE_DIR.into(),
            metrics_addr: DEFAULT_METRICS_ADDR.parse().expect("literal"),
            introspection_addr: None,
            other_conflists: OtherConflists::Report,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_version: "1.0.0".into(),
            portmap: ChainPortmap::Auto,
            network_name: "hostnic".into(),
            plugin_binary: None,
            log_format: LogFormat::Text,
            host_netns: None,
            pool_interval_secs: 5.0,
            reconcile_interval_secs: 60.0,
            cloud_budget: DEFAULT_CLOUD_BUDGET.to_string(),
            breaker_probe_secs: 60.0,
            breaker_probe_max_secs: 3600.0,
            credentials_check_secs: 10.0,
            journal_bytes: None,
        }
    }
}

/// Caps on the plugin socket, so that no client can take the agent past its
/// memory limit (see the agent's `admission` module). The defaults hold request
/// bodies under 16 MiB whatever clients send, well under the DaemonSet's 256 Mi.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketLimits {
    /// Connections served at once; one more is answered "agent busy" (code 11).
    /// Twice the most pods a node runs, so a cold start never meets it.
    pub max_connections: u32,
    /// Request bytes all connections may hold at once (each at most 1 MiB, the
    /// protocol's frame limit); a body that does not fit is answered "agent busy".
    /// Bodies over 64 KiB leave the last quarter to ordinary requests (~1 KiB).
    pub max_buffered_bytes: u64,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_buffered_bytes: 16 << 20,
        }
    }
}

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read agent config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("agent config {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("agent config: {field}: {reason}")]
    Invalid {
        /// The key.
        field: String,
        /// Why.
        reason: String,
    },
}

const CNI_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl Settings {
    /// Where `/v1/*` is served: `introspection_addr`, or the metrics listener when
    /// `metrics_addr` is a loopback address, or [`DEFAULT_INTROSPECTION_ADDR`].
    pub fn introspection(&self) -> SocketAddr {
        match self.introspection_addr {
            Some(a) => a,
            None if self.metrics_addr.ip().is_loopback() => self.metrics_addr,
            None => DEFAULT_INTROSPECTION_ADDR.parse().expect("literal"),
        }
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, SettingsError> {
        let settings: Settings = if text.trim().is_empty() {
            Settings::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| SettingsError::Parse {
                path: origin.to_string(),
                message: e.to_string(),
            })?
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |field: &str, reason: &str| {
            Err(SettingsError::Invalid {
                field: field.to_string(),
                reason: reason.to_string(),
            })
        };
        if let Err(e) = self.pool.validate() {
            return invalid(&format!("pool.{}", e.field), &e.reason);
        }
        if !(68..=65535).contains(&self.mtu) {
            return invalid("mtu", "must be between 68 and 65535");
        }
        for (field, path) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("cni_conf_dir", &self.cni_conf_dir),
            ("cni_bin_dir", &self.cni_bin_dir),
        ] {
            if !path.is_absolute() {
                return invalid(field, "must be an absolute path");
            }
        }
        if let Some(a) = self.introspection_addr
            && !a.ip().is_loopback()
        {
            return invalid(
                "introspection_addr",
                "must be a loopback address: /v1/* has no authentication",
            );
        }
        if self.socket.as_os_str().len() > 107 {
            return invalid("socket", "must be at most 107 bytes (sun_path)");
        }
        if !CNI_VERSIONS.contains(&self.cni_version.as_str()) {
            return invalid(
                "cni_version",
                "must be one of 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0",
            );
        }
        if self.network_name.is_empty()
            || !self
                .network_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid("network_name", "must be letters, digits, '-', '_', '.'");
        }
        if self.socket_limits.max_connections == 0 {
            return invalid("socket_limits.max_connections", "must be at least 1");
        }
        // What bodies over 64 KiB may use (three quarters) must hold one frame of
        // the protocol's largest.
        if self.socket_limits.max_buffered_bytes < 2 * crate::api::MAX_FRAME_LEN as u64 {
            return invalid(
                "socket_limits.max_buffered_bytes",
                "must be at least 2097152 (2 MiB: two of the protocol's largest frames)",
            );
        }
        if let Err(e) = WindowLimit::parse_optional(&self.cloud_budget) {
            return invalid("cloud_budget", &e.to_string());
        }
        if self.journal_bytes.is_some_and(|b| b < 4096) {
            return invalid("journal_bytes", "must be at least 4096");
        }
        if self.breaker_probe_max_secs < self.breaker_probe_secs {
            return invalid(
                "breaker_probe_max_secs",
                "must be at least breaker_probe_secs",
            );
        }
        for (field, secs) in [
            ("pool_interval_secs", self.pool_interval_secs),
            ("reconcile_interval_secs", self.reconcile_interval_secs),
            ("breaker_probe_secs", self.breaker_probe_secs),
            ("breaker_probe_max_secs", self.breaker_probe_max_secs),
            ("credentials_check_secs", self.credentials_check_secs),
        ] {
            if !(0.01..=86400.0).contains(&secs) {
                return invalid(field, "must be between 0.01 and 86400 seconds");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let s = Settings::from_yaml("", "t").unwrap();
        assert_eq!(s.socket, PathBuf::from("/run/hostnic/hostnic.sock"));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/hostnic"));
        assert_eq!(s.metrics_addr.to_string(), "127.0.0.1:61678");
        assert_eq!(s.cni_version, "1.0.0");
        assert_eq!(s.portmap, ChainPortmap::Auto);
        assert_eq!(s.pool.min_free, 5);
    }

    #[test]
    fn pool_keys_are_read_and_unknown_keys_rejected() {
        let s = Settings::from_yaml(
            "pool:\n  min_free: 2\n  max_free: 4\n  ip_cooldown: 0\nmtu: 1450\nvxnets: [vxnet-a]\n",
            "t",
        )
        .unwrap();
        assert_eq!((s.pool.min_free, s.pool.max_free, s.mtu), (2, 4, 1450));
        assert_eq!(s.vxnets, vec![VxnetId::new("vxnet-a")]);
        let err = Settings::from_yaml("pool_size: 3\n", "t").unwrap_err();
        assert!(err.to_string().contains("pool_size"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid_and_states_the_defaults() {
        let text = include_str!("../../../../deploy/agent.example.yaml");
        let s = Settings::from_yaml(text, "deploy/agent.example.yaml").unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn the_cloud_budget_is_a_window_limit_or_off() {
        let s = Settings::from_yaml("cloud_budget: 120/3600\n", "t").unwrap();
        assert_eq!(s.cloud_budget, "120/3600");
        Settings::from_yaml("cloud_budget: \"off\"\n", "t").unwrap();
        let err = Settings::from_yaml("cloud_budget: lots\n", "t").unwrap_err();
        assert!(err.to_string().contains("cloud_budget"), "{err}");
        assert!(err.to_string().contains("2000/3600"), "{err}");
        let err = Settings::from_yaml("breaker_probe_max_secs: 10\n", "t").unwrap_err();
        assert!(err.to_string().contains("breaker_probe_max_secs"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Settings::from_yaml("pool:\n  min_free: 9\n  max_free: 3\n", "t").unwrap_err();
        assert!(err.to_string().contains("pool.max_free"), "{err}");
        let err = Settings::from_yaml("socket: relative.sock\n", "t").unwrap_err();
        assert!(err.to_string().contains("socket"), "{err}");
        let err = Settings::from_yaml("cni_version: 2.0.0\n", "t").unwrap_err();
        assert!(err.to_string().contains("cni_version"), "{err}");
        let err = Settings::from_yaml("introspection_addr: 0.0.0.0:61679\n", "t").unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let err =
            Settings::from_yaml("socket_limits:\n  max_buffered_bytes: 65536\n", "t").unwrap_err();
        assert!(
            err.to_string().contains("socket_limits.max_buffered_bytes"),
            "{err}"
        );
        let err = Settings::from_yaml("socket_limits:\n  max_connections: 0\n", "t").unwrap_err();
        assert!(
            err.to_string().contains("socket_limits.max_connections"),
            "{err}"
        );
    }

    #[test]
    fn introspection_leaves_a_public_metrics_address_for_loopback() {
        let local = Settings::default();
        assert_eq!(local.introspection(), local.metrics_addr);
        let public = Settings::from_yaml("metrics_addr: 0.0.0.0:61678\n", "t").unwrap();
        assert_eq!(public.introspection().to_string(), "127.0.0.1:61679");
        let s = Settings::from_yaml(
            "metrics_addr: 0.0.0.0:61678\nintrospection_addr: 127.0.0.1:7000\nother_conflists: move-aside\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.introspection().to_string(), "127.0.0.1:7000");
        assert_eq!(s.other_conflists, OtherConflists::MoveAside);
    }
}
