//! The CNI configuration and the plugin binaries on the node: the
//! readiness-gated conflist (its content is the core's
//! `hostnic_core::config::conflist`), the plugins' install, and the other
//! configurations that would shadow hostnic's.
//!
//! Both are written with [`write_atomic`], so a kubelet or container runtime
//! never reads a half-written file, and neither is deleted when the agent
//! stops: a node stays Ready across agent upgrades.
//!
//! The binaries come from the directory of the `hostnic` plugin the agent ships
//! with (`plugin_binary`, by default next to the agent): `hostnic` always
//! (replaced when it differs), and `portmap` when the image ships one and
//! `cni_bin_dir` has none (a node's own `portmap` is never replaced).
//! [`shadowing`] finds configurations sorting before hostnic's;
//! `other_conflists: move-aside` renames them aside.

use std::fs;
use std::path::{Path, PathBuf};

use hostnic_core::config::agent::{ChainPortmap, OtherConflists, Settings};
use hostnic_core::config::conflist::{self, CONFLIST_NAME, MOVED_ASIDE_SUFFIX, shadowing_text};

use crate::write_atomic;

/// Whether the conflist for `settings` chains `portmap` on this node, and why
/// (for the log).
pub fn chains_portmap(settings: &Settings) -> (bool, &'static str) {
    conflist::chains_portmap(
        settings.portmap,
        settings.cni_bin_dir.join("portmap").is_file(),
        shipped_portmap(settings).is_some(),
    )
}

/// The conflist the agent writes for `settings` on this node, as text.
pub fn render(settings: &Settings) -> Vec<u8> {
    conflist::render(settings, chains_portmap(settings).0)
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

/// The `portmap` shipped next to the plugin, when `cni_bin_dir` lacks one and the
/// settings may chain it.
fn shipped_portmap(settings: &Settings) -> Option<PathBuf> {
    if settings.portmap == ChainPortmap::Never || settings.cni_bin_dir.join("portmap").exists() {
        return None;
    }
    let dir = plugin_source(settings)?.parent()?.to_path_buf();
    Some(dir.join("portmap")).filter(|p| p.is_file())
}

/// What [`install_binaries`] put into `cni_bin_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// `hostnic` was installed (or already identical).
    pub hostnic: bool,
    /// `portmap` was installed from the image.
    pub portmap: bool,
}

/// Installs the plugin binaries into `cni_bin_dir`: `hostnic` from the plugin
/// source, and the shipped `portmap` when the node has none. Also what
/// `hostnic-agent --install-cni-only` does.
pub fn install_binaries(settings: &Settings) -> std::io::Result<Installed> {
    let mut installed = Installed::default();
    if let Some(source) = plugin_source(settings) {
        install_plugin(&source, &settings.cni_bin_dir, "hostnic")?;
        installed.hostnic = true;
    } else {
        tracing::info!("no hostnic plugin binary next to the agent; not installing it");
    }
    if let Some(portmap) = shipped_portmap(settings) {
        install_plugin(&portmap, &settings.cni_bin_dir, "portmap")?;
        tracing::info!(dir = %settings.cni_bin_dir.display(), "installed the shipped portmap");
        installed.portmap = true;
    }
    Ok(installed)
}

/// CNI configurations in `cni_conf_dir` that sort before hostnic's: the runtime
/// would use the first of them instead (libcni reads `.conf`, `.conflist` and
/// `.json` files in name order).
pub fn shadowing(settings: &Settings) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(&settings.cni_conf_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let is_conf = p
                .extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json");
            is_conf && name.is_some_and(|n| n.as_str() < CONFLIST_NAME) && p.is_file()
        })
        .collect();
    found.sort();
    found
}

/// Renames every configuration that shadows hostnic's to
/// `<name>.hostnic-moved-aside`; the renamed paths.
pub fn move_aside(settings: &Settings) -> std::io::Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for path in shadowing(settings) {
        let mut target = path.clone().into_os_string();
        target.push(MOVED_ASIDE_SUFFIX);
        let target = PathBuf::from(target);
        fs::rename(&path, &target)?;
        tracing::warn!(
            from = %path.display(),
            to = %target.display(),
            "moved aside a CNI configuration that sorted before hostnic's (other_conflists: move-aside); rename it back to roll back"
        );
        moved.push(target);
    }
    Ok(moved)
}

