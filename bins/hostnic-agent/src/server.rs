//! The Unix socket the CNI plugin talks to, and the verbs.
//!
//! One connection carries one framed request and one framed response. Each
//! connection is its own task: the engine's lock is held for microseconds, so
//! ADDs proceed in parallel while the pool task talks to the cloud. An ADD that
//! finds no ready NIC raises the pool's demand, wakes it and waits for the end
//! of a pool round, until its deadline.
//!
//! Connections and the request bytes they hold are capped (`admission`): one too
//! many is answered "agent busy" (code 11) without its body being read.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hostnic_core::api::{
    self, AddReply, AddRequest, AgentError as WireError, CheckReply, CheckRequest, DelReply,
    DelRequest, GcReply, GcRequest, Reply, Request, RequestBody, Response, StatusReply, codes,
    reply,
};
use hostnic_core::engine::EngineError;
use hostnic_core::pool::AllocError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use crate::admission::{self, Admission, HEADER_WAIT, Refusal, Reservation};
use crate::agent::AgentError;
use crate::shared::Shared;
use crate::shutdown::stopped;

/// How long in-flight requests may take to finish after shutdown was asked.
const DRAIN: Duration = Duration::from_secs(30);
/// Longest a DEL waits for the policy sync removing the pod's chains.
const DEL_POLICY_WAIT: Duration = Duration::from_secs(2);
/// Time allowed to read a request once connected.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket (mode 0600, a stale one removed) and serves until shutdown,
/// then waits for in-flight requests.
pub(crate) async fn serve(shared: Arc<Shared>) -> Result<(), AgentError> {
    let path = shared.settings.socket.clone();
    let listen_err = |source| AgentError::Listen {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    let listener = UnixListener::bind(&path).map_err(listen_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    tracing::info!(socket = %path.display(), "serving the CNI plugin");

    let admission = Arc::new(Admission::new(shared.settings.socket_limits));
    let mut stop = shared.shutdown.clone();
    let mut inflight = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    let admission = admission.clone();
                    if let Some(slot) = admission.slot() {
                        inflight.spawn(async move {
                            connection(&shared, &admission, stream, slot).await;
                        });
                    } else if let Some(waiting) = admission.refusing() {
                        inflight.spawn(async move {
                            refuse(&shared, &admission, stream, waiting).await;
                        });
                    } else {
                        // Twice max_connections at once: closed unanswered (the
                        // plugin says "agent did not answer").
                        refused(&shared, &admission, Refusal::Connections);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    // Stop accepting (the socket file stays: the plugin then finds the agent "not
    // answering" or down, and records DELs for the next start).
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = inflight.len(),
            "in-flight requests did not finish in time"
        );
    }
    Ok(())
}

/// Serves one connection in its slot.
async fn connection(
    shared: &Shared,
    admission: &Admission,
    mut stream: UnixStream,
    _slot: OwnedSemaphorePermit,
) {
    let read = tokio::time::timeout(READ_TIMEOUT, read_frame(&mut stream, admission)).await;
    // Held until the answer is written: the decoded request lives that long.
    let (body, _reserved) = match read {
        Ok(Ok(Frame::Read(body, reserved))) => (body, reserved),
        Ok(Ok(Frame::NoRoom(len))) => {
            refused(shared, admission, Refusal::Bytes);
            answer_busy(&mut stream, admission.busy(Refusal::Bytes, Some(len))).await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "unreadable request");
            let reply = Response::error(WireError::new(
                codes::DECODE_FAILED,
                "unreadable request",
                e.to_string(),
            ));
            let _ = write_response(&mut stream, &reply).await;
            return;
        }
        Err(_) => return,
    };
    let response = handle_bytes(shared, &body).await;
    drop(body);
    if let Err(e) = write_response(&mut stream, &response).await {
        tracing::debug!(error = %e, "the plugin left before the answer");
    }
}

/// Answers a connection that found no slot "agent busy" once its header came
/// (so that the plugin has written its request and reads the answer), without
/// reading its body.
async fn refuse(
    shared: &Shared,
    admission: &Admission,
    mut stream: UnixStream,
    _waiting: OwnedSemaphorePermit,
) {
    refused(shared, admission, Refusal::Connections);
    let mut header = [0u8; api::HEADER_LEN];
    if let Ok(Ok(_)) = tokio::time::timeout(HEADER_WAIT, stream.read_exact(&mut header)).await {
        answer_busy(&mut stream, admission.busy(Refusal::Connections, None)).await;
    }
}

