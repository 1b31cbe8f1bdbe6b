//! A real runtime as the client: podman 4.3 (CNI backend) runs a container on
//! a hostnic network. The agent is a test double that plumbs for real with
//! `ip`: the pod's veth end goes into podman's netns with the pod IP and the
//! default route via 169.254.1.1; the host end lives in a namespace this test
//! creates, never in the machine's root namespace. The container must see its
//! IP and default route, and podman's teardown must reach the agent as DEL.
//!
//! Needs root, podman, runc and busybox-static (Debian packages); storage,
//! run state and config all live in a temporary directory.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use hostnic_core::api::{
    AddReply, AgentError, DelReply, HEADER_LEN, HostInterface, POD_GATEWAY, Reply, Request,
    RequestBody, Response, Route, SandboxInterface, codes, decode_frame, encode_frame, frame_len,
};
use hostnic_core::types::NicId;
use hostnic_testkit::netns::{Namespaces, try_ip as ip};

const POD_IP: &str = "172.16.1.5";

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mac_of(ns: &str, dev: &str) -> Result<String, String> {
    let out = ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .ok_or("no address".into())
}

/// The agent double: plumbs ADD with `ip`, undoes it on DEL.
fn serve(listener: UnixListener, host_ns: String, seen: Arc<Mutex<Vec<Request>>>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut header = [0u8; HEADER_LEN];
        if conn.read_exact(&mut header).is_err() {
            continue;
        }
        let Ok(len) = frame_len(header) else { continue };
        let mut frame = header.to_vec();
        frame.resize(HEADER_LEN + len, 0);
        if conn.read_exact(&mut frame[HEADER_LEN..]).is_err() {
            continue;
        }
        let response = match decode_frame::<Request>(&frame) {
            Ok((request, _)) => {
                seen.lock().unwrap().push(request.clone());
                answer(&request, &host_ns)
            }
            Err(e) => Response::error(AgentError::new(
                codes::DECODE_FAILED,
                "bad request",
                e.to_string(),
            )),
        };
        let _ = conn.write_all(&encode_frame(&response).unwrap());
    }
}

fn host_veth(container_id: &str) -> String {
    format!("hnt{}", &container_id[..container_id.len().min(12)])
}

fn answer(request: &Request, host_ns: &str) -> Response {
    let fail = |m: String| Response::error(AgentError::new(codes::INTERNAL, "plumbing failed", m));
    match &request.body {
        RequestBody::Add(add) => {
            let pod_ns = Path::new(&add.netns)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let host = host_veth(&add.pod.container_id);
            let ifname = add.pod.ifname.as_str();
            let plumb = || -> Result<AddReply, String> {
                ip(&[
                    "-n", host_ns, "link", "add", &host, "type", "veth", "peer", "name", ifname,
                    "netns", &pod_ns,
                ])?;
                ip(&["-n", host_ns, "link", "set", &host, "up"])?;
                ip(&[
                    "-n",
                    &pod_ns,
                    "addr",
                    "add",
                    &format!("{POD_IP}/32"),
                    "dev",
                    ifname,
                ])?;
                ip(&["-n", &pod_ns, "link", "set", ifname, "up"])?;
                ip(&[
                    "-n",
                    &pod_ns,
                    "route",
                    "add",
                    "169.254.1.1",
                    "dev",
                    ifname,
                    "scope",
                    "link",
                ])?;
                ip(&[
                    "-n",
                    &pod_ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.1.1",
                    "dev",
                    ifname,
                ])?;
                Ok(AddReply {
                    host: HostInterface {
                        name: host.clone(),
                        mac: mac_of(host_ns, &host)?
                            .parse()
                            .map_err(|e| format!("{e}"))?,
                    },
                    sandbox: SandboxInterface {
                        name: ifname.to_string(),
                        mac: mac_of(&pod_ns, ifname)?
                            .parse()
                            .map_err(|e| format!("{e}"))?,
                        netns: add.netns.clone(),
                    },
                    ip: format!("{POD_IP}/32").parse().unwrap(),
                    gateway: POD_GATEWAY,
                    routes: vec![Route {
                        dst: "0.0.0.0/0".parse().unwrap(),
                        gw: Some(POD_GATEWAY),
                    }],
                    mtu: None,
                    dns: None,
                    nic: NicId::new("52:54:9e:00:00:05").unwrap(),
                    table: 260,
                })
            };
            match plumb() {
                Ok(reply) => Response::ok(Reply::Add(reply)),
                Err(e) => fail(e),
            }
        }
        RequestBody::Del(del) => {
            let released = ip(&[
                "-n",
                host_ns,
                "link",
                "del",
                &host_veth(&del.pod.container_id),
            ])
            .is_ok();
            Response::ok(Reply::Del(DelReply { released }))
        }
        other => Response::error(AgentError::new(
            codes::INTERNAL,
            "not implemented by the test agent",
            format!("{:?}", other.verb()),
        )),
    }
}

