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
