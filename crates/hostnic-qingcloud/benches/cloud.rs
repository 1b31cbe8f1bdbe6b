//! Client overhead per call and simulator throughput on loopback.
//!
//! `cargo bench -p hostnic-qingcloud --bench cloud`
//! - `client/sign_describe_nics`: signing + encoding one typical request.
//! - `client/call_overhead`: a whole client call (the tower stack, signing, timeout,
//!   JSON parsing, stats) over a transport that answers instantly.
//! - `sim/describe_vxnets_8_in_flight`: requests/s the simulator serves to the
//!   client over loopback HTTP with 8 requests in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hostnic_qingcloud::signer::{Params, Signer};
use hostnic_qingcloud::sim::{SimConfig, Simulator};
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

criterion_group!(benches, client_overhead, simulator_throughput);
criterion_main!(benches);
