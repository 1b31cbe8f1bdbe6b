//! `ctr run --cni`: containerd's own client as a second CNI client of hostnic.
//! It passes no Kubernetes arguments, a `/proc/<pid>/ns/net` netns and
//! `CNI_CONTAINERID=<namespace>-<id>`, and reads its configuration from
//! `/etc/cni/net.d` and its plugins from `/opt/cni/bin` only. Those host paths
//! are never written: `ctr` runs in a private mount namespace where overlays
//! on `/etc` and `/opt` (upper layers on a tmpfs) hold the node's conflist and
//! the plugins; the host's paths are checked before and after.

use std::process::Command;
use std::time::{Duration, Instant};

use hostnic_e2e::{CriLab, REFERENCE_PLUGINS, containerd::K8S_NAMESPACE, images};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network namespaces, a private containerd, a private mount namespace"]
async fn ctr_run_with_cni_gets_a_vpc_address_and_releases_it_on_exit() {
    let lab = CriLab::up("ctr", 1).await.unwrap();
    let node = lab.node("node1");
    let entry = lab.lab.node("node1");
    let scratch = lab.lab.dir.join("ctr");
    std::fs::create_dir_all(&scratch).unwrap();
    // The recording shim of containerd's bin_dir is what ctr finds as /opt/cni/bin/hostnic.
    let shim = node.containerd.cni.bin_dir.join("hostnic");
    let id = "ctr-1";
    let script = format!(
        r#"set -e
mount -t tmpfs hostnic-e2e-ctr {s}
mkdir -p {s}/etc/upper {s}/etc/work {s}/opt/upper {s}/opt/work
mount -t overlay overlay -o lowerdir=/etc,upperdir={s}/etc/upper,workdir={s}/etc/work /etc
mount -t overlay overlay -o lowerdir=/opt,upperdir={s}/opt/upper,workdir={s}/opt/work /opt
mkdir -p /etc/cni/net.d /opt/cni/bin
# ctr takes the first file: only the node's conflist (whiteouts, in this namespace only).
rm -rf /etc/cni/net.d/* /opt/cni/bin/*
cp {conflist} /etc/cni/net.d/10-hostnic.conflist
ln -s {shim} /opt/cni/bin/hostnic
ln -s {refs}/loopback /opt/cni/bin/loopback
ln -s {refs}/portmap /opt/cni/bin/portmap
exec ctr -a {sock} -n {ns} run --rm --cni --runc-root {runc} --cgroup {cgroup}/{id} {image} {id} \
    sh -c 'ip -4 -o addr show eth0 && ping -c 1 -W 2 {client}'
"#,
        s = scratch.display(),
        conflist = entry.conflist.display(),
        shim = shim.display(),
        refs = REFERENCE_PLUGINS,
        sock = node.containerd.socket().display(),
        ns = K8S_NAMESPACE,
        runc = node.containerd.runc_root().display(),
        cgroup = node.containerd.cgroup_parent,
        image = images::BUSYBOX,
        client = lab.lab.file.client.ip,
    );
    // On the node (its network namespace, as a runtime there), in a mount
    // namespace of its own whose mounts die with it.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", entry.netns.display()))
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ctr run --cni:\n{stdout}{stderr}");
    assert!(out.status.success(), "ctr run failed: {}", out.status);
    let ip = stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        ip.starts_with("172.16.1.") && ip.ends_with("/32"),
        "no VPC address on eth0: {stdout}"
    );
    assert!(
        stdout.contains("1 packets received"),
        "the container did not reach the VPC client: {stdout}"
    );

    // What ctr passed: its own container id, a /proc netns, no Kubernetes args;
    // and the DEL on exit, with no netns, succeeded.
    let calls = node.calls_for(&format!("{K8S_NAMESPACE}-{id}"));
    let add = calls
        .iter()
        .find(|c| c.command == "ADD")
        .expect("ctr's ADD");
    assert_eq!(add.exit_code, Some(0), "{add:#?}");
    assert!(
        add.netns.starts_with("/proc/") && add.netns.ends_with("/ns/net"),
        "{add:#?}"
    );
    assert!(!add.args.contains_key("K8S_POD_NAME"), "{add:#?}");
    assert_eq!(add.ip().map(|a| format!("{a}/32")), Some(ip.clone()));
    let dels: Vec<_> = calls.iter().filter(|c| c.command == "DEL").collect();
    assert!(!dels.is_empty(), "ctr sent no DEL on exit: {calls:#?}");
    assert!(dels.iter().all(|d| d.exit_code == Some(0)), "{dels:#?}");
    let start = Instant::now();
    while !lab.lab.agent_pods("node1").await.unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent keeps ctr's container"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing of the overlays is visible outside the private mount namespace.
    assert!(
        !std::path::Path::new("/etc/cni").exists()
            || std::fs::read_dir("/etc/cni/net.d").is_ok_and(
                |mut d| d.all(|e| e.is_ok_and(|e| e.file_name() != "10-hostnic.conflist"))
            )
    );

    lab.finish().await.unwrap();
}
