//! Address ranges and blocks of a vxnet.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The smallest block: 16 addresses. Smaller blocks would make a busy node hold
/// many reservations (one `AllocateVips` each) and fragment the vxnet.
pub const MIN_BLOCK: u32 = 16;

/// An inclusive range of IPv4 addresses, `first..=last` — the form of
/// `AllocateVips`' `vip_range` (`"a.b.c.d-a.b.c.e"`, [`fmt::Display`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddrRange {
    /// The first address.
    pub first: Ipv4Addr,
    /// The last address (inclusive).
    pub last: Ipv4Addr,
}

impl AddrRange {
    /// `first..=last`; `None` when `last < first`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Option<Self> {
        (u32::from(first) <= u32::from(last)).then_some(Self { first, last })
    }

    /// How many addresses it holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Never true: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True when `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }

    /// True when the two ranges share an address.
    pub fn overlaps(&self, other: &AddrRange) -> bool {
        u32::from(self.first) <= u32::from(other.last)
            && u32::from(other.first) <= u32::from(self.last)
    }

    /// Its addresses, in order.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The addresses of a vxnet a VIP may hold: from the network address + 2 to the
/// broadcast address - 2. The cloud keeps the network address, the gateway (`.1`),
/// the address below broadcast (`.254` of a /24) and broadcast; the simulator
/// refuses them as the cloud does. `None` for a network too small to hold any.
pub fn usable_range(cidr: Ipv4Net) -> Option<AddrRange> {
    let net = u32::from(cidr.network());
    let bcast = u32::from(cidr.broadcast());
    if bcast < net + 4 {
        return None;
    }
    AddrRange::new(Ipv4Addr::from(net + 2), Ipv4Addr::from(bcast - 2))
}

/// One node-affine block: an aligned power-of-two window of the vxnet and the
/// part of it the cloud lets a VIP hold (the window clipped to the
/// [`usable_range`]), which is what is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Block {
    /// The aligned window, e.g. `172.16.1.0/25`; its size is the block's size.
    pub window: Ipv4Net,
    /// The reserved addresses: the window's usable part, e.g. `.2-.127`.
    pub range: AddrRange,
}

impl Block {
    /// The block of `window` inside `cidr`; `None` when the window is not inside
    /// the vxnet or holds no usable address.
    pub fn in_vxnet(cidr: Ipv4Net, window: Ipv4Net) -> Option<Block> {
        if !cidr.contains(&window) {
            return None;
        }
        let usable = usable_range(cidr)?;
        let first = u32::from(window.network()).max(u32::from(usable.first));
        let last = u32::from(window.broadcast()).min(u32::from(usable.last));
        let range = AddrRange::new(Ipv4Addr::from(first), Ipv4Addr::from(last))?;
        Some(Block { window, range })
    }

    /// The window's size (a power of two).
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.window.prefix_len()))
    }

    /// How many addresses it holds (the size less the cloud's reserved addresses).
    pub fn capacity(&self) -> u32 {
        self.range.len()
    }

    /// The `vip_name` of its VIPs: `hostnic:<node>:<window>`, so a listing maps
    /// every VIP back to its node and block, even for adjacent blocks of one node.
    pub fn vip_name(&self, node: &str) -> String {
        format!("hostnic:{node}:{}", self.window)
    }

    /// Reads a [`Block::vip_name`] back: the node and the window.
    pub fn parse_vip_name(name: &str) -> Option<(&str, Ipv4Net)> {
        let rest = name.strip_prefix("hostnic:")?;
        let (node, window) = rest.rsplit_once(':')?;
        Some((node, window.parse().ok()?))
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.window, self.range)
    }
}

/// The aligned windows of `size` addresses inside `cidr`, lowest first.
pub(crate) fn windows(cidr: Ipv4Net, size: u32) -> impl Iterator<Item = Ipv4Net> {
    let prefix = 32 - size.trailing_zeros() as u8;
    let start = u32::from(cidr.network()) as u64;
    let end = u32::from(cidr.broadcast()) as u64 + 1;
    (start..end)
        .step_by(size as usize)
        .filter_map(move |a| Ipv4Net::new(Ipv4Addr::from(a as u32), prefix).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_slash_24_holds_252_vip_addresses_from_dot_2_to_dot_253() {
        let r = usable_range(net("172.16.1.0/24")).unwrap();
        assert_eq!(r.to_string(), "172.16.1.2-172.16.1.253");
        assert_eq!(r.len(), 252);
        assert!(usable_range(net("10.0.0.0/30")).is_none());
    }

    #[test]
    fn blocks_are_windows_clipped_to_the_usable_range() {
        let cidr = net("172.16.1.0/24");
        let low = Block::in_vxnet(cidr, net("172.16.1.0/25")).unwrap();
        assert_eq!(low.range.to_string(), "172.16.1.2-172.16.1.127");
        assert_eq!((low.size(), low.capacity()), (128, 126));
        let high = Block::in_vxnet(cidr, net("172.16.1.240/28")).unwrap();
        assert_eq!(high.range.to_string(), "172.16.1.240-172.16.1.253");
        let mid = Block::in_vxnet(cidr, net("172.16.1.16/28")).unwrap();
        assert_eq!(mid.capacity(), 16);
        assert!(Block::in_vxnet(cidr, net("172.16.2.0/28")).is_none());
        let windows: Vec<_> = windows(cidr, 64).map(|w| w.to_string()).collect();
        assert_eq!(
            windows,
            [
                "172.16.1.0/26",
                "172.16.1.64/26",
                "172.16.1.128/26",
                "172.16.1.192/26"
            ]
        );
    }

    #[test]
    fn vip_names_round_trip_node_names_with_colons() {
        let b = Block::in_vxnet(net("10.0.0.0/24"), net("10.0.0.32/27")).unwrap();
        let name = b.vip_name("a:b");
        assert_eq!(name, "hostnic:a:b:10.0.0.32/27");
        assert_eq!(Block::parse_vip_name(&name), Some(("a:b", b.window)));
        assert_eq!(Block::parse_vip_name("other"), None);
    }
}
