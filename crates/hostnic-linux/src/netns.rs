//! Network namespaces: open one by path, run work inside it, create and delete
//! named ones.
//!
//! The rule this module enforces: `setns` is only ever called on a *fresh OS
//! thread* that this module spawns and that exits when the work is done, never on
//! a tokio worker (which would silently move every later task of that worker
//! into another namespace). A netlink socket belongs to the namespace of the
//! thread that created it, so [`NetNs::connect`] creates the socket on such a
//! thread and hands it back to be driven by the caller's runtime.
//!
//! Every system call used here has a safe wrapper in `nix`, so this module needs
//! no `unsafe` block.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A failure to open, enter, create or delete a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (it does not exist, or is stale).
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The error of `open(2)`.
        #[source]
        source: std::io::Error,
    },
    /// A system call (`setns`, `unshare`, `mount`, `umount2`) failed.
    #[error("{call} on network namespace {path} failed: {source}")]
    Sys {
        /// The call that failed.
        call: &'static str,
        /// The namespace concerned.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The helper thread could not be spawned or died before answering.
    #[error("namespace worker thread failed: {0}")]
    Thread(String),
    /// A netlink socket could not be created inside the namespace.
    #[error("cannot open a netlink socket in {path}: {source}")]
    Netlink {
        /// The namespace concerned.
        path: PathBuf,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The namespace name is not a single path component.
    #[error("invalid namespace name {0:?}")]
    InvalidName(String),
}

impl NetnsError {
    /// True when the namespace itself does not exist (a stale `CNI_NETNS`).
    pub fn is_not_found(&self) -> bool {
        match self {
            NetnsError::Open { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// An open network namespace. Cheap to clone (the file is shared).
#[derive(Debug, Clone)]
pub struct NetNs {
    file: Arc<File>,
    path: PathBuf,
}

/// A netlink connection whose socket lives in some namespace, driven by the
/// caller's runtime. Dropping it stops the connection task.
#[derive(Debug)]
pub struct NetlinkConn {
    /// The request handle.
    pub handle: rtnetlink::Handle,
    /// The kernel serves one dump at a time per socket (EBUSY otherwise).
    pub(crate) dump_lock: tokio::sync::Mutex<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NetlinkConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NetNs {
    /// Opens the namespace at `path` (`/run/netns/NAME` or `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            file: Arc::new(file),
            path,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw descriptor, for `IFLA_NET_NS_FD` attributes. Valid while `self` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// A borrowed descriptor of the namespace file.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `work` on a fresh OS thread that has entered this namespace, and waits
    /// for it (blocking the caller). The thread exits afterwards, so no other code
    /// ever runs in the switched namespace by accident.
    pub fn run_blocking<T, F>(&self, work: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|scope| {
            let joined = std::thread::Builder::new()
                .name("hostnic-netns".into())
                .spawn_scoped(scope, || {
                    self.enter_this_thread()?;
                    Ok(work())
                })
                .map_err(|e| NetnsError::Thread(e.to_string()))?
                .join();
            joined.map_err(|_| NetnsError::Thread("worker panicked".into()))?
        })
    }

    /// Like [`NetNs::run_blocking`], without blocking the async caller.
    pub async fn run<T, F>(&self, work: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("hostnic-netns".into())
            .spawn(move || {
                let result = ns.enter_this_thread().map(|()| work());
                let _ = tx.send(result);
            })
            .map_err(|e| NetnsError::Thread(e.to_string()))?;
        rx.await
            .map_err(|_| NetnsError::Thread("worker panicked".into()))?
    }

    /// Opens an rtnetlink connection inside this namespace and drives it on the
    /// current tokio runtime. Must be called from within a runtime.
    pub async fn connect(&self) -> Result<NetlinkConn, NetnsError> {
        let runtime = tokio::runtime::Handle::current();
        let path = self.path.clone();
        let opened = self
            .run(move || {
                // The socket is created here, in the namespace; registering it with
                // the runtime's reactor works from any thread.
                let _guard = runtime.enter();
                rtnetlink::new_connection()
            })
            .await?;
        let (conn, handle, _) = opened.map_err(|source| NetnsError::Netlink { path, source })?;
        let task = tokio::spawn(conn);
        Ok(NetlinkConn {
            handle,
            dump_lock: tokio::sync::Mutex::new(()),
            task,
        })
    }

    /// Opens a multicast rtnetlink connection (like `ip monitor`) inside this namespace.
    pub(crate) async fn connect_multicast(
        &self,
        groups: &'static [rtnetlink::MulticastGroup],
    ) -> Result<MulticastConn, NetnsError> {
        let runtime = tokio::runtime::Handle::current();
        let path = self.path.clone();
        let opened = self
            .run(move || {
                let _guard = runtime.enter();
                rtnetlink::new_multicast_connection(groups)
            })
            .await?;
        let (conn, handle, messages) =
            opened.map_err(|source| NetnsError::Netlink { path, source })?;
        let task = tokio::spawn(conn);
        Ok(MulticastConn {
            conn: NetlinkConn {
                handle,
                dump_lock: tokio::sync::Mutex::new(()),
                task,
            },
            messages,
        })
    }

    fn enter_this_thread(&self) -> Result<(), NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Sys {
            call: "setns",
            path: self.path.clone(),
            source,
        })
    }

    /// Creates a new, empty namespace bound at `/run/netns/NAME`, as `ip netns add`
    /// does, without forking: a fresh thread `unshare`s its network namespace and
    /// bind-mounts it, then exits. The namespace lives until [`NetNs::delete_named`].
    pub fn create_named(name: &str) -> Result<Self, NetnsError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(NetnsError::InvalidName(name.to_string()));
        }
        let target = Path::new(NETNS_RUN_DIR).join(name);
        let sys = |call| {
            let path = target.clone();
            move |source| NetnsError::Sys { call, path, source }
        };
        std::fs::create_dir_all(NETNS_RUN_DIR).map_err(|source| NetnsError::Open {
            path: NETNS_RUN_DIR.into(),
            source,
        })?;
        make_run_dir_shared()?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|source| NetnsError::Open {
                path: target.clone(),
                source,
            })?;
        let bound = std::thread::scope(|scope| {
            let joined = std::thread::Builder::new()
                .name("hostnic-netns-add".into())
                .spawn_scoped(scope, || {
                    unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare"))?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(sys("mount"))
                })
                .map_err(|e| NetnsError::Thread(e.to_string()))?
                .join();
            joined.map_err(|_| NetnsError::Thread("worker panicked".into()))?
        });
        if let Err(e) = bound {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        Self::open(&target)
    }

    /// Deletes a namespace created by [`NetNs::create_named`] (or `ip netns add`):
    /// unmounts `/run/netns/NAME` and removes the file. The kernel frees the
    /// namespace once nothing else holds it. Succeeds if it is already gone.
    pub fn delete_named(name: &str) -> Result<(), NetnsError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(NetnsError::InvalidName(name.to_string()));
        }
        let target = Path::new(NETNS_RUN_DIR).join(name);
        if !target.exists() {
            return Ok(());
        }
        match umount2(&target, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (half-created); remove the file anyway.
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(NetnsError::Sys {
                    call: "umount2",
                    path: target,
                    source,
                });
            }
        }
        match std::fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetnsError::Open {
                path: target,
                source,
            }),
        }
    }
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does before its
/// first bind. Without it, the first `ip netns add` of the boot bind-mounts the
/// directory onto itself and hides every namespace bound in it before: they can
/// then be neither opened nor deleted through their path.
fn make_run_dir_shared() -> Result<(), NetnsError> {
    let dir = Path::new(NETNS_RUN_DIR);
    let shared = || {
        mount(
            Some(""),
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    let sys = |call| {
        move |source| NetnsError::Sys {
            call,
            path: dir.to_path_buf(),
            source,
        }
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: make it one, then shared.
        Err(nix::Error::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("mount"))?;
            shared().map_err(sys("mount"))
        }
        Err(source) => Err(sys("mount")(source)),
    }
}

/// A multicast netlink connection and its message stream.
pub(crate) struct MulticastConn {
    /// Keeps the connection task alive.
    pub(crate) conn: NetlinkConn,
    /// The notifications the kernel sends.
    pub(crate) messages: futures::channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_the_run_dir_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../etc"] {
            assert!(matches!(
                NetNs::create_named(bad),
                Err(NetnsError::InvalidName(_))
            ));
            assert!(matches!(
                NetNs::delete_named(bad),
                Err(NetnsError::InvalidName(_))
            ));
        }
    }

    /// On a fresh boot `/run/netns` is a plain directory. Reproduced in a private
    /// mount namespace with an empty `/run`: a namespace bound by us must survive
    /// a later `ip netns add`, which self-binds `/run/netns` unless it is a mount
    /// point already.
    #[test]
    #[ignore = "needs root: mount and network namespaces"]
    fn a_namespace_survives_a_later_ip_netns_add_on_a_fresh_boot() {
        use nix::sched::{CloneFlags, unshare};
        let ours = format!("hn-fresh-{}", std::process::id());
        let theirs = format!("hn-fresh-ip-{}", std::process::id());
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // This thread gets its own mount namespace; the machine's stays as it is.
                    unshare(CloneFlags::CLONE_NEWNS).unwrap();
                    mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )
                    .unwrap();
                    mount(
                        Some("tmpfs"),
                        "/run",
                        Some("tmpfs"),
                        MsFlags::empty(),
                        None::<&str>,
                    )
                    .unwrap();
                    assert!(!Path::new(NETNS_RUN_DIR).exists(), "not a fresh /run");
                    let ns = NetNs::create_named(&ours).unwrap();
                    drop(ns);
                    let ip = |args: &[&str]| {
                        let out = std::process::Command::new("ip")
                            .args(args)
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "ip {args:?}: {out:?}");
                    };
                    ip(&["netns", "add", &theirs]);
                    // Ours is still a namespace that can be entered and deleted by path.
                    let path = Path::new(NETNS_RUN_DIR).join(&ours);
                    let ns = NetNs::open(&path).expect("our namespace hidden by `ip netns add`");
                    ns.run_blocking(|| ())
                        .expect("our namespace cannot be entered");
                    drop(ns);
                    ip(&["netns", "del", &theirs]);
                    NetNs::delete_named(&ours).unwrap();
                    assert!(!path.exists());
                })
                .join()
                .unwrap();
        });
    }

    #[test]
    fn a_missing_namespace_is_reported_as_not_found() {
        let err = NetNs::open("/run/netns/hostnic-does-not-exist-4711").unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}
