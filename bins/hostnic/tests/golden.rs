//! Golden tests: every fixture in `tests/fixtures/` runs the real `hostnic`
//! binary against a fake agent and checks stdout, the exit code, what the
//! agent received and any pending-DEL file. The fixtures' expectations come
//! from the CNI specification and `docs/agent-api.md` (see `generate.py`).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Behaviour, FakeAgent};
use serde_json::{Value, json};

const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn substitute(v: &Value, socket: &str, state: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("$SOCKET", socket).replace("$STATE", state)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, socket, state)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, socket, state)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs one fixture; returns every way it deviates from its expectation.
fn run_case(name: &str, case: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let state = dir.path().join("state");
    let (sock_s, state_s) = (socket.to_str().unwrap(), state.to_str().unwrap());
    let case = substitute(case, sock_s, state_s);
    let expect = &case["expect"];

    let agent = match &case["agent"] {
        Value::String(s) if s == "none" || s == "down" => None,
        Value::String(s) if s == "hang" => Some(FakeAgent::start(&socket, Behaviour::Hang)),
        Value::String(s) if s == "close" => Some(FakeAgent::start(&socket, Behaviour::Close)),
        Value::Object(o) if o.contains_key("answer") => Some(FakeAgent::start(
            &socket,
            Behaviour::Answer(o["answer"].clone()),
        )),
        Value::Object(o) if o.contains_key("raw") => Some(FakeAgent::start(
            &socket,
            Behaviour::Raw(o["raw"].as_str().unwrap().as_bytes().to_vec()),
        )),
        other => panic!("{name}: unknown agent {other}"),
    };

    let stdin = match &case["stdin"] {
        Value::String(raw) => raw.clone().into_bytes(),
        Value::Object(o) => {
            let mut o = o.clone();
            o.entry("agentSocket").or_insert(json!(sock_s));
            o.entry("stateDir").or_insert(json!(state_s));
            serde_json::to_vec(&o).unwrap()
        }
        other => panic!("{name}: stdin must be a string or an object, not {other}"),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostnic"));
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in case["env"].as_object().unwrap() {
        cmd.env(k, v.as_str().unwrap());
    }
    let started = now_ms();
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&stdin).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            problems.push("the plugin hung for 20 s".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    let finished = now_ms();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();

    let want_exit = expect["exit"].as_i64().unwrap() as i32;
    if out.status.code() != Some(want_exit) {
        problems.push(format!("exit {:?}, want {want_exit}", out.status.code()));
    }

    if let Some(err) = expect.get("error") {
        match serde_json::from_str::<Value>(&stdout) {
            Err(e) => problems.push(format!("stdout is not the error JSON ({e}): {stdout:?}")),
            Ok(got) => {
                let keys: BTreeSet<&str> = got
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                if keys != BTreeSet::from(["cniVersion", "code", "details", "msg"]) {
                    problems.push(format!("error JSON has keys {keys:?}"));
                }
                for k in ["cniVersion", "code", "msg"] {
                    if got[k] != err[k] {
                        problems.push(format!("error {k} is {}, want {}", got[k], err[k]));
                    }
                }
                let needle = err["details_contains"].as_str().unwrap();
                if !got["details"].as_str().unwrap_or("").contains(needle) {
                    problems.push(format!("error details {} lack {needle:?}", got["details"]));
                }
            }
        }
    } else if expect["stdout"].is_null() {
        if !stdout.is_empty() {
            problems.push(format!("stdout must be empty, got {stdout:?}"));
        }
    } else {
        match serde_json::from_str::<Value>(&stdout) {
            Err(e) => problems.push(format!("stdout is not one JSON document ({e}): {stdout:?}")),
            Ok(got) if got != expect["stdout"] => {
                problems.push(format!("stdout\n  got  {got}\n  want {}", expect["stdout"]));
            }
            Ok(got) => {
                if case["env"]["CNI_COMMAND"] == "ADD" {
                    let v = case["stdin"]["cniVersion"].as_str().unwrap();
                    problems.extend(result_shape_problems(v, &got));
                }
            }
        }
    }

    let received = agent.as_ref().map(FakeAgent::received).unwrap_or_default();
    for r in &received {
        if let Err(e) = &r.typed {
            problems.push(format!("the request does not decode as api::Request: {e}"));
        }
    }
    match &expect["request"] {
        Value::Null if !received.is_empty() => {
            problems.push(format!(
                "no request expected, the agent got {}",
                received[0].json
            ));
        }
        Value::Null => {}
        Value::String(s) if s == "any" => {
            if received.len() != 1 {
                problems.push(format!("one request expected, got {}", received.len()));
            }
        }
        want => match received.as_slice() {
            [one] if one.json == *want => {}
            [one] => problems.push(format!("request\n  got  {}\n  want {want}", one.json)),
            many => problems.push(format!("one request expected, got {}", many.len())),
        },
    }

    let pending_dir = state.join("pending-del");
    match expect.get("pending_del") {
        None => {
            if pending_dir.exists() {
                problems.push("a pending-DEL was written but none was expected".into());
            }
        }
        Some(p) => problems.extend(pending_problems(
            &pending_dir,
            p,
            started,
            finished,
            &stderr,
        )),
    }
    drop(agent);
    problems
}

fn pending_problems(dir: &Path, p: &Value, started: u64, finished: u64, log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let file = dir.join(p["file"].as_str().unwrap());
    let names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    if names.len() != 1 {
        problems.push(format!(
            "pending-del holds {names:?}, want exactly one file"
        ));
    }
    let Ok(bytes) = std::fs::read(&file) else {
        problems.push(format!("{} was not written", file.display()));
        return problems;
    };
    let mut got: Value = serde_json::from_slice(&bytes).unwrap();
    let at = got["requested_at_ms"].as_u64().unwrap_or(0);
    if !(started..=finished).contains(&at) {
        problems.push(format!(
            "requested_at_ms {at} outside the run {started}..={finished}"
        ));
    }
    if got["reason"].as_str().is_none_or(str::is_empty) {
        problems.push("the pending-DEL gives no reason".into());
    }
    let o = got.as_object_mut().unwrap();
    o.remove("requested_at_ms");
    o.remove("reason");
    if got != p["record"] {
        problems.push(format!("pending-DEL\n  got  {got}\n  want {}", p["record"]));
    }
    if !log.contains("recorded the DEL") {
        problems.push(format!(
            "the log does not say the DEL was recorded: {log:?}"
        ));
    }
    problems
}

/// Checks a successful ADD result against the CNI specification's rules for
/// `version`, independently of the expected fixture: what a following plugin
/// (portmap, bandwidth) relies on when it reads this as `prevResult`.
fn result_shape_problems(version: &str, r: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let legacy = version < "1.0.0";
    let allowed_top = BTreeSet::from(["cniVersion", "interfaces", "ips", "routes", "dns"]);
    for k in r.as_object().unwrap().keys() {
        if !allowed_top.contains(k.as_str()) {
            p.push(format!("unexpected top-level key {k}"));
        }
    }
    if r["cniVersion"] != version {
        p.push(format!(
            "cniVersion {} in a {version} result",
            r["cniVersion"]
        ));
    }
    let ifaces = r["interfaces"].as_array().cloned().unwrap_or_default();
    for i in &ifaces {
        let mut allowed = vec!["name", "mac", "sandbox"];
        if version == "1.1.0" {
            allowed.extend(["mtu", "socketPath", "pciID"]);
        }
        for k in i.as_object().unwrap().keys() {
            if !allowed.contains(&k.as_str()) {
                p.push(format!("interface key {k} does not exist in {version}"));
            }
        }
        if i["name"].as_str().is_none_or(str::is_empty) {
            p.push("interface without a name".into());
        }
        let mac = i["mac"].as_str().unwrap_or("");
        if mac.len() != 17 || mac.split(':').count() != 6 {
            p.push(format!("interface mac {mac:?} is not a MAC"));
        }
    }
    let ips = r["ips"].as_array().cloned().unwrap_or_default();
    if ips.is_empty() {
        p.push("no ips".into());
    }
    for ip in &ips {
        if ip["address"]
            .as_str()
            .and_then(|a| a.parse::<ipnet::IpNet>().ok())
            .is_none()
        {
            p.push(format!("ip address {} is not CIDR", ip["address"]));
        }
        if ip["gateway"]
            .as_str()
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .is_none()
        {
            p.push(format!("gateway {} is not an address", ip["gateway"]));
        }
        match ip["interface"].as_u64() {
            Some(idx) if (idx as usize) < ifaces.len() => {
                if ifaces[idx as usize]["sandbox"]
                    .as_str()
                    .is_none_or(str::is_empty)
                {
                    p.push("the ip's interface is not in the sandbox".into());
                }
            }
            other => p.push(format!("ip interface index {other:?} out of range")),
        }
        if legacy != (ip.get("version") == Some(&json!("4"))) {
            p.push(format!("ips version field wrong for {version}: {ip}"));
        }
    }
    for route in r["routes"].as_array().cloned().unwrap_or_default() {
        if route["dst"]
            .as_str()
            .and_then(|a| a.parse::<ipnet::IpNet>().ok())
            .is_none()
        {
            p.push(format!("route dst {} is not CIDR", route["dst"]));
        }
    }
    p
}

#[test]
fn every_fixture_matches() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let case: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        if let (Some(c), Some(v)) = (
            case["env"]["CNI_COMMAND"].as_str(),
            case["stdin"]["cniVersion"].as_str(),
        ) {
            covered.insert((c.to_string(), v.to_string()));
        }
        if let Some(code) = case["expect"]["error"]["code"].as_u64() {
            codes.insert(code);
        }
        for problem in run_case(&name, &case) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    for verb in ["VERSION", "ADD", "DEL", "CHECK", "GC", "STATUS"] {
        for v in SUPPORTED {
            assert!(
                covered.contains(&(verb.to_string(), v.to_string())),
                "no fixture for {verb} in {v}"
            );
        }
    }
    for code in [1, 4, 6, 7, 11, 50] {
        assert!(codes.contains(&code), "no fixture for error code {code}");
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
