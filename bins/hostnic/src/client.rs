//! The synchronous agent client: one connection, one framed request, one
//! framed response, every step bounded by a timeout.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};

use hostnic_core::api::{
    FrameError, HEADER_LEN, Outcome, PROTOCOL_VERSION, Reply, Request, Response, decode_frame,
    encode_frame, frame_len,
};

/// How long connecting to the agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing the request may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the plugin waits beyond the deadline it gave the agent, so the
/// agent's own "try again later" answer arrives before the plugin gives up.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Why a call to the agent failed.
#[derive(Debug)]
pub enum CallError {
    /// Nothing accepted the connection (no socket, refused, connect timed out).
    Unreachable(io::Error),
    /// The agent accepted the request but did not answer in time, or closed the
    /// connection without answering.
    NoAnswer(io::Error),
    /// The agent answered something that is not a valid response to the request.
    Protocol(String),
    /// The agent answered with an error.
    Agent(hostnic_core::api::AgentError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "agent unreachable: {e}"),
            CallError::NoAnswer(e) => write!(f, "agent did not answer: {e}"),
            CallError::Protocol(m) => write!(f, "agent broke the protocol: {m}"),
            CallError::Agent(e) => write!(f, "agent error: {e}"),
        }
    }
}

/// Sends `request` to the agent at `socket` and waits up to `timeout` (plus
/// [`ANSWER_GRACE`]) for its answer, which must answer the same verb.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let frame = encode_frame(request).map_err(|e| CallError::Protocol(e.to_string()))?;
    let mut stream = connect(socket, CONNECT_TIMEOUT).map_err(CallError::Unreachable)?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .and_then(|()| stream.write_all(&frame))
        .map_err(CallError::NoAnswer)?;
    let deadline = Instant::now() + timeout + ANSWER_GRACE;
    let body = read_frame(&mut stream, deadline)?;
    let (response, _) = decode_frame::<Response>(&body).map_err(|e| match e {
        FrameError::Json(e) => CallError::Protocol(format!("undecodable response: {e}")),
        other => CallError::Protocol(other.to_string()),
    })?;
    if response.version != PROTOCOL_VERSION {
        return Err(CallError::Protocol(format!(
            "the agent speaks protocol version {}, the plugin {PROTOCOL_VERSION}",
            response.version
        )));
    }
    match response.outcome {
        Outcome::Error(e) => Err(CallError::Agent(e)),
        Outcome::Ok(reply) if reply.verb() == request.body.verb() => Ok(reply),
        Outcome::Ok(reply) => Err(CallError::Protocol(format!(
            "asked {} but the agent answered {}",
            request.body.verb(),
            reply.verb()
        ))),
    }
}

/// Connects to the agent within `timeout`.
///
/// `UnixStream::connect` has no timeout and blocks while the agent's accept
/// backlog is full (a wedged agent), so connect a non-blocking socket and
/// retry while the kernel says `EAGAIN`, then make the stream blocking again.
pub fn connect(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(socket)?;
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let deadline = Instant::now() + timeout;
    loop {
        match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connect timed out after {} ms (the agent is not accepting)",
                        timeout.as_millis()
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Reads one whole frame (header included) before `deadline`.
fn read_frame(stream: &mut UnixStream, deadline: Instant) -> Result<Vec<u8>, CallError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_by(stream, &mut header, deadline)?;
    let len = frame_len(header).map_err(|e| CallError::Protocol(e.to_string()))?;
    let mut frame = vec![0u8; HEADER_LEN + len];
    frame[..HEADER_LEN].copy_from_slice(&header);
    read_exact_by(stream, &mut frame[HEADER_LEN..], deadline)?;
    Ok(frame)
}

fn read_exact_by(
    stream: &mut UnixStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), CallError> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::NoAnswer(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer before the deadline",
            )));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(CallError::NoAnswer)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(CallError::NoAnswer(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the agent closed the connection without a complete answer",
                )));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(CallError::NoAnswer(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer before the deadline",
                )));
            }
            Err(e) => return Err(CallError::NoAnswer(e)),
        }
    }
    Ok(())
}
