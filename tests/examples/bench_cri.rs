//! RunPodSandbox latency through containerd's CRI: hostnic next to the same
//! containerd build and configuration with the reference `ptp` + `host-local`,
//! in the same run, alternating, on one lab node. Run as root by
//! `scripts/bench-cri.sh [ROUNDS]` (release binaries); prints medians, p90 and
//! the ratio. A benchmark, not a test: it asserts nothing about time.

use std::time::Duration;

use hostnic_e2e::containerd::{CniDirs, Containerd};
use hostnic_e2e::cri::{Cri, PodMeta, sandbox_config};
use hostnic_e2e::{CriLab, link_reference_plugins};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(30), |s| s.parse())?;
    let lab = CriLab::up_with("bench-cri", 1, false).await?;
    // A warm pool that is never empty and reuses NICs at once, as bench-cni.sh sets it.
    lab.lab.reconfigure_agent(
        "node1",
        &[(
            "pool",
            serde_json::json!({"ip_cooldown": 0, "min_free": 10, "max_free": 20}),
        )],
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The same containerd, in the same node namespace, on a ptp + host-local conflist.
    let entry = lab.lab.node("node1").clone();
    let root = lab.lab.dir.join("cri").join("ptp");
    let conf_dir = root.join("net.d");
    std::fs::create_dir_all(&conf_dir)?;
    std::fs::write(
        conf_dir.join("10-ptp.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "ptp",
            "plugins": [
                {"type": "ptp", "ipMasq": false, "mtu": 1500,
                 "ipam": {"type": "host-local", "subnet": "10.99.0.0/16",
                          "dataDir": root.join("ipam"), "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            ]
        })
        .to_string(),
    )?;
    let bin_dir = root.join("bin");
    link_reference_plugins(&bin_dir, &["ptp", "host-local", "loopback", "portmap"])?;
    let tag = format!("bench-ptp-{}", std::process::id());
    let mut ptp = Containerd::new(
        &lab.lab.dir,
        "ptp",
        &tag,
        &entry.netns,
        CniDirs { conf_dir, bin_dir },
    )?;
    ptp.start()?;
    ptp.import_images(&lab.lab.dir.join("images"))?;
    let ptp_cri = Cri::connect(&ptp.socket()).await?;

    let node = lab.node("node1");
    let mut hostnic_times = Vec::new();
    let mut ptp_times = Vec::new();
    for i in 0..rounds {
        let meta = lab
            .create_pod_object("node1", "bench", &format!("h{i}"), &[])
            .await?;
        let config = sandbox_config(&meta, &node.containerd.cgroup_parent, &node.log_root);
        let (id, took) = node.cri().run_pod_sandbox(&config).await?;
        hostnic_times.push(took);
        node.cri().stop_pod_sandbox(&id).await?;
        node.cri().remove_pod_sandbox(&id).await?;
        lab.lab.api().delete_pod("bench", &meta.name).await?;

        let meta = PodMeta {
            namespace: "bench".into(),
            name: format!("p{i}"),
            uid: format!("ptp-{i}"),
            attempt: 0,
        };
        let config = sandbox_config(&meta, &ptp.cgroup_parent, &root.join("pods"));
        let (id, took) = ptp_cri.run_pod_sandbox(&config).await?;
        ptp_times.push(took);
        ptp_cri.stop_pod_sandbox(&id).await?;
        ptp_cri.remove_pod_sandbox(&id).await?;
    }
    hostnic_times.sort();
    ptp_times.sort();
    let (h50, p50) = (percentile(&hostnic_times, 0.5), percentile(&ptp_times, 0.5));
    println!("RunPodSandbox, {rounds} rounds alternating, same containerd 1.6, one lab node:");
    for (name, t) in [
        ("hostnic", &hostnic_times),
        ("ptp + host-local", &ptp_times),
    ] {
        println!(
            "  {name:<17} median {:7.1} ms   p90 {:7.1} ms   min {:7.1} ms   max {:7.1} ms",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.9)),
            ms(t[0]),
            ms(t[t.len() - 1])
        );
    }
    println!("  ratio of medians: {:.2}x", ms(h50) / ms(p50));

    ptp_cri.close().await;
    for f in ptp.shutdown() {
        eprintln!("ptp containerd: cleaned up by force: {f}");
    }
    lab.finish().await
}
