//! The lab's control plane without agents: `up` serves a Kubernetes API server
//! and writes its kubeconfig, `ns add`, `apply` and `delete` write to it, and a
//! pod's `listen` process serves TCP inside the pod's namespace. (The agents
//! enforcing what is written there are exercised by `.ci/steps/lab-netpol.sh`.)
//! Needs root: `cargo test -p hostnic-lab -- --include-ignored`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use hostnic_testkit::netns::Namespaces;
use hostnic_testkit::probe;
use serde_json::Value;

use common::{LAB, LabGuard, lab, read_json};

/// GET `path` from the API server at `authority`; (status, JSON body).
fn get(authority: &str, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(authority).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn up_serves_an_api_server_that_ns_apply_and_delete_write_to() {
    let guard = LabGuard::new();
    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "2", "--no-agents"]).0);
    let lab_json = read_json(&guard.dir.path().join("lab.json"));
    let kubeconfig = lab_json["kubeconfig"]
        .as_str()
        .expect("lab.json names the kubeconfig");
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: http://"))
        .expect("the kubeconfig names a plain-HTTP server")
        .to_owned();
    assert!(server.starts_with("127.0.0.1:"), "loopback only: {server}");

    // One Node per lab node, with the vxnet annotation; the usual namespaces.
    let (_, nodes) = get(&server, "/api/v1/nodes");
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node1", "node2"]);
    assert_eq!(
        nodes["items"][0]["metadata"]["annotations"]["node.beta.kubernetes.io/vxnet"],
        "vxnet-sim1"
    );
    assert_eq!(get(&server, "/api/v1/namespaces/default").0, 200);

    // ns add sets the name label and the given ones; again replaces them.
    assert!(
        lab(&[
            "ns",
            "add",
            "--dir",
            guard.path(),
            "x",
            "--labels",
            "team=a",
            "--no-wait"
        ])
        .0
    );
    assert!(
        lab(&[
            "ns",
            "add",
            "--dir",
            guard.path(),
            "x",
            "--labels",
            "team=b",
            "--no-wait"
        ])
        .0
    );
    let (_, ns) = get(&server, "/api/v1/namespaces/x");
    assert_eq!(ns["metadata"]["labels"]["team"], "b");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "x");

    // apply: YAML with two documents; delete removes one.
    let file = guard.dir.path().join("np.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{ports: [{port: 80}]}]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    assert!(lab(&["apply", "--dir", guard.path(), "-f", f, "--no-wait"]).0);
    let path = "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies";
    let (_, list) = get(&server, path);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(&server, &format!("{path}/web")).1["spec"]["ingress"][0]["ports"][0]["port"],
        80
    );
    assert!(
        lab(&[
            "delete",
            "--dir",
            guard.path(),
            "networkpolicy",
            "x/deny",
            "--no-wait"
        ])
        .0
    );
    assert_eq!(get(&server, &format!("{path}/deny")).0, 404);
    assert!(
        !lab(&[
            "delete",
            "--dir",
            guard.path(),
            "networkpolicy",
            "x/deny",
            "--no-wait"
        ])
        .0,
        "deleting what is not there fails"
    );
    // Waiting for enforcement when no agent runs is an error, not a pass.
    assert!(!lab(&["apply", "--dir", guard.path(), "-f", f, "--timeout-s", "1"]).0);

    assert!(lab(&["down", "--dir", guard.path()]).0);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn the_pod_listener_serves_inside_the_pod_namespace_only() {
    let mut guard = Namespaces::new("hlt");
    let (name, ns) = guard.create_ns("listen");
    assert!(
        Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    let mut child = Command::new(LAB)
        .args(["listen", "--netns"])
        .arg(ns.path())
        .args(["--ports", "8081,8082"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    // The process itself is in the pod's namespace (so `down` finds it there).
    let pids = Command::new("ip")
        .args(["netns", "pids", &name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&pids.stdout).contains(&child.id().to_string()));
    for port in [8081, 8082] {
        let seen = probe::tcp_peer(ns.path(), Ipv4Addr::LOCALHOST, port, Duration::from_secs(1))
            .unwrap()
            .to_string();
        assert_eq!(
            seen, "127.0.0.1",
            "port {port} answers with the peer address"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
