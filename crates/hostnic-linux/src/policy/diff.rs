//! From one [`PolicyRuleset`] to the next as one nftables transaction: set
//! elements added and removed, only the pod chains whose rules changed
//! rewritten (add + flush + rules, atomically within the transaction), map
//! entries and objects that disappeared removed last, when nothing refers to them.

use std::collections::BTreeSet;

use hostnic_core::policy::ProgramStats;
use serde_json::{Value, json};

use super::ruleset::{
    EGRESS_MAP, INGRESS_MAP, POLICY_CHAIN, PolicyRuleset, SetElements, base_commands, obj,
};
use crate::node::NFT_TABLE;

/// Kernel objects that exist before the first sync (names only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Policy chains other than the base chain.
    pub chains: BTreeSet<String>,
    /// Policy sets.
    pub sets: BTreeSet<String>,
}

/// A transaction being assembled.
pub(crate) struct Transaction {
    pub(crate) commands: Vec<Value>,
    pub(crate) stats: ProgramStats,
}

impl Transaction {
    fn new() -> Self {
        Self {
            commands: Vec::new(),
            stats: ProgramStats::default(),
        }
    }

    fn elements(&mut self, verb: &str, set: &str, elem: Vec<Value>) {
        if elem.is_empty() {
            return;
        }
        if verb == "add" {
            self.stats.elements_added += elem.len();
        } else {
            self.stats.elements_removed += elem.len();
        }
        self.commands.push(json!({verb: {"element": {"family": "inet", "table": NFT_TABLE, "name": set, "elem": elem}}}));
    }

    fn create_set(&mut self, name: &str, elements: &SetElements) {
        self.stats.sets_created += 1;
        self.commands.push(json!({"add": {"set": {"family": "inet", "table": NFT_TABLE, "name": name, "type": elements.nft_type()}}}));
        self.elements("add", name, elements.minus(None));
    }

    fn write_chain(&mut self, name: &str, rules: &[Value]) {
        self.stats.chains_written += 1;
        self.commands.push(json!({"add": {"chain": obj(name)}}));
        self.commands.push(json!({"flush": {"chain": obj(name)}}));
        for expr in rules {
            self.commands.push(json!({"add": {"rule": {"family": "inet", "table": NFT_TABLE, "chain": name, "expr": expr}}}));
        }
    }

    fn delete_chain(&mut self, name: &str) {
        self.stats.chains_deleted += 1;
        self.commands.push(json!({"flush": {"chain": obj(name)}}));
        self.commands.push(json!({"delete": {"chain": obj(name)}}));
    }

    fn delete_set(&mut self, name: &str) {
        self.stats.sets_deleted += 1;
        self.commands.push(json!({"delete": {"set": obj(name)}}));
    }

    fn map_entry(&mut self, verb: &str, map: &str, veth: &str, chain: &str) {
        self.commands.push(
            json!({verb: {"element": {"family": "inet", "table": NFT_TABLE, "name": map,
            "elem": [[veth, {"jump": {"target": chain}}]]}}}),
        );
    }

    pub(crate) fn finish(mut self) -> (Value, ProgramStats) {
        self.stats.commands = self.commands.len();
        (json!({"nftables": self.commands}), self.stats)
    }
}

/// The transaction taking the kernel from `old` (what the last successful sync
/// programmed) to `new`.
pub(crate) fn incremental(old: &PolicyRuleset, new: &PolicyRuleset) -> Transaction {
    let mut tx = Transaction::new();
    for (name, elements) in &new.sets {
        match old.sets.get(name) {
            None => tx.create_set(name, elements),
            Some(before) => {
                tx.elements("delete", name, before.minus(Some(elements)));
                tx.elements("add", name, elements.minus(Some(before)));
            }
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) != Some(rules) {
            tx.write_chain(name, rules);
        }
    }
    for (map, before, after) in [
        (INGRESS_MAP, &old.ingress, &new.ingress),
        (EGRESS_MAP, &old.egress, &new.egress),
    ] {
        for (veth, chain) in before {
            if after.get(veth) != Some(chain) {
                tx.map_entry("delete", map, veth, chain);
            }
        }
        for (veth, chain) in after {
            if before.get(veth) != Some(chain) {
                tx.map_entry("add", map, veth, chain);
            }
        }
    }
    for name in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
        tx.delete_chain(name);
    }
    for name in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
        tx.delete_set(name);
    }
    tx
}

/// The transaction replacing whatever policy objects exist in the kernel
/// (`existing`, e.g. left by a previous agent) with `new`: the base chain and
/// maps are (re)created, everything flushed and refilled, leftovers deleted.
pub(crate) fn full(existing: &Existing, new: &PolicyRuleset) -> Transaction {
    let mut tx = Transaction::new();
    tx.commands.extend(base_commands());
    tx.commands
        .push(json!({"flush": {"map": obj(INGRESS_MAP)}}));
    tx.commands.push(json!({"flush": {"map": obj(EGRESS_MAP)}}));
    for name in &existing.chains {
        tx.commands.push(json!({"flush": {"chain": obj(name)}}));
    }
    for name in existing
        .sets
        .intersection(&new.sets.keys().cloned().collect())
    {
        tx.commands.push(json!({"flush": {"set": obj(name)}}));
    }
    let empty = PolicyRuleset::default();
    let mut fill = incremental(&empty, new);
    tx.commands.append(&mut fill.commands);
    tx.stats = fill.stats;
    for name in existing
        .chains
        .iter()
        .filter(|c| !new.chains.contains_key(*c))
    {
        tx.delete_chain(name);
    }
    for name in existing.sets.iter().filter(|s| !new.sets.contains_key(*s)) {
        tx.delete_set(name);
    }
    tx
}

