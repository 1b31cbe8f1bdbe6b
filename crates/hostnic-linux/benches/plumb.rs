//! Pod plumb + unplumb in real network namespaces, side by side with Debian's
//! reference CNI plugins `ptp` + `host-local` driven the same way, in one run.
//!
//! Run (root): `cargo bench -p hostnic-linux --bench plumb` (or
//! `scripts/bench-datapath.sh`). Iterations: `HOSTNIC_BENCH_ITERS` (default 50).
//! With `HOSTNIC_BENCH_ENFORCE=1` the process fails when a target is missed:
//! hostnic ADD median ≤ 6 ms and ≤ 0.35 × the reference ADD median.
//!
//! Each iteration creates a fresh sandbox namespace (not timed), times hostnic's
//! ADD and DEL, then does the same for the reference plugin in another fresh
//! sandbox (alternating, so drift affects both alike). Both work against the same
//! "node" namespace; the machine's own namespace is never touched.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hostnic_core::ports::HostNetwork;
use hostnic_core::types::{NicId, NicPlumbing, PodKey, PodPlumbing};
use hostnic_linux::{LinuxHost, LinuxHostConfig, NetNs};
use hostnic_testkit::netns::{Namespaces, ip};

const PTP: &str = "/usr/lib/cni/ptp";
const NIC_MAC: &str = "52:54:00:bb:00:01";

fn median_and_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9) / 10]))
}

/// Runs the reference plugin from a thread inside `node`, so its host side lands there.
fn run_ptp(node: &NetNs, command: &str, netns: &str, container: &str, conf: &str) -> Duration {
    let (command, netns, container, conf) = (
        command.to_string(),
        netns.to_string(),
        container.to_string(),
        conf.to_string(),
    );
    node.run_blocking(move || {
        let start = Instant::now();
        let mut child = Command::new(PTP)
            .env("CNI_COMMAND", &command)
            .env("CNI_CONTAINERID", &container)
            .env("CNI_NETNS", &netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ptp");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "ptp {command}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    })
    .expect("enter node namespace")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED plumb benchmark: needs root (real network namespaces)");
        return;
    }
    let reference = Path::new(PTP).exists();
    if !reference {
        println!(
            "NOTE: {PTP} missing (apt-get install -y containernetworking-plugins): reference skipped"
        );
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then
    // only a two-iteration smoke run proves the benchmark still works.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("HOSTNIC_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| benchmarking)
        .unwrap_or(if benchmarking { 50 } else { 2 });
    let tag = format!("hnb-{}", std::process::id());
    let mut namespaces = Namespaces::new(&tag);
    let node_name = format!("{tag}-node");
    let node = NetNs::create_named(&node_name).expect("node namespace");
    namespaces.adopt(&node_name.clone());
    let vpc_name = format!("{tag}-vpc");
    NetNs::create_named(&vpc_name).expect("vpc namespace");
    namespaces.adopt(&vpc_name.clone());
    ip(&[
        "-n", &node_name, "link", "add", "eth1", "address", NIC_MAC, "type", "veth", "peer",
        "name", "vnic1", "netns", &vpc_name,
    ]);

    let host = LinuxHost::new(LinuxHostConfig {
        host_netns: Some(format!("/run/netns/{node_name}").into()),
        ..Default::default()
    })
    .await
    .expect("LinuxHost");
    let nic = NicPlumbing {
        nic: NicId::new(NIC_MAC).unwrap(),
        ip: Ipv4Addr::new(172, 20, 1, 5),
        cidr: "172.20.1.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(172, 20, 1, 1),
        table: 1001,
    };
    host.prepare_nic(&nic).await.expect("prepare NIC");
    let data_dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"0.4.0","name":"bench","type":"ptp","ipMasq":false,"mtu":1500,
            "ipam":{{"type":"host-local","subnet":"10.250.0.0/16","dataDir":"{}"}}}}"#,
        data_dir.path().display()
    );

    let (mut add, mut del, mut ref_add, mut ref_del) = (vec![], vec![], vec![], vec![]);
    for i in 0..iters {
        let pod_name = format!("{tag}-p{i}");
        NetNs::create_named(&pod_name).expect("pod namespace");
        namespaces.adopt(&pod_name.clone());
        let request = PodPlumbing {
            pod: PodKey {
                namespace: "bench".into(),
                name: format!("pod-{i}"),
                container_id: format!("c{i}"),
                ifname: "eth0".into(),
            },
            netns: format!("/run/netns/{pod_name}"),
            nic: NicPlumbing {
                ip: Ipv4Addr::new(172, 20, 1, 10 + (i % 200) as u8),
                ..nic.clone()
            },
        };
        let start = Instant::now();
        let plumbed = host.plumb_pod(&request).await.expect("plumb");
        add.push(start.elapsed());
        let start = Instant::now();
        host.unplumb_pod(&plumbed, Some(&request.netns))
            .await
            .expect("unplumb");
        del.push(start.elapsed());
        let _ = NetNs::delete_named(&pod_name);

        if reference {
            let ref_name = format!("{tag}-r{i}");
            NetNs::create_named(&ref_name).expect("reference pod namespace");
            namespaces.adopt(&ref_name.clone());
            let path = format!("/run/netns/{ref_name}");
            let container = format!("ref{i}");
            ref_add.push(run_ptp(&node, "ADD", &path, &container, &conf));
            ref_del.push(run_ptp(&node, "DEL", &path, &container, &conf));
            let _ = NetNs::delete_named(&ref_name);
        }
    }

    let (add_med, add_p90) = median_and_p90(add);
    let (del_med, del_p90) = median_and_p90(del);
    println!("plumb benchmark, {iters} iterations, real namespaces (times in ms)");
    println!("{:<28} {:>8} {:>8}", "", "median", "p90");
    println!(
        "{:<28} {add_med:>8.2} {add_p90:>8.2}",
        "hostnic ADD (plumb_pod)"
    );
    println!(
        "{:<28} {del_med:>8.2} {del_p90:>8.2}",
        "hostnic DEL (unplumb_pod)"
    );
    let mut ok = add_med <= 6.0;
    if reference {
        let (ra_med, ra_p90) = median_and_p90(ref_add);
        let (rd_med, rd_p90) = median_and_p90(ref_del);
        println!("{:<28} {ra_med:>8.2} {ra_p90:>8.2}", "ptp+host-local ADD");
        println!("{:<28} {rd_med:>8.2} {rd_p90:>8.2}", "ptp+host-local DEL");
        let ratio = add_med / ra_med;
        println!("ADD ratio hostnic/ptp: {ratio:.2} (target ≤ 0.35)");
        ok &= ratio <= 0.35;
    }
    println!(
        "target hostnic ADD median ≤ 6 ms{}: {}",
        if reference { " and ≤ 0.35× ptp" } else { "" },
        if ok { "MET" } else { "MISSED" }
    );
    drop(namespaces);
    if benchmarking && !ok && std::env::var("HOSTNIC_BENCH_ENFORCE").as_deref() == Ok("1") {
        std::process::exit(1);
    }
}
