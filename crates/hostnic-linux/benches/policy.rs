//! NetworkPolicy programming scales with set updates: the time to make the
//! kernel admit the N-th pod of a namespace that a policy allows is measured for
//! N = 10, 100 and 1,000. Adding the pod is one set element in one `nft`
//! transaction, so the three should take about as long.
//!
//! Run (root): `cargo bench -p hostnic-linux --bench policy`. Everything happens
//! in a fresh network namespace of its own, removed at the end.
//!
//! Timed per iteration: [`PolicyRenderer::sync_blocking`] with the compiled
//! policy that includes the new pod (ruleset build, diff, one `nft -j` run).
//! Not timed: compiling (reported separately in group `policy-compile`, which
//! is linear in the number of pods by design: it recomputes everything) and
//! the sync that removes the pod again before the next iteration.
//!
//! Group `policy-new-policy-100-pods-20-policies`: the node-side part of the
//! enforcement latency. 100 pods (25 local) in 5 namespaces and 20 policies are
//! programmed; one iteration compiles with a 21st policy and syncs it (then
//! the 21st is removed again, untimed).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hostnic_core::policy::{
    CompiledPolicy, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, compile,
};
use hostnic_linux::policy::{LocalPod, PolicyRenderer};
use hostnic_testkit::netns::Namespaces;

const SIZES: [usize; 3] = [10, 100, 1000];

fn policy() -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "from-y", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
                              "ports": [{"port": 80}]}],
                 "policyTypes": ["Ingress"]}
    }))
    .unwrap()
}

/// Ten local web pods in x, and `n` pods in y (elsewhere in the cluster).
fn cluster(n: usize) -> Vec<PolicyPod> {
    let mut pods: Vec<PolicyPod> = (0..10)
        .map(|i| PolicyPod {
            pod: PodRef::new("x", format!("web{i}")),
            labels: [("app".to_string(), "web".to_string())].into(),
            ip: Some(Ipv4Addr::new(10, 1, 0, i as u8 + 2)),
            ports: Vec::new(),
        })
        .collect();
    pods.extend((0..n).map(|i| PolicyPod {
        pod: PodRef::new("y", format!("client{i}")),
        labels: Default::default(),
        ip: Some(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 2, 0, 2)) + i as u32,
        )),
        ports: Vec::new(),
    }));
    pods
}

fn compiled(n: usize) -> CompiledPolicy {
    let ns = [PolicyNamespace::named("x"), PolicyNamespace::named("y")];
    compile(&cluster(n), &ns, &[policy()])
}

fn local() -> Vec<LocalPod> {
    (0..10)
        .map(|i| LocalPod {
            pod: PodRef::new("x", format!("web{i}")),
            veth: format!("nicbench{i:03}"),
        })
        .collect()
}

/// 100 pods over namespaces n0..n4 (labels app=a0..a3, five local per
/// namespace), 21 policies mixing pod/namespace selectors, ports and egress.
fn busy_cluster() -> (
    Vec<PolicyPod>,
    Vec<PolicyNamespace>,
    Vec<NetworkPolicy>,
    Vec<LocalPod>,
) {
    let namespaces: Vec<PolicyNamespace> = (0..5)
        .map(|n| PolicyNamespace::named(format!("n{n}")))
        .collect();
    let pods: Vec<PolicyPod> = (0..100u32)
        .map(|i| PolicyPod {
            pod: PodRef::new(format!("n{}", i % 5), format!("p{i}")),
            labels: [("app".to_string(), format!("a{}", i % 4))].into(),
            ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 3, 0, 2)) + i)),
            ports: Vec::new(),
        })
        .collect();
    let local = pods
        .iter()
        .take(25)
        .enumerate()
        .map(|(i, p)| LocalPod {
            pod: p.pod.clone(),
            veth: format!("nicbusy{i:03}"),
        })
        .collect();
    let policies = (0..21)
        .map(|k| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("pol{k}"), "namespace": format!("n{}", k % 5)},
                "spec": {"podSelector": {"matchLabels": {"app": format!("a{}", k % 4)}},
                         "ingress": [{"from": [
                             {"podSelector": {"matchLabels": {"app": format!("a{}", (k + 1) % 4)}}},
                             {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": format!("n{}", (k + 2) % 5)}}}
                           ], "ports": [{"port": 80 + k}, {"port": 9000, "endPort": 9100}]}],
                         "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.3.0.0/30"]}}]}]}
            }))
            .unwrap()
        })
        .collect();
    (pods, namespaces, policies, local)
}

fn bench(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("policy bench: needs root (network namespaces, nft); nothing measured");
        return;
    }
    let mut guard = Namespaces::new("hnpol-bench");
    let (_, ns) = guard.create_ns("node");
    let local = local();

    let mut group = c.benchmark_group("policy-add-nth-pod");
    group.sample_size(30);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let without = compiled(n - 1);
        let with = compiled(n);
        let mut renderer = PolicyRenderer::new(Some(ns.clone()), "nft");
        renderer
            .sync_blocking(&without, &local)
            .expect("initial sync");
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let stats = renderer.sync_blocking(&with, &local).expect("sync");
                    total += start.elapsed();
                    assert!(
                        stats.only_elements() && stats.elements_added == 1,
                        "{stats:?}"
                    );
                    renderer.sync_blocking(&without, &local).expect("sync back");
                }
                total
            })
        });
        renderer.remove_all_blocking().expect("teardown");
    }
    group.finish();

    let (pods, namespaces, policies, local) = busy_cluster();
    let mut renderer = PolicyRenderer::new(Some(ns.clone()), "nft");
    let base = compile(&pods, &namespaces, &policies[..20]);
    renderer.sync_blocking(&base, &local).expect("initial sync");
    let mut group = c.benchmark_group("policy-new-policy-100-pods-20-policies");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("compile+sync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let with = compile(&pods, &namespaces, &policies);
                renderer.sync_blocking(&with, &local).expect("sync");
                total += start.elapsed();
                renderer.sync_blocking(&base, &local).expect("sync back");
            }
            total
        })
    });
    group.finish();
    renderer.remove_all_blocking().expect("teardown");

    let mut group = c.benchmark_group("policy-compile");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(2));
    for n in SIZES {
        group.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| compiled(n)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
