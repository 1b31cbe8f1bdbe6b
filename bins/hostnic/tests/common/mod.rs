//! A fake hostnic agent for the plugin's tests and benchmark: a thread serving
//! one canned behaviour on a Unix socket and recording every request it got.

#![allow(dead_code)] // each test target uses a different part of it

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hostnic_core::api::{HEADER_LEN, Request, decode_frame, encode_frame, frame_len};
use serde_json::Value;

/// What the fake agent does with each connection.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Reads the request and writes this response (any JSON) as one frame.
    Answer(Value),
    /// Reads the request and never answers; waits until the client goes away.
    Hang,
    /// Reads the request and closes the connection without answering.
    Close,
    /// Reads the request and writes these bytes, unframed.
    Raw(Vec<u8>),
}

/// One request as the fake agent received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's JSON.
    pub json: Value,
    /// Whether it decoded as a typed `hostnic_core::api::Request`, and the error if not.
    pub typed: Result<(), String>,
}

/// A running fake agent; stops when dropped.
pub struct FakeAgent {
    /// The socket it listens on.
    pub socket: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    /// Listens on `socket` and serves `behaviour` to every connection.
    pub fn start(socket: &Path, behaviour: Behaviour) -> Self {
        let listener = UnixListener::bind(socket).expect("bind fake agent socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    serve(conn, &behaviour, &received);
                }
            })
        };
        Self {
            socket: socket.to_path_buf(),
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: UnixStream, behaviour: &Behaviour, received: &Mutex<Vec<Received>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut header = [0u8; HEADER_LEN];
    if conn.read_exact(&mut header).is_err() {
        return; // the wake-up connection of Drop, or a client that gave up
    }
    let Ok(len) = frame_len(header) else { return };
    let mut frame = header.to_vec();
    frame.resize(HEADER_LEN + len, 0);
    if conn.read_exact(&mut frame[HEADER_LEN..]).is_err() {
        return;
    }
    let json = decode_frame::<Value>(&frame)
        .map(|(v, _)| v)
        .unwrap_or(Value::Null);
    let typed = decode_frame::<Request>(&frame)
        .map(|_| ())
        .map_err(|e| e.to_string());
    received.lock().unwrap().push(Received { json, typed });
    match behaviour {
        Behaviour::Answer(v) => {
            let _ = conn.write_all(&encode_frame(v).unwrap());
        }
        Behaviour::Hang => {
            // Returns when the plugin exits and its end closes (or after the read timeout).
            let _ = conn.read_to_end(&mut Vec::new());
        }
        Behaviour::Close => {}
        Behaviour::Raw(bytes) => {
            let _ = conn.write_all(bytes);
        }
    }
}
