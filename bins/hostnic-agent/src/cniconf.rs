//! The readiness-gated CNI configuration and the plugin binary install.
//!
//! Both are written with a temporary file and a rename, so a kubelet or
//! container runtime never reads a half-written file, and neither is deleted
//! when the agent stops: a node stays Ready across agent upgrades.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::settings::{ChainPortmap, Settings};
use crate::store::write_atomic;

/// The conflist's file name in the CNI configuration directory.
pub const CONFLIST_NAME: &str = "10-hostnic.conflist";

/// Whether the conflist for `settings` chains `portmap`, and why (for the log).
pub fn chains_portmap(settings: &Settings) -> (bool, &'static str) {
    match settings.portmap {
        ChainPortmap::Always => (true, "portmap: always"),
        ChainPortmap::Never => (false, "portmap: never"),
        ChainPortmap::Auto if settings.cni_bin_dir.join("portmap").is_file() => {
            (true, "portmap: auto, found in cni_bin_dir")
        }
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

/// The conflist the agent writes for `settings` on this node, as text.
pub fn render(settings: &Settings) -> Vec<u8> {
    let (portmap, _) = chains_portmap(settings);
    let mut text = serde_json::to_vec_pretty(&conflist(settings, portmap)).unwrap_or_default();
    text.push(b'\n');
    text
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
    let (_, why) = chains_portmap(settings);
    tracing::info!(cni_version = %settings.cni_version, "conflist: {why}");
    write_atomic(
        &settings.cni_conf_dir.join(CONFLIST_NAME),
        &render(settings),
        0o644,
    )
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
        let v = conflist(&settings, false);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["type"], "hostnic");
        assert_eq!(v["plugins"][0]["agentSocket"], "/run/x.sock");
        assert_eq!(v["plugins"][0]["stateDir"], "/var/lib/hostnic");
    }

    #[test]
    fn the_default_conflist_is_1_0_0_and_chains_portmap_only_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            cni_bin_dir: dir.path().to_path_buf(),
            ..Settings::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&render(&settings)).unwrap();
        // containerd 1.6/1.7 and podman 4 refuse 1.1.0: every pod would fail.
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"].as_array().unwrap().len(), 1, "{v}");
        fs::write(dir.path().join("portmap"), b"").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&render(&settings)).unwrap();
        assert_eq!(v["plugins"][1]["type"], "portmap");
        let never = Settings {
            portmap: ChainPortmap::Never,
            ..settings.clone()
        };
        let v: serde_json::Value = serde_json::from_slice(&render(&never)).unwrap();
        assert_eq!(v["plugins"].as_array().unwrap().len(), 1, "{v}");
        let always = Settings {
            portmap: ChainPortmap::Always,
            cni_bin_dir: dir.path().join("empty"),
            ..settings
        };
        let v: serde_json::Value = serde_json::from_slice(&render(&always)).unwrap();
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }

    /// The agent.yaml of the shipped ConfigMap (deploy/hostnic.yaml).
    fn shipped_settings() -> Settings {
        let text = include_str!("../../../deploy/hostnic.yaml");
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "ConfigMap" && v["metadata"]["name"] == "hostnic-config" {
                let yaml = v["data"]["agent.yaml"].as_str().unwrap();
                return Settings::from_yaml(yaml, "deploy/hostnic.yaml").unwrap();
            }
        }
        panic!("deploy/hostnic.yaml has no hostnic-config ConfigMap");
    }

    #[test]
    fn the_shipped_config_map_writes_a_conflist_todays_runtimes_accept() {
        let v: serde_json::Value = serde_json::from_slice(&render(&shipped_settings())).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0", "{v}");
        assert_eq!(v["plugins"][0]["type"], "hostnic");
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
