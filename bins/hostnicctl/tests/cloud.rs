//! `hostnicctl cloud …` against an in-process simulator, through a credentials file.

use std::process::Command;

use hostnic_qingcloud::sim::{SimConfig, Simulator};

fn credentials(dir: &tempfile::TempDir, port: u16, secret: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "qy_access_key_id: 'AK'\nqy_secret_access_key: '{secret}'\nzone: 'pek3a'\nhost: '127.0.0.1'\nport: {port}\nprotocol: 'http'\nuri: '/iaas'\nconnection_retries: 1\n"
        ),
    )
    .unwrap();
    path
}

/// `hostnicctl ARGS` with `env` set, on a blocking thread; (success, stdout, stderr).
async fn ctl(args: Vec<String>, env: Vec<(&'static str, String)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_hostnicctl"))
            .args(&args)
            .envs(env)
            .env_remove("HOSTNIC_AGENT_URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// In the agent's pod the credentials are at HOSTNIC_CREDENTIALS; `cloud` ignored it
/// and looked at /etc/qingcloud/config.yaml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_reads_the_credentials_hostnic_credentials_names_and_prints_tables() {
    let sim = Simulator::start(SimConfig::new("AK", "SK"), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(&dir, sim.addr().port(), "SK");
    let env = vec![("HOSTNIC_CREDENTIALS", creds.display().to_string())];
    let (ok, out, err) = ctl(strings(&["cloud", "describe-vxnets"]), env.clone()).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("VXNET") && lines[0].contains("NETWORK"),
        "{out}"
    );
    assert!(
        out.contains("vxnet-sim1") && out.contains("172.16.1.0/24"),
        "{out}"
    );
    let (ok, out, err) = ctl(
        strings(&["cloud", "describe-nics", "--instance", "i-sim00001"]),
        env,
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().starts_with("NIC "), "{out}");
    assert!(out.contains("primary"), "{out}");
    // Without the variable and the flag: the default path, named in the error.
    let (ok, _, err) = ctl(strings(&["cloud", "describe-vxnets"]), vec![]).await;
    assert!(!ok);
    assert!(err.contains("HOSTNIC_CREDENTIALS"), "{err}");
}

/// After an uninstall the node's NICs stay; the uninstall text pointed at a
/// command that did not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_lists_a_nodes_leftover_nics_and_deletes_them_only_when_told() {
    use hostnic_core::types::{InstanceId, VxnetId};
    let sim = Simulator::start(SimConfig::new("AK", "SK"), None)
        .await
        .unwrap();
    let client = hostnic_qingcloud::QingCloudClient::for_url(
        &sim.url(),
        "AK",
        hostnic_qingcloud::Secret::new("SK"),
        &sim.zone(),
        hostnic_qingcloud::ClientOptions::default(),
    )
    .unwrap();
    let vxnet = VxnetId::new("vxnet-sim1");
    let node = InstanceId::new("i-sim00001");
    // Ours (tagged), one attached; one of the original hostnic-cni (no tag); one of
    // another node.
    let ours = client
        .create_nics(&vxnet, 2, "hostnic_i-sim00001")
        .await
        .unwrap();
    let job = client
        .attach_nics(&node, &[ours[0].id.clone()])
        .await
        .unwrap();
    client
        .wait_job(&job, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let mut p = hostnic_qingcloud::signer::Params::new();
    p.set("vxnet", "vxnet-sim1")
        .set("nic_name", "hostnic_i-sim00001")
        .set("count", 1);
    client.call("CreateNics", p).await.unwrap();
    client
        .create_nics(&vxnet, 1, "hostnic_i-sim00002")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(&dir, sim.addr().port(), "SK");
    let base = vec![
        "cleanup".to_string(),
        "--instance".into(),
        "i-sim00001".into(),
        "--credentials".into(),
        creds.display().to_string(),
        "--agent-url".into(),
        "http://127.0.0.1:9".into(),
    ];
    let (ok, out, err) = ctl(base.clone(), vec![]).await;
    assert!(ok, "{err}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert!(out.contains("detach 1 and delete 3"), "{out}");
    // The TAGS column tells ours (tagged `hostnic`) from the original's (none).
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .take(3)
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let tags: Vec<&str> = rows.iter().map(|r| r[5]).collect();
    assert_eq!(tags.iter().filter(|t| **t == "hostnic").count(), 2, "{out}");
    assert_eq!(tags.iter().filter(|t| **t == "-").count(), 1, "{out}");
    let mine = hostnic_core::ports::NicFilter {
        name: Some("hostnic_i-sim00001".into()),
        ..Default::default()
    };
    assert_eq!(
        client.describe_nics(&mine).await.unwrap().len(),
        3,
        "dry run"
    );

    let mut yes = base.clone();
    yes.push("--yes".into());
    let (ok, out, err) = ctl(yes, vec![]).await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted 3 NIC(s)"), "{out}");
    assert!(client.describe_nics(&mine).await.unwrap().is_empty());
    let theirs = hostnic_core::ports::NicFilter {
        name: Some("hostnic_i-sim00002".into()),
        ..Default::default()
    };
    assert_eq!(client.describe_nics(&theirs).await.unwrap().len(), 1);
    let primary = hostnic_core::ports::NicFilter {
        instance: Some(node),
        ..Default::default()
    };
    assert_eq!(
        client.describe_nics(&primary).await.unwrap().len(),
        1,
        "the primary NIC"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_refuses_to_delete_while_an_agent_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        }
    });
    let sim = Simulator::start(SimConfig::new("AK", "SK"), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(&dir, sim.addr().port(), "SK");
    let args = vec![
        "cleanup".to_string(),
        "--instance".into(),
        "i-sim00001".into(),
        "--credentials".into(),
        creds.display().to_string(),
        "--agent-url".into(),
        url,
    ];
    // A dry run only warns.
    let (ok, out, err) = ctl(args.clone(), vec![]).await;
    assert!(ok, "{err}");
    assert!(err.contains("agent answers"), "{err}");
    assert!(out.contains("nothing to clean up"), "{out}");
    let mut yes = args;
    yes.push("--yes".into());
    let (ok, _, err) = ctl(yes, vec![]).await;
    assert!(!ok);
    assert!(
        err.contains("agent answers") && err.contains("--force"),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_printed_for_the_usual_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = ctl(strings(&["completions", shell]), vec![]).await;
        assert!(ok, "{shell}: {err}");
        assert!(
            out.contains("hostnicctl") && out.contains("cleanup"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_commands_print_the_api_answer_as_json() {
    let sim = Simulator::start(SimConfig::new("AK", "SK"), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(&dir, sim.addr().port(), "SK");
    for (cmd, set, count) in [
        (
            vec!["describe-instances", "--instance", "i-sim00002"],
            "instance_set",
            1,
        ),
        (vec!["describe-vxnets"], "vxnet_set", 2),
        (
            vec!["describe-nics", "--instance", "i-sim00001"],
            "nic_set",
            1,
        ),
        (vec!["describe-jobs"], "job_set", 0),
    ] {
        let out = tokio::task::spawn_blocking({
            let creds = creds.clone();
            move || {
                Command::new(env!("CARGO_BIN_EXE_hostnicctl"))
                    .arg("cloud")
                    .args(&cmd)
                    .arg("--json")
                    .arg("--credentials")
                    .arg(&creds)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["ret_code"], 0);
        assert_eq!(answer[set].as_array().unwrap().len(), count, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_with_the_ret_code_and_no_secret() {
    let sim = Simulator::start(SimConfig::new("AK", "SK"), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(&dir, sim.addr().port(), "NOT-THE-SECRET");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hostnicctl"))
            .args(["cloud", "describe-nics", "--credentials"])
            .arg(&creds)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1200"), "{stderr}");
    assert!(!stderr.contains("NOT-THE-SECRET"), "{stderr}");
}
