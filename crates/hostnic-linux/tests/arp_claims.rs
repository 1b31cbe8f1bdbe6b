//! Claiming pod addresses by proxy ARP and announcing them by gratuitous ARP,
//! with real packets between network namespaces. Needs root:
//! `cargo test -p hostnic-linux --test arp_claims -- --include-ignored`.
//!
//! ```text
//!   [peer]  v0 10.77.0.2/24              (the gateway / another host of the vxnet)
//!     |
//!   [node]  vx0 (no address: the shared NIC), lo 10.200.0.10/32
//!           10.77.0.50/32 and .51/32 dev hpod, 10.77.0.0/24 dev vx0
//!     |
//!   [pod]   eth0 10.77.0.50/32, default via 169.254.1.1 (hpod's MAC)
//! ```

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use hostnic_linux::NetNs;
use hostnic_linux::arp::{ArpClaims, Claim};
use hostnic_testkit::netns::{Namespaces, ip, ip_json};

const POD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);
const ROUTED_UNCLAIMED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 51);

struct Segment {
    _spaces: Namespaces,
    peer: String,
    node: NetNs,
    node_mac: String,
}

fn write_sysctl(ns: &NetNs, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    ns.run_blocking(move || std::fs::write(&path, value))
        .unwrap()
        .unwrap_or_else(|e| panic!("sysctl {key}: {e}"));
}

