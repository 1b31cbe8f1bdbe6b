//! hostnic as the first plugin of a chain: its ADD result, fed as `prevResult`
//! to the reference `portmap` and `bandwidth` plugins (Debian's
//! containernetworking-plugins, which speak up to CNI 1.0.0), is accepted and
//! passed on unchanged; what they pass on is accepted back by hostnic's CHECK.
//! Neither plugin needs root when it has no port mapping or limit to apply.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Behaviour, FakeAgent};
use serde_json::{Value, json};

const IGNORE: &str = "needs Debian's containernetworking-plugins in /usr/lib/cni";

fn plugin_dir() -> PathBuf {
    std::env::var_os("CNI_PLUGIN_DIR").map_or_else(|| PathBuf::from("/usr/lib/cni"), PathBuf::from)
}

fn exec(bin: &std::path::Path, command: &str, conf: &Value) -> (i32, Value) {
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee01")
        .env("CNI_NETNS", "/var/run/netns/cni-1234")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} ({IGNORE})", bin.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not JSON ({e}): {}",
                bin.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    (out.status.code().unwrap_or(-1), stdout)
}

fn add_reply() -> Value {
    json!({"version": 1, "ok": {
        "verb": "ADD",
        "host": {"name": "hnic5d41402abc4", "mac": "ee:ee:ee:ee:ee:ee"},
        "sandbox": {"name": "eth0", "mac": "0a:58:ac:10:01:05", "netns": "/var/run/netns/cni-1234"},
        "ip": "172.16.1.5/32", "gateway": "169.254.1.1",
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {"nameservers": ["10.96.0.10"]},
        "nic": "52:54:9e:12:34:56", "table": 260}})
}

#[test]
#[ignore = "needs Debian's containernetworking-plugins in /usr/lib/cni (apt-get install containernetworking-plugins): cargo test -- --include-ignored"]
fn reference_plugins_accept_and_pass_on_the_result() {
    let hostnic = PathBuf::from(env!("CARGO_BIN_EXE_hostnic"));
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let base = json!({"cniVersion": version, "name": "hostnic-net",
            "agentSocket": socket, "stateDir": dir.path().join("state")});

        let add_agent = FakeAgent::start(&socket, Behaviour::Answer(add_reply()));
        let mut conf = base.clone();
        conf["type"] = json!("hostnic");
        let (code, result) = exec(&hostnic, "ADD", &conf);
        assert_eq!(code, 0, "hostnic ADD {version}: {result}");
        drop(add_agent);
        std::fs::remove_file(&socket).unwrap();

        let mut passed_on = result.clone();
        for plugin in ["portmap", "bandwidth"] {
            let conf = json!({"cniVersion": version, "name": "hostnic-net", "type": plugin,
                "capabilities": {"portMappings": true, "bandwidth": true},
                "prevResult": passed_on});
            let (code, out) = exec(&plugin_dir().join(plugin), "ADD", &conf);
            assert_eq!(
                code, 0,
                "{plugin} rejected hostnic's {version} result: {out}"
            );
            for key in ["cniVersion", "interfaces", "ips", "routes", "dns"] {
                assert_eq!(out[key], result[key], "{plugin} {version} changed {key}");
            }
            passed_on = out;
        }

        if version >= "0.4.0" {
            let check_agent = FakeAgent::start(
                &socket,
                Behaviour::Answer(json!({"version": 1, "ok": {"verb": "CHECK"}})),
            );
            let mut conf = base.clone();
            conf["type"] = json!("hostnic");
            conf["prevResult"] = passed_on.clone();
            let (code, out) = exec(&hostnic, "CHECK", &conf);
            assert_eq!(
                code, 0,
                "hostnic CHECK {version} of the chain's result: {out}"
            );
            let got = check_agent.received();
            assert_eq!(got.len(), 1);
            let expected = &got[0].json["expected"];
            assert_eq!(expected["ips"], json!(["172.16.1.5/32"]));
            assert_eq!(expected["host"]["name"], "hnic5d41402abc4");
            assert_eq!(expected["sandbox"]["sandbox"], "/var/run/netns/cni-1234");
        }
    }
}