fn refused(shared: &Shared, admission: &Admission, why: Refusal) {
    shared
        .metrics
        .inc("hostnic_socket_refused_total", &[("reason", why.label())]);
    admission.refused(why);
}

/// What reading a request gave.
enum Frame {
    /// The body, and the bytes it holds of the budget.
    Read(Vec<u8>, Reservation),
    /// The header announced a body of this length the budget cannot take now.
    NoRoom(usize),
}

/// Reads one frame, its body only once the budget took its length.
async fn read_frame(
    stream: &mut UnixStream,
    admission: &Admission,
) -> Result<Frame, std::io::Error> {
    let mut header = [0u8; api::HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let len = api::frame_len(header)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let Some(reserved) = admission.reserve(len) else {
        return Ok(Frame::NoRoom(len));
    };
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Frame::Read(body, reserved))
}

async fn write_response(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let frame = api::encode_frame(response)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    stream.write_all(&frame).await?;
    stream.shutdown().await
}

/// Answers a refused request "agent busy" without reading its body. What of the
/// body has already arrived (all of an ordinary request) is read and dropped
/// first, so that the close does not reset the connection under the client's
/// read of the answer (the kernel resets a socket closed with unread data).
async fn answer_busy(stream: &mut UnixStream, busy: WireError) {
    let _ = write_response(stream, &Response::error(busy)).await;
    let mut sink = [0u8; 4096];
    let mut dropped = 0;
    while dropped < admission::SMALL_BODY as usize {
        match stream.try_read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
}

/// Decodes one request body and answers it.
pub(crate) async fn handle_bytes(shared: &Shared, body: &[u8]) -> Response {
    match reply::decode_request(body) {
        Ok(request) => handle(shared, request).await,
        Err(e) => Response::error(e),
    }
}

/// Answers one request, with metrics.
pub(crate) async fn handle(shared: &Shared, request: Request) -> Response {
    let started = Instant::now();
    let verb = request.body.verb().to_string();
    let timeout = Duration::from_millis(request.body.timeout_ms().clamp(1, 600_000));
    let deadline = tokio::time::Instant::now() + timeout;
    let result = match request.body {
        RequestBody::Add(r) => add(shared, r, deadline).await.map(Reply::Add),
        RequestBody::Del(r) => del(shared, r, deadline).await.map(Reply::Del),
        RequestBody::Check(r) => check(shared, r).await.map(Reply::Check),
        RequestBody::Gc(r) => gc(shared, r).await.map(Reply::Gc),
        RequestBody::Status(_) => status(shared).map(Reply::Status),
    };
    let m = &shared.metrics;
    m.observe(
        "hostnic_cni_request_duration_seconds",
        &[("verb", &verb)],
        started.elapsed(),
    );
    match result {
        Ok(reply) => {
            m.inc(
                "hostnic_cni_requests_total",
                &[("verb", &verb), ("result", "ok")],
            );
            Response::ok(reply)
        }
        Err(e) => {
            m.inc(
                "hostnic_cni_requests_total",
                &[("verb", &verb), ("result", "error")],
            );
            tracing::info!(verb, code = e.code, msg = %e.msg, details = %e.details, "request failed");
            Response::error(e)
        }
    }
}

/// An engine failure as the plugin's error.
fn wire_error(e: &EngineError) -> WireError {
    reply::engine_error(e)
}

/// Counts an ADD as waiting for a NIC while alive (also when the request is dropped).
struct Waiting<'a>(&'a Shared, hostnic_core::types::AttachmentId);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting_adds.fetch_sub(1, Ordering::SeqCst);
        self.0
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
        self.0.update_demand();
    }
}

