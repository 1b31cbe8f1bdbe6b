//! Root, issue 20's faults on a one-node VPC: the agent BINARY against the
//! QingCloud simulator, whose attach hook plugs each NIC into a fabric of network
//! namespaces (`hostnic_linux::lab`: a router with the vxnet gateways, the node, a
//! VPC client), five pods on the node talking to each other and to the client
//! through their own NICs.
//!
//! - The checkpoint damaged or lost between two runs (one flipped bit in the
//!   journal's first record, the journal full of random bytes, the state directory
//!   deleted, `state.json` cut in half): every pod keeps talking, the next pod gets
//!   an address none of them holds, the agent logs an ERROR and counts it, and the
//!   damaged files are kept aside.
//! - The state directory on a 64 KiB volume: the agent starts and serves.
//! - The state volume full with the journal full: ADD and DEL go on (the journal
//!   goes round), a restart on the full disk serves.
//! - The state volume too small for a journal, then full: ADD fails with an error
//!   that names the disk and `/readyz` says why, DEL succeeds, a restart on the full
//!   disk serves, and once room is made everything works again.
//!
//! A small volume is a tmpfs mounted in a private mount namespace (held by an
//! `unshare` process); the agent runs in it through `nsenter`, and the test reaches
//! the volume through `/proc/<holder>/root`. Nothing touches the machine's mounts.
//! `HOSTNIC_AGENT_BIN` selects another agent binary.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{INSTANCE, http_get, status_req, try_call};
use hostnic_core::api::{AddRequest, DelRequest, Outcome, Reply, RequestBody};
use hostnic_core::types::PodKey;
use hostnic_linux::NetNs;
use hostnic_linux::lab::probe::{PeerServer, tcp_peer};
use hostnic_linux::lab::{Fabric, fabric};
use hostnic_qingcloud::sim::{InstanceSpec, SimConfig, SimHandle, Topology};
use hostnic_testkit::netns::ip;
use hostnic_testkit::process::AgentFiles;
use hostnic_testkit::vpc::Vpc;

const ROOT: &str = "needs root: cargo test -- --include-ignored";
const CLIENT_INSTANCE: &str = "i-simclient";

/// A private mount namespace with a tmpfs of a given size on the state directory,
/// held by an `unshare … sleep` process (killed on drop, which ends the namespace
/// and the tmpfs once no agent runs in it).
struct Volume {
    holder: Child,
    dir: PathBuf,
}

