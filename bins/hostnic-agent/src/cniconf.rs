//! The readiness-gated CNI configuration and the plugin binary install.
//!
//! Both are written with a temporary file and a rename, so a kubelet or
//! container runtime never reads a half-written file, and neither is deleted
//! when the agent stops: a node stays Ready across agent upgrades.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::settings::Settings;
use crate::store::write_atomic;

/// The conflist's file name in the CNI configuration directory.
pub const CONFLIST_NAME: &str = "10-hostnic.conflist";

/// The conflist for `settings`.
pub(crate) fn conflist(settings: &Settings) -> serde_json::Value {
    json!({
        "cniVersion": settings.cni_version,
        "name": settings.network_name,
        "plugins": [
            {
                "type": "hostnic",
                "agentSocket": settings.socket,
                "stateDir": settings.state_dir,
                "vethPrefix": settings.pool.veth_prefix,
                "mtu": settings.mtu,
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

/// Where the plugin binary is taken from.
fn plugin_source(settings: &Settings) -> Option<PathBuf> {
    match &settings.plugin_binary {
        Some(p) => Some(p.clone()),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("hostnic")))
            .filter(|p| p.is_file()),
    }
}

/// Installs the plugin binary, then writes the conflist (in this order, so the
/// runtime never finds a config whose plugin is missing).
pub(crate) fn install(settings: &Settings) -> std::io::Result<()> {
    if let Some(source) = plugin_source(settings) {
        install_plugin(&source, &settings.cni_bin_dir)?;
    } else {
        tracing::info!("no hostnic plugin binary next to the agent; not installing it");
    }
    fs::create_dir_all(&settings.cni_conf_dir)?;
    let mut text = serde_json::to_vec_pretty(&conflist(settings)).unwrap_or_default();
    text.push(b'\n');
    write_atomic(&settings.cni_conf_dir.join(CONFLIST_NAME), &text, 0o644)
}

fn install_plugin(source: &Path, bin_dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(bin_dir)?;
    let bytes = fs::read(source)?;
    let target = bin_dir.join("hostnic");
    if fs::read(&target).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(&target, &bytes, 0o755)
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
        let v = conflist(&settings);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["type"], "hostnic");
        assert_eq!(v["plugins"][0]["agentSocket"], "/run/x.sock");
        assert_eq!(v["plugins"][0]["stateDir"], "/var/lib/hostnic");
    }

    #[test]
    fn install_writes_the_plugin_and_the_conflist_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("src-hostnic");
        fs::write(&plugin, b"#!/bin/sh\n").unwrap();
        let settings = Settings {
            cni_conf_dir: dir.path().join("net.d"),
            cni_bin_dir: dir.path().join("bin"),
            plugin_binary: Some(plugin),
            ..Settings::default()
        };
        install(&settings).unwrap();
        install(&settings).unwrap();
        assert_eq!(
            fs::read(dir.path().join("bin/hostnic")).unwrap(),
            b"#!/bin/sh\n"
        );
        let text = fs::read_to_string(dir.path().join("net.d").join(CONFLIST_NAME)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"], "hostnic");
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("net.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
