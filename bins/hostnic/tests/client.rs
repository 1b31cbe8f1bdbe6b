//! The agent client against fake agents: timeouts, wedged agents and protocol
//! violations, called in-process.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::{Behaviour, FakeAgent};
use hostnic_cni::client::{CallError, call, connect};
use hostnic_core::api::{Request, RequestBody, StatusRequest};
use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
use serde_json::json;

fn status_request() -> Request {
    Request::new(RequestBody::Status(StatusRequest {
        network: "n".into(),
        cni_version: "1.1.0".into(),
        timeout_ms: 50,
    }))
}

/// Fills the accept backlog of a listener that never accepts: what a wedged
/// agent looks like to a client. Returns the queued sockets, which must live.
fn fill_backlog(path: &std::path::Path) -> Vec<OwnedFd> {
    let addr = UnixAddr::new(path).unwrap();
    let mut queued = Vec::new();
    for _ in 0..100_000 {
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => queued.push(fd),
            Err(Errno::EAGAIN) => return queued,
            Err(e) => panic!("unexpected connect error {e}"),
        }
    }
    panic!("the backlog never filled");
}

#[test]
fn connect_gives_up_on_an_agent_that_does_not_accept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wedged.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let _queued = fill_backlog(&path);
    let started = Instant::now();
    let err = connect(&path, Duration::from_millis(100)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    match call(&path, &status_request(), Duration::from_millis(50)) {
        Err(CallError::Unreachable(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn a_missing_socket_is_unreachable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = connect(&dir.path().join("none.sock"), Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn a_silent_agent_times_out_after_deadline_plus_grace() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(&dir.path().join("a.sock"), Behaviour::Hang);
    let started = Instant::now();
    let err = call(&agent.socket, &status_request(), Duration::from_millis(50)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, CallError::NoAnswer(_)), "{err:?}");
    let floor = Duration::from_millis(50) + hostnic_cni::client::ANSWER_GRACE;
    assert!(took >= floor, "gave up after {took:?}, before {floor:?}");
}

#[test]
fn another_protocol_version_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(
        &dir.path().join("a.sock"),
        Behaviour::Answer(
            json!({"version": 2, "ok": {"verb": "STATUS", "free_nics": 1, "attached_pods": 0}}),
        ),
    );
    let err = call(&agent.socket, &status_request(), Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(&err, CallError::Protocol(m) if m.contains("version 2")),
        "{err:?}"
    );
}

#[test]
fn an_oversized_frame_header_is_rejected_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(
        &dir.path().join("a.sock"),
        Behaviour::Raw(u32::MAX.to_be_bytes().to_vec()),
    );
    let err = call(&agent.socket, &status_request(), Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(&err, CallError::Protocol(m) if m.contains("exceeds")),
        "{err:?}"
    );
}

#[test]
fn a_ready_agent_answers_status() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(
        &dir.path().join("a.sock"),
        Behaviour::Answer(
            json!({"version": 1, "ok": {"verb": "STATUS", "free_nics": 4, "attached_pods": 1}}),
        ),
    );
    let reply = call(&agent.socket, &status_request(), Duration::from_secs(1)).unwrap();
    assert_eq!(reply.verb(), hostnic_core::api::Verb::Status);
    let got = agent.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json["verb"], "STATUS");
    assert_eq!(got[0].json["timeout_ms"], 50);
}
