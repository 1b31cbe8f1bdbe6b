//! The VPC fabric: router, internet host, VPC hosts (nodes, client) and
//! hot-plugged NICs.
//!
//! ```text
//!   node ns ──eth0 (primary)────────h-node1─┐
//!           ──hnXXXXXXXX (pod NIC)──rXXXXXXXXXXXX─┤ router ns ── inet0 ──eth0── internet ns
//!   client ns ──eth0────────────────h-client─┘ (gateways .1 on lo, /32 route +
//!                                               permanent neighbour per NIC, proxy ARP)
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::cmd::{LabError, ip_in, run, sysctl_in};
use crate::netns::{NETNS_RUN_DIR, NetNs};

/// The one prefix every lab namespace name starts with.
pub const LAB_NETNS_PREFIX: &str = "hl-";

/// A vxnet the router is the gateway of (`.1` of `cidr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxnetGateway {
    /// The vxnet's network, e.g. `172.16.1.0/24`.
    pub cidr: Ipv4Net,
}

impl VxnetGateway {
    /// The gateway address, `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricSpec {
    /// Prefix of every namespace name; must start with [`LAB_NETNS_PREFIX`], e.g. `hl-1a2b-`.
    pub prefix: String,
    /// The vxnets routed by the VPC router.
    pub vxnets: Vec<VxnetGateway>,
    /// The "internet" network behind the router: the router takes `.1`, the
    /// internet host `.2`. Use a documentation range such as 198.51.100.0/24.
    pub internet: Ipv4Net,
}

/// A VPC host with one NIC `eth0` (a node's primary NIC, or the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Short name (at most 13 characters), e.g. `node1`; the namespace is `<prefix><name>`.
    pub name: String,
    /// The MAC of `eth0` (a node's primary NIC id).
    pub mac: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its vxnet.
    pub vxnet: VxnetGateway,
}

/// A built fabric. It is only a set of names: every operation goes to the
/// namespaces, so several processes (the lab daemon, `hostnic-lab check`) can
/// hold a `Fabric` for the same lab.
#[derive(Debug, Clone)]
pub struct Fabric {
    prefix: String,
    internet: Ipv4Net,
}