impl Volume {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0700 hostnic-test {} && echo mounted && exec sleep 3600",
            dir.display()
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "mounted",
            "tmpfs of {size} on {}",
            dir.display()
        );
        Self {
            holder,
            dir: dir.to_path_buf(),
        }
    }

    /// `path` (under the volume) as the test process reaches it.
    fn path(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.holder.id(), path.display()))
    }

    /// Fills the volume to the last byte with a file `fill`.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.path(&self.dir.join("fill"))).unwrap();
        let chunk = vec![0x55u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        for _ in 0..4096 {
            if file.write_all(&[0x55]).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
    }

    /// Makes room again.
    fn unfill(&self) {
        std::fs::remove_file(self.path(&self.dir.join("fill"))).unwrap();
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The VPC, the simulator, the agent and its files. Drop order: agent, volume,
/// simulator, then every namespace with the lab's prefix.
struct Lab {
    agent: Option<Child>,
    volume: Option<Volume>,
    sim: Option<SimHandle>,
    fabric: Fabric,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state_dir: PathBuf,
    metrics_addr: std::net::SocketAddr,
    log: PathBuf,
    config: PathBuf,
    credentials: PathBuf,
    client_ip: Ipv4Addr,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill9();
        drop(self.volume.take());
        drop(self.sim.take());
        for name in fabric::lab_namespaces(self.fabric.prefix()) {
            let _ = NetNs::delete_named(&name);
        }
    }
}

impl Lab {
    /// The lab; with `volume`, the state directory is a tmpfs of that size.
    async fn up(volume: Option<&str>) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("hl-rec{:x}x{n}-", std::process::id());
        let topology = Topology {
            instances: vec![
                InstanceSpec {
                    id: INSTANCE.into(),
                    vxnet: "vxnet-sim1".into(),
                },
                InstanceSpec {
                    id: CLIENT_INSTANCE.into(),
                    vxnet: "vxnet-sim2".into(),
                },
            ],
            ..Topology::default()
        };
        let hosts: BTreeMap<String, String> = [
            (INSTANCE.to_string(), "node".to_string()),
            (CLIENT_INSTANCE.to_string(), "client".to_string()),
        ]
        .into();
        let mut config = SimConfig::new("AKIDREC", "recovery-secret");
        config.topology = topology;
        config.attach_latency = Duration::from_millis(200);
        config.job_latency = Duration::from_millis(50);
        let Vpc { fabric, sim, .. } =
            match Vpc::build(&prefix, "198.51.100.0/24".parse().unwrap(), config, hosts).await {
                Ok(vpc) => vpc,
                Err(e) => {
                    for name in fabric::lab_namespaces(&prefix) {
                        let _ = NetNs::delete_named(&name);
                    }
                    panic!("{e}");
                }
            };
        let client_ip = hostnic_testkit::vpc::primary_nic(&sim.state(), CLIENT_INSTANCE)
            .expect("client primary NIC")
            .1;
        let dir = tempfile::tempdir().unwrap();
        let node = fabric.netns_name("node");
        let files = AgentFiles::write(
            dir.path(),
            &sim,
            ("AKIDREC", "recovery-secret"),
            &node,
            "  min_free: 2\n  max_free: 4\n  batch_size: 4\n  ip_cooldown: 0\n  min_lifetime: 0\n  backoff_base: 0.2\n  backoff_max: 2\n",
            30,
        );
        // The sandboxes before the volume: its mount namespace sees their binds.
        for i in 0..8 {
            let name = fabric.netns_name(&format!("p{i}"));
            NetNs::create_named(&name).expect("create sandbox namespace");
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        let volume = volume.map(|size| Volume::mount(&files.state_dir, size));
        Lab {
            agent: None,
            volume,
            sim: Some(sim),
            fabric,
            socket: files.socket,
            state_dir: files.state_dir,
            metrics_addr: files.metrics_addr,
            log: dir.path().join("agent.log"),
            config: files.config,
            credentials: files.credentials,
            _dir: dir,
            client_ip,
        }
    }

    /// Starts the agent (in the volume's mount namespace when there is one) and
    /// waits until it serves.
    async fn start(&mut self) {
        let binary = std::env::var_os("HOSTNIC_AGENT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hostnic-agent")));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.volume {
            Some(v) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &v.holder.id().to_string(), "-m", "--"])
                    .arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let child = cmd
            .args(["--cloud", "qingcloud", "--instance-id", INSTANCE])
            .args(["--pods", "none"])
            .arg("--config")
            .arg(&self.config)
            .arg("--credentials")
            .arg(&self.credentials)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hostnic-agent");
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while try_call(&self.socket, status_req()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "agent not serving after 30 s; log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn netns(&self, i: usize) -> PathBuf {
        self.fabric.netns_path(&format!("p{i}"))
    }

    /// A file of the state directory, as the test reaches it.
    fn state_file(&self, name: &str) -> PathBuf {
        let path = self.state_dir.join(name);
        match &self.volume {
            Some(v) => v.path(&path),
            None => path,
        }
    }

    fn state_files(&self) -> Vec<String> {
        let dir = self.state_file("");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// ADD of pod `i`: its address, or the error's code, message and details.
    async fn add(&self, i: usize) -> Result<Ipv4Addr, (u32, String)> {
        let body = RequestBody::Add(AddRequest {
            pod: pod_key(i),
            pod_uid: None,
            netns: self.netns(i).display().to_string(),
            network: "hostnic".into(),
            cni_version: "1.1.0".into(),
            veth_prefix: None,
            mtu: None,
            runtime_config: None,
            timeout_ms: 20_000,
        });
        let r = try_call(&self.socket, body)
            .await
            .expect("the agent answers");
        match r.outcome {
            Outcome::Ok(Reply::Add(a)) => Ok(a.ip.addr()),
            Outcome::Error(e) => Err((e.code, format!("{}: {}", e.msg, e.details))),
            other => panic!("ADD answered {other:?}"),
        }
    }

    async fn del(&self, i: usize) -> Result<(), (u32, String)> {
        let body = RequestBody::Del(DelRequest {
            pod: pod_key(i),
            netns: Some(self.netns(i).display().to_string()),
            network: "hostnic".into(),
            cni_version: "1.1.0".into(),
            prev_result: None,
            timeout_ms: 20_000,
        });
        let r = try_call(&self.socket, body)
            .await
            .expect("the agent answers");
        match r.outcome {
            Outcome::Ok(_) => Ok(()),
            Outcome::Error(e) => Err((e.code, format!("{}: {}", e.msg, e.details))),
        }
    }

    /// The value of a counter line on `/metrics` that starts with `series`.
    async fn metric(&self, series: &str) -> u64 {
        let (_, body) = http_get(self.metrics_addr, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// TCP: each pod to the VPC client through its own NIC (the client sees the
    /// pod's address), the client back to each pod, each pod to the next one.
    /// Returns the cells that worked and the number tried.
    async fn talk(&self, pods: &BTreeMap<usize, Ipv4Addr>) -> (usize, usize, Vec<String>) {
        let client = self.fabric.netns_path("client");
        let ring: Vec<(usize, Ipv4Addr)> = pods.iter().map(|(i, ip)| (*i, *ip)).collect();
        let (mut ok, mut tried, mut failed) = (0, 0, Vec::new());
        for (k, &(i, ip)) in ring.iter().enumerate() {
            let (j, ip_j) = ring[(k + 1) % ring.len()];
            let mut cells = vec![
                (
                    self.netns(i),
                    client.clone(),
                    self.client_ip,
                    ip,
                    format!("p{i} → client"),
                ),
                (
                    client.clone(),
                    self.netns(i),
                    ip,
                    self.client_ip,
                    format!("client → p{i}"),
                ),
            ];
            if j != i {
                cells.push((
                    self.netns(i),
                    self.netns(j),
                    ip_j,
                    ip,
                    format!("p{i} → p{j}"),
                ));
            }
            for (n, (from, to, dst, src, what)) in cells.into_iter().enumerate() {
                tried += 1;
                let port = 7100 + (k * 3 + n) as u16;
                match tcp(&from, &to, dst, port).await {
                    Ok(seen) if seen == src => ok += 1,
                    Ok(seen) => failed.push(format!("{what}: seen from {seen}")),
                    Err(e) => failed.push(format!("{what}: {e}")),
                }
            }
        }
        (ok, tried, failed)
    }
}

fn pod_key(i: usize) -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: format!("p{i}"),
        container_id: format!("rec{i:04}"),
        ifname: "eth0".into(),
    }
}

