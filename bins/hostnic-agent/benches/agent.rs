//! Agent benchmarks (not tests: they measure, they do not judge). Run with
//! `cargo bench -p hostnic-agent --bench agent` (add `-- --quick` for a smoke run,
//! `-- add_path` for one section).
//!
//! 1. The ADD path with a free NIC: plugin-protocol round trips on the agent's
//!    socket (in-process agent over the core's fakes), p50/p99, with the state
//!    directory on disk (under `target/`, or `HOSTNIC_BENCH_DISK_DIR`) and on
//!    `/dev/shm` in the same run; then the checkpoint write alone on each.
//! 2. Cold start: 40 pods at once on an empty node, simulator with 1 s attach latency.
//! 3. Cloud API calls per pod under steady churn against the simulator.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hostnic_agent::settings::Settings;
use hostnic_core::api::Outcome;
use hostnic_core::config::PoolConfig;
use hostnic_core::types::InstanceId;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Where the agent's state directory lives for an `add_path` run.
struct StateDisk {
    label: &'static str,
    parent: PathBuf,
}

impl StateDisk {
    /// The file system type of `parent`, as `stat -f` names it (ext2/ext3 = ext4's magic).
    fn fs_type(&self) -> String {
        std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(&self.parent)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into())
    }
}

/// The state directories compared in one run: a disk (under `target/`, normally
/// ext4) and memory (`/dev/shm`). `HOSTNIC_BENCH_DISK_DIR` picks another disk.
fn state_disks() -> Vec<StateDisk> {
    let disk = std::env::var_os("HOSTNIC_BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let mut disks = vec![StateDisk {
        label: "disk",
        parent: disk,
    }];
    if Path::new("/dev/shm").is_dir() {
        disks.push(StateDisk {
            label: "tmpfs",
            parent: "/dev/shm".into(),
        });
    }
    disks
}

fn p50_p99(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "p50 {:?}  p99 {:?}  max {:?}",
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        samples[samples.len() - 1]
    )
}

/// The ADD path with a free NIC: socket round trip, the engine, the checkpoint
/// written to `disk` before the answer (the host and cloud are the core's fakes).
async fn add_path(iterations: usize, disk: &StateDisk) {
    let mut world = World::new(PoolConfig {
        min_free: 8,
        max_free: 16,
        ip_cooldown: Duration::ZERO,
        min_lifetime: Duration::ZERO,
        ..PoolConfig::default()
    });
    let state = tempfile::tempdir_in(&disk.parent).unwrap();
    world.settings.state_dir = state.path().join("state");
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    // Warm the pool.
    for i in 0..8 {
        call(&socket, add_req(i, 30_000)).await;
    }
    for i in 0..8 {
        call(&socket, del_req(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let pod = 1000 + i;
        let t = Instant::now();
        let r = call(&socket, add_req(pod, 30_000)).await;
        samples.push(t.elapsed());
        assert!(matches!(r.outcome, Outcome::Ok(_)), "{r:?}");
        call(&socket, del_req(pod)).await;
    }
    println!(
        "add_path [{} {}, {}]: {iterations} ADDs with a free NIC (socket round trip, checkpoint written, fakes): {}",
        disk.label,
        disk.fs_type(),
        disk.parent.display(),
        p50_p99(&mut samples)
    );
    agent.stop().unwrap();
    checkpoint_writes(iterations, disk, &world.settings.state_dir);
}

/// The checkpoint write alone, on the same disk: the store's journal append
/// against replacing the whole file (temp + fsync + rename + directory fsync).
fn checkpoint_writes(iterations: usize, disk: &StateDisk, state_dir: &Path) {
    use hostnic_agent::store::{FileStore, write_atomic};
    use hostnic_core::ports::CheckpointStore;

    let mut cp = FileStore::new(state_dir)
        .unwrap()
        .load()
        .unwrap()
        .expect("the agent wrote a checkpoint");
    let dir = tempfile::tempdir_in(&disk.parent).unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    let (mut journal, mut atomic) = (Vec::new(), Vec::new());
    // Alternate between two contents: the store skips a checkpoint that changes nothing.
    let instances = [
        cp.instance.clone(),
        InstanceId::new(format!("{}x", cp.instance)),
    ];
    for i in 0..iterations {
        cp.generation += 1;
        cp.instance = instances[i % 2].clone();
        let t = Instant::now();
        store.save(&cp).unwrap();
        journal.push(t.elapsed());
        let bytes = cp.to_json();
        let t = Instant::now();
        write_atomic(&dir.path().join("replaced.json"), &bytes, 0o600).unwrap();
        atomic.push(t.elapsed());
    }
    println!(
        "checkpoint [{}]: {} bytes; journal append: {}",
        disk.label,
        cp.to_json().len(),
        p50_p99(&mut journal)
    );
    println!(
        "checkpoint [{}]: whole-file replace:            {}",
        disk.label,
        p50_p99(&mut atomic)
    );
}

async fn cold_start() {
    let latency = Duration::from_secs(1);
    let a = SimAgent::start(
        latency,
        PoolConfig {
            min_free: 0,
            max_free: 5,
            batch_size: 10,
            ..PoolConfig::default()
        },
        Settings::default().pool_interval_secs,
    )
    .await;
    let before = a.calls();
    let t = Instant::now();
    let adds: Vec<_> = (0..40)
        .map(|i| {
            let s = a.socket.clone();
            tokio::spawn(async move { call(&s, add_req(i, 60_000)).await })
        })
        .collect();
    for add in adds {
        let r = add.await.unwrap();
        assert!(matches!(r.outcome, Outcome::Ok(_)), "{r:?}");
    }
    let elapsed = t.elapsed();
    println!(
        "cold_start: 40 pods on an empty node, attach latency {latency:?}: {:.2} s ({:.1}x the latency), {} API calls",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / latency.as_secs_f64(),
        a.calls() - before
    );
    let _ = a.stop().await;
}

async fn churn(cycles: usize) {
    let a = SimAgent::start(
        Duration::from_millis(200),
        PoolConfig {
            min_free: 5,
            max_free: 10,
            batch_size: 5,
            ip_cooldown: Duration::from_secs(1),
            ..PoolConfig::default()
        },
        Settings::default().pool_interval_secs,
    )
    .await;
    let live = 20;
    for i in 0..live {
        call(&a.socket, add_req(i, 60_000)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = a.calls();
    let t = Instant::now();
    for k in 0..cycles {
        // Replace the oldest pod with a new one.
        call(&a.socket, del_req(k)).await;
        let r = call(&a.socket, add_req(live + k, 60_000)).await;
        assert!(matches!(r.outcome, Outcome::Ok(_)), "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = a.calls() - before;
    println!(
        "churn: {cycles} pod replacements (20 live pods) in {:.1} s: {calls} API calls = {:.3} per pod",
        t.elapsed().as_secs_f64(),
        calls as f64 / cycles as f64
    );
    let _ = a.stop().await;
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Positional arguments select sections (`add_path`, `cold_start`, `churn`).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| only.is_empty() || only.iter().any(|o| section.contains(o.as_str()));
    rt.block_on(async {
        if run("add_path") {
            for disk in state_disks() {
                add_path(if quick { 50 } else { 2000 }, &disk).await;
            }
        }
        if run("cold_start") {
            cold_start().await;
        }
        if run("churn") {
            churn(if quick { 20 } else { 200 }).await;
        }
    });
}
