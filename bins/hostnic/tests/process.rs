//! Behaviour of the process as a whole that fixtures cannot express: where
//! logs go, non-UTF-8 environment values, oversized stdin.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn run(envs: &[(&str, &OsStr)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostnic"));
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // The plugin may reject the input before reading all of it.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn add_env() -> Vec<(&'static str, &'static OsStr)> {
    vec![
        ("CNI_COMMAND", OsStr::new("ADD")),
        ("CNI_CONTAINERID", OsStr::new("c1")),
        ("CNI_NETNS", OsStr::new("/run/netns/x")),
        ("CNI_IFNAME", OsStr::new("eth0")),
    ]
}

#[test]
fn logs_go_to_log_file_and_never_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hostnic.log");
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "hostnic",
        "agentSocket": dir.path().join("none.sock"), "stateDir": dir.path().join("state"),
        "logFile": log, "logLevel": "debug"});
    let out = run(&add_env(), conf.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 11);
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("ERROR") && logged.contains("ADD c1/eth0"),
        "{logged}"
    );
    assert!(logged.contains("hostnic agent is unreachable"), "{logged}");
}

#[test]
fn an_unopenable_log_file_falls_back_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "hostnic",
        "agentSocket": dir.path().join("none.sock"), "logFile": "/dev/null/hostnic.log"});
    let out = run(&add_env(), conf.to_string().as_bytes());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 11, "the verb's own error, not the log's");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open log file"), "{stderr}");
}

#[test]
fn a_non_utf8_environment_value_is_code_4() {
    let mut env = add_env();
    env[1] = ("CNI_CONTAINERID", OsStr::from_bytes(b"c\xff1"));
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "hostnic"});
    let out = run(&env, conf.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 4);
    assert_eq!(err["msg"], "CNI_CONTAINERID is not valid UTF-8");
}

#[test]
fn stdin_over_one_mib_is_code_6() {
    let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "hostnic"});
    conf["padding"] = json!("x".repeat(hostnic_cni::MAX_STDIN));
    let out = run(&add_env(), conf.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 6);
    assert_eq!(err["msg"], "network config too large");
}
