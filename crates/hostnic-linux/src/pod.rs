//! Pod plumbing: ADD (`plumb`), DEL (`unplumb`) and CHECK (`verify`).
//!
//! ADD creates the veth with its peer *directly* in the sandbox namespace (the
//! peer's link message carries the namespace fd), because moving a link between
//! namespaces costs ~37 ms of kernel time here and creating it in place a few.
//! The kernel echoes the new link (its index, MAC and the peer's index), so no
//! lookup follows. The sandbox side and the host side are then configured
//! concurrently, each step with create-or-replace semantics so that a repeated
//! ADD converges; the sandbox's dependent steps are pipelined on its socket.
//!
//! DEL cuts the pod off and leaves the veth's deletion to a batch (see `reap`).
//!
//! Two sandboxes of one pod: the host veth is named from `namespace.name`, so a
//! second sandbox's ADD while the first still lives finds the name taken. CNI
//! attachments of different container ids are independent: the second sandbox
//! gets the veth its container id names and the first keeps its network (an
//! older agent deleted the first one's veth). DEL acts only on a veth proven to
//! be the deleted sandbox's, by its MAC (derived from the container id) or, when
//! that is not known, by its peer being in the sandbox's namespace: a late DEL of
//! an old sandbox never cuts off a newer one that holds the name.

use std::net::{IpAddr, Ipv4Addr};

use hostnic_core::types::{PlumbedPod, PodPlumbing};
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{LinuxError, libc_errno};
use crate::host::{LinuxHost, MAIN_TABLE};
use crate::names::{host_veth_name, pod_macs, sandbox_veth_name};
use crate::netns::{NetNs, NetlinkConn};
use crate::nl::{self, RuleSpec, ok_if_missing};

/// The on-link gateway every pod routes through (answered by the host veth's MAC).
pub use hostnic_core::api::POD_GATEWAY;

impl LinuxHost {
    /// The two rules of a pod: `to <ip> lookup main` and `from <ip> [fwmark] lookup <table>`.
    pub(crate) fn pod_rules(&self, ip: Ipv4Addr, table: u32) -> [RuleSpec; 2] {
        [
            RuleSpec {
                priority: self.config.to_pod_priority,
                src: None,
                dst: Some(ip),
                fwmark: None,
                table: u32::from(MAIN_TABLE),
            },
            RuleSpec {
                priority: self.config.from_pod_priority,
                src: Some(ip),
                dst: None,
                fwmark: self.config.snat.then_some(self.config.vpc_mark),
                table,
            },
        ]
    }

    /// What [`LinuxHost::plumb_pod_now`] reports when it creates the pair: the
    /// veth's name and both MACs are chosen here, not by the kernel. (When another
    /// live sandbox of the pod holds the name, ADD reports the name it used.)
    pub fn plan_pod(&self, pod: &PodPlumbing) -> PlumbedPod {
        let (host_mac, sandbox_mac) = pod_macs(&pod.pod);
        PlumbedPod {
            host_veth: host_veth_name(&self.config.veth_prefix, &pod.pod),
            host_mac: Some(host_mac),
            sandbox_mac: Some(sandbox_mac),
            ip: pod.nic.ip,
            table: pod.nic.table,
        }
    }

