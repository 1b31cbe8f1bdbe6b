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

/// Starts the binary with `args` and `env`, returns it and its ready line.
fn start(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qingcloud-sim"));
    cmd.args(args)
        .env_remove("QINGCLOUD_SIM_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (child, ready)
}

/// Runs the binary with `args`, expecting it to refuse them; its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qingcloud-sim"));
    cmd.args(args).env_remove("QINGCLOUD_SIM_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_generated_vpc_with_the_secret_from_a_file_and_a_quota() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "FILESECRET\n").unwrap();
    let (mut child, ready) = start(
        &[
            "--access-key-id",
            "AK",
            "--secret-file",
            secret.to_str().unwrap(),
            "--instances",
            "1000",
            "--vxnets",
            "8",
            "--quota",
            "3/3600",
            "--time-scale",
            "60",
        ],
        &[],
    );
    assert_eq!(ready["quota"], "3/3600");
    assert_eq!(ready["time_scale"], 60.0);
    assert_eq!(
        (ready["instances"].as_u64(), ready["vxnets"].as_u64()),
        (Some(1000), Some(8))
    );
    let client = QingCloudClient::for_url(
        ready["url"].as_str().unwrap(),
        "AK",
        Secret::new("FILESECRET"),
        "pek3a",
        ClientOptions::default(),
    )
    .unwrap();
    let instances = client.call("DescribeInstances", Params::new()).await;
    let vxnets = client.call("DescribeVxnets", Params::new()).await;
    let third = client.call("DescribeNics", Params::new()).await;
    let fourth = client.call("DescribeNics", Params::new()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(instances.unwrap()["total_count"], 1000);
    assert_eq!(vxnets.unwrap()["total_count"], 8);
    assert_eq!(third.unwrap()["total_count"], 1000, "a primary NIC each");
    let err = fourth.unwrap_err();
    assert_eq!(err.code, Some(2500), "{err}");
}

#[tokio::test]
async fn a_qcsecret_file_gives_key_secret_and_zone() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("config.yaml");
    std::fs::write(
        &creds,
        "qy_access_key_id: 'CREDKEY'\nqy_secret_access_key: 'CREDSECRET'\nzone: 'sh1a'\n",
    )
    .unwrap();
    let (mut child, ready) = start(
        &["--credentials", creds.to_str().unwrap(), "--quota", "off"],
        &[],
    );
    assert_eq!(ready["zone"], "sh1a");
    assert_eq!(ready["quota"], "off");
    let client = QingCloudClient::for_url(
        ready["url"].as_str().unwrap(),
        "CREDKEY",
        Secret::new("CREDSECRET"),
        "sh1a",
        ClientOptions::default(),
    )
    .unwrap();
    let answer = client.call("DescribeVxnets", Params::new()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answer.unwrap()["total_count"], 2);
}

#[test]
fn bad_flags_and_a_secret_on_the_command_line_are_refused_clearly() {
    let env = [("QINGCLOUD_SIM_SECRET", "S")];
    for bad in ["2000", "0/3600", "2000/0", "many/hour", "-1/60"] {
        let err = refused(&["--access-key-id", "AK", &format!("--quota={bad}")], &env);
        assert!(err.contains("REQUESTS/SECONDS"), "--quota {bad}: {err}");
    }
    let err = refused(
        &["--access-key-id", "AK", "--secret-access-key", "TOPSECRET"],
        &env,
    );
    assert!(err.contains("visible in `ps`"), "{err}");
    let err = refused(&["--access-key-id", "AK"], &[]);
    assert!(err.contains("QINGCLOUD_SIM_SECRET"), "{err}");
    let err = refused(
        &[
            "--access-key-id",
            "AK",
            "--instances",
            "300",
            "--vxnets",
            "1",
        ],
        &env,
    );
    assert!(err.contains("at least 2 vxnets"), "{err}");
    let err = refused(&["--access-key-id", "AK", "--time-scale", "0"], &env);
    assert!(err.contains("--time-scale"), "{err}");
}
