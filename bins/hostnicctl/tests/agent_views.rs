//! `hostnicctl status|pool|pods|nics` against a stand-in for the agent's
//! introspection endpoint serving the documents the agent serves.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

fn serve(routes: Vec<(&'static str, String)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            // Read the headers up to the blank line.
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body) = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, b)| ("200 OK", b.clone()))
                .unwrap_or(("404 Not Found", "not found".into()));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

fn ctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hostnicctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn documents() -> Vec<(&'static str, String)> {
    let status = serde_json::json!({
        "instance": "i-sim00001", "primary_nic": "52:54:00:00:01:00", "primary_ip": "172.16.1.254",
        "vxnets": ["vxnet-sim1"], "ready": true, "cloud_ok": true, "uptime_secs": 12,
        "pool": {"free": 3, "assigned": 1, "cooling": 0, "preparing": 1, "retiring": 0, "creating": 0,
                 "min_free": 2, "max_free": 4, "max_nics": 62, "waiting_adds": 0, "pending_pods": 0},
        "pods": 1, "last_round_failures": [], "last_reconcile_at_ms": 1
    });
    let pods = serde_json::json!([{
        "namespace": "default", "name": "web-0", "container_id": "c0ffee", "ifname": "eth0",
        "ip": "172.16.1.7", "nic": "52:54:00:00:01:05", "table": 1003, "host_veth": "nic0123456789a",
        "netns": "/var/run/netns/x", "assigned_at_ms": 5
    }]);
    let nics = serde_json::json!([{
        "id": "52:54:00:00:01:05", "ip": "172.16.1.7", "vxnet": "vxnet-sim1", "table": 1003,
        "link": "attached", "host_ready": true, "usage": "assigned", "pod": "default/web-0"
    }, {
        "id": "52:54:00:00:01:06", "ip": "172.16.1.8", "vxnet": "vxnet-sim1", "table": 1004,
        "link": "attached", "host_ready": true, "usage": "free", "pod": null
    }]);
    vec![
        ("/v1/status", status.to_string()),
        ("/v1/pods", pods.to_string()),
        ("/v1/nics", nics.to_string()),
    ]
}

#[test]
fn status_pool_pods_and_nics_print_tables() {
    let url = serve(documents());
    let (ok, out, err) = ctl(&["status", "--url", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("instance:     i-sim00001"), "{out}");
    assert!(out.contains("3 free, 1 assigned"), "{out}");

    let (ok, out, err) = ctl(&["pool", "--url", &url]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("FREE  ASSIGNED"), "{out}");
    assert!(lines[1].starts_with("3     1"), "{out}");

    let (ok, out, err) = ctl(&["pods", "--url", &url]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).unwrap().contains("web-0"), "{out}");
    assert!(out.contains("172.16.1.7"), "{out}");

    let (ok, out, err) = ctl(&["nics", "--url", &url]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("default/web-0"), "{out}");
}

#[test]
fn json_output_is_the_agents_document() {
    let url = serve(documents());
    let (ok, out, err) = ctl(&["nics", "--json", "--url", &url]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn an_unreachable_agent_is_a_clear_error() {
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (ok, _, err) = ctl(&["status", "--url", &url]);
    assert!(!ok);
    assert!(err.contains("cannot reach the hostnic agent"), "{err}");
}

/// `/v1/policy` and one pod's document, built from the agent's own types (the core's).
fn policy_documents() -> Vec<(&'static str, String)> {
    use hostnic_core::api::introspect::{
        AllowedPeers, DirectionPolicy, PodPolicy, PolicyStatus, PolicySyncStats,
    };
    let status = PolicyStatus {
        enabled: true,
        source_synced: true,
        policies: 3,
        namespaces: 2,
        cluster_pods: 40,
        local_pods: 7,
        isolated_local_pods: 2,
        rules: 12,
        set_elements: 30,
        source_resource_version: 120,
        synced_resource_version: 118,
        syncs: 9,
        sync_errors: 1,
        last_sync_at_ms: Some(1),
        last_sync_duration_ms: Some(3.5),
        last_sync: Some(PolicySyncStats {
            commands: 2,
            elements_added: 1,
            ..PolicySyncStats::default()
        }),
        last_error: None,
    };
    let pod = PodPolicy {
        pod: "x/b".into(),
        ip: Some("10.0.0.2".into()),
        policies: vec!["x/allow-a".into()],
        ingress: DirectionPolicy {
            isolated: true,
            allow: vec![AllowedPeers {
                peer: "pods".into(),
                addresses: vec!["10.0.0.1 (x/a)".into()],
                ports: vec!["TCP/80".into()],
            }],
        },
        egress: DirectionPolicy::default(),
    };
    vec![
        ("/v1/policy", serde_json::to_string(&status).unwrap()),
        ("/v1/policy/pods/x/b", serde_json::to_string(&pod).unwrap()),
    ]
}

#[test]
fn policy_prints_the_status_and_a_pods_allow_sets() {
    let url = serve(policy_documents());
    let (ok, out, err) = ctl(&["policy", "--url", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("3 policies, 2 namespaces, 40 pods"), "{out}");
    assert!(out.contains("7 (2 isolated)"), "{out}");
    assert!(out.contains("118 synced of 120 seen"), "{out}");

    let (ok, out, err) = ctl(&["policy", "x/b", "--url", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("policies: x/allow-a"), "{out}");
    let ingress = out.lines().find(|l| l.starts_with("ingress")).unwrap();
    assert!(
        ingress.contains("pods")
            && ingress.contains("10.0.0.1 (x/a)")
            && ingress.contains("TCP/80"),
        "{out}"
    );
    assert!(out.contains("everything (not isolated)"), "{out}");

    let (ok, out, err) = ctl(&["policy", "x/b", "--json", "--url", &url]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ingress"]["isolated"], true);

    // An unknown pod is the agent's 404, as an error.
    let (ok, _, err) = ctl(&["policy", "x/nope", "--url", &url]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
}