    /// CNI ADD: plumbs `pod` onto its NIC. Idempotent for the same sandbox.
    pub async fn plumb_pod_now(&self, pod: &PodPlumbing) -> Result<PlumbedPod, LinuxError> {
        self.reaper.activity();
        let host = self.handle();
        let mut veth = host_veth_name(&self.config.veth_prefix, &pod.pod);
        let ifname = pod.pod.ifname.as_str();
        let ip = pod.nic.ip;
        let sandbox = NetNs::open(&pod.netns)?;
        let macs = pod_macs(&pod.pod);

        // The veth and the sandbox's netlink socket are independent: do both at once.
        let (created, sandbox_conn) = tokio::join!(
            self.create_veth(&veth, ifname, &sandbox, macs),
            sandbox.connect()
        );
        let sandbox_conn = sandbox_conn?;
        let pod_h = &sandbox_conn.handle;
        let created = match created {
            Ok(created) => created,
            Err(e) if e.errno() == Some(libc_errno::EEXIST) => {
                let (used, created) = self
                    .resolve_name_clash(pod, &veth, &sandbox, pod_h, macs)
                    .await?;
                veth = used;
                created
            }
            Err(e) => return Err(e),
        };
        let link = match created {
            Some(link) => link,
            // An adopted veth (or a kernel without echo): look both ends up.
            None => {
                let (host_link, pod_link) = tokio::try_join!(
                    nl::link_by_name(host, &veth),
                    nl::link_by_name(pod_h, ifname)
                )?;
                let host_link = host_link.ok_or_else(|| LinuxError::LinkNotFound(veth.clone()))?;
                let pod_link =
                    pod_link.ok_or_else(|| LinuxError::LinkNotFound(ifname.to_string()))?;
                CreatedVeth {
                    host_index: host_link.header.index,
                    host_mac: nl::link_mac(&host_link)
                        .ok_or_else(|| LinuxError::LinkNotFound(format!("{veth} (no MAC)")))?,
                    sandbox_index: pod_link.header.index,
                    sandbox_mac: nl::link_mac(&pod_link),
                }
            }
        };

        tokio::try_join!(
            configure_sandbox(pod_h, link.sandbox_index, ip, link.host_mac),
            self.configure_host_side(link.host_index, ip, pod.nic.table),
        )?;
        Ok(PlumbedPod {
            host_veth: veth,
            host_mac: Some(link.host_mac),
            sandbox_mac: link.sandbox_mac,
            ip,
            table: pod.nic.table,
        })
    }