/// TCP from `from` to a server in `to` at `dst`: the source address the server saw.
async fn tcp(from: &Path, to: &Path, dst: Ipv4Addr, port: u16) -> Result<Ipv4Addr, String> {
    let server = PeerServer::start(to, port).map_err(|e| e.to_string())?;
    let from = from.to_path_buf();
    let seen =
        tokio::task::spawn_blocking(move || tcp_peer(&from, dst, port, Duration::from_secs(3)))
            .await
            .unwrap();
    drop(server);
    seen.map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipFirstRecord,
    RandomJournal,
    DeleteStateDir,
    HalfSnapshot,
}

impl Damage {
    fn apply(self, lab: &Lab) {
        let journal = lab.state_file("state.journal");
        match self {
            Damage::FlipFirstRecord => {
                let mut bytes = std::fs::read(&journal).unwrap();
                assert_eq!(&bytes[..4], b"HNJ1", "a record at the journal's start");
                bytes[40] ^= 0x01;
                std::fs::write(&journal, bytes).unwrap();
            }
            Damage::RandomJournal => {
                let len = std::fs::metadata(&journal).unwrap().len() as usize;
                let mut x = u64::from(std::process::id()) | 1;
                let noise: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                std::fs::write(&journal, noise).unwrap();
            }
            Damage::DeleteStateDir => std::fs::remove_dir_all(lab.state_file("")).unwrap(),
            Damage::HalfSnapshot => {
                let path = lab.state_file("state.json");
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Damage::FlipFirstRecord | Damage::RandomJournal => "corrupt",
            Damage::DeleteStateDir => "missing",
            Damage::HalfSnapshot => "torn",
        }
    }

    fn kept(self) -> Option<&'static str> {
        match self {
            Damage::FlipFirstRecord | Damage::RandomJournal => Some("state.journal.corrupt-"),
            Damage::DeleteStateDir => None,
            Damage::HalfSnapshot => Some("state.json.torn-"),
        }
    }
}

