//! Real-packet probes inside lab namespaces: ICMP echo (`ping`) and a TCP
//! connect to a [`PeerServer`], which answers with the address it saw the
//! connection come from (so a test can tell SNAT from no SNAT).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cmd::{LabError, run};
use crate::netns::NetNs;

/// Sends an ICMP echo request from namespace `netns` (a name under `/run/netns`)
/// to `dst`; true when it is answered within `timeout_s` seconds. Uses `ping`
/// (iputils), or busybox's when iputils is not installed.
pub async fn ping(netns: &str, dst: Ipv4Addr, timeout_s: u32) -> bool {
    let dst = dst.to_string();
    let wait = timeout_s.max(1).to_string();
    let mut args = vec!["netns", "exec", netns];
    if !in_path("ping") && in_path("busybox") {
        args.push("busybox");
    }
    args.extend(["ping", "-q", "-c", "1", "-W", &wait, &dst]);
    run("ip", &args).await.is_ok()
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A TCP server listening inside a namespace on `0.0.0.0:port`; every
/// connection is answered with the peer's IPv4 address as text, then closed.
/// Stops when dropped.
#[derive(Debug)]
pub struct PeerServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerServer {
    /// Binds in the namespace at `netns` and serves on a background thread.
    pub fn start(netns: &Path, port: u16) -> Result<Self, LabError> {
        let ns = NetNs::open(netns)?;
        // The socket belongs to the namespace of the thread that creates it.
        let listener = ns
            .run_blocking(|| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))?
            .map_err(|source| LabError::Io {
                what: format!("listen on port {port} in {}", netns.display()),
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| LabError::Io {
                what: "set_nonblocking".into(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hostnic-lab-peer".into())
            .spawn(move || serve(listener, &flag))
            .map_err(|source| LabError::Io {
                what: "spawn the peer server".into(),
                source,
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.write_all(peer.ip().to_string().as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from the namespace at `netns` to a [`PeerServer`] at `dst:port` and
/// returns the source address the server saw.
pub fn tcp_peer(
    netns: &Path,
    dst: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<Ipv4Addr, LabError> {
    let ns = NetNs::open(netns)?;
    let what = || format!("TCP {dst}:{port} from {}", netns.display());
    let text = ns
        .run_blocking(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })?
        .map_err(|source| LabError::Io {
            what: what(),
            source,
        })?;
    text.trim()
        .parse()
        .map_err(|_| LabError::Invalid(format!("{}: peer server answered {text:?}", what())))
}