    /// Creates the pair with `(host, sandbox)` MACs, the peer directly in the
    /// sandbox. The kernel echoes the new host link (`NLM_F_ECHO`, Linux 6.3+),
    /// which carries its index, its MAC and the peer's index: no lookup is
    /// needed. `None` when the kernel sent no echo.
    async fn create_veth(
        &self,
        veth: &str,
        ifname: &str,
        sandbox: &NetNs,
        (host_mac, sandbox_mac): ([u8; 6], [u8; 6]),
    ) -> Result<Option<CreatedVeth>, LinuxError> {
        // rtnetlink has no builder for "peer in namespace X": build the peer
        // message ourselves with IFLA_NET_NS_FD. The peer cannot be brought up in
        // the same message (the kernel answers ENOTCONN: its twin is not linked
        // yet); `configure_sandbox` does it.
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(ifname.to_string())
            .mtu(self.config.mtu)
            .address(sandbox_mac.to_vec())
            .setns_by_fd(sandbox.raw_fd())
            .build();
        let message = LinkVeth::new(veth, ifname)
            .mtu(self.config.mtu)
            .address(host_mac.to_vec())
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let what = || format!("add veth {veth} (peer {ifname} in sandbox)");
        let sent = nl::send(
            self.handle(),
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        )
        .map_err(LinuxError::netlink(what()))?;
        let echoed = nl::answered(sent)
            .await
            .map_err(LinuxError::netlink(what()))?;
        Ok(echoed.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) if nl::link_name(&link) == Some(veth) => {
                Some(CreatedVeth {
                    host_index: link.header.index,
                    host_mac: nl::link_mac(&link)?,
                    sandbox_index: link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Link(i) => Some(*i),
                        _ => None,
                    })?,
                    sandbox_mac: Some(sandbox_mac),
                })
            }
            _ => None,
        }))
    }

    /// ADD found the host veth's name or the sandbox's `ifname` taken. Returns the
    /// host veth the sandbox is to be plumbed with, and the pair when it was created
    /// here (`None`: adopted, look both ends up):
    /// - one of the pod's host veths (the one its name gives, the one its container
    ///   id gives) is in the dead group (the pod is back before its old veth was
    ///   reaped): the group is reaped now, and ADD tries again;
    /// - `ifname` in the sandbox is the peer of one of them: a repeated ADD, adopted;
    /// - `ifname` is something else: an error;
    /// - the host veth is another live sandbox's (its peer is in another namespace,
    ///   which holds it): this sandbox gets the veth its container id names
    ///   ([`sandbox_veth_name`]), and the other one keeps its network.
    async fn resolve_name_clash(
        &self,
        pod: &PodPlumbing,
        veth: &str,
        sandbox: &NetNs,
        pod_h: &Handle,
        macs: ([u8; 6], [u8; 6]),
    ) -> Result<(String, Option<CreatedVeth>), LinuxError> {
        let host = self.handle();
        let ifname = pod.pod.ifname.as_str();
        let second = sandbox_veth_name(&self.config.veth_prefix, &pod.pod);
        let dead = self.reaper.group();
        let mut reaped = false;
        loop {
            let (host_link, second_link, pod_link) = tokio::try_join!(
                nl::link_by_name(host, veth),
                nl::link_by_name(host, &second),
                nl::link_by_name(pod_h, ifname)
            )?;
            let is_dead =
                |l: &Option<LinkMessage>| l.as_ref().is_some_and(|l| nl::link_group(l) == dead);
            if !reaped && (is_dead(&host_link) || is_dead(&second_link)) {
                tracing::info!(
                    veth,
                    "the veth of this pod's previous sandbox is reaped first"
                );
                self.reaper.reap_now().await?;
                reaped = true;
                match self.create_veth(veth, ifname, sandbox, macs).await {
                    Ok(created) => return Ok((veth.to_string(), created)),
                    Err(e) if e.errno() == Some(libc_errno::EEXIST) => continue,
                    Err(e) => return Err(e),
                }
            }
            if let Some(pod_link) = pod_link {
                for (name, link) in [(veth, &host_link), (second.as_str(), &second_link)] {
                    if let Some(h) = link
                        && nl::link_is_veth(&pod_link)
                        && nl::link_peer_index(&pod_link) == Some(h.header.index)
                        && nl::link_peer_index(h) == Some(pod_link.header.index)
                    {
                        return Ok((name.to_string(), None));
                    }
                }
                return Err(LinuxError::Config(format!(
                    "interface {ifname} already exists in sandbox {} and is not the peer of {veth}",
                    sandbox.path().display()
                )));
            }
            if host_link.is_none() {
                // The clash is gone (its sandbox was deleted meanwhile): create ours.
                let created = self.create_veth(veth, ifname, sandbox, macs).await?;
                return Ok((veth.to_string(), created));
            }
            // Another sandbox of the pod is alive: its veth's peer is in a namespace
            // that exists (the kernel deletes the pair with the namespace).
            if second == veth || second_link.is_some() {
                return Err(LinuxError::Config(format!(
                    "the host veths of {} ({veth}, {second}) are held by other sandboxes",
                    pod.pod.display_name()
                )));
            }
            tracing::warn!(
                pod = %pod.pod.display_name(),
                container = %pod.pod.container_id,
                held = veth,
                veth = %second,
                "another live sandbox of this pod holds its veth name: this sandbox gets \
                 the veth its container id names, and the other keeps its network until \
                 its own DEL"
            );
            let created = self.create_veth(&second, ifname, sandbox, macs).await?;
            return Ok((second, created));
        }
    }

    async fn configure_host_side(
        &self,
        veth_index: u32,
        ip: Ipv4Addr,
        table: u32,
    ) -> Result<(), LinuxError> {
        let host = self.handle();
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .output_interface(veth_index)
            .scope(RouteScope::Link)
            .build();
        let [to_pod, from_pod] = self.pod_rules(ip, table);
        tokio::try_join!(
            async {
                host.route()
                    .add(route)
                    .replace()
                    .execute()
                    .await
                    .map_err(LinuxError::netlink(format!("add route {ip}/32")))
            },
            to_pod.add(host),
            from_pod.add(host),
        )?;
        Ok(())
    }

    /// CNI DEL: cuts the pod off the node and leaves its veth to be deleted in a
    /// batch (see `reap`). Works without the sandbox namespace. Returns every error.
    ///
    /// The host veth is set down and moved to the dead link group in one message,
    /// then its `/32` route (if the kernel kept it) and the pod's rules go: from
    /// then on no packet reaches or leaves the pod through the node. The veth is
    /// found by name and touched only when it is the sandbox's
    /// ([`LinuxHost::veth_is_the_sandboxs`]), so another sandbox's veth of the same
    /// name is never cut off. After an error the veth is deleted at once, so that
    /// the caller's retry finds the state the error describes.
    pub async fn unplumb_pod_now(&self, pod: &PlumbedPod, netns: Option<&str>) -> Vec<LinuxError> {
        self.reaper.activity();
        let host = self.handle();
        let mut errors = Vec::new();
        let mut parked = None;
        match nl::link_by_name(host, &pod.host_veth).await {
            Ok(Some(link)) => {
                let ours = self.veth_is_the_sandboxs(&link, pod, netns).await;
                if ours {
                    let index = link.header.index;
                    let dead = LinkUnspec::new_with_index(index)
                        .down()
                        .link_group(self.reaper.group())
                        .build();
                    match ok_if_missing(host.link().set(dead).execute().await) {
                        Ok(()) => parked = Some(index),
                        Err(e) => errors.push(LinuxError::netlink(format!(
                            "set veth {} down",
                            pod.host_veth
                        ))(e)),
                    }
                } else {
                    // Same pod name, another sandbox: its veth is not ours to cut.
                    tracing::info!(veth = %pod.host_veth, "veth belongs to another sandbox of the pod; kept");
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        let (routes, rules) =
            match tokio::try_join!(nl::routes_v4(&self.conn), nl::rules_v4(&self.conn)) {
                Ok(x) => x,
                Err(e) => {
                    errors.push(e);
                    return self.delete_parked_now(pod, parked, errors).await;
                }
            };
        let pod_route = |r: &rtnetlink::packet_route::route::RouteMessage| {
            nl::route_table(r) == u32::from(MAIN_TABLE) && nl::route_dst(r) == Some((pod.ip, 32))
        };
        let mut still_routed = false;
        for route in routes.into_iter().filter(pod_route) {
            if parked.is_some() && nl::route_oif(&route) == parked {
                // IPv4 drops a down link's routes; should a kernel keep one, it goes.
                if let Err(e) = ok_if_missing(host.route().del(route).execute().await) {
                    errors.push(LinuxError::netlink(format!("delete route {}/32", pod.ip))(
                        e,
                    ));
                }
            } else {
                // A live link still routes the address: a newer sandbox got it.
                still_routed = true;
            }
        }
        if !still_routed {
            let [to_pod, from_pod] = self.pod_rules(pod.ip, pod.table);
            nl::delete_rules(
                host,
                rules,
                |s| {
                    (s.priority == to_pod.priority && s.dst == Some(pod.ip))
                        || (s.priority == from_pod.priority && s.src == Some(pod.ip))
                },
                &mut errors,
            )
            .await;
        }
        if !errors.is_empty() {
            return self.delete_parked_now(pod, parked, errors).await;
        }
        if parked.is_some() {
            self.reaper.parked();
        }
        errors
    }

    /// Whether host veth `link` is the one `pod`'s sandbox was plumbed with: by its
    /// MAC when the pod's is known (derived from the container id), else by its
    /// peer being in the sandbox `netns`. Unproven (no MAC, no sandbox to look in)
    /// is not the sandbox's: the veth exists, so its peer's namespace does too, and
    /// some sandbox may use it.
    async fn veth_is_the_sandboxs(
        &self,
        link: &LinkMessage,
        pod: &PlumbedPod,
        netns: Option<&str>,
    ) -> bool {
        if let Some(mac) = pod.host_mac {
            return nl::link_mac(link) == Some(mac);
        }
        let Some(peer) = nl::link_peer_index(link) else {
            return false;
        };
        let Some(sandbox) = netns
            .filter(|n| !n.is_empty())
            .and_then(|n| NetNs::open(n).ok())
        else {
            tracing::info!(veth = %pod.host_veth, "neither the MAC nor the sandbox of this veth is known: kept");
            return false;
        };
        let Ok(conn) = sandbox.connect().await else {
            return false;
        };
        match nl::link_by_index(&conn.handle, peer).await {
            Ok(Some(p)) => {
                nl::link_is_veth(&p) && nl::link_peer_index(&p) == Some(link.header.index)
            }
            _ => false,
        }
    }

    /// After an error, the parked veth goes at once.
    async fn delete_parked_now(
        &self,
        pod: &PlumbedPod,
        parked: Option<u32>,
        mut errors: Vec<LinuxError>,
    ) -> Vec<LinuxError> {
        if let Some(index) = parked
            && let Err(e) = ok_if_missing(self.handle().link().del(index).execute().await)
        {
            errors.push(LinuxError::netlink(format!(
                "delete veth {}",
                pod.host_veth
            ))(e));
        }
        errors
    }

    /// CNI CHECK: everything ADD created, looked up live in both namespaces.
    /// Returns the list of what is missing or different (empty when all is well).
    pub async fn verify_pod_now(
        &self,
        pod: &PodPlumbing,
        plumbed: &PlumbedPod,
    ) -> Result<Vec<String>, LinuxError> {
        let host = self.handle();
        let mut missing = Vec::new();
        let ip = plumbed.ip;
        let (link, routes, rules) = tokio::try_join!(
            nl::link_by_name(host, &plumbed.host_veth),
            nl::routes_v4(&self.conn),
            nl::rules_v4(&self.conn)
        )?;
        let host_mac = match &link {
            None => {
                missing.push(format!("host veth {}", plumbed.host_veth));
                None
            }
            Some(link) => {
                if !nl::link_is_up(link) {
                    missing.push(format!("host veth {} is down", plumbed.host_veth));
                }
                let mac = nl::link_mac(link);
                if plumbed.host_mac.is_some() && mac != plumbed.host_mac {
                    missing.push(format!("host veth {} has another MAC", plumbed.host_veth));
                }
                let routed = routes.iter().any(|r| {
                    nl::route_table(r) == u32::from(MAIN_TABLE)
                        && nl::route_dst(r) == Some((ip, 32))
                        && nl::route_oif(r) == Some(link.header.index)
                });
                if !routed {
                    missing.push(format!("route {ip}/32 dev {}", plumbed.host_veth));
                }
                mac
            }
        };
        for want in self.pod_rules(ip, plumbed.table) {
            let found = rules.iter().any(|r| {
                RuleSpec::of(r).as_ref() == Some(&want) && RuleSpec::action_is_to_table(r)
            });
            if !found {
                missing.push(format!("rule {want}"));
            }
        }
        match NetNs::open(&pod.netns) {
            Err(e) => missing.push(format!("sandbox namespace: {e}")),
            Ok(sandbox) => {
                let conn = sandbox.connect().await?;
                missing.extend(verify_sandbox(&conn, &pod.pod.ifname, ip, host_mac).await?);
            }
        }
        Ok(missing)
    }
}

/// Inside the sandbox: `<ip>/32`, `169.254.1.1 dev <if> scope link`, a permanent
/// neighbour for it with the host veth's MAC, and `default via 169.254.1.1`.
///
/// Each step needs the one before (a route needs the link up, the default route
/// its gateway's link route), but the kernel handles one socket's requests in
/// order: all five are sent at once and answered in one round trip.
async fn configure_sandbox(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    host_mac: [u8; 6],
) -> Result<(), LinuxError> {
    let up = LinkUnspec::new_with_index(index).up().build();
    let link_route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(POD_GATEWAY, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(POD_GATEWAY)
        .output_interface(index)
        .build();
    let mut address = h.address().add(index, IpAddr::V4(ip), 32);
    let address = address.message_mut().clone();
    let mut neighbour = h
        .neighbours()
        .add(index, IpAddr::V4(POD_GATEWAY))
        .link_layer_address(&host_mac)
        .state(NeighbourState::Permanent);
    let neighbour = neighbour.message_mut().clone();
    let upsert = NLM_F_CREATE | NLM_F_REPLACE;
    let steps = [
        (
            RouteNetlinkMessage::SetLink(up),
            0,
            "set sandbox interface up".to_string(),
        ),
        (
            RouteNetlinkMessage::NewRoute(link_route),
            upsert,
            format!("add route {POD_GATEWAY} dev {index} scope link in sandbox"),
        ),
        (
            RouteNetlinkMessage::NewRoute(default),
            upsert,
            "add default route in sandbox".to_string(),
        ),
        (
            RouteNetlinkMessage::NewAddress(address),
            upsert,
            format!("add address {ip}/32 in sandbox"),
        ),
        (
            RouteNetlinkMessage::NewNeighbour(neighbour),
            upsert,
            "add gateway neighbour in sandbox".to_string(),
        ),
    ];
    let mut sent = Vec::with_capacity(steps.len());
    for (message, flags, what) in steps {
        let request = nl::send(h, message, flags).map_err(LinuxError::netlink(what.clone()))?;
        sent.push((request, what));
    }
    // The first failure is the cause; later ones follow from it.
    for (request, what) in sent {
        nl::answered(request)
            .await
            .map_err(LinuxError::netlink(what))?;
    }
    Ok(())
}

/// What ADD needs to know of a new pair.
struct CreatedVeth {
    host_index: u32,
    host_mac: [u8; 6],
    sandbox_index: u32,
    sandbox_mac: Option<[u8; 6]>,
}

async fn verify_sandbox(
    conn: &NetlinkConn,
    ifname: &str,
    ip: Ipv4Addr,
    host_mac: Option<[u8; 6]>,
) -> Result<Vec<String>, LinuxError> {
    let mut missing = Vec::new();
    let h = &conn.handle;
    let Some(link): Option<LinkMessage> = nl::link_by_name(h, ifname).await? else {
        missing.push(format!("sandbox interface {ifname}"));
        return Ok(missing);
    };
    if !nl::link_is_up(&link) {
        missing.push(format!("sandbox interface {ifname} is down"));
    }
    let index = link.header.index;
    let addresses = nl::addresses_v4(conn, index).await?;
    let has_address = addresses.iter().any(|a| {
        a.header.prefix_len == 32
            && a.attributes.iter().any(|x| {
                matches!(x, AddressAttribute::Address(IpAddr::V4(v)) | AddressAttribute::Local(IpAddr::V4(v)) if *v == ip)
            })
    });
    if !has_address {
        missing.push(format!("address {ip}/32 on {ifname}"));
    }
    let routes = nl::routes_v4(conn).await?;
    let main: Vec<_> = routes
        .iter()
        .filter(|r| nl::route_table(r) == u32::from(MAIN_TABLE) && nl::route_oif(r) == Some(index))
        .collect();
    if !main
        .iter()
        .any(|r| nl::route_dst(r) == Some((POD_GATEWAY, 32)))
    {
        missing.push(format!("route {POD_GATEWAY} dev {ifname} scope link"));
    }
    if !main
        .iter()
        .any(|r| nl::route_dst(r).is_none() && nl::route_gateway(r) == Some(POD_GATEWAY))
    {
        missing.push(format!("default via {POD_GATEWAY} dev {ifname}"));
    }
    let neighbours = nl::neighbours(conn).await?;
    let neighbour_ok = neighbours.iter().any(|n| {
        n.header.ifindex == index
            && n.header.state == NeighbourState::Permanent
            && n.attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == POD_GATEWAY))
            && host_mac.is_none_or(|mac| {
                n.attributes
                    .iter()
                    .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l[..] == mac[..]))
            })
    });
    if !neighbour_ok {
        missing.push(format!(
            "permanent neighbour {POD_GATEWAY} with the host veth's MAC"
        ));
    }
    Ok(missing)
}
