//! The `hostnic-fake-apiserver` process: prints its URL, writes a kubeconfig that a
//! real client uses, and serves the nodes given on its command line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hostnic_core::types::VxnetId;

/// Kills the server when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_its_nodes_to_a_client_from_its_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_hostnic-fake-apiserver"))
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(["--node", "node-1=vxnet-a,vxnet-b", "--node", "node-2"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut url = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let k8s = hostnic_k8s::connect(Some(&kubeconfig), "node-1")
        .await
        .unwrap();
    assert_eq!(
        k8s.node.vxnets().await.unwrap(),
        vec![VxnetId::new("vxnet-a"), VxnetId::new("vxnet-b")]
    );
    let other = hostnic_k8s::connect(Some(&kubeconfig), "node-2")
        .await
        .unwrap();
    assert!(other.node.vxnets().await.unwrap().is_empty());
}
