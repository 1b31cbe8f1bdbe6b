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

/// Opens a TCP connection from inside `ns` to `to` (the socket belongs to the
/// namespace of the thread that creates it); the one way the lab and the tests
/// probe a path with TCP.
pub fn connect_from(ns: &NetNs, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    ns.run_blocking(move || TcpStream::connect_timeout(&to, timeout))
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// True when a TCP connection from inside `ns` to `to` completes within `timeout`
/// (a denied SYN is dropped, so `timeout` bounds the wait).
pub fn connects(ns: &NetNs, to: SocketAddr, timeout: Duration) -> bool {
    connect_from(ns, to, timeout).is_ok()
}

/// A TCP listener bound to `addr` inside `ns`.
pub fn listen_in(ns: &NetNs, addr: SocketAddr) -> std::io::Result<TcpListener> {
    ns.run_blocking(move || TcpListener::bind(addr))
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// Echoes what a connection sends until it closes.
pub fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Serves TCP echo on `listener` (bound in whatever namespace) from background
/// threads, for as long as the process lives.
pub fn serve_echo(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || echo(stream));
        }
    });
}

/// True when `stream` echoes `ping` back within `timeout`.
pub fn round_trip(stream: &mut TcpStream, timeout: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// True when a TCP connection from inside `ns` to an echo server at `to` opens
/// within `timeout` and echoes within `read_timeout`.
pub fn echoes(ns: &NetNs, to: SocketAddr, timeout: Duration, read_timeout: Duration) -> bool {
    match connect_from(ns, to, timeout) {
        Ok(mut stream) => round_trip(&mut stream, read_timeout),
        Err(_) => false,
    }
}