/// The transaction deleting every policy object, base chain and maps included.
pub(crate) fn teardown(existing: &Existing) -> Transaction {
    let mut tx = Transaction::new();
    // Create what may be missing first, so that no delete can fail.
    tx.commands.extend(base_commands());
    tx.commands
        .push(json!({"flush": {"chain": obj(POLICY_CHAIN)}}));
    tx.commands
        .push(json!({"delete": {"chain": obj(POLICY_CHAIN)}}));
    tx.commands
        .push(json!({"delete": {"map": obj(INGRESS_MAP)}}));
    tx.commands
        .push(json!({"delete": {"map": obj(EGRESS_MAP)}}));
    for name in &existing.chains {
        tx.delete_chain(name);
    }
    for name in &existing.sets {
        tx.delete_set(name);
    }
    tx
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hostnic_core::policy::{
        CompiledPolicy, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, compile,
    };
    use serde_json::json;

    use super::*;
    use crate::policy::ruleset::POLICY_CHAIN;
    use hostnic_core::policy::LocalPod;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: [u8; 4]) -> PolicyPod {
        PolicyPod {
            pod: PodRef::new(ns, name),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip: Some(Ipv4Addr::from(ip)),
            ports: Vec::new(),
        }
    }

    /// x/a allows ingress from every pod of namespace y.
    fn policy() -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "from-y", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
                                  "ports": [{"port": 80}]}]}
        }))
        .unwrap()
    }

    fn compiled(remote_pods_in_y: usize) -> CompiledPolicy {
        let mut pods = vec![pod("x", "a", &[("pod", "a")], [10, 1, 0, 2])];
        for i in 0..remote_pods_in_y {
            pods.push(pod(
                "y",
                &format!("p{i}"),
                &[],
                [10, 2, (i / 250) as u8, (i % 250) as u8 + 2],
            ));
        }
        let ns = [PolicyNamespace::named("x"), PolicyNamespace::named("y")];
        compile(&pods, &ns, &[policy()])
    }

    fn local() -> Vec<LocalPod> {
        vec![LocalPod {
            pod: PodRef::new("x", "a"),
            veth: "nic0123456789a".into(),
        }]
    }

    #[test]
    fn a_pod_joining_a_selected_namespace_is_one_element_whatever_the_set_size() {
        for n in [9, 999] {
            let before = PolicyRuleset::build(&compiled(n), &local());
            let after = PolicyRuleset::build(&compiled(n + 1), &local());
            let (_, stats) = incremental(&before, &after).finish();
            assert!(stats.only_elements(), "{stats:?}");
            assert_eq!(stats.commands, 1, "{stats:?}");
            assert_eq!(stats.elements_added, 1);
            let (_, back) = incremental(&after, &before).finish();
            assert_eq!((back.commands, back.elements_removed), (1, 1));
        }
    }

    #[test]
    fn no_change_is_an_empty_transaction() {
        let r = PolicyRuleset::build(&compiled(3), &local());
        let (_, stats) = incremental(&r, &r).finish();
        assert_eq!(stats, ProgramStats::default());
    }

    #[test]
    fn a_local_pod_leaving_removes_its_map_entry_chain_and_unused_sets() {
        let with = PolicyRuleset::build(&compiled(3), &local());
        let without = PolicyRuleset::build(&compiled(3), &[]);
        assert!(without.chains.is_empty() && without.sets.is_empty());
        let (v, stats) = incremental(&with, &without).finish();
        assert_eq!((stats.chains_deleted, stats.sets_deleted), (1, 1));
        let cmds = v["nftables"].as_array().unwrap();
        let pos = |needle: &str| {
            cmds.iter()
                .position(|c| c.to_string().contains(needle))
                .unwrap()
        };
        // The map entry goes before the chain it jumps to, the chain before the set it uses.
        assert!(pos("\"delete\":{\"element\"") < pos("\"delete\":{\"chain\""));
        assert!(pos("\"delete\":{\"chain\"") < pos("\"delete\":{\"set\""));
    }

    #[test]
    fn the_full_sync_starts_with_established_related_accept_and_stays_in_table_hostnic() {
        let r = PolicyRuleset::build(&compiled(3), &local());
        let existing = Existing {
            chains: ["pin-stale".to_string()].into(),
            sets: ["pol-stale".to_string()].into(),
        };
        let (v, stats) = full(&existing, &r).finish();
        assert_eq!((stats.chains_deleted, stats.sets_deleted), (1, 1));
        let cmds = v["nftables"].as_array().unwrap();
        let first_rule = cmds
            .iter()
            .find(|c| c["add"]["rule"]["chain"] == POLICY_CHAIN)
            .unwrap();
        assert_eq!(
            first_rule["add"]["rule"]["expr"][0]["match"]["left"]["ct"]["key"],
            "state"
        );
        for cmd in cmds {
            let (_, o) = cmd.as_object().unwrap().iter().next().unwrap();
            let (kind, body) = o.as_object().unwrap().iter().next().unwrap();
            let table = if kind == "table" {
                &body["name"]
            } else {
                &body["table"]
            };
            assert_eq!(table, NFT_TABLE, "{cmd}");
            assert_eq!(body["family"], "inet", "{cmd}");
            if kind != "table" {
                assert!(
                    crate::policy::ruleset::is_policy_object(
                        body["name"].as_str().or(body["chain"].as_str()).unwrap()
                    ),
                    "only policy objects are touched: {cmd}"
                );
            }
        }
    }
}
