//! `hostnicctl status` while the agent starts, and `hostnicctl cluster` against a
//! fake API server with the DaemonSet's pods and stand-ins for the agents.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use hostnic_k8s::fake_apiserver::FakeApiServer;

/// An HTTP server answering `path → (status, body)`; its port.
fn serve(routes: Vec<(&'static str, u16, String)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (code, body) = routes
                .iter()
                .find(|(p, _, _)| *p == path)
                .map(|(_, c, b)| (*c, b.clone()))
                .unwrap_or((404, "not found".into()));
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn ctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hostnicctl"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With wrong keys `hostnicctl status` said only that the agent was starting.
#[test]
fn status_while_starting_prints_the_last_error_its_cause_and_fix() {
    let startup = serde_json::json!({
        "step": "resolving the instance", "attempts": 2,
        "error": {"step": "resolving the instance",
                  "message": "cloud DescribeInstances failed (Permanent, ret_code 1200): signature not matched",
                  "cause": "the QingCloud API rejected the access key or its signature (ret_code 1200)",
                  "fix": "check qy_access_key_id and qy_secret_access_key in the qcsecret Secret",
                  "permanent": true, "since_ms": 1},
        "next_attempt_in_secs": 57, "restart_would_help": null,
        "build": {"version": "0.1.0", "commit": "abc"}
    });
    let port = serve(vec![("/v1/status", 503, startup.to_string())]);
    let (ok, out, err) = ctl(&["status", "--url", &format!("http://127.0.0.1:{port}")]);
    assert!(!ok, "starting is not a success");
    assert!(
        out.contains("starting:     resolving the instance (attempt 2)"),
        "{out}"
    );
    assert!(
        out.contains("ret_code 1200") && out.contains("qcsecret"),
        "{out}"
    );
    assert!(out.contains("permanent; next attempt in 57 s"), "{out}");
    assert!(err.contains("not serving yet"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shows_every_node_with_its_agents_numbers_and_problems() {
    let api = FakeApiServer::start().await.unwrap();
    for node in ["node1", "node2", "node3"] {
        api.add_node(node, &[]);
    }
    let metrics = |ready: u8, pods: u32| {
        format!(
            "# TYPE hostnic_build_info gauge\nhostnic_build_info{{version=\"0.1.0\",commit=\"abc\"}} 1\n\
             hostnic_node_info{{instance=\"i-1\",mode=\"exclusive\"}} 1\n\
             hostnic_nics{{state=\"free\"}} 3\nhostnic_nics{{state=\"assigned\"}} {pods}\n\
             hostnic_pool_free 3\nhostnic_pods {pods}\nhostnic_ready {ready}\n"
        )
    };
    let ready = serve(vec![
        ("/metrics", 200, metrics(1, 4)),
        ("/readyz", 200, "ready\n".into()),
    ]);
    let stuck = serve(vec![
        ("/metrics", 200, metrics(0, 0)),
        (
            "/readyz",
            503,
            "not ready: another CNI configuration sorts before 10-hostnic.conflist\n".into(),
        ),
    ]);
    for (node, port) in [("node1", ready), ("node2", stuck)] {
        api.apply(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "kube-system", "name": format!("hostnic-node-{node}"),
                         "labels": {"app.kubernetes.io/name": "hostnic",
                                    "app.kubernetes.io/component": "node"}},
            "spec": {"nodeName": node, "hostNetwork": true, "containers": [{
                "name": "hostnic-agent", "image": "x",
                "ports": [{"name": "metrics", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}
        }))
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || ctl(&["cluster", "--kubeconfig", &kubeconfig]))
            .await
            .unwrap();
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("ERRORS"),
        "{out}"
    );
    let cells = |l: &str| -> Vec<String> { l.split_whitespace().map(str::to_string).collect() };
    assert_eq!(
        cells(lines[1])[..8],
        ["node1", "0.1.0", "exclusive", "true", "4", "7", "3", "-"],
        "{out}"
    );
    assert!(
        lines[2].starts_with("node2") && lines[2].contains("false"),
        "{out}"
    );
    assert!(
        lines[2].contains("sorts before 10-hostnic.conflist"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("node3") && lines[3].contains("no hostnic agent pod"),
        "{out}"
    );
}

/// `hostnicctl … | head -1` used to panic ("failed printing to stdout: Broken pipe").
#[test]
fn output_into_a_pipe_that_closes_early_ends_quietly() {
    use std::process::Stdio;
    let status = serde_json::json!({
        "instance": "i-1", "primary_nic": "52:54:00:00:01:00", "primary_ip": "172.16.1.254",
        "vxnets": ["vxnet-sim1"], "ready": true, "cloud_ok": true, "uptime_secs": 1,
        "pool": {"free": 1, "assigned": 0, "cooling": 0, "preparing": 0, "retiring": 0, "creating": 0,
                 "min_free": 1, "max_free": 2, "max_nics": 62, "waiting_adds": 0, "pending_pods": 0},
        "pods": 0, "last_round_failures": [], "last_reconcile_at_ms": 1
    });
    let port = serve(vec![("/v1/status", 200, status.to_string())]);
    let url = format!("http://127.0.0.1:{port}");
    for args in [vec!["completions", "bash"], vec!["status", "--url", &url]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hostnicctl"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
    }
}
