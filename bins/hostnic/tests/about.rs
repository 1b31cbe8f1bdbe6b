//! The plugin run by a person: `hostnic --version` answers the version (it answered
//! CNI error 4), and `hostnic` alone prints the "about" text upstream plugins
//! print. With any CNI variable it stays a CNI plugin (the golden fixtures cover
//! every CNI_COMMAND, and no CNI_COMMAND with other variables is still error 4).

use std::process::{Command, Stdio};

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostnic"));
    cmd.env_clear()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn version_names_the_release_the_commit_and_the_protocol_versions() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("hostnic {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("1.0.0, 1.1.0"), "{text}");
}

#[test]
fn no_cni_variable_prints_the_about_text_on_stderr_and_nothing_on_stdout() {
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.starts_with("CNI hostnic plugin v"), "{text}");
    assert!(text.contains("CNI protocol versions supported"), "{text}");
}

#[test]
fn a_runtime_without_cni_command_still_gets_error_4() {
    let out = run(&["--version"], &[("CNI_CONTAINERID", "c1")]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 4);
    let out = run(&[], &[("CNI_COMMAND", "VERSION")]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["supportedVersions"].is_array(), "{v}");
}
