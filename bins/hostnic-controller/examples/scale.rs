//! What the controller costs for N nodes × M NICs, in-process: the QingCloud
//! simulator (HTTP, the account's request quota on), the fake API server (HTTP),
//! N `HostnicNode`s written as agents would, one controller replica. Prints JSON:
//! requests in all and by action, request-quota 2500s, seconds until every NIC
//! was attached and every node's status said Ready (simulated seconds), and the
//! calls of a simulated hour at rest afterwards.
//!
//! ```text
//! cargo run -p hostnic-controller --example scale -- [NODES] [NICS] [TIME_SCALE]
//! ```
//! The simulated seconds are only meaningful while the controller keeps up with
//! the time scale: at 1,000 nodes its rounds are bound by writing 1,000 statuses
//! through the in-process fake API server (about a second each way, release
//! build), so the real seconds are printed too.
//! Defaults: 100 nodes × 30 NICs, time scale 10 (the simulator's 5 s attach jobs
//! take 0.5 s, the quota's hour 6 minutes, and the controller lives in the same
//! simulated time).

use std::collections::BTreeMap;
use std::time::Duration;

use hostnic_controller::{Deps, Settings};
use hostnic_k8s::crd::{HostnicNode, HostnicNodeSpec};
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_qingcloud::sim::{SimConfig, Simulator, Topology};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};
use kube::Api;
use kube::api::PostParams;

const KEY: &str = "SCALEKEY";
const SECRET: &str = "SCALESECRET";

fn arg(n: usize, default: f64) -> f64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let nodes = arg(1, 100.0) as u32;
    let nics = arg(2, 30.0) as u32;
    let scale = arg(3, 10.0);
    // 252 NICs per vxnet, primaries included.
    let vxnets = ((nodes * (nics + 1)).div_ceil(240)).max(1) as usize;
    hostnic_qingcloud::transport::install_crypto_provider();
    let sim = Simulator::start(
        SimConfig {
            topology: Topology::generated(nodes as usize, vxnets).map_err(anyhow::Error::msg)?,
            job_latency: Duration::from_millis(500),
            attach_latency: Duration::from_millis(4500),
            time_scale: scale,
            ..SimConfig::new(KEY, SECRET)
        },
        None,
    )
    .await?;
    let server = FakeApiServer::start().await?;
    server
        .install_crd_yaml(&hostnic_k8s::crd::crd_yaml())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let dir = tempfile::tempdir()?;
    let kube = hostnic_k8s::client(Some(&server.write_kubeconfig(dir.path())?)).await?;
    let api: Api<HostnicNode> = Api::all(kube.clone());
    for n in 1..=nodes {
        let name = format!("node-{n}");
        server.add_node(&name, &[]);
        let first = (n - 1) as usize % vxnets;
        let spec = HostnicNodeSpec {
            instance_id: format!("i-sim{n:05}"),
            vxnets: (0..3.min(vxnets))
                .map(|k| format!("vxnet-sim{}", 1 + (first + k) % vxnets))
                .collect(),
            want_nics: i64::from(nics),
            max_nics: 62,
            ..Default::default()
        };
        api.create(&PostParams::default(), &HostnicNode::new(&name, spec))
            .await?;
    }
    let mut settings = Settings::new("scale", "scale-a").time_scaled(scale);
    settings.metrics_addr = "127.0.0.1:0".parse()?;
    let cloud = QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            budget: Some(settings.budget),
            ..ClientOptions::default().time_scaled(scale)
        },
    )?;
    let started = tokio::time::Instant::now();
    let controller = hostnic_controller::start(
        Deps {
            cloud,
            kube: kube.clone(),
        },
        settings,
    )
    .await?;
    let name = "hostnic_scale".to_string();
    let attached = || {
        let state = sim.state();
        let mut per: BTreeMap<String, u32> = BTreeMap::new();
        for nic in state.nics.values().filter(|n| n.nic_name == name) {
            if let Some(i) = &nic.instance_id {
                *per.entry(i.clone()).or_default() += 1;
            }
        }
        per.values().filter(|c| **c == nics).count() as u32
    };
    while attached() < nodes {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "not served in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attached_after = started.elapsed().as_secs_f64() * scale;
    loop {
        let list = api.list(&Default::default()).await?;
        let ready = list.items.iter().all(|h| {
            h.status
                .as_ref()
                .and_then(|s| s.condition("Ready"))
                .is_some_and(|c| c.status == "True")
        });
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = started.elapsed().as_secs_f64() * scale;
    let counters = |sim: &hostnic_qingcloud::sim::SimHandle| -> BTreeMap<String, u64> {
        sim.counters()
            .into_iter()
            .map(|(a, c)| (a, c.requests))
            .collect()
    };
    let cold = counters(&sim);
    // A simulated hour at rest.
    tokio::time::sleep(Duration::from_secs_f64(3600.0 / scale)).await;
    let after = counters(&sim);
    let rest: u64 = after.values().sum::<u64>() - cold.values().sum::<u64>();
    let quota = sim.quota();
    controller.stop().await;
    let report = serde_json::json!({
        "nodes": nodes,
        "nics_per_node": nics,
        "vxnets": vxnets,
        "time_scale": scale,
        "calls_total": cold.values().sum::<u64>(),
        "calls_by_action": cold,
        "quota_errors": quota.rejections_total,
        "seconds_to_all_attached": (attached_after * 10.0).round() / 10.0,
        "seconds_to_all_ready": (ready_after * 10.0).round() / 10.0,
        "real_seconds_to_all_attached": (attached_after / scale * 10.0).round() / 10.0,
        "real_seconds_to_all_ready": (ready_after / scale * 10.0).round() / 10.0,
        "calls_in_an_hour_at_rest": rest,
        "calls_by_action_at_rest": after.iter()
            .map(|(a, n)| (a.clone(), n - cold.get(a).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
