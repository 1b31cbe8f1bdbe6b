//! Lookups that keep the simulator fast with a thousand instances and tens of
//! thousands of NICs: NICs by vxnet, instance and name, who holds each address,
//! and how many NICs attach jobs are bringing to each instance. The state updates
//! them on every change; nothing else writes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// What holds an address of a vxnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A NIC (its id).
    Nic(String),
    /// A VIP (its id).
    Vip(String),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Nic(id) => write!(f, "nic [{id}]"),
            Holder::Vip(id) => write!(f, "vip [{id}]"),
        }
    }
}

/// The indexes.
#[derive(Debug, Clone, Default)]
pub struct Index {
    by_vxnet: HashMap<String, BTreeSet<String>>,
    by_instance: HashMap<String, BTreeSet<String>>,
    by_name: HashMap<String, BTreeSet<String>>,
    addresses: HashMap<String, BTreeMap<Ipv4Addr, Holder>>,
    attaching: HashMap<String, usize>,
}

fn remove_from(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Index {
    /// A NIC was created (with `ip` unless it has none).
    pub fn add_nic(&mut self, id: &str, vxnet: &str, name: &str, ip: Option<Ipv4Addr>) {
        self.by_vxnet
            .entry(vxnet.to_string())
            .or_default()
            .insert(id.to_string());
        self.by_name
            .entry(name.to_string())
            .or_default()
            .insert(id.to_string());
        if let Some(ip) = ip {
            self.hold(vxnet, ip, Holder::Nic(id.to_string()));
        }
    }

    /// A NIC was deleted or vanished.
    pub fn remove_nic(
        &mut self,
        id: &str,
        vxnet: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        instance: Option<&str>,
    ) {
        remove_from(&mut self.by_vxnet, vxnet, id);
        remove_from(&mut self.by_name, name, id);
        if let Some(instance) = instance {
            remove_from(&mut self.by_instance, instance, id);
        }
        if let Some(ip) = ip {
            self.release(vxnet, ip);
        }
    }

    /// A NIC was attached to `instance`.
    pub fn attach(&mut self, id: &str, instance: &str) {
        self.by_instance
            .entry(instance.to_string())
            .or_default()
            .insert(id.to_string());
    }

    /// A NIC was detached from `instance`.
    pub fn detach(&mut self, id: &str, instance: &str) {
        remove_from(&mut self.by_instance, instance, id);
    }

    /// `ip` of `vxnet` is now held by `holder`.
    pub fn hold(&mut self, vxnet: &str, ip: Ipv4Addr, holder: Holder) {
        self.addresses
            .entry(vxnet.to_string())
            .or_default()
            .insert(ip, holder);
    }

    /// `ip` of `vxnet` is free again.
    pub fn release(&mut self, vxnet: &str, ip: Ipv4Addr) {
        if let Some(m) = self.addresses.get_mut(vxnet) {
            m.remove(&ip);
        }
    }

    /// Who holds `ip` in `vxnet`.
    pub fn holder(&self, vxnet: &str, ip: Ipv4Addr) -> Option<&Holder> {
        self.addresses.get(vxnet).and_then(|m| m.get(&ip))
    }

    /// The lowest `count` free addresses in `first..=last` of `vxnet` (fewer if
    /// there are not that many).
    pub fn free_in(
        &self,
        vxnet: &str,
        first: Ipv4Addr,
        last: Ipv4Addr,
        count: usize,
    ) -> Vec<Ipv4Addr> {
        let used = self.addresses.get(vxnet);
        (u32::from(first)..=u32::from(last))
            .map(Ipv4Addr::from)
            .filter(|ip| used.is_none_or(|m| !m.contains_key(ip)))
            .take(count)
            .collect()
    }

    /// The NICs of `vxnet`.
    pub fn nics_in_vxnet(&self, vxnet: &str) -> impl Iterator<Item = &String> {
        self.by_vxnet.get(vxnet).into_iter().flatten()
    }

    /// How many NICs `vxnet` has.
    pub fn nic_count_in_vxnet(&self, vxnet: &str) -> usize {
        self.by_vxnet.get(vxnet).map_or(0, BTreeSet::len)
    }

    /// The NICs attached to `instance`.
    pub fn nics_of_instance(&self, instance: &str) -> impl Iterator<Item = &String> {
        self.by_instance.get(instance).into_iter().flatten()
    }

    /// How many NICs are attached to `instance`.
    pub fn nic_count_of_instance(&self, instance: &str) -> usize {
        self.by_instance.get(instance).map_or(0, BTreeSet::len)
    }

    /// The NICs named `name`.
    pub fn nics_named(&self, name: &str) -> impl Iterator<Item = &String> {
        self.by_name.get(name).into_iter().flatten()
    }

    /// `count` more NICs are on their way to `instance` (an attach job started).
    pub fn attaching_started(&mut self, instance: &str, count: usize) {
        *self.attaching.entry(instance.to_string()).or_default() += count;
    }

    /// An attach job of `count` NICs to `instance` ended.
    pub fn attaching_ended(&mut self, instance: &str, count: usize) {
        if let Some(n) = self.attaching.get_mut(instance) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                self.attaching.remove(instance);
            }
        }
    }

    /// NICs on their way to `instance`.
    pub fn attaching(&self, instance: &str) -> usize {
        self.attaching.get(instance).copied().unwrap_or(0)
    }
}