/// Installs the plugin binaries, then writes the conflist (in this order, so the
/// runtime never finds a config whose plugin is missing), then, with
/// `other_conflists: move-aside`, moves aside what would shadow it.
pub fn install(settings: &Settings) -> std::io::Result<()> {
    install_binaries(settings)?;
    fs::create_dir_all(&settings.cni_conf_dir)?;
    let (_, why) = chains_portmap(settings);
    tracing::info!(cni_version = %settings.cni_version, "conflist: {why}");
    write_atomic(
        &settings.cni_conf_dir.join(CONFLIST_NAME),
        &render(settings),
        0o644,
    )?;
    settle_shadowing(settings);
    Ok(())
}

/// Reports configurations that shadow hostnic's, and moves them aside when the
/// settings say so. The number still shadowing.
pub fn settle_shadowing(settings: &Settings) -> usize {
    if settings.other_conflists == OtherConflists::MoveAside
        && let Err(e) = move_aside(settings)
    {
        tracing::error!(error = %e, "cannot move aside a CNI configuration that shadows hostnic's");
    }
    let left = shadowing(settings);
    if !left.is_empty() {
        tracing::warn!("{}", shadowing_text(&left));
    }
    left.len()
}

fn install_plugin(source: &Path, bin_dir: &Path, name: &str) -> std::io::Result<()> {
    fs::create_dir_all(bin_dir)?;
    let bytes = fs::read(source)?;
    let target = bin_dir.join(name);
    if fs::read(&target).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(&target, &bytes, 0o755)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_original_hostnic_conflist_is_found_and_moved_aside_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        fs::create_dir_all(&conf).unwrap();
        fs::write(conf.join("10-ahostnic.conflist"), b"{}").unwrap();
        fs::write(conf.join("05-old.conf"), b"{}").unwrap();
        fs::write(conf.join("99-loopback.conf"), b"{}").unwrap();
        fs::write(conf.join("00-notes.txt"), b"").unwrap();
        let plugin = dir.path().join("hostnic");
        fs::write(&plugin, b"plugin").unwrap();
        let report = Settings {
            cni_conf_dir: conf.clone(),
            cni_bin_dir: dir.path().join("bin"),
            plugin_binary: Some(plugin),
            ..Settings::default()
        };
        let found = shadowing(&report);
        assert_eq!(
            found,
            vec![conf.join("05-old.conf"), conf.join("10-ahostnic.conflist")]
        );
        assert!(shadowing_text(&found).contains("10-ahostnic.conflist"));
        install(&report).unwrap();
        assert_eq!(shadowing(&report).len(), 2, "report touches nothing");
        let move_aside = Settings {
            other_conflists: OtherConflists::MoveAside,
            ..report
        };
        install(&move_aside).unwrap();
        assert!(shadowing(&move_aside).is_empty());
        assert!(
            conf.join("10-ahostnic.conflist.hostnic-moved-aside")
                .is_file()
        );
        assert!(
            conf.join("99-loopback.conf").is_file(),
            "sorts after: left alone"
        );
    }

    #[test]
    fn a_shipped_portmap_is_installed_unless_the_node_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        fs::create_dir_all(&image).unwrap();
        fs::write(image.join("hostnic"), b"plugin").unwrap();
        fs::write(image.join("portmap"), b"debian portmap").unwrap();
        let settings = Settings {
            cni_bin_dir: dir.path().join("bin"),
            plugin_binary: Some(image.join("hostnic")),
            ..Settings::default()
        };
        // Before the install, `auto` already knows it will chain the shipped one.
        assert!(chains_portmap(&settings).0);
        let installed = install_binaries(&settings).unwrap();
        assert_eq!(
            installed,
            Installed {
                hostnic: true,
                portmap: true
            }
        );
        assert_eq!(
            fs::read(dir.path().join("bin/portmap")).unwrap(),
            b"debian portmap"
        );
        // The node's own portmap is never replaced.
        fs::write(dir.path().join("bin/portmap"), b"node portmap").unwrap();
        assert!(!install_binaries(&settings).unwrap().portmap);
        assert_eq!(
            fs::read(dir.path().join("bin/portmap")).unwrap(),
            b"node portmap"
        );
        let never = Settings {
            portmap: ChainPortmap::Never,
            cni_bin_dir: dir.path().join("bin2"),
            ..settings
        };
        assert!(!install_binaries(&never).unwrap().portmap);
        assert!(!dir.path().join("bin2/portmap").exists());
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