impl Fabric {
    /// Refers to an existing fabric (built by [`Fabric::create`] elsewhere).
    pub fn attach(prefix: &str, internet: Ipv4Net) -> Result<Self, LabError> {
        check_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.to_string(),
            internet,
        })
    }

    /// Builds the router and the internet host. Whatever a crashed run with the
    /// same prefix left behind is removed first.
    pub async fn create(spec: &FabricSpec) -> Result<Self, LabError> {
        check_prefix(&spec.prefix)?;
        let leftovers = destroy(&spec.prefix).await;
        if !leftovers.is_empty() {
            return Err(LabError::Invalid(format!(
                "cannot remove the previous lab: {}",
                leftovers.join("; ")
            )));
        }
        let fabric = Self {
            prefix: spec.prefix.clone(),
            internet: spec.internet,
        };
        let router = fabric.router();
        fabric.new_netns(&router).await?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.default.proxy_arp", "1"),
        ] {
            sysctl_in(&router, key, value).await?;
        }
        for vxnet in &spec.vxnets {
            let gw = format!("{}/32", vxnet.gateway());
            ip_in(&router, &["addr", "add", &gw, "dev", "lo"]).await?;
        }
        // The internet host: router .1, host .2, and the host routes everything back.
        let inet = fabric.internet_netns();
        fabric.new_netns(&inet).await?;
        ip_in(
            &router,
            &[
                "link", "add", "inet0", "type", "veth", "peer", "name", "eth0", "netns", &inet,
            ],
        )
        .await?;
        let len = spec.internet.prefix_len();
        let r_ip = format!("{}/{len}", fabric.internet_router_ip());
        let h_ip = format!("{}/{len}", fabric.internet_ip());
        ip_in(&router, &["addr", "add", &r_ip, "dev", "inet0"]).await?;
        ip_in(&router, &["link", "set", "inet0", "up"]).await?;
        ip_in(&inet, &["addr", "add", &h_ip, "dev", "eth0"]).await?;
        ip_in(&inet, &["link", "set", "eth0", "up"]).await?;
        let via = fabric.internet_router_ip().to_string();
        ip_in(&inet, &["route", "add", "default", "via", &via]).await?;
        Ok(fabric)
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Name of the namespace `<prefix><short>`.
    pub fn netns_name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Path of the namespace `<prefix><short>`.
    pub fn netns_path(&self, short: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(self.netns_name(short))
    }

    /// The router's namespace name.
    pub fn router(&self) -> String {
        self.netns_name("router")
    }

    /// The internet host's namespace name.
    pub fn internet_netns(&self) -> String {
        self.netns_name("internet")
    }

    /// The internet host's address (`.2` of the internet network).
    pub fn internet_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.internet.network()) + 2)
    }

    fn internet_router_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.internet.network()) + 1)
    }

    async fn new_netns(&self, name: &str) -> Result<(), LabError> {
        NetNs::create_named(name)?;
        ip_in(name, &["link", "set", "lo", "up"]).await?;
        Ok(())
    }

    /// Creates a VPC host: namespace `<prefix><name>` with `eth0` (`spec.mac`,
    /// `spec.ip`/vxnet prefix, default route via the vxnet gateway) wired to the
    /// router. Returns the namespace path.
    pub async fn add_host(&self, spec: &HostSpec) -> Result<PathBuf, LabError> {
        if spec.name.is_empty() || spec.name.len() > 13 {
            return Err(LabError::Invalid(format!(
                "host name {:?} must have 1 to 13 characters",
                spec.name
            )));
        }
        let ns = self.netns_name(&spec.name);
        let router = self.router();
        self.new_netns(&ns).await?;
        let port = format!("h-{}", spec.name);
        ip_in(
            &router,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "address", &spec.mac,
                "netns", &ns,
            ],
        )
        .await?;
        ip_in(&router, &["link", "set", &port, "up"]).await?;
        // Proxy ARP answers for other VPC addresses on this port at once, not
        // after `proxy_delay`'s random wait.
        sysctl_in(&router, &format!("net.ipv4.neigh.{port}.proxy_delay"), "0").await?;
        let addr = format!("{}/{}", spec.ip, spec.vxnet.cidr.prefix_len());
        ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"]).await?;
        ip_in(&ns, &["link", "set", "eth0", "up"]).await?;
        let gw = spec.vxnet.gateway().to_string();
        ip_in(&ns, &["route", "add", "default", "via", &gw, "dev", "eth0"]).await?;
        self.route_to(&spec.ip, &spec.mac, &port).await?;
        Ok(self.netns_path(&spec.name))
    }

    /// The router delivers `ip` to `mac` through `port`, without asking ARP.
    async fn route_to(&self, ip: &Ipv4Addr, mac: &str, port: &str) -> Result<(), LabError> {
        let router = self.router();
        let dst = format!("{ip}/32");
        ip_in(&router, &["route", "replace", &dst, "dev", port]).await?;
        let ip = ip.to_string();
        ip_in(
            &router,
            &[
                "neigh",
                "replace",
                &ip,
                "lladdr",
                mac,
                "dev",
                port,
                "nud",
                "permanent",
            ],
        )
        .await?;
        Ok(())
    }

    /// Hot-plugs NIC `mac` (address `ip`) into host `host`: a veth whose host end
    /// `hn<last 4 MAC bytes>` appears, down and address-less, in the host's
    /// namespace with the NIC's MAC, and whose other end is the router's port for
    /// `ip`. Replaces an earlier plug of the same NIC.
    pub async fn plug_nic(&self, host: &str, mac: &str, ip: Ipv4Addr) -> Result<(), LabError> {
        let (port, link) = nic_link_names(mac)?;
        self.unplug_nic(mac).await?;
        let ns = self.netns_name(host);
        ip_in(
            &self.router(),
            &[
                "link", "add", &port, "type", "veth", "peer", "name", &link, "address", mac,
                "netns", &ns,
            ],
        )
        .await?;
        ip_in(&self.router(), &["link", "set", &port, "up"]).await?;
        self.route_to(&ip, mac, &port).await
    }

    /// Removes NIC `mac` from whatever host holds it (both veth ends, the router's
    /// route and neighbour). Succeeds if it is not plugged.
    pub async fn unplug_nic(&self, mac: &str) -> Result<(), LabError> {
        let (port, _) = nic_link_names(mac)?;
        match ip_in(&self.router(), &["link", "del", &port]).await {
            Ok(_) => Ok(()),
            Err(LabError::Failed { stderr, .. })
                if stderr.contains("Cannot find device") || stderr.contains("does not exist") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The NICs plugged into the router right now (router port names).
    pub async fn plugged_ports(&self) -> Result<Vec<String>, LabError> {
        let out = ip_in(&self.router(), &["-o", "link", "show"]).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with('r') && n.len() == 13)
            .collect())
    }
}

