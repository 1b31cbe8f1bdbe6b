//! The harness's simulator: one started in-process (a generated VPC sized for the
//! fleet, the fleet's fake hosts as its attach hook), or one started separately
//! (`--sim-url`, `--credentials`). Either way the harness reads its figures from
//! the simulator's own admin endpoints (`/_sim/counters`, `/_sim/quota`,
//! `/_sim/state`), so they are the cloud's count, not the agents'.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator, Topology, WindowLimit};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient, Secret};
use hostnic_testkit::hooks::FakeHosts;
use serde::Deserialize;

/// Requests and answers of one action, as `/_sim/counters` reports them.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Counter {
    /// Requests received.
    pub requests: u64,
    /// Answered 0.
    #[serde(default)]
    pub ok: u64,
    /// Error answers by `ret_code`.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
}

/// `/_sim/quota`, the parts the harness reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Quota {
    /// `N/W` or `off`.
    pub quota: String,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// Per key: `used` in the current window.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyQuota>,
    /// Request-quota 2500s sent since start.
    pub rejections_total: u64,
}

/// One key's quota.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyQuota {
    /// Requests in the window.
    pub used: u32,
}

/// One NIC of `/_sim/state`.
#[derive(Debug, Clone, Deserialize)]
pub struct StateNic {
    /// Its name.
    pub nic_name: String,
    /// Where it is attached.
    pub instance_id: Option<String>,
    /// Its vxnet.
    #[serde(default)]
    pub vxnet_id: Option<String>,
    /// Its address.
    #[serde(default)]
    pub private_ip: Option<std::net::Ipv4Addr>,
}

/// `/_sim/state`, the parts the harness reads.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    /// Instances by id.
    pub instances: BTreeMap<String, serde_json::Value>,
    /// NICs by id.
    pub nics: BTreeMap<String, StateNic>,
    /// Vxnets by id.
    #[serde(default)]
    pub vxnets: BTreeMap<String, serde_json::Value>,
}

