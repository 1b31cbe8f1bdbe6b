//! Claiming pod addresses on a shared NIC's link (shared-NIC mode): a kernel
//! proxy-ARP entry for exactly each pod address, and gratuitous ARP to announce it.
//!
//! In shared mode a pod's address is a VIP of the vxnet, not the address of a
//! NIC: the node must answer ARP for it on the vxnet's link, or the gateway and
//! the other hosts never find it. [`ArpClaims`] does it with the kernel's proxy
//! neighbour table (`ip neigh add proxy <addr> dev <link>`, `NTF_PROXY` over
//! rtnetlink): the kernel answers an ARP request for a claimed address with the
//! link's MAC, and only for the addresses claimed — never `proxy_arp=1` on the
//! link, which would answer for everything the node routes elsewhere, and no
//! ebtables.
//!
//! What the kernel needs for a proxy entry to be answered (`arp_process` in
//! `net/ipv4/arp.c`): forwarding on the link (`ip_forward`, which the node turns
//! on), a unicast route to the address through **another** device (the pod's
//! `/32` via its veth), and no proxy delay: ARP requests are broadcasts, which the
//! kernel otherwise answers after a random delay of up to `proxy_delay`
//! (0.8 s by default). [`ArpClaims::prepare_link`] sets `proxy_delay` to 0 and
//! `forwarding` to 1 on the link.
//!
//! A peer that still holds the address's old MAC (its previous owner on another
//! node, or this node before a reboot) only asks again when its entry goes
//! stale. [`ArpClaims::announce`] sends a gratuitous ARP (a request for the
//! address from the address, `sha` = the link's MAC, to the broadcast address) on
//! a raw `AF_PACKET` socket, which Linux peers and the gateway take as an update
//! of an entry they have.
//!
//! Everything runs in the namespace given (the host's; a test's own).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use nix::libc;
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike, sendto,
    socket,
};
use rtnetlink::packet_route::AddressFamily as NlFamily;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use crate::error::LinuxError;
use crate::netns::{NetNs, NetlinkConn, NetnsError};
use crate::nl;

/// A failure to claim, withdraw, list or announce an address.
#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    /// Netlink, the namespace, a missing link or a sysctl.
    #[error(transparent)]
    Linux(#[from] LinuxError),
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The raw socket for the gratuitous ARP failed.
    #[error("gratuitous ARP for {addr} on {link}: {what}: {source}")]
    Socket {
        /// The link.
        link: String,
        /// The address announced.
        addr: Ipv4Addr,
        /// The system call.
        what: &'static str,
        /// Its error.
        #[source]
        source: nix::Error,
    },
}

/// One claimed address: a proxy neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claim {
    /// The link it is claimed on.
    pub link: String,
    /// The link's index.
    pub ifindex: u32,
    /// The address.
    pub addr: Ipv4Addr,
}

/// Claims of pod addresses in one network namespace.
pub struct ArpClaims {
    ns: NetNs,
    conn: NetlinkConn,
}

impl std::fmt::Debug for ArpClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArpClaims")
            .field("ns", &self.ns.path())
            .finish()
    }
}

impl ArpClaims {
    /// Claims in namespace `ns` (its own netlink connection; needs a tokio runtime).
    pub async fn new(ns: NetNs) -> Result<Self, ArpError> {
        let conn = ns.connect().await?;
        Ok(Self { ns, conn })
    }

    /// Makes `link` answer its claims at once: `proxy_delay` 0 and `forwarding` 1.
    /// Idempotent; once per link (the shared NIC), before the first claim.
    pub async fn prepare_link(&self, link: &str) -> Result<(), ArpError> {
        self.ifindex(link).await?;
        self.sysctl(&format!("net/ipv4/neigh/{link}/proxy_delay"), "0")
            .await?;
        self.sysctl(&format!("net/ipv4/conf/{link}/forwarding"), "1")
            .await?;
        Ok(())
    }

    /// Answers ARP for `addr` on `link` (a proxy neighbour entry). Idempotent.
    pub async fn claim(&self, link: &str, addr: Ipv4Addr) -> Result<(), ArpError> {
        let ifindex = self.ifindex(link).await?;
        let added = self
            .conn
            .handle
            .neighbours()
            .add(ifindex, IpAddr::V4(addr))
            .flags(NeighbourFlags::Proxy)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        nl::ok_if_exists(added).map_err(LinuxError::netlink(format!("claim {addr} on {link}")))?;
        Ok(())
    }

    /// Stops answering ARP for `addr` on `link`. Idempotent (a claim or link
    /// already gone is success).
    pub async fn withdraw(&self, link: &str, addr: Ipv4Addr) -> Result<(), ArpError> {
        let Some(ifindex) = self.find_ifindex(link).await? else {
            return Ok(());
        };
        self.withdraw_claim(&Claim {
            link: link.to_string(),
            ifindex,
            addr,
        })
        .await
    }

