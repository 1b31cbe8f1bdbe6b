//! Kernel notifications about links and IPv4 addresses, so the agent reacts to a
//! NIC's arrival (and to DHCP putting an address back on it) from the kernel
//! instead of polling the cloud.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_core::types::NicId;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::LinuxError;
use crate::host::LinuxHost;
use crate::nl;

/// A change of a link or of its IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link with this MAC exists (new, or changed: up/down, renamed).
    LinkChanged {
        /// The link's MAC, i.e. the NIC id.
        nic: NicId,
        /// The kernel's name for it.
        name: String,
        /// Administratively up.
        up: bool,
    },
    /// The link with this MAC disappeared (NIC detached).
    LinkRemoved {
        /// The link's MAC.
        nic: NicId,
    },
    /// An IPv4 address was added to the link with this MAC.
    Ipv4AddressAdded {
        /// The link's MAC.
        nic: NicId,
        /// The address.
        address: Ipv4Addr,
    },
}

const GROUPS: &[MulticastGroup] = &[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr];

impl LinuxHost {
    /// Subscribes to link and IPv4 address notifications of the host namespace.
    /// Events that happen after this returns are delivered; the stream ends if
    /// the netlink socket fails.
    pub async fn link_events(&self) -> Result<BoxStream<'static, LinkEvent>, LinuxError> {
        let mc = self.host_ns.connect_multicast(GROUPS).await?;
        // Addresses only carry a link index: keep an index → MAC map.
        let mut macs: HashMap<u32, [u8; 6]> = nl::links(&self.conn)
            .await?
            .iter()
            .filter_map(|l| nl::link_mac(l).map(|m| (l.header.index, m)))
            .collect();
        let conn = mc.conn;
        let stream = mc.messages.filter_map(move |(msg, _)| {
            // The connection lives as long as the stream.
            let _keep = &conn;
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    nl::link_mac(&link).map(|mac| {
                        macs.insert(link.header.index, mac);
                        LinkEvent::LinkChanged {
                            nic: NicId::from_mac(mac),
                            name: nl::link_name(&link).unwrap_or_default().to_string(),
                            up: nl::link_is_up(&link),
                        }
                    })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    let mac = nl::link_mac(&link).or_else(|| macs.get(&link.header.index).copied());
                    macs.remove(&link.header.index);
                    mac.map(|mac| LinkEvent::LinkRemoved {
                        nic: NicId::from_mac(mac),
                    })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(addr))
                    if addr.header.family == AddressFamily::Inet =>
                {
                    let address = addr.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(IpAddr::V4(v))
                        | AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                        _ => None,
                    });
                    match (macs.get(&addr.header.index), address) {
                        (Some(mac), Some(address)) => Some(LinkEvent::Ipv4AddressAdded {
                            nic: NicId::from_mac(*mac),
                            address,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            futures::future::ready(event)
        });
        Ok(stream.boxed())
    }
}
