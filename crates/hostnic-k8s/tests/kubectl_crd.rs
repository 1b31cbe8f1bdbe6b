//! The machine's `kubectl` as a client of the fake API server's custom resources:
//! it applies `deploy/crd.yaml`, creates a `HostnicNode`, writes its status
//! through the subresource and prints the CRD's columns.

use std::process::Command;

use hostnic_k8s::fake_apiserver::FakeApiServer;

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs (Debian's kubernetes-client package)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kubectl (Debian's kubernetes-client, installed by .ci/run): run with --include-ignored"]
async fn kubectl_gets_hostnicnodes_with_their_columns() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crd.yaml");
    let k = |args: &[&str]| kubectl(&kubeconfig, args);
    let run = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&kubeconfig, &args)
        })
    };
    // kubectl blocks; the server runs on this runtime's other threads.
    let out = run(vec![
        "apply".into(),
        "--validate=false".into(),
        "-f".into(),
        crd.into(),
    ])
    .await
    .unwrap();
    assert!(out.contains("hostnicnodes.hostnic.io created"), "{out}");
    let node = dir.path().join("node.yaml");
    std::fs::write(
        &node,
        "apiVersion: hostnic.io/v1alpha1\nkind: HostnicNode\nmetadata:\n  name: node-1\n\
         spec:\n  instanceId: i-abc\n  wantNics: 5\n  maxNics: 62\n",
    )
    .unwrap();
    let node = node.to_string_lossy().into_owned();
    run(vec![
        "apply".into(),
        "--validate=false".into(),
        "-f".into(),
        node,
    ])
    .await
    .unwrap();
    let status = r#"{"status":{"attached":3,"room":59,"conditions":[{"type":"Ready","status":"False","reason":"Attaching","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    let out = run(vec![
        "patch".into(),
        "hostnicnode".into(),
        "node-1".into(),
        "--subresource=status".into(),
        "--type=merge".into(),
        "-p".into(),
        status.into(),
    ])
    .await
    .unwrap();
    assert!(out.contains("patched"), "{out}");
    let out = tokio::task::block_in_place(|| k(&["get", "hostnicnodes"]));
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "INSTANCE", "WANTED", "ATTACHED", "ROOM", "READY", "REASON", "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["node-1", "i-abc", "5", "3", "59", "False", "Attaching"]
    );
    // The short name, and the generation that counts spec changes only.
    let out = tokio::task::block_in_place(|| {
        k(&[
            "get",
            "hnn",
            "node-1",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
    });
    assert_eq!(out, "1");
    let out = tokio::task::block_in_place(|| k(&["api-resources", "--api-group=hostnic.io"]));
    assert!(out.contains("hostnicnodes") && out.contains("hnn"), "{out}");
}
