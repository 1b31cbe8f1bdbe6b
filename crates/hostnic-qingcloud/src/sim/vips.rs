//! The VIP actions, as the API names them on the wire: AllocateVips, DescribeVips,
//! ReleaseVips. A VIP holds an address of its vxnet: no NIC gets it and no other
//! VIP shares it. Allocate and release are jobs; the addresses are held (or still
//! held) from the answer on, so nothing can take them while the job runs.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::index::Holder;
use super::params::{Paging, Params, addr, int_in, list, opt, required};
use super::state::{ApiError, Effects, SimState, SimVip, now};
use crate::errors::ACCESS_DENIED;

/// `AllocateVips` reserves 1 to 252 addresses per call.
pub const MAX_ALLOCATE: u64 = 252;

/// Parses `a.b.c.d-a.b.c.e` (inclusive).
fn parse_range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), ApiError> {
    let bad = || {
        ApiError::invalid(
            "vip_range",
            &format!("[{s}] should be a range like 172.16.1.10-172.16.1.20"),
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    Ok((a, b))
}

impl SimState {
    fn vip_json(v: &SimVip) -> Value {
        json!({
            "vip_id": v.vip_id,
            "vip_name": v.vip_name,
            "vip_addr": v.vip_addr.to_string(),
            "vxnet_id": v.vxnet_id,
            "instance_id": v.instance_id.clone().unwrap_or_default(),
            "nic_id": v.nic_id.clone().unwrap_or_default(),
            "create_time": v.create_time,
        })
    }

    pub(crate) fn allocate_vips(&mut self, p: &Params) -> Result<(Value, Effects), ApiError> {
        let vxnet = required(p, "vxnet_id")?.to_string();
        let vx = self.vxnet(&vxnet)?.clone();
        if vx.router_id.is_none() {
            return Err(ApiError::new(
                ACCESS_DENIED,
                format!(
                    "PermissionDenied, vxnet [{vxnet}] is not joined to a VPC router: VIPs need a VPC vxnet"
                ),
            ));
        }
        let name = opt(p, "vip_name").unwrap_or_default().to_string();
        let range = opt(p, "vip_range");
        let wanted = list(p, "vip_addrs");
        let count = match opt(p, "count") {
            Some(_) => Some(int_in(p, "count", 1, 1, MAX_ALLOCATE)? as usize),
            None => None,
        };
        let (first, last) = vx.usable();
        let outside = |key: &str, ip: Ipv4Addr| {
            ApiError::invalid(
                key,
                &format!("[{ip}] is not a usable address of vxnet [{vxnet}] ({first} to {last})"),
            )
        };
        let addrs: Vec<Ipv4Addr> = match (range, wanted.is_empty()) {
            (Some(_), false) => {
                return Err(ApiError::invalid(
                    "vip_range",
                    "cannot be given together with [vip_addrs]",
                ));
            }
            (Some(r), true) => {
                let (a, b) = parse_range(r)?;
                if a > b {
                    return Err(ApiError::invalid(
                        "vip_range",
                        &format!("[{r}] is reversed: the first address must not be above the last"),
                    ));
                }
                for ip in [a, b] {
                    if !vx.is_usable(ip) {
                        return Err(outside("vip_range", ip));
                    }
                }
                let size = (u32::from(b) - u32::from(a) + 1) as usize;
                let count = count.unwrap_or(size);
                if count > size {
                    return Err(ApiError::invalid(
                        "count",
                        &format!("[{count}] is more than the [{size}] addresses of [vip_range]"),
                    ));
                }
                if count as u64 > MAX_ALLOCATE {
                    return Err(ApiError::invalid(
                        "vip_range",
                        &format!("[{r}] has more than {MAX_ALLOCATE} addresses: give a count"),
                    ));
                }
                let free = self.index.free_in(&vxnet, a, b, count);
                if free.len() < count {
                    return Err(ApiError::resource_quota(format!(
                        "QuotaExceeded, range [{r}] of vxnet [{vxnet}] does not have enough available addresses: requested [{count}], available [{}]",
                        free.len()
                    )));
                }
                free
            }
            (None, false) => {
                if wanted.len() as u64 > MAX_ALLOCATE {
                    return Err(ApiError::invalid(
                        "vip_addrs",
                        &format!("can name at most {MAX_ALLOCATE} addresses"),
                    ));
                }
                if count.is_some_and(|c| c != wanted.len()) {
                    return Err(ApiError::invalid(
                        "count",
                        "should equal the number of [vip_addrs]",
                    ));
                }
                let mut seen = BTreeSet::new();
                let mut out = Vec::with_capacity(wanted.len());
                for (i, s) in wanted.iter().enumerate() {
                    let key = format!("vip_addrs.{}", i + 1);
                    let ip = addr(&key, s)?;
                    if !vx.is_usable(ip) {
                        return Err(outside(&key, ip));
                    }
                    if !seen.insert(ip) {
                        return Err(ApiError::invalid(&key, &format!("[{ip}] is given twice")));
                    }
                    out.push(ip);
                }
                out
            }
            (None, true) => self.free_ips(&vxnet, count.unwrap_or(1))?,
        };
        // Explicit addresses (and, defensively, any other) must all be free.
        for ip in &addrs {
            if let Some(holder) = self.holder(&vxnet, *ip) {
                return Err(ApiError::new(
                    ACCESS_DENIED,
                    format!(
                        "PermissionDenied, address [{ip}] of vxnet [{vxnet}] is in use by {holder}"
                    ),
                ));
            }
        }
        let created = now();
        let mut ids = Vec::with_capacity(addrs.len());
        for ip in addrs {
            let vip_id = self.new_vip_id();
            self.insert_vip(SimVip {
                vip_id: vip_id.clone(),
                vip_name: name.clone(),
                vip_addr: ip,
                vxnet_id: vxnet.clone(),
                instance_id: None,
                nic_id: None,
                create_time: created.clone(),
                busy_job: None,
            });
            ids.push(vip_id);
        }
        let job = self.new_job("AllocateVips", Vec::new(), ids.clone(), None);
        Ok((json!({ "job_id": job, "vips": ids }), Effects::job(job)))
    }

    pub(crate) fn describe_vips(&self, p: &Params) -> Result<Value, ApiError> {
        let paging = Paging::of(p)?;
        let ids: BTreeSet<String> = list(p, "vips").into_iter().collect();
        let vxnets: BTreeSet<String> = list(p, "vxnets").into_iter().collect();
        let mut addrs = BTreeSet::new();
        for (i, s) in list(p, "vip_addrs").iter().enumerate() {
            addrs.insert(addr(&format!("vip_addrs.{}", i + 1), s)?);
        }
        let name = opt(p, "vip_name");
        // Start from the narrowest lookup, then apply every filter.
        let candidates: Vec<&SimVip> = if !ids.is_empty() {
            ids.iter().filter_map(|id| self.vips.get(id)).collect()
        } else if !addrs.is_empty() {
            let scope: Vec<&String> = if vxnets.is_empty() {
                self.vxnets.keys().collect()
            } else {
                vxnets.iter().collect()
            };
            let mut found: Vec<&SimVip> = scope
                .iter()
                .flat_map(|v| addrs.iter().map(move |ip| (*v, *ip)))
                .filter_map(|(v, ip)| match self.holder(v, ip) {
                    Some(Holder::Vip(id)) => self.vips.get(id),
                    _ => None,
                })
                .collect();
            found.sort_by(|a, b| a.vip_id.cmp(&b.vip_id));
            found
        } else {
            self.vips.values().collect()
        };
        let items: Vec<&SimVip> = candidates
            .into_iter()
            .filter(|v| vxnets.is_empty() || vxnets.contains(&v.vxnet_id))
            .filter(|v| addrs.is_empty() || addrs.contains(&v.vip_addr))
            .filter(|v| name.is_none_or(|n| v.vip_name == n))
            .collect();
        Ok(paging.answer("vip_set", &items, |v| Self::vip_json(v)))
    }

    pub(crate) fn release_vips(&mut self, p: &Params) -> Result<(Value, Effects), ApiError> {
        const ACTION: &str = "ReleaseVips";
        let ids = list(p, "vips");
        if ids.is_empty() {
            return Err(ApiError::missing("vips"));
        }
        let mut unique = Vec::new();
        for id in ids {
            let vip = self
                .vips
                .get(&id)
                .ok_or_else(|| ApiError::not_found("vip", &id))?;
            if let Some(job) = &vip.busy_job {
                return Err(ApiError::new(
                    ACCESS_DENIED,
                    format!(
                        "PermissionDenied, vip [{id}] is being processed by job [{job}], cannot perform [{ACTION}]"
                    ),
                ));
            }
            if vip.instance_id.is_some() {
                return Err(ApiError::wrong_state("vip", &id, "in-use", ACTION));
            }
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        let job = self.new_job(ACTION, Vec::new(), unique, None);
        Ok((json!({ "job_id": job }), Effects::job(job)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::topology::{RouterSpec, Topology, VxnetSpec};
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn allocate(
        s: &mut SimState,
        pairs: &[(&str, &str)],
    ) -> Result<(String, Vec<String>), ApiError> {
        let (v, effects) = s.dispatch("AllocateVips", &params(pairs))?;
        assert_eq!(effects.jobs.len(), 1);
        let ids = v["vips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect();
        Ok((v["job_id"].as_str().unwrap().to_string(), ids))
    }

    fn run(s: &mut SimState, job: &str) {
        s.start_job(job);
        let (ok, _) = s.apply_job(job);
        s.finish_job(job, ok);
    }

    fn describe(s: &SimState, pairs: &[(&str, &str)]) -> Value {
        s.clone()
            .dispatch("DescribeVips", &params(pairs))
            .unwrap()
            .0
    }

    #[test]
    fn allocate_by_count_range_or_addresses_then_describe_and_release() {
        let mut s = SimState::new(&Topology::default());
        let (job, by_count) = allocate(
            &mut s,
            &[
                ("vxnet_id", "vxnet-sim2"),
                ("count", "2"),
                ("vip_name", "a"),
            ],
        )
        .unwrap();
        assert_eq!(by_count.len(), 2);
        run(&mut s, &job);
        assert_eq!(s.jobs[&job].job_action, "AllocateVips");
        let (range_job, by_range) = allocate(
            &mut s,
            &[
                ("vxnet_id", "vxnet-sim2"),
                ("vip_range", "172.16.2.100-172.16.2.109"),
                ("vip_name", "b"),
            ],
        )
        .unwrap();
        assert_eq!(by_range.len(), 10, "the whole range without a count");
        let (_, by_addr) = allocate(
            &mut s,
            &[
                ("vxnet_id", "vxnet-sim2"),
                ("vip_addrs.1", "172.16.2.200"),
                ("vip_addrs.2", "172.16.2.201"),
            ],
        )
        .unwrap();
        assert_eq!(by_addr.len(), 2);

        let all = describe(&s, &[("vxnets.1", "vxnet-sim2"), ("limit", "100")]);
        assert_eq!(all["total_count"], 14);
        let first = &all["vip_set"][0];
        for key in [
            "vip_id",
            "vip_name",
            "vip_addr",
            "vxnet_id",
            "instance_id",
            "nic_id",
            "create_time",
        ] {
            assert!(first.get(key).is_some(), "{key} missing in {first}");
        }
        assert_eq!(describe(&s, &[("vip_name", "a")])["total_count"], 2);
        let by_ip = describe(&s, &[("vip_addrs.1", "172.16.2.105")]);
        assert_eq!(by_ip["total_count"], 1);
        assert_eq!(by_ip["vip_set"][0]["vip_id"], by_range[5].as_str());
        assert_eq!(
            describe(&s, &[("vips.1", &by_addr[1])])["vip_set"][0]["vip_addr"],
            "172.16.2.201"
        );

        // Count-allocated VIPs took the lowest addresses; a NIC now skips them all.
        let (nic, _) = s
            .dispatch("CreateNics", &params(&[("vxnet", "vxnet-sim2")]))
            .unwrap();
        assert_eq!(nic["nics"][0]["private_ip"], "172.16.2.4");

        let mut p = params(&[]);
        for (i, id) in by_range.iter().enumerate() {
            p.insert(format!("vips.{}", i + 1), id.clone());
        }
        // Not while its allocation job runs.
        assert_eq!(s.dispatch("ReleaseVips", &p).unwrap_err().code, 1400);
        run(&mut s, &range_job);
        let (v, _) = s.dispatch("ReleaseVips", &p).unwrap();
        let job = v["job_id"].as_str().unwrap().to_string();
        // Busy until the job ends; the addresses are still held meanwhile.
        assert_eq!(s.dispatch("ReleaseVips", &p).unwrap_err().code, 1400);
        assert_eq!(
            s.dispatch(
                "CreateNics",
                &params(&[("vxnet", "vxnet-sim2"), ("private_ips.1", "172.16.2.100")])
            )
            .unwrap_err()
            .code,
            1400
        );
        run(&mut s, &job);
        assert_eq!(
            describe(&s, &[("vxnets.1", "vxnet-sim2")])["total_count"],
            4
        );
        assert_eq!(s.dispatch("ReleaseVips", &p).unwrap_err().code, 2100);
        s.dispatch(
            "CreateNics",
            &params(&[("vxnet", "vxnet-sim2"), ("private_ips.1", "172.16.2.100")]),
        )
        .unwrap();
    }

    #[test]
    fn a_vip_holds_its_address_against_nics_and_other_vips() {
        let mut s = SimState::new(&Topology::default());
        let primary_ip = s
            .nics
            .values()
            .find(|n| n.role == 1)
            .unwrap()
            .private_ip
            .to_string();
        let err = allocate(
            &mut s,
            &[("vxnet_id", "vxnet-sim1"), ("vip_addrs.1", &primary_ip)],
        )
        .unwrap_err();
        assert_eq!(err.code, 1400);
        assert!(err.message.contains("in use by nic"), "{}", err.message);
        allocate(
            &mut s,
            &[("vxnet_id", "vxnet-sim2"), ("vip_addrs.1", "172.16.2.10")],
        )
        .unwrap();
        let err = allocate(
            &mut s,
            &[
                ("vxnet_id", "vxnet-sim2"),
                ("vip_range", "172.16.2.9-172.16.2.11"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.code, 2500, "the range has only two free addresses");
        assert!(!crate::errors::is_request_quota_message(&err.message));
        let err = allocate(
            &mut s,
            &[("vxnet_id", "vxnet-sim2"), ("vip_addrs.1", "172.16.2.10")],
        )
        .unwrap_err();
        assert_eq!(err.code, 1400);
        assert!(err.message.contains("in use by vip"), "{}", err.message);
        let err = s
            .dispatch(
                "CreateNics",
                &params(&[("vxnet", "vxnet-sim2"), ("private_ips.1", "172.16.2.10")]),
            )
            .unwrap_err();
        assert_eq!(err.code, 1400);
        // Two free addresses of the range are taken with a count.
        let (_, ids) = allocate(
            &mut s,
            &[
                ("vxnet_id", "vxnet-sim2"),
                ("vip_range", "172.16.2.9-172.16.2.11"),
                ("count", "2"),
            ],
        )
        .unwrap();
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn bad_vip_requests_answer_the_real_codes() {
        let mut topo = Topology::default();
        topo.vxnets.push(VxnetSpec {
            id: "vxnet-classic".into(),
            cidr: "192.168.0.0/24".parse().unwrap(),
            router: None,
        });
        topo.routers.push(RouterSpec {
            id: "rtr-unused".into(),
            vpc_network: "10.0.0.0/16".parse().unwrap(),
        });
        let mut s = SimState::new(&topo);
        type Case<'a> = (&'a [(&'a str, &'a str)], i64, &'a str);
        let cases: &[Case<'_>] = &[
            (&[], 1100, "no vxnet"),
            (&[("vxnet_id", "vxnet-nope")], 2100, "unknown vxnet"),
            (&[("vxnet_id", "vxnet-classic")], 1400, "not a VPC vxnet"),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_range", "172.16.2.20-172.16.2.10"),
                ],
                1100,
                "reversed",
            ),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_range", "172.16.3.1-172.16.3.9"),
                ],
                1100,
                "another vxnet",
            ),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_range", "172.16.2.250-172.16.2.255"),
                ],
                1100,
                "past the usable end",
            ),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_range", "172.16.2.0-172.16.2.5"),
                ],
                1100,
                "network and gateway",
            ),
            (
                &[("vxnet_id", "vxnet-sim2"), ("vip_range", "172.16.2.5")],
                1100,
                "not a range",
            ),
            (
                &[("vxnet_id", "vxnet-sim2"), ("vip_range", "a-b")],
                1100,
                "not addresses",
            ),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_range", "172.16.2.5-172.16.2.6"),
                    ("count", "3"),
                ],
                1100,
                "count past range",
            ),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_range", "172.16.2.5-172.16.2.6"),
                    ("vip_addrs.1", "172.16.2.7"),
                ],
                1100,
                "both",
            ),
            (
                &[
                    ("vxnet_id", "vxnet-sim2"),
                    ("vip_addrs.1", "172.16.2.7"),
                    ("vip_addrs.2", "172.16.2.7"),
                ],
                1100,
                "twice",
            ),
            (
                &[("vxnet_id", "vxnet-sim2"), ("vip_addrs.1", "10.0.0.7")],
                1100,
                "outside",
            ),
            (
                &[("vxnet_id", "vxnet-sim2"), ("count", "0")],
                1100,
                "count 0",
            ),
            (
                &[("vxnet_id", "vxnet-sim2"), ("count", "253")],
                1100,
                "count 253",
            ),
        ];
        for (pairs, code, why) in cases {
            let err = allocate(&mut s, pairs).unwrap_err();
            assert_eq!(err.code, *code, "{why}: {}", err.message);
        }
        assert!(s.vips.is_empty(), "no failed request reserved anything");
        assert_eq!(
            s.dispatch("ReleaseVips", &params(&[])).unwrap_err().code,
            1100
        );
        assert_eq!(
            s.dispatch("ReleaseVips", &params(&[("vips.1", "vip-nope")]))
                .unwrap_err()
                .code,
            2100
        );
        assert_eq!(
            s.dispatch("DescribeVips", &params(&[("limit", "0")]))
                .unwrap_err()
                .code,
            1100
        );
        assert_eq!(
            s.dispatch("DescribeVips", &params(&[("vip_addrs.1", "x")]))
                .unwrap_err()
                .code,
            1100
        );
    }

    #[test]
    fn a_failed_allocation_job_gives_the_addresses_back() {
        let mut s = SimState::new(&Topology::default());
        s.fail_next_jobs = 1;
        let (job, _) = allocate(
            &mut s,
            &[("vxnet_id", "vxnet-sim2"), ("vip_addrs.1", "172.16.2.10")],
        )
        .unwrap();
        run(&mut s, &job);
        assert_eq!(s.jobs[&job].status, super::super::state::JobState::Failed);
        assert!(s.vips.is_empty());
        allocate(
            &mut s,
            &[("vxnet_id", "vxnet-sim2"), ("vip_addrs.1", "172.16.2.10")],
        )
        .unwrap();
    }
}