/// Five pods up; for each damage: churn (the journal holds records after its first),
/// `kill -9`, damage, restart. Every pod keeps talking, the next pod gets an address
/// none of them holds, the agent logs an ERROR, counts it, and keeps the damaged
/// file aside. At the end, DEL of the five leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_damaged_or_lost_checkpoint_keeps_every_pod_talking_and_gives_no_address_twice() {
    let _ = ROOT;
    let mut lab = Lab::up(None).await;
    lab.start().await;
    let mut pods = BTreeMap::new();
    for i in 0..5 {
        let ip = lab
            .add(i)
            .await
            .unwrap_or_else(|e| panic!("ADD p{i}: {e:?}"));
        pods.insert(i, ip);
    }
    let (ok, tried, failed) = lab.talk(&pods).await;
    assert_eq!(ok, tried, "before any damage: {failed:?}");
    for damage in [
        Damage::FlipFirstRecord,
        Damage::RandomJournal,
        Damage::DeleteStateDir,
        Damage::HalfSnapshot,
    ] {
        for _ in 0..3 {
            lab.add(7).await.expect("churn ADD");
            lab.del(7).await.expect("churn DEL");
        }
        lab.kill9();
        damage.apply(&lab);
        lab.start().await;
        let (ok, tried, failed) = lab.talk(&pods).await;
        eprintln!("{damage:?}: {ok}/{tried} connectivity cells after the restart");
        assert_eq!(
            ok,
            tried,
            "{damage:?}: pods cut off: {failed:?}; log:\n{}",
            lab.agent_log()
        );
        let series = format!(
            "hostnic_checkpoint_recovered_total{{reason=\"{}\"}}",
            damage.reason()
        );
        assert_eq!(lab.metric(&series).await, 1, "{damage:?}: {series}");
        let log = lab.agent_log();
        let errors = log
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("rebuilt from the host"))
            .count();
        assert!(errors >= 1, "{damage:?}: no ERROR line in the log:\n{log}");
        if let Some(kept) = damage.kept() {
            let names = lab.state_files();
            assert!(
                names.iter().any(|n| n.starts_with(kept)),
                "{damage:?}: damaged file not kept aside: {names:?}"
            );
        }
        let ip = lab.add(5).await.expect("ADD of a new pod");
        assert!(
            !pods.values().any(|p| *p == ip),
            "{damage:?}: {ip} given to p5 while a live pod holds it"
        );
        lab.del(5).await.expect("DEL p5");
    }
    for i in 0..5 {
        lab.del(i)
            .await
            .unwrap_or_else(|e| panic!("DEL p{i}: {e:?}"));
    }
    let node = lab.fabric.netns_name("node");
    let host = hostnic_linux::LinuxHost::new(hostnic_linux::LinuxHostConfig {
        host_netns: Some(PathBuf::from(format!("/run/netns/{node}"))),
        ..hostnic_linux::LinuxHostConfig::default()
    })
    .await
    .unwrap();
    let inventory = host.inventory_now().await.unwrap();
    assert!(inventory.pods.is_empty(), "{:?}", inventory.pods);
    assert!(host.orphan_rule_addresses().await.unwrap().is_empty());
}

/// A 64 KiB state volume: the journal takes what fits, the agent starts, serves,
/// and survives a restart with its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_64_kib_state_volume_is_enough_to_start_and_serve() {
    let mut lab = Lab::up(Some("64k")).await;
    lab.start().await;
    let mut pods = BTreeMap::new();
    for i in 0..3 {
        pods.insert(
            i,
            lab.add(i)
                .await
                .unwrap_or_else(|e| panic!("ADD p{i}: {e:?}")),
        );
    }
    let (_, ready) = http_get(lab.metrics_addr, "/readyz").await;
    assert_eq!(ready.trim(), "ready");
    lab.kill9();
    lab.start().await;
    let (ok, tried, failed) = lab.talk(&pods).await;
    assert_eq!(ok, tried, "{failed:?}");
    eprintln!("64 KiB volume: files {:?}", lab.state_files());
    for i in 0..3 {
        lab.del(i)
            .await
            .unwrap_or_else(|e| panic!("DEL p{i}: {e:?}"));
    }
}