fn mac(ns: &str, dev: &str) -> String {
    ip_json(ns, &["link", "show", "dev", dev])[0]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

fn segment() -> Segment {
    let mut spaces = Namespaces::new("hn-arp");
    let (peer, _) = spaces.create_ns("peer");
    let (node_name, node) = spaces.create_ns("node");
    let (pod, _) = spaces.create_ns("pod");
    let n = node_name.as_str();
    ip(&[
        "-n", n, "link", "add", "vx0", "type", "veth", "peer", "name", "v0", "netns", &peer,
    ]);
    ip(&[
        "-n", n, "link", "add", "hpod", "type", "veth", "peer", "name", "eth0", "netns", &pod,
    ]);
    for (ns, dev) in [
        (n, "vx0"),
        (n, "hpod"),
        (n, "lo"),
        (&peer, "v0"),
        (&pod, "eth0"),
        (&pod, "lo"),
    ] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", &peer, "addr", "add", "10.77.0.2/24", "dev", "v0"]);
    ip(&["-n", n, "addr", "add", "10.200.0.10/32", "dev", "lo"]);
    write_sysctl(&node, "net/ipv4/ip_forward", "1");
    write_sysctl(&node, "net/ipv4/conf/all/rp_filter", "0");
    write_sysctl(&node, "net/ipv4/conf/vx0/rp_filter", "0");
    for addr in [POD, ROUTED_UNCLAIMED] {
        ip(&[
            "-n",
            n,
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            "hpod",
        ]);
    }
    ip(&["-n", n, "route", "add", "10.77.0.0/24", "dev", "vx0"]);
    ip(&[
        "-n",
        &pod,
        "addr",
        "add",
        &format!("{POD}/32"),
        "dev",
        "eth0",
    ]);
    ip(&[
        "-n",
        &pod,
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    ip(&[
        "-n",
        &pod,
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    let hpod_mac = mac(n, "hpod");
    ip(&[
        "-n",
        &pod,
        "neigh",
        "add",
        "169.254.1.1",
        "lladdr",
        &hpod_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let node_mac = mac(n, "vx0");
    Segment {
        _spaces: spaces,
        peer,
        node,
        node_mac,
    }
}

/// One ping from the peer, waiting at most a second: true if answered.
fn ping(peer: &str, addr: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            peer,
            "ping",
            "-c1",
            "-W1",
            "-n",
            "-q",
            &addr.to_string(),
        ])
        .output()
        .expect("run ping")
        .status
        .success()
}

/// The peer's neighbour entry for `addr`: (MAC, states).
fn peer_entry(peer: &str, addr: Ipv4Addr) -> Option<(Option<String>, Vec<String>)> {
    let entries = ip_json(
        peer,
        &["neigh", "show", "to", &addr.to_string(), "dev", "v0"],
    );
    let e = entries.as_array()?.first()?;
    let mac = e["lladdr"].as_str().map(str::to_string);
    let states = e["state"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some((mac, states))
}

fn flush_peer(peer: &str) {
    ip(&["-n", peer, "neigh", "flush", "dev", "v0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_claimed_address_resolves_to_the_claiming_link_only_while_claimed() {
    let seg = segment();
    let claims = ArpClaims::new(seg.node.clone()).await.unwrap();
    claims.prepare_link("vx0").await.unwrap();

    // Routed to a pod but not claimed: nobody answers.
    assert!(!ping(&seg.peer, POD), "answered before any claim");
    assert_ne!(
        peer_entry(&seg.peer, POD).and_then(|e| e.0),
        Some(seg.node_mac.clone())
    );

    claims.claim("vx0", POD).await.unwrap();
    claims.claim("vx0", POD).await.unwrap();
    let listed = claims.claims().await.unwrap();
    assert_eq!(
        listed,
        vec![Claim {
            link: "vx0".into(),
            ifindex: listed[0].ifindex,
            addr: POD
        }]
    );

    flush_peer(&seg.peer);
    assert!(
        ping(&seg.peer, POD),
        "the claimed pod address does not answer"
    );
    let (mac, _) = peer_entry(&seg.peer, POD).expect("the peer resolved the pod address");
    assert_eq!(
        mac,
        Some(seg.node_mac.clone()),
        "resolved to the claiming link's MAC"
    );
    // Exactly the claimed address: another address the node routes is not answered.
    assert!(!ping(&seg.peer, ROUTED_UNCLAIMED));
    assert_ne!(
        peer_entry(&seg.peer, ROUTED_UNCLAIMED).and_then(|e| e.0),
        Some(seg.node_mac.clone())
    );

    claims.withdraw("vx0", POD).await.unwrap();
    claims.withdraw("vx0", POD).await.unwrap();
    claims.withdraw("no-such-link", POD).await.unwrap();
    assert_eq!(claims.claims().await.unwrap(), vec![]);
    flush_peer(&seg.peer);
    assert!(!ping(&seg.peer, POD), "still answered after the withdraw");
    assert_ne!(
        peer_entry(&seg.peer, POD).and_then(|e| e.0),
        Some(seg.node_mac.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_gratuitous_arp_moves_a_peers_entry_to_the_claiming_link_within_a_second() {
    let seg = segment();
    let claims = ArpClaims::new(seg.node.clone()).await.unwrap();
    claims.prepare_link("vx0").await.unwrap();
    // The peer still holds the address's previous owner (another node's MAC).
    let old = "02:00:00:00:00:99";
    ip(&[
        "-n",
        &seg.peer,
        "neigh",
        "replace",
        &POD.to_string(),
        "lladdr",
        old,
        "dev",
        "v0",
        "nud",
        "stale",
    ]);
    claims.claim("vx0", POD).await.unwrap();
    // A claim alone changes nothing for a peer that does not ask.
    assert_eq!(peer_entry(&seg.peer, POD).unwrap().0.as_deref(), Some(old));

    claims.announce("vx0", POD, 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let moved = loop {
        let now = peer_entry(&seg.peer, POD).and_then(|e| e.0);
        if now.as_deref() == Some(seg.node_mac.as_str()) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        moved,
        "the peer's entry still says {:?}",
        peer_entry(&seg.peer, POD)
    );
    // And the new owner answers.
    assert!(ping(&seg.peer, POD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn claims_on_a_missing_link_are_refused_clearly() {
    let seg = segment();
    let claims = ArpClaims::new(seg.node.clone()).await.unwrap();
    let err = claims.claim("nope0", POD).await.unwrap_err();
    assert!(err.to_string().contains("nope0"), "{err}");
    assert!(claims.announce("nope0", POD, 1).await.is_err());
    assert!(claims.prepare_link("nope0").await.is_err());
}
