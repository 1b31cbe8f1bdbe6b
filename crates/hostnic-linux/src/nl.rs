//! Small helpers over rtnetlink: find links, dump rules and routes, and treat
//! "already exists" / "already gone" answers as success where that is idempotence.

use std::net::{IpAddr, Ipv4Addr};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use crate::error::{LinuxError, errno_of, libc_errno};
use crate::netns::NetlinkConn;

/// Turns an "already exists" answer into success.
pub(crate) fn ok_if_exists(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno_of(&e) == Some(libc_errno::EEXIST) => Ok(()),
        other => other,
    }
}

/// Turns an "it is not there" answer into success (delete of something gone).
pub(crate) fn ok_if_missing(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e)
            if matches!(
                errno_of(&e),
                Some(libc_errno::ENODEV)
                    | Some(libc_errno::ENOENT)
                    | Some(libc_errno::ESRCH)
                    | Some(libc_errno::EADDRNOTAVAIL)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The interface name of a link message.
pub(crate) fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The MAC address of a link message, when it is an Ethernet-like link.
pub(crate) fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(a) => <[u8; 6]>::try_from(a.as_slice()).ok(),
        _ => None,
    })
}

/// The MTU of a link message.
pub(crate) fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// True when the link is a veth.
pub(crate) fn link_is_veth(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// The link's group (0, the default group, when the kernel sent none).
pub(crate) fn link_group(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Group(g) => Some(*g),
            _ => None,
        })
        .unwrap_or(0)
}

/// The index of a veth's peer, in the peer's namespace (`IFLA_LINK`).
pub(crate) fn link_peer_index(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

/// True when the link is administratively up.
pub(crate) fn link_is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

/// True for the loopback device.
pub(crate) fn link_is_loopback(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Loopback)
}

/// Every link of the namespace.
pub(crate) async fn links(conn: &NetlinkConn) -> Result<Vec<LinkMessage>, LinuxError> {
    let _one_dump = conn.dump_lock.lock().await;
    conn.handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(LinuxError::netlink("dump links"))
}

/// A request already handed to the netlink socket; [`answered`] reads its answer.
pub(crate) type Sent = BoxStream<'static, NetlinkMessage<RouteNetlinkMessage>>;

/// Sends `message` now, with `NLM_F_REQUEST | NLM_F_ACK | flags`, and returns
/// without waiting for the answer. Requests sent on one handle reach the kernel
/// in the order they were sent, and the kernel handles each before reading the
/// next: so a chain (link up, then a route through it, then a route via that)
/// can be sent at once and answered in one round trip instead of three.
pub(crate) fn send(
    handle: &Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<Sent, rtnetlink::Error> {
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    Ok(handle.clone().request(request)?.boxed())
}

/// Waits for the answer to a [`send`]: the kernel's error, or the messages it
/// sent back before its acknowledgement (an `NLM_F_ECHO` copy).
pub(crate) async fn answered(mut sent: Sent) -> Result<Vec<RouteNetlinkMessage>, rtnetlink::Error> {
    let mut echoed = Vec::new();
    while let Some(message) = sent.next().await {
        match message.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
            NetlinkPayload::InnerMessage(m) => echoed.push(m),
            _ => {}
        }
    }
    Ok(echoed)
}

/// The link named `name`, if it exists.
pub(crate) async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, LinuxError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if matches!(errno_of(&e), Some(libc_errno::ENODEV)) => Ok(None),
        Err(e) => Err(LinuxError::netlink(format!("get link {name}"))(e)),
    }
}

/// The link with index `index`, if it exists.
pub(crate) async fn link_by_index(
    handle: &Handle,
    index: u32,
) -> Result<Option<LinkMessage>, LinuxError> {
    match handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if matches!(errno_of(&e), Some(libc_errno::ENODEV)) => Ok(None),
        Err(e) => Err(LinuxError::netlink(format!("get link {index}"))(e)),
    }
}

/// The link whose MAC is `mac`, if any.
pub(crate) async fn link_by_mac(
    conn: &NetlinkConn,
    mac: [u8; 6],
) -> Result<Option<LinkMessage>, LinuxError> {
    Ok(links(conn)
        .await?
        .into_iter()
        .find(|l| link_mac(l) == Some(mac)))
}

/// The IPv4 addresses of link `index`.
pub(crate) async fn addresses_v4(
    conn: &NetlinkConn,
    index: u32,
) -> Result<Vec<AddressMessage>, LinuxError> {
    let _one_dump = conn.dump_lock.lock().await;
    let all: Vec<AddressMessage> = conn
        .handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(LinuxError::netlink(format!(
            "dump addresses of link {index}"
        )))?;
    Ok(all
        .into_iter()
        .filter(|a| a.header.family == AddressFamily::Inet && a.header.index == index)
        .collect())
}

/// Every neighbour entry.
pub(crate) async fn neighbours(conn: &NetlinkConn) -> Result<Vec<NeighbourMessage>, LinuxError> {
    let _one_dump = conn.dump_lock.lock().await;
    conn.handle
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(LinuxError::netlink("dump neighbours"))
}

/// Every IPv4 policy rule.
pub(crate) async fn rules_v4(conn: &NetlinkConn) -> Result<Vec<RuleMessage>, LinuxError> {
    let _one_dump = conn.dump_lock.lock().await;
    conn.handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(LinuxError::netlink("dump rules"))
}

/// Every IPv4 route of every table.
pub(crate) async fn routes_v4(conn: &NetlinkConn) -> Result<Vec<RouteMessage>, LinuxError> {
    let mut dump = RouteMessageBuilder::<Ipv4Addr>::new().build();
    // Table 0 (unspec) in a dump request means "all tables".
    dump.header.table = 0;
    let _one_dump = conn.dump_lock.lock().await;
    conn.handle
        .route()
        .get(dump)
        .execute()
        .try_collect()
        .await
        .map_err(LinuxError::netlink("dump routes"))
}