/// A full state volume with the journal full: pods keep coming and going (the
/// journal goes round when there is no room for a snapshot), a restart on the
/// full disk serves, and every pod keeps talking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_full_state_volume_stops_neither_add_nor_del_while_the_journal_exists() {
    let mut lab = Lab::up(Some("6m")).await;
    lab.start().await;
    // Six pods make every record a few KiB: the journal fills in a few hundred rounds.
    let mut pods = BTreeMap::new();
    for i in 0..6 {
        pods.insert(
            i,
            lab.add(i)
                .await
                .unwrap_or_else(|e| panic!("ADD p{i}: {e:?}")),
        );
    }
    lab.volume.as_ref().unwrap().fill();
    let rounds = 700;
    for round in 0..rounds {
        if let Err(e) = lab.add(7).await {
            panic!(
                "ADD failed on a full disk after {round} rounds: {e:?}; log:\n{}",
                lab.agent_log()
            );
        }
        if let Err(e) = lab.del(7).await {
            panic!(
                "DEL failed on a full disk after {round} rounds: {e:?}; log:\n{}",
                lab.agent_log()
            );
        }
    }
    assert!(
        lab.agent_log().contains("writing it round from its start"),
        "the journal never had to go round in {rounds} rounds: the test did not fill it; log:\n{}",
        lab.agent_log()
    );
    // A restart on the full disk serves, with every pod.
    lab.kill9();
    lab.start().await;
    let (status, body) = http_get(lab.metrics_addr, "/readyz").await;
    assert!(status.contains("200"), "{status}: {body}");
    let (ok, tried, failed) = lab.talk(&pods).await;
    assert_eq!(ok, tried, "{failed:?}");
    let ip = lab
        .add(6)
        .await
        .expect("ADD after a restart on a full disk");
    assert!(!pods.values().any(|p| *p == ip));
    for i in 0..7 {
        lab.del(i)
            .await
            .unwrap_or_else(|e| panic!("DEL p{i}: {e:?}"));
    }
}

/// A state volume too small for a journal, then full: the ADD that cannot be
/// recorded fails with an error naming the disk and `/readyz` says why; the DEL of
/// a live pod succeeds all the same; a restart on the full disk serves; once room
/// is made the agent is ready again and ADD works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_full_state_volume_without_a_journal_fails_add_naming_the_disk_but_never_del() {
    let mut lab = Lab::up(Some("48k")).await;
    lab.start().await;
    lab.add(0).await.expect("ADD p0");
    lab.volume.as_ref().unwrap().fill();
    let (code, message) = lab.add(1).await.expect_err("no room to record p1");
    eprintln!("full disk: ADD failed: code {code}: {message}");
    assert_eq!(code, 11, "try again later");
    assert!(
        message.contains("disk"),
        "the error names the disk: {message}"
    );
    let (status, body) = http_get(lab.metrics_addr, "/readyz").await;
    assert!(status.contains("503"), "{status} {body}");
    assert!(body.contains("disk"), "/readyz says why: {body}");
    lab.del(0).await.expect("DEL of a live pod on a full disk");
    lab.del(1).await.expect("DEL of a pod whose ADD failed");

    // A restart on the full disk serves.
    lab.kill9();
    lab.start().await;

    // Room again: ready, and ADD works.
    lab.volume.as_ref().unwrap().unfill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(lab.metrics_addr, "/readyz").await;
        if status.contains("200") {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ip = lab.add(2).await.expect("ADD with room again");
    let (ok, tried, failed) = lab.talk(&BTreeMap::from([(2, ip)])).await;
    assert_eq!(ok, tried, "{failed:?}");
    lab.del(2).await.expect("DEL p2");
}