async fn add(
    shared: &Shared,
    r: AddRequest,
    deadline: tokio::time::Instant,
) -> Result<AddReply, WireError> {
    // Policy-aware ADD: the pod's labels must be known before it gets an address,
    // so that its chains can be programmed before this ADD answers (fail closed).
    let enforcer = shared
        .policy
        .as_ref()
        .filter(|_| !r.pod.namespace.is_empty() && !r.pod.name.is_empty());
    if let Some(enforcer) = enforcer {
        enforcer
            .learn(&r.pod.namespace, &r.pod.name, deadline)
            .await
            .map_err(reply::policy_unknown)?;
    }
    let mut waiting = None;
    let added = loop {
        // Registered before trying, so a round ending in between is not missed.
        let round = shared.round_done.notified();
        tokio::pin!(round);
        round.as_mut().enable();
        let result = {
            let _shared = shared.plumbing.read().await;
            shared.engine.add(&r.pod, &r.netns).await
        };
        match result {
            Ok(added) => break added,
            Err(EngineError::Alloc(AllocError::PoolEmpty { coming, cooling })) => {
                if waiting.is_none() {
                    let id = r.pod.attachment();
                    shared.waiting_adds.fetch_add(1, Ordering::SeqCst);
                    shared
                        .waiting
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.clone());
                    shared.update_demand();
                    shared.metrics.inc("hostnic_no_free_nic_total", &[]);
                    waiting = Some(Waiting(shared, id));
                }
                shared.pool_wake.notify_one();
                if tokio::time::timeout_at(deadline, round).await.is_err() {
                    // Why the pool could not grow, when it knows: a full vxnet, a
                    // quota, the account's request quota, not "the pool is growing".
                    let shortage = shared.engine.with_state(|s| s.shortage().cloned());
                    let error =
                        reply::nic_shortage(r.timeout_ms, coming, cooling, shortage.as_ref());
                    if let Some(reporter) = &shared.reporter {
                        let message = format!("{}: {}", error.msg, error.details);
                        reporter.nic_shortage_because(&r.pod, shortage.map(|s| s.cause), &message);
                    }
                    return Err(error);
                }
            }
            Err(e) => {
                if reply::is_quota(&e)
                    && let Some(reporter) = &shared.reporter
                {
                    reporter.nic_shortage(&r.pod, true, &e.to_string());
                }
                return Err(wire_error(&e));
            }
        }
    };
    drop(waiting);
    if let Some(enforcer) = enforcer {
        if enforcer.enforcer.selects(&r.pod.namespace, &r.pod.name) {
            // The plumbing stays on failure: a retried ADD finds it and syncs again,
            // and a DEL releases it.
            enforcer
                .sync_now(deadline)
                .await
                .map_err(reply::policy_not_programmed)?;
        } else {
            // Selected by no policy: nothing to enforce on the pod itself; peers'
            // sets learn its address with the next sync.
            enforcer.request();
        }
    }
    Ok(reply::add_reply(&r, &added, shared.settings.mtu))
}

async fn del(
    shared: &Shared,
    r: DelRequest,
    deadline: tokio::time::Instant,
) -> Result<DelReply, WireError> {
    let released = {
        let _shared = shared.plumbing.read().await;
        shared
            .engine
            .del_pod(&r.pod, r.netns.as_deref())
            .await
            .map_err(|e| wire_error(&e))?
    };
    if released.is_some() {
        // The pool may now be above max_free.
        shared.pool_wake.notify_one();
    }
    if let Some(enforcer) = &shared.policy
        && !r.pod.namespace.is_empty()
        && !r.pod.name.is_empty()
    {
        // Remove the pod's chains now; a failure is retried by the policy task, and
        // the released NIC's address stays in cooldown meanwhile.
        enforcer.enforcer.forget(&r.pod.namespace, &r.pod.name);
        if enforcer.enforcer.enforced(&r.pod.namespace, &r.pod.name) {
            // Bounded: a broken dataplane must not hold every DEL for its whole timeout.
            let until = deadline.min(tokio::time::Instant::now() + DEL_POLICY_WAIT);
            if let Err(e) = enforcer.sync_now(until).await {
                tracing::warn!(pod = %r.pod.display_name(), error = %e, "network policy not updated after DEL");
            }
        } else {
            // No chains of its own: peers' sets drop its address with the next sync,
            // and the address stays in cooldown meanwhile.
            enforcer.request();
        }
    }
    Ok(DelReply {
        released: released.is_some(),
    })
}

async fn check(shared: &Shared, r: CheckRequest) -> Result<CheckReply, WireError> {
    let att = {
        let _shared = shared.plumbing.read().await;
        shared
            .engine
            .check_pod(&r.pod, &r.netns)
            .await
            .map_err(|e| wire_error(&e))?
    };
    reply::check_reply(&r.expected, &att)
}

async fn gc(shared: &Shared, r: GcRequest) -> Result<GcReply, WireError> {
    let valid: BTreeSet<_> = r.valid_attachments.into_iter().collect();
    let released = {
        let _shared = shared.plumbing.read().await;
        shared.engine.gc(&valid).await.map_err(|e| wire_error(&e))?
    };
    if !released.is_empty() {
        shared.pool_wake.notify_one();
    }
    Ok(GcReply { released })
}

fn status(shared: &Shared) -> Result<StatusReply, WireError> {
    let (readiness, counts, pods) = shared.readiness();
    reply::status_reply(readiness, &counts, pods)
}
