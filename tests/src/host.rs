//! The machine's own container runtime and CNI paths, checked before and after
//! a suite: nothing of the host's containerd or CNI directories may change.
//!
//! Two of them containerd 1.6 and libcni write to whatever their configuration
//! says (`/run/containerd/s` for shim sockets, `/var/lib/cni` for libcni's
//! result cache): what appeared there during the suite is removed by
//! [`HostSnapshot::clean_scratch`] before the comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Paths that must come out of a suite exactly as they went in.
pub const FROZEN: &[&str] = &[
    "/etc/cni",
    "/opt/cni",
    "/etc/containerd",
    "/var/lib/containerd",
];
/// Paths a private containerd or libcni writes to regardless of configuration;
/// what appeared there is removed at the end.
pub const SCRATCH: &[&str] = &["/run/containerd", "/var/lib/cni"];
/// Where runtimes mount network namespaces by default (only `cni-*` entries count:
/// other suites' labs come and go there).
pub const NETNS_DIRS: &[&str] = &["/run/netns", "/var/run/netns"];

/// One file system entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory (its mtime changes when entries come and go: not compared).
    Dir,
    /// A file: size and mtime.
    File(u64, i64),
    /// A symlink and its target.
    Link(PathBuf),
    /// A socket, fifo or device.
    Other,
}

/// What the host paths held at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    entries: BTreeMap<PathBuf, Entry>,
}

impl HostSnapshot {
    /// Reads every path of [`FROZEN`], [`SCRATCH`] and the `cni-*` network namespaces.
    pub fn take() -> Self {
        let mut entries = BTreeMap::new();
        for root in FROZEN.iter().chain(SCRATCH) {
            walk(Path::new(root), &mut entries);
        }
        for dir in NETNS_DIRS {
            if let Ok(list) = std::fs::read_dir(dir) {
                for e in list.flatten() {
                    if e.file_name().to_string_lossy().starts_with("cni-") {
                        entries.insert(e.path(), Entry::Other);
                    }
                }
            }
        }
        Self { entries }
    }

    /// Removes what appeared under [`SCRATCH`] since `self` was taken (deepest
    /// first) and returns what it removed.
    pub fn clean_scratch(&self) -> Vec<PathBuf> {
        let now = Self::take();
        let mut new: Vec<&PathBuf> = now
            .entries
            .keys()
            .filter(|p| SCRATCH.iter().any(|s| p.starts_with(s)))
            .filter(|p| !self.entries.contains_key(*p))
            .collect();
        new.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let mut removed = Vec::new();
        for p in new {
            let gone = match now.entries[p] {
                Entry::Dir => std::fs::remove_dir(p).is_ok(),
                _ => std::fs::remove_file(p).is_ok(),
            };
            if gone {
                removed.push(p.clone());
            }
        }
        removed
    }

    /// The differences between `self` (before) and `after`, one line each.
    pub fn diff(&self, after: &Self) -> Vec<String> {
        let mut out = Vec::new();
        for (p, e) in &self.entries {
            match after.entries.get(p) {
                None => out.push(format!("removed: {}", p.display())),
                Some(a) if a != e => out.push(format!("changed: {} ({e:?} → {a:?})", p.display())),
                Some(_) => {}
            }
        }
        for p in after.entries.keys() {
            if !self.entries.contains_key(p) {
                out.push(format!("added: {}", p.display()));
            }
        }
        out
    }
}

fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let t = meta.file_type();
    let entry = if t.is_dir() {
        Entry::Dir
    } else if t.is_file() {
        Entry::File(meta.len(), meta.mtime())
    } else if t.is_symlink() {
        Entry::Link(std::fs::read_link(path).unwrap_or_default())
    } else {
        Entry::Other
    };
    out.insert(path.to_path_buf(), entry.clone());
    if entry == Entry::Dir
        && let Ok(list) = std::fs::read_dir(path)
    {
        for e in list.flatten() {
            walk(&e.path(), out);
        }
    }
}