    /// Withdraws one listed claim (cleanup of what [`ArpClaims::claims`] found).
    pub async fn withdraw_claim(&self, claim: &Claim) -> Result<(), ArpError> {
        let mut message = NeighbourMessage::default();
        message.header.family = NlFamily::Inet;
        message.header.ifindex = claim.ifindex;
        message.header.flags = NeighbourFlags::Proxy;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                claim.addr,
            )));
        let deleted = self.conn.handle.neighbours().del(message).execute().await;
        nl::ok_if_missing(deleted).map_err(LinuxError::netlink(format!(
            "withdraw {} on {}",
            claim.addr, claim.link
        )))?;
        Ok(())
    }

    /// Every IPv4 proxy entry of the namespace, on any link (for the cleanup and
    /// the re-claim after a restart), sorted.
    pub async fn claims(&self) -> Result<Vec<Claim>, ArpError> {
        let entries: Vec<NeighbourMessage> = {
            let _one_dump = self.conn.dump_lock.lock().await;
            self.conn
                .handle
                .neighbours()
                .get()
                .proxies()
                .set_address_family(NlFamily::Inet)
                .execute()
                .try_collect()
                .await
                .map_err(LinuxError::netlink("dump proxy neighbours"))?
        };
        let links = nl::links(&self.conn).await?;
        let mut claims: Vec<Claim> = entries
            .iter()
            .filter(|n| n.header.flags.contains(NeighbourFlags::Proxy))
            .filter_map(|n| {
                let addr = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(*a),
                    _ => None,
                })?;
                let link = links
                    .iter()
                    .find(|l| l.header.index == n.header.ifindex)
                    .and_then(|l| nl::link_name(l))
                    .unwrap_or_default()
                    .to_string();
                Some(Claim {
                    link,
                    ifindex: n.header.ifindex,
                    addr,
                })
            })
            .collect();
        claims.sort();
        Ok(claims)
    }

    /// Sends `count` gratuitous ARPs for `addr` on `link`: ARP requests with
    /// sender and target `addr`, sender MAC the link's, to the broadcast address.
    /// Peers that hold an entry for `addr` move it to this MAC.
    pub async fn announce(&self, link: &str, addr: Ipv4Addr, count: u32) -> Result<(), ArpError> {
        let found = nl::link_by_name(&self.conn.handle, link)
            .await?
            .ok_or_else(|| LinuxError::LinkNotFound(link.to_string()))?;
        let mac = nl::link_mac(&found)
            .ok_or_else(|| LinuxError::LinkNotFound(format!("{link} (no MAC)")))?;
        let ifindex = found.header.index;
        let frame = garp_frame(mac, addr);
        let link = link.to_string();
        let sent = self
            .ns
            .run(move || send_frames(ifindex, &frame, count))
            .await?;
        sent.map_err(|(what, source)| ArpError::Socket {
            link,
            addr,
            what,
            source,
        })
    }

    async fn find_ifindex(&self, link: &str) -> Result<Option<u32>, ArpError> {
        Ok(nl::link_by_name(&self.conn.handle, link)
            .await?
            .map(|l| l.header.index))
    }

    async fn ifindex(&self, link: &str) -> Result<u32, ArpError> {
        self.find_ifindex(link)
            .await?
            .ok_or_else(|| LinuxError::LinkNotFound(link.to_string()).into())
    }

    async fn sysctl(&self, key: &str, value: &str) -> Result<(), ArpError> {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        let written = self.ns.run(move || std::fs::write(&path, value)).await?;
        written.map_err(|source| LinuxError::Sysctl {
            key: key.to_string(),
            source,
        })?;
        Ok(())
    }
}

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame carrying a gratuitous ARP request for `addr` from `mac`.
fn garp_frame(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST); // destination
    f.extend_from_slice(&mac); // source
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]); // address lengths
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac); // sender MAC
    f.extend_from_slice(&addr.octets()); // sender IP
    f.extend_from_slice(&[0; 6]); // target MAC: unknown
    f.extend_from_slice(&addr.octets()); // target IP = sender IP: gratuitous
    f
}

/// Sends `frame` `count` times on link `ifindex` from a raw packet socket made
/// in the calling thread's namespace.
fn send_frames(ifindex: u32, frame: &[u8], count: u32) -> Result<(), (&'static str, nix::Error)> {
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        // Sending only: protocol 0 receives nothing.
        None::<SockProtocol>,
    )
    .map_err(|e| ("socket(AF_PACKET, SOCK_RAW)", e))?;
    let raw = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
    };
    // SAFETY: `raw` is a fully initialised `sockaddr_ll` that lives across the
    // call, and the length given is its size.
    #[allow(unsafe_code)]
    let dest = unsafe {
        LinkAddr::from_raw(
            (&raw as *const libc::sockaddr_ll).cast(),
            Some(std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    }
    .ok_or(("sockaddr_ll", nix::Error::EINVAL))?;
    for _ in 0..count.max(1) {
        sendto(fd.as_raw_fd(), frame, &dest, MsgFlags::empty()).map_err(|e| ("sendto", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_is_a_request_from_the_address_for_itself() {
        let mac = [0x02, 0, 0, 0, 0, 0x42];
        let addr = Ipv4Addr::new(172, 16, 1, 9);
        let f = garp_frame(mac, addr);
        assert_eq!(f.len(), 42, "14 bytes of Ethernet header + 28 of ARP");
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "opcode: request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &addr.octets(), "sender IP");
        assert_eq!(&f[32..38], &[0; 6], "target MAC");
        assert_eq!(&f[38..42], &addr.octets(), "target IP");
    }
}