impl State {
    /// Instance `id`'s primary interface as its host would show it: the primary
    /// NIC, its address, its vxnet's network, the network's first address as the
    /// gateway (the simulator's VPC routers).
    pub fn primary(&self, id: &str) -> anyhow::Result<hostnic_agent::supply::Primary> {
        let nic_id = self
            .instances
            .get(id)
            .and_then(|i| i.get("primary_nic"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| anyhow::anyhow!("instance {id}: no primary NIC in the state"))?;
        let nic = self
            .nics
            .get(nic_id)
            .ok_or_else(|| anyhow::anyhow!("primary NIC {nic_id} not in the state"))?;
        let ip = nic
            .private_ip
            .ok_or_else(|| anyhow::anyhow!("primary NIC {nic_id} has no address"))?;
        let network: ipnet::Ipv4Net = nic
            .vxnet_id
            .as_ref()
            .and_then(|v| self.vxnets.get(v))
            .and_then(|v| v.get("ip_network"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| anyhow::anyhow!("primary NIC {nic_id}: its vxnet is unknown"))?
            .parse()?;
        let gateway = network
            .hosts()
            .next()
            .ok_or_else(|| anyhow::anyhow!("{network} has no host address"))?;
        Ok(hostnic_agent::supply::Primary {
            nic: hostnic_core::types::NicId::new(nic_id)
                .map_err(|e| anyhow::anyhow!("primary NIC {nic_id}: {e}"))?,
            ip,
            network,
            gateway,
        })
    }
}

enum Admin {
    InProcess(SimHandle),
    External { base: String, http: reqwest::Client },
}

/// The simulator the fleet talks to.
pub struct SimCloud {
    admin: Admin,
    /// The API URL.
    pub url: String,
    /// The zone.
    pub zone: String,
    /// The access key.
    pub key: String,
    /// Its secret.
    pub secret: Secret,
    /// The fleet's fake hosts, following the attachments (in-process only: an
    /// external simulator cannot call back; the nodes then follow their own jobs).
    pub hosts: Option<FakeHosts>,
    /// Simulated seconds per real second.
    pub scale: f64,
    /// The request quota.
    pub quota: Option<WindowLimit>,
}

/// Vxnets a generated VPC needs for `nodes` nodes of up to `nics` NICs each: every
/// node takes NICs from its primary NIC's vxnet, and a vxnet holds 252 NICs.
pub fn vxnets_for(nodes: usize, nics: usize) -> usize {
    let per_vxnet = (240 / nics.max(1)).max(1);
    nodes.div_ceil(per_vxnet).max(1)
}

impl SimCloud {
    /// Starts the simulator in-process: a generated VPC of `nodes` instances over
    /// enough vxnets for `nics` NICs each, the quota, the time scale, QingCloud-like
    /// job latencies (100 ms pending, 500 ms working: the simulator's defaults).
    pub async fn start(
        nodes: usize,
        nics: usize,
        quota: Option<WindowLimit>,
        scale: f64,
    ) -> anyhow::Result<Self> {
        let topology = Topology::generated(nodes, vxnets_for(nodes, nics))
            .map_err(|e| anyhow::anyhow!("generated VPC: {e}"))?;
        let hosts = FakeHosts::default();
        let (key, secret) = ("SCALEKEY", "scale-harness-secret");
        let sim = Simulator::start(
            SimConfig {
                topology,
                quota,
                time_scale: scale,
                ..SimConfig::new(key, secret)
            },
            Some(Arc::new(hosts.clone())),
        )
        .await
        .context("starting the simulator")?;
        Ok(Self {
            url: sim.url(),
            zone: sim.zone(),
            admin: Admin::InProcess(sim),
            key: key.into(),
            secret: Secret::new(secret),
            hosts: Some(hosts),
            scale,
            quota,
        })
    }

    /// A simulator started separately (`qingcloud-sim --instances N --quota Q
    /// --time-scale K --credentials FILE`): its API at `url`, the key and zone of the
    /// `qcsecret` file `credentials`; the quota and time scale are the simulator's.
    pub async fn connect(url: &str, credentials: &Path) -> anyhow::Result<Self> {
        let config = Config::load(credentials)
            .with_context(|| format!("credentials {}", credentials.display()))?;
        let parsed = url::Url::parse(url).with_context(|| format!("--sim-url {url}"))?;
        let base = format!(
            "{}://{}/_sim/",
            parsed.scheme(),
            parsed
                .host_str()
                .map(|h| match parsed.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
                .unwrap_or_default()
        );
        hostnic_qingcloud::transport::install_crypto_provider();
        let mut this = Self {
            admin: Admin::External {
                base,
                http: reqwest::Client::new(),
            },
            url: url.to_string(),
            zone: config.zone.clone(),
            key: config.access_key_id.clone(),
            secret: config.secret_access_key.clone(),
            hosts: None,
            scale: 1.0,
            quota: None,
        };
        let q = this
            .quota()
            .await
            .context("reading the simulator's /_sim/quota")?;
        this.scale = q.time_scale;
        this.quota = WindowLimit::parse_optional(&q.quota).unwrap_or(None);
        Ok(this)
    }

    async fn admin_json(&self, what: &str) -> anyhow::Result<serde_json::Value> {
        match &self.admin {
            Admin::InProcess(sim) => Ok(match what {
                "counters" => serde_json::to_value(sim.counters())?,
                "quota" => serde_json::to_value(sim.quota())?,
                _ => serde_json::to_value(sim.state())?,
            }),
            Admin::External { base, http } => Ok(http
                .get(format!("{base}{what}"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?),
        }
    }

    /// Requests and answers per action, as the simulator counted them.
    pub async fn counters(&self) -> anyhow::Result<BTreeMap<String, Counter>> {
        Ok(serde_json::from_value(self.admin_json("counters").await?)?)
    }

    /// The quota and its state.
    pub async fn quota(&self) -> anyhow::Result<Quota> {
        Ok(serde_json::from_value(self.admin_json("quota").await?)?)
    }

    /// Instances and NICs.
    pub async fn state(&self) -> anyhow::Result<State> {
        Ok(serde_json::from_value(self.admin_json("state").await?)?)
    }

    /// The first `n` instances of the zone, in order.
    pub async fn instances(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let state = self.state().await?;
        let ids: Vec<String> = state.instances.into_keys().take(n).collect();
        anyhow::ensure!(
            ids.len() == n,
            "the simulator has {} instances, {n} nodes asked (start it with --instances {n})",
            ids.len()
        );
        Ok(ids)
    }

    /// Creates the `hostnic` tag, as the first node of a cluster would: without it,
    /// a fleet starting together would each find no tag and create one. Two calls
    /// (DescribeTags, CreateTag), counted as the cluster's setup.
    pub async fn install(&self) -> anyhow::Result<()> {
        let client = QingCloudClient::for_url(
            &self.url,
            &self.key,
            self.secret.clone(),
            &self.zone,
            ClientOptions {
                budget: None,
                ..ClientOptions::default()
            }
            .time_scaled(self.scale),
        )?;
        client
            .hostnic_tag()
            .await
            .context("creating the hostnic tag")?;
        Ok(())
    }

    /// Stops an in-process simulator.
    pub async fn shutdown(self) {
        if let Admin::InProcess(sim) = self.admin {
            sim.shutdown().await;
        }
    }
}

/// The total of `counters`, and the request-quota 2500s among them.
pub fn totals(counters: &BTreeMap<String, Counter>) -> (u64, u64) {
    let requests = counters.values().map(|c| c.requests).sum();
    let quota = counters
        .values()
        .map(|c| c.errors.get("2500").copied().unwrap_or(0))
        .sum();
    (requests, quota)
}

/// `after - before`, per action (actions without a request in between left out).
pub fn delta(
    before: &BTreeMap<String, Counter>,
    after: &BTreeMap<String, Counter>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(action, c)| {
            let was = before.get(action).map_or(0, |b| b.requests);
            (action.clone(), c.requests.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Error answers between `before` and `after`, by action and `ret_code`.
pub fn error_delta(
    before: &BTreeMap<String, Counter>,
    after: &BTreeMap<String, Counter>,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (action, c) in after {
        for (code, n) in &c.errors {
            let was = before
                .get(action)
                .and_then(|b| b.errors.get(code))
                .copied()
                .unwrap_or(0);
            if *n > was {
                out.entry(action.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(code.clone(), n - was);
            }
        }
    }
    out
}
