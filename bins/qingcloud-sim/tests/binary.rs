//! The `qingcloud-sim` binary announces its URL on stdout and serves the API there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hostnic_qingcloud::signer::Params;
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

#[tokio::test]
async fn prints_its_url_then_serves_signed_requests() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qingcloud-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--access-key-id",
            "AK",
            "--zone",
            "pek3b",
        ])
        .env("QINGCLOUD_SIM_SECRET", "SK")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = ready["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/iaas/"),
        "{url}"
    );
    assert_eq!(ready["zone"], "pek3b");

    let client = QingCloudClient::for_url(
        &url,
        "AK",
        Secret::new("SK"),
        "pek3b",
        ClientOptions::default(),
    )
    .unwrap();
    let answer = client.call("DescribeInstances", Params::new()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answer.unwrap()["total_count"], 3);
}