/// Router port and host link names of NIC `mac`: `r<12 hex>` and `hn<last 8 hex>`.
pub fn nic_link_names(mac: &str) -> Result<(String, String), LabError> {
    let hex: String = mac.split(':').collect::<String>().to_ascii_lowercase();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LabError::Invalid(format!("not a MAC: {mac:?}")));
    }
    Ok((format!("r{hex}"), format!("hn{}", &hex[4..])))
}

fn check_prefix(prefix: &str) -> Result<(), LabError> {
    let ok = prefix.starts_with(LAB_NETNS_PREFIX)
        && prefix.len() > LAB_NETNS_PREFIX.len()
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "lab prefix {prefix:?} must start with {LAB_NETNS_PREFIX:?} and be alphanumeric"
        )))
    }
}

/// The lab namespaces with `prefix` that exist now.
pub fn lab_namespaces(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Removes every namespace named `<prefix>…` (killing the processes still in it
/// first) and returns what could not be removed, one line each. Refuses
/// prefixes that are not lab prefixes.
pub async fn destroy(prefix: &str) -> Vec<String> {
    if let Err(e) = check_prefix(prefix) {
        return vec![e.to_string()];
    }
    let mut leftovers = Vec::new();
    for name in lab_namespaces(prefix) {
        if let Ok(pids) = run("ip", &["netns", "pids", &name]).await {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Err(e) = NetNs::delete_named(&name) {
            leftovers.push(format!("namespace {name}: {e}"));
        }
    }
    leftovers.extend(
        lab_namespaces(prefix)
            .into_iter()
            .map(|n| format!("namespace {n} still exists")),
    );
    leftovers.dedup();
    leftovers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_link_names_fit_interface_names() {
        let (port, link) = nic_link_names("52:54:0A:0b:0c:0d").unwrap();
        assert_eq!(port, "r52540a0b0c0d");
        assert_eq!(link, "hn0a0b0c0d");
        assert!(port.len() <= 15 && link.len() <= 15);
        assert!(nic_link_names("52:54").is_err());
    }

    #[test]
    fn only_lab_prefixes_are_accepted() {
        assert!(check_prefix("hl-1a2b-").is_ok());
        assert!(check_prefix("hl-").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("cni-").is_err());
        assert!(check_prefix("hl-a/b").is_err());
    }

    #[test]
    fn gateway_is_dot_one() {
        let v = VxnetGateway {
            cidr: "172.16.2.0/24".parse().unwrap(),
        };
        assert_eq!(v.gateway(), Ipv4Addr::new(172, 16, 2, 1));
    }
}
