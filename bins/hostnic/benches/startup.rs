//! Start-up + socket round-trip of the `hostnic` binary against a fake agent
//! (target ≤ 1 ms), and its peak RSS (target ≤ 5 MiB, via `/usr/bin/time`).
//!
//! `cargo bench -p hostnic --bench startup`
//!
//! Criterion reports means; the start-up target is about the median, so the
//! bench first prints medians of ADD and of `/bin/true` run in turn (round
//! robin, so a change of machine load hits all alike).
//! `HOSTNIC_CNI_BINS=label=/path,label2=/path2` adds other builds of the plugin
//! (another profile, a static link) to that table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Behaviour, FakeAgent};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_hostnic");

fn add_reply() -> serde_json::Value {
    json!({"version": 1, "ok": {
        "verb": "ADD",
        "host": {"name": "hnic5d41402abc4", "mac": "ee:ee:ee:ee:ee:ee"},
        "sandbox": {"name": "eth0", "mac": "0a:58:ac:10:01:05", "netns": "/var/run/netns/x"},
        "ip": "172.16.1.5/32", "gateway": "169.254.1.1",
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "nic": "52:54:9e:12:34:56", "table": 260}})
}

fn command(verb: &str, socket: &Path, state: &Path) -> (Command, Vec<u8>) {
    command_of(BIN, verb, socket, state)
}

fn command_of(bin: &str, verb: &str, socket: &Path, state: &Path) -> (Command, Vec<u8>) {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "c0ffee01")
        .env("CNI_NETNS", "/var/run/netns/x")
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let conf = json!({"cniVersion": "1.0.0", "name": "hostnic-net", "type": "hostnic",
        "agentSocket": socket, "stateDir": state, "logLevel": "error"});
    (cmd, conf.to_string().into_bytes())
}

fn run_once(cmd: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = cmd.spawn().unwrap();
    // A process that exits without reading stdin (the baseline) breaks the pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Medians (and p90) of each command, run in turn `rounds` times.
fn interleaved_medians(commands: &mut [(String, Command, Vec<u8>)], rounds: usize) {
    let mut samples = vec![Vec::with_capacity(rounds); commands.len()];
    for _ in 0..rounds {
        for ((_, cmd, stdin), times) in commands.iter_mut().zip(&mut samples) {
            let t = std::time::Instant::now();
            run_once(cmd, stdin);
            times.push(t.elapsed());
        }
    }
    println!("start-up, {rounds} rounds in turn:");
    for ((label, _, _), times) in commands.iter().zip(&mut samples) {
        times.sort();
        println!(
            "  {label:<48} median {:>7.1} µs   p90 {:>7.1} µs",
            times[rounds / 2].as_secs_f64() * 1e6,
            times[rounds * 9 / 10].as_secs_f64() * 1e6
        );
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let state = dir.path().join("state");
    let _agent = FakeAgent::start(&socket, Behaviour::Answer(add_reply()));

    let mut baseline = Command::new("/bin/true");
    baseline.stdin(Stdio::piped()).stdout(Stdio::piped());
    let (add, add_in) = command("ADD", &socket, &state);
    let mut table = vec![
        ("/bin/true".to_string(), baseline, add_in.clone()),
        (
            "hostnic ADD + round trip (this build)".to_string(),
            add,
            add_in,
        ),
    ];
    let others = std::env::var("HOSTNIC_CNI_BINS").unwrap_or_default();
    for (label, bin) in others.split(',').filter_map(|kv| kv.split_once('=')) {
        let (mut other, other_in) = command_of(bin, "ADD", &socket, &state);
        let out = run_once(&mut other, &other_in);
        assert!(out.status.success(), "{bin} ADD failed: {out:?}");
        table.push((
            format!("hostnic ADD + round trip [{label}]"),
            other,
            other_in,
        ));
    }
    let rounds = std::env::var("HOSTNIC_STARTUP_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    interleaved_medians(&mut table, rounds);

    let (mut add, add_in) = command("ADD", &socket, &state);
    let out = run_once(&mut add, &add_in);
    assert!(
        out.status.success(),
        "ADD failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    c.bench_function("ADD start-up + agent round-trip", |b| {
        b.iter(|| run_once(&mut add, &add_in))
    });
    // The same spawn of a process that does nothing: the machine's floor.
    let mut baseline = Command::new("/bin/true");
    baseline.stdin(Stdio::piped()).stdout(Stdio::piped());
    c.bench_function("baseline: spawn /bin/true", |b| {
        b.iter(|| run_once(&mut baseline, &add_in))
    });
    // The plugin's own work without exec: parse, connect, round-trip, render.
    let env: hostnic_cni::env::EnvMap = add
        .get_envs()
        .map(|(k, v)| {
            let k = k.to_str().unwrap().to_string();
            (k, v.unwrap().to_str().unwrap().to_string())
        })
        .collect();
    c.bench_function("ADD in-process run() (no exec)", |b| {
        b.iter(|| {
            let out = hostnic_cni::run(&env, &add_in);
            assert_eq!(out.exit_code, 0);
        })
    });
    let (mut version, version_in) = command("VERSION", &socket, &state);
    c.bench_function("VERSION start-up only (no socket)", |b| {
        b.iter(|| run_once(&mut version, &version_in))
    });

    // Peak RSS of one ADD, as GNU time reports it (KiB).
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M", BIN]);
    let (add, _) = command("ADD", &socket, &state);
    timed.env_clear();
    for (k, v) in add.get_envs() {
        timed.env(k, v.unwrap());
    }
    timed
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match timed.spawn() {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(&add_in).unwrap();
            let out = child.wait_with_output().unwrap();
            let kib = String::from_utf8_lossy(&out.stderr).trim().to_string();
            println!("hostnic ADD peak RSS: {kib} KiB (target <= 5120 KiB)");
        }
        Err(e) => println!("hostnic ADD peak RSS: /usr/bin/time unavailable ({e})"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
