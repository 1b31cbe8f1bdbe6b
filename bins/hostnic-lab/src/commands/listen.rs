//! `hostnic-lab listen --netns PATH --ports 80,81` (hidden): the pod's tiny TCP
//! server. The whole process enters the pod's network namespace (so `down`
//! finds and ends it with the namespace), listens on `0.0.0.0:PORT` for every
//! port, prints [`READY`], and answers each connection with the address it came
//! from, then closes it. It runs until killed (`pod del`).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hostnic_linux::NetNs;
use nix::sched::{CloneFlags, setns};

/// The line printed once every port listens.
pub const READY: &str = "listening";

/// Options of `listen`.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// The pod's network namespace.
    #[arg(long)]
    pub netns: PathBuf,
    /// The TCP ports.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ports: Vec<u16>,
}

/// Runs the listener; called before any other thread exists, so the process
/// (not one thread) is in the namespace.
pub fn exec(args: &ListenArgs) -> anyhow::Result<bool> {
    let ns = NetNs::open(&args.netns)?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("enter {}", args.netns.display()))?;
    let mut listeners = Vec::new();
    for port in &args.ports {
        listeners.push(
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], *port)))
                .with_context(|| format!("listen on port {port}"))?,
        );
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}")?;
        out.flush()?;
    }
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if let Ok(mut stream) = stream
                        && let Ok(peer) = stream.peer_addr()
                    {
                        let _ = stream.write_all(peer.ip().to_string().as_bytes());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(true)
}
