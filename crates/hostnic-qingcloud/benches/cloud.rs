//! Client overhead per call and simulator throughput on loopback.
//!
//! `cargo bench -p hostnic-qingcloud --bench cloud`
//! - `client/sign_describe_nics`: signing + encoding one typical request.
//! - `client/call_overhead`: a whole client call (the tower stack, signing, timeout,
//!   JSON parsing, stats) over a transport that answers instantly.
//! - `sim/describe_vxnets_8_in_flight`: requests/s the simulator serves to the
//!   client over loopback HTTP with 8 requests in flight.
//! - `sim_1000_instances/*`: the simulator's actions on a zone of 1,000 instances
//!   with 60 NICs attached to each (61,000 NICs): the lookups an agent makes stay
//!   independent of the zone's size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hostnic_qingcloud::signer::{Params, Signer};
use hostnic_qingcloud::sim::{Params as SimParams, SimConfig, SimState, Simulator, Topology};
use hostnic_qingcloud::transport::{Transport, TransportError, WireRequest};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient, Secret};

struct Instant200;

#[async_trait]
impl Transport for Instant200 {
    async fn send(&self, _: &WireRequest) -> Result<String, TransportError> {
        Ok(r#"{"action":"DescribeNicsResponse","ret_code":0,"nic_set":[],"total_count":0}"#.into())
    }
}

fn unlimited() -> ClientOptions {
    ClientOptions {
        budget: None,
        max_in_flight: 8,
        ..ClientOptions::default()
    }
}

fn client_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("client");
    let signer = Signer::new("QYACCESSKEYIDEXAMPLE", Secret::new("SECRETACCESSKEY"));
    group.bench_function("sign_describe_nics", |b| {
        b.iter(|| {
            let mut p = Params::new();
            p.set("action", "DescribeNics")
                .set("zone", "pek3a")
                .list("vxnets", ["vxnet-abc", "vxnet-def"])
                .set("nic_name", "hostnic_i-abcdefgh")
                .set("limit", 100);
            let signed = signer.sign("GET", "/iaas/", &mut p, "2026-11-27T17:26:58Z");
            std::hint::black_box(signed.to_query())
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::new("AK", Secret::new("SK"), "pek3a");
    let client = QingCloudClient::with_transport(&config, unlimited(), Arc::new(Instant200));
    group.bench_function("call_overhead", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut p = Params::new();
                    p.list("vxnets", ["vxnet-abc"]);
                    std::hint::black_box(client.call("DescribeNics", p).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn simulator_throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(Simulator::start(
            SimConfig {
                // Throughput, not the account quota, is measured here.
                quota: None,
                ..SimConfig::new("AK", "SK")
            },
            None,
        ))
        .unwrap();
    let client =
        QingCloudClient::for_url(&sim.url(), "AK", Secret::new("SK"), "pek3a", unlimited())
            .unwrap();
    const BATCH: u64 = 64;
    let mut group = c.benchmark_group("sim");
    group.throughput(Throughput::Elements(BATCH));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("describe_vxnets_8_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..BATCH {
                        let client = client.clone();
                        set.spawn(
                            async move { client.call("DescribeVxnets", Params::new()).await },
                        );
                    }
                    while let Some(r) = set.join_next().await {
                        r.unwrap().unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(sim.shutdown());
}

fn sim_params(pairs: &[(&str, &str)]) -> SimParams {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// 1,000 instances in 250 vxnets, 60 NICs attached to each.
fn big_zone() -> SimState {
    let mut s = SimState::new(&Topology::generated(1000, 250).unwrap());
    for i in 1..=1000 {
        let instance = format!("i-sim{i:05}");
        let vxnet = format!("vxnet-sim{}", (i - 1) % 250 + 1);
        let name = format!("hostnic_{instance}");
        let (created, _) = s
            .dispatch(
                "CreateNics",
                &sim_params(&[("vxnet", &vxnet), ("count", "60"), ("nic_name", &name)]),
            )
            .unwrap();
        let mut attach = sim_params(&[("instance", &instance)]);
        for (n, nic) in created["nics"].as_array().unwrap().iter().enumerate() {
            attach.insert(
                format!("nics.{}", n + 1),
                nic["nic_id"].as_str().unwrap().into(),
            );
        }
        let (job, _) = s.dispatch("AttachNics", &attach).unwrap();
        let job = job["job_id"].as_str().unwrap().to_string();
        s.start_job(&job);
        let (ok, _) = s.apply_job(&job);
        s.finish_job(&job, ok);
    }
    s
}

fn simulator_at_scale(c: &mut Criterion) {
    let mut zone = big_zone();
    assert_eq!(zone.nics.len(), 61_000);
    let mut group = c.benchmark_group("sim_1000_instances");
    let by_instance = sim_params(&[("instances.1", "i-sim00500"), ("limit", "100")]);
    group.bench_function("describe_nics_of_an_instance", |b| {
        b.iter(|| std::hint::black_box(zone.dispatch("DescribeNics", &by_instance).unwrap()))
    });
    let by_name = sim_params(&[("nic_name", "hostnic_i-sim00500"), ("limit", "100")]);
    group.bench_function("describe_nics_by_name", |b| {
        b.iter(|| std::hint::black_box(zone.dispatch("DescribeNics", &by_name).unwrap()))
    });
    let instance = sim_params(&[("instances.1", "i-sim00500"), ("verbose", "1")]);
    group.bench_function("describe_instance", |b| {
        b.iter(|| std::hint::black_box(zone.dispatch("DescribeInstances", &instance).unwrap()))
    });
    let create = sim_params(&[("vxnet", "vxnet-sim7"), ("count", "5")]);
    group.bench_function("create_and_delete_5_nics", |b| {
        b.iter(|| {
            let (v, _) = zone.dispatch("CreateNics", &create).unwrap();
            let mut delete = SimParams::new();
            for (n, nic) in v["nics"].as_array().unwrap().iter().enumerate() {
                delete.insert(
                    format!("nics.{}", n + 1),
                    nic["nic_id"].as_str().unwrap().into(),
                );
            }
            zone.dispatch("DeleteNics", &delete).unwrap();
        })
    });
    let page = sim_params(&[("limit", "100"), ("offset", "30000")]);
    group.bench_function("describe_nics_one_page_of_all", |b| {
        b.iter(|| std::hint::black_box(zone.dispatch("DescribeNics", &page).unwrap()))
    });
    group.finish();
}

criterion_group!(
    benches,
    client_overhead,
    simulator_throughput,
    simulator_at_scale
);
criterion_main!(benches);
