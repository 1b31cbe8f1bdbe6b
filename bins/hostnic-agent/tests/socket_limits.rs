//! The plugin socket under abuse (issue 20 item 4): 300 connections each
//! sending an almost-full 1 MiB frame took the agent to 331 MB of RSS, over the
//! DaemonSet's 256 Mi limit. Now the socket's caps (`socket_limits`) hold it
//! and a legitimate ADD and DEL still get through.
//!
//! One test in its own binary: the process's RSS is the in-process agent's plus
//! this test's clients (which send one shared buffer), and no other test runs
//! beside it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hostnic_core::api::{HEADER_LEN, MAX_FRAME_LEN, Outcome, Reply, Response, codes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The connections of the probe.
const FLOOD: usize = 300;

/// Resident memory of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

const MIB: f64 = (1 << 20) as f64;

/// What one flooding connection saw.
#[derive(Debug)]
enum Seen {
    /// The agent took the whole frame but its last byte (and dropped the
    /// connection unanswered when its read timeout passed).
    Swallowed,
    /// The agent answered before taking the body.
    Answered(Box<Response>),
    /// The agent closed the connection without answering.
    Closed(String),
}

/// Connects, announces a 1 MiB body, sends all of it but its last byte, says
/// so on `sent`, and holds the connection until `release`.
async fn flood_one(
    socket: std::path::PathBuf,
    body: Arc<[u8]>,
    sent: tokio::sync::mpsc::Sender<()>,
    mut release: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut stream = UnixStream::connect(&socket).await.expect("connect");
    let header = (MAX_FRAME_LEN as u32).to_be_bytes();
    let wrote = async {
        stream.write_all(&header).await?;
        stream.write_all(&body).await
    }
    .await;
    let _ = sent.send(()).await;
    let mut answer = Vec::new();
    let read = tokio::select! {
        r = stream.read_to_end(&mut answer) => r.map(|_| ()),
        _ = release.wait_for(|r| *r) => {
            return match wrote {
                Ok(()) => Seen::Swallowed,
                Err(e) => Seen::Closed(format!("write: {e}")),
            };
        }
    };
    match hostnic_core::api::decode_frame::<Response>(&answer) {
        Ok((response, _)) => Seen::Answered(Box::new(response)),
        // Taken, and dropped unanswered when the agent's read timeout passed.
        Err(_) if wrote.is_ok() && answer.is_empty() => Seen::Swallowed,
        Err(_) => Seen::Closed(format!(
            "write: {wrote:?}, read: {read:?}, {} bytes",
            answer.len()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_near_full_frames_stay_within_the_byte_budget_and_add_del_get_through() {
    let world = World::small();
    let limits = world.settings.socket_limits;
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    let before = rss_bytes();

    let body: Arc<[u8]> = vec![b' '; MAX_FRAME_LEN - 1].into();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel(FLOOD);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            tokio::spawn(flood_one(
                socket.clone(),
                body.clone(),
                sent_tx.clone(),
                release_rx.clone(),
            ))
        })
        .collect();
    for _ in 0..FLOOD {
        sent_rx
            .recv()
            .await
            .expect("every flooding connection sent");
    }
    // Every frame is now written or refused: what the agent took is resident.
    let during = rss_bytes();

    // A legitimate ADD and DEL while the flood holds its connections.
    let added = call(&socket, add_req(1, 30_000)).await;
    assert!(
        matches!(added.outcome, Outcome::Ok(Reply::Add(_))),
        "ADD during the flood: {added:?}"
    );
    let deleted = call(&socket, del_req(1)).await;
    assert!(
        matches!(deleted.outcome, Outcome::Ok(Reply::Del(_))),
        "DEL during the flood: {deleted:?}"
    );

    release_tx.send(true).unwrap();
    let mut swallowed = 0;
    let mut busy = 0;
    for task in flood {
        match task.await.unwrap() {
            Seen::Swallowed => swallowed += 1,
            Seen::Answered(r) => match &r.outcome {
                Outcome::Error(e) if e.code == codes::TRY_AGAIN_LATER && e.msg == "agent busy" => {
                    assert!(e.details.contains("max_buffered_bytes"), "{e:?}");
                    busy += 1;
                }
                other => panic!("a flooding connection got {other:?}"),
            },
            Seen::Closed(why) => panic!("a flooding connection was closed unanswered: {why}"),
        }
    }
    let growth = during.saturating_sub(before);
    eprintln!(
        "{FLOOD} connections x {} bytes: RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB); \
         {swallowed} bodies taken, {busy} answered busy",
        MAX_FRAME_LEN - 1,
        before as f64 / MIB,
        during as f64 / MIB,
        growth as f64 / MIB,
    );
    // The budget holds the bodies; the rest is a task and a socket per connection
    // (and the few MiB an allocator keeps around): 8 MiB for both is generous.
    let allowed = limits.max_buffered_bytes + (8 << 20);
    assert!(
        growth <= allowed,
        "the flood took {:.1} MiB of RSS, more than the {:.1} MiB the socket's budget allows",
        growth as f64 / MIB,
        allowed as f64 / MIB
    );
    // Bodies over 64 KiB take at most three quarters of the budget.
    let large_share = (limits.max_buffered_bytes - limits.max_buffered_bytes / 4) as usize;
    assert!(
        swallowed <= large_share / MAX_FRAME_LEN,
        "{swallowed} bodies taken"
    );
    assert_eq!(busy, FLOOD - swallowed);
    assert_eq!(
        agent
            .metrics
            .counter("hostnic_socket_refused_total", &[("reason", "bytes")]),
        busy as u64
    );

    // Once the flood's connections are closed, a frame of the protocol's largest
    // size is read again (and found undecodable).
    let mut frame = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
    frame.resize(HEADER_LEN + MAX_FRAME_LEN, b' ');
    let mut code = None;
    for _ in 0..100 {
        let answer = raw_call(&socket, &frame).await.unwrap_or_default();
        if let Ok((
            Response {
                outcome: Outcome::Error(e),
                ..
            },
            _,
        )) = hostnic_core::api::decode_frame::<Response>(&answer)
        {
            code = Some(e.code);
            if e.code == codes::DECODE_FAILED {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        code,
        Some(codes::DECODE_FAILED),
        "the budget was not given back"
    );
    agent.stop().unwrap();
}
