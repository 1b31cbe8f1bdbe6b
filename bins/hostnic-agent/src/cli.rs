//! The agent's command line. Every flag can also be given as an `HOSTNIC_*`
//! environment variable; the path flags override the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::pods::PodSourceKind;
use crate::settings::{LogFormat, Settings, SettingsError};

/// Which cloud the agent talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudKind {
    /// The QingCloud API (endpoint from the credentials file). Labs and tests
    /// point it at a simulator of their own.
    Qingcloud,
}

/// Which datapath the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostKind {
    /// rtnetlink + nftables.
    Linux,
}

/// `--version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HOSTNIC_COMMIT"),
    ")"
);

/// What `--help` says after the flags: the endpoints, and the way from the
/// original hostnic-cni.
const AFTER_HELP: &str = "\
Endpoints: metrics_addr (default 127.0.0.1:61678) serves /metrics, /healthz and /readyz;
/v1/* (what hostnicctl reads) is served on loopback only (introspection_addr; with a
non-loopback metrics_addr, 127.0.0.1:61679).

Coming from the original hostnic-cni: its /etc/cni/net.d/10-ahostnic.conflist sorts
before 10-hostnic.conflist, so the runtime would keep calling the old plugin. The
agent reports such a file (log, /readyz, hostnic_cni_config_shadowed) and, with
`other_conflists: move-aside`, renames it to *.hostnic-moved-aside once it can serve.
Both projects name their NICs hostnic_<instance-id> and this agent adopts every NIC of
that name it finds on its instance: drain each node and delete the old NICs
(`hostnicctl cleanup`) before the agent starts there.
See docs/migrate-from-hostnic-cni.md and docs/upgrade.md.";

/// The hostnic node agent: owns the node's NICs and serves the hostnic CNI plugin.
#[derive(Debug, Parser)]
#[command(name = "hostnic-agent", version = VERSION, about, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// The agent's YAML configuration (see deploy/agent.example.yaml); defaults apply without it.
    #[arg(long, env = "HOSTNIC_CONFIG")]
    pub config: Option<PathBuf>,
    /// The `qcsecret` config.yaml (credentials, zone, endpoint).
    #[arg(
        long,
        env = "HOSTNIC_CREDENTIALS",
        default_value = "/etc/qingcloud/config.yaml"
    )]
    pub credentials: PathBuf,
    /// Overrides `mode` of the config file: `direct` (the agent calls the cloud
    /// with the credentials) or `controller` (the hostnic controller does; no
    /// credentials file is read; needs --node-name and the API server).
    #[arg(long, env = "HOSTNIC_MODE", value_parser = mode())]
    pub mode: Option<crate::settings::AgentMode>,
    /// The instance id; default: the content of /etc/qingcloud/instance-id.
    #[arg(long, env = "HOSTNIC_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The cloud to talk to.
    #[arg(long, env = "HOSTNIC_CLOUD", value_enum, default_value = "qingcloud")]
    pub cloud: CloudKind,
    /// Where the pods of this node come from: `none`, `kube` or `static:FILE`.
    #[arg(long, env = "HOSTNIC_PODS", default_value = "none")]
    pub pods: PodSourceKind,
    /// With `--pods kube`: the kubeconfig; default: in-cluster service account
    /// (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "HOSTNIC_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With `--pods kube`: this node's name (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "HOSTNIC_NODE_NAME")]
    pub node_name: Option<String>,
    /// With `--pods kube`: enforce Kubernetes NetworkPolicy on this node's pods
    /// (cluster-wide watches of policies, namespaces and pods; `false` turns it off).
    #[arg(
        long,
        env = "HOSTNIC_NETWORK_POLICY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub network_policy: bool,
    /// The datapath.
    #[arg(long, env = "HOSTNIC_HOST", value_enum, default_value = "linux")]
    pub host: HostKind,
    /// Overrides `socket` of the config file.
    #[arg(long, env = "HOSTNIC_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Overrides `state_dir` of the config file.
    #[arg(long, env = "HOSTNIC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Overrides `metrics_addr` of the config file.
    #[arg(long, env = "HOSTNIC_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Overrides `cni_conf_dir` of the config file.
    #[arg(long, env = "HOSTNIC_CNI_CONF_DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Overrides `cni_bin_dir` of the config file.
    #[arg(long, env = "HOSTNIC_CNI_BIN_DIR")]
    pub cni_bin_dir: Option<PathBuf>,
    /// Overrides `plugin_binary` of the config file.
    #[arg(long, env = "HOSTNIC_PLUGIN_BINARY")]
    pub plugin_binary: Option<PathBuf>,
    /// Overrides `host_netns` of the config file (a namespace path holding the node's NICs).
    #[arg(long, env = "HOSTNIC_HOST_NETNS")]
    pub host_netns: Option<PathBuf>,
    /// Overrides `log_format` of the config file.
    #[arg(long, env = "HOSTNIC_LOG_FORMAT", value_parser = log_format())]
    pub log_format: Option<LogFormat>,
    /// Prints the CNI conflist this agent would write on this node (from the
    /// configuration and what is in `cni_bin_dir`), then exits without starting.
    #[arg(long)]
    pub print_conflist: bool,
    /// Installs the CNI plugins shipped with the agent (`hostnic`, and `portmap`
    /// unless `cni_bin_dir` has one) into `cni_bin_dir`, then exits without
    /// starting (an init container, or a check of the image).
    #[arg(long)]
    pub install_cni_only: bool,
}

impl Cli {
    /// The configuration file (or the defaults) with the flags' overrides, validated.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let mut s = match &self.config {
            Some(path) => crate::settings::load(path)?,
            None => Settings::default(),
        };
        let set = |slot: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *slot = v.clone();
            }
        };
        set(&mut s.socket, &self.socket);
        set(&mut s.state_dir, &self.state_dir);
        set(&mut s.cni_conf_dir, &self.cni_conf_dir);
        set(&mut s.cni_bin_dir, &self.cni_bin_dir);
        if let Some(a) = self.metrics_addr {
            s.metrics_addr = a;
        }
        if self.plugin_binary.is_some() {
            s.plugin_binary = self.plugin_binary.clone();
        }
        if self.host_netns.is_some() {
            s.host_netns = self.host_netns.clone();
        }
        if let Some(f) = self.log_format {
            s.log_format = f;
        }
        if let Some(m) = self.mode {
            s.mode = m;
        }
        s.validate()?;
        Ok(s)
    }
}

/// `direct` or `controller`, listed in `--help`.
fn mode() -> impl clap::builder::TypedValueParser<Value = crate::settings::AgentMode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["direct", "controller"]).map(|s| {
        s.parse::<crate::settings::AgentMode>()
            .expect("a possible value")
    })
}

/// `text` or `json`, listed in `--help`.
fn log_format() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["text", "json"])
        .map(|s| s.parse::<LogFormat>().expect("a possible value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_commit() {
        let err = Cli::try_parse_from(["hostnic-agent", "--version"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("hostnic-agent 0.") && text.contains("(commit "),
            "{text}"
        );
    }

    #[test]
    fn the_simulator_is_no_cloud_of_the_production_binary() {
        assert!(Cli::try_parse_from(["hostnic-agent", "--cloud", "sim"]).is_err());
        let cli = Cli::try_parse_from(["hostnic-agent", "--cloud", "qingcloud"]).unwrap();
        assert_eq!(cli.cloud, CloudKind::Qingcloud);
    }
}
