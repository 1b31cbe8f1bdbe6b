//! The CNI configuration the agent writes once it can serve an ADD
//! (`10-hostnic.conflist`): its content, whether it chains `portmap`, and the
//! words for other configurations that would shadow it. Writing it, installing
//! the plugins and looking at `cni_conf_dir` is the store adapter's
//! (`hostnic_store::cni`).
//!
//! Runtimes (containerd's CRI, CRI-O) use the *first* configuration of
//! `cni_conf_dir` by file name; another one sorting before `10-hostnic.conflist`
//! (the original hostnic-cni's `10-ahostnic.conflist`) means hostnic is not used.

use std::path::PathBuf;

use serde_json::json;

use crate::config::agent::{ChainPortmap, Settings};

/// The conflist's file name in the CNI configuration directory.
pub const CONFLIST_NAME: &str = "10-hostnic.conflist";

/// The suffix `other_conflists: move-aside` gives the configurations it renames.
pub const MOVED_ASIDE_SUFFIX: &str = ".hostnic-moved-aside";

/// Whether a conflist chains `portmap` with `choice`, given whether `cni_bin_dir`
/// has one (`in_bin_dir`) and whether one ships next to the plugin to be
/// installed there (`shipped`), and why (for the log).
pub fn chains_portmap(
    choice: ChainPortmap,
    in_bin_dir: bool,
    shipped: bool,
) -> (bool, &'static str) {
    match choice {
        ChainPortmap::Always => (true, "portmap: always"),
        ChainPortmap::Never => (false, "portmap: never"),
        ChainPortmap::Auto if in_bin_dir => (true, "portmap: auto, found in cni_bin_dir"),
        ChainPortmap::Auto if shipped => (
            true,
            "portmap: auto, shipped next to the plugin and installed into cni_bin_dir",
        ),
        ChainPortmap::Auto => (
            false,
            "portmap: auto, not in cni_bin_dir (hostPort unsupported; a chained plugin \
             that is missing would fail every ADD)",
        ),
    }
}

/// The conflist for `settings`, chaining `portmap` when `with_portmap`.
pub fn conflist(settings: &Settings, with_portmap: bool) -> serde_json::Value {
    let mut plugins = vec![json!({
        "type": "hostnic",
        "agentSocket": settings.socket,
        "stateDir": settings.state_dir,
        "vethPrefix": settings.pool.veth_prefix,
        "mtu": settings.mtu,
    })];
    if with_portmap {
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    json!({
        "cniVersion": settings.cni_version,
        "name": settings.network_name,
        "plugins": plugins,
    })
}

/// The conflist for `settings` as the file's text (pretty JSON, a final newline).
pub fn render(settings: &Settings, with_portmap: bool) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(&conflist(settings, with_portmap)).unwrap_or_default();
    text.push(b'\n');
    text
}

/// `/readyz`'s words for configurations that shadow hostnic's.
pub fn shadowing_text(shadowing: &[PathBuf]) -> String {
    let names: Vec<String> = shadowing.iter().map(|p| p.display().to_string()).collect();
    format!(
        "another CNI configuration sorts before {CONFLIST_NAME}, so the runtime uses it and \
         not hostnic: {}; remove it (docs/migrate-from-hostnic-cni.md) or set \
         other_conflists: move-aside",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_points_the_plugin_at_the_agent() {
        let settings = Settings {
            socket: "/run/x.sock".into(),
            cni_version: "1.0.0".into(),
            ..Settings::default()
        };
        let v = conflist(&settings, false);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["type"], "hostnic");
        assert_eq!(v["plugins"][0]["agentSocket"], "/run/x.sock");
        assert_eq!(v["plugins"][0]["stateDir"], "/var/lib/hostnic");
    }
}
