//! What the plugin says to a person: `hostnic --version`, and, run with no CNI
//! variable at all, an "about" text on stderr as the reference plugins print
//! (`CNI <name> plugin <version>` and the protocol versions), plus where it is
//! configured. Runtimes always set `CNI_COMMAND` and never see either.

use crate::version::SUPPORTED_VERSIONS;

/// The plugin's version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HOSTNIC_COMMIT"),
    ")"
);

/// `hostnic --version` (stdout).
pub fn version_text() -> String {
    format!(
        "hostnic {VERSION}\nCNI protocol versions supported: {}\n",
        SUPPORTED_VERSIONS.join(", ")
    )
}

/// The "about" text (stderr), for `hostnic` run with no `CNI_*` variable.
pub fn about_text() -> String {
    format!(
        "CNI hostnic plugin v{VERSION}\n\
         CNI protocol versions supported: {}\n\
         \n\
         hostnic gives each pod its own QingCloud NIC. This binary is the CNI plugin: a\n\
         container runtime runs it with CNI_COMMAND and the network configuration on\n\
         stdin. It asks the hostnic agent (DaemonSet hostnic-node) over its Unix socket\n\
         (agentSocket, default /run/hostnic/hostnic.sock); the agent installs it and\n\
         writes /etc/cni/net.d/10-hostnic.conflist.\n",
        SUPPORTED_VERSIONS.join(", ")
    )
}