/// A rule as hostnic writes it, for matching against dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleSpec {
    pub priority: u32,
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub fwmark: Option<u32>,
    pub table: u32,
}

impl RuleSpec {
    /// Parses the fields hostnic cares about out of a dumped rule.
    pub(crate) fn of(rule: &RuleMessage) -> Option<RuleSpec> {
        if rule.header.family != AddressFamily::Inet {
            return None;
        }
        let mut spec = RuleSpec {
            priority: 0,
            src: None,
            dst: None,
            fwmark: None,
            table: rule.header.table as u32,
        };
        for attr in &rule.attributes {
            match attr {
                RuleAttribute::Priority(p) => spec.priority = *p,
                RuleAttribute::Source(IpAddr::V4(a)) if rule.header.src_len == 32 => {
                    spec.src = Some(*a)
                }
                RuleAttribute::Destination(IpAddr::V4(a)) if rule.header.dst_len == 32 => {
                    spec.dst = Some(*a)
                }
                RuleAttribute::FwMark(m) => spec.fwmark = Some(*m),
                RuleAttribute::Table(t) => spec.table = *t,
                _ => {}
            }
        }
        Some(spec)
    }

    /// True when the kernel has this rule with the "to table" action.
    pub(crate) fn action_is_to_table(rule: &RuleMessage) -> bool {
        rule.header.action == RuleAction::ToTable
    }

    /// Adds the rule (action "to table"); an identical existing rule is success.
    pub(crate) async fn add(&self, handle: &Handle) -> Result<(), LinuxError> {
        let mut req = handle
            .rule()
            .add()
            .v4()
            .priority(self.priority)
            .table_id(self.table)
            // Without an explicit action the kernel stores "unspec" and answers
            // EINVAL for every packet that matches (`ip rule` shows `lookup T none`).
            .action(RuleAction::ToTable);
        if let Some(src) = self.src {
            req = req.source_prefix(src, 32);
        }
        if let Some(dst) = self.dst {
            req = req.destination_prefix(dst, 32);
        }
        if let Some(mark) = self.fwmark {
            req = req.fw_mark(mark);
            req.message_mut()
                .attributes
                .push(RuleAttribute::FwMask(mark));
        }
        ok_if_exists(req.execute().await).map_err(LinuxError::netlink(format!("add rule {self}")))
    }
}

impl std::fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.priority)?;
        if let Some(s) = self.src {
            write!(f, " from {s}")?;
        }
        if let Some(d) = self.dst {
            write!(f, " to {d}")?;
        }
        if let Some(m) = self.fwmark {
            write!(f, " fwmark {m:#x}/{m:#x}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

/// Deletes every dumped rule for which `pick` is true; "already gone" is success.
pub(crate) async fn delete_rules(
    handle: &Handle,
    rules: Vec<RuleMessage>,
    pick: impl Fn(&RuleSpec) -> bool,
    errors: &mut Vec<LinuxError>,
) {
    for rule in rules {
        let Some(spec) = RuleSpec::of(&rule) else {
            continue;
        };
        if pick(&spec)
            && let Err(e) = ok_if_missing(handle.rule().del(rule).execute().await)
        {
            errors.push(LinuxError::netlink(format!("delete rule {spec}"))(e));
        }
    }
}

/// The table of a dumped route.
pub(crate) fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(route.header.table as u32)
}

/// The output interface of a dumped route.
pub(crate) fn route_oif(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// The gateway of a dumped route.
pub(crate) fn route_gateway(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
        _ => None,
    })
}

/// The destination of a dumped route (`None` for a default route).
pub(crate) fn route_dst(route: &RouteMessage) -> Option<(Ipv4Addr, u8)> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(d)) => {
            Some((*d, route.header.destination_prefix_length))
        }
        _ => None,
    })
}

/// The metric of a dumped route (0 if absent).
pub(crate) fn route_metric(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_spec_reads_back_what_hostnic_writes() {
        let mut rule = RuleMessage::default();
        rule.header.family = AddressFamily::Inet;
        rule.header.src_len = 32;
        rule.header.table = 0;
        rule.header.action = RuleAction::ToTable;
        rule.attributes = vec![
            RuleAttribute::Priority(1536),
            RuleAttribute::Source(IpAddr::V4(Ipv4Addr::new(172, 20, 1, 5))),
            RuleAttribute::FwMark(0x100_0000),
            RuleAttribute::Table(1001),
        ];
        let spec = RuleSpec::of(&rule).unwrap();
        assert_eq!(
            spec,
            RuleSpec {
                priority: 1536,
                src: Some(Ipv4Addr::new(172, 20, 1, 5)),
                dst: None,
                fwmark: Some(0x100_0000),
                table: 1001,
            }
        );
        assert_eq!(
            spec.to_string(),
            "1536: from 172.20.1.5 fwmark 0x1000000/0x1000000 lookup 1001"
        );
        assert!(RuleSpec::action_is_to_table(&rule));
    }

    #[test]
    fn a_wider_source_prefix_is_not_a_pod_rule() {
        let mut rule = RuleMessage::default();
        rule.header.family = AddressFamily::Inet;
        rule.header.src_len = 16;
        rule.attributes = vec![RuleAttribute::Source(IpAddr::V4(Ipv4Addr::new(
            172, 20, 0, 0,
        )))];
        assert_eq!(RuleSpec::of(&rule).unwrap().src, None);
    }
}
