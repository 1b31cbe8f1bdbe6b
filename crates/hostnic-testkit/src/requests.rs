//! Requests of the plugin ↔ agent protocol for tests: builders for pod `i`,
//! raw and framed calls on the agent's socket, and plain HTTP GETs of its
//! introspection endpoint.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use hostnic_core::api::{
    AddRequest, DelRequest, ExpectedAttachment, Request, RequestBody, Response, StatusRequest,
    decode_frame, encode_frame,
};
use hostnic_core::types::PodKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A loopback address with a port free right now.
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address")
}

/// Pod `i`: `default/pod-i`, container `c000i`, `eth0`.
pub fn pod(i: usize) -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: format!("pod-{i}"),
        container_id: format!("c{i:04}"),
        ifname: "eth0".into(),
    }
}

/// ADD of pod `i` in `/var/run/netns/cni-i`, with a deadline of `timeout_ms`.
pub fn add_req(i: usize, timeout_ms: u64) -> RequestBody {
    RequestBody::Add(AddRequest {
        pod: pod(i),
        pod_uid: None,
        netns: format!("/var/run/netns/cni-{i}"),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        veth_prefix: None,
        mtu: None,
        runtime_config: None,
        timeout_ms,
    })
}

/// DEL of pod `i`.
pub fn del_req(i: usize) -> RequestBody {
    RequestBody::Del(DelRequest {
        pod: pod(i),
        netns: Some(format!("/var/run/netns/cni-{i}")),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        prev_result: None,
        timeout_ms: 20_000,
    })
}

/// CHECK of pod `i`, expecting nothing in particular.
pub fn check_req(i: usize) -> RequestBody {
    RequestBody::Check(hostnic_core::api::CheckRequest {
        pod: pod(i),
        netns: format!("/var/run/netns/cni-{i}"),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        expected: ExpectedAttachment::default(),
        prev_result: serde_json::json!({}),
        timeout_ms: 10_000,
    })
}

/// STATUS.
pub fn status_req() -> RequestBody {
    RequestBody::Status(StatusRequest {
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        timeout_ms: 3_000,
    })
}

/// Sends raw bytes and reads the raw answer.
pub async fn raw_call(socket: &Path, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).await?;
    s.write_all(bytes).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// One framed request and its decoded response.
pub async fn try_call(socket: &Path, body: RequestBody) -> std::io::Result<Response> {
    let frame = encode_frame(&Request::new(body)).unwrap();
    let buf = raw_call(socket, &frame).await?;
    decode_frame::<Response>(&buf)
        .map(|(r, _)| r)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// [`try_call`], panicking when the agent does not answer.
pub async fn call(socket: &Path, body: RequestBody) -> Response {
    try_call(socket, body).await.expect("the agent answers")
}

/// Plain HTTP GET on the agent's metrics address; returns (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    try_http_get(addr, path)
        .await
        .expect("the agent's HTTP endpoint answers")
}

/// Like [`http_get`], but a refused connection is an error.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}
