//! The lab behaves like a runtime and a careful tool (issue 19 item 8, issue 20
//! item 8): `up` refuses a running lab instead of wiping it and leaking its
//! agents; `up` on leftovers it cannot remove says what they are and the
//! commands that clear them; `pod add` sends DEL after a failed ADD, as runtimes
//! do. Each failed on the code before. Needs root:
//! `cargo test -p hostnic-lab -- --include-ignored`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hostnic_linux::NetNs;
use hostnic_linux::lab::fabric;
use serde_json::Value;

use common::{LAB, LabGuard, lab, read_json};

/// `hostnic-lab ARGS`; (success, stdout, stderr).
fn lab_full(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(LAB).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn up_on_a_running_lab_refuses_and_keeps_it() {
    let guard = LabGuard::new();
    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]).0);
    let state: Value = read_json(&guard.dir.path().join("lab-state.json"));
    let daemon = state["daemon_pid"].as_u64().unwrap();
    let (ok, _, err) = lab_full(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]);
    assert!(!ok, "a second up on a running lab succeeded");
    assert!(err.contains("lab already up in"), "{err}");
    assert!(
        err.contains(&format!("hostnic-lab down --dir {}", guard.path())),
        "{err}"
    );
    // The first lab is untouched: same daemon, still alive, its namespaces there.
    let again: Value = read_json(&guard.dir.path().join("lab-state.json"));
    assert_eq!(again["daemon_pid"].as_u64(), Some(daemon));
    assert!(std::path::Path::new(&format!("/proc/{daemon}")).exists());
    assert_eq!(fabric::lab_namespaces(&guard.prefix()).len(), 4);
    assert!(lab(&["down", "--dir", guard.path()]).0);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn up_on_leftovers_it_cannot_remove_names_them_and_the_commands_that_do() {
    let guard = LabGuard::new();
    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]).0);
    let prefix = guard.prefix();
    assert!(lab(&["down", "--dir", guard.path()]).0);
    // A namespace of this lab's prefix that cannot be deleted: its bind mount is
    // stacked twice (what an `ip netns add` racing the lab can leave), so one
    // unmount leaves it busy.
    let stuck = format!("{prefix}node1");
    let file = format!("/run/netns/{stuck}");
    drop(NetNs::create_named(&stuck).unwrap());
    let bind = |args: &[&str]| Command::new("mount").args(args).status().unwrap().success();
    assert!(bind(&["--bind", &file, &file]));
    let (ok, _, err) = lab_full(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]);
    // Clear it as the message says before asserting, so a failure leaves nothing.
    let clear = format!("umount -l /run/netns/{stuck}; ip netns delete {stuck}");
    let cleared = Command::new("sh")
        .args(["-c", &clear])
        .status()
        .unwrap()
        .success();
    assert!(!ok, "up succeeded on a leftover it could not remove");
    assert!(err.contains(&stuck), "names the leftover: {err}");
    assert!(err.contains(&clear), "gives the command: {err}");
    assert!(cleared, "the command given clears it");
    assert!(!std::path::Path::new(&file).exists());
    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]).0);
    assert!(lab(&["down", "--dir", guard.path()]).0);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn a_failed_add_is_followed_by_a_del_as_a_runtime_does() {
    let guard = LabGuard::new();
    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]).0);
    let lab_json: Value = read_json(&guard.dir.path().join("lab.json"));
    let bin_dir = lab_json["nodes"][0]["cni_bin_dir"].as_str().unwrap();
    // The node's plugin: records each verb, fails ADD as the agent would when it
    // attached a NIC but could not finish.
    let calls = guard.dir.path().join("calls");
    let plugin = std::path::Path::new(bin_dir).join("hostnic");
    let _ = std::fs::remove_file(&plugin);
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS\" >> {}\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then\n\
             echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"plumbing failed\"}}'; exit 1\nfi\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, _, err) = lab_full(&[
        "pod",
        "add",
        "--dir",
        guard.path(),
        "--node",
        "node1",
        "--pod",
        "default/p1",
        "--no-wait",
    ]);
    assert!(!ok);
    assert!(err.contains("plumbing failed"), "{err}");
    let text = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "ADD then DEL: {text}");
    assert_eq!((lines[0][0], lines[1][0]), ("ADD", "DEL"), "{text}");
    assert_eq!(lines[0][1..], lines[1][1..], "same sandbox: {text}");
    // The sandbox went after the DEL, and no record of the pod is kept.
    assert!(!std::path::Path::new(lines[0][2]).exists());
    assert!(!guard.dir.path().join("pods/node1_default_p1.json").exists());
    assert!(lab(&["down", "--dir", guard.path()]).0);
}