#[test]
#[ignore = "needs root, podman, runc and busybox-static: cargo test -- --include-ignored"]
fn podman_container_sees_its_ip_and_default_route() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = std::process::id();
    let network = format!("hostnic-e2e-{id}");
    let host_ns = format!("hnt-host-{id}");
    sh(Command::new("ip").args(["netns", "add", &host_ns]));
    // Deleted even when an assertion fails.
    let mut guard = Namespaces::new("unused");
    guard.adopt(&host_ns);

    // The agent double.
    let socket = d.join("agent.sock");
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let listener = UnixListener::bind(&socket).unwrap();
        let (host_ns, seen) = (host_ns.clone(), seen.clone());
        std::thread::spawn(move || serve(listener, host_ns, seen));
    }

    // Plugin dir with only hostnic, a conflist, containers.conf.
    let plugins = d.join("plugins");
    let netdir = d.join("net.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&netdir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hostnic"), plugins.join("hostnic")).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{"type": "hostnic", "agentSocket": socket, "stateDir": d.join("state"),
                     "logFile": d.join("hostnic.log"), "logLevel": "debug"}]
    });
    std::fs::write(
        netdir.join(format!("{network}.conflist")),
        conflist.to_string(),
    )
    .unwrap();
    let conf = d.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\ncni_plugin_dirs = [\"{}\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            netdir.display(),
            plugins.display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd
    };

    // A busybox image from the local busybox-static, no registry.
    let rootfs = d.join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).expect("busybox-static is installed");
    for tool in ["sh", "ip", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(tool)).unwrap();
    }
    let tar = d.join("bb.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(d.join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let image = format!("localhost/hostnic-e2e-bb-{id}:latest");
    sh(&mut podman(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        tar.to_str().unwrap(),
        &image,
    ]));

    let out = sh(&mut podman(&[
        "run",
        "--rm",
        "--network",
        &network,
        &image,
        "sh",
        "-c",
        "ip -4 addr show eth0; echo ---; ip route",
    ]));
    let seen_by_container = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("the container sees:\n{seen_by_container}");
    let _ = podman(&["rmi", "-f", &image]).output();
    let log = std::fs::read_to_string(d.join("hostnic.log")).unwrap_or_default();

    assert!(
        seen_by_container.contains(&format!("inet {POD_IP}/32")),
        "the container does not see its IP:\n{seen_by_container}\nplugin log:\n{log}"
    );
    assert!(
        seen_by_container.contains("default via 169.254.1.1 dev eth0"),
        "the container has no default route via the pod gateway:\n{seen_by_container}"
    );

    let seen = seen.lock().unwrap();
    let verbs: Vec<_> = seen.iter().map(|r| r.body.verb().to_string()).collect();
    assert_eq!(verbs.first().map(String::as_str), Some("ADD"), "{verbs:?}");
    assert!(
        verbs.iter().any(|v| v == "DEL"),
        "podman's teardown never reached the agent: {verbs:?}"
    );
    let RequestBody::Add(add) = &seen[0].body else {
        unreachable!()
    };
    // What the shared notes say podman sends.
    assert_eq!(add.cni_version, "1.0.0");
    assert!(add.netns.starts_with("/run/netns/"), "{}", add.netns);
    assert!(add.pod.namespace.is_empty());
    assert!(!add.pod.name.is_empty(), "podman passes K8S_POD_NAME");
    // The host end of the veth is gone again.
    let links = sh(Command::new("ip").args(["-n", &host_ns, "-o", "link"]));
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("hnt"), "host veth left behind: {links}");
}
